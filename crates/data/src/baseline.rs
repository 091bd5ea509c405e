//! The two retrieval baselines every trained query tower must beat: the last
//! context vector, and the mean of the context vectors, used as queries
//! against the whole bank (exact inner-product search, the context's own rows
//! excluded), scored with tandem-eval's trec_eval semantics.

use std::fmt::Write as _;

use serde_json::{json, Map, Value};
use tandem_eval::{evaluate, EvalOptions, Measure, Qrels, Run};
use tandem_search::{Flat, Index, Metric};

use crate::format::{Dataset, Example, Split};
use crate::DataError;

/// The default cutoffs of Recall@k.
pub const DEFAULT_KS: [usize; 6] = [1, 5, 10, 50, 100, 500];
/// The cutoff of the reciprocal rank.
pub const MRR_CUTOFF: usize = 10;
/// Queries searched and evaluated at a time.
const BATCH: usize = 2048;

/// How a context becomes a query vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryKind {
    /// The last context vector.
    Last,
    /// The arithmetic mean of the context vectors.
    Mean,
}

impl QueryKind {
    /// Both kinds, in report order.
    pub const ALL: [QueryKind; 2] = [QueryKind::Last, QueryKind::Mean];

    /// Short name used in JSON.
    pub fn name(self) -> &'static str {
        match self {
            QueryKind::Last => "last",
            QueryKind::Mean => "mean",
        }
    }

    /// Human-readable label used in tables.
    pub fn label(self) -> &'static str {
        match self {
            QueryKind::Last => "last context vector",
            QueryKind::Mean => "mean of context vectors",
        }
    }

    /// Write the query of `context` (bank rows) into `out` (length dim).
    pub fn query_into(self, ds: &Dataset, context: &[u32], out: &mut [f32]) {
        let bank = ds.bank();
        match self {
            QueryKind::Last => {
                let r = *context
                    .last()
                    .expect("an example has at least one context row")
                    as usize;
                bank.rows_f32_into(r, r + 1, out);
            }
            QueryKind::Mean => {
                out.fill(0.0);
                for &r in context {
                    for (o, x) in out.iter_mut().zip(bank.row_f32(r as usize).iter()) {
                        *o += x;
                    }
                }
                let n = context.len() as f32;
                out.iter_mut().for_each(|o| *o /= n);
            }
        }
    }
}

/// The metrics of one query kind.
#[derive(Debug, Clone, PartialEq)]
pub struct BaselineResult {
    /// Which query.
    pub query: QueryKind,
    /// Mean of each measure over the examples, in [`BaselineReport::measures`] order.
    pub values: Vec<f64>,
}

/// The outcome of [`baseline`].
#[derive(Debug, Clone, PartialEq)]
pub struct BaselineReport {
    /// The split evaluated.
    pub split: Split,
    /// Number of examples (queries) in it.
    pub examples: usize,
    /// Recall@k for each k, then MRR@10.
    pub measures: Vec<Measure>,
    /// One result per query kind.
    pub results: Vec<BaselineResult>,
}

impl BaselineReport {
    /// The value of `measure` for `query`, if both were evaluated.
    pub fn value(&self, query: QueryKind, measure: &str) -> Option<f64> {
        let m: Measure = measure.parse().ok()?;
        let i = self.measures.iter().position(|x| *x == m)?;
        self.results
            .iter()
            .find(|r| r.query == query)
            .map(|r| r.values[i])
    }

    /// `{"split", "examples", "measures": [...], "results": {"last": {...}, "mean": {...}}}`.
    pub fn to_json(&self) -> Value {
        let results: Map<String, Value> = self
            .results
            .iter()
            .map(|r| {
                let m: Map<String, Value> = self
                    .measures
                    .iter()
                    .zip(&r.values)
                    .map(|(m, v)| (m.to_string(), json!(v)))
                    .collect();
                (r.query.name().to_string(), Value::Object(m))
            })
            .collect();
        json!({
            "split": self.split.name(),
            "examples": self.examples,
            "measures": self.measures.iter().map(|m| m.to_string()).collect::<Vec<_>>(),
            "results": results,
        })
    }

    /// A Markdown table: one row per query kind, one column per measure.
    pub fn table(&self) -> String {
        let header: Vec<String> = self.measures.iter().map(|m| m.to_string()).collect();
        let mut t = format!(
            "| query | {} |\n|---|{}\n",
            header.join(" | "),
            "---|".repeat(header.len())
        );
        for r in &self.results {
            let cells: Vec<String> = r.values.iter().map(|v| format!("{v:.4}")).collect();
            let _ = writeln!(t, "| {} | {} |", r.query.label(), cells.join(" | "));
        }
        t
    }
}

/// The measures of a baseline: `recall@k` for each of `ks`, then `recip_rank@10`.
pub fn measures(ks: &[usize]) -> Vec<Measure> {
    ks.iter()
        .map(|&k| Measure::Recall(k))
        .chain([Measure::RecipRank(Some(MRR_CUTOFF))])
        .collect()
}

/// Check the Recall@k cutoffs against `ds`: at least one, each at least 1
/// and at most the bank's rows.
pub fn check_ks(ds: &Dataset, ks: &[usize]) -> Result<(), DataError> {
    let manifest_path = ds.dir().join(crate::MANIFEST_FILE);
    if ks.is_empty() || ks.contains(&0) {
        return Err(DataError::invalid(
            &manifest_path,
            "no usable cutoffs (k must be >= 1)",
            "pass e.g. --k 1,5,10",
        ));
    }
    let rows = ds.bank().rows();
    if let Some(&k) = ks.iter().find(|&&k| k > rows) {
        return Err(DataError::invalid(
            &manifest_path,
            format!("k = {k} but the bank has only {rows} rows"),
            format!("pass --k values of {rows} or less"),
        ));
    }
    Ok(())
}

/// The rows each example's query must not retrieve: its context rows,
/// except the target itself should it also be one.
pub fn context_exclusions(examples: &[Example<'_>]) -> Vec<Vec<u32>> {
    examples
        .iter()
        .map(|ex| {
            ex.context
                .iter()
                .copied()
                .filter(|&r| r != ex.target)
                .collect()
        })
        .collect()
}

/// Scores the queries that `queries_for` writes (one row of the index's
/// dimension per example, a batch at a time) against `index`: each example
/// has one relevant row, its target; its context rows are excluded from the
/// candidates (except the target itself). Returns the mean of each of
/// `measures` over the examples. `depth` is how many rows to retrieve per
/// query (at least the largest cutoff).
pub fn score_queries<F>(
    examples: &[Example<'_>],
    index: &dyn Index,
    measures: &[Measure],
    depth: usize,
    label: &str,
    mut queries_for: F,
) -> Result<Vec<f64>, DataError>
where
    F: FnMut(&[Example<'_>], &mut [f32]) -> Result<(), DataError>,
{
    let dim = index.dim();
    let mut sums = vec![0f64; measures.len()];
    let bar = tandem_io::progress(examples.len() as u64, label);
    for (b, batch) in examples.chunks(BATCH).enumerate() {
        let mut queries = vec![0f32; batch.len() * dim];
        queries_for(batch, &mut queries)?;
        let hits = index.search(&queries, depth, &context_exclusions(batch))?;
        let (mut qrels, mut run) = (Qrels::new(), Run::new());
        for (i, (ex, hits)) in batch.iter().zip(&hits).enumerate() {
            let qid = (b * BATCH + i).to_string();
            qrels.insert(&qid, &ex.target.to_string(), 1);
            for &(row, score) in hits {
                run.insert(&qid, &row.to_string(), f64::from(score))?;
            }
        }
        let report = evaluate(&qrels, &run, measures, &EvalOptions { complete: true })?;
        for values in report.per_query.values() {
            sums.iter_mut().zip(values).for_each(|(s, v)| *s += v);
        }
        bar.inc(batch.len() as u64);
    }
    bar.finish_and_clear();
    let n = examples.len().max(1) as f64;
    Ok(sums.into_iter().map(|s| s / n).collect())
}

/// Score the last-vector and mean-of-context queries on `split` of `ds`.
///
/// Every example is one query with a single relevant row, its target. The
/// whole bank is searched by inner product with the rows as stored (float16
/// converted to float32, no renormalisation); the context's rows are not
/// candidates (except the target itself, should it also be a context row).
pub fn baseline(ds: &Dataset, split: Split, ks: &[usize]) -> Result<BaselineReport, DataError> {
    let examples: Vec<Example<'_>> = ds.examples(split).collect();
    let manifest_path = ds.dir().join(crate::MANIFEST_FILE);
    if examples.is_empty() {
        return Err(DataError::invalid(
            &manifest_path,
            format!("the {split} split has no examples"),
            "choose another --split (see the counts in dataset.json)",
        ));
    }
    check_ks(ds, ks)?;
    let bank = ds.bank();
    let depth = ks
        .iter()
        .copied()
        .chain([MRR_CUTOFF])
        .max()
        .unwrap_or(MRR_CUTOFF)
        .min(bank.rows());
    let measures = measures(ks);
    let index = Flat::new(bank, Metric::InnerProduct)?;
    let dim = bank.dim();
    let mut results = Vec::new();
    for kind in QueryKind::ALL {
        let values = score_queries(
            &examples,
            &index,
            &measures,
            depth,
            kind.name(),
            |batch, queries| {
                for (ex, q) in batch.iter().zip(queries.chunks_exact_mut(dim)) {
                    kind.query_into(ds, ex.context, q);
                }
                Ok(())
            },
        )?;
        results.push(BaselineResult {
            query: kind,
            values,
        });
    }
    Ok(BaselineReport {
        split,
        examples: examples.len(),
        measures,
        results,
    })
}
