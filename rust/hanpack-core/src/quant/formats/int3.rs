//! int3: 32 values in 12 bytes (3 little-endian u32 words), split into bit planes.
//!
//! ```text
//! word 0: bits 2i..2i+2 = low two bits of q[i]       (i = 0..16)
//! word 1: bits 2i..2i+2 = low two bits of q[16 + i]  (i = 0..16)
//! word 2: bit i         = bit 2 of q[i]               (i = 0..32)
//! q[i] = ((word[i / 16] >> 2*(i % 16)) & 3) | ((word[2] >> i) & 1) << 2
//! ```
//!
//! `w = (q - z) * s`; 3 + 32/group_size bits per weight (3.25 at group 128, 4.0 at 32).
//!
//! Why bit planes instead of ten 3-bit values per word: no value straddles a word, so a
//! CUDA thread decodes all 32 values from 3 registers with shifts and masks only; on CPU
//! words 0–1 decode exactly like [`super::int2`] and word 2 is one broadcast + bit test
//! per lane (llama.cpp's Q3_K splits its codes the same way: `qs` + `hmask`).

use half::f16;

use super::{dequantize_row_with, Bits, BLOCK};

pub const BLOCK_BYTES: usize = 12;
const _: () = assert!(BLOCK_BYTES == BLOCK * 3 / 8);

pub fn pack_block(q: &[u8; BLOCK], out: &mut [u8]) {
    let mut words = [0u32; 3];
    for (i, &v) in q.iter().enumerate() {
        words[i / 16] |= u32::from(v & 3) << (2 * (i % 16));
        words[2] |= u32::from((v >> 2) & 1) << i;
    }
    for (dst, w) in out[..BLOCK_BYTES].chunks_exact_mut(4).zip(words) {
        dst.copy_from_slice(&w.to_le_bytes());
    }
}

pub fn unpack_block(src: &[u8], q: &mut [u8; BLOCK]) {
    let mut words = [0u32; 3];
    for (w, b) in words.iter_mut().zip(src[..BLOCK_BYTES].chunks_exact(4)) {
        *w = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
    for (i, v) in q.iter_mut().enumerate() {
        *v = (((words[i / 16] >> (2 * (i % 16))) & 3) | ((words[2] >> i) & 1) << 2) as u8;
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
