//! tandem-text: Hugging Face model directories (with the
//! sentence-transformers layout), their tokenizers, pooling and Dense
//! modules, and batched embedding over tandem-nn's encoders.

mod corpus;
mod dir;
mod embedder;
mod error;
pub mod job;
mod pooling;
pub mod split;

pub use corpus::{Corpus, Ids};
pub use dir::{DenseModule, ModelDir};
pub use embedder::{EmbedOptions, Embedded, Embedder};
pub use error::TextError;
pub use pooling::{Mode, Pooling};
pub use tandem_nn::kernels::Precision;
