//! `hanpack._core`: thin PyO3 bindings over hanpack-core. This crate only converts
//! types and errors (one map, in `errors.rs`); all logic lives in the core crate.

use pyo3::prelude::*;

mod batch;
mod bpe;
mod checkpoint;
mod convert;
mod errors;
mod front;
mod ggml;
mod gguf;
mod lines_stream;
mod pipeline;
mod pool;
mod quant;
mod row_decode;
mod segment;
mod spm;
mod vocab;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("PACKING", hanpack_core::quant::formats::PACKING)?;
    m.add(
        "CUDA_SOURCES",
        hanpack_core::quant::cuda_sources::CUDA_SOURCES.to_vec(),
    )?;
    m.add_class::<front::TokenizerBase>()?;
    m.add_class::<lines_stream::LinesStream>()?;
    m.add_class::<spm::SpmTokenizer>()?;
    m.add_class::<bpe::BpeTokenizer>()?;
    m.add_class::<spm::SpmStreamDecoder>()?;
    m.add_function(wrap_pyfunction!(gguf::load_gguf, m)?)?;
    m.add_function(wrap_pyfunction!(gguf::read_gguf_header, m)?)?;
    m.add_function(wrap_pyfunction!(gguf::encode_gguf_header, m)?)?;
    m.add_function(wrap_pyfunction!(quant::quantize, m)?)?;
    m.add_class::<checkpoint::SafetensorsReader>()?;
    m.add_class::<segment::JiebaSegmenter>()?;
    m.add_class::<checkpoint::ShardQuantizer>()?;
    m.add_function(wrap_pyfunction!(quant::dequantize, m)?)?;
    m.add_function(wrap_pyfunction!(quant::pack_codes, m)?)?;
    m.add_function(wrap_pyfunction!(ggml::ggml_quantize, m)?)?;
    m.add_function(wrap_pyfunction!(ggml::ggml_dequantize, m)?)?;
    m.add_function(wrap_pyfunction!(ggml::ggml_types, m)?)?;
    m.add_function(wrap_pyfunction!(quant::quant_matmul, m)?)?;
    m.add_function(wrap_pyfunction!(vocab::extend_spm, m)?)?;
    m.add_class::<vocab::UnitCounter>()?;
    m.add_function(wrap_pyfunction!(vocab::spm_unreachable, m)?)?;
    m.add_function(wrap_pyfunction!(vocab::spm_to_hf_json, m)?)?;
    m.add_function(wrap_pyfunction!(vocab::has_cjk, m)?)?;
    m.add_function(wrap_pyfunction!(vocab::spm_without_dummy_prefix, m)?)?;
    Ok(())
}
