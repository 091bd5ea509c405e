//! tandem-data: next-vector sequence datasets.
//!
//! A dataset (format in `docs/dataset-format.md`) is a directory holding a
//! vector bank and sequences of bank rows (documents in reading order), each
//! in a split. Every row of a sequence but the first is the target of one
//! [`Example`] whose context is the up to L rows before it.
//!
//! * [`Dataset::open`] loads and validates a dataset;
//! * [`Texts`] reads the text of a bank row from a `texts.jsonl` file
//!   ([`Dataset::texts`]);
//! * [`from_sentences`] builds one from a sentences file and its vectors;
//! * [`synth`] generates a seeded synthetic world;
//! * [`baseline()`] scores the last-vector and mean-of-context queries.

pub mod baseline;
mod error;
mod format;
pub mod import;
pub mod sentences;
pub mod synth;
mod texts;

pub use baseline::{baseline, BaselineReport, QueryKind};
pub use error::{DataError, Place};
pub use format::{
    check_output_dir, examples_of, read_sequences, write_dataset, BankSource, Dataset,
    DatasetParts, Example, Manifest, Provenance, Sequence, Split, SplitCounts, Splits,
    UnknownSplit, BANK_FILE, DEFAULT_CONTEXT, FORMAT_NAME, FORMAT_VERSION, IDS_FILE, MANIFEST_FILE,
    SEQUENCES_FILE,
};
pub use sentences::{from_sentences, SentencesOptions};
pub use texts::{Texts, TEXTS_FILE};

/// The tool and version recorded in every dataset's provenance.
pub const TOOL: &str = concat!("tandem-data ", env!("CARGO_PKG_VERSION"));
