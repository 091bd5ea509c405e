use std::fmt;
use std::path::{Path, PathBuf};

/// Where a problem was found: a file, optionally a 1-based line in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// The file (or directory) the problem is in.
    pub path: PathBuf,
    /// The 1-based line number, for line-oriented files.
    pub line: Option<usize>,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}", self.path.display()),
            None => write!(f, "{}", self.path.display()),
        }
    }
}

/// Every way building, loading or evaluating a dataset can fail. Messages
/// name the file (and line), what is wrong and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// Reading or writing a file failed at the operating-system level.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file being read or written.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An input is malformed or inconsistent.
    #[error("{place}: {problem}; {fix}")]
    Invalid {
        /// The file and line.
        place: Place,
        /// What is wrong.
        problem: String,
        /// What the user can do about it.
        fix: String,
    },
    /// A vector file could not be read or written.
    #[error(transparent)]
    Bank(#[from] tandem_bank::BankError),
    /// A search over the bank failed.
    #[error(transparent)]
    Search(#[from] tandem_search::SearchError),
    /// Computing the metrics failed.
    #[error(transparent)]
    Eval(#[from] tandem_eval::EvalError),
    /// An output file could not be written (or exists already).
    #[error(transparent)]
    Write(#[from] tandem_io::WriteError),
}

impl DataError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }

    /// A problem with a whole file.
    pub fn invalid(path: &Path, problem: impl Into<String>, fix: impl Into<String>) -> Self {
        DataError::Invalid {
            place: Place {
                path: path.to_path_buf(),
                line: None,
            },
            problem: problem.into(),
            fix: fix.into(),
        }
    }

    /// A problem on one (1-based) line of a file.
    pub fn at_line(
        path: &Path,
        line: usize,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        DataError::Invalid {
            place: Place {
                path: path.to_path_buf(),
                line: Some(line),
            },
            problem: problem.into(),
            fix: fix.into(),
        }
    }
}
