//! Round-to-nearest with min–max parameters: the cheapest method and the baseline the
//! others are measured against. Exactly reproducible (the tests re-implement it in numpy
//! and compare bit for bit).

use super::{initial_range, Grid, Params, ScaleOverflow};

#[inline(always)]
pub fn params(w: &[f32], grid: &Grid) -> Result<Params, ScaleOverflow> {
    let (lo, hi) = initial_range(w, grid);
    Params::from_range(lo, hi, grid)
}
