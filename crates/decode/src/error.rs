//! The one error type of tandem-decode.

/// What can be wrong with a decoding request.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// A lane that cannot be used.
    #[error("lane {lane:?}: {problem}; fix: {fix}")]
    Lane {
        /// The lane's name.
        lane: String,
        /// What is wrong.
        problem: String,
        /// What to do.
        fix: String,
    },
}
