//! The one error type of tandem-train.

use std::path::PathBuf;

use crate::curriculum::CurriculumError;

/// Everything that can go wrong while training, checkpointing or reporting.
/// Every message is one line naming the file, the problem and the fix.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A file or folder could not be read or written.
    #[error("{}: {source}; fix: {}", path.display(), tandem_io::io_fix(source))]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file's content is malformed.
    #[error("{}: {problem}; fix: {fix}", path.display())]
    Invalid {
        /// The file (with `:line` where it applies).
        path: PathBuf,
        /// What was wrong.
        problem: String,
        /// What to do about it.
        fix: String,
    },
    /// A message that already names the file, the problem and the fix
    /// (from another crate, or a parser with its own position).
    #[error("{0}")]
    Message(String),
    /// The dataset cannot be used.
    #[error(transparent)]
    Data(#[from] tandem_data::DataError),
    /// The curriculum string is malformed or does not cover the run.
    #[error(transparent)]
    Curriculum(#[from] CurriculumError),
    /// A checkpoint cannot be written, found or used.
    #[error("{}: {problem}; fix: {fix}", path.display())]
    Checkpoint {
        /// The checkpoint directory or file.
        path: PathBuf,
        /// What was wrong.
        problem: String,
        /// What to do about it.
        fix: String,
    },
}

impl TrainError {
    /// An [`TrainError::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> TrainError {
        TrainError::Io {
            path: path.into(),
            source,
        }
    }
}

impl From<tandem_io::WriteError> for TrainError {
    fn from(e: tandem_io::WriteError) -> TrainError {
        match e {
            tandem_io::WriteError::Io(path, source) => TrainError::Io { path, source },
            tandem_io::WriteError::Exists(path) => TrainError::Invalid {
                path,
                problem: "file already exists".into(),
                fix: "choose another output path or remove the file".into(),
            },
        }
    }
}
