//! Eight sub-block scale searches at once, one per SIMD lane. ggml's searches
//! ([`super::helpers`]) sum in a fixed order, so their loops cannot be vectorised along a
//! sub-block without changing the rounding; but the sub-blocks of a super-block are
//! independent, so running eight of them side by side (lane `k` = sub-block `k`, data
//! transposed to `x[i][k]`) keeps every lane's operations and their order exactly those
//! of the scalar code, bit for bit, while the compiler packs the lanes into AVX2
//! registers. Branches become per-lane selects. Measured on Q4_K and Q6_K (the bulk of
//! Q4_K_M): 3–4× the scalar search per thread.

use super::helpers::{nearest_int, MinSearch, GROUP_MAX_EPS};

pub const LANES: usize = 8;
pub type Lanes = [f32; LANES];

#[inline(always)]
fn splat(v: f32) -> Lanes {
    [v; LANES]
}

/// [`super::helpers::make_qkx_quants`] with given weights (ggml's `make_qkx2_quants`),
/// for eight sub-blocks of `N` values: `x[i][k]` is value `i` of sub-block `k`. Returns
/// each lane's `(scale, -min)`; codes go to `l[i][k]`.
#[inline(always)]
pub fn make_qkx2_lanes<const N: usize>(
    s: &MinSearch,
    x: &[Lanes; N],
    w: &[Lanes; N],
    l: &mut [[u8; LANES]; N],
) -> (Lanes, Lanes) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { make_qkx2_avx2(s, x, w, l) };
    }
    make_qkx2_portable(s, x, w, l)
}

/// The array form of [`make_qkx2_lanes`], for CPUs without AVX2 (and the reference the
/// intrinsics version is tested against).
#[inline(always)]
pub fn make_qkx2_portable<const N: usize>(
    s: &MinSearch,
    x: &[Lanes; N],
    w: &[Lanes; N],
    l: &mut [[u8; LANES]; N],
) -> (Lanes, Lanes) {
    let nmax = s.nmax;
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = w[0];
    let mut sum_x = splat(0.0);
    for k in 0..LANES {
        sum_x[k] = sum_w[k] * x[0][k];
    }
    for i in 1..N {
        for k in 0..LANES {
            min[k] = if x[i][k] < min[k] { x[i][k] } else { min[k] };
            max[k] = if x[i][k] > max[k] { x[i][k] } else { max[k] };
            sum_w[k] += w[i][k];
            sum_x[k] += w[i][k] * x[i][k];
        }
    }
    let mut scale = splat(0.0);
    let mut best = splat(0.0);
    for k in 0..LANES {
        min[k] = if min[k] > 0.0 { 0.0 } else { min[k] };
        scale[k] = 1.0 / (nmax as f32 / (max[k] - min[k]));
    }
    // ggml returns early (codes 0, scale 0, this min) for a constant sub-block.
    let first_min = min;
    let flat: [bool; LANES] = std::array::from_fn(|k| max[k] == min[k]);
    let err = |d: f32| if s.use_mad { d.abs() } else { d * d };
    for i in 0..N {
        for k in 0..LANES {
            let iscale = nmax as f32 / (max[k] - min[k]);
            let q = nearest_int(iscale * (x[i][k] - min[k])).clamp(0, nmax);
            l[i][k] = q as u8;
            let diff = scale[k] * q as f32 + min[k] - x[i][k];
            best[k] += w[i][k] * err(diff);
        }
    }
    if s.nstep >= 1 {
        let mut laux = [[0u8; LANES]; N];
        for is in 0..=s.nstep {
            let num = s.rmin + s.rdelta * is as f32 + nmax as f32;
            let (mut sum_l, mut sum_l2, mut sum_xl) = (splat(0.0), splat(0.0), splat(0.0));
            for i in 0..N {
                for k in 0..LANES {
                    // (max - min) with the current min, which an accepted step moves.
                    let iscale = num / (max[k] - min[k]);
                    let q = nearest_int(iscale * (x[i][k] - min[k])).clamp(0, nmax);
                    laux[i][k] = q as u8;
                    let qf = q as f32;
                    sum_l[k] += w[i][k] * qf;
                    sum_l2[k] += w[i][k] * qf * qf;
                    sum_xl[k] += w[i][k] * qf * x[i][k];
                }
            }
            let mut this_scale = splat(0.0);
            let mut this_min = splat(0.0);
            let mut ok = [false; LANES];
            for k in 0..LANES {
                let d = sum_w[k] * sum_l2[k] - sum_l[k] * sum_l[k];
                ok[k] = d > 0.0;
                let ts = (sum_w[k] * sum_xl[k] - sum_x[k] * sum_l[k]) / d;
                let tm = (sum_l2[k] * sum_x[k] - sum_l[k] * sum_xl[k]) / d;
                let clip = tm > 0.0;
                this_min[k] = if clip { 0.0 } else { tm };
                this_scale[k] = if clip { sum_xl[k] / sum_l2[k] } else { ts };
            }
            let mut cur = splat(0.0);
            for i in 0..N {
                for k in 0..LANES {
                    let diff = this_scale[k] * laux[i][k] as f32 + this_min[k] - x[i][k];
                    cur[k] += w[i][k] * err(diff);
                }
            }
            let mut take = [false; LANES];
            for k in 0..LANES {
                take[k] = ok[k] && cur[k] < best[k];
                best[k] = if take[k] { cur[k] } else { best[k] };
                scale[k] = if take[k] { this_scale[k] } else { scale[k] };
                min[k] = if take[k] { this_min[k] } else { min[k] };
            }
            for i in 0..N {
                for k in 0..LANES {
                    l[i][k] = if take[k] { laux[i][k] } else { l[i][k] };
                }
            }
        }
    }
    let mut neg_min = splat(0.0);
    for k in 0..LANES {
        neg_min[k] = if flat[k] { -first_min[k] } else { -min[k] };
        scale[k] = if flat[k] { 0.0 } else { scale[k] };
    }
    for (k, f) in flat.iter().enumerate() {
        if *f {
            for row in l.iter_mut() {
                row[k] = 0;
            }
        }
    }
    (scale, neg_min)
}

/// [`super::helpers::make_qx_quants`] (rmse_type 1) for eight sub-blocks of `N` values;
/// `w` `None` means `x²`. Codes (with the `+nmax` offset) go to `l[i][k]`.
#[inline(always)]
pub fn make_qx_lanes<const N: usize>(
    nmax: i32,
    x: &[Lanes; N],
    w: Option<&[Lanes; N]>,
    l: &mut [[i8; LANES]; N],
) -> Lanes {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { make_qx_avx2(nmax, x, w, l) };
    }
    make_qx_portable(nmax, x, w, l)
}

/// The array form of [`make_qx_lanes`] (CPUs without AVX2; the intrinsics' reference).
#[inline(always)]
pub fn make_qx_portable<const N: usize>(
    nmax: i32,
    x: &[Lanes; N],
    w: Option<&[Lanes; N]>,
    l: &mut [[i8; LANES]; N],
) -> Lanes {
    let weight = |i: usize, k: usize| match w {
        Some(w) => w[i][k],
        None => x[i][k] * x[i][k],
    };
    let mut max = splat(0.0);
    let mut amax = splat(0.0);
    for row in x {
        for k in 0..LANES {
            let ax = row[k].abs();
            let bigger = ax > amax[k];
            amax[k] = if bigger { ax } else { amax[k] };
            max[k] = if bigger { row[k] } else { max[k] };
        }
    }
    let clamp = |q: i32| q.clamp(-nmax, nmax - 1);
    let (mut sumlx, mut suml2) = (splat(0.0), splat(0.0));
    for i in 0..N {
        for k in 0..LANES {
            let q = clamp(nearest_int(-(nmax as f32) / max[k] * x[i][k]));
            l[i][k] = (q + nmax) as i8;
            let wi = weight(i, k);
            sumlx[k] += wi * x[i][k] * q as f32;
            suml2[k] += wi * q as f32 * q as f32;
        }
    }
    let mut scale = splat(0.0);
    let mut best = splat(0.0);
    for k in 0..LANES {
        scale[k] = if suml2[k] != 0.0 {
            sumlx[k] / suml2[k]
        } else {
            0.0
        };
        best[k] = scale[k] * sumlx[k];
    }
    let mut laux = [[0i8; LANES]; N];
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        let num = -(nmax as f32 + 0.1 * is as f32);
        sumlx = splat(0.0);
        suml2 = splat(0.0);
        for i in 0..N {
            for k in 0..LANES {
                let q = clamp(nearest_int(num / max[k] * x[i][k]));
                laux[i][k] = (q + nmax) as i8;
                let wi = weight(i, k);
                sumlx[k] += wi * x[i][k] * q as f32;
                suml2[k] += wi * q as f32 * q as f32;
            }
        }
        let mut take = [false; LANES];
        for k in 0..LANES {
            take[k] = suml2[k] > 0.0 && sumlx[k] * sumlx[k] > best[k] * suml2[k];
            let s = sumlx[k] / suml2[k];
            scale[k] = if take[k] { s } else { scale[k] };
            best[k] = if take[k] { s * sumlx[k] } else { best[k] };
        }
        for i in 0..N {
            for k in 0..LANES {
                l[i][k] = if take[k] { laux[i][k] } else { l[i][k] };
            }
        }
    }
    for k in 0..LANES {
        if amax[k] < GROUP_MAX_EPS {
            scale[k] = 0.0;
            for row in l.iter_mut() {
                row[k] = 0;
            }
        }
    }
    scale
}

/// `x[i][k] = src[n*k + i]`: eight sub-blocks of `N` side by side.
#[inline(always)]
pub fn transpose<const N: usize>(src: &[f32]) -> [Lanes; N] {
    let mut out = [[0f32; LANES]; N];
    for k in 0..LANES {
        for i in 0..N {
            out[i][k] = src[N * k + i];
        }
    }
    out
}

/// [`make_qkx2_lanes`] written with AVX2 intrinsics: the same IEEE operations in the same
/// order per lane (mul, add, sub, div, compare-and-blend; no FMA), so the same bits. The
/// compiler's own vectorisation of the array version left most of the step loop scalar
/// (measured: 1.16× ggml's scalar search per thread; this version 3×).
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub unsafe fn make_qkx2_avx2<const N: usize>(
    s: &MinSearch,
    x: &[Lanes; N],
    w: &[Lanes; N],
    l: &mut [[u8; LANES]; N],
) -> (Lanes, Lanes) {
    use std::arch::x86_64::*;
    let ld = |a: &Lanes| _mm256_loadu_ps(a.as_ptr());
    let magic = _mm256_set1_ps(12582912.0);
    let mant = _mm256_set1_epi32(0x007f_ffff);
    let bias = _mm256_set1_epi32(0x0040_0000);
    let (zero_i, nmax_i) = (_mm256_setzero_si256(), _mm256_set1_epi32(s.nmax));
    let nmax_f = _mm256_set1_ps(s.nmax as f32);
    // nearest_int(v).clamp(0, nmax), exactly as the scalar code.
    let code = |v: __m256| {
        let i = _mm256_sub_epi32(
            _mm256_and_si256(_mm256_castps_si256(_mm256_add_ps(v, magic)), mant),
            bias,
        );
        _mm256_min_epi32(_mm256_max_epi32(i, zero_i), nmax_i)
    };
    let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let err = |d: __m256| {
        if s.use_mad {
            _mm256_and_ps(d, abs_mask)
        } else {
            _mm256_mul_ps(d, d)
        }
    };
    let zero = _mm256_setzero_ps();

    let (mut min, mut max) = (ld(&x[0]), ld(&x[0]));
    let mut sum_w = ld(&w[0]);
    let mut sum_x = _mm256_mul_ps(sum_w, ld(&x[0]));
    for i in 1..N {
        let (xi, wi) = (ld(&x[i]), ld(&w[i]));
        min = _mm256_blendv_ps(min, xi, _mm256_cmp_ps::<_CMP_LT_OQ>(xi, min));
        max = _mm256_blendv_ps(max, xi, _mm256_cmp_ps::<_CMP_GT_OQ>(xi, max));
        sum_w = _mm256_add_ps(sum_w, wi);
        sum_x = _mm256_add_ps(sum_x, _mm256_mul_ps(wi, xi));
    }
    min = _mm256_blendv_ps(min, zero, _mm256_cmp_ps::<_CMP_GT_OQ>(min, zero));
    let first_min = min;
    let flat = _mm256_cmp_ps::<_CMP_EQ_OQ>(max, min);
    let iscale = _mm256_div_ps(nmax_f, _mm256_sub_ps(max, min));
    let mut scale = _mm256_div_ps(_mm256_set1_ps(1.0), iscale);
    let mut best = zero;
    let mut lv = [_mm256_setzero_si256(); N];
    for i in 0..N {
        let xi = ld(&x[i]);
        let q = code(_mm256_mul_ps(iscale, _mm256_sub_ps(xi, min)));
        lv[i] = q;
        let diff = _mm256_sub_ps(
            _mm256_add_ps(_mm256_mul_ps(scale, _mm256_cvtepi32_ps(q)), min),
            xi,
        );
        best = _mm256_add_ps(best, _mm256_mul_ps(ld(&w[i]), err(diff)));
    }
    if s.nstep >= 1 {
        let mut laux = [_mm256_setzero_si256(); N];
        for is in 0..=s.nstep {
            let num = _mm256_set1_ps(s.rmin + s.rdelta * is as f32 + s.nmax as f32);
            let iscale = _mm256_div_ps(num, _mm256_sub_ps(max, min));
            let (mut sum_l, mut sum_l2, mut sum_xl) = (zero, zero, zero);
            for i in 0..N {
                let (xi, wi) = (ld(&x[i]), ld(&w[i]));
                let q = code(_mm256_mul_ps(iscale, _mm256_sub_ps(xi, min)));
                laux[i] = q;
                let qf = _mm256_cvtepi32_ps(q);
                let wq = _mm256_mul_ps(wi, qf);
                sum_l = _mm256_add_ps(sum_l, wq);
                sum_l2 = _mm256_add_ps(sum_l2, _mm256_mul_ps(wq, qf));
                sum_xl = _mm256_add_ps(sum_xl, _mm256_mul_ps(wq, xi));
            }
            let d = _mm256_sub_ps(_mm256_mul_ps(sum_w, sum_l2), _mm256_mul_ps(sum_l, sum_l));
            let ok = _mm256_cmp_ps::<_CMP_GT_OQ>(d, zero);
            let ts = _mm256_div_ps(
                _mm256_sub_ps(_mm256_mul_ps(sum_w, sum_xl), _mm256_mul_ps(sum_x, sum_l)),
                d,
            );
            let tm = _mm256_div_ps(
                _mm256_sub_ps(_mm256_mul_ps(sum_l2, sum_x), _mm256_mul_ps(sum_l, sum_xl)),
                d,
            );
            let clip = _mm256_cmp_ps::<_CMP_GT_OQ>(tm, zero);
            let this_min = _mm256_blendv_ps(tm, zero, clip);
            let this_scale = _mm256_blendv_ps(ts, _mm256_div_ps(sum_xl, sum_l2), clip);
            let mut cur = zero;
            for i in 0..N {
                let xi = ld(&x[i]);
                let qf = _mm256_cvtepi32_ps(laux[i]);
                let diff =
                    _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(this_scale, qf), this_min), xi);
                cur = _mm256_add_ps(cur, _mm256_mul_ps(ld(&w[i]), err(diff)));
            }
            let take = _mm256_and_ps(ok, _mm256_cmp_ps::<_CMP_LT_OQ>(cur, best));
            if _mm256_movemask_ps(take) != 0 {
                best = _mm256_blendv_ps(best, cur, take);
                scale = _mm256_blendv_ps(scale, this_scale, take);
                min = _mm256_blendv_ps(min, this_min, take);
                let t = _mm256_castps_si256(take);
                for i in 0..N {
                    lv[i] = _mm256_blendv_epi8(lv[i], laux[i], t);
                }
            }
        }
    }
    let neg = _mm256_set1_ps(-0.0);
    let neg_min = _mm256_xor_ps(_mm256_blendv_ps(min, first_min, flat), neg);
    let scale = _mm256_blendv_ps(scale, zero, flat);
    let flat_i = _mm256_castps_si256(flat);
    for i in 0..N {
        let q = _mm256_andnot_si256(flat_i, lv[i]);
        let mut tmp = [0i32; LANES];
        _mm256_storeu_si256(tmp.as_mut_ptr().cast(), q);
        l[i] = tmp.map(|v| v as u8);
    }
    let (mut sc, mut mn) = ([0f32; LANES], [0f32; LANES]);
    _mm256_storeu_ps(sc.as_mut_ptr(), scale);
    _mm256_storeu_ps(mn.as_mut_ptr(), neg_min);
    (sc, mn)
}

/// [`make_qx_lanes`] with AVX2 intrinsics (same operations, same order, same bits).
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub unsafe fn make_qx_avx2<const N: usize>(
    nmax: i32,
    x: &[Lanes; N],
    w: Option<&[Lanes; N]>,
    l: &mut [[i8; LANES]; N],
) -> Lanes {
    use std::arch::x86_64::*;
    let ld = |a: &Lanes| _mm256_loadu_ps(a.as_ptr());
    let magic = _mm256_set1_ps(12582912.0);
    let mant = _mm256_set1_epi32(0x007f_ffff);
    let bias = _mm256_set1_epi32(0x0040_0000);
    let (lo, hi) = (_mm256_set1_epi32(-nmax), _mm256_set1_epi32(nmax - 1));
    let code = |v: __m256| {
        let i = _mm256_sub_epi32(
            _mm256_and_si256(_mm256_castps_si256(_mm256_add_ps(v, magic)), mant),
            bias,
        );
        _mm256_min_epi32(_mm256_max_epi32(i, lo), hi)
    };
    let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let zero = _mm256_setzero_ps();
    let weight = |i: usize, xi: __m256| match w {
        Some(w) => ld(&w[i]),
        None => _mm256_mul_ps(xi, xi),
    };
    let (mut max, mut amax) = (zero, zero);
    for row in x {
        let xi = ld(row);
        let ax = _mm256_and_ps(xi, abs_mask);
        let bigger = _mm256_cmp_ps::<_CMP_GT_OQ>(ax, amax);
        amax = _mm256_blendv_ps(amax, ax, bigger);
        max = _mm256_blendv_ps(max, xi, bigger);
    }
    // Sums of one candidate scale `num / max`; codes into `codes`.
    let pass = |num: f32, codes: &mut [__m256i; N]| {
        let iscale = _mm256_div_ps(_mm256_set1_ps(num), max);
        let (mut sumlx, mut suml2) = (zero, zero);
        for i in 0..N {
            let xi = ld(&x[i]);
            let q = code(_mm256_mul_ps(iscale, xi));
            codes[i] = q;
            let (qf, wi) = (_mm256_cvtepi32_ps(q), weight(i, xi));
            sumlx = _mm256_add_ps(sumlx, _mm256_mul_ps(_mm256_mul_ps(wi, xi), qf));
            suml2 = _mm256_add_ps(suml2, _mm256_mul_ps(_mm256_mul_ps(wi, qf), qf));
        }
        (sumlx, suml2)
    };
    let mut lv = [_mm256_setzero_si256(); N];
    let (sumlx, suml2) = pass(-(nmax as f32), &mut lv);
    let nonzero = _mm256_cmp_ps::<_CMP_NEQ_UQ>(suml2, zero);
    let mut scale = _mm256_blendv_ps(zero, _mm256_div_ps(sumlx, suml2), nonzero);
    let mut best = _mm256_mul_ps(scale, sumlx);
    let mut laux = [_mm256_setzero_si256(); N];
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        let (sumlx, suml2) = pass(-(nmax as f32 + 0.1 * is as f32), &mut laux);
        let take = _mm256_and_ps(
            _mm256_cmp_ps::<_CMP_GT_OQ>(suml2, zero),
            _mm256_cmp_ps::<_CMP_GT_OQ>(_mm256_mul_ps(sumlx, sumlx), _mm256_mul_ps(best, suml2)),
        );
        if _mm256_movemask_ps(take) != 0 {
            let s = _mm256_div_ps(sumlx, suml2);
            scale = _mm256_blendv_ps(scale, s, take);
            best = _mm256_blendv_ps(best, _mm256_mul_ps(s, sumlx), take);
            let t = _mm256_castps_si256(take);
            for i in 0..N {
                lv[i] = _mm256_blendv_epi8(lv[i], laux[i], t);
            }
        }
    }
    let tiny = _mm256_cmp_ps::<_CMP_LT_OQ>(amax, _mm256_set1_ps(GROUP_MAX_EPS));
    let scale = _mm256_blendv_ps(scale, zero, tiny);
    let (tiny_i, off) = (_mm256_castps_si256(tiny), _mm256_set1_epi32(nmax));
    for i in 0..N {
        let q = _mm256_andnot_si256(tiny_i, _mm256_add_epi32(lv[i], off));
        let mut tmp = [0i32; LANES];
        _mm256_storeu_si256(tmp.as_mut_ptr().cast(), q);
        l[i] = tmp.map(|v| v as i8);
    }
    let mut out = [0f32; LANES];
    _mm256_storeu_ps(out.as_mut_ptr(), scale);
    out
}
