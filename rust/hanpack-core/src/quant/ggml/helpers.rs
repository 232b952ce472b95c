//! ggml's scale searches (`make_*_quants` in `ggml-quants.c`), shared by the block
//! formats. Each mirrors ggml's arithmetic exactly, the order of every f32 product and
//! sum included, because a one-ulp difference can move a code and break byte equality
//! with llama.cpp. `as f32` conversions stand where C converts an int implicitly.

use half::f16;

/// Below this a group counts as all zeros.
pub const GROUP_MAX_EPS: f32 = 1e-15;

/// Round half to even through the f32 adder (ggml's `nearest_int`): valid for
/// |x| <= 2^22, as ggml's use keeps it.
#[inline(always)]
pub fn nearest_int(fval: f32) -> i32 {
    let val = fval + 12582912.0;
    (val.to_bits() as i32 & 0x007f_ffff) - 0x0040_0000
}

/// ggml's `GGML_FP32_TO_FP16` (round to nearest even), stored little-endian.
#[inline]
pub fn to_fp16(x: f32) -> [u8; 2] {
    f16::from_f32(x).to_le_bytes()
}

#[inline]
pub fn fp16(b: [u8; 2]) -> f32 {
    f16::from_le_bytes(b).to_f32()
}

/// ggml's `ggml_compute_fp32_to_bf16`: round to nearest even, NaN forced quiet.
pub fn f32_to_bf16(x: f32) -> u16 {
    let n = x.to_bits();
    if n & 0x7fff_ffff > 0x7f80_0000 {
        return ((n >> 16) | 64) as u16;
    }
    ((n as u64 + (0x7fff + ((n >> 16) & 1)) as u64) >> 16) as u16
}

/// `(|m|, m)` for the first value `m` of largest magnitude (`(0, 0)` for all zeros: ggml
/// starts from +0.0 and replaces only on a strictly larger magnitude).
#[inline(always)]
pub fn abs_max(x: &[f32]) -> (f32, f32) {
    // ggml scans for the first value of largest magnitude. The largest magnitude is found
    // in eight lanes (a maximum is exact in any order, and NaN never wins a `>`, as in the
    // scan), then the first value that has it: the same answer, and it vectorises.
    let mut lanes = [0f32; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for k in 0..8 {
            let a = c[k].abs();
            lanes[k] = if a > lanes[k] { a } else { lanes[k] };
        }
    }
    let mut amax = 0f32;
    for a in lanes
        .into_iter()
        .chain(chunks.remainder().iter().map(|v| v.abs()))
    {
        amax = if a > amax { a } else { amax };
    }
    if amax == 0.0 {
        return (0.0, 0.0);
    }
    let max = x.iter().copied().find(|v| v.abs() == amax).unwrap_or(0.0);
    (amax, max)
}

/// `f as i8` (truncation toward zero, saturating, NaN to 0) as an `i32`, written as
/// selects and an in-range conversion so that loops of it vectorise.
#[inline(always)]
pub fn trunc_sat_i8(f: f32) -> i32 {
    let c = if f.is_nan() {
        0.0
    } else if f < -128.0 {
        -128.0
    } else if f > 127.0 {
        127.0
    } else {
        f
    };
    // SAFETY: `c` is finite and within i32 (clamped just above).
    unsafe { c.to_int_unchecked::<i32>() }
}

/// C's `roundf` (half away from zero), as `f32::round`, in operations that vectorise.
#[inline(always)]
pub fn round_half_away(f: f32) -> f32 {
    let t = f.trunc();
    if (f - t).abs() >= 0.5 {
        t + 1f32.copysign(f)
    } else {
        t
    }
}

/// Where a weight's importance comes from when a search has no explicit weights.
#[derive(Clone, Copy)]
pub enum QxWeights<'a> {
    /// `x²` (ggml's `rmse_type == 1`). Q6_K, its only user, runs the lane version
    /// ([`super::lanes`]); this scalar form is the reference the lanes are tested against.
    #[cfg_attr(not(test), allow(dead_code))]
    Square,
    Given(&'a [f32]),
}

/// Symmetric search (`make_qx_quants`, rmse_type 1): codes `L` in `0 .. 2*nmax`
/// (stored with the `+nmax` offset), returns the scale.
pub fn make_qx_quants(nmax: i32, x: &[f32], l_out: &mut [i8], qw: QxWeights) -> f32 {
    let n = x.len();
    let (amax, max) = abs_max(x);
    if amax < GROUP_MAX_EPS {
        l_out[..n].fill(0);
        return 0.0;
    }
    let weight = |i: usize| match qw {
        QxWeights::Given(w) => w[i],
        QxWeights::Square => x[i] * x[i],
    };
    let clamp = |l: i32| l.clamp(-nmax, nmax - 1);
    let mut iscale = -(nmax as f32) / max;
    let mut sumlx = 0f32;
    let mut suml2 = 0f32;
    for i in 0..n {
        let l = clamp(nearest_int(iscale * x[i]));
        l_out[i] = (l + nmax) as i8;
        let w = weight(i);
        sumlx += w * x[i] * l as f32;
        suml2 += w * l as f32 * l as f32;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for i in 0..n {
            let l = clamp(nearest_int(iscale * x[i]));
            let w = weight(i);
            sumlx += w * x[i] * l as f32;
            suml2 += w * l as f32 * l as f32;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for i in 0..n {
                let l = clamp(nearest_int(iscale * x[i]));
                l_out[i] = (nmax + l) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// Q3_K's symmetric search with coordinate-descent refinement (`make_q3_quants`,
/// `do_rmse` true).
pub fn make_q3_quants(nmax: i32, x: &[f32], l_out: &mut [i8]) -> f32 {
    let n = x.len();
    let (amax, max) = abs_max(x);
    if amax < GROUP_MAX_EPS {
        l_out[..n].fill(0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    let mut sumlx = 0f32;
    let mut suml2 = 0f32;
    for i in 0..n {
        let l = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
        l_out[i] = l as i8;
        let w = x[i] * x[i];
        sumlx += w * x[i] * l as f32;
        suml2 += w * l as f32 * l as f32;
    }
    for _ in 0..5 {
        let mut n_changed = 0;
        for i in 0..n {
            let w = x[i] * x[i];
            let li = l_out[i] as f32;
            let mut slx = sumlx - w * x[i] * li;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * li * li;
                let new_l = nearest_int(x[i] * sl2 / slx).clamp(-nmax, nmax - 1);
                if new_l != l_out[i] as i32 {
                    slx += w * x[i] * new_l as f32;
                    sl2 += w * new_l as f32 * new_l as f32;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        l_out[i] = new_l as i8;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if n_changed == 0 {
            break;
        }
    }
    for l in &mut l_out[..n] {
        *l += nmax as i8;
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// The settings of one asymmetric (scale + min) search.
pub struct MinSearch {
    pub nmax: i32,
    pub rmin: f32,
    pub rdelta: f32,
    pub nstep: i32,
    /// Minimise the weighted absolute error instead of the squared one.
    pub use_mad: bool,
}

/// Asymmetric search over `nstep + 1` candidate scales (`make_qkx2_quants` when
/// `weights` is given, `make_qkx3_quants` — weights `x²` when absent — otherwise;
/// they differ only there and in the `max <= min` test). Returns `(scale, -min)`.
pub fn make_qkx_quants(
    s: &MinSearch,
    x: &[f32],
    weights: Option<&[f32]>,
    qkx3: bool,
    l_out: &mut [u8],
    laux: &mut [u8],
) -> (f32, f32) {
    let n = x.len();
    let nmax = s.nmax;
    let weight = |i: usize| match weights {
        Some(w) => w[i],
        None => x[i] * x[i],
    };
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weight(0);
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weight(i);
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if (qkx3 && max <= min) || (!qkx3 && max == min) {
        l_out[..n].fill(0);
        return (0.0, -min);
    }
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let err = |d: f32| if s.use_mad { d.abs() } else { d * d };
    let mut best_error = 0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min));
        l_out[i] = l.clamp(0, nmax) as u8;
        let diff = scale * l_out[i] as f32 + min - x[i];
        best_error += weight(i) * err(diff);
    }
    if s.nstep < 1 {
        return (scale, -min);
    }
    for is in 0..=s.nstep {
        iscale = (s.rmin + s.rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
        for i in 0..n {
            let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = l as u8;
            let w = weight(i);
            let lf = l as f32;
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        let d = sum_w * sum_l2 - sum_l * sum_l;
        if d > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0f32;
            for i in 0..n {
                let diff = this_scale * laux[i] as f32 + this_min - x[i];
                cur_error += weight(i) * err(diff);
            }
            if cur_error < best_error {
                l_out[..n].copy_from_slice(&laux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// Quantizes the sub-block scales (or mins) of a super-block to `0 ..= nmax` with
/// weights `qw` (`make_qp_quants`); codes may wrap like ggml's `uint8_t` stores.
pub fn make_qp_quants(nmax: i32, x: &[f32], l_out: &mut [u8], qw: &[f32]) -> f32 {
    let n = x.len();
    let mut max = 0f32;
    for &v in x {
        max = if max > v { max } else { v };
    }
    if max < GROUP_MAX_EPS {
        l_out[..n].fill(0);
        return 0.0;
    }
    let mut iscale = nmax as f32 / max;
    for i in 0..n {
        l_out[i] = nearest_int(iscale * x[i]) as u8;
    }
    let scale = 1.0 / iscale;
    let mut best_mse = 0f32;
    for i in 0..n {
        let diff = x[i] - scale * l_out[i] as f32;
        best_mse += qw[i] * diff * diff;
    }
    for is in -4..=4 {
        if is == 0 {
            continue;
        }
        let iscale_is = (0.1 * is as f32 + nmax as f32) / max;
        let scale_is = 1.0 / iscale_is;
        let mut mse = 0f32;
        for i in 0..n {
            let l = nearest_int(iscale_is * x[i]).min(nmax);
            let diff = x[i] - scale_is * l as f32;
            mse += qw[i] * diff * diff;
        }
        if mse < best_mse {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    let mut sumlx = 0f32;
    let mut suml2 = 0f32;
    for i in 0..n {
        let l = nearest_int(iscale * x[i]).min(nmax);
        l_out[i] = l as u8;
        let w = qw[i];
        sumlx += w * x[i] * l as f32;
        suml2 += w * l as f32 * l as f32;
    }
    for _ in 0..5 {
        let mut n_changed = 0;
        for i in 0..n {
            let w = qw[i];
            let li = l_out[i] as f32;
            let mut slx = sumlx - w * x[i] * li;
            let mut sl2 = suml2 - w * li * li;
            if slx > 0.0 && sl2 > 0.0 {
                let new_l = nearest_int(x[i] * sl2 / slx).min(nmax);
                if new_l != l_out[i] as i32 {
                    slx += w * x[i] * new_l as f32;
                    sl2 += w * new_l as f32 * new_l as f32;
                    if slx * slx * suml2 > sumlx * sumlx * sl2 {
                        l_out[i] = new_l as u8;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if n_changed == 0 {
            break;
        }
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// Index of the entry of the sorted table `val` nearest to `x` (`best_index_int8`).
#[inline]
pub fn best_index_int8(val: &[i8], x: f32) -> usize {
    let n = val.len();
    if x <= val[0] as f32 {
        return 0;
    }
    if x >= val[n - 1] as f32 {
        return n - 1;
    }
    let (mut ml, mut mu) = (0usize, n - 1);
    while mu - ml > 1 {
        let mav = (ml + mu) / 2;
        if x < val[mav] as f32 {
            mu = mav;
        } else {
            ml = mav;
        }
    }
    if x - (val[mu - 1] as f32) < val[mu] as f32 - x {
        mu - 1
    } else {
        mu
    }
}

/// Weights `qw[j] * sqrt(sigma2 + x[j]²)`, the form every importance-weighted ggml
/// quantizer uses.
#[inline]
pub fn imatrix_weights(qw: &[f32], x: &[f32], sigma2: f32, out: &mut [f32]) {
    for ((o, &q), &v) in out.iter_mut().zip(qw).zip(x) {
        *o = q * (sigma2 + v * v).sqrt();
    }
}

/// `Σ x²` in order (ggml's loops sum sequentially; a tree sum would round differently).
#[inline(always)]
pub fn sum_sq(x: &[f32]) -> f32 {
    let mut s = 0f32;
    for &v in x {
        s += v * v;
    }
    s
}

/// Runtime dispatch: the same code compiled for AVX2 (the lane searches vectorise) or
/// for baseline x86-64; results are identical (no FMA, same operation order).
macro_rules! avx2_dispatch {
    ($name:ident, $avx2:ident, $imp:ident, $block:ty) => {
        pub fn $name(x: &[f32], y: &mut [$block], imatrix: Option<&[f32]>) {
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2 (checked just above).
                return unsafe { $avx2(x, y, imatrix) };
            }
            $imp(x, y, imatrix)
        }

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2")]
        unsafe fn $avx2(x: &[f32], y: &mut [$block], imatrix: Option<&[f32]>) {
            $imp(x, y, imatrix)
        }
    };
}

pub(crate) use avx2_dispatch;
