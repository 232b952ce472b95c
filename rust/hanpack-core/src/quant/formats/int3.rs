//! int3: eight codes in three bytes. 32 values = 12 bytes (3 u32 words).
//!
//! ```text
//! bytes 3t..3t+3, as a little-endian 24-bit integer u, hold values 8t..8t+8 (t = 0..4):
//! q[8t + k] = (u >> 3k) & 7
//! ```
//!
//! `w = (q - z) * s`; 3 + 32/group_size bits per weight (3.25 at group 128, 4.0 at 32).
//!
//! Why this layout: a 32-bit lane that holds one 3-byte triple yields code `k` with one
//! shift by `3k`, exactly as an int4 lane of eight nibbles yields code `k` with a shift by
//! `4k`. So the CPU kernels decode int3 with the same instructions per code as int4 (one
//! byte gather per 16 triples added) and read 3/4 of its bytes: as fast as int4 with the
//! weights in cache, faster when they stream from memory. For int8 activations
//! `vpmultishiftqb` cuts a triple's eight codes out of a 64-bit lane in one instruction. (The first layout, hanpack-v1, kept the low two bits
//! and the high bit in separate planes; decoding a code took two shifts and a merge, and
//! int3 ran at 1.2-1.8x int4's time.) On a GPU a thread reads 32 values as three words.

use half::f16;

use super::{dequantize_row_with, Bits, BLOCK};

pub const BLOCK_BYTES: usize = 12;
const _: () = assert!(BLOCK_BYTES == BLOCK * 3 / 8);

/// Values per 3-byte triple.
pub const TRIPLE: usize = 8;

pub fn pack_block(q: &[u8; BLOCK], out: &mut [u8]) {
    for (codes, dst) in q
        .chunks_exact(TRIPLE)
        .zip(out[..BLOCK_BYTES].chunks_exact_mut(3))
    {
        let u = codes
            .iter()
            .enumerate()
            .fold(0u32, |u, (k, &v)| u | u32::from(v & 7) << (3 * k));
        dst.copy_from_slice(&u.to_le_bytes()[..3]);
    }
}

pub fn unpack_block(src: &[u8], q: &mut [u8; BLOCK]) {
    for (codes, b) in q
        .chunks_exact_mut(TRIPLE)
        .zip(src[..BLOCK_BYTES].chunks_exact(3))
    {
        let u = u32::from_le_bytes([b[0], b[1], b[2], 0]);
        for (k, v) in codes.iter_mut().enumerate() {
            *v = ((u >> (3 * k)) & 7) as u8;
        }
    }
}

/// Scalar reference: one packed row to `out.len()` (= in_features) floats.
pub fn dequantize_row_int3(
    row: &[u8],
    scales: &[f16],
    zeros: &[f16],
    group_size: usize,
    out: &mut [f32],
) {
    dequantize_row_with(Bits::B3, row, scales, zeros, group_size, out)
}
