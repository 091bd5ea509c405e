//! The crash-only training harness: the one loop every task runs on.
//!
//! [`Harness::train`] takes a [`Task`] (what a micro-batch is and what it
//! computes, what validation measures, what a checkpoint holds besides the
//! weights and the optimizer) and does the rest:
//!
//! * the run directory: a new run, the resume of the same run (the same
//!   config, [`Resume`]), a refusal to touch anything else, `--force`;
//! * a pre-flight memory estimate checked against `--max-rss` and the
//!   machine's memory, before anything is written;
//! * the loop: per optimizer step, `accum` micro-batches, then the gradient
//!   clipped by its global norm and the AdamW update at the learning rate of
//!   the warmup + cosine schedule; resident memory watched (a warning on
//!   growth, a checkpoint and a stop past `--max-rss`);
//! * validation at epoch ends and every `val_every` steps, the `best`
//!   checkpoint, the test of the best weights at the end, and `report.md`;
//! * crash-only checkpoints ([`crate::checkpoint`]) every `ckpt_every`
//!   steps, at epoch ends, before each validation and on SIGINT/SIGTERM,
//!   from which rerunning the same command resumes bit for bit;
//! * `metrics.jsonl`, the progress bar, and a crash report on panic.
//!
//! A checkpoint holds `model.safetensors` (the task's parameters),
//! `optimizer.safetensors`, `state.json` (the step, the schedule, the best
//! validation, whether a validation is pending, and the task's state), the
//! run's `config.toml`, and the task's extra files.

mod crash;
mod metrics;
mod run_dir;
mod task;
mod tensorboard;
#[cfg(test)]
mod tests;

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tandem_nn::{clip_coef, fingerprint, grad_norm, AdamW, AdamWConfig, Schedule};

use crate::checkpoint::{self, CheckpointFile};
use crate::config::TrainConfig;
use crate::memory::{format_size, rss_bytes, Estimate, RssWatch};
use crate::TrainError;
use metrics::Metrics;

pub use crash::FAULT_ENV;
pub use task::{Micro, Progress, Scores, Snapshot, Stream, Task, Tested, TrainLine};

/// Version of `state.json`.
const STATE_FORMAT: u32 = 2;
/// Optimizer steps between `train` lines of metrics.jsonl.
const LOG_EVERY: u64 = 10;
/// How often a progress line is printed when the bar is hidden.
const PLAIN_EVERY: Duration = Duration::from_secs(10);
/// Resident memory below this never counts as growth worth a warning.
const RSS_WARN_FLOOR: u64 = 256 << 20;

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Stop {
    /// Every step ran; the test split was evaluated.
    Finished,
    /// SIGINT or SIGTERM: checkpointed and stopped.
    Signal,
}

/// What `train` reports back.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The run directory.
    pub run_dir: PathBuf,
    /// Optimizer steps done.
    pub steps: u64,
    /// How it ended.
    pub stop: Stop,
    /// The step the run resumed from, if it did.
    pub resumed_from: Option<u64>,
    /// Best validation value and its step.
    pub best: Option<(f64, u64)>,
    /// Test metrics of the best model, in the task's order.
    pub test: Scores,
    /// Test metrics of the task's baselines, by name.
    pub test_baselines: Vec<(String, Scores)>,
    /// The report.
    pub report: Option<PathBuf>,
    /// Fingerprint of the final weights.
    pub fingerprint: u64,
}

/// How to treat an existing run directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// Resume when the directory holds the same run, else start.
    Auto,
    /// Resume; an error when there is nothing to resume.
    Require,
    /// Delete the earlier run's outputs and start over.
    Restart,
}

/// The best validation so far.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Best {
    metric: String,
    value: f64,
    step: u64,
}

/// Where the run is: what `state.json` holds for the harness.
#[derive(Debug, Clone)]
struct RunState {
    /// Optimizer steps done.
    step: u64,
    /// The epoch of the next step.
    epoch: usize,
    schedule: Schedule,
    best: Option<Best>,
    /// The checkpoint was written just before a validation that has not
    /// been recorded yet.
    validate_pending: bool,
    elapsed_s: f64,
}

/// `state.json`: the harness's fields with the task's in between.
#[derive(Debug, Serialize, Deserialize)]
struct StateFile<S> {
    format: u32,
    step: u64,
    epoch: usize,
    seed: u64,
    /// How the random streams are derived (documentation for humans).
    rng: String,
    schedule: Schedule,
    #[serde(flatten)]
    task: S,
    best: Option<Best>,
    validate_pending: bool,
    elapsed_s: f64,
    model_fingerprint: String,
}

/// The error for a checkpoint whose content cannot be used; the fix is to
/// fall back to the checkpoint before it, or to start over.
pub fn damaged(checkpoint: &checkpoint::Loaded, problem: String) -> TrainError {
    TrainError::Checkpoint {
        path: checkpoint.dir.clone(),
        problem,
        fix: "delete this checkpoint directory to resume from the one before, or pass --force to start over".into(),
    }
}

/// A run's settings, checked: made before the task, which it outlives.
#[derive(Debug)]
pub struct Harness<'c> {
    cfg: &'c TrainConfig,
    max_rss: Option<u64>,
    threads: usize,
}

impl<'c> Harness<'c> {
    /// Checks `cfg` (before anything is read or written: a typo never costs
    /// an earlier run, not even with `--force`) and sets the thread count of
    /// the matrix products and of the global rayon pool, so build a task
    /// after this.
    pub fn new(cfg: &'c TrainConfig) -> Result<Harness<'c>, TrainError> {
        cfg.check()?;
        let max_rss = cfg.max_rss_bytes()?;
        let threads = if cfg.threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            cfg.threads
        };
        tandem_nn::linalg::set_threads(threads);
        // The global pool may already exist (tests train twice in one process).
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global();
        Ok(Harness {
            cfg,
            max_rss,
            threads,
        })
    }

    /// Trains `task` in the run directory `cfg.out`: starts, resumes or
    /// refuses as `resume` and the directory say, and runs until every
    /// step is done (then tests and reports) or a signal stops it.
    pub fn train<T: Task>(&self, mut task: T, resume: Resume) -> Result<Outcome, TrainError> {
        let cfg = self.cfg;
        let steps_per_epoch = task.steps_per_epoch();
        assert!(
            steps_per_epoch >= 1,
            "a task has at least one step per epoch"
        );
        let mut total = steps_per_epoch * cfg.epochs as u64;
        if cfg.max_steps > 0 {
            total = total.min(cfg.max_steps);
        }
        self.preflight(&task, steps_per_epoch, total)?;

        let loaded = run_dir::prepare(cfg, resume, task.outputs())?;
        let schedule = Schedule {
            lr: cfg.lr,
            min_lr: cfg.min_lr,
            warmup: cfg.warmup_steps(total),
            total,
        };
        let mut opt = AdamW::new(
            AdamWConfig {
                weight_decay: cfg.weight_decay,
                ..AdamWConfig::default()
            },
            task.params(),
        );
        let mut state = RunState {
            step: 0,
            epoch: 0,
            schedule,
            best: None,
            validate_pending: false,
            elapsed_s: 0.0,
        };
        let metrics_path = cfg.out.join("metrics.jsonl");
        let resumed_from = match &loaded {
            Some(ck) => {
                restore(cfg, ck, &mut task, &mut opt, &mut state)?;
                metrics::truncate(&metrics_path, state.step, state.validate_pending)?;
                Some(state.step)
            }
            None => {
                if metrics_path.exists() {
                    fs::remove_file(&metrics_path).map_err(|e| TrainError::io(&metrics_path, e))?;
                }
                None
            }
        };
        tandem_io::write_bytes_atomic(
            &cfg.out.join("config.toml"),
            tandem_io::Overwrite::Allow,
            cfg.to_toml().as_bytes(),
        )?;
        let mut metrics = Metrics::open(&metrics_path, state.step)?;
        crash::arm(&cfg.out, state.step);
        match resumed_from {
            Some(s) => eprintln!(
                "resuming from step {s} ({})",
                checkpoint::checkpoints_dir(&cfg.out)
                    .join(checkpoint::step_dir_name(s))
                    .display()
            ),
            None => metrics.baselines("val", &task.baselines()?, 0)?,
        }
        let streams: Vec<String> = task
            .streams()
            .iter()
            .map(|s| format!("{}/{}", s.name, s.index))
            .collect();
        let mut run = Run {
            cfg,
            max_rss: self.max_rss,
            opt,
            state,
            metrics,
            steps_per_epoch,
            total,
            val_reference: metrics::val_reference(&metrics_path, &cfg.best_metric),
            rng: format!(
                "ChaCha8 seeded per draw with SplitMix64(seed, stream, index): {}",
                streams.join(", ")
            ),
        };
        let stop = task.with_workers(|task| run.steps(task))?;
        if stop == Stop::Signal {
            let fingerprint = fingerprint(task.params());
            return Ok(run.stopped(resumed_from, fingerprint));
        }
        run.finish(&mut task, resumed_from)
    }

    /// The memory estimate, checked against `--max-rss` and the machine,
    /// and the run's opening lines.
    fn preflight<T: Task>(
        &self,
        task: &T,
        steps_per_epoch: u64,
        total: u64,
    ) -> Result<(), TrainError> {
        let cfg = self.cfg;
        let p = task.params().numel() as u64 * 4;
        let mut estimate = Estimate::new();
        estimate
            .add("model parameters", p)
            .add("gradients", p)
            .add("AdamW moments", 2 * p);
        task.estimate(&mut estimate);
        let keys = task.shrink_keys();
        let shrink = flags(keys);
        if let Some(limit) = self.max_rss {
            if estimate.total() > limit {
                return Err(cfg.invalid_key(
                    "max_rss",
                    format!(
                        "the run needs about {} (estimate below) but max_rss is {}:\n{}",
                        format_size(estimate.total()),
                        format_size(limit),
                        estimate.table()
                    ),
                    &format!("raise --max-rss or lower {shrink}"),
                ));
            }
        }
        if let (Some(limit), Some(now)) = (self.max_rss, rss_bytes()) {
            if now > limit {
                return Err(cfg.invalid_key(
                    "max_rss",
                    format!(
                        "max_rss {} is below what tandem already uses before training ({})",
                        format_size(limit),
                        format_size(now)
                    ),
                    "raise --max-rss above the estimate printed at start",
                ));
            }
        }
        eprintln!(
            "{}; effective batch {} ({} x accum {}), {} steps/epoch, {} steps, {} threads",
            task.describe(),
            cfg.batch * cfg.accum,
            cfg.batch,
            cfg.accum,
            steps_per_epoch,
            total,
            self.threads
        );
        if cfg.warmup_ratio == 0.0 && cfg.warmup > total {
            eprintln!(
                "note: warmup {} is longer than the run; it is cut to {total} steps",
                cfg.warmup
            );
        }
        eprintln!("memory estimate:\n{}", estimate.table());
        if let Some(total_ram) = meminfo("MemTotal:") {
            if estimate.total() > total_ram {
                return Err(cfg.invalid_key(
                    keys[0],
                    format!(
                        "the run needs about {} but this machine has {} of memory:\n{}",
                        format_size(estimate.total()),
                        format_size(total_ram),
                        estimate.table()
                    ),
                    &format!("lower {shrink} (the largest items are listed above)"),
                ));
            }
        }
        if let Some(avail) = meminfo("MemAvailable:") {
            if estimate.total() > avail {
                eprintln!(
                    "warning: the estimate ({}) exceeds the memory available now ({}); set --max-rss to stop cleanly instead of being killed",
                    format_size(estimate.total()),
                    format_size(avail)
                );
            }
        }
        Ok(())
    }
}

/// Config keys as flags: `--hidden, --queue or --batch`.
fn flags(keys: &[&str]) -> String {
    let flags: Vec<String> = keys
        .iter()
        .map(|k| format!("--{}", k.replace('_', "-")))
        .collect();
    match flags.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => flags.concat(),
    }
}

/// A line of /proc/meminfo (`MemTotal:`, `MemAvailable:`), in bytes (Linux).
fn meminfo(key: &str) -> Option<u64> {
    let text = fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Loads the checkpoint `ck` into the task, the optimizer and the state.
fn restore<T: Task>(
    cfg: &TrainConfig,
    ck: &checkpoint::Loaded,
    task: &mut T,
    opt: &mut AdamW,
    state: &mut RunState,
) -> Result<(), TrainError> {
    let bad = |problem: String| damaged(ck, problem);
    let nn = |e: tandem_nn::NnError| bad(e.to_string());
    task.params_mut()
        .load_safetensors(
            &ck.dir.join("model.safetensors"),
            ck.file("model.safetensors")?,
        )
        .map_err(nn)?;
    *opt = AdamW::from_safetensors(
        &ck.dir.join("optimizer.safetensors"),
        ck.file("optimizer.safetensors")?,
        task.params(),
    )
    .map_err(nn)?;
    let raw: Value = serde_json::from_slice(ck.file("state.json")?)
        .map_err(|e| bad(format!("state.json is not JSON: {e}")))?;
    if raw["format"] != json!(STATE_FORMAT) {
        return Err(TrainError::Checkpoint {
            path: ck.dir.clone(),
            problem: format!(
                "written by another version of tandem (state format {}, this one reads {STATE_FORMAT})",
                raw["format"]
            ),
            fix: "resume it with the tandem that wrote it, or pass --force to start the run over".into(),
        });
    }
    let s: StateFile<T::State> =
        serde_json::from_value(raw).map_err(|e| bad(format!("state.json: {e}")))?;
    if s.format != STATE_FORMAT || s.step != ck.step {
        return Err(bad(format!(
            "state.json has format {} and step {}, expected format {STATE_FORMAT} and step {}",
            s.format, s.step, ck.step
        )));
    }
    task.restore(s.task, ck)?;
    if s.schedule != state.schedule {
        return Err(TrainError::Checkpoint {
            path: cfg.data.clone(),
            problem: format!(
                "the run now has {} steps ({} warmup) but its checkpoints were made for {} ({} warmup); the dataset or the step settings changed",
                state.schedule.total, state.schedule.warmup, s.schedule.total, s.schedule.warmup
            ),
            fix: "resume with the run's dataset and settings, or pass --force to start over".into(),
        });
    }
    if s.model_fingerprint != format!("{:016x}", fingerprint(task.params())) {
        return Err(bad(
            "model.safetensors does not match the fingerprint in state.json".into(),
        ));
    }
    task.parameters_changed();
    *state = RunState {
        step: s.step,
        epoch: s.epoch,
        schedule: s.schedule,
        best: s.best,
        validate_pending: s.validate_pending,
        elapsed_s: s.elapsed_s,
    };
    Ok(())
}

/// A run under way: everything the loop carries besides the task.
struct Run<'c> {
    cfg: &'c TrainConfig,
    max_rss: Option<u64>,
    opt: AdamW,
    state: RunState,
    metrics: Metrics,
    steps_per_epoch: u64,
    total: u64,
    /// `mean 0.5614, last 0.4698`: the baselines of the best metric,
    /// printed beside each validation.
    val_reference: String,
    /// How the task's random streams are derived, for `state.json`.
    rng: String,
}

/// The `train` line being gathered: since when, steps, loss sum, micro-batches.
struct Window {
    start: Instant,
    steps: u64,
    loss: f64,
    micro: u64,
}

impl Window {
    fn new() -> Window {
        Window {
            start: Instant::now(),
            steps: 0,
            loss: 0.0,
            micro: 0,
        }
    }
}

impl Run<'_> {
    /// The loop over the remaining steps.
    fn steps<T: Task>(&mut self, task: &mut T) -> Result<Stop, TrainError> {
        let cfg = self.cfg;
        let (spe, total) = (self.steps_per_epoch, self.total);
        let mut grads = task.params().zeros_like();
        let mut window = Window::new();
        let started = Instant::now() - Duration::from_secs_f64(self.state.elapsed_s);
        let mut watch: Option<RssWatch> = None;
        let mut plain_mark = Instant::now();
        let mut last_rss: Option<u64> = None;
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template(
                "train [{bar:30}] {pos}/{len} {msg} ({per_sec}, eta {eta})",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        bar.set_position(self.state.step);
        let progress = Progress::new(bar.clone());

        if self.state.validate_pending {
            self.validate(task, &progress)?;
            self.save(task)?;
        }
        while self.state.step < total {
            let step = self.state.step;
            let lr = self.state.schedule.lr_at(step);
            for index in 0..cfg.accum {
                let at = Micro {
                    step,
                    epoch: (step / spe) as usize,
                    index,
                    accum: cfg.accum,
                    global: step * cfg.accum as u64 + index as u64,
                    steps: total,
                    progress: &progress,
                };
                window.loss += task.micro_step(&at, &mut grads)?;
                window.micro += 1;
            }
            // Clipping is folded into the update (one pass over the gradients).
            let coef = if cfg.clip > 0.0 {
                clip_coef(grad_norm(&grads), cfg.clip)
            } else {
                1.0
            };
            let scales = task.lr_scales();
            self.opt
                .update_groups(task.params_mut(), &grads, lr, coef, &scales);
            grads.zero();
            task.parameters_changed();
            self.state.step += 1;
            window.steps += 1;
            let step = self.state.step;
            self.state.epoch = (step / spe) as usize;
            self.state.elapsed_s = started.elapsed().as_secs_f64();
            bar.set_position(step);
            crash::reached(step);

            let rss = if step.is_multiple_of(cfg.rss_every.max(1)) || step == 1 {
                rss_bytes()
            } else {
                None
            };
            if let Some(r) = rss {
                let w = watch.get_or_insert_with(|| {
                    RssWatch::new(r.max(RSS_WARN_FLOOR), cfg.rss_warn_growth)
                });
                // Growth must show in two readings in a row: validation and the
                // checkpoint writes allocate for a moment and give it back.
                let sustained = last_rss.map_or(r, |p: u64| p.min(r));
                last_rss = Some(r);
                if let Some(msg) = w.observe(sustained) {
                    progress.say(format!("warning: {msg}"));
                    self.metrics.event(step, &msg)?;
                }
            }
            if step.is_multiple_of(LOG_EVERY) || step == total {
                self.log(task, &progress, &window, lr, &mut plain_mark)?;
                window = Window::new();
            }

            let epoch_end = step.is_multiple_of(spe);
            let val_due = (epoch_end
                || step == total
                || (cfg.val_every > 0 && step.is_multiple_of(cfg.val_every)))
                && task.validates();
            let stopping = crash::stop_requested();
            let over = self.max_rss.zip(rss_bytes()).filter(|(m, r)| r > m);
            if step.is_multiple_of(cfg.ckpt_every)
                || epoch_end
                || val_due
                || step == total
                || stopping
                || over.is_some()
            {
                self.state.validate_pending = val_due;
                self.save(task)?;
            }
            if let Some((limit, r)) = over {
                let msg = format!(
                    "resident memory {} exceeded max_rss {} at step {step}; checkpointed",
                    format_size(r),
                    format_size(limit)
                );
                self.metrics.event(step, &msg)?;
                bar.abandon();
                return Err(cfg.invalid_key(
                    "max_rss",
                    msg,
                    &format!(
                        "rerun the same command with a higher --max-rss to resume (a smaller {} means a new run: --force)",
                        flags(task.shrink_keys())
                    ),
                ));
            }
            if stopping {
                self.metrics
                    .event(step, "stopped by signal; checkpointed")?;
                bar.abandon_with_message("stopped by signal; checkpoint written");
                eprintln!("stopped by signal at step {step}; rerun the same command to resume");
                return Ok(Stop::Signal);
            }
            if val_due {
                self.validate(task, &progress)?;
                self.save(task)?;
            }
        }
        bar.finish_and_clear();
        Ok(Stop::Finished)
    }

    /// Writes the `train` line of the steps in `window`.
    fn log<T: Task>(
        &mut self,
        task: &mut T,
        progress: &Progress,
        window: &Window,
        lr: f32,
        plain_mark: &mut Instant,
    ) -> Result<(), TrainError> {
        let step = self.state.step;
        let epoch = (step - 1) / self.steps_per_epoch;
        let secs = window.start.elapsed().as_secs_f64();
        let loss = window.loss / window.micro.max(1) as f64;
        let mut line = Map::new();
        for (key, value) in [
            ("kind", json!("train")),
            ("step", json!(step)),
            ("epoch", json!(epoch)),
            ("loss", json!(loss)),
            ("lr", json!(lr)),
            ("steps_per_s", json!(window.steps as f64 / secs.max(1e-9))),
            ("elapsed_s", json!(self.state.elapsed_s)),
        ] {
            line.insert(key.into(), value);
        }
        if let Some(r) = rss_bytes() {
            line.insert("rss_bytes".into(), json!(r));
        }
        let mut warnings = Vec::new();
        task.log(&mut TrainLine::new(
            step,
            epoch as usize,
            &mut line,
            &mut warnings,
        ));
        for msg in warnings {
            progress.say(format!("warning: {msg}"));
            self.metrics.event(step, &msg)?;
        }
        let bar = progress.bar();
        bar.set_message(format!("loss {loss:.4} lr {lr:.2e}"));
        if bar.is_hidden() && plain_mark.elapsed() >= PLAIN_EVERY {
            // Logs and pipes get a line now and then instead of a bar.
            *plain_mark = Instant::now();
            eprintln!(
                "step {step}/{} (epoch {epoch}) loss {loss:.4} lr {lr:.2e} {:.1} steps/s",
                self.total,
                window.steps as f64 / secs.max(1e-9)
            );
        }
        self.metrics.write(Value::Object(line))?;
        crash::set_last(&self.cfg.out, &self.metrics.last);
        Ok(())
    }

    /// Validates the current weights, records the scores and moves `best`.
    fn validate<T: Task>(&mut self, task: &mut T, progress: &Progress) -> Result<(), TrainError> {
        let cfg = self.cfg;
        let step = self.state.step;
        let scores = progress.bar().suspend(|| task.validate())?;
        let mut line = metrics::scores_map(&scores);
        line.insert("kind".into(), json!("val"));
        line.insert("step".into(), json!(step));
        line.insert(
            "epoch".into(),
            json!(step.saturating_sub(1) / self.steps_per_epoch),
        );
        self.metrics.write(Value::Object(line))?;
        let value = scores
            .iter()
            .find(|(name, _)| *name == cfg.best_metric)
            .map(|(_, v)| *v)
            .expect("the config's check makes best_metric a validation score");
        let improved = self.state.best.as_ref().is_none_or(|b| value > b.value);
        progress.say(format!(
            "step {step}: validation {} = {value:.4}{}  [baselines: {}]",
            cfg.best_metric,
            if improved { " (best)" } else { "" },
            self.val_reference
        ));
        if improved {
            self.state.best = Some(Best {
                metric: cfg.best_metric.clone(),
                value,
                step,
            });
            checkpoint::mark_best(&cfg.out, step)?;
        }
        self.state.validate_pending = false;
        Ok(())
    }

    /// Writes the checkpoint of the current step and prunes older ones.
    fn save<T: Task>(&self, task: &T) -> Result<(), TrainError> {
        let cfg = self.cfg;
        let snapshot = task.snapshot();
        let state = StateFile {
            format: STATE_FORMAT,
            step: self.state.step,
            epoch: self.state.epoch,
            seed: cfg.seed,
            rng: self.rng.clone(),
            schedule: self.state.schedule,
            task: snapshot.state,
            best: self.state.best.clone(),
            validate_pending: self.state.validate_pending,
            elapsed_s: self.state.elapsed_s,
            model_fingerprint: format!("{:016x}", fingerprint(task.params())),
        };
        let model_bytes = task.params().to_safetensors(&task.weights_metadata());
        let opt_bytes = self.opt.to_safetensors();
        let state_bytes = serde_json::to_vec_pretty(&state).expect("plain data");
        let config = cfg.to_toml();
        let mut files = vec![
            CheckpointFile {
                name: "model.safetensors",
                bytes: &model_bytes,
            },
            CheckpointFile {
                name: "optimizer.safetensors",
                bytes: &opt_bytes,
            },
            CheckpointFile {
                name: "state.json",
                bytes: &state_bytes,
            },
            CheckpointFile {
                name: "config.toml",
                bytes: config.as_bytes(),
            },
        ];
        files.extend(
            snapshot
                .files
                .iter()
                .map(|(name, bytes)| CheckpointFile { name, bytes }),
        );
        checkpoint::write_checkpoint(&cfg.out, self.state.step, &files)?;
        checkpoint::prune(&cfg.out, cfg.keep_last)?;
        Ok(())
    }

    /// The outcome of a run stopped by a signal (its report written as it is).
    fn stopped(&self, resumed_from: Option<u64>, fingerprint: u64) -> Outcome {
        Outcome {
            run_dir: self.cfg.out.clone(),
            steps: self.state.step,
            stop: Stop::Signal,
            resumed_from,
            best: self.state.best.as_ref().map(|b| (b.value, b.step)),
            test: Vec::new(),
            test_baselines: Vec::new(),
            report: crate::report::write_report(&self.cfg.out, "tandem train (interrupted)").ok(),
            fingerprint,
        }
    }

    /// Tests the best weights, records the scores and writes the report.
    fn finish<T: Task>(
        mut self,
        task: &mut T,
        resumed_from: Option<u64>,
    ) -> Result<Outcome, TrainError> {
        let cfg = self.cfg;
        let final_fp = fingerprint(task.params());
        if crash::stop_requested() {
            // The last checkpoint is written; the test evaluation runs when the
            // same command is run again.
            eprintln!(
                "stopped by signal before the test evaluation; rerun the same command to run it"
            );
            return Ok(self.stopped(resumed_from, final_fp));
        }
        // Test with the best checkpoint's weights (the final ones without validation).
        if let Some(best) = &self.state.best {
            let dir =
                checkpoint::checkpoints_dir(&cfg.out).join(checkpoint::step_dir_name(best.step));
            let path = dir.join("model.safetensors");
            let bytes = fs::read(&path).map_err(|e| TrainError::io(&path, e))?;
            task.params_mut()
                .load_safetensors(&path, &bytes)
                .map_err(|e| TrainError::Checkpoint {
                    path: path.clone(),
                    problem: e.to_string(),
                    fix: "the best checkpoint is damaged; evaluate another with `tandem encode`"
                        .into(),
                })?;
            task.parameters_changed();
        }
        let tested = task.finish()?;
        let step = self.state.step;
        if !tested.scores.is_empty() {
            let mut line = metrics::scores_map(&tested.scores);
            line.insert("kind".into(), json!("test"));
            line.insert("step".into(), json!(step));
            line.insert(
                "model_step".into(),
                json!(self.state.best.as_ref().map_or(step, |b| b.step)),
            );
            self.metrics.write(Value::Object(line))?;
        }
        self.metrics.baselines("test", &tested.baselines, step)?;
        let report = crate::report::write_report(&cfg.out, &task.title())?;
        Ok(Outcome {
            run_dir: cfg.out.clone(),
            steps: step,
            stop: Stop::Finished,
            resumed_from,
            best: self.state.best.as_ref().map(|b| (b.value, b.step)),
            test: tested.scores,
            test_baselines: tested.baselines,
            report: Some(report),
            fingerprint: final_fp,
        })
    }
}
