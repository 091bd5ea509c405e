//! Exact top-k from a fast approximate scan.
//!
//! Every exact result of [`crate::Flat`] is ranked by one *canonical* score: the
//! float32 [`dot`] of the query (normalised first for cosine, as a float32
//! vector) and the bank row, summed in one fixed order, times the row's
//! inverse norm for cosine. It does not depend on the CPU, the scan kernel, the
//! batch of queries or the number of threads.
//!
//! A scan kernel (float32 `gemm`, or the int8 kernel of [`crate::int8`]) gives
//! each (query, row) pair an approximate score `r` and a bound `beta` proven to
//! hold: `|T - r| <= beta`, `T` being the canonical score. Per query,
//! [`Candidates`] keeps the k best lower ends `r - beta` (their k-th is the
//! *floor*: the k-th best canonical score is at least the floor, since k rows
//! reach it) and every row whose upper end `r + beta` reaches the floor; a
//! row below the floor cannot be in the top-k. [`finish`] rescores the
//! survivors canonically and keeps the best k (score, then lower row).
//!
//! The bound. With `y` the row as scored (the row, or for cosine the row times
//! its inverse norm), `x~` and `q~` what the kernel multiplies (the int8
//! values times their scales; for `gemm` the float32 values themselves), and
//! `Q >= |q|, |q~|`, `N >= |y|, |x~|`, `E >= |y - x~|`, `Eq >= |q - q~|`:
//!
//! * `q.y - q~.x~ = q.(y - x~) + (q - q~).x~`, so `|q.y - q~.x~| <= Q E + Eq N`
//!   (Cauchy-Schwarz);
//! * the canonical score and a float32 `gemm` score are each within
//!   `gamma(dim + 2) Q N` of `q.y` (`gamma(n) = n u / (1 - n u)`, `u = 2^-24`,
//!   every product goes through at most `dim + 2` roundings, whatever the
//!   order; the `+ 2` is cosine's multiply by the inverse norm), plus
//!   `(2 dim + 4) 2^-149` for results that fall below the normal range;
//! * the int8 kernel's integer dot product is exact; scaling it to `r` is three
//!   roundings, `3 u Q N`;
//! * computing `r - beta`, `r + beta` is one rounding each, at most
//!   `u (|r| + beta)`, `|r| <= Q N`; computing `beta` itself is three
//!   roundings, `3 u beta`.
//!
//! So `beta = A E + B N + abs` with `A = Q (1 + 2^-20)`,
//! `B = (Eq + c Q)(1 + 2^-20)`, `c = scans * gamma(dim + 2) + 8 u` and
//! `abs = (4 dim + 64) 2^-149` covers everything: the factor `1 + 2^-20`
//! exceeds the relative roundings of `beta` and of `r +- beta` (`4u < 2^-20`),
//! and `8 u Q N` the roundings proportional to `|r|`. All of `A`, `B`, `E`, `N`
//! are computed in float64 and rounded up to float32.

use rayon::prelude::*;

use crate::topk::{merge, TopK};
use crate::{hit_order, Hit};

/// Unit roundoff of float32.
const U: f64 = 1.0 / (1u64 << 24) as f64;
/// The smallest positive float32 (subnormal), as float64.
const TINY: f64 = 1.401_298_464_324_817e-45;
/// Relative slack of every bound: more than the roundings of computing it in float32.
const SLACK: f64 = 1.0 + 1.0 / (1u64 << 20) as f64;

/// The smallest float32 at or above `x` (`x >= 0`; infinity past float32's range).
pub(crate) fn up(x: f64) -> f32 {
    let f = x as f32;
    if (f as f64) < x {
        f.next_up()
    } else {
        f
    }
}

/// `n u / (1 - n u)`: bounds the relative error of a sum of `n` roundings.
fn gamma(n: usize) -> f64 {
    let nu = n as f64 * U;
    if nu < 0.5 {
        nu / (1.0 - nu)
    } else {
        f64::INFINITY
    }
}

/// The canonical float32 dot product: 16 running sums (element `i` goes to
/// sum `i % 16`) added in a fixed tree. Plain multiplies and adds, no fused
/// multiply-add, so every platform computes the same bits; with AVX-512 the
/// 16 sums are one register (the same operations, lane by lane).
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512 F (checked just above).
        return unsafe { dot_avx512(a, b) };
    }
    dot_lanes(a, b)
}

/// [`dot`] compiled for AVX-512: LLVM keeps the 16 sums in one register
/// without reassociating anything, so the bits are [`dot_lanes`]'s.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn dot_avx512(a: &[f32], b: &[f32]) -> f32 {
    dot_lanes(a, b)
}

#[inline(always)]
fn dot_lanes(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 16;
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    for (l, (x, y)) in ra.iter().zip(rb).enumerate() {
        acc[l] += x * y;
    }
    let mut width = LANES / 2;
    while width > 0 {
        for l in 0..width {
            acc[l] += acc[l + width];
        }
        width /= 2;
    }
    acc[0]
}

/// Euclidean norm in float64 (float32 inputs: every square is exact).
pub(crate) fn norm64(v: impl IntoIterator<Item = f64>) -> f64 {
    v.into_iter().map(|a| a * a).sum::<f64>().sqrt()
}

/// An upper bound on a float64 norm computed from exact terms by [`norm64`]
/// (its own roundings are below `1e-9` relative for any realistic dimension).
pub(crate) fn norm_up(n: f64) -> f32 {
    up(n * (1.0 + 1e-9))
}

/// One query's bound coefficients: `beta = a E + b N + abs` (module docs).
#[derive(Debug, Clone, Copy)]
// `a` is read only by the x86_64 int8 kernel.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) struct Coef {
    pub(crate) a: f32,
    pub(crate) b: f32,
}

impl Coef {
    /// `q_norm >= |q|, |q~|`, `q_err >= |q - q~|`; `scans`: how many float32
    /// dot products of `dim` terms stand between the approximate score and the
    /// canonical one (1 for the int8 kernel: the canonical score; 2 for `gemm`).
    pub(crate) fn new(q_norm: f64, q_err: f64, dim: usize, scans: usize) -> Coef {
        let c = scans as f64 * gamma(dim + 2) + 8.0 * U;
        Coef {
            a: up(q_norm * SLACK),
            b: up((q_err + c * q_norm) * SLACK),
        }
    }
}

/// The absolute part of every bound: underflow below float32's normal range.
pub(crate) fn abs_term(dim: usize) -> f32 {
    up((4 * dim + 64) as f64 * TINY)
}

/// One query's candidates in one part of the bank (module docs).
#[derive(Debug)]
pub(crate) struct Candidates {
    k: usize,
    /// The best k lower ends; its threshold is a floor.
    low: TopK,
    /// The k-th best canonical score of `exact` (-inf until there are k): also a floor.
    kth: f32,
    /// (row, upper end) of every row that reached the floor when offered.
    rows: Vec<Hit>,
    /// The best k rows rescored so far, when `rows` outgrew what pruning can
    /// keep in bounds (many rows tied at the floor).
    exact: Vec<Hit>,
}

impl Candidates {
    pub(crate) fn new(k: usize) -> Candidates {
        Candidates {
            k,
            low: TopK::new(k),
            kth: f32::NEG_INFINITY,
            rows: Vec::new(),
            exact: Vec::new(),
        }
    }

    /// Rows whose upper end is below this cannot be in the top-k: the k-th
    /// canonical score is at least the k-th lower end, and at least the k-th
    /// of any k rows already rescored.
    #[inline(always)]
    pub(crate) fn floor(&self) -> f32 {
        self.low.threshold().max(self.kth)
    }

    /// Offers a row with approximate score `r` and bound `beta`. NaN ends (an
    /// overflowed bound) keep the row and leave the floor alone. When pruning
    /// rows under the floor cannot keep `rows` within `2k + 8192` (rows tied
    /// at the floor), they are rescored by `score` and only the best k kept.
    #[inline]
    pub(crate) fn offer(&mut self, row: u32, r: f32, beta: f32, score: &dyn Fn(u32) -> f32) {
        let (lo, hi) = (r - beta, r + beta);
        if !reaches(hi, self.floor()) {
            return;
        }
        if lo > self.floor() {
            self.low.push(row, lo);
        }
        self.rows.push((row, hi));
        let cap = 2 * self.k + 8192;
        if self.rows.len() >= cap {
            let floor = self.floor();
            self.rows.retain(|c| reaches(c.1, floor));
            if 2 * self.rows.len() >= cap {
                self.exact
                    .extend(self.rows.drain(..).map(|(row, _)| (row, score(row))));
                self.exact.sort_unstable_by(hit_order);
                self.exact.truncate(self.k);
                if self.exact.len() == self.k {
                    self.kth = self.exact[self.k - 1].1;
                }
            }
        }
    }
}

/// Whether an upper end `hi` reaches `floor`; a NaN end (an overflowed bound) does.
#[inline(always)]
fn reaches(hi: f32, floor: f32) -> bool {
    hi >= floor || hi.is_nan()
}

/// Offers one query's scores `r` of rows `r0..` with bounds `beta` to its
/// candidates, skipping excluded rows (`excl` sorted). Sixteen upper ends at a
/// time are compared with the floor; only the lanes that reach it are looked at.
#[inline]
pub(crate) fn collect(
    r: &[f32],
    beta: &[f32],
    r0: u32,
    c: &mut Candidates,
    excl: &[u32],
    score: &dyn Fn(u32) -> f32,
) {
    const W: usize = 16;
    let mut floor = c.floor();
    for (chunk, (rs, bs)) in r.chunks(W).zip(beta.chunks(W)).enumerate() {
        // One bit per lane that reaches the floor; only those are looked at.
        let mut reach = rs
            .iter()
            .zip(bs)
            .enumerate()
            .fold(0u32, |m, (j, (&s, &b))| {
                m | ((reaches(s + b, floor) as u32) << j)
            });
        while reach != 0 {
            let j = reach.trailing_zeros() as usize;
            reach &= reach - 1;
            let (s, b) = (rs[j], bs[j]);
            let row = r0 + (chunk * W + j) as u32;
            if reaches(s + b, floor) && excl.binary_search(&row).is_err() {
                c.offer(row, s, b, score);
                floor = c.floor();
            }
        }
    }
}

/// The rows of one query that survive the overall floor (the k-th best lower
/// end over its candidates in every part of the bank), and those it already
/// rescored (rescored again with the others: the same bits).
pub(crate) fn survivors(parts: Vec<Candidates>, k: usize) -> Vec<u32> {
    let mut lows = Vec::with_capacity(parts.len());
    let mut rows = Vec::with_capacity(parts.len());
    let mut exact = Vec::new();
    for p in parts {
        lows.push(p.low.into_sorted());
        rows.push(p.rows);
        exact.extend(p.exact.into_iter().map(|h| h.0));
    }
    let lows = merge(lows, k);
    let floor = if lows.len() == k {
        lows[k - 1].1
    } else {
        f32::NEG_INFINITY
    };
    rows.into_iter()
        .flatten()
        .filter(|c| reaches(c.1, floor))
        .map(|c| c.0)
        .chain(exact)
        .collect()
}

/// The exact top-k of every query from its survivors: each (query, row) pair
/// rescored by `score` (the canonical score), best first, ties to the lower
/// row. The pairs are taken in bank order, so the bank is read in one sweep
/// however many queries share a row: `load` fetches a row into a scratch
/// buffer once per run of pairs that share it, and `score(query, row,
/// scratch)` scores one pair from it.
pub(crate) fn rescore<B: Default>(
    survivors: Vec<Vec<u32>>,
    k: usize,
    load: impl Fn(u32, &mut B) + Sync,
    score: impl Fn(usize, u32, &B) -> f32 + Sync,
) -> Vec<Vec<Hit>> {
    /// Pairs per parallel task.
    const CHUNK: usize = 4096;
    let mut pairs: Vec<u64> = survivors
        .iter()
        .enumerate()
        .flat_map(|(q, rows)| rows.iter().map(move |&r| ((r as u64) << 32) | q as u64))
        .collect();
    pairs.par_sort_unstable();
    let scores: Vec<f32> = pairs
        .par_chunks(CHUNK)
        .map(|chunk| {
            let mut scratch = B::default();
            let mut loaded = None;
            chunk
                .iter()
                .map(|&p| {
                    let (q, row) = (p as u32 as usize, (p >> 32) as u32);
                    if loaded != Some(row) {
                        load(row, &mut scratch);
                        loaded = Some(row);
                    }
                    score(q, row, &scratch)
                })
                .collect::<Vec<f32>>()
        })
        .flatten_iter()
        .collect();
    let mut hits: Vec<Vec<Hit>> = survivors
        .iter()
        .map(|rows| Vec::with_capacity(rows.len()))
        .collect();
    for (&p, &s) in pairs.iter().zip(&scores) {
        hits[p as u32 as usize].push(((p >> 32) as u32, s));
    }
    hits.par_iter_mut().for_each(|h| {
        h.sort_unstable_by(hit_order);
        h.truncate(k);
    });
    hits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn up_never_rounds_down() {
        for x in [0.0, 1e-50, TINY * 3.5, 0.1, 1.0 / 3.0, 1e38, 1e39] {
            let f = up(x);
            assert!(f as f64 >= x, "{x}");
        }
        assert_eq!(up(0.5), 0.5);
        assert_eq!(up(1e39), f32::INFINITY);
    }

    #[test]
    fn dot_is_the_fixed_order_sum() {
        let a: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..37).map(|i| (i as f32 * 1.3).cos()).collect();
        let mut acc = [0f32; 16];
        for i in 0..37 {
            acc[i % 16] += a[i] * b[i];
        }
        for w in [8, 4, 2, 1] {
            for l in 0..w {
                acc[l] += acc[l + w];
            }
        }
        assert_eq!(dot(&a, &b).to_bits(), acc[0].to_bits());
        assert_eq!(dot_lanes(&a, &b).to_bits(), acc[0].to_bits());
        assert_eq!(dot(&[], &[]), 0.0);
    }

    #[test]
    fn candidates_keep_every_row_that_can_reach_the_top() {
        // Rows 0..100 with scores i, bound 10, row 98 excluded: the top 3
        // are 99, 97, 96; the floor is 96 - 10 = 86, so rows 76.. survive.
        let mut c = Candidates::new(3);
        let r: Vec<f32> = (0..100).map(|i| i as f32).collect();
        collect(&r, &[10.0; 100], 0, &mut c, &[98], &|row| row as f32);
        assert!(c.rows.iter().all(|h| h.0 != 98));
        let rows = survivors(vec![c], 3);
        assert!(
            rows.iter().all(|&r| r >= 76) && rows.len() == 23,
            "{rows:?}"
        );
        let hits = rescore(vec![rows], 3, |_, _: &mut ()| {}, |_, row, _| row as f32);
        assert_eq!(hits, vec![vec![(99, 99.0), (97, 97.0), (96, 96.0)]]);
        let mut parts = vec![Candidates::new(2), Candidates::new(2)];
        collect(&r[..50], &[0.5; 50], 0, &mut parts[0], &[], &|_| 1.0);
        collect(&r[50..], &[0.5; 50], 50, &mut parts[1], &[], &|_| 1.0);
        assert_eq!(parts[0].rows.len(), 50, "the floor starts at -inf");
        // The overall floor is 98 - 0.5: rows 97.. survive; ties go to the lower row.
        let rows = survivors(parts, 2);
        assert_eq!(rows, vec![97, 98, 99]);
        assert_eq!(
            rescore(vec![rows], 2, |_, _: &mut ()| {}, |_, _, _| 1.0),
            vec![vec![(97, 1.0), (98, 1.0)]]
        );
    }

    #[test]
    fn rows_tied_at_the_floor_are_rescored_not_hoarded() {
        // 100,000 rows with the same approximate score: no floor can prune
        // them; the candidates stay bounded and keep the lowest rows.
        let mut c = Candidates::new(3);
        for row in 0..100_000 {
            c.offer(row, 1.0, 0.5, &|_| 1.0);
            assert!(c.rows.len() < 2 * 3 + 8192);
        }
        assert_eq!(c.exact, vec![(0, 1.0), (1, 1.0), (2, 1.0)]);
        assert_eq!(c.floor(), 1.0);
        let rows = survivors(vec![c], 3);
        assert_eq!(
            rescore(vec![rows], 3, |_, _: &mut ()| {}, |_, _, _| 1.0),
            vec![vec![(0, 1.0), (1, 1.0), (2, 1.0)]]
        );
    }

    #[test]
    fn an_infinite_bound_keeps_the_row() {
        let mut c = Candidates::new(1);
        c.offer(0, 5.0, 0.0, &|r| r as f32);
        c.offer(1, f32::INFINITY, f32::INFINITY, &|r| r as f32);
        assert_eq!(c.rows.len(), 2);
        let rows = survivors(vec![c], 1);
        assert_eq!(
            rescore(vec![rows], 1, |_, _: &mut ()| {}, |_, r, _| r as f32),
            vec![vec![(1, 1.0)]]
        );
    }
}
