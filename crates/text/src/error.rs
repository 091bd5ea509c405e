//! The one error type of tandem-text.

use std::path::{Path, PathBuf};

/// A model directory or an input that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    /// A file is missing, unreadable or wrong.
    #[error("{path}: {problem}; fix: {fix}")]
    File {
        /// The file (or directory).
        path: PathBuf,
        /// What is wrong.
        problem: String,
        /// What to do.
        fix: String,
    },
}

impl TextError {
    /// An error about `path`.
    pub fn file(path: &Path, problem: impl Into<String>, fix: impl Into<String>) -> TextError {
        TextError::File {
            path: path.to_path_buf(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }

    /// A tandem-nn error about the model in `path` (its `config.json` when
    /// the error names no file of its own).
    pub(crate) fn nn(config: &Path, e: tandem_nn::NnError) -> TextError {
        match e {
            tandem_nn::NnError::Weights { path, problem, fix } => {
                TextError::File { path, problem, fix }
            }
            tandem_nn::NnError::Config { problem, fix } => TextError::File {
                path: config.to_path_buf(),
                problem,
                fix,
            },
        }
    }
}
