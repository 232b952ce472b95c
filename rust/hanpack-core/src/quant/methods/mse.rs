//! Least squared error, in two stages:
//!
//! 1. **Clipping search**: the min–max range shrunk by `p = 1 - i/GRID` for
//!    `i = 0 .. MAX_SHRINK_STEPS` (both ends scaled towards 0, as GPTQ's `find_params`
//!    with `mse=True` does, but never below 0.89 of the range: see `MAX_SHRINK_STEPS`),
//!    coarse to fine: every `COARSE`-th candidate first, then the candidates around the
//!    best of those. The error curve over `p` is nearly unimodal, and stage 2 recovers
//!    what the coarse pass misses.
//! 2. **Least-squares refit**: with the codes `q` fixed, the best `(s, z)` for
//!    `w ≈ s (q - z)` has a closed form (a weighted linear regression of `w` on `q`;
//!    symmetric grids fit `s` alone with `z = 2^(bits-1)`). New parameters make new
//!    codes, so this alternates for at most `REFIT_ITERS` rounds while the error falls
//!    (Lloyd's algorithm on a uniform grid). The zero becomes fractional, stored in fp16
//!    like HQQ's.
//!
//! Every error is measured with the fp16-rounded parameters (what is stored), weighted
//! by a per-input-channel importance (e.g. mean squared activations) when one is given;
//! ties keep the earlier (wider) candidate.

use half::f16;

use super::{
    clamp_code, fp16, initial_range, lane_sums, round_even, sq_error, Grid, Params, ScaleOverflow,
};

/// Number of grid steps between the full range and an empty one.
pub const GRID: u32 = 100;
/// Candidates shrink the range to at most `1 - 0.11` of itself. Deeper clipping (GPTQ
/// allows down to 0.2) lowers the weight error further but clips the few large weights
/// that LLMs depend on: SmolLM2-135M at int3-g128 has perplexity 110 with clipping to
/// 0.2, 64 with clipping to 0.89, 99 with RTN (English wiki text, fp32 20.7), while
/// stories260k loses little (5.60 -> 5.71, RTN 8.04).
pub const MAX_SHRINK_STEPS: u32 = 12;
/// Stride of the coarse pass.
pub const COARSE: u32 = 4;
/// Rounds of least-squares refitting.
pub const REFIT_ITERS: usize = 4;

#[inline(always)]
pub fn params(w: &[f32], imp: Option<&[f32]>, grid: &Grid) -> Result<Params, ScaleOverflow> {
    let (lo, hi) = initial_range(w, grid);
    // The full range is the widest candidate: if its scale fits fp16, all do.
    let full = Params::from_range(lo, hi, grid)?;
    if lo == 0.0 && hi == 0.0 {
        return Ok(full);
    }
    let mut best = Best {
        p: full,
        err: sq_error(w, imp, full, grid),
        i: 0,
    };
    for i in (COARSE..MAX_SHRINK_STEPS).step_by(COARSE as usize) {
        best.consider(i, w, imp, lo, hi, grid)?;
    }
    let centre = best.i;
    for i in centre.saturating_sub(COARSE - 1)..(centre + COARSE).min(MAX_SHRINK_STEPS) {
        if i % COARSE != 0 {
            best.consider(i, w, imp, lo, hi, grid)?;
        }
    }
    Ok(refit(w, imp, best.p, best.err, grid))
}

/// The best clipping candidate so far.
struct Best {
    p: Params,
    err: f64,
    i: u32,
}

impl Best {
    /// Candidate `i`: the range shrunk by `1 - i/GRID`; kept if strictly better.
    #[inline(always)]
    fn consider(
        &mut self,
        i: u32,
        w: &[f32],
        imp: Option<&[f32]>,
        lo: f32,
        hi: f32,
        grid: &Grid,
    ) -> Result<(), ScaleOverflow> {
        let p = 1.0 - i as f32 / GRID as f32;
        let c = Params::from_range(p * lo, p * hi, grid)?;
        let e = sq_error(w, imp, c, grid);
        if e < self.err {
            (self.p, self.err, self.i) = (c, e, i);
        }
        Ok(())
    }
}

/// Stage 2: alternate codes and their least-squares parameters while the error falls.
#[inline(always)]
fn refit(w: &[f32], imp: Option<&[f32]>, mut p: Params, mut err: f64, grid: &Grid) -> Params {
    for _ in 0..REFIT_ITERS {
        let Some(cand) = least_squares(w, imp, p, grid) else {
            break;
        };
        let e = sq_error(w, imp, cand, grid);
        if !(e < err) {
            break;
        }
        (p, err) = (cand, e);
    }
    p
}

/// The `(s, z)` minimising `Σ v (w - s (q - z))²` for the codes `q` that `p` gives
/// (`v` the importance, 1 without one); `None` when the fit is degenerate (one code
/// used, a non-positive slope) or does not fit fp16.
#[inline(always)]
fn least_squares(w: &[f32], imp: Option<&[f32]>, p: Params, grid: &Grid) -> Option<Params> {
    let [sv, sq, sqq, sw, sqw] = moments(w, imp, p, grid);
    let (scale, zero) = if grid.sym {
        // w ≈ s c with c = q - mid: s = Σ v w c / Σ v c².
        if sqq <= 0.0 {
            return None;
        }
        (sqw / sqq, f64::from(grid.mid))
    } else {
        let det = sv * sqq - sq * sq;
        if !(det > 1e-12 * sv * sqq) {
            return None;
        }
        let a = (sv * sqw - sq * sw) / det;
        let b = (sw - a * sq) / sv;
        if !(a > 0.0) {
            return None;
        }
        (a, -b / a)
    };
    let scale = fp16(scale as f32).ok()?;
    let zero = f16::from_f32(zero as f32);
    (scale.to_f32() != 0.0 && zero.is_finite()).then_some(Params { scale, zero })
}

/// `(Σv, Σvq, Σvq², Σvw, Σvqw)` over the group, with `q` the codes `p` gives (minus
/// `2^(bits-1)` on symmetric grids). Summed in f32 lanes; a fit spoilt by rounding is
/// caught by the caller, which keeps it only if the error falls.
#[inline(always)]
fn moments(w: &[f32], imp: Option<&[f32]>, p: Params, grid: &Grid) -> [f64; 5] {
    let (s, z, qmax) = (p.scale.to_f32(), p.zero.to_f32(), grid.qmax);
    let shift = if grid.sym { grid.mid } else { 0.0 };
    lane_sums(w, imp, |x, v| {
        let q = clamp_code(round_even(x / s + z), qmax) - shift;
        [v, v * q, v * q * q, v * x, v * q * x]
    })
}
