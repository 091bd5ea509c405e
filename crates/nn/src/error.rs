//! The one error type of tandem-nn.

use std::path::PathBuf;

/// What went wrong loading or checking a model.
#[derive(Debug, thiserror::Error)]
pub enum NnError {
    /// A weights file is not what the model needs.
    #[error("{path}: {problem}; fix: {fix}")]
    Weights {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
        /// What to do.
        fix: String,
    },
    /// A model configuration that cannot be built.
    #[error("model config: {problem}; fix: {fix}")]
    Config {
        /// What is wrong.
        problem: String,
        /// What to do.
        fix: String,
    },
}

impl NnError {
    pub(crate) fn weights(
        path: &std::path::Path,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> NnError {
        NnError::Weights {
            path: path.to_path_buf(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }

    pub(crate) fn config(problem: impl Into<String>, fix: impl Into<String>) -> NnError {
        NnError::Config {
            problem: problem.into(),
            fix: fix.into(),
        }
    }
}
