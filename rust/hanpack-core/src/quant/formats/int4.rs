//! int4: two codes per byte, low nibble first. 32 values = 16 bytes (4 u32 words).
//!
//! `byte[j] = q[2j] | q[2j+1] << 4`; `w = (q - z) * s`; 4 + 32/group_size bits per weight
//! (4.25 at group 128). Sequential nibbles (not llama.cpp's `q[j] | q[j+16] << 4`) so a
//! u32 word holds 8 consecutive values: `(word >> 4*i) & 0xF`.

use half::f16;

use super::{dequantize_row_with, Bits, BLOCK};

pub const BLOCK_BYTES: usize = 16;
const _: () = assert!(BLOCK_BYTES == BLOCK * 4 / 8);

pub fn pack_block(q: &[u8; BLOCK], out: &mut [u8]) {
    for (j, o) in out[..BLOCK_BYTES].iter_mut().enumerate() {
        *o = (q[2 * j] & 0xF) | (q[2 * j + 1] & 0xF) << 4;
    }
}

pub fn unpack_block(src: &[u8], q: &mut [u8; BLOCK]) {
    for (j, &b) in src[..BLOCK_BYTES].iter().enumerate() {
        q[2 * j] = b & 0xF;
        q[2 * j + 1] = b >> 4;
    }
}

/// Scalar reference: one packed row to `out.len()` (= in_features) floats.
pub fn dequantize_row_int4(
    row: &[u8],
    scales: &[f16],
    zeros: &[f16],
    group_size: usize,
    out: &mut [f32],
) {
    dequantize_row_with(Bits::B4, row, scales, zeros, group_size, out)
}
