//! The contract between the harness and what it trains: [`Task`] and the
//! small types the two exchange.

use std::collections::HashMap;

use indicatif::ProgressBar;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};
use tandem_nn::Params;

use crate::checkpoint::Loaded;
use crate::memory::Estimate;
use crate::TrainError;

/// Metric values by name, in report order.
pub type Scores = Vec<(String, f64)>;

/// One kind of training run (a two-tower retriever, an LVM, a dense text
/// encoder, ColBERT), driven by the harness's loop.
///
/// The harness ([`Harness`](super::Harness)) owns what does not depend on
/// what is trained: the run directory (refusing to overwrite, `--force`,
/// resume), `config.toml`, checkpoints (weights, AdamW state, `state.json`,
/// `MANIFEST`) and exact resume, SIGINT/SIGTERM, the crash report, the
/// memory estimate and the `--max-rss` budget, `metrics.jsonl`, the progress
/// bar, the learning-rate schedule (linear warmup then cosine, stepped per
/// optimizer step), gradient accumulation, clipping and the AdamW update,
/// validation and the `best` checkpoint, and the report. A task owns its
/// model and its data and says what a step computes. It never writes
/// checkpoints or `metrics.jsonl` itself, and prints only through
/// [`Progress`] (its evaluations may draw their own progress bars: the
/// harness hides its bar while [`Task::validate`] runs).
///
/// # When the harness calls what
///
/// 1. The task is built by its own constructor after
///    [`Harness::new`](super::Harness::new) (which checks the config and sets
///    the thread count: build thread pools and indexes after it). The
///    constructor checks the task's data and settings, so that bad input
///    fails before the run directory is touched, and leaves freshly
///    initialised parameters in [`Task::params`].
/// 2. Before the run directory is touched: [`Task::steps_per_epoch`],
///    [`Task::estimate`], [`Task::describe`].
/// 3. On resume, the checkpoint's weights are loaded into
///    [`Task::params_mut`], then [`Task::restore`] gets the task's state.
///    On a fresh start, [`Task::baselines`] are recorded instead.
/// 4. [`Task::with_workers`] wraps the loop over the remaining steps. An
///    optimizer step calls [`Task::micro_step`] once per micro-batch
///    (`accum` times), then clips, updates the parameters and calls
///    [`Task::parameters_changed`]. Every ten steps (and after the last) a
///    `train` line is written, with [`Task::log`]'s additions. At epoch
///    ends, every `val_every` steps and after the last step,
///    [`Task::validate`] runs (when [`Task::validates`]). Checkpoints take
///    [`Task::snapshot`].
/// 5. When every step has run, the weights of the best validation are
///    loaded and [`Task::finish`] scores the test split and writes the
///    task's exports.
///
/// # Determinism
///
/// A resumed run must compute, bit for bit, what the uninterrupted run
/// computed. So what a micro-batch computes may depend only on the
/// parameters, on what [`Task::restore`] brought back, and on the
/// micro-batch's place in the run ([`Micro`]): draw random numbers from a
/// [`Stream`] indexed by that place (the epoch for a data order, the global
/// micro-batch for negatives), never from a generator carried across steps,
/// and put everything else carried across steps (a memory queue, a data
/// cursor) into [`Task::snapshot`]. Buffers and statistics that are only
/// reported (timings, fill rates) may start afresh on resume.
pub trait Task {
    /// What the task keeps in each checkpoint's `state.json`, written as
    /// top-level keys between the harness's (a struct of named fields, none
    /// of them named like the harness's: `format`, `step`, `epoch`, `seed`,
    /// `rng`, `schedule`, `best`, `validate_pending`, `elapsed_s`,
    /// `model_fingerprint`). Small things: a data cursor, a fingerprint of
    /// the data; large ones go into [`Snapshot::files`].
    type State: Serialize + DeserializeOwned;

    /// The start of the line printed when the run starts: what is trained
    /// on what, e.g. `tandem train: gru tower over data/world (3000 x 32),
    /// 1890 train / 265 val examples`. The harness appends the batch, the
    /// steps and the threads.
    fn describe(&self) -> String;

    /// The title of `report.md`.
    fn title(&self) -> String;

    /// The files [`Task::finish`] writes into the run directory, so that
    /// `--force` deletes them with the rest of an earlier run.
    fn outputs(&self) -> &'static [&'static str];

    /// The random streams the task draws from, described in every
    /// checkpoint's `state.json` (so the list is part of what a run is:
    /// never renumber a stream).
    fn streams(&self) -> &'static [Stream];

    /// Optimizer steps per epoch: the micro-batches an epoch holds divided
    /// by `accum`. At least 1: the constructor refuses data too small for
    /// one step, naming the settings to lower.
    fn steps_per_epoch(&self) -> u64;

    /// Adds the task's rows to the memory estimate printed before the run
    /// (its data, buffers, activations, evaluation). The harness has
    /// already added the parameters, their gradients and the AdamW moments.
    fn estimate(&self, estimate: &mut Estimate);

    /// The config keys that shrink the estimate most, largest first (at
    /// least one), named as the fix when the run does not fit in `--max-rss`
    /// or in the machine's memory.
    fn shrink_keys(&self) -> &'static [&'static str];

    /// The trained parameters. Gradients, the AdamW moments and the weights
    /// of a checkpoint (`model.safetensors`) have the same layout.
    fn params(&self) -> &Params;

    /// The trained parameters, for the optimizer update and for loading
    /// weights. [`Task::parameters_changed`] follows every such write.
    fn params_mut(&mut self) -> &mut Params;

    /// The metadata written into the header of `model.safetensors`, e.g.
    /// the model's shape, so that the weights can be loaded on their own.
    fn weights_metadata(&self) -> HashMap<String, String>;

    /// The learning rate of each tensor of [`Task::params`] as a factor of
    /// the schedule's (differential learning rates); 0 freezes a tensor.
    /// Empty (the default): every tensor at the schedule's rate.
    fn lr_scales(&self) -> Vec<f32> {
        Vec::new()
    }

    /// Called after every write to [`Task::params_mut`]: each optimizer
    /// update, and loading the weights of a checkpoint (on resume, and the
    /// best ones before [`Task::finish`]). A task that keeps weights derived
    /// from the parameters (e.g. packed bfloat16 copies) refreshes them here.
    fn parameters_changed(&mut self) {}

    /// Runs `train` (the harness's loop over the remaining steps) with the
    /// task's background work running beside it, e.g. a worker mining
    /// negatives ahead or an index refreshed while training goes on; a task
    /// without any just calls `train(self)`. The loop may stop early (a
    /// signal, an error) or panic: the workers must be stopped and joined
    /// before returning or unwinding, so that a panic still reaches the
    /// crash report and ends the process.
    fn with_workers<R>(&mut self, train: impl FnOnce(&mut Self) -> R) -> R
    where
        Self: Sized;

    /// Computes one micro-batch: its loss, and its gradient times
    /// [`Micro::grad_scale`] added into `grads` (which has the layout of
    /// [`Task::params`] and is zeroed by the harness after each update).
    /// Returns the micro-batch's loss (unscaled), which the harness averages
    /// into the `loss` of the `train` lines. A loss that is not finite is
    /// an error the task returns, naming the settings to change.
    fn micro_step(&mut self, at: &Micro<'_>, grads: &mut Params) -> Result<f64, TrainError>;

    /// Adds the task's measures to a `train` line of `metrics.jsonl` (e.g.
    /// an accuracy averaged over the micro-batches since the previous line,
    /// mining times) and raises its warnings. Called once per line.
    fn log(&mut self, line: &mut TrainLine<'_>);

    /// Whether there is anything to validate on (an empty validation split:
    /// no validations, no best checkpoint, the final weights are tested).
    fn validates(&self) -> bool;

    /// Scores the current parameters (those after the step just done) on
    /// the validation data. The scores must include the config's
    /// `best_metric` (higher is better), which picks the best checkpoint.
    fn validate(&mut self) -> Result<Scores, TrainError>;

    /// Reference scores on the validation data of methods that need no
    /// training (for a retriever over vectors: the last context vector or
    /// the mean of the context as the query), by name. Recorded once, when
    /// a run starts, and printed beside each validation.
    fn baselines(&mut self) -> Result<Vec<(String, Scores)>, TrainError>;

    /// What a checkpoint holds for the task besides the parameters and the
    /// optimizer: everything a resumed run needs to go on exactly.
    fn snapshot(&self) -> Snapshot<Self::State>;

    /// Takes back what [`Task::snapshot`] saved, when a run resumes; the
    /// parameters are already loaded. `checkpoint` holds the extra files;
    /// an error about them is [`damaged`](super::damaged). A state that does
    /// not fit this run (another dataset) is refused with an error that
    /// says how to go on.
    fn restore(&mut self, state: Self::State, checkpoint: &Loaded) -> Result<(), TrainError>;

    /// Ends a run that did every step, with the weights of the best
    /// validation loaded (the final ones when nothing was validated): scores
    /// the test split and writes [`Task::outputs`] (e.g. a TREC run of the
    /// test split). The harness records the scores.
    fn finish(&mut self) -> Result<Tested, TrainError>;
}

/// A stream of random draws. Draw `index` of a stream is seeded from the
/// run's seed, the stream's id and `index` (SplitMix64 mixing), so no
/// generator state is carried: a resumed run draws exactly what the
/// uninterrupted run drew.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stream {
    /// Distinct among a task's streams, and part of every seed.
    pub id: u64,
    /// Its name in `state.json`.
    pub name: &'static str,
    /// What `index` counts, in `state.json`: `epoch`, `micro-batch`.
    pub index: &'static str,
}

impl Stream {
    /// The seed of draw `index` of this stream in a run seeded with `seed`.
    pub fn seed(&self, seed: u64, index: u64) -> u64 {
        let mut z = seed
            ^ self.id.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// The generator of draw `index`.
    pub fn rng(&self, seed: u64, index: u64) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(self.seed(seed, index))
    }
}

/// Where a micro-batch falls in the run, handed to [`Task::micro_step`].
#[derive(Debug, Clone, Copy)]
pub struct Micro<'a> {
    /// The optimizer step the micro-batch belongs to, counted from 0 (the
    /// number of steps done before it).
    pub step: u64,
    /// The epoch of that step, counted from 0.
    pub epoch: usize,
    /// Which micro-batch of the step: `0..accum`.
    pub index: usize,
    /// Micro-batches per optimizer step (gradient accumulation).
    pub accum: usize,
    /// Micro-batches before this one since the run began,
    /// `step * accum + index`: the index of per-micro-batch random draws.
    pub global: u64,
    /// Optimizer steps of the whole run.
    pub steps: u64,
    /// Lines for the person watching.
    pub progress: &'a Progress,
}

impl Micro<'_> {
    /// The factor of this micro-batch's gradient in the step's, `1 /
    /// accum`: a step's gradient is the mean of its micro-batches'.
    pub fn grad_scale(&self) -> f32 {
        1.0 / self.accum as f32
    }
}

/// Text for the person watching a run: lines printed above the progress
/// bar, or plainly on stderr when the bar is hidden (stderr not a terminal:
/// logs, pipes, CI), where the bar would drop them.
#[derive(Debug, Clone)]
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    pub(super) fn new(bar: ProgressBar) -> Progress {
        Progress { bar }
    }

    pub(super) fn bar(&self) -> &ProgressBar {
        &self.bar
    }

    /// Prints `line`.
    pub fn say(&self, line: impl Into<String>) {
        let line = line.into();
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }
}

/// A `train` line of `metrics.jsonl` being written, for [`Task::log`] to
/// add to.
#[derive(Debug)]
pub struct TrainLine<'a> {
    /// Optimizer steps done.
    pub step: u64,
    /// The epoch of the last of them.
    pub epoch: usize,
    fields: &'a mut Map<String, Value>,
    warnings: &'a mut Vec<String>,
}

impl<'a> TrainLine<'a> {
    pub(super) fn new(
        step: u64,
        epoch: usize,
        fields: &'a mut Map<String, Value>,
        warnings: &'a mut Vec<String>,
    ) -> TrainLine<'a> {
        TrainLine {
            step,
            epoch,
            fields,
            warnings,
        }
    }

    /// Records `value` (a number, usually) as `name`.
    pub fn set(&mut self, name: &str, value: impl Into<Value>) {
        self.fields.insert(name.to_string(), value.into());
    }

    /// Raises a warning: printed above the progress bar and recorded as an
    /// `event` line (shown in the report), before this line.
    pub fn warn(&mut self, message: String) {
        self.warnings.push(message);
    }
}

/// What a checkpoint holds for a task (see [`Task::snapshot`]).
#[derive(Debug)]
pub struct Snapshot<S> {
    /// Written into `state.json`.
    pub state: S,
    /// Extra files of the checkpoint directory, `(name, content)`: plain
    /// names, none of the harness's (`model.safetensors`,
    /// `optimizer.safetensors`, `state.json`, `config.toml`, `MANIFEST`).
    pub files: Vec<(String, Vec<u8>)>,
}

/// The test scores of a finished run (see [`Task::finish`]).
#[derive(Debug, Default)]
pub struct Tested {
    /// The trained model's scores; empty when there is no test data.
    pub scores: Scores,
    /// The scores of the task's baselines on the same data, by name.
    pub baselines: Vec<(String, Scores)>,
}
