//! Properties of the block formats. Byte equality with ggml itself is checked from Python
//! (`tests/test_gguf_quants.py`), against the `gguf` package and llama.cpp's quantizer.

use super::helpers::nearest_int;
use super::*;
use crate::test_rng::Rng;

/// Every block format (the float types excluded).
fn quantized() -> impl Iterator<Item = GgmlType> {
    GgmlType::ALL
        .into_iter()
        .filter(|t| !matches!(t, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16))
}

/// Roughly Gaussian weights, with a few large outliers when `outliers` (like a real layer).
fn weights_with(rng: &mut Rng, n: usize, outliers: bool) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let s: f32 = (0..4).map(|_| rng.below(2001) as f32 / 1000.0 - 1.0).sum();
            if outliers && rng.below(200) == 0 {
                s * 8.0
            } else {
                s * 0.02
            }
        })
        .collect()
}

fn weights(rng: &mut Rng, n: usize) -> Vec<f32> {
    weights_with(rng, n, true)
}

fn rel_rmse(a: &[f32], b: &[f32], w: Option<&[f32]>, n_per_row: usize) -> f64 {
    let (mut num, mut den) = (0f64, 0f64);
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let wi = w.map_or(1.0, |w| w[i % n_per_row] as f64);
        num += wi * ((x - y) as f64).powi(2);
        den += wi * (*x as f64).powi(2);
    }
    (num / den).sqrt()
}

#[test]
fn block_sizes_are_ggmls() {
    let expect = [
        (GgmlType::Q4_0, 32, 18),
        (GgmlType::Q4_1, 32, 20),
        (GgmlType::Q5_0, 32, 22),
        (GgmlType::Q5_1, 32, 24),
        (GgmlType::Q8_0, 32, 34),
        (GgmlType::Q2_K, 256, 84),
        (GgmlType::Q3_K, 256, 110),
        (GgmlType::Q4_K, 256, 144),
        (GgmlType::Q5_K, 256, 176),
        (GgmlType::Q6_K, 256, 210),
        (GgmlType::IQ4_NL, 32, 18),
    ];
    for (t, bs, ts) in expect {
        assert_eq!((t.block_size(), t.type_size()), (bs, ts), "{}", t.name());
        assert_eq!(GgmlType::from_name(t.name()), Some(t));
        assert_eq!(GgmlType::from_id(t as u32), Some(t));
    }
    assert_eq!(GgmlType::Q4_K.bits_per_weight(), 4.5);
    assert_eq!(GgmlType::Q6_K.bits_per_weight(), 6.5625);
}

#[test]
fn nearest_int_rounds_half_to_even() {
    for i in -4000..4000 {
        let v = i as f32 * 0.25;
        assert_eq!(nearest_int(v), v.round_ties_even() as i32, "{v}");
    }
}

#[test]
fn every_format_round_trips_within_its_precision() {
    let mut rng = Rng(7);
    let n_per_row = 512;
    let x = weights(&mut rng, 8 * n_per_row);
    // Relative RMS error bounds: a bit above what each format reaches on this data.
    let bound = |t: GgmlType| match t {
        GgmlType::Q8_0 => 0.01,
        GgmlType::Q6_K => 0.03,
        GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q5_K => 0.06,
        GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q4_K | GgmlType::IQ4_NL => 0.12,
        GgmlType::Q3_K => 0.25,
        _ => 0.5,
    };
    for t in quantized() {
        let q = quantize("w", t, &x, n_per_row, None).unwrap();
        assert_eq!(q.len(), 8 * t.row_bytes(n_per_row).unwrap());
        let y = dequantize(t, &q, n_per_row).unwrap();
        let e = rel_rmse(&x, &y, None, n_per_row);
        assert!(e < bound(t), "{}: relative error {e}", t.name());
    }
}

#[test]
fn an_importance_matrix_lowers_the_weighted_error() {
    let mut rng = Rng(11);
    let n_per_row = 256;
    // Without outliers: ggml's importance-weighted Q3_K search trades a little weighted
    // error for the outliers' sake (bytes checked equal to llama.cpp's from Python).
    let x = weights_with(&mut rng, 16 * n_per_row, false);
    // A few columns matter 100x more, as activations' outlier channels do.
    let imatrix: Vec<f32> = (0..n_per_row)
        .map(|c| if c % 13 == 0 { 100.0 } else { 1.0 })
        .collect();
    for t in quantized().filter(|t| t.uses_imatrix()) {
        let plain = dequantize(
            t,
            &quantize("w", t, &x, n_per_row, None).unwrap(),
            n_per_row,
        );
        let weighted = quantize("w", t, &x, n_per_row, Some(&imatrix)).unwrap();
        let weighted = dequantize(t, &weighted, n_per_row).unwrap();
        let (e0, e1) = (
            rel_rmse(&x, &plain.unwrap(), Some(&imatrix), n_per_row),
            rel_rmse(&x, &weighted, Some(&imatrix), n_per_row),
        );
        assert!(e1 < e0, "{}: weighted error {e1} vs {e0} without", t.name());
    }
}

#[test]
fn zero_blocks_stay_zero() {
    let x = vec![0f32; 512];
    for t in quantized() {
        let y = dequantize(t, &quantize("w", t, &x, 512, None).unwrap(), 512).unwrap();
        assert!(y.iter().all(|v| *v == 0.0), "{}", t.name());
    }
}

#[test]
fn rows_are_independent_of_the_batch() {
    let mut rng = Rng(3);
    let x = weights(&mut rng, 64 * 256);
    let imatrix: Vec<f32> = (0..256).map(|c| 1.0 + (c % 5) as f32).collect();
    for t in quantized() {
        let all = quantize("w", t, &x, 256, Some(&imatrix)).unwrap();
        let rb = t.row_bytes(256).unwrap();
        let row9 = quantize("w", t, &x[9 * 256..10 * 256], 256, Some(&imatrix)).unwrap();
        assert_eq!(&all[9 * rb..10 * rb], &row9[..], "{}", t.name());
    }
}

#[test]
fn bad_input_is_an_error() {
    let x = vec![0.5f32; 256];
    assert!(quantize("w", GgmlType::Q4_K, &x[..128], 128, None).is_err());
    assert!(quantize("w", GgmlType::Q4_0, &x[..100], 32, None).is_err());
    assert!(quantize("w", GgmlType::Q4_0, &x, 256, Some(&[1.0; 3])).is_err());
    let mut bad = x.clone();
    bad[77] = f32::NAN;
    match quantize("blk.0", GgmlType::Q4_0, &bad, 128, None) {
        Err(HanpackError::NonFiniteWeight { row, col, .. }) => assert_eq!((row, col), (0, 77)),
        other => panic!("{other:?}"),
    }
    assert!(dequantize(GgmlType::Q4_K, &[0u8; 100], 256).is_err());
}

/// Sub-blocks for the lane tests: ordinary, constant, all zero, all positive.
fn lane_blocks(rng: &mut Rng, n: usize) -> Vec<f32> {
    let mut x = weights(rng, 8 * n);
    x[n..2 * n].fill(0.37);
    x[2 * n..3 * n].fill(0.0);
    for v in &mut x[3 * n..4 * n] {
        *v = v.abs();
    }
    x
}

#[test]
fn the_lane_searches_equal_the_scalar_ones_bit_for_bit() {
    use super::helpers::{make_qkx_quants, make_qx_quants, MinSearch, QxWeights};
    use super::lanes::{make_qkx2_lanes, make_qx_lanes, transpose, LANES};
    let mut rng = Rng(21);
    for round in 0..20 {
        let x = lane_blocks(&mut rng, 32);
        let w: Vec<f32> = x.iter().map(|v| 0.01 + v.abs()).collect();
        let search = MinSearch {
            nmax: 15,
            rmin: -1.0,
            rdelta: 0.1,
            nstep: 20,
            use_mad: round % 2 == 1,
        };
        let (xt, wt) = (transpose::<32>(&x), transpose::<32>(&w));
        let mut lt = [[0u8; LANES]; 32];
        let (sc, mn) = make_qkx2_lanes::<32>(&search, &xt, &wt, &mut lt);
        let mut lp = [[0u8; LANES]; 32];
        let (sp, mp) = super::lanes::make_qkx2_portable::<32>(&search, &xt, &wt, &mut lp);
        assert_eq!(lp, lt);
        assert_eq!(sp.map(f32::to_bits), sc.map(f32::to_bits));
        assert_eq!(mp.map(f32::to_bits), mn.map(f32::to_bits));
        for k in 0..LANES {
            let (mut l, mut laux) = ([0u8; 32], [0u8; 32]);
            let xs = &x[32 * k..32 * (k + 1)];
            let ws = &w[32 * k..32 * (k + 1)];
            let (s, m) = make_qkx_quants(&search, xs, Some(ws), false, &mut l, &mut laux);
            assert_eq!(
                (s.to_bits(), m.to_bits()),
                (sc[k].to_bits(), mn[k].to_bits()),
                "lane {k}"
            );
            assert!((0..32).all(|i| l[i] == lt[i][k]), "codes of lane {k}");
        }
        let x = lane_blocks(&mut rng, 16);
        let qw: Vec<f32> = x.iter().map(|v| 1.0 + v.abs() * 10.0).collect();
        let (xt, qt) = (transpose::<16>(&x), transpose::<16>(&qw));
        for given in [false, true] {
            let mut lt = [[0i8; LANES]; 16];
            let sc = make_qx_lanes::<16>(32, &xt, given.then_some(&qt), &mut lt);
            let mut lp = [[0i8; LANES]; 16];
            let sp = super::lanes::make_qx_portable::<16>(32, &xt, given.then_some(&qt), &mut lp);
            assert_eq!((lp, sp.map(f32::to_bits)), (lt, sc.map(f32::to_bits)));
            for k in 0..LANES {
                let mut l = [0i8; 16];
                let w = if given {
                    QxWeights::Given(&qw[16 * k..16 * (k + 1)])
                } else {
                    QxWeights::Square
                };
                let s = make_qx_quants(32, &x[16 * k..16 * (k + 1)], &mut l, w);
                assert_eq!(s.to_bits(), sc[k].to_bits(), "lane {k}");
                assert!((0..16).all(|i| l[i] == lt[i][k]), "codes of lane {k}");
            }
        }
    }
}

/// ggml's sequential first-largest-magnitude scan, the reference for `abs_max`.
fn abs_max_scan(x: &[f32]) -> (f32, f32) {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    (amax, max)
}

#[test]
fn vectorisable_helpers_equal_the_scalar_operations() {
    use super::helpers::{abs_max, round_half_away, trunc_sat_i8};
    let mut rng = Rng(29);
    let specials = [
        0.0,
        -0.0,
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        0.5,
        -0.5,
        1.5,
        -2.5,
        127.5,
        -128.5,
        1e30,
        -1e30,
    ];
    for len in [0usize, 1, 7, 8, 9, 32, 33, 256] {
        for _ in 0..200 {
            let x: Vec<f32> = (0..len)
                .map(|_| match rng.below(6) {
                    0 => specials[rng.below(specials.len() as u64) as usize],
                    1 => (rng.below(5) as f32 - 2.0) * 0.25, // ties of magnitude
                    _ => (rng.below(1 << 24) as f32 - 8388608.0) / 65536.0,
                })
                .collect();
            let (a, b) = (abs_max(&x), abs_max_scan(&x));
            assert_eq!(
                (a.0.to_bits(), a.1.to_bits()),
                (b.0.to_bits(), b.1.to_bits()),
                "{x:?}"
            );
        }
    }
    let mut values: Vec<f32> = specials.to_vec();
    values.extend((0..100_000).map(|_| f32::from_bits(rng.next() as u32)));
    values.extend((0..100_000).map(|_| (rng.below(1 << 20) as f32 - 524288.0) / 2048.0));
    values.extend((-600..600).map(|i| i as f32 * 0.25));
    for v in values {
        assert_eq!(trunc_sat_i8(v), (v as i8) as i32, "{v}");
        let (r, want) = (round_half_away(v), v.round());
        assert!(
            r.to_bits() == want.to_bits() || (r.is_nan() && want.is_nan()),
            "{v}: {r} vs {want}"
        );
    }
}
