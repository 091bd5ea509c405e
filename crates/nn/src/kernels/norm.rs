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

/// Rows per block of a norm's backward pass: the weight gradients are
/// summed per block, then the blocks in order, so that the result does not
/// depend on the thread count.
const BLOCK: usize = 64;

/// The backward pass of a norm over rows of `width`, given each row's
/// input `x` and output gradient in `dy` (replaced by the input gradient).
/// `row(x, dy, dw, db)` handles one row, adding into its block's partial
/// weight and bias gradients (`[2 * width]`: weight, then bias).
fn norm_backward(
    x: &[f32],
    dy: &mut [f32],
    width: usize,
    dw: &mut [f32],
    db: Option<&mut [f32]>,
    row: impl Fn(&[f32], &mut [f32], &mut [f32]) + Sync,
) {
    use rayon::prelude::*;
    let rows = x.len() / width;
    let blocks = rows.div_ceil(BLOCK);
    let mut partial = vec![0.0f32; blocks * 2 * width];
    let work = |(b, (dyb, part)): (usize, (&mut [f32], &mut [f32]))| {
        let xb = &x[b * BLOCK * width..];
        for (i, d) in dyb.chunks_exact_mut(width).enumerate() {
            row(&xb[i * width..(i + 1) * width], d, part);
        }
    };
    if crate::linalg::threads() > 1 && blocks > 1 {
        dy.par_chunks_mut(BLOCK * width)
            .zip(partial.par_chunks_exact_mut(2 * width))
            .enumerate()
            .for_each(work);
    } else {
        dy.chunks_mut(BLOCK * width)
            .zip(partial.chunks_exact_mut(2 * width))
            .enumerate()
            .for_each(work);
    }
    for part in partial.chunks_exact(2 * width) {
        super::add_into(dw, &part[..width]);
    }
    if let Some(db) = db {
        for part in partial.chunks_exact(2 * width) {
            super::add_into(db, &part[width..]);
        }
    }
}

/// The backward pass of [`layer_norm`] on the rows `x`: `dy` holds the
/// output gradient and gets the input gradient
/// `rstd * (g - mean(g) - xhat * mean(g * xhat))`, `g = dy * w`; the
/// weight and bias gradients are added into `dw` and `db`.
pub fn layer_norm_backward(
    x: &[f32],
    w: &[f32],
    dy: &mut [f32],
    dw: &mut [f32],
    db: Option<&mut [f32]>,
    eps: f32,
) {
    let width = w.len();
    norm_backward(x, dy, width, dw, db, |x, d, part| {
        layer_norm_row_backward(x, w, d, part, eps)
    });
}

avx512_dispatch!(
    fn layer_norm_row_backward(x: &[f32], w: &[f32], d: &mut [f32], part: &mut [f32], eps: f32) {
        let width = w.len();
        let n = width as f32;
        let mean = lane_sum(x, |v| v) / n;
        let var = lane_sum(x, |v| (v - mean) * (v - mean)) / n;
        let rstd = 1.0 / (var + eps).sqrt();
        let (pw, pb) = part.split_at_mut(width);
        let (mut sum, mut sum_x) = ([0.0f32; 16], [0.0f32; 16]);
        for (j, ((dv, xv), wv)) in d.iter().zip(x).zip(w).enumerate() {
            let xh = (xv - mean) * rstd;
            pw[j] += dv * xh;
            pb[j] += dv;
            let g = dv * wv;
            sum[j % 16] += g;
            sum_x[j % 16] += g * xh;
        }
        let mean_g = sum.iter().sum::<f32>() / n;
        let mean_gx = sum_x.iter().sum::<f32>() / n;
        for ((dv, xv), wv) in d.iter_mut().zip(x).zip(w) {
            let xh = (xv - mean) * rstd;
            *dv = rstd * (*dv * wv - mean_g - xh * mean_gx);
        }
    }
);

/// The backward pass of [`rms_norm`] on the rows `x`: `dy` holds the output
/// gradient and gets the input gradient
/// `inv * (g - xhat * mean(g * xhat))`, `g = dy * w`, `xhat = x * inv`;
/// the weight gradient is added into `dw`.
pub fn rms_norm_backward(x: &[f32], w: &[f32], dy: &mut [f32], dw: &mut [f32], eps: f32) {
    let width = w.len();
    norm_backward(x, dy, width, dw, None, |x, d, part| {
        rms_norm_row_backward(x, w, d, part, eps)
    });
}

avx512_dispatch!(
    fn rms_norm_row_backward(x: &[f32], w: &[f32], d: &mut [f32], part: &mut [f32], eps: f32) {
        let n = w.len() as f32;
        let inv = 1.0 / (lane_sum(x, |v| v * v) / n + eps).sqrt();
        let mut sum_x = [0.0f32; 16];
        for (j, ((dv, xv), wv)) in d.iter().zip(x).zip(w).enumerate() {
            let xh = xv * inv;
            part[j] += dv * xh;
            sum_x[j % 16] += dv * wv * xh;
        }
        let mean_gx = sum_x.iter().sum::<f32>() / n;
        for ((dv, xv), wv) in d.iter_mut().zip(x).zip(w) {
            *dv = inv * (*dv * wv - xv * inv * mean_gx);
        }
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks a norm's backward pass against central differences of
    /// `sum(norm(x) * r)` (in float64 sums of float32 runs).
    fn check_backward(
        forward: impl Fn(&mut [f32], &[f32], &[f32]),
        backward: impl Fn(&[f32], &[f32], &mut [f32], &mut [f32], &mut [f32]),
    ) {
        let (rows, width) = (130, 20);
        let x: Vec<f32> = (0..rows * width)
            .map(|i| ((i * 7919) % 103) as f32 / 40.0 - 1.2)
            .collect();
        let w: Vec<f32> = (0..width).map(|i| 0.5 + i as f32 / 17.0).collect();
        let b: Vec<f32> = (0..width).map(|i| i as f32 / 31.0 - 0.3).collect();
        let r: Vec<f32> = (0..rows * width)
            .map(|i| ((i * 31) % 13) as f32 / 6.0 - 1.0)
            .collect();
        let loss = |x: &[f32], w: &[f32], b: &[f32]| -> f64 {
            let mut y = x.to_vec();
            forward(&mut y, w, b);
            y.iter()
                .zip(&r)
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum()
        };
        let mut dx = r.clone();
        let (mut dw, mut db) = (vec![0.0; width], vec![0.0; width]);
        backward(&x, &w, &mut dx, &mut dw, &mut db);
        let eps = 1e-2f32;
        let fd = |f: &dyn Fn(f32) -> f64| (f(eps) - f(-eps)) / f64::from(2.0 * eps);
        for i in (0..x.len()).step_by(7) {
            let got = fd(&|e| {
                let mut xp = x.clone();
                xp[i] += e;
                loss(&xp, &w, &b)
            });
            assert!(
                (got - f64::from(dx[i])).abs() < 2e-3,
                "dx[{i}]: {} vs {got}",
                dx[i]
            );
        }
        for j in 0..width {
            let got = fd(&|e| {
                let mut wp = w.clone();
                wp[j] += e;
                loss(&x, &wp, &b)
            });
            assert!(
                (got - f64::from(dw[j])).abs() < 2e-2,
                "dw[{j}]: {} vs {got}",
                dw[j]
            );
            let got = fd(&|e| {
                let mut bp = b.clone();
                bp[j] += e;
                loss(&x, &w, &bp)
            });
            assert!(
                (got - f64::from(db[j])).abs() < 2e-2,
                "db[{j}]: {} vs {got}",
                db[j]
            );
        }
    }

    #[test]
    fn layer_norm_backward_matches_finite_differences() {
        check_backward(
            |x, w, b| layer_norm(x, w, Some(b), 1e-5),
            |x, w, d, dw, db| layer_norm_backward(x, w, d, dw, Some(db), 1e-5),
        );
    }

    #[test]
    fn rms_norm_backward_matches_finite_differences() {
        // The bias is not part of an RMS norm: its gradient stays 0 and the
        // loss does not depend on it.
        check_backward(
            |x, w, _| rms_norm(x, w, 1e-6),
            |x, w, d, dw, _| rms_norm_backward(x, w, d, dw, 1e-6),
        );
    }

    #[test]
    fn norm_backward_does_not_depend_on_threads() {
        let (rows, width) = (300, 48);
        let x: Vec<f32> = (0..rows * width).map(|i| (i as f32 * 0.37).sin()).collect();
        let w: Vec<f32> = (0..width).map(|i| 1.0 + i as f32 / 50.0).collect();
        let run = |t| {
            crate::linalg::set_threads(t);
            let mut d: Vec<f32> = (0..rows * width).map(|i| (i as f32 * 0.11).cos()).collect();
            let (mut dw, mut db) = (vec![0.0; width], vec![0.0; width]);
            layer_norm_backward(&x, &w, &mut d, &mut dw, Some(&mut db), 1e-12);
            crate::linalg::set_threads(1);
            (d, dw, db)
        };
        assert_eq!(run(1), run(2));
    }

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
