//! IQ4_NL: 32-weight blocks of 4-bit indices into a fixed non-uniform table,
//! `w = d * KVALUES[q]`, 4.5 bits per weight. Byte `qs[j]` holds weights `j` (low nibble)
//! and `j + 16` (high).
//!
//! The quantizer is llama.cpp's `quantize_iq4_nl` (the one llama-quantize runs; it
//! searches 15 scales around the first guess, with or without an importance matrix).
//! ggml's other entry point, `quantize_row_iq4_nl_ref`, skips that search and leaves the
//! codes of an all-zero block unset, so it is not reproduced.

use bytemuck::{Pod, Zeroable};

use super::helpers::{
    abs_max, best_index_int8, fp16, imatrix_weights, sum_sq, to_fp16, GROUP_MAX_EPS,
};

pub const QK4_NL: usize = 32;

/// The code book (ggml's `kvalues_iq4nl`), sorted.
pub const KVALUES: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
pub struct BlockIQ4NL {
    /// Scale (fp16).
    pub d: [u8; 2],
    /// Indices into [`KVALUES`], two per byte.
    pub qs: [u8; QK4_NL / 2],
}
const _: () = assert!(std::mem::size_of::<BlockIQ4NL>() == 2 + QK4_NL / 2);

/// Scale candidates tried on each side of the first guess.
const NTRY: i32 = 7;

pub fn quantize_row_iq4_nl(x: &[f32], y: &mut [BlockIQ4NL], imatrix: Option<&[f32]>) {
    let values = &KVALUES;
    let mut weight = [0f32; QK4_NL];
    let mut l = [0u8; QK4_NL];
    for (ib, (b, xb)) in y.iter_mut().zip(x.chunks_exact(QK4_NL)).enumerate() {
        // sigma2 *= 2/32 in ggml: the quotient is exact, so this is the same product.
        let sigma2 = sum_sq(xb) * (2.0 / QK4_NL as f32);
        match imatrix {
            Some(qw) => {
                imatrix_weights(&qw[QK4_NL * ib..QK4_NL * (ib + 1)], xb, sigma2, &mut weight)
            }
            None => {
                for (w, v) in weight.iter_mut().zip(xb) {
                    *w = v * v;
                }
            }
        }
        let (amax, max) = abs_max(xb);
        let mut scale = 0f32;
        if amax >= GROUP_MAX_EPS {
            let mut d = -max / values[0] as f32;
            let mut id = 1.0 / d;
            let (mut sumqx, mut sumq2) = (0f32, 0f32);
            for (j, &v) in xb.iter().enumerate() {
                let q = values[best_index_int8(values, id * v)] as f32;
                sumqx += weight[j] * q * v;
                sumq2 += weight[j] * q * q;
            }
            d = if sumq2 > 0.0 { sumqx / sumq2 } else { 0.0 };
            let mut best = d * sumqx;
            for itry in -NTRY..=NTRY {
                id = (itry + values[0] as i32) as f32 / max;
                sumqx = 0.0;
                sumq2 = 0.0;
                for (j, &v) in xb.iter().enumerate() {
                    let q = values[best_index_int8(values, id * v)] as f32;
                    sumqx += weight[j] * q * v;
                    sumq2 += weight[j] * q * q;
                }
                if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
                    d = sumqx / sumq2;
                    best = d * sumqx;
                }
            }
            scale = d;
        }
        b.d = to_fp16(scale);
        let id = if scale != 0.0 { 1.0 / scale } else { 0.0 };
        for (c, &v) in l.iter_mut().zip(xb) {
            *c = best_index_int8(values, id * v) as u8;
        }
        for j in 0..QK4_NL / 2 {
            b.qs[j] = l[j] | (l[j + QK4_NL / 2] << 4);
        }
    }
}

pub fn dequantize_row_iq4_nl(x: &[BlockIQ4NL], y: &mut [f32]) {
    for (b, yb) in x.iter().zip(y.chunks_exact_mut(QK4_NL)) {
        let d = fp16(b.d);
        for j in 0..QK4_NL / 2 {
            yb[j] = d * KVALUES[(b.qs[j] & 0xf) as usize] as f32;
            yb[j + QK4_NL / 2] = d * KVALUES[(b.qs[j] >> 4) as usize] as f32;
        }
    }
}
