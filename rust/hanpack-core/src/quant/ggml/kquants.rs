//! ggml's K-quants: 256-weight super-blocks of 16 or 32-weight sub-blocks, each sub-block
//! with its own scale (and min) quantized against the super-block's fp16 `d` (and `dmin`).
//!
//! | type | sub-blocks | formula (sub-block `s`) | bits/weight |
//! |------|------------|-------------------------|-------------|
//! | Q2_K | 16 × 16 | `w = d * sc_s * q - dmin * m_s`, q in 0..=3, 4-bit sc, m | 2.625 |
//! | Q3_K | 16 × 16 | `w = d * (sc_s - 32) * (q - 4)`, q in 0..=7, 6-bit sc | 3.4375 |
//! | Q4_K | 8 × 32 | `w = d * sc_s * q - dmin * m_s`, q in 0..=15, 6-bit sc, m | 4.5 |
//! | Q5_K | 8 × 32 | same, q in 0..=31 | 5.5 |
//! | Q6_K | 16 × 16 | `w = d * sc_s * (q - 32)`, q in 0..=63, int8 sc | 6.5625 |
//!
//! Bit layouts follow ggml-common.h; the per-field comments say where each code lives.

use bytemuck::{Pod, Zeroable};

use super::helpers::{
    avx2_dispatch, fp16, imatrix_weights, make_q3_quants, make_qkx_quants, make_qp_quants,
    make_qx_quants, nearest_int, sum_sq, to_fp16, MinSearch, QxWeights, GROUP_MAX_EPS,
};
use super::lanes::{make_qkx2_lanes, make_qx_lanes, transpose, Lanes, LANES};
use super::QK_K;

#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ2K {
    /// Sub-block scale (low nibble) and min (high nibble), 16 sub-blocks.
    pub scales: [u8; QK_K / 16],
    /// 2-bit codes: byte `32*h + l` holds weights `128*h + l + 32*k` at bits `2k`.
    pub qs: [u8; QK_K / 4],
    /// Super-block scale of the scales (fp16).
    pub d: [u8; 2],
    /// Super-block scale of the mins (fp16).
    pub dmin: [u8; 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ2K>() == 2 * 2 + QK_K / 16 + QK_K / 4);

#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ3K {
    /// Bit 2 of each code: weight `j` at byte `j % 32`, bit `j / 32`.
    pub hmask: [u8; QK_K / 8],
    /// Low 2 bits of the codes, as Q2_K's `qs`.
    pub qs: [u8; QK_K / 4],
    /// 16 6-bit scales: low nibbles in bytes 0..8, top 2 bits in bytes 8..12.
    pub scales: [u8; 12],
    pub d: [u8; 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ3K>() == 2 + QK_K / 4 + QK_K / 8 + 12);

#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ4K {
    pub d: [u8; 2],
    pub dmin: [u8; 2],
    /// 8 6-bit scales and 8 6-bit mins (see `get_scale_min_k4`).
    pub scales: [u8; 12],
    /// 4-bit codes: byte `32*h + l` holds weight `64*h + l` (low) and `64*h + 32 + l`.
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4K>() == 2 * 2 + 12 + QK_K / 2);

#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ5K {
    pub d: [u8; 2],
    pub dmin: [u8; 2],
    pub scales: [u8; 12],
    /// Bit 4 of the codes: weight `64*h + l` at byte `l` bit `2h`, `+32` at bit `2h + 1`.
    pub qh: [u8; QK_K / 8],
    /// Low 4 bits, as Q4_K's `qs`.
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ5K>() == 2 * 2 + 12 + QK_K / 8 + QK_K / 2);

#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ6K {
    /// Low 4 bits: per 128 weights, byte `l` holds `l` and `l + 64`, byte `32 + l`
    /// holds `l + 32` and `l + 96`.
    pub ql: [u8; QK_K / 2],
    /// High 2 bits: per 128 weights, byte `l` holds `l + 32k` at bits `2k`.
    pub qh: [u8; QK_K / 4],
    /// Sub-block scales (int8).
    pub scales: [i8; QK_K / 16],
    pub d: [u8; 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ6K>() == 2 + QK_K / 16 + 3 * QK_K / 4);

/// Scale and min of sub-block `j` of a Q4_K/Q5_K block (ggml's `get_scale_min_k4`).
#[inline]
fn get_scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// The inverse of [`get_scale_min_k4`], for 6-bit `ls`, `lm` (wider values wrap as
/// ggml's `uint8_t` arithmetic does).
fn pack_scale_min_k4(ls: &[u8; 8], lm: &[u8; 8]) -> [u8; 12] {
    let mut s = [0u8; 12];
    for j in 0..8 {
        if j < 4 {
            s[j] = ls[j];
            s[j + 4] = lm[j];
        } else {
            s[j + 4] = (ls[j] & 0xf) | ((lm[j] & 0xf) << 4);
            s[j - 4] |= (ls[j] >> 4) << 6;
            s[j] |= (lm[j] >> 4) << 6;
        }
    }
    s
}

/// Packs 2-bit codes as Q2_K/Q3_K's `qs`.
fn pack_2bit(l: &[u8; QK_K], qs: &mut [u8; QK_K / 4]) {
    for j in (0..QK_K).step_by(128) {
        for k in 0..32 {
            qs[j / 4 + k] =
                l[j + k] | (l[j + k + 32] << 2) | (l[j + k + 64] << 4) | (l[j + k + 96] << 6);
        }
    }
}

// ---------------------------------------------------------------- Q2_K

#[inline(always)]
fn quantize_row_q2_k_impl(x: &[f32], y: &mut [BlockQ2K], imatrix: Option<&[f32]>) {
    let mut l = [0u8; QK_K];
    let mut laux = [0u8; 16];
    let mut weights = [0f32; 16];
    let mut mins = [0f32; 16];
    let mut scales = [0f32; 16];
    for (i, (b, x)) in y.iter_mut().zip(x.chunks_exact(QK_K)).enumerate() {
        let (dm, mm);
        if let Some(qw) = imatrix {
            let qw = &qw[QK_K * i..QK_K * (i + 1)];
            let sigma2 = sum_sq(x) / QK_K as f32;
            let mut sw = [0f32; 16];
            let search = MinSearch {
                nmax: 3,
                rmin: -0.9,
                rdelta: 0.05,
                nstep: 36,
                use_mad: false,
            };
            for j in 0..16 {
                let xs = &x[16 * j..16 * (j + 1)];
                imatrix_weights(&qw[16 * j..16 * (j + 1)], xs, sigma2, &mut weights);
                for w in &weights {
                    sw[j] += w;
                }
                let ls = &mut l[16 * j..16 * (j + 1)];
                (scales[j], mins[j]) =
                    make_qkx_quants(&search, xs, Some(&weights), true, ls, &mut laux);
            }
            let (mut ls, mut lm) = ([0u8; 16], [0u8; 16]);
            let d = make_qp_quants(15, &scales, &mut ls, &sw);
            let m = make_qp_quants(15, &mins, &mut lm, &sw);
            b.d = to_fp16(d);
            b.dmin = to_fp16(m);
            for j in 0..16 {
                b.scales[j] = ls[j] | (lm[j] << 4);
            }
            (dm, mm) = (fp16(b.d), fp16(b.dmin));
        } else {
            let search = MinSearch {
                nmax: 3,
                rmin: -0.5,
                rdelta: 0.1,
                nstep: 15,
                use_mad: true,
            };
            let (mut max_scale, mut max_min) = (0f32, 0f32);
            for g in 0..2 {
                let xh = &x[128 * g..128 * (g + 1)];
                let xt = transpose::<16>(xh);
                let wt: [Lanes; 16] = std::array::from_fn(|i| xt[i].map(f32::abs));
                let mut lt = [[0u8; LANES]; 16];
                let (sc, mn) = make_qkx2_lanes::<16>(&search, &xt, &wt, &mut lt);
                for k in 0..LANES {
                    let j = LANES * g + k;
                    (scales[j], mins[j]) = (sc[k], mn[k]);
                    for i in 0..16 {
                        l[16 * j + i] = lt[i][k];
                    }
                }
            }
            for j in 0..16 {
                if scales[j] > max_scale {
                    max_scale = scales[j];
                }
                if mins[j] > max_min {
                    max_min = mins[j];
                }
            }
            const Q4SCALE: f32 = 15.0;
            if max_scale > 0.0 {
                let iscale = Q4SCALE / max_scale;
                for j in 0..16 {
                    b.scales[j] = nearest_int(iscale * scales[j]) as u8;
                }
                b.d = to_fp16(max_scale / Q4SCALE);
            } else {
                b.scales = [0; 16];
                b.d = to_fp16(0.0);
            }
            if max_min > 0.0 {
                let iscale = Q4SCALE / max_min;
                for j in 0..16 {
                    b.scales[j] |= (nearest_int(iscale * mins[j]) << 4) as u8;
                }
                b.dmin = to_fp16(max_min / Q4SCALE);
            } else {
                b.dmin = to_fp16(0.0);
            }
            (dm, mm) = (fp16(b.d), fp16(b.dmin));
        }
        for j in 0..16 {
            let d = dm * (b.scales[j] & 0xf) as f32;
            if d == 0.0 {
                continue;
            }
            let m = mm * (b.scales[j] >> 4) as f32;
            for ii in 0..16 {
                l[16 * j + ii] = nearest_int((x[16 * j + ii] + m) / d).clamp(0, 3) as u8;
            }
        }
        pack_2bit(&l, &mut b.qs);
    }
}

pub fn dequantize_row_q2_k(x: &[BlockQ2K], y: &mut [f32]) {
    for (b, y) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let (d, min) = (fp16(b.d), fp16(b.dmin));
        let mut out = 0;
        let mut is = 0;
        for half in 0..2 {
            let q = &b.qs[32 * half..32 * (half + 1)];
            for shift in (0..8).step_by(2) {
                for part in 0..2 {
                    let sc = b.scales[is];
                    is += 1;
                    let (dl, ml) = (d * (sc & 0xf) as f32, min * (sc >> 4) as f32);
                    for &qb in &q[16 * part..16 * (part + 1)] {
                        y[out] = dl * ((qb >> shift) & 3) as f32 - ml;
                        out += 1;
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------- Q3_K

/// The 6-bit scale `j` of a Q3_K block, minus 32.
#[inline]
fn q3k_scale(s: &[u8; 12], j: usize) -> i8 {
    let low = if j < 8 { s[j] & 0xf } else { s[j - 8] >> 4 };
    (low | (((s[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) as i8 - 32
}

pub fn quantize_row_q3_k(x: &[f32], y: &mut [BlockQ3K], imatrix: Option<&[f32]>) {
    let mut l = [0i8; QK_K];
    let mut scales = [0f32; 16];
    for (i, (b, x)) in y.iter_mut().zip(x.chunks_exact(QK_K)).enumerate() {
        b.scales = [0; 12];
        // 6-bit scale codes (0..=63) before packing.
        let mut codes = [0u8; 16];
        let d;
        if let Some(qw) = imatrix {
            let qw = &qw[QK_K * i..QK_K * (i + 1)];
            let sigma2 = 2.0 * sum_sq(x) / QK_K as f32;
            let mut weight = [0f32; 16];
            let mut sw = [0f32; 16];
            for j in 0..16 {
                let xs = &x[16 * j..16 * (j + 1)];
                imatrix_weights(&qw[16 * j..16 * (j + 1)], xs, sigma2, &mut weight);
                let mut sumw = 0f32;
                for w in &weight {
                    sumw += w;
                }
                sw[j] = sumw;
                scales[j] = make_qx_quants(
                    4,
                    xs,
                    &mut l[16 * j..16 * (j + 1)],
                    QxWeights::Given(&weight),
                );
            }
            let mut ls = [0i8; 16];
            d = make_qx_quants(32, &scales, &mut ls, QxWeights::Given(&sw));
            for j in 0..16 {
                codes[j] = ls[j] as u8;
            }
        } else {
            let (mut max_scale, mut amax) = (0f32, 0f32);
            for j in 0..16 {
                scales[j] =
                    make_q3_quants(4, &x[16 * j..16 * (j + 1)], &mut l[16 * j..16 * (j + 1)]);
                let scale = scales[j].abs();
                if scale > amax {
                    amax = scale;
                    max_scale = scales[j];
                }
            }
            if max_scale == 0.0 {
                b.d = to_fp16(0.0);
                finish_q3k(b, x, &mut l);
                continue;
            }
            let iscale = -32.0 / max_scale;
            for j in 0..16 {
                // ggml stores nearest_int's result in an int8_t before clamping.
                let c = nearest_int(iscale * scales[j]) as i8;
                codes[j] = (c.clamp(-32, 31) + 32) as u8;
            }
            d = 1.0 / iscale;
        }
        for (j, &c) in codes.iter().enumerate() {
            if j < 8 {
                b.scales[j] = c & 0xf;
            } else {
                b.scales[j - 8] |= (c & 0xf) << 4;
            }
            b.scales[j % 4 + 8] |= (c >> 4) << (2 * (j / 4));
        }
        b.d = to_fp16(d);
        finish_q3k(b, x, &mut l);
    }
}

/// Requantizes every sub-block against its stored scale, then packs the codes.
fn finish_q3k(b: &mut BlockQ3K, x: &[f32], l: &mut [i8; QK_K]) {
    let d_all = fp16(b.d);
    for j in 0..16 {
        let d = d_all * q3k_scale(&b.scales, j) as f32;
        if d == 0.0 {
            continue;
        }
        for ii in 0..16 {
            l[16 * j + ii] = (nearest_int(x[16 * j + ii] / d).clamp(-4, 3) + 4) as i8;
        }
    }
    b.hmask = [0; QK_K / 8];
    let mut low = [0u8; QK_K];
    for j in 0..QK_K {
        let mut v = l[j];
        if v > 3 {
            b.hmask[j % 32] |= 1 << (j / 32);
            v -= 4;
        }
        low[j] = v as u8;
    }
    pack_2bit(&low, &mut b.qs);
}

pub fn dequantize_row_q3_k(x: &[BlockQ3K], y: &mut [f32]) {
    for (b, y) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d_all = fp16(b.d);
        let mut out = 0;
        let mut is = 0;
        let mut m = 1u8;
        for half in 0..2 {
            let q = &b.qs[32 * half..32 * (half + 1)];
            for shift in (0..8).step_by(2) {
                for part in 0..2 {
                    let dl = d_all * q3k_scale(&b.scales, is) as f32;
                    is += 1;
                    for k in 16 * part..16 * (part + 1) {
                        let hi = if b.hmask[k] & m != 0 { 0 } else { 4 };
                        y[out] = dl * (((q[k] >> shift) & 3) as i32 - hi) as f32;
                        out += 1;
                    }
                }
                m <<= 1;
            }
        }
    }
}

// ---------------------------------------------------------------- Q4_K and Q5_K

/// Scales and mins of the eight 32-weight sub-blocks, shared by Q4_K and Q5_K (they
/// differ in `nmax`, the search settings and Q5_K's extra clamp). Fills `l` with codes in
/// `0..=nmax` and returns `(d, dmin, packed scales)`.
#[inline(always)]
fn quantize_k4_scales(
    x: &[f32],
    qw: Option<&[f32]>,
    nmax: i32,
    ref_search: &MinSearch,
    clamp_imatrix_codes: bool,
    l: &mut [u8; QK_K],
) -> ([u8; 2], [u8; 2], [u8; 12]) {
    let mut laux = [0u8; 32];
    let mut weights = [0f32; 32];
    let mut mins = [0f32; 8];
    let mut scales = [0f32; 8];
    let (mut ls, mut lm) = ([0u8; 8], [0u8; 8]);
    let (d, dmin);
    if let Some(qw) = qw {
        let sigma2 = 2.0 * sum_sq(x) / QK_K as f32;
        let mut sw = [0f32; 8];
        let search = MinSearch {
            nmax,
            rmin: -0.9,
            rdelta: 0.05,
            nstep: 36,
            use_mad: false,
        };
        for j in 0..8 {
            let xs = &x[32 * j..32 * (j + 1)];
            imatrix_weights(&qw[32 * j..32 * (j + 1)], xs, sigma2, &mut weights);
            let mut sumw = 0f32;
            for w in &weights {
                sumw += w;
            }
            sw[j] = sumw;
            let lj = &mut l[32 * j..32 * (j + 1)];
            (scales[j], mins[j]) =
                make_qkx_quants(&search, xs, Some(&weights), true, lj, &mut laux);
        }
        let d_block = make_qp_quants(63, &scales, &mut ls, &sw);
        let m_block = make_qp_quants(63, &mins, &mut lm, &sw);
        if clamp_imatrix_codes {
            for v in ls.iter_mut().chain(lm.iter_mut()) {
                *v = (*v).min(63);
            }
        }
        d = to_fp16(d_block);
        dmin = to_fp16(m_block);
    } else {
        let (mut max_scale, mut max_min) = (0f32, 0f32);
        let xt = transpose::<32>(x);
        let av_x: Lanes = std::array::from_fn(|k| (sum_sq(&x[32 * k..32 * (k + 1)]) / 32.0).sqrt());
        let wt: [Lanes; 32] =
            std::array::from_fn(|i| std::array::from_fn(|k| av_x[k] + xt[i][k].abs()));
        let mut lt = [[0u8; LANES]; 32];
        (scales, mins) = make_qkx2_lanes::<32>(ref_search, &xt, &wt, &mut lt);
        for k in 0..LANES {
            for i in 0..32 {
                l[32 * k + i] = lt[i][k];
            }
        }
        for j in 0..8 {
            if scales[j] > max_scale {
                max_scale = scales[j];
            }
            if mins[j] > max_min {
                max_min = mins[j];
            }
        }
        let inv_scale = if max_scale > 0.0 {
            63.0 / max_scale
        } else {
            0.0
        };
        let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
        for j in 0..8 {
            ls[j] = (nearest_int(inv_scale * scales[j]) as u8).min(63);
            lm[j] = (nearest_int(inv_min * mins[j]) as u8).min(63);
        }
        d = to_fp16(max_scale / 63.0);
        dmin = to_fp16(max_min / 63.0);
    }
    let packed = pack_scale_min_k4(&ls, &lm);
    let (df, mf) = (fp16(d), fp16(dmin));
    for j in 0..8 {
        let (sc, m) = get_scale_min_k4(j, &packed);
        let dj = df * sc as f32;
        if dj == 0.0 {
            continue;
        }
        let dm = mf * m as f32;
        for ii in 0..32 {
            l[32 * j + ii] = nearest_int((x[32 * j + ii] + dm) / dj).clamp(0, nmax) as u8;
        }
    }
    (d, dmin, packed)
}

#[inline(always)]
fn quantize_row_q4_k_impl(x: &[f32], y: &mut [BlockQ4K], imatrix: Option<&[f32]>) {
    let search = MinSearch {
        nmax: 15,
        rmin: -1.0,
        rdelta: 0.1,
        nstep: 20,
        use_mad: false,
    };
    let mut l = [0u8; QK_K];
    for (i, (b, x)) in y.iter_mut().zip(x.chunks_exact(QK_K)).enumerate() {
        let qw = imatrix.map(|w| &w[QK_K * i..QK_K * (i + 1)]);
        (b.d, b.dmin, b.scales) = quantize_k4_scales(x, qw, 15, &search, false, &mut l);
        for j in (0..QK_K).step_by(64) {
            for k in 0..32 {
                b.qs[j / 2 + k] = l[j + k] | (l[j + k + 32] << 4);
            }
        }
    }
}

#[inline(always)]
fn quantize_row_q5_k_impl(x: &[f32], y: &mut [BlockQ5K], imatrix: Option<&[f32]>) {
    let search = MinSearch {
        nmax: 31,
        rmin: -0.5,
        rdelta: 0.1,
        nstep: 15,
        use_mad: false,
    };
    let mut l = [0u8; QK_K];
    for (i, (b, x)) in y.iter_mut().zip(x.chunks_exact(QK_K)).enumerate() {
        let qw = imatrix.map(|w| &w[QK_K * i..QK_K * (i + 1)]);
        (b.d, b.dmin, b.scales) = quantize_k4_scales(x, qw, 31, &search, true, &mut l);
        b.qh = [0; QK_K / 8];
        let (mut m1, mut m2) = (1u8, 2u8);
        for n in (0..QK_K).step_by(64) {
            for j in 0..32 {
                let (mut l1, mut l2) = (l[n + j], l[n + j + 32]);
                if l1 > 15 {
                    l1 -= 16;
                    b.qh[j] |= m1;
                }
                if l2 > 15 {
                    l2 -= 16;
                    b.qh[j] |= m2;
                }
                b.qs[n / 2 + j] = l1 | (l2 << 4);
            }
            m1 <<= 2;
            m2 <<= 2;
        }
    }
}

pub fn dequantize_row_q4_k(x: &[BlockQ4K], y: &mut [f32]) {
    for (b, y) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let (d, min) = (fp16(b.d), fp16(b.dmin));
        for (h, yh) in y.chunks_exact_mut(64).enumerate() {
            let q = &b.qs[32 * h..32 * (h + 1)];
            let (sc1, m1) = get_scale_min_k4(2 * h, &b.scales);
            let (sc2, m2) = get_scale_min_k4(2 * h + 1, &b.scales);
            let (d1, m1) = (d * sc1 as f32, min * m1 as f32);
            let (d2, m2) = (d * sc2 as f32, min * m2 as f32);
            for k in 0..32 {
                yh[k] = d1 * (q[k] & 0xf) as f32 - m1;
                yh[k + 32] = d2 * (q[k] >> 4) as f32 - m2;
            }
        }
    }
}

pub fn dequantize_row_q5_k(x: &[BlockQ5K], y: &mut [f32]) {
    for (b, y) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let (d, min) = (fp16(b.d), fp16(b.dmin));
        for (h, yh) in y.chunks_exact_mut(64).enumerate() {
            let ql = &b.qs[32 * h..32 * (h + 1)];
            let (u1, u2) = (1u8 << (2 * h), 2u8 << (2 * h));
            let (sc1, m1) = get_scale_min_k4(2 * h, &b.scales);
            let (sc2, m2) = get_scale_min_k4(2 * h + 1, &b.scales);
            let (d1, m1) = (d * sc1 as f32, min * m1 as f32);
            let (d2, m2) = (d * sc2 as f32, min * m2 as f32);
            for k in 0..32 {
                let h1 = if b.qh[k] & u1 != 0 { 16 } else { 0 };
                let h2 = if b.qh[k] & u2 != 0 { 16 } else { 0 };
                yh[k] = d1 * ((ql[k] & 0xf) + h1) as f32 - m1;
                yh[k + 32] = d2 * ((ql[k] >> 4) + h2) as f32 - m2;
            }
        }
    }
}

// ---------------------------------------------------------------- Q6_K

#[inline(always)]
fn quantize_row_q6_k_impl(x: &[f32], y: &mut [BlockQ6K], imatrix: Option<&[f32]>) {
    let mut l = [0i8; QK_K];
    let mut scales = [0f32; 16];
    for (i, (b, x)) in y.iter_mut().zip(x.chunks_exact(QK_K)).enumerate() {
        let (mut max_scale, mut max_abs_scale) = (0f32, 0f32);
        for g in 0..2 {
            let xt = transpose::<16>(&x[128 * g..128 * (g + 1)]);
            // ggml passes the raw importances here (no sigma weighting).
            let wt = imatrix
                .map(|qw| transpose::<16>(&qw[QK_K * i + 128 * g..QK_K * i + 128 * (g + 1)]));
            let mut lt = [[0i8; LANES]; 16];
            let sc = make_qx_lanes::<16>(32, &xt, wt.as_ref(), &mut lt);
            for k in 0..LANES {
                let ib = LANES * g + k;
                scales[ib] = sc[k];
                for ii in 0..16 {
                    l[16 * ib + ii] = lt[ii][k];
                }
            }
        }
        for ib in 0..16 {
            let abs_scale = scales[ib].abs();
            if abs_scale > max_abs_scale {
                max_abs_scale = abs_scale;
                max_scale = scales[ib];
            }
        }
        if max_abs_scale < GROUP_MAX_EPS {
            *b = BlockQ6K::zeroed();
            continue;
        }
        let iscale = -128.0 / max_scale;
        b.d = to_fp16(1.0 / iscale);
        for ib in 0..16 {
            b.scales[ib] = nearest_int(iscale * scales[ib]).min(127) as i8;
        }
        let d_all = fp16(b.d);
        for j in 0..16 {
            let d = d_all * b.scales[j] as f32;
            if d == 0.0 {
                continue;
            }
            for ii in 0..16 {
                l[16 * j + ii] = (nearest_int(x[16 * j + ii] / d).clamp(-32, 31) + 32) as i8;
            }
        }
        for (h, j) in (0..QK_K).step_by(128).enumerate() {
            let (ql, qh) = (
                &mut b.ql[64 * h..64 * (h + 1)],
                &mut b.qh[32 * h..32 * (h + 1)],
            );
            for k in 0..32 {
                let q = [l[j + k], l[j + k + 32], l[j + k + 64], l[j + k + 96]].map(|v| v as u8);
                ql[k] = (q[0] & 0xf) | ((q[2] & 0xf) << 4);
                ql[k + 32] = (q[1] & 0xf) | ((q[3] & 0xf) << 4);
                qh[k] = (q[0] >> 4) | ((q[1] >> 4) << 2) | ((q[2] >> 4) << 4) | ((q[3] >> 4) << 6);
            }
        }
    }
}

pub fn dequantize_row_q6_k(x: &[BlockQ6K], y: &mut [f32]) {
    for (b, y) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d = fp16(b.d);
        for (h, yh) in y.chunks_exact_mut(128).enumerate() {
            let (ql, qh) = (&b.ql[64 * h..64 * (h + 1)], &b.qh[32 * h..32 * (h + 1)]);
            let sc = &b.scales[8 * h..8 * (h + 1)];
            for k in 0..32 {
                let is = k / 16;
                let q1 = ((ql[k] & 0xf) | ((qh[k] & 3) << 4)) as i8 - 32;
                let q2 = ((ql[k + 32] & 0xf) | (((qh[k] >> 2) & 3) << 4)) as i8 - 32;
                let q3 = ((ql[k] >> 4) | (((qh[k] >> 4) & 3) << 4)) as i8 - 32;
                let q4 = ((ql[k + 32] >> 4) | (((qh[k] >> 6) & 3) << 4)) as i8 - 32;
                yh[k] = d * sc[is] as f32 * q1 as f32;
                yh[k + 32] = d * sc[is + 2] as f32 * q2 as f32;
                yh[k + 64] = d * sc[is + 4] as f32 * q3 as f32;
                yh[k + 96] = d * sc[is + 6] as f32 * q4 as f32;
            }
        }
    }
}

avx2_dispatch!(
    quantize_row_q2_k,
    q2_k_avx2,
    quantize_row_q2_k_impl,
    BlockQ2K
);
avx2_dispatch!(
    quantize_row_q4_k,
    q4_k_avx2,
    quantize_row_q4_k_impl,
    BlockQ4K
);
avx2_dispatch!(
    quantize_row_q5_k,
    q5_k_avx2,
    quantize_row_q5_k_impl,
    BlockQ5K
);
avx2_dispatch!(
    quantize_row_q6_k,
    q6_k_avx2,
    quantize_row_q6_k_impl,
    BlockQ6K
);
