//! `y = x · Wᵀ` for bf16 activations: `hanpack.nn.QuantLinear`'s CPU path when the
//! model runs in bf16.
//!
//! At batch 1 on a CPU with AVX512-BF16 the codes become bf16 and `vdpbf16ps` multiplies
//! them pairwise with the bf16 inputs, accumulating in f32. The products of two bf16
//! values are exact in f32 and the sums are f32 sums, so this is the f32 computation on
//! the given bf16 inputs (a denormal input counts as 0), with half the multiply
//! instructions per code of widening the codes to f32 (the kernels of [`super::matmul`]).
//!
//! * **int4** ([`avx512bf16::rows`]): a byte widens to one 16-bit lane, and a 32-entry
//!   table (`vpermw`, which reads the low five bits of each lane) turns its low nibble,
//!   and its high nibble after a shift, into bf16 (0..15 are exact in bf16).
//! * **int3** ([`avx512bf16::rows_int3`]): a chunk of 128 codes (48 bytes) is gathered
//!   six bytes to each 64-bit lane (`vpermb`), so code `c` of a lane sits at bit `3c`;
//!   `vpmultishiftqb` moves code `4k + j` of every lane into 16-bit word `j` of output
//!   `k`, and `vpternlogd` keeps its three bits at mantissa bits 4-6 under the exponent of
//!   8: bf16 `8 + q`. The offset joins the zero point's term (`Σ (8 + q)·x = 8·Σx + Σ q·x`).
//!
//! Where they run: on AMD (Zen 4) wherever the shapes allow, as the f32 table kernel is
//! slower there. 4096 x 4096, two threads, `MODE=bf16 examples/matmul_threads` (this
//! project's AMD EPYC VM), median in cache / streaming 60 copies of the weight from
//! memory: int4 0.325-0.399 / 0.448-0.496 ms (table) → 0.240-0.292 / 0.302-0.423 ms;
//! int3 0.391-0.423 / 0.393-0.440 ms → 0.264-0.324 / 0.296-0.343 ms.
//! On Intel the int4 kernel runs only on shapes the table kernel does not take, which it
//! ran at least as fast there (Xeon, 4096 x 4096, 2 threads: 0.40-0.42 ms against
//! 0.42-0.45 ms; streaming 100 copies, 0.53 against 0.90 ms), and int3 takes the table
//! kernel (the int3 kernel was not measured on Intel).
//!
//! Every other case widens the inputs to f32 and runs [`super::matmul::matmul`]: other
//! widths, batch > 1, groups that are not whole spans (int4, 64 codes) or chunks (int3,
//! 128 codes), a CPU without AVX512-BF16. All are tested against
//! [`super::matmul::matmul_ref`] on the widened inputs.

use half::bf16;

use super::formats::{Bits, BLOCK};
use super::matmul::{matmul_on, split_rows, table_kernel_applies, PackedWeight, Rayon, RowTasks};
use crate::error::Result;

/// Codes per step of the int4 kernel: 32 packed bytes.
const SPAN: usize = 64;

/// Codes per step of the int3 kernel: 48 packed bytes.
const CHUNK: usize = 128;

/// The fast kernel's contract is [`super::matmul::matmul_ref`]'s on `x` widened to f32.
pub fn matmul_bf16(w: &PackedWeight<'_>, x: &[bf16], batch: usize, out: &mut [f32]) -> Result<()> {
    matmul_bf16_on(&Rayon, w, x, batch, out)
}

/// [`matmul_bf16`] with its row tasks run by `tasks`.
pub fn matmul_bf16_on(
    tasks: &dyn RowTasks,
    w: &PackedWeight<'_>,
    x: &[bf16],
    batch: usize,
    out: &mut [f32],
) -> Result<()> {
    w.check_sizes(x.len(), batch, out.len())?;
    #[cfg(target_arch = "x86_64")]
    if batch == 1 && has_bf16_dot() {
        let l = w.layout;
        let over_table = amd_zen4() || !table_kernel_applies(&l, batch);
        let xsum = || group_sums(w, x);
        if spans_fit(w) && over_table {
            let (arranged, xsum) = (arranged_inputs(w, x), xsum());
            let padded = l.cols.div_ceil(BLOCK) * BLOCK;
            split_rows(tasks, &l, padded, 1, out, |first, dst| {
                // SAFETY: the CPU has AVX-512 F/BW/BF16 and F16C (`has_bf16_dot`), and
                // the weight's sizes were checked against its layout.
                unsafe { avx512bf16::rows(w, &arranged, &xsum, first, dst) }
            });
            return Ok(());
        }
        if chunks_fit(w) && amd_zen4() {
            let (arranged, xsum) = (chunk_inputs(x), xsum());
            split_rows(tasks, &l, l.cols, 1, out, |first, dst| {
                // SAFETY: the CPU has AVX-512 F/BW/VBMI/BF16 and F16C (`amd_zen4`), and
                // the weight's sizes were checked against its layout.
                unsafe { avx512bf16::rows_int3(w, &arranged, &xsum, first, dst) }
            });
            return Ok(());
        }
    }
    let xf: Vec<f32> = x.iter().map(|v| v.to_f32()).collect();
    matmul_on(tasks, w, &xf, batch, out)
}

/// int4 whose groups are whole spans (the last one may be short, as rows are padded to
/// an even number of 32-code blocks).
fn spans_fit(w: &PackedWeight<'_>) -> bool {
    let l = w.layout;
    let blocks = l.cols.div_ceil(BLOCK);
    l.bits == Bits::B4
        && blocks.is_multiple_of(2)
        && (l.group_size.is_multiple_of(SPAN) || l.n_groups() == 1)
}

#[cfg(target_arch = "x86_64")]
fn has_bf16_dot() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512bf16")
        && std::arch::is_x86_feature_detected!("f16c")
}

/// int3 whose rows and groups are whole chunks.
fn chunks_fit(w: &PackedWeight<'_>) -> bool {
    let l = w.layout;
    l.bits == Bits::B3 && l.cols.is_multiple_of(CHUNK) && l.group_size.is_multiple_of(CHUNK)
}

/// An AMD CPU with the int3 kernel's instructions (AVX512-VBMI besides `has_bf16_dot`'s):
/// Zen 4 and later, where these kernels outrun the f32 table kernel (see the module's
/// comment).
#[cfg(target_arch = "x86_64")]
fn amd_zen4() -> bool {
    static AMD_ZEN4: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AMD_ZEN4.get_or_init(|| {
        let id = std::arch::x86_64::__cpuid(0);
        let vendor = [id.ebx, id.edx, id.ecx].map(u32::to_le_bytes);
        vendor.concat() == b"AuthenticAMD"
            && has_bf16_dot()
            && std::arch::is_x86_feature_detected!("avx512vbmi")
    })
}

/// The inputs' bf16 bits in the order the codes come out of a span's 32 bytes: the 32
/// even inputs (low nibbles), then the 32 odd ones (high nibbles); zeros past `cols`.
fn arranged_inputs(w: &PackedWeight<'_>, x: &[bf16]) -> Vec<u16> {
    let cols = w.layout.cols;
    let padded = cols.div_ceil(SPAN) * SPAN;
    let mut out = vec![0u16; padded];
    for (s, dst) in out.chunks_exact_mut(SPAN).enumerate() {
        for j in 0..SPAN / 2 {
            let at = |i: usize| x.get(i).map_or(0, |v| v.to_bits());
            dst[j] = at(s * SPAN + 2 * j);
            dst[SPAN / 2 + j] = at(s * SPAN + 2 * j + 1);
        }
    }
    out
}

/// The inputs' bf16 bits in the order the int3 kernel's words come out of a chunk:
/// word `4m + j` of output `k` is code `16m + 4k + j`.
fn chunk_inputs(x: &[bf16]) -> Vec<u16> {
    let mut out = vec![0u16; x.len()];
    for (src, dst) in x.chunks_exact(CHUNK).zip(out.chunks_exact_mut(CHUNK)) {
        for (c, v) in src.iter().enumerate() {
            let (m, k, j) = (c / 16, c % 16 / 4, c % 4);
            dst[32 * k + 4 * m + j] = v.to_bits();
        }
    }
    out
}

/// Per-group sums of the inputs (in f32), for the zero points' term.
fn group_sums(w: &PackedWeight<'_>, x: &[bf16]) -> Vec<f32> {
    x.chunks(w.layout.group_size)
        .map(|g| g.iter().map(|v| v.to_f32()).sum())
        .collect()
}

#[cfg(target_arch = "x86_64")]
mod avx512bf16 {
    use std::arch::x86_64::*;

    use super::super::matmul::{widen_f16, zero_terms_avx512, PackedWeight};
    use super::{CHUNK, SPAN};

    /// Entry `i` is bf16 `i mod 16`: `vpermw` reads the low five bits of each index, so a
    /// widened byte indexes its low nibble directly (bit 4 lands in the table's repeat).
    const CODE_TABLE: [u16; 32] = {
        let mut t = [0u16; 32];
        let mut i = 0;
        while i < 32 {
            // bf16 of a small integer: the top half of its f32 bits (exact below 256).
            t[i] = ((i % 16) as f32).to_bits().wrapping_shr(16) as u16;
            i += 1;
        }
        t
    };

    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn bh(v: __m512i) -> __m512bh {
        std::mem::transmute::<__m512i, __m512bh>(v)
    }

    /// Row `r`'s packed bytes, with its scales and zeros widened into `sf` and `zf`.
    ///
    /// # Safety
    /// The CPU has F16C.
    #[inline]
    #[target_feature(enable = "f16c")]
    unsafe fn row_params(
        w: &PackedWeight<'_>,
        r: usize,
        sf: &mut [f32],
        zf: &mut [f32],
    ) -> *const u8 {
        let (ng, rb) = (w.layout.n_groups(), w.layout.row_bytes());
        widen_f16(&w.scales[r * ng..(r + 1) * ng], sf);
        widen_f16(&w.zeros[r * ng..(r + 1) * ng], zf);
        w.packed[r * rb..(r + 1) * rb].as_ptr()
    }

    /// One span: 32 bytes of codes at `w` against the 64 arranged inputs at `x`, into the
    /// even (`a`) and odd (`b`) accumulators.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn span(w: *const u8, x: *const u16, table: __m512i, a: &mut __m512, b: &mut __m512) {
        let v = _mm512_cvtepu8_epi16(_mm256_loadu_si256(w as *const __m256i));
        let even = _mm512_permutexvar_epi16(v, table);
        let odd = _mm512_permutexvar_epi16(_mm512_srli_epi16::<4>(v), table);
        *a = _mm512_dpbf16_ps(*a, bh(even), bh(_mm512_loadu_si512(x as *const _)));
        *b = _mm512_dpbf16_ps(*b, bh(odd), bh(_mm512_loadu_si512(x.add(32) as *const _)));
    }

    /// Rows `first..` of `w` into `dst` (batch 1).
    ///
    /// # Safety
    /// The CPU has AVX-512 F/BW/BF16 and F16C; `w`'s arrays match its layout, which
    /// `super::spans_fit` accepted; `xa` and `xsum` come from `super::arranged_inputs`
    /// and `super::group_sums` for `w`.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16,f16c")]
    pub(super) unsafe fn rows(
        w: &PackedWeight<'_>,
        xa: &[u16],
        xsum: &[f32],
        first: usize,
        dst: &mut [f32],
    ) {
        let l = w.layout;
        let (ng, rb) = (l.n_groups(), l.row_bytes());
        let span_bytes = SPAN / 2;
        let n_spans = rb / span_bytes;
        let spans_per_group = l.group_size.div_ceil(SPAN);
        let table = _mm512_loadu_si512(CODE_TABLE.as_ptr() as *const _);
        let zero = _mm512_setzero_ps();
        let (mut sf, mut zf) = (vec![0f32; ng], vec![0f32; ng]);
        let x0 = xa.as_ptr();
        for (i, y) in dst.iter_mut().enumerate() {
            let r = first + i;
            let row = row_params(w, r, &mut sf, &mut zf);
            let mut yv = zero;
            let mut k = 0;
            for (g, &s) in sf.iter().enumerate() {
                let end = ((g + 1) * spans_per_group).min(n_spans);
                // Two spans per step into separate accumulators (the dot's latency).
                let [mut a0, mut b0, mut a1, mut b1] = [zero; 4];
                while k + 2 <= end {
                    // As in `matmul`'s kernels: keep the memory stream going.
                    _mm_prefetch::<_MM_HINT_T0>(
                        row.add(k * span_bytes).wrapping_add(1024) as *const i8
                    );
                    span(
                        row.add(k * span_bytes),
                        x0.add(k * SPAN),
                        table,
                        &mut a0,
                        &mut b0,
                    );
                    span(
                        row.add((k + 1) * span_bytes),
                        x0.add((k + 1) * SPAN),
                        table,
                        &mut a1,
                        &mut b1,
                    );
                    k += 2;
                }
                if k < end {
                    span(
                        row.add(k * span_bytes),
                        x0.add(k * SPAN),
                        table,
                        &mut a0,
                        &mut b0,
                    );
                    k += 1;
                }
                let sum = _mm512_add_ps(_mm512_add_ps(a0, b0), _mm512_add_ps(a1, b1));
                yv = _mm512_fmadd_ps(_mm512_set1_ps(s), sum, yv);
            }
            let zero_terms = zero_terms_avx512(&sf, &zf, xsum);
            *y = _mm512_reduce_add_ps(yv) - zero_terms;
        }
    }

    /// `vpmultishiftqb` controls of int3 output `k`: both bytes of word `j` of every lane
    /// start 4 bits below code `4k + j` (at bit `3(4k + j)`), so that the code lands in
    /// bits 4-6 (wrapping around the lane for code 0: its bits below are masked off).
    const INT3_CONTROLS: [[u8; 64]; 4] = {
        let mut out = [[0u8; 64]; 4];
        let mut k = 0;
        while k < 4 {
            let mut b = 0;
            while b < 64 {
                let code = 4 * k + (b % 8) / 2;
                out[k][b] = ((3 * code + 64 - 4) % 64) as u8;
                b += 1;
            }
            k += 1;
        }
        out
    };

    /// `vpermb` indices: bytes `6m..6m + 6` of a chunk into 64-bit lane `m` (the lane's
    /// top two bytes: any).
    const INT3_GATHER: [u8; 64] = {
        let mut out = [0u8; 64];
        let mut i = 0;
        while i < 64 {
            let b = if i % 8 < 5 { i % 8 } else { 5 };
            out[i] = (6 * (i / 8) + b) as u8;
            i += 1;
        }
        out
    };

    /// Rows `first..` of int3 `w` into `dst` (batch 1).
    ///
    /// # Safety
    /// The CPU has AVX-512 F/BW/VBMI/BF16 and F16C; `w`'s arrays match its layout, which
    /// `super::chunks_fit` accepted; `xa` and `xsum` come from `super::chunk_inputs` and
    /// `super::group_sums` for `w`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi,avx512bf16,f16c")]
    pub(super) unsafe fn rows_int3(
        w: &PackedWeight<'_>,
        xa: &[u16],
        xsum: &[f32],
        first: usize,
        dst: &mut [f32],
    ) {
        const CHUNK_BYTES: usize = CHUNK * 3 / 8;
        let l = w.layout;
        let ng = l.n_groups();
        let chunks_per_group = l.group_size / CHUNK;
        // Code bits 4-6 of each word, under bf16 8's sign and exponent: `8 + q`.
        let (mask, eight) = (_mm512_set1_epi16(0x0070), _mm512_set1_epi16(0x4100));
        let ctrl = INT3_CONTROLS.map(|c| _mm512_loadu_si512(c.as_ptr() as *const _));
        let gather = _mm512_loadu_si512(INT3_GATHER.as_ptr() as *const _);
        let zero = _mm512_setzero_ps();
        let (mut sf, mut zf) = (vec![0f32; ng], vec![0f32; ng]);
        let x0 = xa.as_ptr();
        for (i, y) in dst.iter_mut().enumerate() {
            let r = first + i;
            let row = row_params(w, r, &mut sf, &mut zf);
            let full = r + 1 < l.rows;
            let mut yv = zero;
            let mut ch = 0;
            for &s in &sf {
                let mut acc = [zero; 4];
                for _ in 0..chunks_per_group {
                    let at = row.add(ch * CHUNK_BYTES);
                    // As in `matmul`'s kernels: keep the memory stream going.
                    _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(1024) as *const i8);
                    let v = _mm512_permutexvar_epi8(
                        gather,
                        super::super::matmul::int3_chunk_bytes(at, full),
                    );
                    let xc = x0.add(ch * CHUNK);
                    for (k, a) in acc.iter_mut().enumerate() {
                        let q = _mm512_ternarylogic_epi32::<0xEA>(
                            _mm512_multishift_epi64_epi8(ctrl[k], v),
                            mask,
                            eight,
                        );
                        let xk = _mm512_loadu_si512(xc.add(32 * k) as *const _);
                        *a = _mm512_dpbf16_ps(*a, bh(q), bh(xk));
                    }
                    ch += 1;
                }
                let sum =
                    _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
                yv = _mm512_fmadd_ps(_mm512_set1_ps(s), sum, yv);
            }
            // `(A & mask) | eight` is ternary-logic 0xEA; the codes' offset 8 joins the
            // zero points: Σ s·(8 + z)·Σx.
            zf.iter_mut().for_each(|z| *z += 8.0);
            *y = _mm512_reduce_add_ps(yv) - zero_terms_avx512(&sf, &zf, xsum);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::matmul::support::{assert_near_reference, packed, weight_and_input};
    use crate::quant::{quantize, Method, QuantSpec};

    /// Every shape class (the int4 kernel's: whole spans, a short last group,
    /// per-channel; the int3 kernel's: whole chunks, per-channel, in the pool; and the
    /// fallbacks': an odd number of blocks, group 32, int3 group 64, batch 2) against the
    /// scalar reference on the widened inputs.
    #[test]
    fn matches_the_reference_on_widened_inputs() {
        let cases: &[(Bits, usize, usize, Option<usize>, usize)] = &[
            (Bits::B4, 37, 256, Some(128), 1),
            (Bits::B4, 19, 192, Some(64), 1),
            (Bits::B4, 23, 172, Some(128), 1),
            (Bits::B4, 9, 256, None, 1),
            (Bits::B4, 640, 4096, Some(128), 1),
            (Bits::B4, 11, 160, Some(128), 1),
            (Bits::B4, 13, 256, Some(32), 1),
            (Bits::B3, 17, 256, Some(128), 1),
            (Bits::B3, 9, 384, None, 1),
            (Bits::B3, 301, 1024, Some(256), 1),
            (Bits::B3, 5, 192, Some(64), 1),
            (Bits::B4, 7, 256, Some(128), 2),
        ];
        for &(bits, rows, cols, group_size, batch) in cases {
            let (q, x) = weight_and_input(bits, rows, cols, group_size, batch);
            let w = packed(&q);
            let xb: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
            let xf: Vec<f32> = xb.iter().map(|v| v.to_f32()).collect();
            let mut fast = vec![0f32; batch * rows];
            matmul_bf16(&w, &xb, batch, &mut fast).unwrap();
            assert_near_reference(&q, &xf, batch, &fast);
        }
    }

    /// The int3 kernel itself on any CPU with its instructions (it is chosen on AMD
    /// only): inputs of every magnitude, bf16 subnormals (counted as 0) included.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_int3_kernel_matches_the_reference() {
        if !(has_bf16_dot() && std::arch::is_x86_feature_detected!("avx512vbmi")) {
            return;
        }
        let cases: &[(usize, usize, Option<usize>)] = &[
            (37, 256, Some(128)),
            (9, 384, None),
            (11, 512, Some(256)),
            (640, 4096, Some(128)),
        ];
        let scales = [1.0f32, 3e-7, 1e30, 1e-39, 7.5e20];
        for &(rows, cols, group_size) in cases {
            let (q, x) = weight_and_input(Bits::B3, rows, cols, group_size, 1);
            let w = packed(&q);
            assert!(chunks_fit(&w));
            for wide in [false, true] {
                let xb: Vec<bf16> = x
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| bf16::from_f32(if wide { v * scales[i % 5] } else { v }))
                    .collect();
                // The kernel counts subnormal inputs as 0, as `vdpbf16ps` does.
                let xf: Vec<f32> = xb
                    .iter()
                    .map(|v| v.to_f32())
                    .map(|v| if v.is_normal() { v } else { 0.0 })
                    .collect();
                let mut fast = vec![0f32; rows];
                // SAFETY: the features were checked above, the shapes by `chunks_fit`.
                unsafe {
                    avx512bf16::rows_int3(
                        &w,
                        &chunk_inputs(&xb),
                        &group_sums(&w, &xb),
                        0,
                        &mut fast,
                    )
                };
                assert_near_reference(&q, &xf, 1, &fast);
            }
        }
    }

    #[test]
    fn wrong_sizes_are_errors() {
        let weight = vec![0.5f32; 4 * 64];
        let spec = QuantSpec {
            bits: Bits::B4,
            group_size: Some(64),
            sym: false,
            method: Method::Rtn,
        };
        let q = quantize("w", &weight[..], 4, 64, &spec, None).unwrap();
        let w = PackedWeight {
            layout: q.layout,
            packed: &q.packed,
            scales: &q.scales,
            zeros: &q.zeros,
        };
        let x = vec![bf16::ONE; 63];
        let mut out = vec![0f32; 4];
        assert!(matmul_bf16(&w, &x, 1, &mut out).is_err());
    }
}
