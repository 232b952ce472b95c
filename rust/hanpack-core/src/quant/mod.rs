//! Group-wise weight quantization (2, 3, 4 and 8 bits) along the input dimension.
//!
//! * [`formats`] — the packed layouts (the specification kernels read), their size checks
//!   and scalar reference `dequantize_row_<fmt>`;
//! * [`methods`] — how each group's scale and zero are chosen: `rtn`, `mse`, `hqq`;
//! * [`ggml`] — llama.cpp's block formats (Q4_0 … Q6_K, IQ4_NL), bit-exact with ggml's
//!   reference quantizers, for GGUF files;
//! * [`matmul`] — `x · Wᵀ` straight from the packed layout (QuantLinear's CPU kernel);
//! * [`matmul_bf16`] — the same for bf16 inputs (AVX512-BF16 dot products for int4);
//! * [`matmul_q8`] — the same with the inputs quantized to int8 on the fly (opt-in; VNNI);
//! * [`stats`] — error of a quantized tensor against its source (relative error, SNR);
//! * [`checkpoint`] — one safetensors shard in, one quantized shard out, tensor by tensor;
//! * this file — the driver: rows in parallel (rayon), each group converted to f32 in a
//!   per-thread buffer (f16/bf16 inputs are never copied whole), checked for NaN/Inf,
//!   parameterised, coded and packed.
//!
//! Errors name the tensor (`name` argument) and the position: a non-finite weight is
//! [`HanpackError::NonFiniteWeight`] with its row and column, and when several rows have
//! one the first in row-major order is reported, whatever the thread timing.

pub mod checkpoint;
pub mod cuda_sources;
pub mod formats;
pub mod ggml;
pub mod matmul;
pub mod matmul_bf16;
pub mod matmul_q8;
pub mod methods;
pub mod stats;

use half::{bf16, f16};
use rayon::prelude::*;

use crate::error::{HanpackError, Result};
pub use formats::{Bits, Layout};
pub use methods::Method;
use methods::{code, Grid, Params};

/// An input element type: f32, f16 or bf16, widened to f32 one group at a time.
pub trait Element: Copy + Send + Sync {
    fn to_f32(self) -> f32;
}
impl Element for f32 {
    fn to_f32(self) -> f32 {
        self
    }
}
impl Element for f16 {
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
}
impl Element for bf16 {
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
}

/// What to do with one tensor.
#[derive(Clone, Copy, Debug)]
pub struct QuantSpec {
    pub bits: Bits,
    /// `None`: per-channel (one group per row).
    pub group_size: Option<usize>,
    pub sym: bool,
    pub method: Method,
}

/// A quantized tensor: the three arrays of [`formats`] plus their layout.
#[derive(Clone, Debug)]
pub struct QuantizedTensor {
    pub layout: Layout,
    pub sym: bool,
    /// `[rows, row_bytes]`, row-major.
    pub packed: Vec<u8>,
    /// `[rows, n_groups]`, row-major.
    pub scales: Vec<f16>,
    /// `[rows, n_groups]`, row-major.
    pub zeros: Vec<f16>,
}

/// Quantizes `weight` (`[rows, cols]`, row-major). `importance` (length `cols`, finite,
/// non-negative) weights the squared error of the `mse` method per input channel.
pub fn quantize<T: Element>(
    name: &str,
    weight: &[T],
    rows: usize,
    cols: usize,
    spec: &QuantSpec,
    importance: Option<&[f32]>,
) -> Result<QuantizedTensor> {
    if spec.method == Method::Learned {
        return Err(HanpackError::InvalidArgument(format!(
            "tensor {name:?}: method \"learned\" fits its codes to the model's outputs (hanpack.learned); they are given, not computed here"
        )));
    }
    let layout = Layout::new(spec.bits, rows, cols, spec.group_size)?;
    if rows.checked_mul(cols) != Some(weight.len()) {
        return Err(HanpackError::InvalidArgument(format!(
            "tensor {name:?}: {} elements do not make a [{rows}, {cols}] weight",
            weight.len()
        )));
    }
    if let Some(imp) = importance {
        check_importance(name, imp, cols, "importance")?;
    }
    let (ng, rb) = (layout.n_groups(), layout.row_bytes());
    let mut packed = vec![0u8; layout.packed_len()];
    let mut scales = vec![f16::ZERO; layout.params_len()];
    let mut zeros = vec![f16::ZERO; layout.params_len()];
    let grid = Grid::new(spec.bits, spec.sym);
    let results: Vec<Result<()>> = packed
        .par_chunks_mut(rb)
        .zip(scales.par_chunks_mut(ng))
        .zip(zeros.par_chunks_mut(ng))
        .enumerate()
        .map_init(
            || {
                (
                    vec![0f32; layout.group_size],
                    vec![0u8; cols.div_ceil(formats::BLOCK) * formats::BLOCK],
                )
            },
            |(buf, codes), (r, ((out, s), z))| {
                let row = &weight[r * cols..(r + 1) * cols];
                let ctx = RowCtx {
                    name,
                    row: r,
                    grid: &grid,
                    spec,
                    layout: &layout,
                    importance,
                };
                ctx.quantize(row, buf, codes, s, z)?;
                formats::pack_row(spec.bits, codes, out);
                Ok(())
            },
        )
        .collect();
    results.into_iter().collect::<Result<Vec<()>>>()?;
    Ok(QuantizedTensor {
        layout,
        sym: spec.sym,
        packed,
        scales,
        zeros,
    })
}

/// Per-column importances (`what` names them in errors: "importance", "imatrix"): one
/// per column, finite, non-negative.
pub(crate) fn check_importance(name: &str, imp: &[f32], cols: usize, what: &str) -> Result<()> {
    if imp.len() != cols {
        return Err(HanpackError::InvalidArgument(format!(
            "tensor {name:?}: {what} has {} entries, the weight has {cols} input features",
            imp.len()
        )));
    }
    if let Some((i, v)) = imp
        .iter()
        .enumerate()
        .find(|(_, v)| !(v.is_finite() && **v >= 0.0))
    {
        return Err(HanpackError::Quantization {
            tensor: name.to_string(),
            reason: format!("{what}[{i}] is {v}; importances must be finite and non-negative"),
        });
    }
    Ok(())
}

/// Everything one row needs (borrowed; built per row, costs nothing).
struct RowCtx<'a> {
    name: &'a str,
    row: usize,
    grid: &'a Grid,
    spec: &'a QuantSpec,
    layout: &'a Layout,
    importance: Option<&'a [f32]>,
}

impl RowCtx<'_> {
    /// Quantizes one row, compiled for AVX2 when the CPU has it (a runtime check that std
    /// caches). The methods' inner loops are written in 8-lane form and marked
    /// `#[inline(always)]` so that they are compiled into `quantize_avx2`; AVX2 doubles
    /// their width over baseline x86-64's SSE2. Results are bit-identical: Rust never
    /// contracts `a * b + c` into an FMA on its own.
    fn quantize<T: Element>(
        &self,
        row: &[T],
        buf: &mut [f32],
        codes: &mut [u8],
        scales: &mut [f16],
        zeros: &mut [f16],
    ) -> Result<()> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            return unsafe { self.quantize_avx2(row, buf, codes, scales, zeros) };
        }
        self.quantize_generic(row, buf, codes, scales, zeros)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn quantize_avx2<T: Element>(
        &self,
        row: &[T],
        buf: &mut [f32],
        codes: &mut [u8],
        scales: &mut [f16],
        zeros: &mut [f16],
    ) -> Result<()> {
        self.quantize_generic(row, buf, codes, scales, zeros)
    }

    #[inline(always)]
    fn quantize_generic<T: Element>(
        &self,
        row: &[T],
        buf: &mut [f32],
        codes: &mut [u8],
        scales: &mut [f16],
        zeros: &mut [f16],
    ) -> Result<()> {
        let gs = self.layout.group_size;
        for (g, (src, (s_out, z_out))) in row
            .chunks(gs)
            .zip(scales.iter_mut().zip(zeros.iter_mut()))
            .enumerate()
        {
            let start = g * gs;
            let w = &mut buf[..src.len()];
            for (i, (d, &x)) in w.iter_mut().zip(src).enumerate() {
                *d = x.to_f32();
                if !d.is_finite() {
                    return Err(HanpackError::NonFiniteWeight {
                        tensor: self.name.to_string(),
                        row: self.row,
                        col: start + i,
                        value: *d,
                    });
                }
            }
            let imp = self.importance.map(|imp| &imp[start..start + w.len()]);
            let p = self.params(w, imp).map_err(|o| HanpackError::Quantization {
                tensor: self.name.to_string(),
                reason: format!(
                    "group at row {}, columns {}..{}: scale {:e} is beyond fp16's range (65504); scale the weight down first",
                    self.row,
                    start,
                    start + w.len(),
                    o.0
                ),
            })?;
            let (s, z) = (p.scale.to_f32(), p.zero.to_f32());
            for (c, &x) in codes[start..start + w.len()].iter_mut().zip(w.iter()) {
                *c = code(x, s, z, self.grid.qmax);
            }
            (*s_out, *z_out) = (p.scale, p.zero);
        }
        Ok(())
    }

    #[inline(always)]
    fn params(
        &self,
        w: &[f32],
        imp: Option<&[f32]>,
    ) -> std::result::Result<Params, methods::ScaleOverflow> {
        match self.spec.method {
            // `quantize` refuses `Learned` before any row is quantized.
            Method::Rtn | Method::Learned => methods::rtn::params(w, self.grid),
            Method::Mse => methods::mse::params(w, imp, self.grid),
            Method::Hqq => methods::hqq::params(w, self.grid),
        }
    }
}

/// Dequantizes into `out` (`rows * cols`, row-major) with the scalar reference, rows in
/// parallel. Checks the array sizes against the layout first.
pub fn dequantize<O: FromF32>(
    layout: &Layout,
    packed: &[u8],
    scales: &[f16],
    zeros: &[f16],
    out: &mut [O],
) -> Result<()> {
    layout.check(packed.len(), scales.len(), zeros.len())?;
    if out.len() != layout.rows * layout.cols {
        return Err(HanpackError::QuantLayout(format!(
            "output has {} elements, want {}",
            out.len(),
            layout.rows * layout.cols
        )));
    }
    let (ng, rb, cols) = (layout.n_groups(), layout.row_bytes(), layout.cols);
    out.par_chunks_mut(cols).enumerate().for_each_init(
        || vec![0f32; cols],
        |buf, (r, dst)| {
            let (sc, ze) = (&scales[r * ng..(r + 1) * ng], &zeros[r * ng..(r + 1) * ng]);
            formats::dequantize_row(
                layout.bits,
                &packed[r * rb..(r + 1) * rb],
                sc,
                ze,
                layout.group_size,
                buf,
            );
            for (d, &x) in dst.iter_mut().zip(buf.iter()) {
                *d = O::from_f32(x);
            }
        },
    );
    Ok(())
}

/// An output element type of [`dequantize`].
pub trait FromF32: Copy + Send + Sync {
    fn from_f32(x: f32) -> Self;
}
impl FromF32 for f32 {
    fn from_f32(x: f32) -> Self {
        x
    }
}
impl FromF32 for f16 {
    fn from_f32(x: f32) -> Self {
        f16::from_f32(x)
    }
}

#[cfg(test)]
mod tests;
