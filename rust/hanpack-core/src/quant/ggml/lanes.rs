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
