//! llama.cpp's tensor types (ggml block formats), as GGUF files store them.
//!
//! Every quantized type cuts a row into blocks of [`GgmlType::block_size`] weights and
//! stores each block as one fixed-size struct ([`GgmlType::type_size`] bytes); the structs,
//! their fields and formulas are in [`legacy`] (32-weight blocks: Q4_0, Q4_1, Q5_0, Q5_1,
//! Q8_0), [`kquants`] (256-weight super-blocks: Q2_K … Q6_K) and [`iq4_nl`]. Each has a
//! size check next to it.
//!
//! The quantizers reproduce ggml's scalar reference (`ggml-quants.c`) operation for
//! operation in f32, without fused multiply-adds (ggml-base is compiled for baseline
//! x86-64 and Rust never contracts `a * b + c`), so the bytes are identical to
//! llama.cpp's: `quantize_row_<fmt>_ref` without an importance matrix, and llama.cpp's
//! importance-weighted `quantize_<fmt>` with one (`imatrix`, one non-negative weight per
//! column). The dequantizers follow ggml's `dequantize_row_<fmt>` (the `gguf` package's
//! numpy code computes the same products in the same order).
//!
//! Rows are independent and are processed in parallel (rayon); within a row the blocks
//! run in order, as in ggml.

mod helpers;
pub mod iq4_nl;
pub mod kquants;
mod lanes;
pub mod legacy;
#[cfg(test)]
mod tests;

use rayon::prelude::*;

use crate::error::{HanpackError, Result};

/// Weights per K-quant super-block (ggml's `QK_K`).
pub const QK_K: usize = 256;

/// A ggml tensor type hanpack reads and writes. The discriminant is ggml's `ggml_type`
/// number, the one GGUF stores in each tensor's info.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum GgmlType {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q2_K = 10,
    Q3_K = 11,
    Q4_K = 12,
    Q5_K = 13,
    Q6_K = 14,
    IQ4_NL = 20,
    BF16 = 30,
}

impl GgmlType {
    pub const ALL: [GgmlType; 14] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::IQ4_NL,
        GgmlType::BF16,
    ];

    /// ggml's name (`GGML_TYPE_Q4_K` → `"Q4_K"`).
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "F32",
            GgmlType::F16 => "F16",
            GgmlType::Q4_0 => "Q4_0",
            GgmlType::Q4_1 => "Q4_1",
            GgmlType::Q5_0 => "Q5_0",
            GgmlType::Q5_1 => "Q5_1",
            GgmlType::Q8_0 => "Q8_0",
            GgmlType::Q2_K => "Q2_K",
            GgmlType::Q3_K => "Q3_K",
            GgmlType::Q4_K => "Q4_K",
            GgmlType::Q5_K => "Q5_K",
            GgmlType::Q6_K => "Q6_K",
            GgmlType::IQ4_NL => "IQ4_NL",
            GgmlType::BF16 => "BF16",
        }
    }

    pub fn from_name(name: &str) -> Option<GgmlType> {
        GgmlType::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(name))
    }

    pub fn from_id(id: u32) -> Option<GgmlType> {
        GgmlType::ALL.into_iter().find(|t| *t as u32 == id)
    }

    /// Weights per block.
    pub fn block_size(self) -> usize {
        match self {
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => 1,
            GgmlType::Q4_0
            | GgmlType::Q4_1
            | GgmlType::Q5_0
            | GgmlType::Q5_1
            | GgmlType::Q8_0
            | GgmlType::IQ4_NL => 32,
            GgmlType::Q2_K | GgmlType::Q3_K | GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K => {
                QK_K
            }
        }
    }

    /// Bytes per block (the block struct's size).
    pub fn type_size(self) -> usize {
        use std::mem::size_of;
        match self {
            GgmlType::F32 => 4,
            GgmlType::F16 | GgmlType::BF16 => 2,
            GgmlType::Q4_0 => size_of::<legacy::BlockQ4_0>(),
            GgmlType::Q4_1 => size_of::<legacy::BlockQ4_1>(),
            GgmlType::Q5_0 => size_of::<legacy::BlockQ5_0>(),
            GgmlType::Q5_1 => size_of::<legacy::BlockQ5_1>(),
            GgmlType::Q8_0 => size_of::<legacy::BlockQ8_0>(),
            GgmlType::Q2_K => size_of::<kquants::BlockQ2K>(),
            GgmlType::Q3_K => size_of::<kquants::BlockQ3K>(),
            GgmlType::Q4_K => size_of::<kquants::BlockQ4K>(),
            GgmlType::Q5_K => size_of::<kquants::BlockQ5K>(),
            GgmlType::Q6_K => size_of::<kquants::BlockQ6K>(),
            GgmlType::IQ4_NL => size_of::<iq4_nl::BlockIQ4NL>(),
        }
    }

    /// Storage cost, scales included (Q4_K: 4.5).
    pub fn bits_per_weight(self) -> f64 {
        (self.type_size() * 8) as f64 / self.block_size() as f64
    }

    /// Bytes of one row of `n_per_row` weights (a multiple of the block size).
    pub fn row_bytes(self, n_per_row: usize) -> Result<usize> {
        let bs = self.block_size();
        if n_per_row == 0 || n_per_row % bs != 0 {
            return Err(HanpackError::InvalidArgument(format!(
                "{}: a row of {n_per_row} weights is not a whole number of {bs}-weight blocks",
                self.name()
            )));
        }
        Ok(n_per_row / bs * self.type_size())
    }

    /// Whether an importance matrix changes how this type is quantized.
    pub fn uses_imatrix(self) -> bool {
        !matches!(
            self,
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 | GgmlType::Q8_0
        )
    }
}

/// Quantizes `x` (row-major, rows of `n_per_row`) to `ty`; `imatrix` (length `n_per_row`)
/// selects llama.cpp's importance-weighted quantizer. `name` only labels errors.
pub fn quantize(
    name: &str,
    ty: GgmlType,
    x: &[f32],
    n_per_row: usize,
    imatrix: Option<&[f32]>,
) -> Result<Vec<u8>> {
    let row_bytes = ty.row_bytes(n_per_row)?;
    if x.len() % n_per_row != 0 {
        return Err(HanpackError::InvalidArgument(format!(
            "tensor {name:?}: {} values are not whole rows of {n_per_row}",
            x.len()
        )));
    }
    if let Some(w) = imatrix {
        super::check_importance(name, w, n_per_row, "imatrix")?;
    }
    if !matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) {
        check_finite(name, x, n_per_row)?;
    }
    let rows = x.len() / n_per_row;
    let mut out = vec![0u8; rows * row_bytes];
    // Rows of a few hundred weights are cheap; hand rayon chunks of about 64 KiB of input.
    let rows_per_task = (16384 / n_per_row).max(1);
    out.par_chunks_mut(row_bytes * rows_per_task)
        .zip(x.par_chunks(n_per_row * rows_per_task))
        .for_each(|(dst, src)| {
            for (d, s) in dst.chunks_mut(row_bytes).zip(src.chunks(n_per_row)) {
                quantize_row(ty, s, d, imatrix);
            }
        });
    Ok(out)
}

/// Dequantizes whole rows of `ty` (`data.len()` a multiple of the row size of
/// `n_per_row` weights) to f32.
pub fn dequantize(ty: GgmlType, data: &[u8], n_per_row: usize) -> Result<Vec<f32>> {
    let row_bytes = ty.row_bytes(n_per_row)?;
    if data.len() % row_bytes != 0 {
        return Err(HanpackError::InvalidArgument(format!(
            "{}: {} bytes are not whole rows of {row_bytes} bytes ({n_per_row} weights)",
            ty.name(),
            data.len()
        )));
    }
    let rows = data.len() / row_bytes;
    let mut out = vec![0f32; rows * n_per_row];
    let rows_per_task = (16384 / n_per_row).max(1);
    out.par_chunks_mut(n_per_row * rows_per_task)
        .zip(data.par_chunks(row_bytes * rows_per_task))
        .for_each(|(dst, src)| dequantize_row(ty, src, dst));
    Ok(out)
}

/// One row (or several whole rows: blocks never straddle rows).
fn quantize_row(ty: GgmlType, x: &[f32], out: &mut [u8], imatrix: Option<&[f32]>) {
    match ty {
        GgmlType::F32 => {
            for (o, v) in out.chunks_exact_mut(4).zip(x) {
                o.copy_from_slice(&v.to_le_bytes());
            }
        }
        GgmlType::F16 => {
            for (o, v) in out.chunks_exact_mut(2).zip(x) {
                o.copy_from_slice(&half::f16::from_f32(*v).to_le_bytes());
            }
        }
        GgmlType::BF16 => {
            for (o, v) in out.chunks_exact_mut(2).zip(x) {
                o.copy_from_slice(&helpers::f32_to_bf16(*v).to_le_bytes());
            }
        }
        GgmlType::Q4_0 => legacy::quantize_row_q4_0(x, cast(out), imatrix),
        GgmlType::Q4_1 => legacy::quantize_row_q4_1(x, cast(out), imatrix),
        GgmlType::Q5_0 => legacy::quantize_row_q5_0(x, cast(out), imatrix),
        GgmlType::Q5_1 => legacy::quantize_row_q5_1(x, cast(out), imatrix),
        GgmlType::Q8_0 => legacy::quantize_row_q8_0(x, cast(out), None),
        GgmlType::Q2_K => kquants::quantize_row_q2_k(x, cast(out), imatrix),
        GgmlType::Q3_K => kquants::quantize_row_q3_k(x, cast(out), imatrix),
        GgmlType::Q4_K => kquants::quantize_row_q4_k(x, cast(out), imatrix),
        GgmlType::Q5_K => kquants::quantize_row_q5_k(x, cast(out), imatrix),
        GgmlType::Q6_K => kquants::quantize_row_q6_k(x, cast(out), imatrix),
        GgmlType::IQ4_NL => iq4_nl::quantize_row_iq4_nl(x, cast(out), imatrix),
    }
}

fn dequantize_row(ty: GgmlType, data: &[u8], y: &mut [f32]) {
    match ty {
        GgmlType::F32 => {
            for (v, b) in y.iter_mut().zip(data.chunks_exact(4)) {
                *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        GgmlType::F16 => {
            for (v, b) in y.iter_mut().zip(data.chunks_exact(2)) {
                *v = helpers::fp16([b[0], b[1]]);
            }
        }
        GgmlType::BF16 => {
            for (v, b) in y.iter_mut().zip(data.chunks_exact(2)) {
                *v = f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16);
            }
        }
        GgmlType::Q4_0 => legacy::dequantize_row_q4_0(cast_ref(data), y),
        GgmlType::Q4_1 => legacy::dequantize_row_q4_1(cast_ref(data), y),
        GgmlType::Q5_0 => legacy::dequantize_row_q5_0(cast_ref(data), y),
        GgmlType::Q5_1 => legacy::dequantize_row_q5_1(cast_ref(data), y),
        GgmlType::Q8_0 => legacy::dequantize_row_q8_0(cast_ref(data), y),
        GgmlType::Q2_K => kquants::dequantize_row_q2_k(cast_ref(data), y),
        GgmlType::Q3_K => kquants::dequantize_row_q3_k(cast_ref(data), y),
        GgmlType::Q4_K => kquants::dequantize_row_q4_k(cast_ref(data), y),
        GgmlType::Q5_K => kquants::dequantize_row_q5_k(cast_ref(data), y),
        GgmlType::Q6_K => kquants::dequantize_row_q6_k(cast_ref(data), y),
        GgmlType::IQ4_NL => iq4_nl::dequantize_row_iq4_nl(cast_ref(data), y),
    }
}

/// Block structs are `#[repr(C)]` byte arrays (alignment 1, no padding), so any byte
/// buffer of whole blocks is a slice of them.
fn cast<B: bytemuck::Pod>(bytes: &mut [u8]) -> &mut [B] {
    bytemuck::cast_slice_mut(bytes)
}

fn cast_ref<B: bytemuck::Pod>(bytes: &[u8]) -> &[B] {
    bytemuck::cast_slice(bytes)
}

fn check_finite(name: &str, x: &[f32], n_per_row: usize) -> Result<()> {
    match x.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => Err(HanpackError::NonFiniteWeight {
            tensor: name.to_string(),
            value: x[i],
            row: i / n_per_row,
            col: i % n_per_row,
        }),
    }
}
