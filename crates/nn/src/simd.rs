//! Hand-vectorised kernels: runtime AVX-512 detection, a small-`m` matrix
//! product whose every element is one product chain in a fixed order (so
//! splitting the columns over threads cannot change a bit), vectorisable
//! `exp`/`sigmoid`/`tanh`, and the fixed partition of work over threads.

use std::ops::Range;

use rayon::prelude::*;

use crate::linalg::threads;

/// Whether the CPU has AVX-512F (`std` caches the answer).
#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn has_avx512() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

/// Defines `fn $name(args) body` that runs `body` compiled for AVX-512F
/// when the CPU has it, else as portable code. `body` must be plain
/// arithmetic (Rust never contracts `a * b + c` into an FMA), so both
/// versions compute the same bits.
macro_rules! avx512_dispatch {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn portable($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f")]
            fn avx512($($arg: $ty),*) $(-> $ret)? {
                portable($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            if $crate::simd::has_avx512() {
                // SAFETY: the CPU supports AVX-512F (checked above).
                return unsafe { avx512($($arg),*) };
            }
            portable($($arg),*)
        }
    };
}
pub(crate) use avx512_dispatch;

/// Units of work are whole multiples of this many columns.
const GRAIN: usize = 16;

/// A fixed partition of `0..n` into at most `threads()` contiguous ranges
/// (multiples of 16 but the last), chosen once so that a layout written in
/// one parallel pass is read with the same split in the next.
#[derive(Clone, Copy)]
pub(crate) struct Parts {
    n: usize,
    parts: usize,
}

impl Parts {
    /// Splits `0..n` for the current thread count.
    pub(crate) fn new(n: usize) -> Parts {
        let chunks = n.div_ceil(GRAIN);
        Parts {
            n,
            parts: threads().min(chunks).max(1),
        }
    }

    /// Runs `f` on every range, in parallel.
    pub(crate) fn run(self, f: impl Fn(Range<usize>) + Sync) {
        let chunks = self.n.div_ceil(GRAIN);
        let bound = |i: usize| (i * chunks / self.parts * GRAIN).min(self.n);
        if self.parts == 1 {
            f(0..self.n);
        } else {
            (0..self.parts)
                .into_par_iter()
                .for_each(|i| f(bound(i)..bound(i + 1)));
        }
    }
}

/// A pointer that threads share; each writes only its own elements.
#[derive(Clone, Copy)]
pub(crate) struct Shared(*mut f32);

// SAFETY: `Shared` is only dereferenced through `Shared::span`, whose
// callers guarantee that no two threads touch the same elements.
unsafe impl Send for Shared {}
// SAFETY: as above.
unsafe impl Sync for Shared {}

impl Shared {
    /// Shares `data`.
    pub(crate) fn new(data: &mut [f32]) -> Shared {
        Shared(data.as_mut_ptr())
    }

    /// The raw pointer.
    pub(crate) fn ptr(self) -> *mut f32 {
        self.0
    }

    /// `len` elements from `at`.
    ///
    /// # Safety
    /// `at + len` is within the shared slice, which outlives `'a`, and no
    /// other live reference (in any thread) overlaps the span.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn span<'a>(self, at: usize, len: usize) -> &'a mut [f32] {
        // SAFETY: guaranteed by the caller.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(at), len) }
    }
}

/// A row-major operand of [`small_gemm`]: element `(i, j)` at
/// `ptr + i * stride + j`.
#[derive(Clone, Copy)]
pub(crate) struct Raw {
    pub(crate) ptr: *const f32,
    pub(crate) stride: usize,
}

/// Columns per panel of a packed right operand.
pub(crate) const PANEL: usize = 48;

/// Packs the `k x n` matrix `b(p, j)` into `dst` (`k * n` floats) as panels
/// of 48 columns (the last one narrower), each row-major with its own
/// width: the layout [`small_gemm`] reads.
pub(crate) fn pack_panels(dst: &mut [f32], k: usize, n: usize, b: impl Fn(usize, usize) -> f32) {
    assert_eq!(dst.len(), k * n, "packed size of {k} x {n}");
    let mut j0 = 0;
    while j0 < n {
        let nb = (n - j0).min(PANEL);
        for (p, row) in dst[j0 * k..(j0 + nb) * k].chunks_exact_mut(nb).enumerate() {
            for (jj, v) in row.iter_mut().enumerate() {
                *v = b(p, j0 + jj);
            }
        }
        j0 += nb;
    }
}

/// `c[i][j] = (accumulate ? c[i][j] : 0) + sum_p a[i][p] * b[p][j]` for
/// `i < m`, `j < n`, `p < k`, `b` packed by [`pack_panels`]; the sum is one
/// chain in order of `p`, so the value of an element does not depend on
/// how the columns are split.
///
/// # Safety
/// `a` is readable `m x k`, `b` readable `k * n` floats, `c` writable
/// `m x n` (with its stride); `c` overlaps neither and no other thread
/// touches its elements meanwhile.
pub(crate) unsafe fn small_gemm(
    m: usize,
    n: usize,
    k: usize,
    a: Raw,
    b: *const f32,
    c: Raw,
    accumulate: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: AVX-512F is present; the bounds are the caller's.
        unsafe { avx512::gemm(m, n, k, a, b, c, accumulate) };
        return;
    }
    let c_ptr = c.ptr as *mut f32;
    let mut row = [0.0f32; PANEL];
    let mut j0 = 0;
    while j0 < n {
        let nb = (n - j0).min(PANEL);
        let row = &mut row[..nb];
        for i in 0..m {
            row.fill(0.0);
            for p in 0..k {
                // SAFETY: in bounds by the caller's contract.
                let (av, brow) = unsafe {
                    (
                        *a.ptr.add(i * a.stride + p),
                        std::slice::from_raw_parts(b.add(j0 * k + p * nb), nb),
                    )
                };
                for (r, bv) in row.iter_mut().zip(brow) {
                    *r += av * bv;
                }
            }
            // SAFETY: in bounds and exclusive by the caller's contract.
            let out = unsafe { std::slice::from_raw_parts_mut(c_ptr.add(i * c.stride + j0), nb) };
            for (o, r) in out.iter_mut().zip(row.iter()) {
                *o = if accumulate { *o + r } else { *r };
            }
        }
        j0 += nb;
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{Raw, PANEL as NR};

    /// Rows per register tile (of three 16-float columns).
    const MR: usize = 8;

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn gemm(
        m: usize,
        n: usize,
        k: usize,
        a: Raw,
        b: *const f32,
        c: Raw,
        acc: bool,
    ) {
        let mut j0 = 0;
        while j0 < n {
            let nb = (n - j0).min(NR);
            let mask = |q: usize| -> __mmask16 {
                let w = nb.saturating_sub(16 * q).min(16);
                ((1u32 << w) - 1) as __mmask16
            };
            let masks = [mask(0), mask(1), mask(2)];
            let mut i0 = 0;
            while i0 < m {
                let mb = (m - i0).min(MR);
                // SAFETY: the tile lies inside the caller's bounds.
                unsafe {
                    let at = Raw {
                        ptr: a.ptr.add(i0 * a.stride),
                        stride: a.stride,
                    };
                    let bt = Raw {
                        ptr: b.add(j0 * k),
                        stride: nb,
                    };
                    let ct = Raw {
                        ptr: c.ptr.add(i0 * c.stride + j0),
                        stride: c.stride,
                    };
                    match mb {
                        8 => tile::<8>(k, at, bt, ct, masks, acc),
                        7 => tile::<7>(k, at, bt, ct, masks, acc),
                        6 => tile::<6>(k, at, bt, ct, masks, acc),
                        5 => tile::<5>(k, at, bt, ct, masks, acc),
                        4 => tile::<4>(k, at, bt, ct, masks, acc),
                        3 => tile::<3>(k, at, bt, ct, masks, acc),
                        2 => tile::<2>(k, at, bt, ct, masks, acc),
                        _ => tile::<1>(k, at, bt, ct, masks, acc),
                    }
                }
                i0 += mb;
            }
            j0 += nb;
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn tile<const R: usize>(
        k: usize,
        a: Raw,
        b: Raw,
        c: Raw,
        masks: [__mmask16; 3],
        acc: bool,
    ) {
        let mut s = [[_mm512_setzero_ps(); 3]; R];
        // SAFETY (whole body): masked loads and stores touch only the
        // columns < nb of rows < R, inside the caller's bounds.
        unsafe {
            for p in 0..k {
                let bp = b.ptr.add(p * b.stride);
                let b0 = _mm512_maskz_loadu_ps(masks[0], bp);
                let b1 = _mm512_maskz_loadu_ps(masks[1], bp.add(16));
                let b2 = _mm512_maskz_loadu_ps(masks[2], bp.add(32));
                for (r, s) in s.iter_mut().enumerate() {
                    let av = _mm512_set1_ps(*a.ptr.add(r * a.stride + p));
                    s[0] = _mm512_fmadd_ps(av, b0, s[0]);
                    s[1] = _mm512_fmadd_ps(av, b1, s[1]);
                    s[2] = _mm512_fmadd_ps(av, b2, s[2]);
                }
            }
            let cp = c.ptr as *mut f32;
            for (r, s) in s.iter().enumerate() {
                for q in 0..3 {
                    if masks[q] == 0 {
                        continue;
                    }
                    let at = cp.add(r * c.stride + 16 * q);
                    let v = if acc {
                        _mm512_add_ps(_mm512_maskz_loadu_ps(masks[q], at), s[q])
                    } else {
                        s[q]
                    };
                    _mm512_mask_storeu_ps(at, masks[q], v);
                }
            }
        }
    }
}

/// `exp(x)` to about 2e-7 relative (Cephes' `expf`: `x = n ln 2 + r`,
/// a degree-6 polynomial in `r`); inputs are clamped to `[-87, 88]`.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    let x = x.clamp(-87.0, 88.0);
    let n = (x * std::f32::consts::LOG2_E + MAGIC) - MAGIC;
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let mut y = 1.987_569_1e-4;
    y = y * r + 1.398_199_9e-3;
    y = y * r + 8.333_452e-3;
    y = y * r + 4.166_579_6e-2;
    y = y * r + 1.666_666_5e-1;
    y = y * r + 5e-1;
    y = y * r * r + r + 1.0;
    // 2^n from the bits of n + 127 + MAGIC, whose low mantissa bits hold the
    // integer n + 127 (no float-to-int cast: those do not vectorise)
    y * f32::from_bits((n + (MAGIC + 127.0)).to_bits() << 23)
}

/// The logistic function, `1 / (1 + exp(-x))`.
#[inline(always)]
pub(crate) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// `tanh(x)` to about 3e-7 relative: Cephes' odd polynomial below 0.625,
/// `1 - 2 / (exp(2|x|) + 1)` with the sign of `x` above.
#[inline(always)]
pub(crate) fn tanh(x: f32) -> f32 {
    let z = x * x;
    let mut p = -5.704_988_7e-3;
    p = p * z + 2.063_909e-2;
    p = p * z - 5.373_971_6e-2;
    p = p * z + 1.333_144_2e-1;
    p = p * z - 3.333_328e-1;
    let small = p * z * x + x;
    let ax = x.abs();
    let big = (1.0 - 2.0 / (exp(2.0 * ax) + 1.0)).copysign(x);
    if ax < 0.625 {
        small
    } else {
        big
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_sigmoid_tanh_are_accurate() {
        let mut worst = [0.0f64; 3];
        for i in -200_000..=200_000 {
            let x = i as f32 * 1e-4 * if i % 7 == 0 { 0.01 } else { 1.0 };
            let xd = f64::from(x);
            let rel = |got: f32, want: f64| (f64::from(got) - want).abs() / want.abs().max(1e-30);
            worst[0] = worst[0].max(rel(exp(x), xd.exp()));
            worst[1] = worst[1].max(rel(sigmoid(x), 1.0 / (1.0 + (-xd).exp())));
            if x != 0.0 {
                worst[2] = worst[2].max(rel(tanh(x), xd.tanh()));
            }
        }
        assert!(worst.iter().all(|&w| w < 1e-6), "relative errors {worst:?}");
        assert_eq!(tanh(0.0), 0.0);
        assert_eq!(tanh(50.0), 1.0);
        assert_eq!(tanh(-50.0), -1.0);
        assert!(sigmoid(-100.0) >= 0.0 && sigmoid(100.0) == 1.0);
        assert!(exp(100.0).is_finite());
    }

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    #[test]
    fn small_gemm_matches_naive_and_column_splits() {
        let (m, k, n) = (13, 37, 101);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos()).collect();
        let want = naive(&a, &b, m, k, n);
        let ar = Raw {
            ptr: a.as_ptr(),
            stride: k,
        };
        let out = |v: &mut [f32]| Raw {
            ptr: v.as_mut_ptr(),
            stride: n,
        };
        let packed = |j0: usize, j1: usize| {
            let mut dst = vec![0.0; k * (j1 - j0)];
            pack_panels(&mut dst, k, j1 - j0, |p, j| b[p * n + j0 + j]);
            dst
        };
        let mut whole = vec![1.0f32; m * n];
        let all = packed(0, n);
        // SAFETY: every operand is exactly its shape.
        unsafe { small_gemm(m, n, k, ar, all.as_ptr(), out(&mut whole), true) };
        for (x, w) in whole.iter().zip(&want) {
            assert!((x - 1.0 - w).abs() < 1e-4, "{x} vs {w}");
        }
        // Any split of the columns gives the same bits.
        let mut split = vec![1.0f32; m * n];
        for (j0, j1) in [(0, 17), (17, 64), (64, 101)] {
            let part = packed(j0, j1);
            // SAFETY: the column block lies inside every operand.
            unsafe {
                small_gemm(
                    m,
                    j1 - j0,
                    k,
                    ar,
                    part.as_ptr(),
                    out(&mut split[j0..]),
                    true,
                )
            };
        }
        assert_eq!(whole, split);
        // SAFETY: as above.
        unsafe { small_gemm(m, n, k, ar, all.as_ptr(), out(&mut split), false) };
        for (x, w) in split.iter().zip(&want) {
            assert!((x - w).abs() < 1e-4);
        }
    }
}
