//! Per-query measures and their means, with trec_eval 9.0.8 semantics.

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Map, Value};

use crate::{EvalError, Measure, Qrels, Run};

/// How queries are chosen for the mean.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EvalOptions {
    /// Also score qrels queries the run does not answer, as 0 on every
    /// measure (trec_eval `-c`). Without it they are left out of the mean.
    pub complete: bool,
}

/// Scores of every evaluated query and their means.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The measures, in the order of every value vector below.
    pub measures: Vec<Measure>,
    /// One value per measure for every evaluated query, by query id.
    pub per_query: BTreeMap<String, Vec<f64>>,
    /// The arithmetic mean over `per_query` of each measure.
    pub mean: Vec<f64>,
}

impl Report {
    /// Number of queries in the mean.
    pub fn num_queries(&self) -> usize {
        self.per_query.len()
    }

    /// The report as JSON: `{"queries": n, "mean": {measure: value}}`, plus
    /// `"per_query": {qid: {measure: value}}` when `per_query` is set.
    pub fn to_json(&self, per_query: bool) -> Value {
        let named = |values: &[f64]| -> Map<String, Value> {
            self.measures
                .iter()
                .zip(values)
                .map(|(m, &v)| (m.to_string(), json!(v)))
                .collect()
        };
        let mut out = json!({ "queries": self.num_queries(), "mean": named(&self.mean) });
        if per_query {
            let rows: Map<String, Value> = self
                .per_query
                .iter()
                .map(|(q, v)| (q.clone(), Value::Object(named(v))))
                .collect();
            out["per_query"] = Value::Object(rows);
        }
        out
    }
}

/// Evaluate `run` against `qrels`. Run queries absent from the qrels are
/// ignored; qrels queries absent from the run are left out unless
/// `options.complete`. A qrels query without relevant documents scores 0.
pub fn evaluate(
    qrels: &Qrels,
    run: &Run,
    measures: &[Measure],
    options: &EvalOptions,
) -> Result<Report, EvalError> {
    let qids: Vec<&str> = qrels
        .query_ids()
        .filter(|q| options.complete || run.scores(q).is_some())
        .collect();
    if qids.is_empty() {
        return Err(EvalError::NoOverlap {
            qrels_queries: qrels.num_queries(),
            run_queries: run.num_queries(),
        });
    }
    let bar = (qids.len() >= 10_000).then(|| tandem_io::progress(qids.len() as u64, "evaluate"));
    let mut per_query = BTreeMap::new();
    let mut grades = Vec::new();
    for qid in qids {
        let judged = qrels.judgments(qid).expect("qid comes from the qrels");
        grades.clear();
        grades.extend(
            run.ranked(qid)
                .into_iter()
                .map(|(d, _)| judged.get(d).copied().unwrap_or(0)),
        );
        let query = QueryJudgments::new(judged);
        per_query.insert(
            qid.to_string(),
            measures.iter().map(|&m| query.score(m, &grades)).collect(),
        );
        if let Some(bar) = &bar {
            bar.inc(1);
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let n = per_query.len() as f64;
    let mean = (0..measures.len())
        .map(|i| per_query.values().map(|v: &Vec<f64>| v[i]).sum::<f64>() / n)
        .collect();
    Ok(Report {
        measures: measures.to_vec(),
        per_query,
        mean,
    })
}

/// What the qrels say about one query, independent of the run.
struct QueryJudgments {
    /// Documents with grade >= 1 (trec_eval relevance level 1).
    num_rel: usize,
    /// Positive grades, best first: the ideal ranking's gains.
    ideal: Vec<i64>,
}

impl QueryJudgments {
    fn new(judged: &HashMap<Box<str>, i64>) -> Self {
        let mut ideal: Vec<i64> = judged.values().copied().filter(|&g| g > 0).collect();
        ideal.sort_unstable_by(|a, b| b.cmp(a));
        Self {
            num_rel: judged.values().filter(|&&g| g >= 1).count(),
            ideal,
        }
    }

    /// The value of `m` for a ranking given as the grades of its documents
    /// (0 for unjudged), best first.
    fn score(&self, m: Measure, grades: &[i64]) -> f64 {
        let top = |k: Option<usize>| &grades[..k.map_or(grades.len(), |k| k.min(grades.len()))];
        let rel_in = |g: &[i64]| g.iter().filter(|&&g| g >= 1).count() as f64;
        let per_rel = |x: f64| {
            if self.num_rel == 0 {
                0.0
            } else {
                x / self.num_rel as f64
            }
        };
        match m {
            Measure::Precision(k) => rel_in(top(Some(k))) / k as f64,
            Measure::Recall(k) => per_rel(rel_in(top(Some(k)))),
            Measure::Success(k) => f64::from(u8::from(top(Some(k)).iter().any(|&g| g >= 1))),
            Measure::RecipRank(k) => top(k)
                .iter()
                .position(|&g| g >= 1)
                .map_or(0.0, |i| 1.0 / (i + 1) as f64),
            Measure::Map(k) => {
                let mut found = 0usize;
                let mut sum = 0.0;
                for (i, _) in top(k).iter().enumerate().filter(|(_, &g)| g >= 1) {
                    found += 1;
                    sum += found as f64 / (i + 1) as f64;
                }
                per_rel(sum)
            }
            Measure::Ndcg(k) => {
                let ideal =
                    dcg(&self.ideal[..k.map_or(self.ideal.len(), |k| k.min(self.ideal.len()))]);
                if ideal > 0.0 {
                    dcg(top(k)) / ideal
                } else {
                    0.0
                }
            }
        }
    }
}

/// Discounted cumulative gain with linear gains (non-positive grades gain 0)
/// and discount log2(rank + 1).
fn dcg(grades: &[i64]) -> f64 {
    // fold from +0.0: `Sum` for f64 starts at -0.0, which would print as "-0.0000".
    grades
        .iter()
        .enumerate()
        .filter(|(_, &g)| g > 0)
        .fold(0.0, |acc, (i, &g)| acc + g as f64 / ((i + 2) as f64).log2())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> Measure {
        s.parse().unwrap()
    }

    #[test]
    fn hand_computed_query() {
        // Ranking: c(1) d(-1) b(0) a(3) q(unjudged); relevant: a c e z (4); ideal gains 3 2 1 1.
        let mut qrels = Qrels::new();
        for (d, g) in [("a", 3), ("b", 0), ("c", 1), ("d", -1), ("e", 2), ("z", 1)] {
            qrels.insert("q1", d, g);
        }
        let mut run = Run::new();
        for (d, s) in [("a", 0.5), ("b", 0.5), ("c", 0.9), ("d", 0.8), ("q", 0.1)] {
            run.insert("q1", d, s).unwrap();
        }
        let measures: Vec<Measure> = [
            "P@2",
            "recall@2",
            "map",
            "map@2",
            "recip_rank",
            "recip_rank@1",
            "success@1",
            "ndcg@2",
        ]
        .map(m)
        .to_vec();
        let r = evaluate(&qrels, &run, &measures, &EvalOptions::default()).unwrap();
        let idcg2 = 3.0 + 2.0 / 3f64.log2();
        let want = [
            0.5,
            0.25,
            (1.0 + 0.5) / 4.0,
            0.25,
            1.0,
            1.0,
            1.0,
            1.0 / idcg2,
        ];
        for (got, want) in r.mean.iter().zip(want) {
            assert!((got - want).abs() < 1e-15, "{got} vs {want}");
        }
    }

    #[test]
    fn query_selection_and_complete() {
        let mut qrels = Qrels::new();
        qrels.insert("q1", "a", 1);
        qrels.insert("q2", "b", 1);
        qrels.insert("q3", "c", 0);
        let mut run = Run::new();
        run.insert("q1", "a", 1.0).unwrap();
        run.insert("q3", "c", 1.0).unwrap();
        run.insert("q9", "a", 1.0).unwrap();
        let ms = [m("recip_rank")];
        let r = evaluate(&qrels, &run, &ms, &EvalOptions::default()).unwrap();
        assert_eq!(r.per_query.keys().collect::<Vec<_>>(), ["q1", "q3"]);
        assert_eq!(r.mean, [0.5]);
        let r = evaluate(&qrels, &run, &ms, &EvalOptions { complete: true }).unwrap();
        assert_eq!(r.num_queries(), 3);
        assert_eq!(r.per_query["q2"], [0.0]);
        assert!((r.mean[0] - 1.0 / 3.0).abs() < 1e-15);
        let json = r.to_json(true);
        assert_eq!(json["queries"], 3);
        assert_eq!(json["per_query"]["q1"]["recip_rank"], 1.0);

        let mut other = Run::new();
        other.insert("zz", "a", 1.0).unwrap();
        let e = evaluate(&qrels, &other, &ms, &EvalOptions::default()).unwrap_err();
        assert!(
            e.to_string()
                .contains("no query of the run appears in the qrels"),
            "{e}"
        );
    }
}
