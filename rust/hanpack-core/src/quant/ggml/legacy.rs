//! ggml's original 32-weight block formats. `d` is the fp16 scale, `m` the fp16 minimum;
//! in every format weight `j` of the block and weight `j + 16` share byte `qs[j]`
//! (low nibble, high nibble).
//!
//! | type | block | formula | bits/weight |
//! |------|-------|---------|-------------|
//! | Q4_0 | `d`, `qs[16]` | `w = d * (q - 8)`, q in 0..=15 | 4.5 |
//! | Q4_1 | `d`, `m`, `qs[16]` | `w = d * q + m` | 5.0 |
//! | Q5_0 | `d`, `qh[4]`, `qs[16]` | `w = d * (q - 16)`, bit 4 of q in `qh` | 5.5 |
//! | Q5_1 | `d`, `m`, `qh[4]`, `qs[16]` | `w = d * q + m` | 6.0 |
//! | Q8_0 | `d`, `qs[32]` (int8) | `w = d * q` | 8.5 |

use bytemuck::{Pod, Zeroable};

use super::helpers::{
    abs_max, avx2_dispatch, fp16, imatrix_weights, make_qkx_quants, make_qx_quants,
    round_half_away, sum_sq, to_fp16, trunc_sat_i8, MinSearch, QxWeights,
};

pub const QK: usize = 32;

#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ4_0 {
    /// Scale (fp16): the block's signed extremum maps to code 0.
    pub d: [u8; 2],
    /// Codes, two per byte.
    pub qs: [u8; QK / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_0>() == 2 + QK / 2);

#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ4_1 {
    /// Scale (fp16).
    pub d: [u8; 2],
    /// Minimum (fp16), the value of code 0.
    pub m: [u8; 2],
    pub qs: [u8; QK / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == 4 + QK / 2);

#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ5_0 {
    pub d: [u8; 2],
    /// Bit 4 of each code, weight `j` at bit `j` (little-endian u32).
    pub qh: [u8; 4],
    /// Low four bits of the codes.
    pub qs: [u8; QK / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_0>() == 6 + QK / 2);

#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ5_1 {
    pub d: [u8; 2],
    pub m: [u8; 2],
    pub qh: [u8; 4],
    pub qs: [u8; QK / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_1>() == 8 + QK / 2);

#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ8_0 {
    pub d: [u8; 2],
    /// Signed codes.
    pub qs: [i8; QK],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 2 + QK);

#[inline(always)]
fn min_max(x: &[f32]) -> (f32, f32) {
    let (mut min, mut max) = (f32::MAX, -f32::MAX);
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

#[inline(always)]
fn inverse(d: f32) -> f32 {
    if d != 0.0 {
        1.0 / d
    } else {
        0.0
    }
}

/// Packs 5-bit codes: low nibbles into `qs`, bit 4 of code `j` into bit `j` of `qh`.
#[inline(always)]
fn pack5(codes: &[u8; QK], qs: &mut [u8; QK / 2], qh: &mut [u8; 4]) {
    let mut h = 0u32;
    for j in 0..QK / 2 {
        let (a, b) = (codes[j], codes[j + QK / 2]);
        qs[j] = (a & 0x0f) | ((b & 0x0f) << 4);
        h |= ((a as u32 & 0x10) >> 4) << j;
        h |= ((b as u32 & 0x10) >> 4) << (j + QK / 2);
    }
    *qh = h.to_le_bytes();
}

/// `Σ x² / n` over the whole row: the importance-weighted legacy quantizers use it.
fn row_sigma2(x: &[f32]) -> f32 {
    sum_sq(x) / x.len() as f32
}

/// The importance-weighted Q4_1/Q5_1 search (ggml's `make_qkx3_quants` settings).
fn weighted_min_search(nmax: i32) -> MinSearch {
    MinSearch {
        nmax,
        rmin: -0.9,
        rdelta: 0.05,
        nstep: 36,
        use_mad: false,
    }
}

#[inline(always)] // into its AVX2 copy, so the loops are compiled for AVX2
fn quantize_row_q4_0_impl(x: &[f32], y: &mut [BlockQ4_0], imatrix: Option<&[f32]>) {
    if let Some(qw) = imatrix {
        let sigma2 = row_sigma2(x);
        let (mut weight, mut l) = ([0f32; QK], [0i8; QK]);
        for (ib, (b, xb)) in y.iter_mut().zip(x.chunks_exact(QK)).enumerate() {
            imatrix_weights(&qw[ib * QK..(ib + 1) * QK], xb, sigma2, &mut weight);
            let d = make_qx_quants(8, xb, &mut l, QxWeights::Given(&weight));
            b.d = to_fp16(d);
            for j in 0..QK / 2 {
                b.qs[j] = l[j] as u8 | ((l[j + QK / 2] as u8) << 4);
            }
        }
        return;
    }
    for (b, xb) in y.iter_mut().zip(x.chunks_exact(QK)) {
        let d = abs_max(xb).1 / -8.0;
        let id = inverse(d);
        b.d = to_fp16(d);
        for j in 0..QK / 2 {
            let q0 = trunc_sat_i8(xb[j] * id + 8.5).min(15) as u8;
            let q1 = trunc_sat_i8(xb[j + QK / 2] * id + 8.5).min(15) as u8;
            b.qs[j] = q0 | (q1 << 4);
        }
    }
}

#[inline(always)] // into its AVX2 copy, so the loops are compiled for AVX2
fn quantize_row_q4_1_impl(x: &[f32], y: &mut [BlockQ4_1], imatrix: Option<&[f32]>) {
    if let Some(qw) = imatrix {
        let sigma2 = row_sigma2(x);
        let (mut weight, mut l, mut laux) = ([0f32; QK], [0u8; QK], [0u8; QK]);
        let search = weighted_min_search(15);
        for (ib, (b, xb)) in y.iter_mut().zip(x.chunks_exact(QK)).enumerate() {
            imatrix_weights(&qw[ib * QK..(ib + 1) * QK], xb, sigma2, &mut weight);
            let (d, min) = make_qkx_quants(&search, xb, Some(&weight), true, &mut l, &mut laux);
            b.d = to_fp16(d);
            b.m = to_fp16(-min);
            for j in 0..QK / 2 {
                b.qs[j] = l[j] | (l[j + QK / 2] << 4);
            }
        }
        return;
    }
    for (b, xb) in y.iter_mut().zip(x.chunks_exact(QK)) {
        let (min, max) = min_max(xb);
        let d = (max - min) / 15.0;
        let id = inverse(d);
        b.d = to_fp16(d);
        b.m = to_fp16(min);
        for j in 0..QK / 2 {
            let q0 = (((xb[j] - min) * id + 0.5) as i8).min(15) as u8;
            let q1 = (((xb[j + QK / 2] - min) * id + 0.5) as i8).min(15) as u8;
            b.qs[j] = q0 | (q1 << 4);
        }
    }
}

#[inline(always)] // into its AVX2 copy, so the loops are compiled for AVX2
fn quantize_row_q5_0_impl(x: &[f32], y: &mut [BlockQ5_0], imatrix: Option<&[f32]>) {
    let mut codes = [0u8; QK];
    if let Some(qw) = imatrix {
        let sigma2 = row_sigma2(x);
        let (mut weight, mut l) = ([0f32; QK], [0i8; QK]);
        for (ib, (b, xb)) in y.iter_mut().zip(x.chunks_exact(QK)).enumerate() {
            imatrix_weights(&qw[ib * QK..(ib + 1) * QK], xb, sigma2, &mut weight);
            let d = make_qx_quants(16, xb, &mut l, QxWeights::Given(&weight));
            b.d = to_fp16(d);
            for (c, &v) in codes.iter_mut().zip(&l) {
                *c = v as u8;
            }
            pack5(&codes, &mut b.qs, &mut b.qh);
        }
        return;
    }
    for (b, xb) in y.iter_mut().zip(x.chunks_exact(QK)) {
        let d = abs_max(xb).1 / -16.0;
        let id = inverse(d);
        b.d = to_fp16(d);
        for (c, &v) in codes.iter_mut().zip(xb) {
            *c = trunc_sat_i8(v * id + 16.5).min(31) as u8;
        }
        pack5(&codes, &mut b.qs, &mut b.qh);
    }
}

#[inline(always)] // into its AVX2 copy, so the loops are compiled for AVX2
fn quantize_row_q5_1_impl(x: &[f32], y: &mut [BlockQ5_1], imatrix: Option<&[f32]>) {
    let mut codes = [0u8; QK];
    if let Some(qw) = imatrix {
        let sigma2 = row_sigma2(x);
        let (mut weight, mut laux) = ([0f32; QK], [0u8; QK]);
        let search = weighted_min_search(31);
        for (ib, (b, xb)) in y.iter_mut().zip(x.chunks_exact(QK)).enumerate() {
            imatrix_weights(&qw[ib * QK..(ib + 1) * QK], xb, sigma2, &mut weight);
            let (d, min) = make_qkx_quants(&search, xb, Some(&weight), true, &mut codes, &mut laux);
            b.d = to_fp16(d);
            b.m = to_fp16(-min);
            pack5(&codes, &mut b.qs, &mut b.qh);
        }
        return;
    }
    for (b, xb) in y.iter_mut().zip(x.chunks_exact(QK)) {
        let (min, max) = min_max(xb);
        let d = (max - min) / 31.0;
        let id = inverse(d);
        b.d = to_fp16(d);
        b.m = to_fp16(min);
        for (c, &v) in codes.iter_mut().zip(xb) {
            // ggml casts straight to uint8_t here (no clamp): codes stay <= 31 for
            // finite input.
            *c = ((v - min) * id + 0.5) as u8;
        }
        pack5(&codes, &mut b.qs, &mut b.qh);
    }
}

/// Q8_0 has no importance-weighted variant in ggml (`imatrix` is ignored).
#[inline(always)] // into its AVX2 copy, so the loops are compiled for AVX2
fn quantize_row_q8_0_impl(x: &[f32], y: &mut [BlockQ8_0], _imatrix: Option<&[f32]>) {
    for (b, xb) in y.iter_mut().zip(x.chunks_exact(QK)) {
        let amax = abs_max(xb).0;
        let d = amax / 127.0;
        let id = inverse(d);
        b.d = to_fp16(d);
        for (q, &v) in b.qs.iter_mut().zip(xb) {
            *q = trunc_sat_i8(round_half_away(v * id)) as i8;
        }
    }
}

pub fn dequantize_row_q4_0(x: &[BlockQ4_0], y: &mut [f32]) {
    for (b, yb) in x.iter().zip(y.chunks_exact_mut(QK)) {
        let d = fp16(b.d);
        for j in 0..QK / 2 {
            yb[j] = ((b.qs[j] & 0x0f) as i32 - 8) as f32 * d;
            yb[j + QK / 2] = ((b.qs[j] >> 4) as i32 - 8) as f32 * d;
        }
    }
}

pub fn dequantize_row_q4_1(x: &[BlockQ4_1], y: &mut [f32]) {
    for (b, yb) in x.iter().zip(y.chunks_exact_mut(QK)) {
        let (d, m) = (fp16(b.d), fp16(b.m));
        for j in 0..QK / 2 {
            yb[j] = (b.qs[j] & 0x0f) as f32 * d + m;
            yb[j + QK / 2] = (b.qs[j] >> 4) as f32 * d + m;
        }
    }
}

fn unpack5(qs: &[u8; QK / 2], qh: [u8; 4], j: usize) -> (u8, u8) {
    let h = u32::from_le_bytes(qh);
    let h0 = ((h >> j) << 4) as u8 & 0x10;
    let h1 = (h >> (j + 12)) as u8 & 0x10;
    ((qs[j] & 0x0f) | h0, (qs[j] >> 4) | h1)
}

pub fn dequantize_row_q5_0(x: &[BlockQ5_0], y: &mut [f32]) {
    for (b, yb) in x.iter().zip(y.chunks_exact_mut(QK)) {
        let d = fp16(b.d);
        for j in 0..QK / 2 {
            let (q0, q1) = unpack5(&b.qs, b.qh, j);
            yb[j] = (q0 as i32 - 16) as f32 * d;
            yb[j + QK / 2] = (q1 as i32 - 16) as f32 * d;
        }
    }
}

pub fn dequantize_row_q5_1(x: &[BlockQ5_1], y: &mut [f32]) {
    for (b, yb) in x.iter().zip(y.chunks_exact_mut(QK)) {
        let (d, m) = (fp16(b.d), fp16(b.m));
        for j in 0..QK / 2 {
            let (q0, q1) = unpack5(&b.qs, b.qh, j);
            yb[j] = q0 as f32 * d + m;
            yb[j + QK / 2] = q1 as f32 * d + m;
        }
    }
}

pub fn dequantize_row_q8_0(x: &[BlockQ8_0], y: &mut [f32]) {
    for (b, yb) in x.iter().zip(y.chunks_exact_mut(QK)) {
        let d = fp16(b.d);
        for (v, &q) in yb.iter_mut().zip(&b.qs) {
            *v = q as f32 * d;
        }
    }
}

// The no-imatrix loops vectorise when compiled for AVX2 (same operations, same results).
avx2_dispatch!(
    quantize_row_q4_0,
    q4_0_avx2,
    quantize_row_q4_0_impl,
    BlockQ4_0
);
avx2_dispatch!(
    quantize_row_q4_1,
    q4_1_avx2,
    quantize_row_q4_1_impl,
    BlockQ4_1
);
avx2_dispatch!(
    quantize_row_q5_0,
    q5_0_avx2,
    quantize_row_q5_0_impl,
    BlockQ5_0
);
avx2_dispatch!(
    quantize_row_q5_1,
    q5_1_avx2,
    quantize_row_q5_1_impl,
    BlockQ5_1
);
avx2_dispatch!(
    quantize_row_q8_0,
    q8_0_avx2,
    quantize_row_q8_0_impl,
    BlockQ8_0
);
