//! tandem-text: Hugging Face model directories (with the
//! sentence-transformers layout), their tokenizers, pooling and Dense
//! modules, batched embedding over tandem-nn's encoders, and the training
//! data of text dual encoders ([`pairs`]).

mod batches;
pub mod beir;
mod colbert;
mod corpus;
mod dir;
mod embedder;
mod error;
pub mod job;
pub mod mine;
mod objective;
pub mod pairs;
mod pooling;
mod save;
pub mod split;
mod towers;
mod train;

pub use batches::{Interner, MineTexts, Tokenize, TrainSet};
pub use colbert::{ColBert, ColbertPass, ColbertTokens, MultiVectors, Side};
pub use corpus::{Corpus, Ids};
pub use dir::{ColbertConfig, ColbertLayout, DenseModule, ModelDir, Tower};
pub use embedder::{EmbedOptions, Embedded, Embedder};
pub use error::TextError;
pub use objective::{MainLoss, Objective, StepStats, TextBatch};
pub use pairs::{read_documents, read_examples, Document, Example, Examples, PairFormat};
pub use pooling::{Mode, Pooling};
pub use tandem_nn::encoder::Dropout;
pub use tandem_nn::kernels::Precision;
pub use towers::{Joined, TowerGrads, Towers, DOCUMENT};
pub use train::Pass;
