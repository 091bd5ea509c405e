//! tandem-train: the two-tower trainer and the pieces that keep a run alive.
//!
//! * [`curriculum`]: the per-epoch schedule of mined negatives
//!   (`0-5:none;6-10:8@0.82-0.92`);
//! * [`checkpoint`]: crash-only checkpoints (a directory per step, a
//!   `MANIFEST` of sizes and hashes written last as the commit mark);
//! * [`memory`]: resident-memory readings, size parsing, the RSS growth
//!   watch and memory estimates;
//! * [`report`]: `report.md` and SVG plots from a run's `metrics.jsonl`.

pub mod checkpoint;
pub mod curriculum;
pub mod error;
pub mod memory;
pub mod report;

pub use error::TrainError;
pub mod config;
pub mod encode;
pub mod miner;
pub mod queue;
pub mod trainer;

pub use config::{Task, TrainConfig};
pub use trainer::{train, Outcome, Resume, Stop};
