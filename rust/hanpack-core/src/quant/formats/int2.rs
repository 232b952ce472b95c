//! int2: four codes per byte, lowest bits first. 32 values = 8 bytes (2 u32 words).
//!
//! `byte[j] = q[4j] | q[4j+1] << 2 | q[4j+2] << 4 | q[4j+3] << 6`; `w = (q - z) * s`;
//! 2 + 32/group_size bits per weight (2.5 at group 64). A u32 word holds 16 consecutive
//! values: `(word >> 2*i) & 3`.

use half::f16;

use super::{dequantize_row_with, Bits, BLOCK};

pub const BLOCK_BYTES: usize = 8;
const _: () = assert!(BLOCK_BYTES == BLOCK * 2 / 8);

pub fn pack_block(q: &[u8; BLOCK], out: &mut [u8]) {
    for (j, o) in out[..BLOCK_BYTES].iter_mut().enumerate() {
        let v = &q[4 * j..4 * j + 4];
        *o = (v[0] & 3) | (v[1] & 3) << 2 | (v[2] & 3) << 4 | (v[3] & 3) << 6;
    }
}

pub fn unpack_block(src: &[u8], q: &mut [u8; BLOCK]) {
    for (j, &b) in src[..BLOCK_BYTES].iter().enumerate() {
        for k in 0..4 {
            q[4 * j + k] = (b >> (2 * k)) & 3;
        }
    }
}

/// Scalar reference: one packed row to `out.len()` (= in_features) floats.
pub fn dequantize_row_int2(
    row: &[u8],
    scales: &[f16],
    zeros: &[f16],
    group_size: usize,
    out: &mut [f32],
) {
    dequantize_row_with(Bits::B2, row, scales, zeros, group_size, out)
}
