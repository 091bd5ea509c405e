//! bfloat16 matrix products with float32 accumulation, for inference of the
//! linear layers of text encoders (`--precision bf16`).
//!
//! [`linear_bf16`] computes `y = bf16(x) · bf16(W)ᵀ + bias`: both operands
//! are rounded to bfloat16 (round to nearest, ties to even), every product
//! of two bfloat16 values is exact in float32, the products are summed in
//! float32 and the bias is added in float32. Two paths, chosen at run time:
//!
//! - `avx512bf16`: `vdpbf16ps` (AVX512-BF16) on register tiles of 8 rows by
//!   48 columns, the inner dimension cut into blocks of at most [`KC`]
//!   pairs so that the slab of weights the tiles of a block share stays in
//!   L1 (48 KiB on Sapphire Rapids and Zen 5);
//! - `portable`: the same arithmetic in plain Rust (compiled for AVX-512F
//!   or AVX2 too when the CPU has them), for every other CPU and target.
//!
//! AMX (`tdpbf16ps`) is not implemented: [`bf16_kernel`] never answers
//! `"amx"` yet. A third path slots in as another `Path` and must pass the
//! tests below (reference, rounding, thread count).
//!
//! A packed weight is a run of panels of 16 output columns; inside a panel,
//! each pair of inputs `(2p, 2p + 1)` is one 64-byte line of 16 `u32`, the
//! low half `W[j][2p]` and the high half `W[j][2p + 1]` for the 16 columns
//! `j`: the operand layout of `vdpbf16ps`. Missing columns and the missing
//! last input of an odd `inp` are zeros.
//!
//! Every output element is one chain over the inner dimension in order of
//! the pairs (partial sums between blocks of [`KC`] pairs pass through `y`
//! as float32, unchanged), and work is split over rows, or over panels of
//! columns when there are few rows, never over the inner dimension: the
//! thread count does not change a bit.

use std::ops::Range;

use crate::linalg::threads;
use crate::simd::{Parts, Shared};

/// Output columns per panel (one 512-bit vector of f32).
const LANES: usize = 16;
/// Rows of `x` rounded to bfloat16 at a time (a multiple of every tile
/// height).
const MC: usize = 64;
/// The most pairs of inputs per block of the inner dimension: 36 KiB of
/// weights per group of three panels.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const KC: usize = 192;

/// Which bf16 path the CPU runs: "amx", "avx512bf16" or "portable".
///
/// This build has no AMX path, so the answer is `"avx512bf16"` on CPUs
/// with AVX-512F and AVX512-BF16 (Sapphire Rapids and later, Zen 4 and
/// later) and `"portable"` elsewhere.
pub fn bf16_kernel() -> &'static str {
    Path::best().name()
}

/// Whether this CPU has native bf16 dot products (AMX or AVX512-BF16).
///
/// Without them [`linear_bf16`] still works (the portable path) but is
/// slower than the float32 product: callers should prefer float32 then.
pub fn has_native_bf16() -> bool {
    Path::best() != Path::Portable
}

/// A 64-byte line: 16 pairs of bfloat16, one pair of inputs of one panel.
#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
struct Line([u32; LANES]);

/// A weight matrix W [out, inp] (PyTorch Linear layout, row-major f32)
/// rounded to bfloat16 (round-to-nearest-even) and packed for the kernel.
///
/// It takes `out.next_multiple_of(16) * inp.next_multiple_of(2) * 2` bytes
/// (about half the float32 matrix), 64-byte aligned.
#[derive(Clone)]
pub struct PackedBf16 {
    lines: Vec<Line>,
    out: usize,
    inp: usize,
}

impl std::fmt::Debug for PackedBf16 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedBf16")
            .field("out", &self.out)
            .field("inp", &self.inp)
            .finish_non_exhaustive()
    }
}

impl PackedBf16 {
    /// Rounds `w` (`out x inp`, row-major) to bfloat16 and packs it.
    ///
    /// One pass over `w` on the calling thread; pack once per model load.
    pub fn pack(w: &[f32], out: usize, inp: usize) -> PackedBf16 {
        assert_eq!(
            w.len(),
            out * inp,
            "weight of {} elements for {out}x{inp}",
            w.len()
        );
        let kp = inp.div_ceil(2);
        let mut lines = vec![Line::default(); out.div_ceil(LANES) * kp];
        if kp > 0 {
            for (g, panel) in lines.chunks_exact_mut(kp).enumerate() {
                for j in 0..LANES.min(out - g * LANES) {
                    let row = &w[(g * LANES + j) * inp..][..inp];
                    for (p, line) in panel.iter_mut().enumerate() {
                        line.0[j] = pair(row, p);
                    }
                }
            }
        }
        PackedBf16 { lines, out, inp }
    }

    /// The number of outputs (rows of W).
    pub fn out(&self) -> usize {
        self.out
    }

    /// The number of inputs (columns of W).
    pub fn inp(&self) -> usize {
        self.inp
    }

    /// The panels, as the kernels read them.
    fn panels(&self) -> Panels<'_> {
        Panels {
            lines: &self.lines,
            out: self.out,
            inp: self.inp,
        }
    }
}

/// The right operand of the kernels: `out` columns of `inp` inputs as
/// panels of pairs of bfloat16 (the layout of [`PackedBf16`]), borrowed
/// from a packed weight or from an attention head's scratch ([`Operands`]).
#[derive(Clone, Copy)]
struct Panels<'a> {
    lines: &'a [Line],
    out: usize,
    inp: usize,
}

impl Panels<'_> {
    /// Pairs of inputs: the length of a panel in lines.
    fn pairs(&self) -> usize {
        self.inp.div_ceil(2)
    }
}

/// y [n, out] = bf16(x) [n, inp] · bf16(W)ᵀ, accumulated in f32, plus bias
/// (added in f32) when given. `y` is overwritten.
///
/// Runs on `crate::linalg::threads()` threads; the result does not depend
/// on their number. Allocates at most `64 * inp.next_multiple_of(32) * 2`
/// bytes per thread for the rounded rows of `x`.
pub fn linear_bf16(y: &mut [f32], x: &[f32], n: usize, w: &PackedBf16, bias: Option<&[f32]>) {
    linear(Path::best(), y, x, n, w, bias);
}

/// A way to compute [`linear_bf16`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    /// Plain Rust.
    Portable,
    /// `vdpbf16ps` (AVX-512F + AVX512-BF16).
    #[cfg(target_arch = "x86_64")]
    Avx512Bf16,
}

impl Path {
    /// Every path compiled in, fastest first.
    const ALL: &'static [Path] = &[
        #[cfg(target_arch = "x86_64")]
        Path::Avx512Bf16,
        Path::Portable,
    ];

    /// Whether this CPU runs the path.
    fn available(self) -> bool {
        match self {
            Path::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Path::Avx512Bf16 => x86::has_avx512bf16(),
        }
    }

    /// The fastest path this CPU runs.
    fn best() -> Path {
        let mut paths = Path::ALL.iter().copied();
        paths.find(|p| p.available()).unwrap_or(Path::Portable)
    }

    /// The name [`bf16_kernel`] reports.
    fn name(self) -> &'static str {
        match self {
            Path::Portable => "portable",
            #[cfg(target_arch = "x86_64")]
            Path::Avx512Bf16 => "avx512bf16",
        }
    }
}

/// [`linear_bf16`] on `path`, which the CPU must support.
fn linear(path: Path, y: &mut [f32], x: &[f32], n: usize, w: &PackedBf16, bias: Option<&[f32]>) {
    let (out, inp) = (w.out, w.inp);
    assert_eq!(
        x.len(),
        n * inp,
        "input of {} elements for {n}x{inp}",
        x.len()
    );
    assert_eq!(
        y.len(),
        n * out,
        "output of {} elements for {n}x{out}",
        y.len()
    );
    if let Some(b) = bias {
        assert_eq!(
            b.len(),
            out,
            "bias of {} elements for {out} outputs",
            b.len()
        );
    }
    if n == 0 || out == 0 {
        return;
    }
    if inp == 0 {
        for row in y.chunks_exact_mut(out) {
            match bias {
                Some(b) => row.copy_from_slice(b),
                None => row.fill(0.0),
            }
        }
        return;
    }
    let y = Shared::new(y);
    let job = |rows: Range<usize>, cols: Range<usize>| {
        debug_assert!(
            cols.start.is_multiple_of(LANES),
            "column split inside a panel"
        );
        let panels = cols.start / LANES..cols.end.div_ceil(LANES);
        // SAFETY: `y` holds `n x out` floats and outlives the jobs; the
        // ranges `Parts` hands out are disjoint and (for columns) whole
        // panels, so no two jobs write the same element.
        unsafe { block(path, y, x, rows, panels, w, bias) };
    };
    if n >= LANES * threads() {
        Parts::new(n).run(|rows| job(rows, 0..out));
    } else {
        Parts::new(out).run(|cols| job(0..n, cols));
    }
}

/// Computes the rows `rows` and the panels `panels` of `y`.
///
/// # Safety
/// `y` points to `n x w.out` floats, `n = x.len() / w.inp`, `rows` within
/// `0..n`, `panels` within the panels of `w`; no other thread touches those
/// elements meanwhile. `path` runs on this CPU.
unsafe fn block(
    path: Path,
    y: Shared,
    x: &[f32],
    rows: Range<usize>,
    panels: Range<usize>,
    w: &PackedBf16,
    bias: Option<&[f32]>,
) {
    let (inp, out) = (w.inp, w.out);
    let xs = w.panels().pairs().next_multiple_of(LANES);
    // Whole tiles of the portable path (which reads past the last row).
    let mut xb = vec![0u32; rows.len().min(MC).next_multiple_of(portable::MR) * xs];
    let mut r0 = rows.start;
    while r0 < rows.end {
        let m = (rows.end - r0).min(MC);
        let xr = &x[r0 * inp..(r0 + m) * inp];
        // SAFETY: row `r0 < n` of `y`; the callee writes only the caller's
        // elements.
        let yr = unsafe { y.ptr().add(r0 * out) };
        match path {
            Path::Portable => {
                portable::convert(&mut xb, xs, xr, m, inp, inp);
                let xr = Rounded {
                    pairs: &xb,
                    stride: xs,
                    rows: m,
                };
                // SAFETY: the caller's contract, for `m` rows from `r0`.
                unsafe { portable::gemm(yr, out, xr, w.panels(), panels.clone(), bias) };
            }
            #[cfg(target_arch = "x86_64")]
            Path::Avx512Bf16 => {
                let next = &x[(r0 + m) * inp..(r0 + m + MC).min(rows.end) * inp];
                // SAFETY: the caller's contract, for `m` rows from `r0`, and
                // the CPU has AVX-512F and AVX512-BF16 (`path`).
                unsafe {
                    x86::convert(&mut xb, xs, xr, m, inp, inp);
                    let xr = Rounded {
                        pairs: &xb,
                        stride: xs,
                        rows: m,
                    };
                    x86::gemm(yr, out, xr, w.panels(), panels.clone(), bias, next);
                }
            }
        }
        r0 += m;
    }
}

/// Matrix products of activations in bfloat16 with float32 accumulation,
/// on the calling thread: attention's `q kᵀ` and `p v` (`--precision
/// bf16`, inference). Each is a [`linear_bf16`] product without bias whose
/// right operand is packed from activations rather than a weight, so the
/// arithmetic is the same (operands rounded to nearest even, exact
/// products, float32 sums in order of the pairs). The buffers are kept from
/// one product to the next.
pub(crate) struct Products {
    path: Path,
    /// The left operand, rounded.
    left: Vec<u32>,
    /// The right operand, packed.
    right: Vec<Line>,
    /// The rows of the right operand rounded before they are transposed
    /// into panels (the AVX512-BF16 path of [`Products::nt`]).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    rows: Vec<u32>,
}

impl Products {
    /// Empty buffers, for the fastest path this CPU runs.
    pub(crate) fn new() -> Products {
        Products::on(Path::best())
    }

    fn on(path: Path) -> Products {
        Products {
            path,
            left: Vec::new(),
            right: Vec::new(),
            rows: Vec::new(),
        }
    }

    /// `y[i][j] = sum_p bf16(a[i][p]) bf16(b[j][p])` for `i < m`, `j < n`,
    /// `p < k`: `a` is `m` rows of `k` floats `lda` apart, `b` `n` rows of
    /// `k` floats `ldb` apart, the rows of `y` are `ldy` apart.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn nt(
        &mut self,
        y: &mut [f32],
        ldy: usize,
        (a, lda): (&[f32], usize),
        (b, ldb): (&[f32], usize),
        m: usize,
        n: usize,
        k: usize,
    ) {
        let kp = k.div_ceil(2);
        let lines = n.div_ceil(LANES) * kp;
        self.right.resize(lines, Line::default());
        match self.path {
            Path::Portable => {
                for (g, panel) in self.right.chunks_exact_mut(kp.max(1)).enumerate() {
                    for j in 0..LANES {
                        let r = g * LANES + j;
                        let row = (r < n).then(|| &b[r * ldb..][..k]);
                        for (p, line) in panel.iter_mut().enumerate() {
                            line.0[j] = row.map_or(0, |row| pair(row, p));
                        }
                    }
                }
            }
            #[cfg(target_arch = "x86_64")]
            Path::Avx512Bf16 => {
                let xs = kp.next_multiple_of(LANES);
                let rows = n.next_multiple_of(LANES);
                self.rows.resize(rows * xs, 0);
                // SAFETY: the CPU has AVX-512F and AVX512-BF16 (`path`);
                // `rows` holds `n` rows of `xs` pairs, `xs` a multiple of 16.
                unsafe {
                    x86::convert(&mut self.rows, xs, b, n, k, ldb);
                    // Rows past `n` give the missing columns of the last
                    // panel: zeros.
                    self.rows[n * xs..].fill(0);
                    x86::transpose(&mut self.right, &self.rows, xs, kp);
                }
            }
        }
        self.product(y, ldy, (a, lda), m, n, k);
    }

    /// Attention's `p v` for the scores `s` (`m` rows of `k` keys):
    /// `y[i] = sum_j e[i][j] bf16(b[j]) / sum_j e[i][j]`, where `e[i][j] =
    /// bf16(exp(scale * s[i][j] + bias_i[j] - max))` over the keys
    /// `lo_i..hi_i` of row `i` (`max` over them; `e` is 0 elsewhere, and a
    /// row without keys gets zeros) and `(bias_i, lo_i, hi_i) = keys(i)`.
    /// `b` is `k` rows of `n` floats `ldb` apart, the rows of `y` are `ldy`
    /// apart; `s` is used up. The softmax is float32 and its division
    /// applies to the `n` outputs of a row rather than its `k`
    /// probabilities; on AVX512-BF16 its exponential, sum and rounding are
    /// one pass over a row.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn softmax_nn<'b>(
        &mut self,
        y: &mut [f32],
        ldy: usize,
        s: &mut [f32],
        scale: f32,
        keys: impl Fn(usize) -> (Option<&'b [f32]>, usize, usize),
        (b, ldb): (&[f32], usize),
        m: usize,
        n: usize,
        k: usize,
    ) {
        if m == 0 || n == 0 {
            return;
        }
        assert!(ldy >= n && y.len() >= (m - 1) * ldy + n, "product output");
        assert_eq!(s.len(), m * k, "scores of {m} rows of {k} keys");
        let kp = k.div_ceil(2);
        self.right.resize(n.div_ceil(LANES) * kp, Line::default());
        let xs = kp.next_multiple_of(LANES);
        // Whole tiles of the portable path (which reads past the last row).
        self.left.resize(m.next_multiple_of(portable::MR) * xs, 0);
        let mut sums = vec![0.0f32; m];
        let rows = s
            .chunks_exact_mut(k.max(1))
            .zip(self.left.chunks_exact_mut(xs));
        match self.path {
            Path::Portable => {
                for (g, panel) in self.right.chunks_exact_mut(kp.max(1)).enumerate() {
                    for (p, line) in panel.iter_mut().enumerate() {
                        for (j, v) in line.0.iter_mut().enumerate() {
                            let c = g * LANES + j;
                            let at = |r: usize| {
                                if r < k && c < n {
                                    u32::from(bf16_bits(b[r * ldb + c]))
                                } else {
                                    0
                                }
                            };
                            *v = at(2 * p) | at(2 * p + 1) << 16;
                        }
                    }
                }
                for (i, ((row, dst), sum)) in rows.zip(&mut sums).enumerate() {
                    let (bias, lo, hi) = keys(i);
                    let e = &mut row[..k];
                    *sum = super::attention::exp_row(e, scale, bias, lo, hi);
                    portable::convert(dst, xs, e, 1, k, k);
                }
            }
            #[cfg(target_arch = "x86_64")]
            Path::Avx512Bf16 => {
                // SAFETY: the CPU has AVX-512F and AVX512-BF16 (`path`); `b`
                // holds `k` rows of `n` floats `ldb` apart.
                unsafe { x86::interleave(&mut self.right, b, ldb, k, n) };
                for (i, ((row, dst), sum)) in rows.zip(&mut sums).enumerate() {
                    let (bias, lo, hi) = keys(i);
                    // SAFETY: as above; `dst` holds `xs >= k / 2` pairs.
                    *sum = unsafe { x86::exp_pairs(&mut row[..k], scale, bias, lo, hi, dst) };
                }
            }
        }
        self.multiply(y, ldy, m, n, k);
        for (row, &sum) in y.chunks_mut(ldy).zip(&sums) {
            let inv = if sum > 0.0 { 1.0 / sum } else { 0.0 };
            row[..n].iter_mut().for_each(|v| *v *= inv);
        }
    }

    /// `y = bf16(a) · right`, `a` rounded into `self.left` first.
    fn product(
        &mut self,
        y: &mut [f32],
        ldy: usize,
        (a, lda): (&[f32], usize),
        m: usize,
        n: usize,
        k: usize,
    ) {
        if m == 0 || n == 0 {
            return;
        }
        assert!(ldy >= n && y.len() >= (m - 1) * ldy + n, "product output");
        assert!(
            k == 0 || lda >= k && a.len() >= (m - 1) * lda + k,
            "product left operand"
        );
        let xs = k.div_ceil(2).next_multiple_of(LANES);
        // Whole tiles of the portable path (which reads past the last row).
        self.left.resize(m.next_multiple_of(portable::MR) * xs, 0);
        match self.path {
            Path::Portable => portable::convert(&mut self.left, xs, a, m, k, lda),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the CPU has AVX-512F and AVX512-BF16 (`path`).
            Path::Avx512Bf16 => unsafe { x86::convert(&mut self.left, xs, a, m, k, lda) },
        }
        self.multiply(y, ldy, m, n, k);
    }

    /// `y = left · right` for `m` rows rounded in `self.left` and the right
    /// operand of `n` columns of `k` inputs packed in `self.right`; `y`
    /// holds `m` rows of `n` floats `ldy` apart (checked by the callers).
    fn multiply(&self, y: &mut [f32], ldy: usize, m: usize, n: usize, k: usize) {
        if k == 0 {
            for row in y.chunks_mut(ldy).take(m) {
                row[..n].fill(0.0);
            }
            return;
        }
        let x = Rounded {
            pairs: &self.left,
            stride: k.div_ceil(2).next_multiple_of(LANES),
            rows: m,
        };
        let w = Panels {
            lines: &self.right,
            out: n,
            inp: k,
        };
        let panels = 0..n.div_ceil(LANES);
        match self.path {
            // SAFETY: `y` holds `m` rows of `n <= ldy` floats (the callers
            // check), all this thread's; `left` holds whole tiles.
            Path::Portable => unsafe { portable::gemm(y.as_mut_ptr(), ldy, x, w, panels, None) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above, and the CPU has AVX-512F and AVX512-BF16
            // (`path`).
            Path::Avx512Bf16 => unsafe { x86::gemm(y.as_mut_ptr(), ldy, x, w, panels, None, &[]) },
        }
    }
}

/// Rows of `x` rounded to pairs of bfloat16: row `i` at `pairs[i *
/// stride..]`, `rows` of them.
#[derive(Clone, Copy)]
struct Rounded<'a> {
    pairs: &'a [u32],
    stride: usize,
    rows: usize,
}

/// The bits of `v` rounded to bfloat16, to nearest with ties to even; NaN
/// stays NaN (made quiet), infinities stay infinite, values beyond the
/// largest bfloat16 round to infinity.
fn bf16_bits(v: f32) -> u16 {
    let b = v.to_bits();
    if v.is_nan() {
        return ((b >> 16) | 0x0040) as u16;
    }
    // No overflow: the largest non-NaN pattern is 0xFF80_0000.
    ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) as u16
}

/// Inputs `2p` (low half) and `2p + 1` (high half, 0 past the end) of
/// `row` as bfloat16.
#[inline]
fn pair(row: &[f32], p: usize) -> u32 {
    let lo = u32::from(bf16_bits(row[2 * p]));
    let hi = row.get(2 * p + 1).map_or(0, |&v| u32::from(bf16_bits(v)));
    lo | hi << 16
}

/// The portable path.
mod portable {
    use std::ops::Range;

    use super::{pair, Panels, Rounded, LANES};

    /// Rows of the tiles.
    pub(super) const MR: usize = 4;

    /// Rounds `rows` rows of `x` (`inp` each, `ldx` apart) to pairs of
    /// bfloat16, `xs` pairs apart in `dst`.
    pub(super) fn convert(
        dst: &mut [u32],
        xs: usize,
        x: &[f32],
        rows: usize,
        inp: usize,
        ldx: usize,
    ) {
        for (r, d) in dst.chunks_exact_mut(xs).take(rows).enumerate() {
            let row = &x[r * ldx..][..inp];
            for (p, v) in d[..inp.div_ceil(2)].iter_mut().enumerate() {
                *v = pair(row, p);
            }
        }
    }

    /// `y[i][j] = sum_p x[i][p] w[j][p] (+ bias[j])` for the rows of `x`
    /// and the columns of `panels`, the rows of `y` `ldy` apart.
    ///
    /// # Safety
    /// `y` points to `x.rows` rows of `ldy >= w.out` floats that no other thread
    /// touches in the columns of `panels`; `x.pairs` holds a multiple of
    /// [`MR`] rows, at least `x.rows`.
    pub(super) unsafe fn gemm(
        y: *mut f32,
        ldy: usize,
        x: Rounded<'_>,
        w: Panels<'_>,
        panels: Range<usize>,
        bias: Option<&[f32]>,
    ) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx512f") {
                // SAFETY: the CPU has AVX-512F; the rest is the caller's.
                unsafe { gemm_avx512(y, ldy, x, w, panels, bias) };
                return;
            }
            if has!("avx2") && has!("fma") {
                // SAFETY: the CPU has AVX2 and FMA; the rest is the caller's.
                unsafe { gemm_avx2(y, ldy, x, w, panels, bias) };
                return;
            }
        }
        // SAFETY: the caller's contract.
        unsafe { gemm_body(y, ldy, x, w, panels, bias) };
    }

    /// [`gemm_body`] compiled for AVX-512F (Rust does not contract `a * b +
    /// c`, so the bits are those of the plain version).
    ///
    /// # Safety
    /// As [`gemm`], on a CPU with AVX-512F.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn gemm_avx512(
        y: *mut f32,
        ldy: usize,
        x: Rounded<'_>,
        w: Panels<'_>,
        panels: Range<usize>,
        bias: Option<&[f32]>,
    ) {
        // SAFETY: the caller's contract.
        unsafe { gemm_body(y, ldy, x, w, panels, bias) };
    }

    /// [`gemm_body`] compiled for AVX2 and FMA.
    ///
    /// # Safety
    /// As [`gemm`], on a CPU with AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn gemm_avx2(
        y: *mut f32,
        ldy: usize,
        x: Rounded<'_>,
        w: Panels<'_>,
        panels: Range<usize>,
        bias: Option<&[f32]>,
    ) {
        // SAFETY: the caller's contract.
        unsafe { gemm_body(y, ldy, x, w, panels, bias) };
    }

    /// The body of [`gemm`]: tiles of [`MR`] rows by one panel, each
    /// element one chain over the pairs, the odd input of a pair first (the
    /// order of `vdpbf16ps`).
    ///
    /// # Safety
    /// As [`gemm`].
    #[inline(always)]
    unsafe fn gemm_body(
        y: *mut f32,
        ldy: usize,
        x: Rounded<'_>,
        w: Panels<'_>,
        panels: Range<usize>,
        bias: Option<&[f32]>,
    ) {
        let (kp, m) = (w.pairs(), x.rows);
        let hi = |u: u32| f32::from_bits(u & 0xFFFF_0000);
        let lo = |u: u32| f32::from_bits(u << 16);
        for i0 in (0..m).step_by(MR) {
            let xt: [&[u32]; MR] = std::array::from_fn(|r| &x.pairs[(i0 + r) * x.stride..][..kp]);
            for g in panels.clone() {
                let panel = &w.lines[g * kp..][..kp];
                let mut acc = [[0.0f32; LANES]; MR];
                for (p, line) in panel.iter().enumerate() {
                    for (acc, xr) in acc.iter_mut().zip(&xt) {
                        let (xo, xe) = (hi(xr[p]), lo(xr[p]));
                        for (a, &u) in acc.iter_mut().zip(&line.0) {
                            *a += xo * hi(u);
                            *a += xe * lo(u);
                        }
                    }
                }
                let c0 = g * LANES;
                let cols = LANES.min(w.out - c0);
                for (r, acc) in acc.iter().enumerate().take(m - i0) {
                    // SAFETY: row `i0 + r < m`, columns `c0..c0 + cols` of
                    // panel `g`: the caller's elements.
                    let dst =
                        unsafe { std::slice::from_raw_parts_mut(y.add((i0 + r) * ldy + c0), cols) };
                    match bias {
                        Some(b) => {
                            for ((d, a), b) in dst.iter_mut().zip(acc).zip(&b[c0..]) {
                                *d = a + b;
                            }
                        }
                        None => dst.copy_from_slice(&acc[..cols]),
                    }
                }
            }
        }
    }
}

/// The AVX512-BF16 path.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;
    use std::mem::transmute;
    use std::ops::Range;

    use super::{Line, Panels, Rounded, KC, LANES};

    /// Rows of a register tile.
    const MR: usize = 8;
    /// Panels (of 16 columns) of a register tile.
    const NB: usize = 3;

    /// Whether the CPU (and OS) run AVX-512F and AVX512-BF16.
    pub(super) fn has_avx512bf16() -> bool {
        is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16")
    }

    /// The mask of the first `cols` of 16 lanes.
    #[inline]
    fn mask(cols: usize) -> __mmask16 {
        if cols >= LANES {
            0xFFFF
        } else {
            ((1u32 << cols) - 1) as __mmask16
        }
    }

    /// Rounds `rows` rows of `x` (`inp` each, `ldx` apart) to pairs of
    /// bfloat16 with `vcvtne2ps2bf16` (to nearest even; denormal inputs
    /// become zero), `xs` pairs apart in `dst`.
    ///
    /// # Safety
    /// The CPU has AVX-512F and AVX512-BF16; `xs` is a multiple of 16.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn convert(
        dst: &mut [u32],
        xs: usize,
        x: &[f32],
        rows: usize,
        inp: usize,
        ldx: usize,
    ) {
        debug_assert!(xs.is_multiple_of(LANES) && xs * 2 >= inp);
        for (r, d) in dst.chunks_exact_mut(xs).take(rows).enumerate() {
            let row = &x[r * ldx..][..inp];
            let src = row.as_ptr();
            for c in (0..inp).step_by(2 * LANES) {
                // SAFETY: the masked loads read only `row[c..inp]`; the store
                // writes `d[c / 2..c / 2 + 16]`, inside `d` as `c < inp <=
                // 2 xs` and both `c / 2` and `xs` are multiples of 16.
                unsafe {
                    let lo = _mm512_maskz_loadu_ps(mask(inp - c), src.add(c));
                    let hi = _mm512_maskz_loadu_ps(
                        mask((inp - c).saturating_sub(LANES)),
                        src.wrapping_add(c + LANES),
                    );
                    let v: __m512i = transmute(_mm512_cvtne2ps_pbh(hi, lo));
                    _mm512_storeu_si512(d.as_mut_ptr().add(c / 2).cast(), v);
                }
            }
        }
    }

    /// Transposes rounded rows into panels: line `p` of panel `g` holds
    /// pair `p` of the rows `16 g..16 g + 16` of `rows` (`xs` pairs apart),
    /// for the `kp` pairs of each of the `dst.len() / kp` panels; one gather
    /// a line.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `rows` holds `16 * dst.len() / kp` rows of
    /// `xs >= kp` pairs.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn transpose(dst: &mut [Line], rows: &[u32], xs: usize, kp: usize) {
        assert!(rows.len() >= dst.len() / kp.max(1) * LANES * xs && kp <= xs);
        let lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
        let offsets = _mm512_mullo_epi32(lane, _mm512_set1_epi32(xs as i32));
        for (g, panel) in dst.chunks_exact_mut(kp.max(1)).enumerate() {
            for (p, line) in panel.iter_mut().enumerate() {
                // SAFETY: the 16 elements gathered are pair `p < kp` of
                // rows `16 g..16 g + 16`, inside `rows` (asserted).
                unsafe {
                    let base = rows.as_ptr().add(g * LANES * xs + p).cast::<i32>();
                    let v = _mm512_i32gather_epi32::<4>(offsets, base);
                    _mm512_store_si512((line as *mut Line).cast(), v);
                }
            }
        }
    }

    /// Packs the transpose of `b` (`k` rows of `n` floats, `ldb` apart):
    /// line `p` of panel `g` holds `b[2p][c]` (low half) and `b[2p + 1][c]`
    /// (high half, 0 past the last row) rounded to bfloat16 for the columns
    /// `c` of the panel (0 past the last column).
    ///
    /// # Safety
    /// The CPU has AVX-512F and AVX512-BF16; `dst` holds `n.div_ceil(16) *
    /// k.div_ceil(2)` lines; `b` holds `k` rows of `n` floats `ldb` apart.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn interleave(dst: &mut [Line], b: &[f32], ldb: usize, k: usize, n: usize) {
        let kp = k.div_ceil(2);
        assert!(dst.len() == n.div_ceil(LANES) * kp && (k == 0 || b.len() >= (k - 1) * ldb + n));
        // The 16 values of `v` rounded to bfloat16, each in the low half of
        // a 32-bit lane.
        let half = |v: __m512| -> __m512i {
            // SAFETY: both types are 256 bits of plain data.
            let h = unsafe { transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(v)) };
            _mm512_cvtepu16_epi32(h)
        };
        for (g, panel) in dst.chunks_exact_mut(kp.max(1)).enumerate() {
            let mk = mask(n - g * LANES);
            for (p, line) in panel.iter_mut().enumerate() {
                // SAFETY: the masked loads read columns `16 g..n` of rows
                // `2p < k` and `2p + 1 < k` of `b` only.
                unsafe {
                    let row = |r: usize| {
                        if r < k {
                            _mm512_maskz_loadu_ps(mk, b.as_ptr().add(r * ldb + g * LANES))
                        } else {
                            _mm512_setzero_ps()
                        }
                    };
                    let (lo, hi) = (half(row(2 * p)), half(row(2 * p + 1)));
                    let v = _mm512_or_si512(lo, _mm512_slli_epi32::<16>(hi));
                    _mm512_store_si512((line as *mut Line).cast(), v);
                }
            }
        }
    }

    /// The attention probabilities of one row before their division by the
    /// sum, rounded: `e[j] = exp(scale * s[j] + bias[j] - max)` over the
    /// keys `lo..hi` (`max` over them), 0 for the other keys of `s`, as
    /// pairs of bfloat16 in `dst`; returns the sum of the `e[j]` (before
    /// rounding). `s` is overwritten. The exponential is `2^x` as `2^n *
    /// p(x - n)` (`vscalefps`) with a degree-5 polynomial, 3e-6 relative:
    /// far below the 2^-9 of the rounding that follows.
    ///
    /// # Safety
    /// The CPU has AVX-512F and AVX512-BF16; `dst` holds at least
    /// `s.len().div_ceil(32) * 16` pairs; `lo <= hi <= s.len()` and `bias`,
    /// when given, holds `s.len()` floats.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn exp_pairs(
        s: &mut [f32],
        scale: f32,
        bias: Option<&[f32]>,
        lo: usize,
        hi: usize,
        dst: &mut [u32],
    ) -> f32 {
        let k = s.len();
        assert!(lo <= hi && hi <= k && dst.len() >= k.div_ceil(2 * LANES) * LANES);
        assert!(bias.is_none_or(|b| b.len() >= k));
        // The lanes of the keys `lo..hi` among `c..c + 16`.
        let keys = |c: usize| -> __mmask16 {
            let below = |e: usize| mask(e.saturating_sub(c));
            below(hi) & !below(lo)
        };
        let p = s.as_mut_ptr();
        let vscale = _mm512_set1_ps(scale);
        let mut max = _mm512_set1_ps(f32::NEG_INFINITY);
        for c in (lo..hi).step_by(LANES) {
            let mk = keys(c);
            // SAFETY: the lanes of `mk` are keys `< hi <= k` of `s` and
            // `bias`.
            unsafe {
                let mut t = _mm512_mul_ps(_mm512_maskz_loadu_ps(mk, p.add(c)), vscale);
                if let Some(b) = bias {
                    t = _mm512_add_ps(t, _mm512_maskz_loadu_ps(mk, b.as_ptr().add(c)));
                }
                _mm512_mask_storeu_ps(p.add(c), mk, t);
                max = _mm512_mask_max_ps(max, mk, max, t);
            }
        }
        let log2e = _mm512_set1_ps(std::f32::consts::LOG2_E);
        // x = (t - max) log2(e) = t log2(e) - max log2(e)
        let shift = _mm512_set1_ps(-_mm512_reduce_max_ps(max) * std::f32::consts::LOG2_E);
        // Taylor coefficients of 2^f = e^(f ln 2) on [-1/2, 1/2].
        let ln2 = std::f64::consts::LN_2;
        let coef: [__m512; 6] = std::array::from_fn(|i| {
            let fact = (1..=i).product::<usize>() as f64;
            _mm512_set1_ps((ln2.powi(i as i32) / fact) as f32)
        });
        let floor = _mm512_set1_ps(-126.0);
        let mut sum = _mm512_setzero_ps();
        let exps = |c: usize| -> __m512 {
            let mk = keys(c);
            // SAFETY: the lanes of `mk` are keys `< hi <= k` of `s`; no
            // lane is read past them (`c` may be past `k`).
            let t = unsafe { _mm512_maskz_loadu_ps(mk, p.wrapping_add(c)) };
            let x = _mm512_max_ps(_mm512_fmadd_ps(t, log2e, shift), floor);
            let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(x);
            let f = _mm512_sub_ps(x, n);
            let mut y = coef[5];
            for c in coef[..5].iter().rev() {
                y = _mm512_fmadd_ps(y, f, *c);
            }
            _mm512_maskz_mov_ps(mk, _mm512_scalef_ps(y, n))
        };
        for c in (0..k).step_by(2 * LANES) {
            let (e0, e1) = (exps(c), exps(c + LANES));
            sum = _mm512_add_ps(sum, _mm512_add_ps(e0, e1));
            // SAFETY: the store writes pairs `c / 2..c / 2 + 16` of `dst`,
            // inside it (asserted); the transmute is between two 512-bit
            // vectors.
            unsafe {
                let v: __m512i = transmute(_mm512_cvtne2ps_pbh(e1, e0));
                _mm512_storeu_si512(dst.as_mut_ptr().add(c / 2).cast(), v);
            }
        }
        _mm512_reduce_add_ps(sum)
    }

    /// What the tiles of one block of pairs and one group of panels share.
    struct Tile {
        /// The first line of the first panel at pair 0.
        w: *const Line,
        /// Lines per panel.
        kp: usize,
        /// The block of pairs.
        p: Range<usize>,
        /// Whether this is the first block (else `y` holds partial sums).
        first: bool,
        /// The bias of the group's first column when this is the last block
        /// and there is a bias, else null.
        bias: *const f32,
        /// The valid columns of each panel.
        masks: [__mmask16; NB],
    }

    /// `y[i][j] = sum_p x[i][p] w[j][p] (+ bias[j])` for the rows of `x`
    /// and the columns of `panels`, the rows of `y` `ldy` apart. `next`
    /// (the rows of `x` the following call will round) is prefetched into
    /// L2 a few lines per tile: without it, rounding rows that come from L3
    /// or memory costs up to a sixth of the time at 4096 rows.
    ///
    /// # Safety
    /// The CPU has AVX-512F and AVX512-BF16; `y` points to `x.rows` rows of
    /// `ldy >= w.out` floats that no other thread touches in the columns of
    /// `panels`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn gemm(
        y: *mut f32,
        ldy: usize,
        x: Rounded<'_>,
        w: Panels<'_>,
        panels: Range<usize>,
        bias: Option<&[f32]>,
        next: &[f32],
    ) {
        let (kp, out, m, xs) = (w.pairs(), w.out, x.rows, x.stride);
        assert!(x.pairs.len() >= m * xs && kp <= xs);
        // Blocks of at most KC pairs, of equal sizes (but the last).
        let kc = kp.div_ceil(kp.div_ceil(KC));
        // Cache lines of `next` to prefetch before each tile.
        let lines = std::mem::size_of_val(next).div_ceil(64);
        let tiles = kp.div_ceil(kc) * panels.len().div_ceil(NB) * m.div_ceil(MR);
        let per_tile = lines.div_ceil(tiles.max(1));
        let mut fetched = 0;
        for p0 in (0..kp).step_by(kc) {
            let p1 = (p0 + kc).min(kp);
            for g0 in panels.clone().step_by(NB) {
                let nb = (panels.end - g0).min(NB);
                let mut masks = [0; NB];
                for (b, mk) in masks.iter_mut().enumerate().take(nb) {
                    *mk = mask(out - (g0 + b) * LANES);
                }
                let t = Tile {
                    w: w.lines[g0 * kp..].as_ptr(),
                    kp,
                    p: p0..p1,
                    first: p0 == 0,
                    bias: match bias {
                        Some(b) if p1 == kp => b[g0 * LANES..].as_ptr(),
                        _ => std::ptr::null(),
                    },
                    masks,
                };
                for i0 in (0..m).step_by(MR) {
                    let mr = (m - i0).min(MR);
                    let xt = x.pairs[i0 * xs..].as_ptr();
                    for _ in 0..per_tile.min(lines - fetched) {
                        let at = next.as_ptr().cast::<i8>().wrapping_add(64 * fetched);
                        // A prefetch never faults, whatever the address.
                        _mm_prefetch::<_MM_HINT_T1>(at);
                        fetched += 1;
                    }
                    // SAFETY: rows `i0..i0 + mr` and the panels `g0..g0 + nb`
                    // are the caller's; the tile reads and writes only the
                    // columns its masks allow.
                    unsafe {
                        let y = y.add(i0 * ldy + g0 * LANES);
                        macro_rules! rows {
                            ($b:literal) => {
                                match mr {
                                    8 => tile::<8, $b>(xt, xs, y, ldy, &t),
                                    7 => tile::<7, $b>(xt, xs, y, ldy, &t),
                                    6 => tile::<6, $b>(xt, xs, y, ldy, &t),
                                    5 => tile::<5, $b>(xt, xs, y, ldy, &t),
                                    4 => tile::<4, $b>(xt, xs, y, ldy, &t),
                                    3 => tile::<3, $b>(xt, xs, y, ldy, &t),
                                    2 => tile::<2, $b>(xt, xs, y, ldy, &t),
                                    _ => tile::<1, $b>(xt, xs, y, ldy, &t),
                                }
                            };
                        }
                        match nb {
                            3 => rows!(3),
                            2 => rows!(2),
                            _ => rows!(1),
                        }
                    }
                }
            }
        }
    }

    /// One register tile: `R` rows by `B` panels, over the pairs `t.p`,
    /// starting from zero (first block) or the partial sums in `y`, adding
    /// the bias in the last block.
    ///
    /// # Safety
    /// The CPU has AVX-512F and AVX512-BF16; `x` holds `R` rows of `xs`
    /// pairs covering `t.p`; `t.w` holds `B` panels of `t.kp` lines; `y`
    /// (stride `ldy`) and `t.bias` are valid for the columns `t.masks`
    /// allow in `R` rows.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn tile<const R: usize, const B: usize>(
        x: *const u32,
        xs: usize,
        y: *mut f32,
        ldy: usize,
        t: &Tile,
    ) {
        // SAFETY (whole body): every access is within the bounds of the
        // contract above; masked loads and stores touch no masked-off
        // element, so the addresses past the last column (formed with
        // `wrapping_add`) are never dereferenced.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); B]; R];
            if t.first {
                // The stores at the end would miss: fetch the lines now.
                for r in 0..R {
                    for b in 0..B {
                        let at = y.wrapping_add(r * ldy + b * LANES);
                        _mm_prefetch::<_MM_HINT_T0>(at.cast());
                    }
                }
            } else {
                for (r, acc) in acc.iter_mut().enumerate() {
                    for (b, a) in acc.iter_mut().enumerate() {
                        let at = y.wrapping_add(r * ldy + b * LANES);
                        *a = _mm512_maskz_loadu_ps(t.masks[b], at);
                    }
                }
            }
            for p in t.p.clone() {
                let mut wv = [transmute::<__m512i, __m512bh>(_mm512_setzero_si512()); B];
                for (b, v) in wv.iter_mut().enumerate() {
                    *v = transmute::<__m512i, __m512bh>(_mm512_load_si512(
                        t.w.add(b * t.kp + p).cast(),
                    ));
                }
                for (r, acc) in acc.iter_mut().enumerate() {
                    let xv: __m512bh = transmute(_mm512_set1_epi32(*x.add(r * xs + p) as i32));
                    for (a, &v) in acc.iter_mut().zip(&wv) {
                        *a = _mm512_dpbf16_ps(*a, xv, v);
                    }
                }
            }
            if !t.bias.is_null() {
                for acc in acc.iter_mut() {
                    for (b, a) in acc.iter_mut().enumerate() {
                        let bv = _mm512_maskz_loadu_ps(t.masks[b], t.bias.wrapping_add(b * LANES));
                        *a = _mm512_add_ps(*a, bv);
                    }
                }
            }
            for (r, acc) in acc.iter().enumerate() {
                for (b, a) in acc.iter().enumerate() {
                    _mm512_mask_storeu_ps(y.wrapping_add(r * ldy + b * LANES), t.masks[b], *a);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::linalg::set_threads;

    /// The paths this CPU runs (the portable one always).
    fn paths() -> Vec<Path> {
        let paths: Vec<Path> = Path::ALL
            .iter()
            .copied()
            .filter(|p| p.available())
            .collect();
        assert!(paths.contains(&Path::Portable));
        paths
    }

    fn random(len: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..len).map(|_| rng.gen_range(-1.0..1.0)).collect()
    }

    fn round(v: &[f32]) -> Vec<f64> {
        v.iter()
            .map(|&v| f64::from(f32::from_bits(u32::from(bf16_bits(v)) << 16)))
            .collect()
    }

    #[test]
    fn rounding_is_to_nearest_even() {
        let r = |bits: u32| bf16_bits(f32::from_bits(bits));
        assert_eq!(r(0x3F80_0000), 0x3F80); // 1.0
        assert_eq!(r(0x3F80_7FFF), 0x3F80); // just below half
        assert_eq!(r(0x3F80_8000), 0x3F80); // half, even below
        assert_eq!(r(0x3F80_8001), 0x3F81); // just above half
        assert_eq!(r(0x3F81_8000), 0x3F82); // half, even above
        assert_eq!(r(0xBF81_8000), 0xBF82); // negative
        assert_eq!(r(0x8000_0000), 0x8000); // -0
        assert_eq!(r(0x0000_0001), 0x0000); // the smallest denormal
        assert_eq!(r(0x007F_FFFF), 0x0080); // the largest denormal
        assert_eq!(r(0x7F7F_FFFF), 0x7F80); // f32::MAX overflows
        assert_eq!(r(0x7F80_0000), 0x7F80); // infinity
        assert_eq!(r(0xFF80_0000), 0xFF80);
        for nan in [
            0x7FC0_0000,
            0x7F80_0001,
            0xFF80_0001,
            0x7FFF_FFFF,
            0xFFFF_FFFF,
        ] {
            let b = r(nan);
            assert!(
                f32::from_bits(u32::from(b) << 16).is_nan(),
                "{nan:#x} -> {b:#x}"
            );
            assert_eq!(
                b & 0x8000,
                ((nan >> 16) & 0x8000) as u16,
                "sign of {nan:#x}"
            );
        }
    }

    #[test]
    fn conversions_of_x_agree() {
        let mut x = random(77, 9);
        x[2] = f32::from_bits(0x3F80_8000);
        x[3] = f32::from_bits(0x3F81_8000);
        x[4] = f32::from_bits(0x0000_0001);
        x[5] = f32::from_bits(0xC000_8001);
        x[6] = f32::INFINITY;
        x[7] = f32::from_bits(0x7F7F_FFFF);
        x[8] = f32::NAN;
        x[9] = f32::from_bits(0x7F80_0001);
        let xs = 48;
        let mut want = vec![0u32; xs];
        portable::convert(&mut want, xs, &x, 1, x.len(), x.len());
        assert_eq!(want[1], 0x3F82_3F80);
        #[cfg(target_arch = "x86_64")]
        if x86::has_avx512bf16() {
            let mut got = vec![0u32; xs];
            // SAFETY: the CPU has the features; xs is a multiple of 16.
            unsafe { x86::convert(&mut got, xs, &x, 1, x.len(), x.len()) };
            let half = |v: u32, i: usize| {
                f32::from_bits(if i.is_multiple_of(2) {
                    v << 16
                } else {
                    v & 0xFFFF_0000
                })
            };
            for i in 0..x.len() {
                let (g, w) = (half(got[i / 2], i), half(want[i / 2], i));
                assert!(
                    g.to_bits() == w.to_bits() || g.is_nan() && w.is_nan(),
                    "x[{i}]: {g} vs {w}"
                );
            }
        }
    }

    /// Checks every path on `n x inp` times `out x inp`, with and without a
    /// bias, against a float64 product of the rounded operands.
    fn check(n: usize, inp: usize, out: usize, seed: u64) {
        let x = random(n * inp, seed);
        let w = random(out * inp, seed + 1);
        let bias = random(out, seed + 2);
        let (xd, wd) = (round(&x), round(&w));
        let dot = |i: usize, j: usize| -> (f64, f64) {
            let (xr, wr) = (&xd[i * inp..][..inp], &wd[j * inp..][..inp]);
            let d = xr.iter().zip(wr).map(|(a, b)| a * b).sum::<f64>();
            let norm = |v: &[f64]| v.iter().map(|a| a * a).sum::<f64>().sqrt();
            (d, norm(xr) * norm(wr))
        };
        let want: Vec<(f64, f64)> = (0..n * out).map(|e| dot(e / out, e % out)).collect();
        let packed = PackedBf16::pack(&w, out, inp);
        assert_eq!((packed.out(), packed.inp()), (out, inp));
        for path in paths() {
            for with_bias in [false, true] {
                let mut y = vec![f32::NAN; n * out];
                let b = with_bias.then_some(&bias[..]);
                linear(path, &mut y, &x, n, &packed, b);
                for (e, (&got, &(d, scale))) in y.iter().zip(&want).enumerate() {
                    let bj = if with_bias {
                        f64::from(bias[e % out])
                    } else {
                        0.0
                    };
                    let err = (f64::from(got) - d - bj).abs();
                    assert!(
                        err <= 1e-5 * (scale + bj.abs()) + 1e-30,
                        "{path:?} n={n} inp={inp} out={out} bias={with_bias} at {e}: {got} vs {}",
                        d + bj
                    );
                }
            }
        }
    }

    #[test]
    fn paths_match_a_float64_reference() {
        let mut seed = 0;
        for n in [1, 3, 17, 33, 100] {
            for inp in [1, 7, 32, 33, 384, 1536] {
                for out in [1, 5, 16, 17, 384, 1536] {
                    check(n, inp, out, seed);
                    seed += 3;
                }
            }
        }
        // Several row blocks, a group of one panel, the partial sums of many
        // blocks of pairs.
        check(130, 2 * KC * 3 + 5, 64, 1000);
    }

    #[test]
    fn products_of_activations_match_a_float64_reference() {
        // Strided operands (as q, k and v inside a row of qkv), odd inner
        // sizes, columns past a panel, one row, and an output with a stride.
        let mut seed = 500;
        for (m, n, k) in [
            (1, 1, 1),
            (7, 5, 3),
            (9, 17, 20),
            (33, 40, 64),
            (20, 180, 32),
        ] {
            let (lda, ldb, ldy) = (k + 3, k + 5, n + 2);
            let (a, b) = (random(m * lda, seed), random(n * ldb, seed + 1));
            seed += 2;
            let (ad, bd) = (round(&a), round(&b));
            for path in paths() {
                let mut y = vec![f32::NAN; m * ldy];
                Products::on(path).nt(&mut y, ldy, (&a, lda), (&b, ldb), m, n, k);
                for (e, &got) in y.iter().enumerate() {
                    let (i, j) = (e / ldy, e % ldy);
                    if j >= n {
                        assert!(got.is_nan(), "{path:?} wrote column {j} of {n}");
                        continue;
                    }
                    let terms = (0..k).map(|p| ad[i * lda + p] * bd[j * ldb + p]);
                    let (d, scale) = terms.fold((0.0, 0.0), |(d, s), t| (d + t, s + t.abs()));
                    assert!(
                        (f64::from(got) - d).abs() <= 1e-5 * scale + 1e-30,
                        "{path:?} m={m} n={n} k={k} ({i}, {j}): {got} vs {d}"
                    );
                }
            }
        }
    }

    #[test]
    fn softmax_products_match_a_float64_reference() {
        // Rows of all keys, a window, no key at all, a bias; the values'
        // columns past a panel; odd numbers of keys.
        for (m, n, k) in [(1, 1, 1), (6, 5, 3), (9, 20, 37), (40, 32, 180)] {
            let (ldb, ldy) = (n + 3, n + 1);
            let scores = random(m * k, 700 + k as u64);
            let v = random(k * ldb, 800 + n as u64);
            let bias: Vec<f32> = random(k, 900).iter().map(|b| 3.0 * b).collect();
            let keys = |i: usize| match i % 4 {
                0 => (None, 0, k),
                1 => (Some(&bias[..]), 0, k),
                2 => (None, (i / 2).min(k), (i / 2 + 4).min(k)),
                _ => (None, k / 2, k / 2),
            };
            let vd = round(&v);
            for path in paths() {
                let mut y = vec![f32::NAN; m * ldy];
                let mut s = scores.clone();
                Products::on(path).softmax_nn(&mut y, ldy, &mut s, 2.5, keys, (&v, ldb), m, n, k);
                for i in 0..m {
                    let (bias, lo, hi) = keys(i);
                    let t: Vec<f64> = (lo..hi)
                        .map(|j| {
                            2.5 * f64::from(scores[i * k + j])
                                + bias.map_or(0.0, |b| f64::from(b[j]))
                        })
                        .collect();
                    let max = t.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = t.iter().map(|x| (x - max).exp()).collect();
                    let z: f64 = e.iter().sum();
                    for c in 0..ldy {
                        let got = y[i * ldy + c];
                        if c >= n {
                            assert!(got.is_nan(), "{path:?} wrote column {c} of {n}");
                            continue;
                        }
                        let terms = (lo..hi).map(|j| e[j - lo] / z * vd[j * ldb + c]);
                        let (want, scale) =
                            terms.fold((0.0, 0.0), |(d, s), t| (d + t, s + t.abs()));
                        assert!(
                            (f64::from(got) - want).abs() <= 5e-3 * scale + 1e-30,
                            "{path:?} m={m} n={n} k={k} ({i}, {c}): {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn portable_alone_matches_the_reference_and_the_public_entry() {
        // What a CPU without native bf16 runs.
        let (n, inp, out) = (37, 129, 50);
        check(n, inp, out, 77);
        let x = random(n * inp, 5);
        let w = PackedBf16::pack(&random(out * inp, 6), out, inp);
        let mut a = vec![0.0; n * out];
        let mut b = vec![0.0; n * out];
        linear(Path::best(), &mut a, &x, n, &w, None);
        linear_bf16(&mut b, &x, n, &w, None);
        assert_eq!(a, b);
        assert_eq!(bf16_kernel(), Path::best().name());
        assert_eq!(has_native_bf16(), bf16_kernel() != "portable");
    }

    #[test]
    fn empty_shapes_and_nan() {
        let bias = [1.0, 2.0, 3.0];
        let w = PackedBf16::pack(&[], 3, 0);
        for path in paths() {
            let mut y = vec![f32::NAN; 6];
            linear(path, &mut y, &[], 2, &w, Some(&bias));
            assert_eq!(y, [1.0, 2.0, 3.0, 1.0, 2.0, 3.0]);
            linear(path, &mut y, &[], 2, &w, None);
            assert_eq!(y, [0.0; 6]);
            linear(path, &mut [], &[], 0, &w, None);
            let w1 = PackedBf16::pack(&[1.0, 2.0, 3.0, 4.0], 2, 2);
            let mut y = [0.0; 4];
            linear(path, &mut y, &[1.0, f32::NAN, 1.0, -1.0], 2, &w1, None);
            assert!(y[0].is_nan() && y[1].is_nan(), "{path:?}: {y:?}");
            assert_eq!(&y[2..], [-1.0, -1.0]);
        }
    }

    #[test]
    fn results_do_not_depend_on_threads() {
        for (n, inp, out) in [(100, 385, 77), (3, 385, 1536), (40, 64, 40)] {
            let x = random(n * inp, 11);
            let w = PackedBf16::pack(&random(out * inp, 12), out, inp);
            let bias = random(out, 13);
            for path in paths() {
                let mut one = vec![0.0; n * out];
                let mut two = vec![0.0; n * out];
                set_threads(1);
                linear(path, &mut one, &x, n, &w, Some(&bias));
                set_threads(2);
                linear(path, &mut two, &x, n, &w, Some(&bias));
                set_threads(1);
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert!(
                    bits(&one) == bits(&two),
                    "{path:?} n={n} inp={inp} out={out}"
                );
            }
        }
    }
}
