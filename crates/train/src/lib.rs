//! tandem-train: the crash-only training harness, the tasks it trains, and
//! the pieces that keep a run alive.
//!
//! * [`harness`]: the one training loop (run directory, resume, signals,
//!   crash report, memory budget, schedule, accumulation, clipping, AdamW,
//!   validation, metrics, report) and the [`Task`] trait it drives;
//! * [`tasks`]: what it trains ([`tasks::vector`]: two-tower retrievers and
//!   next-vector models over bank-vector sequences) and [`train`];
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
pub mod harness;
pub mod mine_cache;
pub mod miner;
pub mod queue;
pub mod tasks;

pub use config::{TaskKind, TrainConfig};
pub use harness::{Outcome, Resume, Stop, Task};
pub use tasks::train;
