use std::path::PathBuf;

/// Every way reading or writing a bank can fail. Messages name the file,
/// what is wrong and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum BankError {
    /// The file could not be opened or read.
    #[error("{path}: {error}; {}", tandem_io::io_fix(error))]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The file is not a valid vector file: `problem` says what is wrong,
    /// `fix` what the user can do.
    #[error("{path}: {problem}; {fix}")]
    Invalid {
        path: PathBuf,
        problem: String,
        fix: String,
    },
    /// Writing an output file failed, or it exists and overwriting was refused.
    #[error(transparent)]
    Write(#[from] tandem_io::WriteError),
}

impl BankError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        BankError::Io {
            path: path.into(),
            error,
        }
    }

    /// An invalid-input error: the file, what is wrong, what to do.
    pub fn invalid(
        path: impl Into<PathBuf>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        BankError::Invalid {
            path: path.into(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }
}
