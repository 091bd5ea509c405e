//! Relevance judgments: TREC qrels (`qid 0 docid grade`) and BEIR qrels
//! (`query-id corpus-id score`, tab-separated, with or without a header).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::text::{for_each_line, read_text, slot};
use crate::EvalError;

/// Graded judgments per query. A grade >= 1 is relevant (trec_eval's
/// relevance level 1); grades <= 0 are judged non-relevant and give no nDCG gain.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Qrels {
    queries: BTreeMap<String, HashMap<Box<str>, i64>>,
}

impl Qrels {
    /// An empty set of judgments.
    pub fn new() -> Self {
        Self::default()
    }

    /// Judge `docid` for `qid` with `grade`; a later judgment of the same pair
    /// replaces the earlier one (as a Python dict would).
    pub fn insert(&mut self, qid: &str, docid: &str, grade: i64) {
        let docs = slot(&mut self.queries, qid);
        docs.insert(docid.into(), grade);
    }

    /// Read a qrels file, detecting the layout from its first line: four
    /// fields is TREC (`qid iter docid grade`), three is BEIR
    /// (`query-id corpus-id score`; a first line whose score is not a number
    /// is taken as the header). The same pair judged twice with different
    /// grades is an error.
    pub fn read(path: &Path) -> Result<Self, EvalError> {
        let text = read_text(path)?;
        Self::parse(&text, path)
    }

    /// Parse qrels text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, EvalError> {
        let mut qrels = Qrels::new();
        let mut layout: Option<usize> = None;
        let err = |line, message: String| EvalError::Parse {
            path: path.to_path_buf(),
            line,
            message,
        };
        for_each_line(text, "qrels", |line, fields| {
            let first = layout.is_none();
            let n = *layout.get_or_insert(fields.len());
            if n != 3 && n != 4 {
                return Err(err(
                    line,
                    format!(
                        "found {} fields; a qrels line is `qid 0 docid grade` (TREC) or `query-id corpus-id score` (BEIR TSV); check that this is a qrels file (runs go to --run)",
                        fields.len()
                    ),
                ));
            }
            if fields.len() != n {
                let shape = if n == 4 {
                    "`qid 0 docid grade` (TREC layout, from the first line)"
                } else {
                    "`query-id corpus-id score` (BEIR layout, from the first line)"
                };
                return Err(err(
                    line,
                    format!(
                        "found {} fields, expected {n}: {shape}; fix or remove this line",
                        fields.len()
                    ),
                ));
            }
            let (qid, docid, grade) = (fields[0], fields[n - 2], fields[n - 1]);
            let grade = match parse_grade(grade) {
                Some(g) => g,
                // A BEIR header such as `query-id corpus-id score`.
                None if n == 3 && first => return Ok(()),
                None => {
                    return Err(err(
                        line,
                        format!("grade {grade:?} is not an integer; the last field of a qrels line is the relevance grade (e.g. 0, 1, 2)"),
                    ))
                }
            };
            let docs = slot(&mut qrels.queries, qid);
            match docs.insert(docid.into(), grade) {
                Some(old) if old != grade => Err(err(
                    line,
                    format!("query {qid}, document {docid} is judged twice ({old} and {grade}); keep one judgment per pair"),
                )),
                _ => Ok(()),
            }
        })?;
        if qrels.queries.is_empty() {
            return Err(EvalError::Empty {
                path: path.to_path_buf(),
                what: "qrels",
            });
        }
        Ok(qrels)
    }

    /// Number of judged queries.
    pub fn num_queries(&self) -> usize {
        self.queries.len()
    }

    /// Judged query ids, in byte order.
    pub fn query_ids(&self) -> impl Iterator<Item = &str> {
        self.queries.keys().map(String::as_str)
    }

    /// The judgments of one query (doc id to grade).
    pub fn judgments(&self, qid: &str) -> Option<&HashMap<Box<str>, i64>> {
        self.queries.get(qid)
    }

    /// Number of relevant (grade >= 1) documents judged for `qid`.
    pub fn num_relevant(&self, qid: &str) -> usize {
        self.queries
            .get(qid)
            .map_or(0, |d| d.values().filter(|&&g| g >= 1).count())
    }
}

/// An integer grade; integral decimals such as `1.0` (seen in BEIR files) are accepted.
fn parse_grade(s: &str) -> Option<i64> {
    s.parse::<i64>().ok().or_else(|| {
        let f = s.parse::<f64>().ok()?;
        (f.is_finite() && f.fract() == 0.0 && f.abs() < 1e15).then_some(f as i64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Qrels, EvalError> {
        Qrels::parse(text, Path::new("q.txt"))
    }

    #[test]
    fn trec_and_beir_layouts_agree() {
        let trec = parse("q1 0 d1 2\nq1 0 d2 0\n\nq2 0 d3 1\n").unwrap();
        let beir =
            parse("query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td2\t0\nq2\td3\t1.0\n").unwrap();
        let bare = parse("q1\td1\t2\nq1\td2\t0\nq2\td3\t1\n").unwrap();
        assert_eq!(trec, beir);
        assert_eq!(trec, bare);
        assert_eq!(trec.num_queries(), 2);
        assert_eq!(trec.num_relevant("q1"), 1);
        assert_eq!(trec.judgments("q1").unwrap()["d2"], 0);
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = parse("q1 0 d1 2\nq1 0 d2\n").unwrap_err().to_string();
        assert!(e.starts_with("q.txt:2: found 3 fields, expected 4"), "{e}");
        let e = parse("q1 0 d1 2\nq1 0 d2 high\n").unwrap_err().to_string();
        assert!(
            e.starts_with("q.txt:2: grade \"high\" is not an integer"),
            "{e}"
        );
        let e = parse("q1 d1 2\nq1 d1 1\n").unwrap_err().to_string();
        assert!(
            e.starts_with("q.txt:2: query q1, document d1 is judged twice"),
            "{e}"
        );
        let e = parse("q1 Q0 d1 1 0.5 tag\n").unwrap_err().to_string();
        assert!(e.contains("q.txt:1: found 6 fields"), "{e}");
        let e = parse("\n\n").unwrap_err().to_string();
        assert!(e.contains("no data lines"), "{e}");
        // A header is only accepted on the first data line.
        let e = parse("q1 d1 2\nquery-id corpus-id score\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("q.txt:2: grade \"score\""), "{e}");
    }
}
