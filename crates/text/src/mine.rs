//! Hard negatives mined with a model, as sentence-transformers'
//! `mine_hard_negatives` mines them: every query ranked against a corpus by
//! cosine, its positives left out, then candidates kept by rank window,
//! score bounds and margins to the positive, and the negatives taken from
//! the top or sampled.
//!
//! [`candidates`] embeds and ranks (one exact search, the same for
//! `tandem mine` and for the negatives a training run refreshes; cosine
//! for a dense model, MaxSim for a ColBERT);
//! [`MineSettings::select`] applies sentence-transformers' filters to one
//! query's candidates; [`in_band`] keeps the candidates whose score lies in
//! a band measured against the positive's (a training curriculum's band).

use std::fmt;
use std::str::FromStr;

use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use tandem_bank::{Bank, MultiBank};
use tandem_nn::Params;
use tandem_search::{Flat, Hit, Index, MaxSim, Metric, SearchError};

use crate::{ColBert, ColbertTokens, Side, TextError, Towers};

/// For each query, its nearest documents by cosine with its positives left
/// out, and the cosine of each of its positives.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Candidates {
    /// `(document, cosine)` per query, best first (ties: the lower
    /// document first), at most the `k` asked for.
    pub hits: Vec<Vec<Hit>>,
    /// The cosine of each positive of each query, in the order given.
    pub positive_scores: Vec<Vec<f32>>,
}

/// Rows of `v` (`[n, dim]`) scaled to unit length (a zero row stays zero).
fn unit_rows(v: &mut [f32], dim: usize) {
    for row in v.chunks_exact_mut(dim) {
        let n = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        if n > 0.0 {
            row.iter_mut().for_each(|x| *x /= n);
        }
    }
}

/// The model a mining ranking is made with: dense towers rank by cosine
/// ([`rank`]), a ColBERT by MaxSim ([`rank_maxsim`]).
pub enum Ranker {
    Towers(Box<Towers>),
    Colbert(Box<ColBert>),
}

/// The vectors of one batch of texts: `[rows, dim]`, text after text, and
/// how many rows each text has (1 for a dense model, its kept tokens for a
/// ColBERT).
#[derive(Debug, Clone, Default)]
pub struct BatchVectors {
    pub vectors: Vec<f32>,
    pub rows: Vec<usize>,
}

/// Every text's vectors: text `i` has rows `offsets[i]..offsets[i + 1]` of
/// `vectors` (`[rows, dim]`).
#[derive(Debug, Clone, Default)]
pub struct TextVectors {
    pub vectors: Vec<f32>,
    pub offsets: Vec<usize>,
}

impl Ranker {
    /// The width of the vectors.
    pub fn dim(&self) -> usize {
        match self {
            Ranker::Towers(t) => t.dim(),
            Ranker::Colbert(c) => c.dim(),
        }
    }

    /// Whether the scores are MaxSim sums (else cosines).
    pub fn is_colbert(&self) -> bool {
        matches!(self, Ranker::Colbert(_))
    }

    /// The model's parameters (both towers', joined, for a dense model).
    pub fn params(&self) -> Params {
        match self {
            Ranker::Towers(t) => t.joined_params(),
            Ranker::Colbert(c) => c.embedder().params().clone(),
        }
    }

    /// The batches the texts are embedded in: indices into `docs`, then
    /// into `queries` offset by `docs.len()`; a batch holds one side only.
    /// Fixed for fixed input, so the same texts give the same bits.
    pub fn batches(&self, queries: &[Vec<u32>], docs: &[Vec<u32>]) -> Vec<Vec<usize>> {
        let (q, d) = match self {
            Ranker::Towers(t) => (t.query(), t.document()),
            Ranker::Colbert(c) => (c.embedder(), c.embedder()),
        };
        let nd = docs.len();
        let mut batches = d.batches(docs);
        batches.extend(
            q.batches(queries)
                .into_iter()
                .map(|b| b.into_iter().map(|i| i + nd).collect()),
        );
        batches
    }

    /// The vectors of one batch of texts (token ids, prompts or ColBERT
    /// prefixes included) on `side`.
    fn embed(&self, side: Side, tokens: &[Vec<u32>]) -> BatchVectors {
        match self {
            Ranker::Towers(t) => {
                let tower = match side {
                    Side::Query => t.query(),
                    Side::Document => t.document(),
                };
                BatchVectors {
                    vectors: tower.embed_tokens(tokens),
                    rows: vec![1; tokens.len()],
                }
            }
            Ranker::Colbert(c) => {
                let toks: Vec<ColbertTokens> =
                    tokens.iter().map(|t| c.expand(t.clone(), side)).collect();
                let (vectors, rows, _) = c.forward_tokens(&toks, side, None, None);
                BatchVectors { vectors, rows }
            }
        }
    }

    /// The vectors of one batch of [`Ranker::batches`] (indices into
    /// `docs`, then into `queries` offset by `docs.len()`).
    pub fn embed_batch(
        &self,
        batch: &[usize],
        queries: &[Vec<u32>],
        docs: &[Vec<u32>],
    ) -> BatchVectors {
        let nd = docs.len();
        // a batch holds documents only or queries only
        let (side, tokens): (Side, Vec<Vec<u32>>) = if batch[0] < nd {
            (
                Side::Document,
                batch.iter().map(|&i| docs[i].clone()).collect(),
            )
        } else {
            (
                Side::Query,
                batch.iter().map(|&i| queries[i - nd].clone()).collect(),
            )
        };
        self.embed(side, &tokens)
    }

    /// The documents' and the queries' vectors, in text order, out of the
    /// vectors of `batches` (as [`Ranker::batches`] made them for `docs`
    /// documents): each batch's vectors are dropped once copied, so the
    /// texts' vectors are held about once.
    pub fn gather(
        &self,
        batches: &[Vec<usize>],
        vectors: Vec<BatchVectors>,
        docs: usize,
    ) -> (TextVectors, TextVectors) {
        let dim = self.dim();
        let texts = batches.iter().map(Vec::len).sum::<usize>();
        let mut rows = vec![0usize; texts];
        for (b, v) in batches.iter().zip(&vectors) {
            for (&i, &n) in b.iter().zip(&v.rows) {
                rows[i] = n;
            }
        }
        let offsets = |rows: &[usize]| {
            let mut o = Vec::with_capacity(rows.len() + 1);
            o.push(0);
            for &n in rows {
                o.push(o.last().copied().unwrap_or(0) + n);
            }
            o
        };
        let (d_off, q_off) = (offsets(&rows[..docs]), offsets(&rows[docs..]));
        let mut d = vec![0.0f32; d_off[docs] * dim];
        let mut q = vec![0.0f32; q_off[texts - docs] * dim];
        for (b, v) in batches.iter().zip(vectors) {
            let mut at = 0;
            for (&i, &n) in b.iter().zip(&v.rows) {
                let (to, from) = if i < docs {
                    (&mut d, d_off[i])
                } else {
                    (&mut q, q_off[i - docs])
                };
                to[from * dim..(from + n) * dim]
                    .copy_from_slice(&v.vectors[at * dim..(at + n) * dim]);
                at += n;
            }
        }
        (
            TextVectors {
                vectors: d,
                offsets: d_off,
            },
            TextVectors {
                vectors: q,
                offsets: q_off,
            },
        )
    }

    /// Ranks the documents for every query ([`rank`] or [`rank_maxsim`]).
    pub fn rank(
        &self,
        docs: TextVectors,
        queries: TextVectors,
        positives: &[Vec<u32>],
        k: usize,
    ) -> Result<Candidates, SearchError> {
        let dim = self.dim();
        match self {
            Ranker::Towers(_) => rank(dim, docs.vectors, queries.vectors, positives, k),
            Ranker::Colbert(_) => rank_maxsim(dim, docs, &queries, positives, k),
        }
    }

    /// The directory the model was loaded from (for messages).
    fn path(&self) -> &std::path::Path {
        match self {
            Ranker::Towers(t) => t.query().dir().path.as_path(),
            Ranker::Colbert(c) => c.embedder().dir().path.as_path(),
        }
    }
}

/// Embeds `queries` and `docs` (token ids, prompts included) with `model`
/// and ranks them ([`Ranker::rank`]). `progress(n)` is called after each
/// embedded batch of `n` texts (documents first, then queries).
pub fn candidates(
    model: &Ranker,
    queries: &[Vec<u32>],
    docs: &[Vec<u32>],
    positives: &[Vec<u32>],
    k: usize,
    mut progress: impl FnMut(usize),
) -> Result<Candidates, TextError> {
    let batches = model.batches(queries, docs);
    let vectors = batches
        .iter()
        .map(|b| {
            let v = model.embed_batch(b, queries, docs);
            progress(b.len());
            v
        })
        .collect();
    let (d, q) = model.gather(&batches, vectors, docs.len());
    model.rank(d, q, positives, k).map_err(|e| {
        TextError::file(
            model.path(),
            format!("mining search failed: {e}"),
            "check the model's vectors",
        )
    })
}

/// Ranks the documents (`docs`, token vectors) for every query of
/// `queries` by MaxSim over float16 token vectors (as `tandem beir` scores
/// a ColBERT): the `k` best of each, `positives[q]` (document indices) left
/// out, and the MaxSim of each positive.
pub fn rank_maxsim(
    dim: usize,
    docs: TextVectors,
    queries: &TextVectors,
    positives: &[Vec<u32>],
    k: usize,
) -> Result<Candidates, SearchError> {
    let half: Vec<half::f16> = docs
        .vectors
        .iter()
        .map(|&v| half::f16::from_f32(v))
        .collect();
    drop(docs.vectors);
    let bank = MultiBank::from_parts(Bank::from_f16(half, dim), docs.offsets);
    let maxsim = MaxSim::new(&bank);
    // the best k besides the positives are among the best k + positives
    let extra = positives.iter().map(Vec::len).max().unwrap_or(0);
    let found = maxsim.search(
        &queries.vectors,
        &queries.offsets,
        (k + extra).min(bank.docs()),
        |_| {},
    )?;
    let mut c = Candidates::default();
    for (q, (hits, ps)) in found.into_iter().zip(positives).enumerate() {
        let rows = &queries.vectors[queries.offsets[q] * dim..queries.offsets[q + 1] * dim];
        c.positive_scores.push(maxsim.score(rows, ps)?);
        c.hits.push(
            hits.into_iter()
                .filter(|h| !ps.contains(&h.0))
                .take(k)
                .collect(),
        );
    }
    Ok(c)
}

/// Ranks the documents `docs` (`[n, dim]`) for every query of `queries`
/// by cosine: the `k` best of each, `positives[q]` (document indices) left
/// out, and the cosine of each positive.
pub fn rank(
    dim: usize,
    mut docs: Vec<f32>,
    mut queries: Vec<f32>,
    positives: &[Vec<u32>],
    k: usize,
) -> Result<Candidates, SearchError> {
    unit_rows(&mut docs, dim);
    unit_rows(&mut queries, dim);
    let positive_scores = positives
        .iter()
        .zip(queries.chunks_exact(dim))
        .map(|(ps, qr)| {
            ps.iter()
                .map(|&p| {
                    let dr = &docs[p as usize * dim..(p as usize + 1) * dim];
                    qr.iter().zip(dr).map(|(a, b)| a * b).sum()
                })
                .collect()
        })
        .collect();
    let n = docs.len() / dim.max(1);
    let bank = Bank::from_f32(docs, dim);
    let hits = Flat::new(&bank, Metric::InnerProduct)?.search(&queries, k.min(n), positives)?;
    Ok(Candidates {
        hits,
        positive_scores,
    })
}

impl Candidates {
    /// The candidates as bytes ([`Candidates::from_bytes`] reads them):
    /// little-endian `u32` counts, `(u32 document, f32 score)` hits and
    /// `f32` positive scores, query after query.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut put = |v: u32| out.extend_from_slice(&v.to_le_bytes());
        put(self.hits.len() as u32);
        for (hits, ps) in self.hits.iter().zip(&self.positive_scores) {
            put(hits.len() as u32);
            for &(d, s) in hits {
                put(d);
                put(s.to_bits());
            }
            put(ps.len() as u32);
            for &s in ps {
                put(s.to_bits());
            }
        }
        out
    }

    /// Reads what [`Candidates::to_bytes`] wrote; `None` when the bytes are
    /// cut short or run on.
    pub fn from_bytes(bytes: &[u8]) -> Option<Candidates> {
        let mut words = bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")));
        if !bytes.len().is_multiple_of(4) {
            return None;
        }
        let mut next = || words.next();
        let queries = next()? as usize;
        let mut c = Candidates::default();
        for _ in 0..queries {
            let n = next()? as usize;
            let mut hits = Vec::with_capacity(n.min(1 << 16));
            for _ in 0..n {
                hits.push((next()?, f32::from_bits(next()?)));
            }
            let np = next()? as usize;
            let mut ps = Vec::with_capacity(np.min(1 << 16));
            for _ in 0..np {
                ps.push(f32::from_bits(next()?));
            }
            c.hits.push(hits);
            c.positive_scores.push(ps);
        }
        next().is_none().then_some(c)
    }
}

/// How negatives are taken from the candidates left after the filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sampling {
    /// The best `num_negatives`.
    Top,
    /// `num_negatives` drawn uniformly, then sorted best first.
    Random,
}

impl FromStr for Sampling {
    type Err = String;

    fn from_str(s: &str) -> Result<Sampling, String> {
        match s {
            "top" => Ok(Sampling::Top),
            "random" => Ok(Sampling::Random),
            _ => Err(format!("unknown sampling {s:?}; use top or random")),
        }
    }
}

impl fmt::Display for Sampling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Sampling::Top => "top",
            Sampling::Random => "random",
        })
    }
}

/// sentence-transformers' `mine_hard_negatives` settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MineSettings {
    /// Candidates skipped at the top of the ranking (after the filters).
    pub range_min: usize,
    /// Candidates considered (the ranking's depth).
    pub range_max: usize,
    /// Candidates scoring above it are dropped.
    pub max_score: Option<f32>,
    /// Candidates scoring below it are dropped.
    pub min_score: Option<f32>,
    /// Candidates with `score + margin > positive` are dropped.
    pub absolute_margin: Option<f32>,
    /// Candidates with `score > positive - |positive| * margin` are dropped.
    pub relative_margin: Option<f32>,
    /// Negatives per query.
    pub num_negatives: usize,
    /// Top or random.
    pub sampling: Sampling,
}

/// Candidates dropped by each filter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Skipped {
    /// By the absolute margin.
    pub absolute_margin: usize,
    /// By the relative margin.
    pub relative_margin: usize,
    /// By `max_score`.
    pub max_score: usize,
    /// By `min_score`.
    pub min_score: usize,
}

impl MineSettings {
    /// sentence-transformers' default `range_max`: `range_min +
    /// num_negatives + max_positives`, with ten times the negatives when a
    /// filter may drop candidates.
    pub fn default_range_max(&self, max_positives: usize) -> usize {
        let filtered = self.max_score.is_some()
            || self.absolute_margin.is_some()
            || self.relative_margin.is_some();
        self.range_min + self.num_negatives * if filtered { 10 } else { 1 } + max_positives
    }

    /// What is wrong with the settings, if anything (as
    /// sentence-transformers checks them).
    pub fn problem(&self) -> Option<String> {
        if self.num_negatives == 0 {
            return Some("num_negatives must be at least 1".into());
        }
        if self.range_min >= self.range_max {
            return Some(format!(
                "range_min ({}) must be smaller than range_max ({})",
                self.range_min, self.range_max
            ));
        }
        if self.num_negatives > self.range_max - self.range_min {
            return Some(format!(
                "cannot mine {} negatives per query: only {} candidates remain after skipping the first range_min={} of range_max={}",
                self.num_negatives,
                self.range_max - self.range_min,
                self.range_min,
                self.range_max
            ));
        }
        None
    }

    /// The negatives of every query of `cand` ([`MineSettings::select`]
    /// against the lowest score of the query's positives), the random
    /// sampling drawn from one stream seeded by `seed`, query after query.
    pub fn select_all(&self, cand: &Candidates, seed: u64) -> (Vec<Vec<Hit>>, Skipped) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut skipped = Skipped::default();
        let negatives = cand
            .hits
            .iter()
            .zip(&cand.positive_scores)
            .map(|(hits, ps)| {
                let lowest = ps.iter().copied().fold(f32::INFINITY, f32::min);
                self.select(hits, lowest, &mut rng, &mut skipped)
            })
            .collect();
        (negatives, skipped)
    }

    /// The negatives of one query: its candidates `hits` (best first, at
    /// most `range_max`), filtered against the lowest score of its
    /// positives `positive` and the score bounds, the first `range_min` of
    /// those left skipped, then the top `num_negatives` or a sample of them
    /// (drawn from `rng`), best first. `skipped` counts what each filter
    /// dropped.
    pub fn select(
        &self,
        hits: &[Hit],
        positive: f32,
        rng: &mut impl Rng,
        skipped: &mut Skipped,
    ) -> Vec<Hit> {
        let kept: Vec<Hit> = hits
            .iter()
            .take(self.range_max)
            .filter(|&&(_, s)| {
                let drop = |limit: Option<f32>, fails: &dyn Fn(f32) -> bool, n: &mut usize| {
                    let d = limit.is_some_and(fails);
                    *n += usize::from(d);
                    d
                };
                !(drop(
                    self.absolute_margin,
                    &|m| s + m > positive,
                    &mut skipped.absolute_margin,
                ) || drop(
                    self.relative_margin,
                    &|m| s > positive - positive.abs() * m,
                    &mut skipped.relative_margin,
                ) || drop(self.max_score, &|m| s > m, &mut skipped.max_score)
                    || drop(self.min_score, &|m| s < m, &mut skipped.min_score))
            })
            .skip(self.range_min)
            .copied()
            .collect();
        match self.sampling {
            Sampling::Top => kept.into_iter().take(self.num_negatives).collect(),
            Sampling::Random => {
                let take = self.num_negatives.min(kept.len());
                let mut picked: Vec<usize> = sample(rng, kept.len(), take).into_vec();
                picked.sort_unstable();
                picked.into_iter().map(|i| kept[i]).collect()
            }
        }
    }
}

/// The candidates of `hits` whose score lies in `[lo, hi]` in units of the
/// positive's score `positive`: `positive - |positive| * (1 - r)` for a
/// bound `r`, so that 1 is as close as the positive and 0.95 is
/// sentence-transformers' relative margin of 5%.
pub fn in_band(hits: &[Hit], positive: f32, lo: f32, hi: f32) -> impl Iterator<Item = Hit> + '_ {
    let at = move |r: f32| positive - positive.abs() * (1.0 - r);
    let (lo, hi) = (at(lo), at(hi));
    hits.iter()
        .copied()
        .filter(move |&(_, s)| s >= lo && s <= hi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha8Rng;

    fn settings() -> MineSettings {
        MineSettings {
            range_min: 0,
            range_max: 10,
            max_score: None,
            min_score: None,
            absolute_margin: None,
            relative_margin: None,
            num_negatives: 3,
            sampling: Sampling::Top,
        }
    }

    const HITS: [Hit; 6] = [(7, 0.95), (3, 0.9), (1, 0.8), (4, 0.7), (9, 0.6), (2, 0.5)];

    fn pick(s: MineSettings, positive: f32) -> (Vec<u32>, Skipped) {
        let mut skipped = Skipped::default();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let got = s.select(&HITS, positive, &mut rng, &mut skipped);
        (got.iter().map(|h| h.0).collect(), skipped)
    }

    #[test]
    fn filters_then_rank_window_then_top() {
        assert_eq!(pick(settings(), 0.85).0, vec![7, 3, 1]);
        // the margin drops 0.95, 0.9 and 0.8 (each + 0.1 > 0.85)
        let s = MineSettings {
            absolute_margin: Some(0.1),
            ..settings()
        };
        let (got, skipped) = pick(s, 0.85);
        assert_eq!(got, vec![4, 9, 2]);
        assert_eq!(skipped.absolute_margin, 3);
        // relative margin 10% of 0.85: threshold 0.765
        let s = MineSettings {
            relative_margin: Some(0.1),
            range_min: 1,
            ..settings()
        };
        assert_eq!(
            pick(s, 0.85).0,
            vec![9, 2],
            "range_min counts after the filters"
        );
        let s = MineSettings {
            max_score: Some(0.85),
            min_score: Some(0.65),
            ..settings()
        };
        let (got, skipped) = pick(s, 0.99);
        assert_eq!(got, vec![1, 4]);
        assert_eq!((skipped.max_score, skipped.min_score), (2, 2));
        // range_max cuts the ranking before anything else
        let s = MineSettings {
            range_max: 2,
            ..settings()
        };
        assert_eq!(pick(s, 1.0).0, vec![7, 3]);
    }

    #[test]
    fn random_sampling_draws_from_what_is_left_best_first() {
        let s = MineSettings {
            sampling: Sampling::Random,
            num_negatives: 2,
            ..settings()
        };
        let mut seen = std::collections::HashSet::new();
        for seed in 0..50 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let got = s.select(&HITS, 1.0, &mut rng, &mut Skipped::default());
            assert_eq!(got.len(), 2);
            assert!(got[0].1 > got[1].1);
            seen.extend(got.iter().map(|h| h.0));
        }
        assert_eq!(seen.len(), 6, "every candidate can be drawn");
    }

    #[test]
    fn settings_are_checked_as_sentence_transformers_checks_them() {
        assert!(settings().problem().is_none());
        let bad = MineSettings {
            range_min: 8,
            ..settings()
        };
        assert!(bad.problem().unwrap().contains("only 2 candidates"));
        assert_eq!(settings().default_range_max(2), 5);
        let s = MineSettings {
            relative_margin: Some(0.05),
            range_min: 4,
            ..settings()
        };
        assert_eq!(s.default_range_max(1), 35);
    }

    #[test]
    fn candidates_survive_bytes_and_reject_damage() {
        let c = Candidates {
            hits: vec![HITS.to_vec(), Vec::new()],
            positive_scores: vec![vec![0.5, -0.25], vec![1.0]],
        };
        let b = c.to_bytes();
        assert_eq!(Candidates::from_bytes(&b), Some(c));
        assert_eq!(Candidates::from_bytes(&b[..b.len() - 4]), None);
        let mut more = b.clone();
        more.extend_from_slice(&[0; 4]);
        assert_eq!(Candidates::from_bytes(&more), None);
    }

    #[test]
    fn rank_leaves_positives_out_and_scores_them() {
        // documents along the axes and a diagonal; queries near them
        let docs = vec![1.0, 0.0, 0.0, 2.0, 1.0, 1.0];
        let queries = vec![1.0, 0.1, 0.0, -3.0];
        let c = rank(2, docs, queries, &[vec![0], vec![]], 3).unwrap();
        assert_eq!(
            c.hits[0].iter().map(|h| h.0).collect::<Vec<_>>(),
            vec![2, 1]
        );
        assert_eq!(
            c.hits[1].iter().map(|h| h.0).collect::<Vec<_>>(),
            vec![0, 2, 1]
        );
        assert!((c.positive_scores[0][0] - 1.0 / 1.01f32.sqrt()).abs() < 1e-6);
        assert!((c.hits[1][2].1 + 1.0).abs() < 1e-6, "cosine, not dot");
    }

    #[test]
    fn band_is_measured_against_the_positive() {
        let got: Vec<u32> = in_band(&HITS, 0.8, 0.8, 1.0).map(|h| h.0).collect();
        assert_eq!(got, vec![1, 4], "0.64..0.8");
        // a negative positive score: the band still lies below it
        let neg = [(0, -0.1), (1, -0.2), (2, -0.5)];
        let got: Vec<u32> = in_band(&neg, -0.2, 0.0, 1.0).map(|h| h.0).collect();
        assert_eq!(got, vec![1], "-0.4..-0.2");
        assert_eq!(in_band(&neg, -0.2, 0.0, 0.5).count(), 0, "-0.4..-0.3");
    }
}
