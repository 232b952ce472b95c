//! Packed layouts of group-wise quantized weights. **This comment is the specification**
//! that the CUDA kernels (`cuda/common.cuh`) and the transformers integration mirror; the
//! Rust code below it is its reference implementation.
//!
//! # What is quantized
//!
//! A weight `W` of shape `[out_features, in_features]` (row-major, as in `nn.Linear`) is
//! cut, row by row, into groups of `group_size` consecutive input elements. Group `g` of
//! row `r` covers columns `g*group_size .. min((g+1)*group_size, in_features)`: when
//! `in_features` is not a multiple of `group_size` the **last group of each row is short**
//! (e.g. stories260k's down_proj, 172 inputs, at group 64 has groups of 64, 64 and 44).
//! Nothing is padded in the math: the short group's scale and zero come from its own
//! elements only. Per-channel quantization is the case `group_size == in_features`.
//! `group_size` must be a multiple of [`BLOCK`] (32) or equal to `in_features`.
//!
//! Each group has one scale `s` and one zero point `z`; a code `q` in `0 ..= 2^bits - 1`
//! stands for
//!
//! ```text
//! w ≈ (q - z) * s                        (computed in f32 from the fp16 s and z)
//! q = clamp(round_half_even(w / s + z), 0, 2^bits - 1)     (q = clamp(round(z)) if s == 0)
//! ```
//!
//! * asymmetric `rtn`: `z` is an integer in `0 ..= 2^bits - 1`; `mse` and `hqq`: `z` is
//!   fractional (both optimise it), hence zeros are stored as fp16 for every method;
//! * symmetric: `z = 2^(bits-1)` for every group (8 for int4), `s` may be negative (the
//!   group's signed extremum maps exactly to code 0, as llama.cpp's Q4_0 does). The zeros
//!   array is still stored so that one kernel serves both.
//!
//! # Arrays
//!
//! | array    | dtype   | shape                                  |
//! |----------|---------|----------------------------------------|
//! | `packed` | uint8   | `[out_features, row_bytes]`            |
//! | `scales` | float16 | `[out_features, n_groups]`             |
//! | `zeros`  | float16 | `[out_features, n_groups]`             |
//!
//! `n_groups = ceil(in_features / group_size)`. Each packed row is a whole number of
//! 32-value blocks, `row_bytes = ceil(in_features / 32) * 4 * bits`, so every block is
//! `bits` little-endian u32 words and every row starts 4-byte aligned; codes past
//! `in_features` in the last block are 0 and mean nothing. Block layouts (value `i` of a
//! block, `0 <= i < 32`), one file each:
//!
//! | format | bytes/block | layout |
//! |--------|-------------|--------|
//! | [`int2`] | 8  | four per byte, value `4j+k` in bits `2k..2k+2` of byte `j` |
//! | [`int3`] | 12 | eight per three bytes: bytes `3t..3t+3` as a little-endian 24-bit `u`, value `8t+k` = `(u >> 3k) & 7` |
//! | [`int4`] | 16 | two per byte, low nibble first: byte `j` = `q[2j] \| q[2j+1] << 4` |
//! | [`int8`] | 32 | one per byte |
//!
//! # Size
//!
//! Bits per weight, with fp16 scale and zero per group and no row padding, is
//! `bits + 32 / group_size`: int4-g128 4.25, int4-g64 4.5, int4-g32 5.0, int3-g128
//! 3.25, int2-g64 2.5, int8-g128 8.25; per-channel adds `32 / in_features`.
//! [`Layout::bits_per_weight`] gives the exact figure including padding.

/// The name of the layouts above, written with every quantized tensor and in
/// `quantization_config`. v2 changed int3 only (v1 kept its low two bits and its high
/// bit in separate planes).
pub const PACKING: &str = "hanpack-v2";

pub mod int2;
pub mod int3;
pub mod int4;
pub mod int8;

use half::f16;

use crate::error::{HanpackError, Result};

/// Values per packed block; group sizes are multiples of it so that groups never split a
/// block (kernels load one block per group step).
pub const BLOCK: usize = 32;

/// Supported code widths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bits {
    B2 = 2,
    B3 = 3,
    B4 = 4,
    B8 = 8,
}

impl Bits {
    pub fn new(bits: u32) -> Result<Self> {
        match bits {
            2 => Ok(Bits::B2),
            3 => Ok(Bits::B3),
            4 => Ok(Bits::B4),
            8 => Ok(Bits::B8),
            _ => Err(HanpackError::InvalidArgument(format!(
                "bits must be 2, 3, 4 or 8, not {bits}"
            ))),
        }
    }
    pub fn get(self) -> usize {
        self as usize
    }
    /// Largest code, `2^bits - 1`.
    pub fn qmax(self) -> u8 {
        ((1u32 << self.get()) - 1) as u8
    }
    /// Bytes of one 32-value block (`bits` u32 words).
    pub fn block_bytes(self) -> usize {
        BLOCK * self.get() / 8
    }
}

/// Shape of one quantized tensor: everything needed to size and index its arrays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub bits: Bits,
    pub rows: usize,
    pub cols: usize,
    /// Effective group length (`cols` for per-channel); the last group may be shorter.
    pub group_size: usize,
}

impl Layout {
    /// Checks the shape rules above; `group_size = None` means per-channel.
    pub fn new(bits: Bits, rows: usize, cols: usize, group_size: Option<usize>) -> Result<Self> {
        if rows == 0 || cols == 0 {
            return Err(HanpackError::InvalidArgument(format!(
                "cannot quantize an empty [{rows}, {cols}] weight"
            )));
        }
        let group_size = group_size.unwrap_or(cols);
        if group_size == 0 || (group_size % BLOCK != 0 && group_size != cols) {
            return Err(HanpackError::InvalidArgument(format!(
                "group_size must be a positive multiple of {BLOCK} or in_features ({cols}), not {group_size}"
            )));
        }
        Ok(Self {
            bits,
            rows,
            cols,
            group_size: group_size.min(cols),
        })
    }
    pub fn n_groups(&self) -> usize {
        self.cols.div_ceil(self.group_size)
    }
    pub fn row_bytes(&self) -> usize {
        self.cols.div_ceil(BLOCK) * self.bits.block_bytes()
    }
    pub fn packed_len(&self) -> usize {
        self.rows * self.row_bytes()
    }
    pub fn params_len(&self) -> usize {
        self.rows * self.n_groups()
    }
    /// Bytes of packed codes + fp16 scales + fp16 zeros.
    pub fn nbytes(&self) -> usize {
        self.packed_len() + 2 * 2 * self.params_len()
    }
    pub fn bits_per_weight(&self) -> f64 {
        (self.nbytes() * 8) as f64 / (self.rows * self.cols) as f64
    }
    /// The size check: `packed`, `scales` and `zeros` have the lengths this layout needs.
    pub fn check(&self, packed: usize, scales: usize, zeros: usize) -> Result<()> {
        let want = (self.packed_len(), self.params_len(), self.params_len());
        if (packed, scales, zeros) != want {
            return Err(HanpackError::QuantLayout(format!(
                "int{} [{}, {}] group {} needs {} packed bytes and {} scales and zeros, got {packed}, {scales} and {zeros}",
                self.bits.get(),
                self.rows,
                self.cols,
                self.group_size,
                want.0,
                want.1
            )));
        }
        Ok(())
    }
}

/// Packs a whole weight's codes (`[rows, cols]`, row-major, each at most
/// [`Bits::qmax`]) into `layout`'s packed array: codes chosen elsewhere (method
/// `learned`) stored exactly as [`super::quantize`] stores its own.
pub fn pack_codes(layout: &Layout, codes: &[u8]) -> Result<Vec<u8>> {
    let (rows, cols) = (layout.rows, layout.cols);
    if rows.checked_mul(cols) != Some(codes.len()) {
        return Err(HanpackError::QuantLayout(format!(
            "{} codes do not make a [{rows}, {cols}] weight",
            codes.len()
        )));
    }
    let qmax = layout.bits.qmax();
    if let Some(i) = codes.iter().position(|&q| q > qmax) {
        return Err(HanpackError::QuantLayout(format!(
            "code {} at row {}, column {} exceeds int{}'s largest code {qmax}",
            codes[i],
            i / cols,
            i % cols,
            layout.bits.get()
        )));
    }
    let (rb, padded) = (layout.row_bytes(), cols.div_ceil(BLOCK) * BLOCK);
    let mut packed = vec![0u8; layout.packed_len()];
    let mut row = vec![0u8; padded];
    for (src, dst) in codes
        .chunks_exact(cols.max(1))
        .zip(packed.chunks_exact_mut(rb))
    {
        row[..cols].copy_from_slice(src);
        pack_row(layout.bits, &row, dst);
    }
    Ok(packed)
}

/// Packs one row of codes (`codes.len()` a multiple of [`BLOCK`]) into `out` (`row_bytes`).
pub fn pack_row(bits: Bits, codes: &[u8], out: &mut [u8]) {
    let bb = bits.block_bytes();
    for (block, dst) in codes.chunks_exact(BLOCK).zip(out.chunks_exact_mut(bb)) {
        let block: &[u8; BLOCK] = block.try_into().unwrap_or(&[0; BLOCK]);
        match bits {
            Bits::B2 => int2::pack_block(block, dst),
            Bits::B3 => int3::pack_block(block, dst),
            Bits::B4 => int4::pack_block(block, dst),
            Bits::B8 => int8::pack_block(block, dst),
        }
    }
}

/// Unpacks one row (`row_bytes`) into codes (`ceil(cols / 32) * 32` of them).
pub fn unpack_row(bits: Bits, row: &[u8], codes: &mut [u8]) {
    let bb = bits.block_bytes();
    for (src, block) in row.chunks_exact(bb).zip(codes.chunks_exact_mut(BLOCK)) {
        let block: &mut [u8; BLOCK] = match block.try_into() {
            Ok(b) => b,
            Err(_) => continue,
        };
        match bits {
            Bits::B2 => int2::unpack_block(src, block),
            Bits::B3 => int3::unpack_block(src, block),
            Bits::B4 => int4::unpack_block(src, block),
            Bits::B8 => int8::unpack_block(src, block),
        }
    }
}

/// `w = (q - z) * s` over one row of codes (shared by every `dequantize_row_<fmt>`).
pub(crate) fn dequantize_codes(
    codes: &[u8],
    scales: &[f16],
    zeros: &[f16],
    group_size: usize,
    out: &mut [f32],
) {
    for ((w, q), (s, z)) in out
        .chunks_mut(group_size)
        .zip(codes.chunks(group_size))
        .zip(scales.iter().zip(zeros))
    {
        let (s, z) = (s.to_f32(), z.to_f32());
        for (w, &q) in w.iter_mut().zip(q) {
            *w = (f32::from(q) - z) * s;
        }
    }
}

/// Scalar reference dequantization of one row in any format (dispatches to
/// `dequantize_row_<fmt>`); `out.len()` is `in_features`.
pub fn dequantize_row(
    bits: Bits,
    row: &[u8],
    scales: &[f16],
    zeros: &[f16],
    group_size: usize,
    out: &mut [f32],
) {
    match bits {
        Bits::B2 => int2::dequantize_row_int2(row, scales, zeros, group_size, out),
        Bits::B3 => int3::dequantize_row_int3(row, scales, zeros, group_size, out),
        Bits::B4 => int4::dequantize_row_int4(row, scales, zeros, group_size, out),
        Bits::B8 => int8::dequantize_row_int8(row, scales, zeros, group_size, out),
    }
}

/// Shared body of the per-format `dequantize_row_<fmt>`: unpack, then apply the formula.
fn dequantize_row_with(
    bits: Bits,
    row: &[u8],
    scales: &[f16],
    zeros: &[f16],
    group_size: usize,
    out: &mut [f32],
) {
    let mut codes = vec![0u8; out.len().div_ceil(BLOCK) * BLOCK];
    unpack_row(bits, row, &mut codes);
    dequantize_codes(&codes[..out.len()], scales, zeros, group_size, out);
}

#[cfg(test)]
mod tests;
