//! The one error type of tandem-eval.

use std::path::PathBuf;

/// Everything that can go wrong while reading judgments or runs, parsing
/// measure names, evaluating or comparing.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A file could not be read at all.
    #[error("{}: cannot read: {source}; {}", path.display(), tandem_io::io_fix(source))]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A line of a qrels or run file is malformed; `message` says what and how to fix it.
    #[error("{}:{line}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What was wrong and what to do.
        message: String,
    },
    /// A file holds no judgments or no ranked documents.
    #[error("{}: {what} file holds no data lines; check that the right file was given", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
        /// "qrels" or "run".
        what: &'static str,
    },
    /// The same document was ranked twice for one query.
    #[error("query {qid}: document {docid} is ranked twice; a run lists each document at most once per query (remove the duplicate line)")]
    DuplicateDoc {
        /// Query id.
        qid: String,
        /// Document id.
        docid: String,
    },
    /// A score is NaN, which cannot be ranked.
    #[error("query {qid}: document {docid} has a NaN score; NaN cannot be ranked (fix the model output or drop the line)")]
    NanScore {
        /// Query id.
        qid: String,
        /// Document id.
        docid: String,
    },
    /// A measure name could not be parsed.
    #[error("unknown measure {name:?}: {hint}")]
    UnknownMeasure {
        /// The name given.
        name: String,
        /// What is accepted.
        hint: String,
    },
    /// No query can be evaluated (no run query appears in the qrels).
    #[error("no query of the run appears in the qrels ({qrels_queries} qrels queries, {run_queries} run queries); check that the qrels and the run belong to the same query set, or pass --complete to score missing queries as 0")]
    NoOverlap {
        /// Queries in the qrels.
        qrels_queries: usize,
        /// Queries in the run.
        run_queries: usize,
    },
    /// A significance test cannot be computed on these inputs.
    #[error("{0}")]
    Stats(String),
}
