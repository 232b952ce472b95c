//! llama.cpp block formats (`hanpack_core::quant::ggml`): float32 rows in, the bytes GGUF
//! stores out, and back. Conversion only; the work runs with the GIL released.

use hanpack_core::quant::ggml::{self, GgmlType};
use hanpack_core::HanpackError;
use numpy::{IntoPyArray, PyArray1, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;

use crate::errors::{run, run_detached, Failure};
use crate::pool;

fn ggml_type(name: &str) -> Result<GgmlType, Failure> {
    GgmlType::from_name(name).ok_or_else(|| {
        let known: Vec<&str> = GgmlType::ALL.iter().map(|t| t.name()).collect();
        Failure::Core(HanpackError::InvalidArgument(format!(
            "unknown ggml type {name:?}; known: {}",
            known.join(", ")
        )))
    })
}

/// Quantizes `x` (`[rows, n_per_row]` float32, C-contiguous) to `type_name`; flat bytes.
#[pyfunction]
#[pyo3(signature = (x, type_name, imatrix=None, name="tensor", num_threads=None))]
pub fn ggml_quantize<'py>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, f32>,
    type_name: &str,
    imatrix: Option<PyReadonlyArray1<'py, f32>>,
    name: &str,
    num_threads: Option<usize>,
) -> PyResult<Bound<'py, PyArray1<u8>>> {
    let n_per_row = x.shape()[1];
    let (ty, data, imatrix) = run(py, || {
        let ty = ggml_type(type_name)?;
        let bad = |what: &str| {
            Failure::Core(HanpackError::InvalidArgument(format!(
                "{what} must be C-contiguous"
            )))
        };
        let data = x.as_slice().map_err(|_| bad("x"))?;
        let imatrix = imatrix
            .as_ref()
            .map(|a| a.as_slice().map_err(|_| bad("imatrix")))
            .transpose()?;
        Ok((ty, data, imatrix))
    })?;
    let out = run_detached(py, || {
        Ok(pool::install(num_threads, || {
            ggml::quantize(name, ty, data, n_per_row, imatrix)
        })?)
    })?;
    Ok(out.into_pyarray(py))
}

/// Dequantizes whole rows of `type_name` (flat bytes) to a flat float32 array.
#[pyfunction]
#[pyo3(signature = (data, type_name, n_per_row, num_threads=None))]
pub fn ggml_dequantize<'py>(
    py: Python<'py>,
    data: PyReadonlyArray1<'py, u8>,
    type_name: &str,
    n_per_row: usize,
    num_threads: Option<usize>,
) -> PyResult<Bound<'py, PyArray1<f32>>> {
    let (ty, bytes) = run(py, || {
        let ty = ggml_type(type_name)?;
        let bytes = data.as_slice().map_err(|_| {
            Failure::Core(HanpackError::InvalidArgument(
                "data must be C-contiguous".into(),
            ))
        })?;
        Ok((ty, bytes))
    })?;
    let out = run_detached(py, || {
        Ok(pool::install(num_threads, || {
            ggml::dequantize(ty, bytes, n_per_row)
        })?)
    })?;
    Ok(out.into_pyarray(py))
}

/// `(name, ggml id, block size, type size)` of every type hanpack handles.
#[pyfunction]
pub fn ggml_types() -> Vec<(&'static str, u32, usize, usize)> {
    GgmlType::ALL
        .iter()
        .map(|t| (t.name(), *t as u32, t.block_size(), t.type_size()))
        .collect()
}
