//! int8: one unsigned code per byte. 32 values = 32 bytes (8 u32 words).
//!
//! `byte[j] = q[j]`; `w = (q - z) * s` (symmetric: `z = 128`); 8 + 32/group_size bits per
//! weight (8.25 at group 128).

use half::f16;

use super::{dequantize_row_with, Bits, BLOCK};

pub const BLOCK_BYTES: usize = 32;
const _: () = assert!(BLOCK_BYTES == BLOCK);

pub fn pack_block(q: &[u8; BLOCK], out: &mut [u8]) {
    out[..BLOCK_BYTES].copy_from_slice(q);
}

pub fn unpack_block(src: &[u8], q: &mut [u8; BLOCK]) {
    q.copy_from_slice(&src[..BLOCK_BYTES]);
}

/// Scalar reference: one packed row to `out.len()` (= in_features) floats.
pub fn dequantize_row_int8(
    row: &[u8],
    scales: &[f16],
    zeros: &[f16],
    group_size: usize,
    out: &mut [f32],
) {
    dequantize_row_with(Bits::B8, row, scales, zeros, group_size, out)
}
