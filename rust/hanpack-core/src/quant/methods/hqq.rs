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

use super::{code, initial_range, Grid, Params, ScaleOverflow};

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

fn optimise_zero(w: &[f32], inv: f32, mut z: f32, grid: &Grid) -> f32 {
    let n = w.len() as f64;
    let (mut beta, mut best_err, mut best_z) = (BETA, f64::INFINITY, z);
    for _ in 0..ITERS {
        let (mut sum_z, mut sum_err) = (0f64, 0f64);
        for &x in w {
            let q = (x * inv + z).round_ties_even().clamp(0.0, grid.qmax);
            let r = (q - z) / inv;
            let e = shrink(x - r, beta);
            sum_z += f64::from(q - (x - e) * inv);
            sum_err += f64::from((x - r).abs());
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

fn optimise_scale(w: &[f32], mut s: f32, grid: &Grid) -> f32 {
    let (mut beta, mut best_err, mut best_s) = (BETA, f64::INFINITY, s);
    for _ in 0..ITERS {
        let (mut num, mut den, mut sum_err) = (0f64, 0f64, 0f64);
        for &x in w {
            let c = f32::from(code(x, s, grid.mid, grid.qmax)) - grid.mid;
            let r = c * s;
            let e = shrink(x - r, beta);
            num += f64::from((x - e) * c);
            den += f64::from(c * c);
            sum_err += f64::from((x - r).abs());
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
