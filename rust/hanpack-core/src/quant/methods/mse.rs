//! Clipping-range search: try the min–max range shrunk by `p = 1 - i/GRID` for
//! `i = 0 .. MAX_SHRINK * GRID` (both ends scaled towards 0, as GPTQ's `find_params` with
//! `mse=True` does), keep the candidate with the least squared error — weighted by a
//! per-input-channel importance (e.g. mean squared activations) when one is given. The
//! error is measured with the fp16-rounded parameters; ties keep the wider range.

use super::{initial_range, sq_error, Grid, Params, ScaleOverflow};

/// Number of grid steps between the full range and an empty one.
pub const GRID: u32 = 100;
/// Candidates shrink the range to at most `1 - 0.8` of itself (80 candidates).
pub const MAX_SHRINK_STEPS: u32 = 80;

pub fn params(w: &[f32], imp: Option<&[f32]>, grid: &Grid) -> Result<Params, ScaleOverflow> {
    let (lo, hi) = initial_range(w, grid);
    // The full range is the widest candidate: if its scale fits fp16, all do.
    let mut best = Params::from_range(lo, hi, grid)?;
    if lo == 0.0 && hi == 0.0 {
        return Ok(best);
    }
    let mut best_err = sq_error(w, imp, best, grid);
    for i in 1..MAX_SHRINK_STEPS {
        let p = 1.0 - i as f32 / GRID as f32;
        let cand = Params::from_range(p * lo, p * hi, grid)?;
        let err = sq_error(w, imp, cand, grid);
        if err < best_err {
            best = cand;
            best_err = err;
        }
    }
    Ok(best)
}
