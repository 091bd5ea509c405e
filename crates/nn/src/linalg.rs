//! Matrix products over `gemm` (AVX-512 kernels where the CPU has them) and
//! the few vector kernels the towers need.
//!
//! `gemm` splits work over output blocks only, never over the inner
//! dimension, so every element is reduced in the same order whatever the
//! number of threads: training is bitwise reproducible.

use std::sync::atomic::{AtomicUsize, Ordering};

static THREADS: AtomicUsize = AtomicUsize::new(1);

/// Sets the number of threads matrix products use (at least 1).
pub fn set_threads(n: usize) {
    THREADS.store(n.max(1), Ordering::Relaxed);
}

/// The number of threads matrix products use.
pub fn threads() -> usize {
    THREADS.load(Ordering::Relaxed)
}

/// A row-major matrix operand: `rows x cols` starting at `data[0]`, rows
/// `stride` elements apart; `t` reads it transposed.
#[derive(Clone, Copy)]
pub struct Mat<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    stride: usize,
    t: bool,
}

impl<'a> Mat<'a> {
    /// A dense `rows x cols` matrix.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Mat<'a> {
        Mat::strided(data, rows, cols, cols)
    }

    /// A `rows x cols` matrix whose rows are `stride` elements apart.
    pub fn strided(data: &'a [f32], rows: usize, cols: usize, stride: usize) -> Mat<'a> {
        assert!(
            rows == 0 || data.len() >= (rows - 1) * stride + cols,
            "matrix of {rows}x{cols} (stride {stride}) over {} elements",
            data.len()
        );
        Mat {
            data,
            rows,
            cols,
            stride,
            t: false,
        }
    }

    /// The transpose (no copy).
    pub fn t(self) -> Mat<'a> {
        Mat { t: !self.t, ..self }
    }

    fn shape(&self) -> (usize, usize) {
        if self.t {
            (self.cols, self.rows)
        } else {
            (self.rows, self.cols)
        }
    }

    /// (column stride, row stride) of the logical matrix.
    fn strides(&self) -> (isize, isize) {
        if self.t {
            (self.stride as isize, 1)
        } else {
            (1, self.stride as isize)
        }
    }
}

/// `c = beta * c + a * b`, `c` dense row-major `m x n`; `beta` is 0 or 1
/// (0 overwrites, so `c` may hold garbage).
pub fn matmul(c: &mut [f32], a: Mat<'_>, b: Mat<'_>, beta: f32) {
    matmul_on(c, a, b, beta, threads());
}

/// [`matmul`] on `threads` threads (1 inside work that is already split
/// over threads); the result does not depend on it.
pub fn matmul_on(c: &mut [f32], a: Mat<'_>, b: Mat<'_>, beta: f32, threads: usize) {
    let n = b.shape().1;
    assert_eq!(
        c.len(),
        a.shape().0 * n,
        "output of {} elements for {}x{n}",
        c.len(),
        a.shape().0
    );
    matmul_strided(c, n, a, b, beta, threads);
}

/// [`matmul_on`] into an output whose rows are `ldc` elements apart (the
/// columns between are left alone): `c` holds `m` rows of `n` starting at
/// `c[0]`, `c[ldc]`, ...
pub fn matmul_strided(
    c: &mut [f32],
    ldc: usize,
    a: Mat<'_>,
    b: Mat<'_>,
    beta: f32,
    threads: usize,
) {
    let (m, k) = a.shape();
    let (k2, n) = b.shape();
    assert_eq!(k, k2, "inner dimensions {k} and {k2} differ");
    assert!(
        m == 0 || (ldc >= n && c.len() >= (m - 1) * ldc + n),
        "output of {} elements for {m}x{n} (stride {ldc})",
        c.len()
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if beta == 0.0 {
            for row in c.chunks_mut(ldc).take(m) {
                row[..n].fill(0.0);
            }
        }
        return;
    }
    let (acs, ars) = a.strides();
    let (bcs, brs) = b.strides();
    let par = match threads {
        1 => gemm::Parallelism::None,
        t => gemm::Parallelism::Rayon(t),
    };
    // SAFETY: the shapes and strides were checked against the slice lengths
    // in `Mat::strided` and above; gemm reads a and b and writes c only
    // inside those bounds.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            ldc as isize,
            beta != 0.0,
            a.data.as_ptr(),
            acs,
            ars,
            b.data.as_ptr(),
            bcs,
            brs,
            beta,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

/// Adds `bias` to every row of the `rows x bias.len()` matrix `x`.
pub fn add_bias(x: &mut [f32], bias: &[f32]) {
    for row in x.chunks_exact_mut(bias.len()) {
        for (v, b) in row.iter_mut().zip(bias) {
            *v += b;
        }
    }
}

/// Adds the column sums of the `rows x out.len()` matrix `x` to `out`.
pub fn add_col_sums(out: &mut [f32], x: &[f32]) {
    for row in x.chunks_exact(out.len()) {
        for (o, v) in out.iter_mut().zip(row) {
            *o += v;
        }
    }
}

/// Dot product with four accumulators (vectorises).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let mut ca = a.chunks_exact(16);
    let mut cb = b.chunks_exact(16);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for j in 0..16 {
            acc[j] += x[j] * y[j];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        s += x * y;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    fn transpose(x: &[f32], r: usize, c: usize) -> Vec<f32> {
        let mut t = vec![0.0; r * c];
        for i in 0..r {
            for j in 0..c {
                t[j * r + i] = x[i * c + j];
            }
        }
        t
    }

    #[test]
    fn matmul_matches_naive_in_every_transpose() {
        let (m, k, n) = (5, 7, 3);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos()).collect();
        let want = naive(&a, &b, m, k, n);
        let at = transpose(&a, m, k);
        let bt = transpose(&b, k, n);
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let am = if ta {
                Mat::new(&at, k, m).t()
            } else {
                Mat::new(&a, m, k)
            };
            let bm = if tb {
                Mat::new(&bt, n, k).t()
            } else {
                Mat::new(&b, k, n)
            };
            let mut c = vec![1.0; m * n];
            matmul(&mut c, am, bm, 1.0);
            for (x, w) in c.iter().zip(&want) {
                assert!((x - 1.0 - w).abs() < 1e-5, "{ta} {tb}: {x} vs {w}");
            }
            matmul(&mut c, am, bm, 0.0);
            for (x, w) in c.iter().zip(&want) {
                assert!((x - w).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn strided_rows_skip_the_gap() {
        // rows 0 and 2 of a 3x2 matrix, read with stride 4
        let a = [1.0, 2.0, 9.0, 9.0, 3.0, 4.0];
        let b = [1.0, 0.0, 0.0, 1.0];
        let mut c = vec![0.0; 4];
        matmul(&mut c, Mat::strided(&a, 2, 2, 4), Mat::new(&b, 2, 2), 0.0);
        assert_eq!(c, vec![1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn results_do_not_depend_on_threads() {
        let (m, k, n) = (64, 300, 200);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.013).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.007).cos()).collect();
        let mut one = vec![0.0; m * n];
        let mut four = vec![0.0; m * n];
        set_threads(1);
        matmul(&mut one, Mat::new(&a, m, k), Mat::new(&b, k, n), 0.0);
        set_threads(4);
        matmul(&mut four, Mat::new(&a, m, k), Mat::new(&b, k, n), 0.0);
        set_threads(1);
        assert_eq!(one, four);
    }
}
