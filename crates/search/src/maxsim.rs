//! Exact late-interaction search over a [`MultiBank`]: a query (several
//! token vectors) scores a document by MaxSim, the sum over the query's
//! tokens of the best inner product with the document's tokens.
//!
//! The documents are cut into fixed blocks of whole documents (about
//! [`BLOCK_TOKENS`] tokens each), searched in parallel; for each block and
//! each group of queries one matrix product (the SIMD gemm of [`Flat`])
//! scores every query token against every token of the block, then each
//! document's maxima are summed in token order. The blocks do not depend
//! on the thread count, so the scores are the same bits on every run, and
//! ties go to the lower document.
//!
//! [`Flat`]: crate::Flat

use std::ops::Range;

use rayon::prelude::*;
use tandem_bank::MultiBank;

use crate::flat::scores;
use crate::topk::{merge, TopK};
use crate::{Hit, SearchError};

/// Tokens per block of documents (a longer document is a block alone).
pub const BLOCK_TOKENS: usize = 2048;

/// Query tokens scored against a block at once.
const QUERY_TOKENS: usize = 1024;

/// Exact MaxSim search over a multi-vector bank.
#[derive(Debug)]
pub struct MaxSim<'a> {
    bank: &'a MultiBank,
    /// Document ranges of the blocks.
    blocks: Vec<(usize, usize)>,
}

impl<'a> MaxSim<'a> {
    /// Ready to search `bank`.
    pub fn new(bank: &'a MultiBank) -> MaxSim<'a> {
        let off = bank.offsets();
        let mut blocks = Vec::new();
        let mut start = 0;
        for d in 0..bank.docs() {
            if d > start && off[d + 1] - off[start] > BLOCK_TOKENS {
                blocks.push((start, d));
                start = d;
            }
        }
        if start < bank.docs() {
            blocks.push((start, bank.docs()));
        }
        MaxSim { bank, blocks }
    }

    /// The blocks the documents are searched in.
    pub fn blocks(&self) -> usize {
        self.blocks.len()
    }

    /// The MaxSim of one query (token rows `query`, `[tokens, dim]`)
    /// against each of `docs` (documents of the bank), in the order given.
    pub fn score(&self, query: &[f32], docs: &[u32]) -> Result<Vec<f32>, SearchError> {
        check_queries(self.bank.dim(), query, &[0, query.len() / self.bank.dim()])?;
        assert!(
            docs.iter().all(|&d| (d as usize) < self.bank.docs()),
            "documents of the bank"
        );
        Ok(score_docs(self.bank, query, docs))
    }

    /// The best `k` documents of each query, best first: `(document,
    /// MaxSim)`. Query `i` is the token rows `q_offsets[i]..q_offsets[i +
    /// 1]` of `queries` (`[tokens, dim]`). `progress(n)` is called after
    /// each block with the documents it held.
    pub fn search(
        &self,
        queries: &[f32],
        q_offsets: &[usize],
        k: usize,
        progress: impl Fn(usize) + Sync,
    ) -> Result<Vec<Vec<Hit>>, SearchError> {
        let nq = check_queries(self.bank.dim(), queries, q_offsets)?;
        if k == 0 || nq == 0 {
            return Ok(vec![Vec::new(); nq]);
        }
        // groups of whole queries, about QUERY_TOKENS tokens each
        let mut groups = Vec::new();
        let mut g0 = 0;
        for q in 0..nq {
            if q > g0 && q_offsets[q + 1] - q_offsets[g0] > QUERY_TOKENS {
                groups.push((g0, q));
                g0 = q;
            }
        }
        groups.push((g0, nq));
        let parts: Vec<Vec<Vec<Hit>>> = self
            .blocks
            .par_iter()
            .map(|&(d0, d1)| {
                let hits = self.block(d0, d1, queries, q_offsets, &groups, k);
                progress(d1 - d0);
                hits
            })
            .collect();
        let mut per_query: Vec<Vec<Vec<Hit>>> = vec![Vec::with_capacity(parts.len()); nq];
        for part in parts {
            for (q, hits) in part.into_iter().enumerate() {
                per_query[q].push(hits);
            }
        }
        Ok(per_query.into_iter().map(|p| merge(p, k)).collect())
    }

    /// The best `k` of documents `d0..d1` for every query.
    fn block(
        &self,
        d0: usize,
        d1: usize,
        queries: &[f32],
        q_offsets: &[usize],
        groups: &[(usize, usize)],
        k: usize,
    ) -> Vec<Vec<Hit>> {
        let (dim, off) = (self.bank.dim(), self.bank.offsets());
        let (t0, t1) = (off[d0], off[d1]);
        let nt = t1 - t0;
        let x = self.bank.tokens().rows_f32(t0, t1);
        let mut out = Vec::with_capacity(q_offsets.len() - 1);
        let mut tile = Vec::new();
        for &(q0, q1) in groups {
            let (r0, r1) = (q_offsets[q0], q_offsets[q1]);
            tile.clear();
            tile.resize((r1 - r0) * nt, 0.0);
            if nt > 0 {
                scores(&queries[r0 * dim..r1 * dim], &x, dim, &mut tile);
            }
            for q in q0..q1 {
                let mut top = TopK::new(k);
                for d in d0..d1 {
                    let s = sum_of_max(
                        &tile,
                        nt,
                        q_offsets[q] - r0..q_offsets[q + 1] - r0,
                        off[d] - t0..off[d + 1] - t0,
                    );
                    if s > top.threshold() {
                        top.push(d as u32, s);
                    }
                }
                out.push(top.into_sorted());
            }
        }
        out
    }
}

/// Checks a batch of multi-vector queries against width `dim`: whole rows,
/// and offsets from 0 to the rows without going back. Returns the number
/// of queries.
pub(crate) fn check_queries(
    dim: usize,
    queries: &[f32],
    q_offsets: &[usize],
) -> Result<usize, SearchError> {
    if !queries.len().is_multiple_of(dim) {
        return Err(SearchError::QueryDim {
            len: queries.len(),
            dim,
        });
    }
    if q_offsets.first().is_some_and(|&o| o != 0)
        || q_offsets.last().is_some_and(|&o| o * dim != queries.len())
        || q_offsets.windows(2).any(|w| w[1] < w[0])
    {
        return Err(SearchError::QueryOffsets {
            rows: queries.len() / dim,
        });
    }
    Ok(q_offsets.len().saturating_sub(1))
}

/// One document's MaxSim out of a tile of token scores (`tile` row-major,
/// `cols` columns: query token rows by document token columns): over the
/// query token rows `rows`, the best score among the document's columns
/// `doc`, summed in row order. A document without tokens scores 0.
#[inline]
pub(crate) fn sum_of_max(tile: &[f32], cols: usize, rows: Range<usize>, doc: Range<usize>) -> f32 {
    let mut s = 0.0f32;
    for r in rows {
        let row = &tile[r * cols..(r + 1) * cols];
        s += row[doc.clone()]
            .iter()
            .copied()
            .reduce(f32::max)
            .unwrap_or(0.0);
    }
    s
}

/// The exact MaxSim of one query (token rows `q`) against each of `docs`
/// of `bank`, in the order given (the documents' float16 or float32 rows
/// converted a block at a time).
pub(crate) fn score_docs(bank: &MultiBank, q: &[f32], docs: &[u32]) -> Vec<f32> {
    score_blocks(
        q,
        bank.dim(),
        docs,
        |d| bank.doc_rows(d as usize).len(),
        |d, out| {
            let rows = bank.doc_rows(d as usize);
            bank.tokens().rows_f32_into(rows.start, rows.end, out);
        },
    )
}

/// The MaxSim of one query (token rows `q`) against each of `docs`, in the
/// order given: `rows(d)` is document `d`'s number of token rows and
/// `fill(d, out)` writes them into `out` as float32. The documents are
/// scored in blocks of about [`BLOCK_TOKENS`] tokens, one gemm each, with
/// buffers reused from block to block.
pub(crate) fn score_blocks(
    q: &[f32],
    dim: usize,
    docs: &[u32],
    rows: impl Fn(u32) -> usize,
    mut fill: impl FnMut(u32, &mut [f32]),
) -> Vec<f32> {
    let mut out = Vec::with_capacity(docs.len());
    let (mut x, mut tile, mut bounds) = (Vec::new(), Vec::new(), vec![0usize]);
    for (i, &d) in docs.iter().enumerate() {
        let at = x.len();
        x.resize(at + rows(d) * dim, 0.0);
        fill(d, &mut x[at..]);
        bounds.push(x.len() / dim);
        if x.len() / dim >= BLOCK_TOKENS || i + 1 == docs.len() {
            out.extend(score_rows(q, &x, &bounds, dim, &mut tile));
            x.clear();
            bounds.truncate(1);
        }
    }
    out
}

/// The MaxSim of the query token rows `q` against documents whose token
/// rows lie in `x`, document `i` owning rows `bounds[i]..bounds[i + 1]`.
fn score_rows(q: &[f32], x: &[f32], bounds: &[usize], dim: usize, tile: &mut Vec<f32>) -> Vec<f32> {
    let (nq, nx) = (q.len() / dim, x.len() / dim);
    tile.clear();
    tile.resize(nq * nx, 0.0);
    if nq > 0 && nx > 0 {
        scores(q, x, dim, tile);
    }
    bounds
        .windows(2)
        .map(|w| sum_of_max(tile, nx, 0..nq, w[0]..w[1]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use tandem_bank::{offsets_path, write_npy, write_offsets, Overwrite, Vectors};

    fn bank(dir: &Path, tokens: &[f32], offsets: &[usize]) -> MultiBank {
        let p = dir.join("m.npy");
        write_npy(
            &p,
            tokens.len() / 2,
            2,
            Vectors::F32(tokens),
            Overwrite::Allow,
        )
        .unwrap();
        write_offsets(&offsets_path(&p), offsets, Overwrite::Allow).unwrap();
        MultiBank::open(&p, None).unwrap()
    }

    #[test]
    fn sums_the_best_token_of_each_query_token() {
        let dir = tempfile::tempdir().unwrap();
        // doc 0: (1,0),(0,1); doc 1: (0.6,0.8); doc 2: no tokens; doc 3 = doc 0
        let b = bank(
            dir.path(),
            &[1.0, 0.0, 0.0, 1.0, 0.6, 0.8, 1.0, 0.0, 0.0, 1.0],
            &[0, 2, 3, 3, 5],
        );
        let m = MaxSim::new(&b);
        // query: (1,0),(0,1) -> doc 0: 2, doc 1: 1.4, doc 2: 0, doc 3: 2 (tie: lower first)
        let q = [1.0, 0.0, 0.0, 1.0, 0.0, 1.0];
        let hits = m.search(&q, &[0, 2, 3], 4, |_| {}).unwrap();
        assert_eq!(
            hits[0],
            vec![(0, 2.0), (3, 2.0), (1, 0.6f32 + 0.8), (2, 0.0)]
        );
        assert_eq!(hits[1][..2], [(0, 1.0), (3, 1.0)]);
    }

    #[test]
    fn bad_query_offsets_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let b = bank(dir.path(), &[1.0, 0.0], &[0, 1]);
        let e = MaxSim::new(&b).search(&[1.0, 0.0], &[0, 2], 1, |_| {});
        assert!(e.is_err());
    }
}
