//! How far a quantized tensor is from the weight it came from: squared error, squared
//! norm and the largest absolute error, summed in f64 over all elements (rows in
//! parallel, each dequantized with the scalar reference of [`super::formats`]).

use rayon::prelude::*;

use super::{formats, Element, QuantizedTensor};

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ErrorStats {
    /// `Σ (w - ŵ)²`
    pub sq_error: f64,
    /// `Σ w²`
    pub sq_norm: f64,
    pub max_abs_error: f32,
}

impl ErrorStats {
    /// `‖W - Ŵ‖ / ‖W‖` (0 for an exact all-zero weight, infinite for a zero weight
    /// reproduced inexactly, which the code rule never does).
    pub fn relative_error(&self) -> f64 {
        if self.sq_error == 0.0 {
            0.0
        } else {
            (self.sq_error / self.sq_norm).sqrt()
        }
    }

    /// Signal-to-noise ratio in dB, `10 log10(Σw² / Σ(w-ŵ)²)`; infinite when exact.
    pub fn snr_db(&self) -> f64 {
        if self.sq_error == 0.0 {
            return f64::INFINITY;
        }
        10.0 * (self.sq_norm / self.sq_error).log10()
    }

    fn merge(self, o: Self) -> Self {
        Self {
            sq_error: self.sq_error + o.sq_error,
            sq_norm: self.sq_norm + o.sq_norm,
            max_abs_error: self.max_abs_error.max(o.max_abs_error),
        }
    }
}

/// Compares `weight` (`[rows, cols]`, row-major, the tensor `q` was made from) with
/// `q`'s dequantization.
pub fn error_stats<T: Element>(weight: &[T], q: &QuantizedTensor) -> ErrorStats {
    let l = &q.layout;
    let (ng, rb, cols) = (l.n_groups(), l.row_bytes(), l.cols);
    (0..l.rows)
        .into_par_iter()
        .map_init(
            || vec![0f32; cols],
            |buf, r| {
                let (sc, ze) = (
                    &q.scales[r * ng..(r + 1) * ng],
                    &q.zeros[r * ng..(r + 1) * ng],
                );
                formats::dequantize_row(
                    l.bits,
                    &q.packed[r * rb..(r + 1) * rb],
                    sc,
                    ze,
                    l.group_size,
                    buf,
                );
                let mut s = ErrorStats::default();
                for (&w, &d) in weight[r * cols..(r + 1) * cols].iter().zip(buf.iter()) {
                    let w = w.to_f32();
                    let e = (w - d).abs();
                    s.sq_error += f64::from(e) * f64::from(e);
                    s.sq_norm += f64::from(w) * f64::from(w);
                    s.max_abs_error = s.max_abs_error.max(e);
                }
                s
            },
        )
        .reduce(ErrorStats::default, ErrorStats::merge)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{quantize, Bits, Method, QuantSpec};

    #[test]
    fn stats_match_a_direct_computation() {
        let (rows, cols) = (5, 70);
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0)
            .collect();
        let spec = QuantSpec {
            bits: Bits::B3,
            group_size: Some(32),
            sym: false,
            method: Method::Rtn,
        };
        let q = quantize("w", &w, rows, cols, &spec, None).unwrap();
        let mut d = vec![0f32; rows * cols];
        crate::quant::dequantize(&q.layout, &q.packed, &q.scales, &q.zeros, &mut d).unwrap();
        let want_err: f64 = w
            .iter()
            .zip(&d)
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum();
        let want_norm: f64 = w.iter().map(|a| f64::from(*a).powi(2)).sum();
        let want_max = w
            .iter()
            .zip(&d)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        let s = error_stats(&w, &q);
        assert!((s.sq_error - want_err).abs() <= 1e-9 * want_err);
        assert!((s.sq_norm - want_norm).abs() <= 1e-9 * want_norm);
        assert_eq!(s.max_abs_error, want_max);
        assert!(s.relative_error() > 0.0 && s.snr_db().is_finite());
    }

    #[test]
    fn exact_weights_have_zero_error() {
        let w = vec![0f32; 64];
        let spec = QuantSpec {
            bits: Bits::B4,
            group_size: Some(32),
            sym: false,
            method: Method::Rtn,
        };
        let s = error_stats(&w, &quantize("z", &w, 1, 64, &spec, None).unwrap());
        assert_eq!((s.relative_error(), s.max_abs_error), (0.0, 0.0));
        assert!(s.snr_db().is_infinite());
    }
}
