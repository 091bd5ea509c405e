//! tandem-decode: the dual-path decoder of vector-native generation. A
//! next-vector model proposes a vector; the decoder SNAPs it to the nearest
//! bank row, BLENDs the two, or keeps it NOVEL, by the cosine between them
//! and the thresholds of the request's lane; telemetry counts the decisions.

mod decoder;
mod error;
mod eval;
mod generate;
mod lane;

pub use decoder::{
    blend, cosine, decide, Candidate, Decision, DecodeSettings, Decoder, LaneTelemetry, Retriever,
    Step, Telemetry,
};
pub use error::DecodeError;
pub use eval::{Case, Evaluation, Outcome, Summary, SweepRow, Tally};
pub use generate::{generate, propose, BankRetriever, TowerRetriever};
pub use lane::{profiles, Blend, Lane, Lanes};
