//! `hanpack._core`: thin PyO3 bindings over hanpack-core. This crate only converts
//! types and errors (one map, in `errors.rs`); all logic lives in the core crate.

use pyo3::prelude::*;

mod batch;
mod bpe;
mod convert;
mod errors;
mod pipeline;
mod pool;
mod spm;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<spm::SpmTokenizer>()?;
    m.add_class::<bpe::BpeTokenizer>()?;
    m.add_class::<spm::SpmStreamDecoder>()?;
    Ok(())
}
