//! The tasks the harness trains, and [`train`], which runs the one a
//! config names.
//!
//! * [`vector`]: a model over a dataset of bank-vector sequences, either a
//!   two-tower retriever (`task = "retriever"`, `tandem train`) or a
//!   next-vector model (`task = "lvm"`, `tandem lvm train`).
//! * [`dense`]: a Hugging Face text encoder fine-tuned on text pairs
//!   (`task = "dense"`, `tandem train --task dense`), with [`refresh`]:
//!   its mined negatives, ranked again in the background as it trains.

pub mod dense;
pub mod refresh;
pub mod vector;

use tandem_data::Dataset;

use crate::config::{TaskKind, TrainConfig};
use crate::harness::{Harness, Outcome, Resume};
use crate::TrainError;
use vector::VectorTask;

/// Trains what `cfg` says on the crash-only harness; see
/// [`crate::harness`].
pub fn train(cfg: &TrainConfig, resume: Resume) -> Result<Outcome, TrainError> {
    let harness = Harness::new(cfg)?;
    match cfg.task {
        TaskKind::Retriever | TaskKind::Lvm => {
            let ds = Dataset::open(&cfg.data)?;
            let task = VectorTask::new(cfg, &ds)?;
            harness.train(task, resume)
        }
        TaskKind::Dense => {
            let task = dense::DenseTask::new(cfg)?;
            harness.train(task, resume)
        }
    }
}
