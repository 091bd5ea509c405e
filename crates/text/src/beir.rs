//! A BEIR split (corpus, queries, qrels) and its evaluation with an
//! [`Embedder`]: exact search by cosine, dot product or Euclidean distance,
//! scored with trec_eval semantics. `tandem beir` and training's validation
//! both use it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use tandem_bank::{Bank, MultiBank};
use tandem_eval::{evaluate, EvalOptions, Measure, Qrels, Run};
use tandem_nn::contrastive::Similarity;
use tandem_search::{Flat, Hit, Index, MaxSim, Metric, Plaid, PlaidSearch};

use crate::{ColBert, Corpus, Embedder, MultiVectors, Side, TextError, Towers};

/// The measures BEIR reports.
pub const BEIR_MEASURES: &str = "ndcg@10,recall@100,map@100,mrr@10";

/// Measure values by name, in report order.
pub type Scores = Vec<(String, f64)>;

/// How the corpus is ranked for a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ranking {
    /// Cosine similarity.
    Cosine,
    /// Inner product.
    Dot,
    /// Negative Euclidean distance (scores are `-|q - d|^2`).
    L2,
}

impl Ranking {
    /// The ranking a model's vectors call for: its `similarity_fn_name`
    /// (`dot`, `euclidean`), cosine otherwise.
    pub fn of(model: &Embedder) -> Ranking {
        match model.dir().similarity.as_deref() {
            Some("dot") | Some("dot_product") => Ranking::Dot,
            Some("euclidean") => Ranking::L2,
            _ => Ranking::Cosine,
        }
    }

    /// The ranking of a training similarity.
    pub fn from_similarity(s: Similarity, normalized: bool) -> Ranking {
        match (s, normalized) {
            (Similarity::NegL2, _) => Ranking::L2,
            (Similarity::Dot, true) => Ranking::Cosine,
            (Similarity::Dot, false) => Ranking::Dot,
        }
    }

    /// Its name in outputs.
    pub fn name(self) -> &'static str {
        match self {
            Ranking::Cosine => "cosine",
            Ranking::Dot => "ip",
            Ranking::L2 => "l2",
        }
    }
}

/// A BEIR folder's split.
#[derive(Debug, Clone)]
pub struct Beir {
    /// The folder.
    pub dir: PathBuf,
    /// The split (`test`, `dev`, `train`, `val`).
    pub split: String,
    /// `corpus.jsonl` (`title + " " + text`).
    pub corpus: Corpus,
    /// The queries of `queries.jsonl` that the split's qrels judge, in file
    /// order.
    pub queries: Corpus,
    /// `qrels/<split>.tsv`.
    pub qrels: Qrels,
}

impl Beir {
    /// The paths of the folder's corpus, queries and the split's qrels.
    pub fn paths(dir: &Path, split: &str) -> [PathBuf; 3] {
        [
            dir.join("corpus.jsonl"),
            dir.join("queries.jsonl"),
            dir.join("qrels").join(format!("{split}.tsv")),
        ]
    }

    /// Reads the split, checking that the files exist and that the qrels
    /// judge some query of the file.
    pub fn open(dir: &Path, split: &str) -> Result<Beir, TextError> {
        let [corpus_path, queries_path, qrels_path] = Beir::paths(dir, split);
        for p in [&corpus_path, &queries_path, &qrels_path] {
            if !p.is_file() {
                return Err(TextError::file(
                    p,
                    "missing: a BEIR folder has corpus.jsonl, queries.jsonl and qrels/<split>.tsv",
                    "check the folder, or name another split",
                ));
            }
        }
        let qrels = Qrels::read(&qrels_path)
            .map_err(|e| TextError::file(&qrels_path, e.to_string(), "fix the qrels file"))?;
        let all = Corpus::read(&queries_path, "text")?;
        let wanted: HashSet<&str> = qrels.query_ids().collect();
        let keep: Vec<usize> = (0..all.len())
            .filter(|&i| wanted.contains(all.ids[i].as_str()))
            .collect();
        if keep.is_empty() {
            return Err(TextError::file(
                &queries_path,
                format!("none of its queries is in {}", qrels_path.display()),
                "check the split",
            ));
        }
        let queries = Corpus {
            ids: keep.iter().map(|&i| all.ids[i].clone()).collect(),
            texts: keep.iter().map(|&i| all.texts[i].clone()).collect(),
        };
        let corpus = Corpus::read(&corpus_path, "text")?;
        Ok(Beir {
            dir: dir.to_path_buf(),
            split: split.to_string(),
            corpus,
            queries,
            qrels,
        })
    }

    /// The corpus rows each query may not return: its own id's, under
    /// `ignore_identical_ids` (BEIR's), else none.
    fn exclusions(&self, ignore_identical_ids: bool) -> Vec<Vec<u32>> {
        if !ignore_identical_ids {
            return Vec::new();
        }
        let row_of: std::collections::HashMap<&str, u32> = self
            .corpus
            .ids
            .iter()
            .enumerate()
            .map(|(r, id)| (id.as_str(), r as u32))
            .collect();
        self.queries
            .ids
            .iter()
            .map(|q| row_of.get(q.as_str()).map(|&r| vec![r]).unwrap_or_default())
            .collect()
    }

    /// The best `k` documents of each query by exact MaxSim over a
    /// multi-vector bank of the corpus, given the queries' token vectors;
    /// `progress(n)` after each block of `n` documents.
    pub fn search_maxsim(
        &self,
        docs: &MultiBank,
        queries: &MultiVectors,
        k: usize,
        ignore_identical_ids: bool,
        progress: impl Fn(usize) + Sync,
    ) -> Result<Vec<Vec<Hit>>, TextError> {
        self.late_interaction(docs.docs(), k, ignore_identical_ids, |k| {
            MaxSim::new(docs).search(&queries.vectors, &queries.offsets, k, progress)
        })
    }

    /// The best `k` documents of each query through a PLAID index over a
    /// multi-vector bank of the corpus (its settings for `k` unless
    /// `params` are given; the final candidates scored by exact MaxSim);
    /// `progress(1)` after each query.
    pub fn search_plaid(
        &self,
        index: &Plaid<'_>,
        queries: &MultiVectors,
        k: usize,
        params: Option<PlaidSearch>,
        ignore_identical_ids: bool,
        progress: impl Fn(usize) + Sync,
    ) -> Result<Vec<Vec<Hit>>, TextError> {
        let docs = index.sidecar().documents;
        self.late_interaction(docs, k, ignore_identical_ids, |k| {
            let p = params.unwrap_or_else(|| PlaidSearch::for_k(k));
            index.search(&queries.vectors, &queries.offsets, k, &p, progress)
        })
    }

    /// The best `k` of `docs` documents by `search(k')`, a query's own
    /// document dropped under `ignore_identical_ids` (for which `k'` asks
    /// one more than `k`).
    fn late_interaction(
        &self,
        docs: usize,
        k: usize,
        ignore_identical_ids: bool,
        search: impl FnOnce(usize) -> Result<Vec<Vec<Hit>>, tandem_search::SearchError>,
    ) -> Result<Vec<Vec<Hit>>, TextError> {
        let exclude = self.exclusions(ignore_identical_ids);
        let k = k.min(docs);
        // one more than asked for, so that dropping a query's own document leaves k
        let extra = usize::from(ignore_identical_ids && k < docs);
        let hits = search(k + extra)
            .map_err(|e| TextError::file(&self.dir, e.to_string(), "check the model's vectors"))?;
        Ok(hits
            .into_iter()
            .enumerate()
            .map(|(q, mut h)| {
                let ex = exclude.get(q).map_or(&[][..], Vec::as_slice);
                h.retain(|(row, _)| !ex.contains(row));
                h.truncate(k);
                h
            })
            .collect())
    }

    /// The `k` best corpus rows of each query: the corpus vectors `docs`
    /// (a row per document) and `queries` (`[queries, dim]`) ranked by
    /// `ranking`, a query's own id left out when `ignore_identical_ids`.
    pub fn search(
        &self,
        docs: &Bank,
        queries: &[f32],
        ranking: Ranking,
        k: usize,
        ignore_identical_ids: bool,
    ) -> Result<Vec<Vec<Hit>>, TextError> {
        let dim = docs.dim();
        let exclude = self.exclusions(ignore_identical_ids);
        let err = |e: tandem_search::SearchError| {
            TextError::file(&self.dir, e.to_string(), "check the model's vectors")
        };
        let k = k.min(self.corpus.len());
        match ranking {
            Ranking::Cosine | Ranking::Dot => {
                let metric = if ranking == Ranking::Cosine {
                    Metric::Cosine
                } else {
                    Metric::InnerProduct
                };
                Flat::new(docs, metric)
                    .and_then(|f| f.search(queries, k, &exclude))
                    .map_err(err)
            }
            Ranking::L2 => {
                // -|q - d|^2 = 2 (q . d - |d|^2 / 2) - |q|^2: an inner
                // product of [q, 1] and [d, -|d|^2 / 2], then the query's
                // constant back.
                let aug = |x: &[f32], last: &dyn Fn(&[f32]) -> f32| -> Vec<f32> {
                    x.chunks_exact(dim)
                        .flat_map(|r| r.iter().copied().chain(std::iter::once(last(r))))
                        .collect()
                };
                let norm2 = |r: &[f32]| r.iter().map(|v| v * v).sum::<f32>();
                let bank = Bank::from_f32(aug(&docs.to_f32_vec(), &|r| -norm2(r) / 2.0), dim + 1);
                let q = aug(queries, &|_| 1.0);
                let hits = Flat::new(&bank, Metric::InnerProduct)
                    .and_then(|f| f.search(&q, k, &exclude))
                    .map_err(err)?;
                Ok(hits
                    .into_iter()
                    .zip(queries.chunks_exact(dim))
                    .map(|(h, qr)| {
                        let qq = norm2(qr);
                        h.into_iter().map(|(r, s)| (r, 2.0 * s - qq)).collect()
                    })
                    .collect())
            }
        }
    }

    /// The TREC run of `hits` (rows of [`Beir::search`]).
    pub fn run(&self, hits: &[Vec<Hit>]) -> Result<Run, TextError> {
        let mut run = Run::new();
        for (qid, hits) in self.queries.ids.iter().zip(hits) {
            for &(r, s) in hits {
                run.insert(qid, &self.corpus.ids[r as usize], f64::from(s))
                    .map_err(|e| {
                        TextError::file(&self.dir, e.to_string(), "check the corpus ids")
                    })?;
            }
        }
        Ok(run)
    }

    /// `hits` as the lines of a TREC run file tagged `tag`.
    pub fn trec(&self, hits: &[Vec<Hit>], tag: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for (qid, hits) in self.queries.ids.iter().zip(hits) {
            let ranked = hits
                .iter()
                .map(|&(r, s)| (self.corpus.ids[r as usize].as_str(), s));
            tandem_eval::trec::write_run_lines(&mut out, qid, ranked, tag)
                .expect("writing to memory cannot fail");
        }
        out
    }

    /// The BEIR measures of `run` (every judged query counts, unanswered
    /// ones as 0), by name.
    pub fn metrics(&self, run: &Run) -> Result<Scores, TextError> {
        let measures = Measure::parse_list(BEIR_MEASURES).expect("the BEIR measures parse");
        let report = evaluate(&self.qrels, run, &measures, &EvalOptions { complete: true })
            .map_err(|e| {
                TextError::file(&self.dir, e.to_string(), "check the qrels and the corpus")
            })?;
        Ok(measures
            .iter()
            .map(|m| m.to_string())
            .zip(report.mean)
            .collect())
    }

    /// Embeds the corpus and the queries with the towers of `towers` (with
    /// the prompts) and scores the split: the measures, and the 100 best documents of
    /// each query.
    pub fn evaluate(
        &self,
        towers: &Towers,
        prompts: (&str, &str),
        ranking: Ranking,
        progress: impl FnMut(usize),
    ) -> Result<(Scores, Vec<Vec<Hit>>), TextError> {
        let docs = towers
            .document()
            .embed(&self.corpus.texts, prompts.1, progress)?;
        let queries = towers
            .query()
            .embed(&self.queries.texts, prompts.0, |_| {})?;
        let bank = Bank::from_f32(docs.vectors, towers.dim());
        let hits = self.search(&bank, &queries.vectors, ranking, 100, false)?;
        let run = self.run(&hits)?;
        Ok((self.metrics(&run)?, hits))
    }

    /// [`Beir::evaluate`] for a ColBERT: the corpus's token vectors kept
    /// in float16 (as `tandem embed` writes a multi-vector bank, so the
    /// run is that of `tandem beir` on the same model) and the 100 best
    /// documents of each query by exact MaxSim.
    pub fn evaluate_colbert(
        &self,
        model: &ColBert,
        progress: impl FnMut(usize),
    ) -> Result<(Scores, Vec<Vec<Hit>>), TextError> {
        let docs = model.encode(&self.corpus.texts, Side::Document, progress)?;
        let queries = model.encode(&self.queries.texts, Side::Query, |_| {})?;
        let half: Vec<half::f16> = docs
            .vectors
            .iter()
            .map(|&v| half::f16::from_f32(v))
            .collect();
        let bank = MultiBank::from_parts(Bank::from_f16(half, model.dim()), docs.offsets);
        let hits = self.search_maxsim(&bank, &queries, 100, false, |_| {})?;
        let run = self.run(&hits)?;
        Ok((self.metrics(&run)?, hits))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn l2_ranking_is_the_euclidean_distance() {
        let dir = std::env::temp_dir().join(format!("tandem-beir-l2-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("qrels")).unwrap();
        std::fs::write(dir.join("corpus.jsonl"), "{\"_id\":\"a\",\"text\":\"x\"}\n{\"_id\":\"b\",\"text\":\"y\"}\n{\"_id\":\"c\",\"text\":\"z\"}\n").unwrap();
        std::fs::write(
            dir.join("queries.jsonl"),
            "{\"_id\":\"q\",\"text\":\"x\"}\n",
        )
        .unwrap();
        std::fs::write(dir.join("qrels/test.tsv"), "q\ta\t1\n").unwrap();
        let b = Beir::open(&dir, "test").unwrap();
        // a is the nearest by L2 but not by inner product
        let docs = [1.0, 0.0, 10.0, 0.0, -1.0, 0.0];
        let q = [1.2, 0.0];
        let bank = Bank::from_f32(docs.to_vec(), 2);
        let hits = b.search(&bank, &q, Ranking::L2, 3, false).unwrap();
        let rows: Vec<u32> = hits[0].iter().map(|h| h.0).collect();
        assert_eq!(rows, vec![0, 2, 1]);
        assert!((hits[0][0].1 + 0.04).abs() < 1e-5, "{:?}", hits[0]);
        let ip = b.search(&bank, &q, Ranking::Dot, 3, false).unwrap();
        assert_eq!(ip[0][0].0, 1);
        let run = b.run(&hits).unwrap();
        let m = b.metrics(&run).unwrap();
        assert_eq!(m[0].0, "ndcg@10");
        assert!((m[0].1 - 1.0).abs() < 1e-12);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
