//! Quantization bindings: numpy arrays in and out, conversion only.
//!
//! Half-precision data crosses as `uint16` arrays (the Python layer makes free `.view`s),
//! so no numpy half-float support is needed here and bf16 works without ml_dtypes. Inputs
//! must be C-contiguous (the Python layer copies other arrays once); the work runs with
//! the GIL released on a pool of `num_threads` threads.

use half::slice::HalfBitsSliceExt;
use half::{bf16, f16};
use hanpack_core::quant::{self, Bits, Layout, Method, QuantSpec};
use hanpack_core::HanpackError;
use numpy::{
    IntoPyArray, PyArray1, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2, PyReadonlyArrayDyn,
    PyUntypedArrayMethods,
};
use pyo3::prelude::*;

use crate::errors::{run_detached, Failure};
use crate::pool;

type Quantized<'py> = (
    Bound<'py, PyArray1<u8>>,
    Bound<'py, PyArray1<u16>>,
    Bound<'py, PyArray1<u16>>,
    usize,
);

fn bad(msg: String) -> Failure {
    Failure::Core(HanpackError::InvalidArgument(msg))
}

fn contiguous<'a, T: numpy::Element>(
    a: &'a PyReadonlyArray2<'_, T>,
    what: &str,
) -> Result<&'a [T], Failure> {
    a.as_slice()
        .map_err(|_| bad(format!("{what} must be C-contiguous")))
}

/// Quantizes a 2-D weight. `weight` is float32, or uint16 holding the bits of `dtype`
/// ("float16" or "bfloat16"). Returns flat packed bytes, scale and zero bits (fp16, as
/// uint16), and the effective group size.
#[pyfunction]
#[pyo3(signature = (weight, dtype, bits, group_size, sym, method, importance, name, num_threads=None))]
#[allow(clippy::too_many_arguments)]
pub fn quantize<'py>(
    py: Python<'py>,
    weight: &Bound<'py, PyAny>,
    dtype: &str,
    bits: u32,
    group_size: Option<usize>,
    sym: bool,
    method: &str,
    importance: Option<PyReadonlyArray1<'py, f32>>,
    name: &str,
    num_threads: Option<usize>,
) -> PyResult<Quantized<'py>> {
    let spec = crate::errors::run(py, || {
        let method =
            Method::from_name(method).ok_or_else(|| bad(format!("unknown method {method:?}")))?;
        Ok(QuantSpec {
            bits: Bits::new(bits)?,
            group_size,
            sym,
            method,
        })
    })?;
    let imp = importance
        .as_ref()
        .map(|a| a.as_slice())
        .transpose()
        .map_err(|_| pyo3::exceptions::PyValueError::new_err("importance must be C-contiguous"))?;
    let q = match dtype {
        "float32" => {
            let a: PyReadonlyArray2<'py, f32> = weight.extract()?;
            let (rows, cols) = (a.shape()[0], a.shape()[1]);
            let w = crate::errors::run(py, || contiguous(&a, "weight"))?;
            run_detached(py, || {
                Ok(pool::install(num_threads, || {
                    quant::quantize(name, w, rows, cols, &spec, imp)
                })?)
            })?
        }
        "float16" | "bfloat16" => {
            let a: PyReadonlyArray2<'py, u16> = weight.extract()?;
            let (rows, cols) = (a.shape()[0], a.shape()[1]);
            let w = crate::errors::run(py, || contiguous(&a, "weight"))?;
            run_detached(py, || {
                Ok(pool::install(num_threads, || match dtype {
                    "float16" => {
                        quant::quantize(name, w.reinterpret_cast::<f16>(), rows, cols, &spec, imp)
                    }
                    _ => {
                        quant::quantize(name, w.reinterpret_cast::<bf16>(), rows, cols, &spec, imp)
                    }
                })?)
            })?
        }
        _ => {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "unsupported dtype {dtype:?}"
            )))
        }
    };
    let group = q.layout.group_size;
    let scales: Vec<u16> = q.scales.iter().map(|h| h.to_bits()).collect();
    let zeros: Vec<u16> = q.zeros.iter().map(|h| h.to_bits()).collect();
    Ok((
        q.packed.into_pyarray(py),
        scales.into_pyarray(py),
        zeros.into_pyarray(py),
        group,
    ))
}

/// Packs a `[rows, cols]` uint8 array of codes (each at most `2^bits - 1`) into the
/// layout's flat packed bytes (method "learned": codes chosen in Python).
#[pyfunction]
#[pyo3(signature = (codes, bits, group_size))]
pub fn pack_codes<'py>(
    py: Python<'py>,
    codes: PyReadonlyArray2<'py, u8>,
    bits: u32,
    group_size: Option<usize>,
) -> PyResult<Bound<'py, PyArray1<u8>>> {
    let [rows, cols] = [codes.shape()[0], codes.shape()[1]];
    let c = crate::errors::run(py, || contiguous(&codes, "codes"))?;
    let packed = run_detached(py, || {
        let layout = Layout::new(Bits::new(bits)?, rows, cols, group_size)?;
        Ok(quant::formats::pack_codes(&layout, c)?)
    })?;
    Ok(packed.into_pyarray(py))
}

/// Dequantizes to a flat float32 array, or (`out_dtype="float16"`) to uint16 fp16 bits.
#[pyfunction]
#[pyo3(signature = (packed, scales, zeros, bits, rows, cols, group_size, out_dtype, num_threads=None))]
#[allow(clippy::too_many_arguments)]
pub fn dequantize<'py>(
    py: Python<'py>,
    packed: PyReadonlyArrayDyn<'py, u8>,
    scales: PyReadonlyArrayDyn<'py, u16>,
    zeros: PyReadonlyArrayDyn<'py, u16>,
    bits: u32,
    rows: usize,
    cols: usize,
    group_size: usize,
    out_dtype: &str,
    num_threads: Option<usize>,
) -> PyResult<Bound<'py, PyAny>> {
    let half_out = match out_dtype {
        "float32" => false,
        "float16" => true,
        _ => {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "unsupported dtype {out_dtype:?}"
            )))
        }
    };
    let (p, s, z) = crate::errors::run(py, || {
        let p = packed
            .as_slice()
            .map_err(|_| bad("packed must be C-contiguous".into()))?;
        let s = scales
            .as_slice()
            .map_err(|_| bad("scales must be C-contiguous".into()))?;
        let z = zeros
            .as_slice()
            .map_err(|_| bad("zeros must be C-contiguous".into()))?;
        Ok((p, s, z))
    })?;
    let out = run_detached(py, || {
        let layout = Layout::new(Bits::new(bits)?, rows, cols, Some(group_size))?;
        let (s, z) = (s.reinterpret_cast::<f16>(), z.reinterpret_cast::<f16>());
        let n = rows
            .checked_mul(cols)
            .ok_or_else(|| bad("shape too large".into()))?;
        pool::install(num_threads, || {
            if half_out {
                let mut out = vec![f16::ZERO; n];
                quant::dequantize(&layout, p, s, z, &mut out)?;
                Ok(Err(out.iter().map(|h| h.to_bits()).collect::<Vec<u16>>()))
            } else {
                let mut out = vec![0f32; n];
                quant::dequantize(&layout, p, s, z, &mut out)?;
                Ok(Ok(out))
            }
        })
    })?;
    Ok(match out {
        Ok(f) => f.into_pyarray(py).into_any(),
        Err(h) => h.into_pyarray(py).into_any(),
    })
}

/// `x · Wᵀ` straight from a packed weight (`hanpack.nn.QuantLinear`'s CPU path). `x` is
/// `[batch, cols]` float32, or uint16 bf16 bits when `x_bf16`; the result is float32
/// `[batch, rows]`. Nothing is copied on the way in (C-contiguous arrays only).
/// `act_bits=8` quantizes float32 inputs to int8 on the fly (`quant::matmul_q8`).
#[pyfunction]
#[pyo3(signature = (x, packed, scales, zeros, bits, rows, cols, group_size, x_bf16=false, num_threads=None, act_bits=None))]
#[allow(clippy::too_many_arguments)]
pub fn quant_matmul<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    packed: PyReadonlyArrayDyn<'py, u8>,
    scales: PyReadonlyArrayDyn<'py, u16>,
    zeros: PyReadonlyArrayDyn<'py, u16>,
    bits: u32,
    rows: usize,
    cols: usize,
    group_size: usize,
    x_bf16: bool,
    num_threads: Option<usize>,
    act_bits: Option<u32>,
) -> PyResult<Bound<'py, PyAny>> {
    let int8_inputs = match (act_bits, x_bf16) {
        (None, _) => false,
        (Some(8), false) => true,
        (Some(8), true) => {
            return Err(crate::errors::to_pyerr(
                py,
                bad("act_bits=8 takes float32 inputs, not bf16".into()),
            ))
        }
        (Some(b), _) => {
            return Err(crate::errors::to_pyerr(
                py,
                bad(format!("act_bits must be None or 8, not {b}")),
            ))
        }
    };
    let xf = if x_bf16 {
        None
    } else {
        Some(x.extract::<PyReadonlyArrayDyn<'py, f32>>()?)
    };
    let xh = if x_bf16 {
        Some(x.extract::<PyReadonlyArrayDyn<'py, u16>>()?)
    } else {
        None
    };
    let batch = {
        let shape = match (&xf, &xh) {
            (Some(a), _) => a.shape().to_vec(),
            (_, Some(a)) => a.shape().to_vec(),
            _ => Vec::new(),
        };
        match shape.as_slice() {
            [b, c] if *c == cols => *b,
            _ => {
                return Err(crate::errors::to_pyerr(
                    py,
                    bad(format!(
                        "x must be a [batch, {cols}] array, not shape {shape:?}"
                    )),
                ))
            }
        }
    };
    let contiguous = |what: &str| bad(format!("{what} must be C-contiguous"));
    let (p, s, z, xs32, xs16) = crate::errors::run(py, || {
        let p = packed.as_slice().map_err(|_| contiguous("packed"))?;
        let s = scales.as_slice().map_err(|_| contiguous("scales"))?;
        let z = zeros.as_slice().map_err(|_| contiguous("zeros"))?;
        let xs32 = match &xf {
            Some(a) => Some(a.as_slice().map_err(|_| contiguous("x"))?),
            None => None,
        };
        let xs16 = match &xh {
            Some(a) => Some(a.as_slice().map_err(|_| contiguous("x"))?),
            None => None,
        };
        Ok((p, s, z, xs32, xs16))
    })?;
    let out = run_detached(py, || {
        let layout = Layout::new(Bits::new(bits)?, rows, cols, Some(group_size))?;
        let w = quant::matmul::PackedWeight {
            layout,
            packed: p,
            scales: s.reinterpret_cast::<f16>(),
            zeros: z.reinterpret_cast::<f16>(),
        };
        let mut out = vec![0f32; batch * rows];
        let helpers = pool::helpers(num_threads);
        let tasks = quant::matmul::CallerAndHelpers {
            helpers: helpers.as_deref(),
        };
        match (xs32, xs16) {
            (Some(x), _) if int8_inputs => {
                quant::matmul_q8::matmul_q8_on(&tasks, &w, x, batch, &mut out)?
            }
            (Some(x), _) => quant::matmul::matmul_on(&tasks, &w, x, batch, &mut out)?,
            (_, Some(h)) => quant::matmul_bf16::matmul_bf16_on(
                &tasks,
                &w,
                h.reinterpret_cast::<bf16>(),
                batch,
                &mut out,
            )?,
            // One of the two is always extracted above.
            _ => return Err(HanpackError::InvalidArgument("x is missing".into()).into()),
        }
        Ok(out)
    })?;
    let arr = out.into_pyarray(py);
    Ok(arr.reshape([batch, rows])?.into_any())
}
