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
//! row below the floor cannot be in the top-k. [`rescore`] rescores the
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

use crate::topk::{best, TopK};
use crate::Hit;

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
    dot_n([a], b)[0]
}

/// [`dot`] of `x` with each query `queries[j]` (rows of the row-major `q`,
/// `x.len()` columns) into `out[j]`: the same bits as one [`dot`] at a time.
/// Four dot products run interleaved, so the row is read once for four
/// queries and four independent chains of adds hide each other's latency.
pub(crate) fn dots(x: &[f32], q: &[f32], queries: &[u32], out: &mut [f32]) {
    let dim = x.len();
    let row = |i: u32| &q[i as usize * dim..(i as usize + 1) * dim];
    let mut quads = queries.chunks_exact(4);
    let mut outs = out.chunks_exact_mut(4);
    for (qs, out) in (&mut quads).zip(&mut outs) {
        out.copy_from_slice(&dot_n([row(qs[0]), row(qs[1]), row(qs[2]), row(qs[3])], x));
    }
    for (&i, out) in quads.remainder().iter().zip(outs.into_remainder()) {
        *out = dot(row(i), x);
    }
}

/// [`dot`] of each of `a` with `b`, compiled for AVX-512 where the CPU has it.
fn dot_n<const N: usize>(a: [&[f32]; N], b: &[f32]) -> [f32; N] {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512 F (checked just above).
        return unsafe { dot_avx512(a, b) };
    }
    dot_lanes(a, b)
}

/// [`dot_lanes`] in AVX-512 registers: each dot product's 16 sums are one
/// register, the remainder is added under a mask (the other lanes untouched)
/// and the tree pairs the lanes as [`dot_lanes`] does, so the bits are the
/// portable code's (a test compares them).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn dot_avx512<const N: usize>(a: [&[f32]; N], b: &[f32]) -> [f32; N] {
    use std::arch::x86_64::*;
    let n = b.len();
    assert!(a.iter().all(|a| a.len() == n));
    let mut acc = [_mm512_setzero_ps(); N];
    let full = n / 16 * 16;
    for i in (0..full).step_by(16) {
        // SAFETY: i + 16 <= n = the length of b and of every a (asserted).
        unsafe {
            let y = _mm512_loadu_ps(b.as_ptr().add(i));
            for (acc, a) in acc.iter_mut().zip(&a) {
                *acc = _mm512_add_ps(*acc, _mm512_mul_ps(_mm512_loadu_ps(a.as_ptr().add(i)), y));
            }
        }
    }
    if full < n {
        let m = ((1u32 << (n - full)) - 1) as __mmask16;
        // SAFETY: the masked loads read lanes full..n only, within every slice.
        unsafe {
            let y = _mm512_maskz_loadu_ps(m, b.as_ptr().add(full));
            for (acc, a) in acc.iter_mut().zip(&a) {
                let p = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, a.as_ptr().add(full)), y);
                *acc = _mm512_mask_add_ps(*acc, m, *acc, p);
            }
        }
    }
    acc.map(|v| {
        // Lanes 0..8 += 8..16, then 0..4 += 4..8, 0..2 += 2..4, 0 += 1.
        let v = _mm512_add_ps(v, _mm512_shuffle_f32x4::<0b1110_1110>(v, v));
        let v = _mm512_add_ps(v, _mm512_shuffle_f32x4::<0b0000_0001>(v, v));
        let v = _mm512_castps512_ps128(v);
        let v = _mm_add_ps(v, _mm_movehl_ps(v, v));
        _mm_cvtss_f32(_mm_add_ss(v, _mm_movehdup_ps(v)))
    })
}

#[inline(always)]
fn dot_lanes<const N: usize>(a: [&[f32]; N], b: &[f32]) -> [f32; N] {
    const LANES: usize = 16;
    assert!(a.iter().all(|a| a.len() == b.len()));
    let mut acc = [[0f32; LANES]; N];
    let full = b.len() / LANES * LANES;
    for (c, y) in b[..full].chunks_exact(LANES).enumerate() {
        for (acc, a) in acc.iter_mut().zip(&a) {
            let x = &a[c * LANES..(c + 1) * LANES];
            for l in 0..LANES {
                acc[l] += x[l] * y[l];
            }
        }
    }
    let mut out = [0f32; N];
    for ((acc, a), out) in acc.iter_mut().zip(&a).zip(&mut out) {
        for (l, (x, y)) in a[full..].iter().zip(&b[full..]).enumerate() {
            acc[l] += x * y;
        }
        let mut width = LANES / 2;
        while width > 0 {
            for l in 0..width {
                acc[l] += acc[l + width];
            }
            width /= 2;
        }
        *out = acc[0];
    }
    out
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
    /// overflowed bound) keep the row and leave the floor alone.
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
        self.prune(score);
    }

    /// [`Candidates::offer`] for several rows at once, in increasing row
    /// order, compared with one floor (a floor taken before the last rows
    /// raised it only keeps more rows): `rows` reached it with upper ends
    /// `his`; of those, `lows` beat it with lower ends `lo`.
    #[inline]
    pub(crate) fn take(
        &mut self,
        rows: &[u32],
        his: &[f32],
        lows: &[u32],
        lo: &[f32],
        score: &dyn Fn(u32) -> f32,
    ) {
        for (&row, &lo) in lows.iter().zip(lo) {
            self.low.push(row, lo);
        }
        self.rows
            .extend(rows.iter().zip(his).map(|(&row, &hi)| (row, hi)));
        self.prune(score);
    }

    /// When pruning rows under the floor cannot keep `rows` within `2k +
    /// 8192` (rows tied at the floor), they are rescored by `score` and only
    /// the best k kept.
    #[inline]
    fn prune(&mut self, score: &dyn Fn(u32) -> f32) {
        let cap = 2 * self.k + 8192;
        if self.rows.len() >= cap {
            let floor = self.floor();
            self.rows.retain(|c| reaches(c.1, floor));
            if 2 * self.rows.len() >= cap {
                let rescored = self.rows.drain(..).map(|(row, _)| (row, score(row)));
                self.exact = best(self.exact.drain(..).chain(rescored), self.k);
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
    for (chunk, (rs, bs)) in r.chunks(W).zip(beta.chunks(W)).enumerate() {
        let floor = c.floor();
        // One bit per lane that reaches the floor; only those are looked at.
        let reach = rs
            .iter()
            .zip(bs)
            .enumerate()
            .fold(0u32, |m, (j, (&s, &b))| {
                m | ((reaches(s + b, floor) as u32) << j)
            });
        offer_lanes(reach, rs, bs, r0 + (chunk * W) as u32, c, excl, score);
    }
}

/// Offers the lanes set in `reach` (bit `j`: row `r0 + j`, score `r[j]`,
/// bound `beta[j]`) that still reach the floor, which rises as rows are
/// offered, skipping excluded rows (`excl` sorted). A kernel that compares
/// the upper ends with the floor itself (in vector registers) calls this
/// only when some lane reaches it.
#[inline]
pub(crate) fn offer_lanes(
    mut reach: u32,
    r: &[f32],
    beta: &[f32],
    r0: u32,
    c: &mut Candidates,
    excl: &[u32],
    score: &dyn Fn(u32) -> f32,
) {
    let mut floor = c.floor();
    while reach != 0 {
        let j = reach.trailing_zeros() as usize;
        reach &= reach - 1;
        let (s, b) = (r[j], beta[j]);
        let row = r0 + j as u32;
        if reaches(s + b, floor) && excl.binary_search(&row).is_err() {
            c.offer(row, s, b, score);
            floor = c.floor();
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
        lows.push(p.low);
        rows.push(p.rows);
        exact.extend(p.exact.into_iter().map(|h| h.0));
    }
    let floor = TopK::kth(lows, k).unwrap_or(f32::NEG_INFINITY);
    rows.into_iter()
        .flatten()
        .filter(|c| reaches(c.1, floor))
        .map(|c| c.0)
        .chain(exact)
        .collect()
}

/// The exact top-k of every query from its survivors (rows of a bank of
/// `rows`): each (query, row) pair rescored canonically, best first, ties to
/// the lower row. The pairs are taken in bank order, so the bank is read in
/// one sweep however many queries share a row: `score(row, queries, out)`
/// writes the canonical scores of `row` with each of `queries` into `out`.
pub(crate) fn rescore(
    survivors: Vec<Vec<u32>>,
    rows: usize,
    k: usize,
    score: impl Fn(u32, &[u32], &mut [f32]) + Sync,
) -> Vec<Vec<Hit>> {
    /// Pairs per parallel task, about.
    const CHUNK: usize = 4096;
    // The queries of every row, rows in order (a counting sort: `start[r]..
    // start[r + 1]` of `queries` are row r's).
    let mut start = vec![0usize; rows + 1];
    for &r in survivors.iter().flatten() {
        start[r as usize + 1] += 1;
    }
    for r in 0..rows {
        start[r + 1] += start[r];
    }
    // `place[j]`: where the j-th pair of the survivors (query by query) went.
    let mut queries = vec![0u32; start[rows]];
    let mut place = Vec::with_capacity(start[rows]);
    let mut next = start.clone();
    for (q, rs) in survivors.iter().enumerate() {
        for &r in rs {
            queries[next[r as usize]] = q as u32;
            place.push(next[r as usize]);
            next[r as usize] += 1;
        }
    }
    // Tasks: runs of whole rows of about CHUNK pairs, each writing the
    // scores of its own pairs.
    let mut cuts = vec![0usize];
    for r in 0..rows {
        if start[r + 1] - start[*cuts.last().expect("starts at 0")] >= CHUNK {
            cuts.push(r + 1);
        }
    }
    cuts.push(rows);
    let mut scores = vec![0f32; start[rows]];
    let mut tasks = Vec::with_capacity(cuts.len());
    let mut rest = &mut scores[..];
    for w in cuts.windows(2) {
        let (out, tail) = rest.split_at_mut(start[w[1]] - start[w[0]]);
        tasks.push((w[0], w[1], out));
        rest = tail;
    }
    tasks.into_par_iter().for_each(|(r0, r1, out)| {
        for r in r0..r1 {
            let (a, b) = (start[r] - start[r0], start[r + 1] - start[r0]);
            if a < b {
                score(r as u32, &queries[start[r]..start[r + 1]], &mut out[a..b]);
            }
        }
    });
    // Each query's hits (in parallel): its survivors with their scores.
    let mut places = place.as_slice();
    let per_query: Vec<&[usize]> = survivors
        .iter()
        .map(|rs| {
            let (these, others) = places.split_at(rs.len());
            places = others;
            these
        })
        .collect();
    survivors
        .par_iter()
        .zip(per_query)
        .map(|(rs, at)| best(rs.iter().zip(at).map(|(&r, &p)| (r, scores[p])), k))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rescores every pair with the row's number.
    fn by_row(row: u32, _: &[u32], out: &mut [f32]) {
        out.fill(row as f32);
    }

    /// Rescores every pair with 1.
    fn ones(_: u32, _: &[u32], out: &mut [f32]) {
        out.fill(1.0);
    }

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
        assert_eq!(dot_lanes([&a], &b)[0].to_bits(), acc[0].to_bits());
        assert_eq!(dot(&[], &[]), 0.0);
        // The vector code and the portable code agree bit for bit at every
        // length (whole registers and remainders), on values of mixed scale.
        let v = |i: usize, f: f32| (i as f32 * f).sin() * 10f32.powi((i % 7) as i32 - 3);
        for n in 0..70 {
            let x: Vec<Vec<f32>> = (0..4)
                .map(|j| (0..n).map(|i| v(i, 0.7 + j as f32)).collect())
                .collect();
            let y: Vec<f32> = (0..n).map(|i| v(i, 0.3)).collect();
            let a = [&x[0][..], &x[1][..], &x[2][..], &x[3][..]];
            let bits = |d: [f32; 4]| d.map(f32::to_bits);
            assert_eq!(bits(dot_n(a, &y)), bits(dot_lanes(a, &y)), "length {n}");
        }
        // Several queries at once: the same bits, whatever their number.
        let q: Vec<f32> = (0..37 * 7).map(|i| (i as f32 * 0.11).sin()).collect();
        let queries = [6, 0, 3, 3, 5, 1, 2];
        for n in 0..=queries.len() {
            let mut out = vec![0f32; n];
            dots(&b, &q, &queries[..n], &mut out);
            for (&i, o) in queries.iter().zip(&out) {
                let i = i as usize;
                assert_eq!(o.to_bits(), dot(&q[i * 37..(i + 1) * 37], &b).to_bits());
            }
        }
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
        let hits = rescore(vec![rows], 100, 3, by_row);
        assert_eq!(hits, vec![vec![(99, 99.0), (97, 97.0), (96, 96.0)]]);
        let mut parts = vec![Candidates::new(2), Candidates::new(2)];
        collect(&r[..50], &[0.5; 50], 0, &mut parts[0], &[], &|_| 1.0);
        collect(&r[50..], &[0.5; 50], 50, &mut parts[1], &[], &|_| 1.0);
        assert_eq!(parts[0].rows.len(), 50, "the floor starts at -inf");
        // The overall floor is 98 - 0.5: rows 97.. survive; ties go to the lower row.
        let rows = survivors(parts, 2);
        assert_eq!(rows, vec![97, 98, 99]);
        assert_eq!(
            rescore(vec![rows], 100, 2, ones),
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
            rescore(vec![rows], 100_000, 3, ones),
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
        assert_eq!(rescore(vec![rows], 2, 1, by_row), vec![vec![(1, 1.0)]]);
    }
}
