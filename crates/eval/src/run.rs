//! Retrieval runs: TREC run files (`qid Q0 docid rank score tag`) and an
//! in-memory builder. Only the score orders documents; the rank column is ignored.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::text::{for_each_line, read_text, slot};
use crate::EvalError;

/// Scored documents per query. Each document appears at most once per
/// query and no score is NaN.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Run {
    queries: BTreeMap<String, HashMap<Box<str>, f64>>,
    len: usize,
}

impl Run {
    /// An empty run.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add `docid` with `score` to the ranking of `qid`. A document already
    /// ranked for this query, or a NaN score, is rejected.
    pub fn insert(&mut self, qid: &str, docid: &str, score: f64) -> Result<(), EvalError> {
        let docs = slot(&mut self.queries, qid);
        Self::insert_into(docs, qid, docid, score)?;
        self.len += 1;
        Ok(())
    }

    fn insert_into(
        docs: &mut HashMap<Box<str>, f64>,
        qid: &str,
        docid: &str,
        score: f64,
    ) -> Result<(), EvalError> {
        if score.is_nan() {
            return Err(EvalError::NanScore {
                qid: qid.to_string(),
                docid: docid.to_string(),
            });
        }
        match docs.entry(docid.into()) {
            Entry::Occupied(_) => Err(EvalError::DuplicateDoc {
                qid: qid.to_string(),
                docid: docid.to_string(),
            }),
            Entry::Vacant(v) => {
                v.insert(score);
                Ok(())
            }
        }
    }

    /// Read a TREC run file (six whitespace-separated fields per line).
    pub fn read(path: &Path) -> Result<Self, EvalError> {
        let text = read_text(path)?;
        Self::parse(&text, path)
    }

    /// Parse TREC run text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, EvalError> {
        let mut run = Run::new();
        let mut len = 0usize;
        let err = |line, message: String| EvalError::Parse {
            path: path.to_path_buf(),
            line,
            message,
        };
        for_each_line(text, "run", |line, fields| {
            let &[qid, _q0, docid, _rank, score, _tag] = fields else {
                return Err(err(
                    line,
                    format!(
                        "found {} fields, expected 6: `qid Q0 docid rank score tag`; fix the line, or check that this is a TREC run file (qrels go to --qrels)",
                        fields.len()
                    ),
                ));
            };
            let score: f64 = score.parse().map_err(|_| {
                err(line, format!("score {score:?} is not a number; the fifth field of a run line is the score"))
            })?;
            let docs = slot(&mut run.queries, qid);
            Self::insert_into(docs, qid, docid, score).map_err(|e| err(line, e.to_string()))?;
            len += 1;
            Ok(())
        })?;
        run.len = len;
        if run.len == 0 {
            return Err(EvalError::Empty {
                path: path.to_path_buf(),
                what: "run",
            });
        }
        Ok(run)
    }

    /// Number of queries with at least one ranked document.
    pub fn num_queries(&self) -> usize {
        self.queries.len()
    }

    /// Number of (query, document) pairs.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing has been ranked.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Query ids, in byte order.
    pub fn query_ids(&self) -> impl Iterator<Item = &str> {
        self.queries.keys().map(String::as_str)
    }

    /// The scored documents of one query (unordered).
    pub fn scores(&self, qid: &str) -> Option<&HashMap<Box<str>, f64>> {
        self.queries.get(qid)
    }

    /// The documents of `qid` in trec_eval order: score descending, ties by
    /// doc id in descending byte order.
    pub fn ranked(&self, qid: &str) -> Vec<(&str, f64)> {
        let mut docs: Vec<(&str, f64)> = self
            .queries
            .get(qid)
            .map_or_else(Vec::new, |d| d.iter().map(|(k, &v)| (&**k, v)).collect());
        docs.sort_unstable_by(|a, b| {
            // No NaN is stored, so partial_cmp is total here; -0.0 == 0.0 as in C.
            b.1.partial_cmp(&a.1)
                .unwrap_or(std::cmp::Ordering::Equal)
                .then_with(|| b.0.cmp(a.0))
        });
        docs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Run, EvalError> {
        Run::parse(text, Path::new("r.txt"))
    }

    #[test]
    fn ranks_by_score_then_docid_descending() {
        let run = parse("q1 Q0 a 1 0.5 t\nq1 Q0 c 2 0.5 t\nq1 Q0 b 3 0.9 t\nq2 Q0 x 1 -0.0 t\nq1 Q0 d 4 -1 t\nq2 Q0 y 2 0 t\n").unwrap();
        assert_eq!(run.len(), 6);
        assert_eq!(run.num_queries(), 2);
        let order: Vec<&str> = run.ranked("q1").into_iter().map(|(d, _)| d).collect();
        assert_eq!(order, ["b", "c", "a", "d"]);
        let order: Vec<&str> = run.ranked("q2").into_iter().map(|(d, _)| d).collect();
        assert_eq!(order, ["y", "x"], "-0.0 ties with 0.0");
        assert!(run.ranked("nope").is_empty());
    }

    #[test]
    fn rejects_bad_lines_with_file_and_line() {
        let e = parse("q1 Q0 a 1 0.5 t\nq1 Q0 a 2 0.4 t\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("r.txt:2: query q1: document a is ranked twice"),
            "{e}"
        );
        let e = parse("q1 Q0 a 1 NaN t\n").unwrap_err().to_string();
        assert!(
            e.starts_with("r.txt:1: query q1: document a has a NaN score"),
            "{e}"
        );
        let e = parse("q1 Q0 a 1 high t\n").unwrap_err().to_string();
        assert!(
            e.starts_with("r.txt:1: score \"high\" is not a number"),
            "{e}"
        );
        let e = parse("q1 Q0 a 1 0.5\n").unwrap_err().to_string();
        assert!(e.starts_with("r.txt:1: found 5 fields, expected 6"), "{e}");
        let e = parse("\n").unwrap_err().to_string();
        assert!(e.contains("run file holds no data lines"), "{e}");
        // Duplicates are caught even when the query's lines are not contiguous.
        let e = parse("q1 Q0 a 1 0.5 t\nq2 Q0 a 1 0.5 t\nq1 Q0 a 2 0.4 t\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("r.txt:3:"), "{e}");
    }

    #[test]
    fn in_memory_insert_checks() {
        let mut run = Run::new();
        run.insert("q", "d", 1.0).unwrap();
        assert!(matches!(
            run.insert("q", "d", 2.0),
            Err(EvalError::DuplicateDoc { .. })
        ));
        assert!(matches!(
            run.insert("q", "e", f64::NAN),
            Err(EvalError::NanScore { .. })
        ));
        run.insert("q", "e", f64::NEG_INFINITY).unwrap();
        assert_eq!(run.len(), 2);
    }
}
