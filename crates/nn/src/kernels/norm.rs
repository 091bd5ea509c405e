//! Layer norm and RMS norm over rows.

use super::{for_rows, lane_sum};
use crate::simd::avx512_dispatch;

/// In place over the rows of `x` (width `w.len()`):
/// `(x - mean) / sqrt(var + eps) * w + b` (biased variance, as PyTorch);
/// no bias when `b` is `None` (ModernBERT).
pub fn layer_norm(x: &mut [f32], w: &[f32], b: Option<&[f32]>, eps: f32) {
    let n = w.len();
    for_rows(x, n, |_, row| layer_norm_row(row, w, b, eps));
}

avx512_dispatch!(
    fn layer_norm_row(row: &mut [f32], w: &[f32], b: Option<&[f32]>, eps: f32) {
        let n = row.len() as f32;
        let mean = lane_sum(row, |v| v) / n;
        let var = lane_sum(row, |v| (v - mean) * (v - mean)) / n;
        let inv = 1.0 / (var + eps).sqrt();
        match b {
            Some(b) => {
                for ((v, g), c) in row.iter_mut().zip(w).zip(b) {
                    *v = (*v - mean) * inv * g + c;
                }
            }
            None => {
                for (v, g) in row.iter_mut().zip(w) {
                    *v = (*v - mean) * inv * g;
                }
            }
        }
    }
);

/// In place over the rows of `x`: `x / sqrt(mean(x^2) + eps) * w` (T5's
/// norm: no mean subtraction, no bias).
pub fn rms_norm(x: &mut [f32], w: &[f32], eps: f32) {
    let n = w.len();
    for_rows(x, n, |_, row| rms_norm_row(row, w, eps));
}

avx512_dispatch!(
    fn rms_norm_row(row: &mut [f32], w: &[f32], eps: f32) {
        let ms = lane_sum(row, |v| v * v) / row.len() as f32;
        let inv = 1.0 / (ms + eps).sqrt();
        for (v, g) in row.iter_mut().zip(w) {
            *v = *v * inv * g;
        }
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_norm_centres_and_scales() {
        let mut x = vec![1.0, 2.0, 3.0, 4.0, -1.0, -1.0, -1.0, -1.0];
        layer_norm(&mut x, &[1.0; 4], Some(&[0.5; 4]), 1e-5);
        let std = (1.25f32 + 1e-5).sqrt();
        for (v, want) in x[..4].iter().zip([-1.5, -0.5, 0.5, 1.5]) {
            assert!((v - (want / std + 0.5)).abs() < 1e-6);
        }
        assert!(x[4..].iter().all(|&v| (v - 0.5).abs() < 1e-6));
    }

    #[test]
    fn rms_norm_divides_by_root_mean_square() {
        let mut x = vec![3.0, 4.0];
        rms_norm(&mut x, &[1.0, 2.0], 0.0);
        let rms = 12.5f32.sqrt();
        assert!((x[0] - 3.0 / rms).abs() < 1e-6 && (x[1] - 8.0 / rms).abs() < 1e-6);
    }
}
