//! Half-Quadratic Quantization (Badri & Shaji 2023, the `hqq` package's
//! `optimize_weights_proximal_legacy`): with the scale fixed at its min–max value, the
//! zero is refined by alternating
//!
//! ```text
//! Wq = clamp(round(W * inv + z), 0, qmax)          inv = 1 / scale
//! Wr = (Wq - z) / inv                              (the dequantized weight)
//! We = shrink_p(W - Wr, beta)                      (prox of the l_p norm, p = 0.7)
//! z  = mean(Wq - (W - We) * inv)                   (closed-form zero given We)
//! beta *= kappa
//! ```
//!
//! for at most `ITERS` rounds, stopping as soon as `mean|W - Wr|` stops decreasing.
//! Differences from the package, all deliberate:
//!
//! * early stopping is per group (the package uses the whole tensor's error), so groups
//!   are independent and run in parallel, and the result does not depend on the batch;
//! * the zero returned is the one that gave the best error (the package returns the zero
//!   updated once more after the error stopped falling);
//! * the starting range includes 0 (see `methods`) and the inverse scale is not clamped to
//!   2e4: the stored fp16 scale has its own limits, and clamping adds error to groups of
//!   small range;
//! * symmetric grids fix the zero at `2^(bits-1)`, so the same loop refines the *scale*
//!   instead, with its closed form `s = Σ(W - We)(Wq - z) / Σ(Wq - z)²` (an extension of
//!   the paper's scheme, which optimises the zero only).
//!
//! Sums are accumulated in f64; element arithmetic is f32 like the package on CPU.

use half::f16;

use super::{clamp_code, initial_range, lane_sums, round_even, Grid, Params, ScaleOverflow};

pub const LP_NORM: f32 = 0.7;
pub const BETA: f32 = 10.0;
pub const KAPPA: f32 = 1.01;
pub const ITERS: usize = 20;

/// Proximal operator of `|x|^p` with step `1/beta`: `sign(x) * max(|x| - |x|^(p-1) / beta, 0)`.
#[inline]
fn shrink(x: f32, beta: f32) -> f32 {
    let a = x.abs();
    let t = a - a.powf(LP_NORM - 1.0) / beta;
    if t > 0.0 {
        t.copysign(x)
    } else {
        0.0
    }
}

#[inline(always)]
pub fn params(w: &[f32], grid: &Grid) -> Result<Params, ScaleOverflow> {
    let (lo, hi) = initial_range(w, grid);
    let start = Params::from_range(lo, hi, grid)?;
    if start.scale.to_f32() == 0.0 || w.is_empty() {
        return Ok(start);
    }
    if grid.sym {
        let s = optimise_scale(w, lo / -grid.mid, grid);
        return Ok(Params {
            scale: super::fp16(s)?,
            zero: start.zero,
        });
    }
    let inv = grid.qmax / (hi - lo);
    if !inv.is_finite() {
        return Ok(start);
    }
    let zero = f16::from_f32(optimise_zero(w, inv, -lo * inv, grid));
    // The zero is a mean of values within a few codes of 0..=qmax; should it ever not
    // fit fp16, the min–max start is the safe answer.
    if !zero.is_finite() {
        return Ok(start);
    }
    Ok(Params {
        scale: super::fp16(1.0 / inv)?,
        zero,
    })
}

/// `beta^(-1/(2-p))`: [`shrink`] is 0 exactly when `|x|` is at most this (from
/// `|x| - |x|^(p-1)/beta > 0  ⟺  |x|^(2-p) > 1/beta`). Real weights' residuals are far
/// below it (≈0.17 at beta = 10 against residuals of a fraction of a quantization step),
/// so the `powf` in `shrink` — 2/3 of this method's time when always evaluated — almost
/// never runs: each round first sums as if every shrink were 0 (a loop that vectorises)
/// and redoes the round exactly only if some residual passed the threshold.
fn shrink_threshold(beta: f32) -> f32 {
    beta.powf(-1.0 / (2.0 - LP_NORM))
}

#[inline(always)]
fn optimise_zero(w: &[f32], inv: f32, mut z: f32, grid: &Grid) -> f32 {
    let n = w.len() as f64;
    let qmax = grid.qmax;
    let (mut beta, mut best_err, mut best_z) = (BETA, f64::INFINITY, z);
    for _ in 0..ITERS {
        let thr = shrink_threshold(beta);
        // Σ(q - (x - e)·inv) and Σ|x - r|, first with every e = 0.
        let [mut sum_z, mut sum_err, big] = lane_sums(w, None, |x, _| {
            let q = clamp_code(round_even(x * inv + z), qmax);
            let d = x - (q - z) / inv;
            [q - x * inv, d.abs(), f32::from(u8::from(d.abs() > thr))]
        });
        if big > 0.0 {
            (sum_z, sum_err) = (0.0, 0.0);
            for &x in w {
                let q = clamp_code(round_even(x * inv + z), qmax);
                let r = (q - z) / inv;
                let e = shrink(x - r, beta);
                sum_z += f64::from(q - (x - e) * inv);
                sum_err += f64::from((x - r).abs());
            }
        }
        let err = sum_err / n;
        if err >= best_err {
            break;
        }
        (best_err, best_z) = (err, z);
        z = (sum_z / n) as f32;
        beta *= KAPPA;
    }
    best_z
}

#[inline(always)]
fn optimise_scale(w: &[f32], mut s: f32, grid: &Grid) -> f32 {
    let (mut beta, mut best_err, mut best_s) = (BETA, f64::INFINITY, s);
    let (mid, qmax) = (grid.mid, grid.qmax);
    for _ in 0..ITERS {
        let thr = shrink_threshold(beta);
        let c_of =
            |x: f32| clamp_code(round_even(if s == 0.0 { mid } else { x / s + mid }), qmax) - mid;
        // Σ(x - e)·c and Σc² first with every e = 0; Σ|x - r| alongside.
        let [mut num, mut den, mut sum_err, big] = lane_sums(w, None, |x, _| {
            let c = c_of(x);
            let d = (x - c * s).abs();
            [x * c, c * c, d, f32::from(u8::from(d > thr))]
        });
        if big > 0.0 {
            (num, den, sum_err) = (0.0, 0.0, 0.0);
            for &x in w {
                let c = c_of(x);
                let r = c * s;
                let e = shrink(x - r, beta);
                num += f64::from((x - e) * c);
                den += f64::from(c * c);
                sum_err += f64::from((x - r).abs());
            }
        }
        let err = sum_err / w.len() as f64;
        if err >= best_err {
            break;
        }
        (best_err, best_s) = (err, s);
        if den > 0.0 {
            s = (num / den) as f32;
        }
        beta *= KAPPA;
    }
    best_s
}
