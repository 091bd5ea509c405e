use std::path::PathBuf;

/// Every way a search or an index operation can fail. Messages say what is
/// wrong and what to do about it, and name the file when there is one.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("unknown metric {0:?}; use \"ip\" (inner product) or \"cosine\"")]
    UnknownMetric(String),
    #[error("unknown scalar type {0:?}; use \"f32\", \"f16\", \"bf16\" or \"i8\"")]
    UnknownScalar(String),
    #[error("unknown precision {0:?}; use \"auto\" (int8 scan where the CPU has AVX512-VNNI, exact float32 rescore) or \"f32\"")]
    UnknownPrecision(String),
    #[error("{bank}: bank row {row} holds a value beyond +-65504, which float16 cannot store; build the index with scalar f32")]
    F16Range { bank: String, row: usize },
    #[error("k must be at least 1; pass --k 1 or more")]
    ZeroK,
    #[error("k = {k} but the bank has only {rows} rows; pass --k {rows} or less")]
    KTooLarge { k: usize, rows: usize },
    #[error(
        "queries hold {len} numbers, which is not a whole number of rows of dimension {dim}; \
         the queries must have the bank's dimension {dim}"
    )]
    QueryDim { len: usize, dim: usize },
    #[error("the query offsets must run from 0 to the {rows} query token rows without going back; give one offset per query plus one")]
    QueryOffsets { rows: usize },
    #[error("query row {row} holds NaN or Inf; fix or drop that query")]
    NonFiniteQuery { row: usize },
    #[error("{lists} exclusion lists for {queries} queries; give one line per query (an empty line excludes nothing)")]
    ExcludeCount { lists: usize, queries: usize },
    #[error("exclusion list of query {query} names row {row}, but the bank has {rows} rows (0..{rows}); fix the exclusion list")]
    ExcludeRow { query: usize, row: u32, rows: usize },
    #[error("{bank}: bank row {row} holds NaN or Inf; fix or drop that row before searching")]
    NonFiniteBank { bank: String, row: usize },
    #[error("{bank}: the bank has {rows} rows, more than the 2^32 that search results can address; split the bank")]
    TooManyRows { bank: String, rows: usize },
    #[error("{path}: {problem}; {fix}")]
    Index {
        path: PathBuf,
        problem: String,
        fix: String,
    },
    #[error("{path}: {source}; {}", tandem_io::io_fix(source))]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Write(#[from] tandem_io::WriteError),
    #[error("usearch: {0}; this is an internal index error, rebuild the index with `tandem index build --force`")]
    Usearch(String),
}

impl SearchError {
    pub(crate) fn index(
        path: impl Into<PathBuf>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        SearchError::Index {
            path: path.into(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }
}
