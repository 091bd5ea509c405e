//! Exact search: a blocked matrix multiply with a fused top-k.
//!
//! The work is cut into tiles of [`QUERY_BLOCK`] queries x [`BANK_BLOCK`] bank
//! rows. Each tile's scores are computed with one `gemm` call (AVX-512 kernels
//! where the CPU has them) into a buffer that stays in cache, and every query's
//! running top-k scans its row of the tile, rejecting almost every score with
//! one compare against its current k-th score. Float16 banks are converted one
//! tile of rows at a time; the bank itself stays float16.
//!
//! Tile boundaries are fixed multiples of the block sizes, so every score is
//! computed the same way whatever the number of threads, and the final order
//! (score, then lower row) is total: results do not depend on the thread count.

use rayon::prelude::*;
use tandem_bank::{Bank, Vectors};

use crate::topk::{merge, TopK};
use crate::{check_request, sorted_exclusions, Hit, Index, Metric, SearchError};

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
}

/// How a bank is named in messages.
pub(crate) fn bank_name(bank: &Bank) -> String {
    bank.path()
        .map_or_else(|| "in-memory bank".to_string(), |p| p.display().to_string())
}

/// Checks that the bank is addressable by `u32` rows and holds only finite
/// numbers; returns each row's Euclidean norm. One parallel pass over the bank.
pub(crate) fn row_norms(bank: &Bank) -> Result<Vec<f32>, SearchError> {
    let (rows, dim) = (bank.rows(), bank.dim());
    if rows > u32::MAX as usize {
        return Err(SearchError::TooManyRows {
            bank: bank_name(bank),
            rows,
        });
    }
    let blocks: Vec<Vec<f32>> = (0..rows.div_ceil(BANK_BLOCK))
        .into_par_iter()
        .map(|b| {
            let (r0, r1) = (b * BANK_BLOCK, ((b + 1) * BANK_BLOCK).min(rows));
            let block = bank.rows_f32(r0, r1);
            block
                .chunks_exact(dim)
                .map(|x| x.iter().map(|v| v * v).sum::<f32>().sqrt())
                .collect()
        })
        .collect();
    let norms: Vec<f32> = blocks.concat();
    if let Some(row) = norms.iter().position(|n| !n.is_finite()) {
        return Err(SearchError::NonFiniteBank {
            bank: bank_name(bank),
            row,
        });
    }
    Ok(norms)
}

impl<'a> Flat<'a> {
    /// An exact index over `bank`. Checks the bank once (NaN/Inf rows are an
    /// error) and, for cosine, keeps every row's inverse norm.
    pub fn new(bank: &'a Bank, metric: Metric) -> Result<Self, SearchError> {
        let norms = row_norms(bank)?;
        let inv_norms = match metric {
            Metric::InnerProduct => Vec::new(),
            Metric::Cosine => norms
                .iter()
                .map(|&n| if n > 0.0 { 1.0 / n } else { 0.0 })
                .collect(),
        };
        Ok(Flat {
            bank,
            metric,
            inv_norms,
        })
    }

    /// Scans bank blocks `blocks` for the queries `q` (row-major, first query
    /// has number `q0`), returning each query's top-k within those rows.
    fn scan(
        &self,
        q: &[f32],
        q0: usize,
        blocks: std::ops::Range<usize>,
        k: usize,
        exclude: &[Vec<u32>],
    ) -> Vec<Vec<Hit>> {
        let (rows, dim) = (self.bank.rows(), self.bank.dim());
        let nq = q.len() / dim;
        let mut tops: Vec<TopK> = (0..nq).map(|_| TopK::new(k)).collect();
        let mut tile = vec![0f32; nq * BANK_BLOCK];
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
            for (i, (t, top)) in tile.chunks_exact(nb).zip(tops.iter_mut()).enumerate() {
                let excl: &[u32] = exclude.get(q0 + i).map_or(&[], |v| v.as_slice());
                collect(t, r0 as u32, top, excl);
            }
        }
        tops.into_iter().map(TopK::into_sorted).collect()
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

/// Offers one query's tile row (scores of rows `r0..`) to its top-k. Sixteen
/// scores at a time are compared against the threshold; only a lane that beats
/// it is looked at one by one.
#[inline]
fn collect(t: &[f32], r0: u32, top: &mut TopK, excl: &[u32]) {
    let mut th = top.threshold();
    let mut offer = |j: usize, s: f32, th: &mut f32| {
        let row = r0 + j as u32;
        if excl.binary_search(&row).is_err() {
            top.push(row, s);
            *th = top.threshold();
        }
    };
    let mut chunks = t.chunks_exact(16);
    let mut base = 0;
    for c in &mut chunks {
        if c.iter().fold(false, |any, &s| any | (s > th)) {
            for (j, &s) in c.iter().enumerate() {
                if s > th {
                    offer(base + j, s, &mut th);
                }
            }
        }
        base += 16;
    }
    for (j, &s) in chunks.remainder().iter().enumerate() {
        if s > th {
            offer(base + j, s, &mut th);
        }
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
        // Units of work: (query block, run of bank blocks). Enough runs that
        // every thread has work even for a single query block.
        let qblocks = nq.div_ceil(QUERY_BLOCK);
        let bblocks = rows.div_ceil(BANK_BLOCK);
        let runs = (2 * rayon::current_num_threads())
            .div_ceil(qblocks)
            .clamp(1, bblocks);
        let per_run = bblocks.div_ceil(runs);
        let units: Vec<(usize, usize)> = (0..qblocks)
            .flat_map(|qb| (0..runs).map(move |r| (qb, r)))
            .collect();
        let parts: Vec<Vec<Vec<Hit>>> = units
            .par_iter()
            .map(|&(qb, r)| {
                let (q0, q1) = (qb * QUERY_BLOCK, ((qb + 1) * QUERY_BLOCK).min(nq));
                let blocks = (r * per_run).min(bblocks)..((r + 1) * per_run).min(bblocks);
                self.scan(&q[q0 * dim..q1 * dim], q0, blocks, k, &exclude)
            })
            .collect();
        let mut out = Vec::with_capacity(nq);
        for per_block in parts.chunks(runs) {
            let n = per_block[0].len();
            for i in 0..n {
                out.push(merge(per_block.iter().map(|p| p[i].clone()), k));
            }
        }
        Ok(out)
    }
}
