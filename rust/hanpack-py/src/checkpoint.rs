//! Safetensors reading and the shard quantizer, for `hanpack.checkpoint`: conversion only.
//! Tensor data crosses as `bytes` (the Python layer makes numpy views of them).

use std::collections::HashMap;
use std::path::PathBuf;

use half::f16;
use hanpack_core::io::safetensors::{dtype_name, SafetensorsFile};
use hanpack_core::quant::checkpoint::{GivenTensor, ShardQuantizer as CoreShard, TensorOutcome};
use hanpack_core::quant::{Bits, Method, QuantSpec};
use hanpack_core::HanpackError;
use numpy::PyReadonlyArray1;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::errors::{run, run_detached, Failure};
use crate::pool;

type TensorDesc = (String, String, Vec<usize>);

/// An open safetensors file (memory-mapped, header validated).
#[pyclass(frozen, module = "hanpack._core")]
pub struct SafetensorsReader {
    file: SafetensorsFile,
}

#[pymethods]
impl SafetensorsReader {
    #[new]
    fn new(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        run_detached(py, move || {
            Ok(Self {
                file: SafetensorsFile::open(&path)?,
            })
        })
    }

    /// `(name, dtype, shape)` in file order.
    fn tensors(&self) -> Vec<TensorDesc> {
        self.file
            .entries()
            .iter()
            .map(|e| (e.name.clone(), dtype_name(e.dtype), e.shape.clone()))
            .collect()
    }

    fn metadata(&self) -> HashMap<String, String> {
        self.file.metadata().clone()
    }

    /// `(dtype, shape, data)` of one tensor; the bytes are copied out of the map.
    fn read<'py>(
        &self,
        py: Python<'py>,
        name: &str,
    ) -> PyResult<(String, Vec<usize>, Bound<'py, PyBytes>)> {
        let e = run(py, || {
            self.file.entry(name).ok_or_else(|| {
                Failure::Core(HanpackError::InvalidArgument(format!(
                    "{}: no tensor {name:?}",
                    self.file.path().display()
                )))
            })
        })?;
        let data = PyBytes::new(py, self.file.bytes(e));
        self.file.release(e);
        Ok((dtype_name(e.dtype), e.shape.clone(), data))
    }
}

/// A weight's packed bytes, scale bits and zero bits (fp16 as uint16), from Python.
type GivenArrays<'py> = (
    PyReadonlyArray1<'py, u8>,
    PyReadonlyArray1<'py, u16>,
    PyReadonlyArray1<'py, u16>,
);

fn given_tensors(
    given: HashMap<String, GivenArrays<'_>>,
) -> Result<HashMap<String, GivenTensor>, Failure> {
    let slice = |name: &str, what: &str| {
        Failure::Core(HanpackError::InvalidArgument(format!(
            "the given {what} of {name:?} must be C-contiguous"
        )))
    };
    given
        .into_iter()
        .map(|(name, (p, s, z))| {
            let packed = p
                .as_slice()
                .map_err(|_| slice(&name, "packed bytes"))?
                .to_vec();
            let scales = s.as_slice().map_err(|_| slice(&name, "scales"))?;
            let zeros = z.as_slice().map_err(|_| slice(&name, "zeros"))?;
            let half = |v: &[u16]| v.iter().map(|&b| f16::from_bits(b)).collect();
            let t = GivenTensor {
                packed,
                scales: half(scales),
                zeros: half(zeros),
            };
            Ok((name, t))
        })
        .collect()
}

/// One shard being quantized; `step()` does one tensor with the GIL released.
#[pyclass(module = "hanpack._core")]
pub struct ShardQuantizer {
    job: CoreShard,
    num_threads: Option<usize>,
    total: usize,
}

#[pymethods]
impl ShardQuantizer {
    #[new]
    #[pyo3(signature = (src, dst, to_quantize, bits, group_size, sym, method, metadata, num_threads=None, importance=None, given=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        src: PathBuf,
        dst: PathBuf,
        to_quantize: Vec<String>,
        bits: u32,
        group_size: Option<usize>,
        sym: bool,
        method: &str,
        metadata: HashMap<String, String>,
        num_threads: Option<usize>,
        importance: Option<HashMap<String, Vec<f32>>>,
        given: Option<HashMap<String, GivenArrays<'_>>>,
    ) -> PyResult<Self> {
        let method = Method::from_name(method);
        let given = run(py, || given_tensors(given.unwrap_or_default()))?;
        run_detached(py, move || {
            let method = method.ok_or_else(|| {
                Failure::Core(HanpackError::InvalidArgument(
                    "method must be \"rtn\", \"mse\", \"hqq\" or \"learned\"".into(),
                ))
            })?;
            let spec = QuantSpec {
                bits: Bits::new(bits)?,
                group_size,
                sym,
                method,
            };
            let job = CoreShard::new(
                &src,
                &dst,
                &to_quantize,
                spec,
                &metadata,
                importance.unwrap_or_default(),
                given,
            )?;
            let total = job.work().count();
            Ok(Self {
                job,
                num_threads,
                total,
            })
        })
    }

    fn __len__(&self) -> usize {
        self.total
    }

    /// Processes the next tensor and describes it, or returns None when all are done.
    fn step<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let (job, threads) = (&mut self.job, self.num_threads);
        let outcome = run_detached(py, move || Ok(pool::install(threads, || job.step())?))?;
        outcome.map(|o| describe(py, o)).transpose()
    }

    /// Syncs the shard to disk; an error if tensors are left.
    fn finish(&mut self, py: Python<'_>) -> PyResult<()> {
        let job = &mut self.job;
        run_detached(py, move || Ok(job.finish()?))
    }
}

fn describe(py: Python<'_>, o: TensorOutcome) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("name", o.name)?;
    d.set_item("dtype", dtype_name(o.dtype))?;
    d.set_item("n_elements", o.shape.iter().product::<usize>())?;
    d.set_item("shape", o.shape)?;
    if let Some((layout, stats)) = o.quantized {
        d.set_item("bits", layout.bits.get())?;
        d.set_item("group_size", layout.group_size)?;
        d.set_item("bits_per_weight", layout.bits_per_weight())?;
        d.set_item("relative_error", stats.relative_error())?;
        d.set_item("snr_db", stats.snr_db())?;
        d.set_item("max_abs_error", stats.max_abs_error)?;
    }
    Ok(d)
}
