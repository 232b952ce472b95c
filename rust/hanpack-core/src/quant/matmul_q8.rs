//! `y = x · Wᵀ` with the activations quantized to int8 on the fly (W4A8, as llama.cpp
//! multiplies its 4-bit formats by Q8 activations on CPUs): `QuantLinear(act_bits=8)`,
//! opt-in, since it changes the numbers.
//!
//! Each block of [`ACT_BLOCK`] inputs of a batch row gets a symmetric scale
//! `s = max|x| / 127` and codes `round(x / s)` in -127..=127 ([`quantize_activations`]).
//! The product is then exactly `W_deq · x̂` with `x̂ = s · code`
//! ([`dequantized_activations`]), which is what the reference computes:
//! [`super::matmul::matmul_ref`] on `x̂`.
//!
//! For int4 and int3 at batch 1 on a CPU with AVX512-VNNI (and VBMI), `vpdpbusd`
//! multiplies 64 code bytes by 64 activation codes and adds them in fours into 16 int32
//! lanes. An int4 unit of 128 codes takes two: the low nibbles of 64 packed bytes, then
//! the high ones. An int3 unit takes two as well: one `vpermb` puts triples `t` and
//! `t + 8` of its 48 bytes in 64-bit lane `t`, and `vpmultishiftqb` cuts the eight codes
//! of either triple into the lane's bytes (masked to 3 bits), in input order. The integer
//! dot product is exact (|sum| ≤ 128 · 15 · 127 < 2^24, so
//! also exact in f32).
//! Only the per-unit scaling `s_w · s_x` and the final sums round. Every other case
//! runs [`super::matmul::matmul`] on `x̂`.

use super::formats::{Bits, BLOCK};
use super::matmul::{matmul_on, split_rows, PackedWeight, Rayon, RowTasks};
use crate::error::Result;

/// Inputs per activation scale.
pub const ACT_BLOCK: usize = 128;

/// Int8 codes and per-block scales of `x` (`rows` of `cols`): block `b` of a row covers
/// columns `b·ACT_BLOCK ..` (the last one short), `scales[row · n_blocks + b]`.
pub fn quantize_activations(x: &[f32], cols: usize) -> (Vec<i8>, Vec<f32>) {
    let n_blocks = cols.div_ceil(ACT_BLOCK);
    let mut codes = vec![0i8; x.len()];
    let mut scales = Vec::with_capacity(x.len() / cols.max(1) * n_blocks);
    for (row, out) in x.chunks(cols).zip(codes.chunks_mut(cols)) {
        for (block, q) in row.chunks(ACT_BLOCK).zip(out.chunks_mut(ACT_BLOCK)) {
            let max = block.iter().fold(0f32, |m, v| m.max(v.abs()));
            let s = max / 127.0;
            let inv = if s > 0.0 { 1.0 / s } else { 0.0 };
            for (c, v) in q.iter_mut().zip(block) {
                // `as` saturates (NaN becomes 0): no input can make this misbehave.
                *c = (v * inv).round() as i8;
            }
            scales.push(s);
        }
    }
    (codes, scales)
}

/// `x̂`: what the int8 codes of `x` stand for (`s · code`, per block).
pub fn dequantized_activations(x: &[f32], cols: usize) -> Vec<f32> {
    let (codes, scales) = quantize_activations(x, cols);
    let n_blocks = cols.div_ceil(ACT_BLOCK);
    let mut out = Vec::with_capacity(x.len());
    for (r, row) in codes.chunks(cols).enumerate() {
        for (b, block) in row.chunks(ACT_BLOCK).enumerate() {
            let s = scales[r * n_blocks + b];
            out.extend(block.iter().map(|&c| s * f32::from(c)));
        }
    }
    out
}

/// [`super::matmul::matmul`]'s contract on `x̂` (see the module's doc).
pub fn matmul_q8(w: &PackedWeight<'_>, x: &[f32], batch: usize, out: &mut [f32]) -> Result<()> {
    matmul_q8_on(&Rayon, w, x, batch, out)
}

/// [`matmul_q8`] with its row tasks run by `tasks`.
pub fn matmul_q8_on(
    tasks: &dyn RowTasks,
    w: &PackedWeight<'_>,
    x: &[f32],
    batch: usize,
    out: &mut [f32],
) -> Result<()> {
    w.check_sizes(x.len(), batch, out.len())?;
    #[cfg(target_arch = "x86_64")]
    if let (1, Some(unit)) = (batch, unit_codes(w)) {
        if has_vnni() {
            let l = w.layout;
            let (codes, scales) = quantize_activations(x, l.cols);
            let arranged = arranged_codes(l.bits, &codes, unit);
            let xhat_sums = group_sums(w, &codes, &scales);
            let padded = l.cols.div_ceil(BLOCK) * BLOCK;
            let units = Units {
                size: unit,
                codes: &arranged,
                scales: &scales,
                xhat_sums: &xhat_sums,
            };
            split_rows(tasks, &l, padded, 1, out, |first, dst| {
                // SAFETY: the CPU has AVX-512 F/BW/VBMI/VNNI and F16C (`has_vnni`), and the
                // weight's sizes were checked against its layout.
                unsafe {
                    if l.bits == Bits::B4 {
                        avx512vnni::rows::<4>(w, &units, first, dst)
                    } else {
                        avx512vnni::rows::<3>(w, &units, first, dst)
                    }
                }
            });
            return Ok(());
        }
    }
    matmul_on(
        tasks,
        w,
        &dequantized_activations(x, w.layout.cols),
        batch,
        out,
    )
}

/// Codes per step of the VNNI kernel for `w`: each step must lie in one weight group and
/// one activation block. `None` when the kernel does not apply (not int4 or int3, or
/// groups that do not line up with activation blocks).
fn unit_codes(w: &PackedWeight<'_>) -> Option<usize> {
    let l = w.layout;
    if l.bits != Bits::B4 && l.bits != Bits::B3 {
        return None;
    }
    match l.group_size {
        32 | 64 => Some(l.group_size),
        g if g.is_multiple_of(ACT_BLOCK) || l.n_groups() == 1 => Some(ACT_BLOCK),
        _ => None,
    }
}

#[cfg(target_arch = "x86_64")]
fn has_vnni() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vnni")
        && std::arch::is_x86_feature_detected!("avx512vbmi")
        && std::arch::is_x86_feature_detected!("f16c")
}

/// Bytes of arranged activation codes per unit (see [`arranged_codes`]).
const ARRANGED_BYTES: usize = 128;

/// The activation codes of one row in the order the kernel reads them, per unit of
/// `unit` codes (zeros fill short units and the padding): for int4, 64 bytes of the
/// unit's even inputs (the packed bytes' low nibbles), then 64 of its odd ones (high
/// nibbles); for int3, the inputs in order.
fn arranged_codes(bits: Bits, codes: &[i8], unit: usize) -> Vec<i8> {
    let n_units = codes.len().div_ceil(unit);
    let per = ARRANGED_BYTES;
    let mut out = vec![0i8; n_units * per];
    let at = |i: usize| codes.get(i).copied().unwrap_or(0);
    for (u, dst) in out.chunks_exact_mut(per).enumerate() {
        let base = u * unit;
        if bits == Bits::B3 {
            for (i, d) in dst[..unit].iter_mut().enumerate() {
                *d = at(base + i);
            }
        } else {
            for j in 0..unit / 2 {
                dst[j] = at(base + 2 * j);
                dst[64 + j] = at(base + 2 * j + 1);
            }
        }
    }
    out
}

/// `Σ x̂` over each weight group (for the zero points' term).
fn group_sums(w: &PackedWeight<'_>, codes: &[i8], scales: &[f32]) -> Vec<f32> {
    let g = w.layout.group_size;
    let mut sums = vec![0f32; w.layout.n_groups()];
    for (i, &c) in codes.iter().enumerate() {
        sums[i / g] += scales[i / ACT_BLOCK] * f32::from(c);
    }
    sums
}

/// One batch row's activations, ready for the kernel.
struct Units<'a> {
    /// Codes per step (see [`unit_codes`]).
    size: usize,
    /// [`arranged_codes`].
    codes: &'a [i8],
    /// Per activation block.
    scales: &'a [f32],
    /// Per weight group.
    xhat_sums: &'a [f32],
}

#[cfg(target_arch = "x86_64")]
mod avx512vnni {
    use std::arch::x86_64::*;

    use super::super::matmul::{widen_f16, zero_terms_avx512, PackedWeight};
    use super::{Units, ACT_BLOCK, ARRANGED_BYTES};

    /// One int4 unit's integer dot product: the packed bytes at `w` (`mask` selects
    /// them), low nibbles against the even activation codes at `x`, high nibbles against
    /// the odd.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn unit_dot4(w: *const u8, bytes: usize, x: *const i8) -> __m512 {
        let nibble = _mm512_set1_epi8(0x0F);
        // A plain load for a whole unit (masked loads are slower on Zen 4; see
        // `super::super::matmul::int3_chunk_bytes`).
        let v = if bytes == 64 {
            _mm512_loadu_si512(w as *const _)
        } else {
            _mm512_maskz_loadu_epi8((1u64 << bytes) - 1, w as *const i8)
        };
        let low = _mm512_and_si512(v, nibble);
        let high = _mm512_and_si512(_mm512_srli_epi16::<4>(v), nibble);
        let xe = _mm512_loadu_si512(x as *const _);
        let xo = _mm512_loadu_si512(x.add(64) as *const _);
        let dot = _mm512_dpbusd_epi32(
            _mm512_dpbusd_epi32(_mm512_setzero_si512(), low, xe),
            high,
            xo,
        );
        _mm512_cvtepi32_ps(dot)
    }

    /// Constants of the int3 unit.
    pub(super) struct Int3Consts {
        /// Bytes `0..3` of 64-bit lane `t` from triple `t` (bytes `3t..`), bytes `3..6`
        /// from triple `t + 8` (bytes `24 + 3t..`).
        gather: __m512i,
        /// Byte `j` of every lane: bit offset `3j` (triple `t`) and `24 + 3j` (`t + 8`).
        first: __m512i,
        second: __m512i,
    }

    impl Int3Consts {
        #[target_feature(enable = "avx512f,avx512bw")]
        pub(super) unsafe fn new() -> Self {
            let mut gather = [0u8; 64];
            let mut first = [0u8; 64];
            let mut second = [0u8; 64];
            for i in 0..64 {
                let (t, j) = (i / 8, i % 8);
                gather[i] = match j {
                    0..3 => 3 * t + j,
                    3..6 => 24 + 3 * t + j - 3,
                    _ => 0,
                } as u8;
                first[i] = (3 * j) as u8;
                second[i] = (24 + 3 * j) as u8;
            }
            let load = |b: &[u8; 64]| _mm512_loadu_si512(b.as_ptr() as *const _);
            Self {
                gather: load(&gather),
                first: load(&first),
                second: load(&second),
            }
        }
    }

    /// One int3 unit's integer dot product: `bytes` packed bytes at `w` (whole 12-byte
    /// blocks, at most four) against the activations at `x`, in order: codes `0..64`
    /// from the first triple of each 64-bit lane, `64..128` from the second. `full`: 64
    /// bytes at `w` may be read.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi,avx512vnni")]
    unsafe fn unit_dot3(
        w: *const u8,
        bytes: usize,
        full: bool,
        x: *const i8,
        c: &Int3Consts,
    ) -> __m512 {
        let v = if bytes == 48 {
            super::super::matmul::int3_chunk_bytes(w, full)
        } else {
            _mm512_maskz_loadu_epi8((1u64 << bytes) - 1, w as *const i8)
        };
        let v = _mm512_permutexvar_epi8(c.gather, v);
        let seven = _mm512_set1_epi8(7);
        let q0 = _mm512_and_si512(_mm512_multishift_epi64_epi8(c.first, v), seven);
        let q1 = _mm512_and_si512(_mm512_multishift_epi64_epi8(c.second, v), seven);
        let dot = _mm512_dpbusd_epi32(
            _mm512_dpbusd_epi32(
                _mm512_setzero_si512(),
                q0,
                _mm512_loadu_si512(x as *const _),
            ),
            q1,
            _mm512_loadu_si512(x.add(64) as *const _),
        );
        _mm512_cvtepi32_ps(dot)
    }

    /// A unit's dot product for `BITS` (a function, not a closure: closures do not
    /// inherit `target_feature`).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi,avx512vnni")]
    unsafe fn unit_dot<const BITS: u32>(
        w: *const u8,
        bytes: usize,
        full: bool,
        x: *const i8,
        c: &Int3Consts,
    ) -> __m512 {
        if BITS == 4 {
            unit_dot4(w, bytes, x)
        } else {
            unit_dot3(w, bytes, full, x, c)
        }
    }

    /// Rows `first..` of `w` into `dst` (batch 1).
    ///
    /// # Safety
    /// The CPU has AVX-512 F/BW/VBMI/VNNI and F16C; `w` is int`BITS` (4 or 3) and its
    /// arrays match its layout, for which
    /// `super::unit_codes` gave `units.size`; `units` was made for `w` by `matmul_q8`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi,avx512vnni,f16c")]
    pub(super) unsafe fn rows<const BITS: u32>(
        w: &PackedWeight<'_>,
        units: &Units<'_>,
        first: usize,
        dst: &mut [f32],
    ) {
        let l = w.layout;
        let (ng, rb) = (l.n_groups(), l.row_bytes());
        let unit_bytes = units.size * BITS as usize / 8;
        let n_units = rb.div_ceil(unit_bytes);
        // The row's last unit may be short (rows are whole blocks).
        let last_bytes = rb - (n_units - 1) * unit_bytes;
        let per = ARRANGED_BYTES;
        let consts = Int3Consts::new();
        let (mut sf, mut zf) = (vec![0f32; ng], vec![0f32; ng]);
        // Per unit: its weight group and activation block, and the product of their scales.
        let group_of: Vec<usize> = (0..n_units)
            .map(|u| u * units.size / l.group_size)
            .collect();
        let block_of: Vec<usize> = (0..n_units).map(|u| u * units.size / ACT_BLOCK).collect();
        let one_to_one = n_units == ng && units.size == ACT_BLOCK;
        let mut factor = vec![0f32; n_units];
        let x0 = units.codes.as_ptr();
        for (i, y) in dst.iter_mut().enumerate() {
            let r = first + i;
            widen_f16(&w.scales[r * ng..(r + 1) * ng], &mut sf);
            widen_f16(&w.zeros[r * ng..(r + 1) * ng], &mut zf);
            if one_to_one {
                // Group 128: unit, group and block coincide (this loop vectorises).
                for ((f, s), x) in factor.iter_mut().zip(&sf).zip(units.scales) {
                    *f = s * x;
                }
            } else {
                for (u, f) in factor.iter_mut().enumerate() {
                    *f = sf[group_of[u]] * units.scales[block_of[u]];
                }
            }
            let row = w.packed[r * rb..(r + 1) * rb].as_ptr();
            // Not the last row: 64 bytes can be read from any unit of it.
            let full = r + 1 < l.rows;
            // Two accumulators (units are short: one chain of additions would set the pace).
            let (mut y0, mut y1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
            let mut u = 0;
            while u + 2 < n_units {
                let at = row.add(u * unit_bytes);
                // Every cache line of the two units (up to 128 bytes), 1 KiB ahead: with one
                // hint per step, int4's second line went unrequested (4096x4096, one thread: 0.49 -> 0.45 ms).
                _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(1024) as *const i8);
                _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(1024 + 64) as *const i8);
                let d0 = unit_dot::<BITS>(at, unit_bytes, full, x0.add(u * per), &consts);
                let d1 = unit_dot::<BITS>(
                    at.add(unit_bytes),
                    unit_bytes,
                    full,
                    x0.add((u + 1) * per),
                    &consts,
                );
                y0 = _mm512_fmadd_ps(_mm512_set1_ps(factor[u]), d0, y0);
                y1 = _mm512_fmadd_ps(_mm512_set1_ps(factor[u + 1]), d1, y1);
                u += 2;
            }
            while u < n_units {
                let bytes = if u + 1 == n_units {
                    last_bytes
                } else {
                    unit_bytes
                };
                let at = row.add(u * unit_bytes);
                let d = unit_dot::<BITS>(at, bytes, full, x0.add(u * per), &consts);
                y0 = _mm512_fmadd_ps(_mm512_set1_ps(factor[u]), d, y0);
                u += 1;
            }
            let zero_terms = zero_terms_avx512(&sf, &zf, units.xhat_sums);
            *y = _mm512_reduce_add_ps(_mm512_add_ps(y0, y1)) - zero_terms;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::matmul::support::{assert_near_reference, packed, weight_and_input};

    #[test]
    fn activation_codes_round_to_the_block_scale() {
        let x = [0.0, 1.0, -2.54, 0.5, 0.0];
        let (codes, scales) = quantize_activations(&x, 5);
        assert_eq!(scales, vec![2.54 / 127.0]);
        assert_eq!(codes, vec![0, 50, -127, 25, 0]);
        let (codes, scales) = quantize_activations(&[0.0; 3], 3);
        assert_eq!((codes, scales), (vec![0; 3], vec![0.0]));
        // Two rows of 200: two blocks each (128 and 72 inputs).
        let x: Vec<f32> = (0..400).map(|i| i as f32 - 200.0).collect();
        let (codes, scales) = quantize_activations(&x, 200);
        assert_eq!(scales.len(), 4);
        assert_eq!((codes[0], codes[200]), (-127, 0));
        let xhat = dequantized_activations(&x, 200);
        for (a, b) in x.iter().zip(&xhat) {
            assert!((a - b).abs() <= 0.5 * 200.0 / 127.0 + 1e-3, "{a} vs {b}");
        }
    }

    /// The VNNI kernels' shapes, int4 and int3 (group 128, 64, 32, a short last group,
    /// per-channel with a short last unit, 4096 inputs), and the fallbacks' (int2, group
    /// 96, batch 2), against the scalar reference on `x̂`.
    #[test]
    fn matches_the_reference_on_dequantized_activations() {
        let cases: &[(Bits, usize, usize, Option<usize>, usize)] = &[
            (Bits::B4, 37, 256, Some(128), 1),
            (Bits::B4, 19, 192, Some(64), 1),
            (Bits::B4, 13, 160, Some(32), 1),
            (Bits::B4, 23, 172, Some(128), 1),
            (Bits::B4, 9, 352, None, 1),
            (Bits::B4, 640, 4096, Some(128), 1),
            (Bits::B3, 17, 256, Some(128), 1),
            (Bits::B3, 19, 192, Some(64), 1),
            (Bits::B3, 13, 160, Some(32), 1),
            (Bits::B3, 23, 172, Some(128), 1),
            (Bits::B3, 9, 352, None, 1),
            (Bits::B3, 640, 4096, Some(128), 1),
            (Bits::B2, 11, 256, Some(128), 1),
            (Bits::B4, 11, 288, Some(96), 1),
            (Bits::B3, 5, 256, Some(128), 3),
            (Bits::B4, 7, 256, Some(128), 2),
        ];
        for &(bits, rows, cols, group_size, batch) in cases {
            let (q, x) = weight_and_input(bits, rows, cols, group_size, batch);
            let w = packed(&q);
            let mut fast = vec![0f32; batch * rows];
            matmul_q8(&w, &x, batch, &mut fast).unwrap();
            assert_near_reference(&q, &dequantized_activations(&x, cols), batch, &fast);
        }
    }
}
