//! Exact search: a fast scan with proven error bounds, then an exact float32
//! rescore of the rows that can still reach the top-k (see [`crate::exact`]).
//!
//! Two scans, chosen when the index is built ([`Precision`]):
//!
//! * int8 ([`crate::int8`], AVX512-VNNI, the default where the CPU has it):
//!   the bank is rounded to int8 once, and every score costs a quarter of a
//!   float32 multiply-add;
//! * float32: tiles of up to [`QUERY_BLOCK`] queries x [`BANK_BLOCK`] bank rows, each
//!   computed with one `gemm` call (AVX-512 kernels where the CPU has them)
//!   into a buffer that stays in cache, and scanned while it is hot. Float16
//!   banks are converted one tile of rows at a time; the bank stays float16.
//!
//! Either way every query's candidates reject almost every row with one
//! compare against a floor, and the result is the top-k of the canonical
//! float32 score, whatever the scan, the CPU, the batch or the number of
//! threads: ties are broken by the lower row.

use rayon::prelude::*;
use tandem_bank::{Bank, Vectors};

use crate::exact::{
    abs_term, collect, dot, dots, norm64, norm_up, rescore, survivors, Candidates, Coef,
};
use crate::int8::{self, Int8Bank, Int8Queries, Unit};
use crate::{check_request, sorted_exclusions, Hit, Index, Metric, Precision, SearchError};

/// Queries per tile.
const QUERY_BLOCK: usize = 256;
/// Bank rows per tile.
const BANK_BLOCK: usize = 512;

/// Exact (brute-force) search over a borrowed bank.
#[derive(Debug)]
pub struct Flat<'a> {
    bank: &'a Bank,
    metric: Metric,
    /// `1 / |x|` per bank row (0 for a zero row) when the metric is cosine; empty otherwise.
    inv_norms: Vec<f32>,
    /// The bank rounded for the int8 scan, when it is used.
    int8: Option<Int8Bank>,
    /// Without `int8`: an upper bound on `|y|` per row, `y` the row as scored
    /// (times its inverse norm for cosine). With it: empty (it has its own).
    norms: Vec<f32>,
}

/// How a bank is named in messages.
pub(crate) fn bank_name(bank: &Bank) -> String {
    bank.path()
        .map_or_else(|| "in-memory bank".to_string(), |p| p.display().to_string())
}

/// `f(row, x)` for every bank row `x`: one parallel pass over the bank.
fn per_row(bank: &Bank, f: impl Fn(usize, &[f32]) -> f32 + Sync) -> Vec<f32> {
    let (rows, dim) = (bank.rows(), bank.dim());
    let blocks: Vec<Vec<f32>> = (0..rows.div_ceil(BANK_BLOCK))
        .into_par_iter()
        .map(|b| {
            let r0 = b * BANK_BLOCK;
            let block = bank.rows_f32(r0, ((b + 1) * BANK_BLOCK).min(rows));
            block
                .chunks_exact(dim)
                .enumerate()
                .map(|(i, x)| f(r0 + i, x))
                .collect()
        })
        .collect();
    blocks.concat()
}

/// Checks that the bank is addressable by `u32` rows and holds only finite
/// numbers; returns each row's Euclidean norm. One parallel pass over the bank.
pub(crate) fn row_norms(bank: &Bank) -> Result<Vec<f32>, SearchError> {
    let rows = bank.rows();
    if rows > u32::MAX as usize {
        return Err(SearchError::TooManyRows {
            bank: bank_name(bank),
            rows,
        });
    }
    let norms = per_row(bank, |_, x| x.iter().map(|v| v * v).sum::<f32>().sqrt());
    if let Some(row) = norms.iter().position(|n| !n.is_finite()) {
        return Err(SearchError::NonFiniteBank {
            bank: bank_name(bank),
            row,
        });
    }
    Ok(norms)
}

/// Upper bounds on `|x * inv_norms[row]|` (`inv_norms` empty: 1) for every row.
fn bound_norms(bank: &Bank, inv_norms: &[f32]) -> Vec<f32> {
    per_row(bank, |row, x| {
        let inv = inv_norms.get(row).map_or(1.0, |&n| n as f64);
        norm_up(norm64(x.iter().map(|&v| v as f64 * inv)))
    })
}

impl<'a> Flat<'a> {
    /// An exact index over `bank` with the fastest exact scan this CPU has
    /// ([`Precision::Auto`]). Checks the bank once (NaN/Inf rows are an error)
    /// and, for cosine, keeps every row's inverse norm.
    pub fn new(bank: &'a Bank, metric: Metric) -> Result<Self, SearchError> {
        Flat::with_precision(bank, metric, Precision::Auto)
    }

    /// [`Flat::new`] with the scan chosen by `precision`; the results are the
    /// same either way. [`Precision::Auto`] rounds the bank to int8 once
    /// (one byte per number, beside the bank) where the CPU has AVX512-VNNI
    /// and the bank's scales allow it, and scans in float32 otherwise.
    pub fn with_precision(
        bank: &'a Bank,
        metric: Metric,
        precision: Precision,
    ) -> Result<Self, SearchError> {
        let norms = row_norms(bank)?;
        let inv_norms = match metric {
            Metric::InnerProduct => Vec::new(),
            Metric::Cosine => norms
                .iter()
                .map(|&n| if n > 0.0 { 1.0 / n } else { 0.0 })
                .collect(),
        };
        let int8 = match precision {
            Precision::Auto if int8::available() => Int8Bank::new(bank, &inv_norms),
            _ => None,
        };
        let norms = match int8 {
            Some(_) => Vec::new(),
            None => bound_norms(bank, &inv_norms),
        };
        Ok(Flat {
            bank,
            metric,
            inv_norms,
            int8,
            norms,
        })
    }

    /// About the memory [`Flat::with_precision`] holds beside a `rows` x
    /// `dim` bank: the int8 copy (a byte per number and four numbers per
    /// row) where [`Precision::Auto`] scans in int8 on this CPU, else the
    /// rows' norms.
    pub fn index_bytes(rows: usize, dim: usize, precision: Precision) -> u64 {
        let rows = rows as u64;
        match precision {
            Precision::Auto if int8::available() => rows * (dim.next_multiple_of(4) as u64 + 16),
            _ => rows * 8,
        }
    }

    /// The scan in use: `"int8-vnni"` or `"f32"` (a request whose queries the
    /// int8 scan cannot round is scanned in float32).
    pub fn kernel(&self) -> &'static str {
        match self.int8 {
            Some(_) => "int8-vnni",
            None => "f32",
        }
    }

    /// The bound on `|y|` of every row (see the `norms` field).
    fn norms(&self) -> &[f32] {
        self.int8.as_ref().map_or(&self.norms, Int8Bank::norms)
    }

    /// The canonical score of query `q` (normalised for cosine) and bank row `row`.
    fn score(&self, q: &[f32], row: u32) -> f32 {
        let s = dot(q, &self.bank.row_f32(row as usize));
        match self.metric {
            Metric::InnerProduct => s,
            Metric::Cosine => s * self.inv_norms[row as usize],
        }
    }

    /// The float32 scan of bank blocks `blocks` for the queries `q` (row-major,
    /// first query has number `q0`, bound coefficients `coef`): each query's
    /// candidates within those rows.
    fn scan_f32(
        &self,
        q: &[f32],
        coef: &[Coef],
        q0: usize,
        blocks: std::ops::Range<usize>,
        k: usize,
        exclude: &[Vec<u32>],
    ) -> Vec<Candidates> {
        let (rows, dim) = (self.bank.rows(), self.bank.dim());
        let nq = q.len() / dim;
        let abs = abs_term(dim);
        let mut cands: Vec<Candidates> = (0..nq).map(|_| Candidates::new(k)).collect();
        let mut tile = vec![0f32; nq * BANK_BLOCK];
        let mut beta = vec![0f32; BANK_BLOCK];
        let mut converted = match self.bank.vectors() {
            Vectors::F32(_) => Vec::new(),
            Vectors::F16(_) => vec![0f32; BANK_BLOCK * dim],
        };
        for b in blocks {
            let (r0, r1) = (b * BANK_BLOCK, ((b + 1) * BANK_BLOCK).min(rows));
            let nb = r1 - r0;
            let x: &[f32] = match self.bank.vectors() {
                Vectors::F32(v) => &v[r0 * dim..r1 * dim],
                Vectors::F16(_) => {
                    self.bank.rows_f32_into(r0, r1, &mut converted[..nb * dim]);
                    &converted[..nb * dim]
                }
            };
            let tile = &mut tile[..nq * nb];
            scores(q, x, dim, tile);
            if self.metric == Metric::Cosine {
                let inv = &self.inv_norms[r0..r1];
                for t in tile.chunks_exact_mut(nb) {
                    t.iter_mut().zip(inv).for_each(|(s, n)| *s *= n);
                }
            }
            let norms = &self.norms()[r0..r1];
            for (i, (t, c)) in tile.chunks_exact(nb).zip(cands.iter_mut()).enumerate() {
                let b = coef[i].b;
                beta[..nb]
                    .iter_mut()
                    .zip(norms)
                    .for_each(|(beta, &n)| *beta = b * n + abs);
                let excl: &[u32] = exclude.get(q0 + i).map_or(&[], |v| v.as_slice());
                let q = &q[i * dim..(i + 1) * dim];
                collect(t, &beta[..nb], r0 as u32, c, excl, &|row| {
                    self.score(q, row)
                });
            }
        }
        cands
    }
}

/// `tile[i * nb + j] = q_i . x_j` for queries `q` (nq x dim) and bank rows `x` (nb x dim).
pub(crate) fn scores(q: &[f32], x: &[f32], dim: usize, tile: &mut [f32]) {
    let (nq, nb) = (q.len() / dim, x.len() / dim);
    debug_assert_eq!(tile.len(), nq * nb);
    // SAFETY: dst is nq x nb row-major (row stride nb), lhs is nq x dim
    // row-major, rhs(d, j) = x[j * dim + d] is dim x nb; every index gemm
    // touches lies inside the three slices, whose lengths are checked above.
    unsafe {
        gemm::gemm(
            nq,
            nb,
            dim,
            tile.as_mut_ptr(),
            1,
            nb as isize,
            false,
            q.as_ptr(),
            1,
            dim as isize,
            x.as_ptr(),
            dim as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

impl Index for Flat<'_> {
    fn len(&self) -> usize {
        self.bank.rows()
    }

    fn dim(&self) -> usize {
        self.bank.dim()
    }

    fn metric(&self) -> Metric {
        self.metric
    }

    fn search(
        &self,
        queries: &[f32],
        k: usize,
        exclude: &[Vec<u32>],
    ) -> Result<Vec<Vec<Hit>>, SearchError> {
        let (rows, dim) = (self.bank.rows(), self.bank.dim());
        let nq = check_request(rows, dim, queries, k, exclude)?;
        if nq == 0 {
            return Ok(Vec::new());
        }
        let exclude = sorted_exclusions(exclude);
        let mut q = queries.to_vec();
        if self.metric == Metric::Cosine {
            for row in q.chunks_exact_mut(dim) {
                let n = row.iter().map(|v| v * v).sum::<f32>().sqrt();
                if n > 0.0 {
                    row.iter_mut().for_each(|v| *v /= n);
                }
            }
        }
        // The int8 scan when the bank and these queries can be rounded.
        let int8 = self
            .int8
            .as_ref()
            .and_then(|b| Some((b, Int8Queries::new(&q, dim)?)));
        // The float32 scan's bound coefficients (unused by the int8 scan).
        let coef: Vec<Coef> = match int8 {
            Some(_) => Vec::new(),
            None => q
                .chunks_exact(dim)
                .map(|q| Coef::new(norm64(q.iter().map(|&v| v as f64)), 0.0, dim, 2))
                .collect(),
        };
        // Units of work: (query block, run of bank blocks). Enough runs that
        // every thread has work even for a single query block. The query
        // blocks (at most QUERY_BLOCK queries, whole groups of the int8
        // kernel's QUERY_GROUP) are as equal as the groups allow, so that
        // the threads finish together: 1,000 queries are 248 + 248 + 248 +
        // 256, not 256 + 256 + 256 + 232.
        let qblocks = nq.div_ceil(QUERY_BLOCK);
        let groups = nq.div_ceil(int8::QUERY_GROUP);
        let q_start = |qb: usize| (qb * groups / qblocks * int8::QUERY_GROUP).min(nq);
        let bblocks = rows.div_ceil(BANK_BLOCK);
        let runs = (2 * rayon::current_num_threads())
            .div_ceil(qblocks)
            .clamp(1, bblocks);
        let per_run = bblocks.div_ceil(runs);
        let units: Vec<(usize, usize)> = (0..qblocks)
            .flat_map(|qb| (0..runs).map(move |r| (qb, r)))
            .collect();
        let parts: Vec<Vec<Candidates>> = units
            .par_iter()
            .map(|&(qb, r)| {
                let (q0, q1) = (q_start(qb), q_start(qb + 1));
                let blocks = (r * per_run).min(bblocks)..((r + 1) * per_run).min(bblocks);
                match &int8 {
                    Some((bank, queries)) => {
                        let mut cands = (q0..q1).map(|_| Candidates::new(k)).collect::<Vec<_>>();
                        let unit = Unit {
                            q0,
                            q1,
                            r0: blocks.start * BANK_BLOCK,
                            r1: (blocks.end * BANK_BLOCK).min(rows),
                            exclude: &exclude,
                            abs: abs_term(dim),
                            score: &|i, row| self.score(&q[i * dim..(i + 1) * dim], row),
                        };
                        int8::scan(bank, queries, &unit, &mut cands);
                        cands
                    }
                    None => self.scan_f32(
                        &q[q0 * dim..q1 * dim],
                        &coef[q0..q1],
                        q0,
                        blocks,
                        k,
                        &exclude,
                    ),
                }
            })
            .collect();
        // Every query's candidates from every run, its survivors rescored.
        let mut per_query: Vec<Vec<Candidates>> =
            (0..nq).map(|_| Vec::with_capacity(runs)).collect();
        for (&(qb, _), part) in units.iter().zip(parts) {
            for (i, c) in part.into_iter().enumerate() {
                per_query[q_start(qb) + i].push(c);
            }
        }
        let survivors = per_query
            .into_par_iter()
            .map(|parts| survivors(parts, k))
            .collect();
        Ok(rescore(survivors, rows, k, |row, queries, out| {
            dots(&self.bank.row_f32(row as usize), &q, queries, out);
            if self.metric == Metric::Cosine {
                let inv = self.inv_norms[row as usize];
                out.iter_mut().for_each(|s| *s *= inv);
            }
        }))
    }
}
