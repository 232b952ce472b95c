//! How each group's scale and zero are chosen. One file per method; all share the code
//! rule of [`crate::quant::formats`] (`q = clamp(round_half_even(w / s + z), 0, qmax)`)
//! and return parameters already rounded to fp16, so that the codes and any error a
//! method measures are those of what is stored.
//!
//! * [`rtn`] — min–max: the range `[min(w, 0), max(w, 0)]` (symmetric: the signed
//!   extremum) mapped onto the codes, integer zero.
//! * [`mse`] — search over shrunken ranges, then least-squares refits of scale and zero,
//!   minimising the (importance-weighted) squared error of the group.
//! * [`hqq`] — half-quadratic optimisation of the zero (symmetric: of the scale), no
//!   calibration data.
//!
//! Including 0 in the asymmetric range keeps the zero point inside `0..=qmax`, which
//! fp16 stores to within 1/128 of a code; a range far from 0 would need a huge zero.

pub mod hqq;
pub mod mse;
pub mod rtn;

use half::f16;

use crate::quant::formats::Bits;

/// Quantization method, chosen per tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Rtn,
    Mse,
    Hqq,
    /// Codes, scales and zeros fitted to the model's own outputs by `hanpack.learned`
    /// (torch, in Python). They are given to [`crate::quant::checkpoint::ShardQuantizer`];
    /// [`crate::quant::quantize`] cannot compute them and refuses this method.
    Learned,
}

impl Method {
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "rtn" => Some(Method::Rtn),
            "mse" => Some(Method::Mse),
            "hqq" => Some(Method::Hqq),
            "learned" => Some(Method::Learned),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Method::Rtn => "rtn",
            Method::Mse => "mse",
            Method::Hqq => "hqq",
            Method::Learned => "learned",
        }
    }
}

/// The code grid of one format and mode.
#[derive(Clone, Copy, Debug)]
pub struct Grid {
    pub qmax: f32,
    pub sym: bool,
    /// `2^(bits-1)`: the symmetric zero, and the code the negated extremum maps away from.
    pub mid: f32,
}

impl Grid {
    pub fn new(bits: Bits, sym: bool) -> Self {
        Self {
            qmax: f32::from(bits.qmax()),
            sym,
            mid: (1u32 << (bits.get() - 1)) as f32,
        }
    }
}

/// One group's stored parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Params {
    pub scale: f16,
    pub zero: f16,
}

/// The scale did not fit in fp16 (the group's range is beyond ~65504 * qmax).
#[derive(Debug)]
pub struct ScaleOverflow(pub f32);

impl Params {
    /// Rounds `scale` to fp16 and makes the integer zero for range start `lo` (asymmetric).
    pub fn asym(lo: f32, hi: f32, grid: &Grid) -> Result<Self, ScaleOverflow> {
        let scale = fp16(((hi - lo) / grid.qmax).abs())?;
        let s = scale.to_f32();
        let zero = if s == 0.0 {
            0.0
        } else {
            (-lo / s).round_ties_even().clamp(0.0, grid.qmax)
        };
        Ok(Self {
            scale,
            zero: f16::from_f32(zero),
        })
    }

    /// Symmetric: the signed extremum `m` maps to code 0, the zero is `2^(bits-1)`.
    pub fn sym(m: f32, grid: &Grid) -> Result<Self, ScaleOverflow> {
        Ok(Self {
            scale: fp16(m / -grid.mid)?,
            zero: f16::from_f32(grid.mid),
        })
    }

    /// `lo, hi` for asymmetric grids; for symmetric ones `lo` is the signed extremum.
    pub fn from_range(lo: f32, hi: f32, grid: &Grid) -> Result<Self, ScaleOverflow> {
        if grid.sym {
            Self::sym(lo, grid)
        } else {
            Self::asym(lo, hi, grid)
        }
    }
}

fn fp16(x: f32) -> Result<f16, ScaleOverflow> {
    let h = f16::from_f32(x);
    if h.is_finite() {
        Ok(h)
    } else {
        Err(ScaleOverflow(x))
    }
}

/// The code of `w` (see the module doc of `formats`).
#[inline]
pub fn code(w: f32, s: f32, z: f32, qmax: f32) -> u8 {
    let x = if s == 0.0 { z } else { w / s + z };
    round_even(x).clamp(0.0, qmax) as u8
}

/// `x.round_ties_even()` wherever the result is then clamped to `0..=255`.
/// `f32::round_ties_even` is a call to `rintf` on baseline x86-64 (no SSE4.1 `roundps`),
/// measured at 16% of the whole `mse` method, and it blocks vectorisation. Adding and
/// subtracting 1.5·2^23 rounds to nearest-even in the FPU for `|x| < 2^22`; any larger
/// `|x|` is returned as it is, and clamps to the same code (0 or qmax) either way.
#[inline(always)]
pub fn round_even(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    let r = (x + MAGIC) - MAGIC;
    if x.abs() < 4_194_304.0 {
        r
    } else {
        x
    }
}

/// `x` clamped to `0..=qmax` for finite or infinite `x`. Written as two selects, which
/// compile to one `maxps`/`minps` each; `f32::max/min` add NaN handling that costs two
/// more instructions per element, and codes are never NaN.
#[inline(always)]
pub fn clamp_code(x: f32, qmax: f32) -> f32 {
    let x = if x > 0.0 { x } else { 0.0 };
    if x < qmax {
        x
    } else {
        qmax
    }
}

/// The range a group starts from: `(min(w, 0), max(w, 0))`, or for symmetric grids
/// `(m, m)` with `m` the first element of largest magnitude.
#[inline(always)]
pub fn initial_range(w: &[f32], grid: &Grid) -> (f32, f32) {
    if grid.sym {
        let m = w
            .iter()
            .fold(0f32, |m, &x| if x.abs() > m.abs() { x } else { m });
        (m, m)
    } else {
        w.iter()
            .fold((0f32, 0f32), |(lo, hi), &x| (lo.min(x), hi.max(x)))
    }
}

/// Accumulator lanes of the methods' group sums (8 f32: one AVX2 register).
pub const LANES: usize = 8;

/// `Σ f(x, v)` over a group, component by component, with `v` the element's importance
/// (1 without one). Each of the `K` sums runs in `LANES` independent f32 accumulators so
/// that the loop vectorises (an f64 chain was 3/4 of the `mse` method's time) and the
/// lanes are added in f64 at the end: for the group sizes used (≤ a few thousand) the
/// sums stay within 1e-6 relative.
#[inline(always)]
pub fn lane_sums<const K: usize>(
    w: &[f32],
    imp: Option<&[f32]>,
    f: impl Fn(f32, f32) -> [f32; K],
) -> [f64; K] {
    let mut acc = [[0f32; LANES]; K];
    let mut add = |k: usize, x: f32, v: f32| {
        let r = f(x, v);
        for j in 0..K {
            acc[j][k] += r[j];
        }
    };
    let split = w.len() / LANES * LANES;
    match imp {
        Some(imp) => {
            for (c, v) in w[..split]
                .chunks_exact(LANES)
                .zip(imp[..split].chunks_exact(LANES))
            {
                for k in 0..LANES {
                    add(k, c[k], v[k]);
                }
            }
            for (k, (&x, &v)) in w[split..].iter().zip(&imp[split..]).enumerate() {
                add(k, x, v);
            }
        }
        None => {
            for c in w[..split].chunks_exact(LANES) {
                for k in 0..LANES {
                    add(k, c[k], 1.0);
                }
            }
            for (k, &x) in w[split..].iter().enumerate() {
                add(k, x, 1.0);
            }
        }
    }
    std::array::from_fn(|j| acc[j].iter().map(|&a| f64::from(a)).sum())
}

/// Squared error of a group under `p`, weighted per element by `imp` when given.
#[inline(always)]
pub fn sq_error(w: &[f32], imp: Option<&[f32]>, p: Params, grid: &Grid) -> f64 {
    let (s, z, qmax) = (p.scale.to_f32(), p.zero.to_f32(), grid.qmax);
    if s == 0.0 {
        // Every code dequantizes to 0.
        return lane_sums(w, imp, |x, v| [v * x * x])[0];
    }
    lane_sums(w, imp, |x, v| {
        let q = clamp_code(round_even(x / s + z), qmax);
        let d = (q - z) * s - x;
        [v * (d * d)]
    })[0]
}
