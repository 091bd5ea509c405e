//! The training loop: crash-only (checkpoint, resume bit for bit, stop
//! cleanly on SIGINT/SIGTERM, crash report on panic, memory guard), with
//! the miner, the memory queue, validation and the final test evaluation.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::index::sample;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tandem_bank::Bank;
use tandem_data::{Dataset, Example, QueryKind, Split};
use tandem_nn::{
    clip_coef, fingerprint, grad_norm, AdamW, AdamWConfig, Batch, DocCache, InfoNce, LossInput,
    LossOutput, Model, ModelConfig, QueryCache, Regression, Schedule,
};
use tandem_search::{Flat, Hnsw, Index, Metric};

use crate::checkpoint::{self, CheckpointFile};
use crate::config::{Anchor, MinerMode, TrainConfig};
use crate::encode;
use crate::memory::{format_size, rss_bytes, Estimate, RssWatch};
use crate::miner::{mine, MineRequest, MineSettings, MineStats, Mined, Pipeline};
use crate::queue::MemoryQueue;
use crate::TrainError;

/// The random streams of a run. Each draw is seeded from (seed, stream,
/// index), so no generator state has to be carried: a resumed run draws
/// exactly what the uninterrupted run drew.
#[derive(Debug, Clone, Copy)]
pub enum Stream {
    /// Parameter initialisation (index 0).
    Init = 1,
    /// The example order of an epoch (index: epoch).
    Order = 2,
    /// Random negatives of a micro-batch (index: global micro-batch).
    Random = 3,
    /// Sampling inside the mined band (index: micro-batch * B + example).
    Mine = 4,
}

/// The seed of draw `index` of `stream` (SplitMix64 mixing).
pub fn stream_seed(seed: u64, stream: Stream, index: u64) -> u64 {
    let mut z = seed
        ^ (stream as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

const STATE_FORMAT: u32 = 2;
/// Fault injection for reliability tests: panic right after this optimizer
/// step (before its checkpoint), as a bug in the loop would.
pub const FAULT_ENV: &str = "TANDEM_FAULT_PANIC_AT_STEP";

fn fault_step() -> Option<u64> {
    std::env::var(FAULT_ENV).ok()?.parse().ok()
}
/// Optimizer steps between `train` lines of metrics.jsonl.
const LOG_EVERY: u64 = 10;
/// How often a progress line is printed when the bar is hidden.
const PLAIN_EVERY: Duration = Duration::from_secs(10);
/// Resident memory below this never counts as growth worth a warning.
const RSS_WARN_FLOOR: u64 = 256 << 20;
/// How far ahead the pipelined miner runs, in micro-batches.
const MINE_DEPTH: usize = 2;

/// Everything besides weights and moments that a resume needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    format: u32,
    /// Optimizer steps done.
    step: u64,
    /// The epoch of the next step.
    epoch: usize,
    seed: u64,
    /// How the random streams are derived (documentation for humans).
    rng: String,
    schedule: Schedule,
    /// The dataset the run trains on.
    data: DataFingerprint,
    queue_capacity: usize,
    queue_next: usize,
    queue_rows: Vec<u32>,
    best: Option<Best>,
    /// The checkpoint was written just before a validation that has not
    /// been recorded yet.
    validate_pending: bool,
    elapsed_s: f64,
    model_fingerprint: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Best {
    metric: String,
    value: f64,
    step: u64,
}

/// Metric values by name, in report order.
pub type Scores = Vec<(String, f64)>;

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
    /// Test metrics of the best model, in `metric_names` order.
    pub test: Scores,
    /// Test metrics of the mean and last baselines.
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

static STOP: AtomicBool = AtomicBool::new(false);
static CRASH: Mutex<Option<CrashInfo>> = Mutex::new(None);
/// The optimizer step in progress, for the crash report.
static CRASH_STEP: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[derive(Debug, Clone)]
struct CrashInfo {
    run_dir: PathBuf,
    last: String,
}

extern "C" fn on_signal(_: libc::c_int) {
    if STOP.swap(true, Ordering::SeqCst) {
        // A second signal: the user insists. Checkpoints are atomic, so
        // leaving now loses at most the steps since the last one.
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(130) };
    }
}

fn install_handlers() {
    STOP.store(false, Ordering::SeqCst);
    // SAFETY: the handler only touches an atomic and calls _exit.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let crash = CRASH.lock().ok().and_then(|c| c.clone());
            if let Some(c) = crash {
                let ckdir = checkpoint::checkpoints_dir(&c.run_dir);
                let resume = if ckdir.join("latest").is_file() {
                    format!("training continues from the newest complete checkpoint in {}", ckdir.display())
                } else {
                    "no checkpoint was written yet, so training starts over".to_string()
                };
                let last = if c.last.is_empty() { "(none logged yet)".to_string() } else { format!("`{}`", c.last) };
                let text = format!(
                    "# tandem crash report\n\n- step: {}\n- panic: {}\n- last metrics: {last}\n- resume: rerun the same command; {resume}\n\n## backtrace\n\n```\n{}\n```\n",
                    CRASH_STEP.load(Ordering::SeqCst),
                    info,
                    std::backtrace::Backtrace::force_capture()
                );
                let path = c.run_dir.join("crash-report.md");
                if tandem_io::write_bytes_atomic(&path, tandem_io::Overwrite::Allow, text.as_bytes()).is_ok() {
                    eprintln!("crash report written to {}", path.display());
                }
            }
            previous(info);
        }));
    });
}

fn set_crash(run_dir: &Path, last: &str) {
    if let Ok(mut c) = CRASH.lock() {
        *c = Some(CrashInfo {
            run_dir: run_dir.to_path_buf(),
            last: last.to_string(),
        });
    }
}

/// `metrics.jsonl`, one object per line, each line written and flushed on
/// its own.
struct Metrics {
    file: File,
    path: PathBuf,
    last: String,
}

impl Metrics {
    fn open(path: &Path) -> Result<Metrics, TrainError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| TrainError::io(path, e))?;
        Ok(Metrics {
            file,
            path: path.to_path_buf(),
            last: String::new(),
        })
    }

    fn write(&mut self, v: Value) -> Result<(), TrainError> {
        let line = v.to_string();
        writeln!(self.file, "{line}")
            .and_then(|_| self.file.flush())
            .map_err(|e| TrainError::io(&self.path, e))?;
        self.last = line;
        Ok(())
    }
}

/// Keeps the lines of `metrics.jsonl` that the checkpoint of `step`
/// accounts for; the rest is written again by the resumed run.
fn truncate_metrics(path: &Path, step: u64, pending: bool) -> Result<(), TrainError> {
    let Ok(file) = File::open(path) else {
        return Ok(());
    };
    let mut kept = String::new();
    for line in BufReader::new(file).lines() {
        let line = line.map_err(|e| TrainError::io(path, e))?;
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue; // a line cut by a crash
        };
        let s = v.get("step").and_then(Value::as_u64).unwrap_or(0);
        let kind = v.get("kind").and_then(Value::as_str).unwrap_or("");
        // Lines of `step` itself: train lines and events stay; its
        // validation stays unless it is redone (pending); test-split lines
        // are rewritten when the run finishes.
        let keep_at_step = match kind {
            "train" | "event" => true,
            "val" => !pending,
            _ => false,
        };
        if s < step || (s == step && keep_at_step) {
            kept.push_str(&line);
            kept.push('\n');
        }
    }
    tandem_io::write_bytes_atomic(path, tandem_io::Overwrite::Allow, kept.as_bytes())?;
    Ok(())
}

/// The files of an earlier run that a restart removes.
const RUN_FILES: [&str; 9] = [
    "metrics.jsonl",
    "config.toml",
    "report.md",
    "loss.svg",
    "lr.svg",
    "recall.svg",
    "crash-report.md",
    "test.run",
    "test.qrels",
];

/// Decides between a fresh start and a resume; returns the checkpoint to
/// resume from.
fn prepare_run_dir(
    cfg: &TrainConfig,
    resume: Resume,
) -> Result<Option<checkpoint::Loaded>, TrainError> {
    let dir = &cfg.out;
    let config_path = dir.join("config.toml");
    if dir.exists() && !dir.is_dir() {
        return Err(TrainError::Invalid {
            path: dir.clone(),
            problem: "the run directory is a file".into(),
            fix: "pass --out a new or existing run directory".into(),
        });
    }
    // --force deletes tandem's own files of an earlier run, and only when
    // the directory holds one (its config.toml); anything else stays.
    let restarted = resume == Resume::Restart && config_path.is_file();
    if restarted {
        for f in RUN_FILES {
            let p = dir.join(f);
            if p.exists() {
                fs::remove_file(&p).map_err(|e| TrainError::io(&p, e))?;
            }
        }
        let ck = checkpoint::checkpoints_dir(dir);
        if ck.exists() {
            fs::remove_dir_all(&ck).map_err(|e| TrainError::io(&ck, e))?;
        }
    }
    let existing = if config_path.exists() {
        let text = fs::read_to_string(&config_path).map_err(|e| TrainError::io(&config_path, e))?;
        Some(TrainConfig::from_toml(&config_path, &text)?)
    } else {
        None
    };
    if existing.is_none()
        && !restarted
        && dir.is_dir()
        && fs::read_dir(dir)
            .map_err(|e| TrainError::io(dir, e))?
            .next()
            .is_some()
    {
        return Err(TrainError::Invalid {
            path: dir.clone(),
            problem: "the directory is not empty and holds no tandem run (no config.toml)".into(),
            fix: "pass --out a new or empty directory".into(),
        });
    }
    if let Some(old) = existing {
        let diff = old.differences(cfg);
        if !diff.is_empty() {
            return Err(TrainError::Invalid {
                path: config_path,
                problem: format!("this run directory holds a run with a different config: {}", diff.join(", ")),
                fix: "rerun with the same settings to resume it, pass a new --out, or add --force to delete that run and start over".into(),
            });
        }
    }
    let mut loaded = if dir.exists() {
        checkpoint::newest_complete(dir)?
    } else {
        None
    };
    // A write killed between its last renames leaves a complete
    // `.tmp-step-N`: put it in place before resuming from it.
    if loaded.as_ref().is_some_and(|l| {
        l.dir
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(".tmp-"))
    }) {
        checkpoint::prune(dir, cfg.keep_last)?;
        loaded = checkpoint::newest_complete(dir)?;
    }
    if resume == Resume::Require && loaded.is_none() {
        return Err(TrainError::Checkpoint {
            path: checkpoint::checkpoints_dir(dir),
            problem: "--resume was given but there is no complete checkpoint".into(),
            fix: "drop --resume to start the run".into(),
        });
    }
    fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    Ok(loaded)
}

/// The model shape a config asks for over `bank`.
pub fn model_config(cfg: &TrainConfig, bank: &Bank) -> ModelConfig {
    ModelConfig {
        kind: cfg.kind,
        dim: bank.dim(),
        hidden: if cfg.hidden == 0 {
            bank.dim()
        } else {
            cfg.hidden
        },
        projection: cfg.projection,
        residual: cfg.residual,
        doc: cfg.doc,
        layers: cfg.layers,
        heads: cfg.heads,
    }
}

/// Builds the left-padded context batch of `examples` into `x`/`lens`.
pub fn fill_batch(
    bank: &Bank,
    examples: &[&Example<'_>],
    len: usize,
    x: &mut Vec<f32>,
    lens: &mut Vec<usize>,
) {
    let d = bank.dim();
    x.clear();
    x.resize(examples.len() * len * d, 0.0);
    lens.clear();
    for (i, ex) in examples.iter().enumerate() {
        let ctx = &ex.context[ex.context.len().saturating_sub(len)..];
        lens.push(ctx.len());
        for (k, &r) in ctx.iter().enumerate() {
            let t = len - ctx.len() + k;
            bank.rows_f32_into(
                r as usize,
                r as usize + 1,
                &mut x[(i * len + t) * d..(i * len + t + 1) * d],
            );
        }
    }
}

fn gather(bank: &Bank, rows: &[u32], out: &mut Vec<f32>) {
    let d = bank.dim();
    out.clear();
    out.resize(rows.len() * d, 0.0);
    for (o, &r) in out.chunks_exact_mut(d).zip(rows) {
        bank.rows_f32_into(r as usize, r as usize + 1, o);
    }
}

/// The training loop's fixed inputs.
struct Setup<'a> {
    cfg: &'a TrainConfig,
    ds: &'a Dataset,
    train: Vec<Example<'a>>,
    val: Vec<Example<'a>>,
    len: usize,
    steps_per_epoch: u64,
    total: u64,
    loss: InfoNce,
    mine: MineSettings,
    /// `recall@10 0.5614 (mean) 0.4698 (last)`-style reference of the best
    /// metric on the validation examples, printed beside each validation.
    val_reference: String,
}

impl Setup<'_> {
    fn micro_per_epoch(&self) -> u64 {
        self.steps_per_epoch * self.cfg.accum as u64
    }

    fn epoch_of_micro(&self, g: u64) -> usize {
        (g / self.micro_per_epoch()) as usize
    }

    /// The examples of global micro-batch `g`.
    fn micro_batch(&self, g: u64, order: &mut (usize, Vec<usize>)) -> Vec<&Example<'_>> {
        let e = self.epoch_of_micro(g);
        if order.0 != e || order.1.is_empty() {
            let mut perm: Vec<usize> = (0..self.train.len()).collect();
            perm.shuffle(&mut ChaCha8Rng::seed_from_u64(stream_seed(
                self.cfg.seed,
                Stream::Order,
                e as u64,
            )));
            *order = (e, perm);
        }
        let m = (g % self.micro_per_epoch()) as usize;
        let b = self.cfg.batch;
        order.1[m * b..(m + 1) * b]
            .iter()
            .map(|&k| &self.train[k])
            .collect()
    }

    fn mine_request(
        &self,
        g: u64,
        order: &mut (usize, Vec<usize>),
        queries: Option<Vec<f32>>,
    ) -> Option<MineRequest> {
        let band = self.cfg.curriculum.band(self.epoch_of_micro(g))?;
        let exs = self.micro_batch(g, order);
        Some(MineRequest {
            micro: g,
            band,
            positives: exs.iter().map(|e| e.target).collect(),
            contexts: exs.iter().map(|e| e.context.to_vec()).collect(),
            queries,
        })
    }
}

/// Scores `model` on `examples` with the validation metrics.
pub fn evaluate_model(
    model: &Model,
    ds: &Dataset,
    examples: &[Example<'_>],
    ks: &[usize],
    label: &str,
) -> Result<Vec<f64>, TrainError> {
    let mut encoded = None;
    let index = encode::doc_index(model, ds.bank(), &mut encoded)?;
    let mut encoder = encode::QueryEncoder::default();
    score(ds, examples, &index, ks, label, |batch, out| {
        encoder.encode(model, ds, batch, out)
    })
}

/// Scores the queries `queries_for` writes: Recall@`ks` and MRR@10 of the
/// target row (context rows excluded), then the mean cosine of each query to
/// its target vector, in `TrainConfig::metric_names` order.
fn score<F>(
    ds: &Dataset,
    examples: &[Example<'_>],
    index: &dyn Index,
    ks: &[usize],
    label: &str,
    mut queries_for: F,
) -> Result<Vec<f64>, TrainError>
where
    F: FnMut(&[Example<'_>], &mut [f32]),
{
    let bank = ds.bank();
    let measures = tandem_data::baseline::measures(ks);
    let depth = eval_depth(ks, bank.rows());
    let mut cosine = 0.0f64;
    let mut values = tandem_data::baseline::score_queries(
        examples,
        index,
        &measures,
        depth,
        label,
        |batch, out| {
            queries_for(batch, out);
            for (ex, q) in batch.iter().zip(out.chunks_exact(bank.dim())) {
                let t = bank.row_f32(ex.target as usize);
                let (dot, qq, tt) =
                    q.iter()
                        .zip(t.iter())
                        .fold((0.0f64, 0.0f64, 0.0f64), |(d, a, b), (&x, &y)| {
                            (
                                d + f64::from(x) * f64::from(y),
                                a + f64::from(x * x),
                                b + f64::from(y * y),
                            )
                        });
                cosine += dot / (qq.sqrt() * tt.sqrt()).max(1e-12);
            }
            Ok(())
        },
    )
    .map_err(|e| data_err(ds, e.to_string()))?;
    values.push(cosine / examples.len().max(1) as f64);
    Ok(values)
}

fn data_err(ds: &Dataset, problem: String) -> TrainError {
    TrainError::Invalid {
        path: ds.dir().to_path_buf(),
        problem,
        fix: "check the dataset with `tandem baseline`".into(),
    }
}

fn metric_map(names: &[String], values: &[f64]) -> Map<String, Value> {
    names
        .iter()
        .zip(values)
        .map(|(n, v)| (n.clone(), json!(v)))
        .collect()
}

/// The pre-flight memory estimate.
fn estimate(cfg: &TrainConfig, model: &ModelConfig, bank: &Bank, val: usize) -> Estimate {
    let d = bank.dim() as u64;
    let p = model.param_count() as u64 * 4;
    let b = cfg.batch as u64;
    let len = 8u64;
    let h = model.hidden as u64;
    let q = cfg.queue as u64;
    let mut e = Estimate::new();
    let bank_bytes = bank.rows() as u64 * d * if bank.dtype_name() == "f16" { 2 } else { 4 };
    e.add(
        format!(
            "bank {} x {} {} ({})",
            bank.rows(),
            d,
            bank.dtype_name(),
            if bank.is_mapped() {
                "memory-mapped, paged in on use"
            } else {
                "in memory"
            }
        ),
        bank_bytes,
    );
    e.add("model parameters", p);
    e.add("gradients", p);
    e.add("AdamW moments", 2 * p);
    e.add(format!("memory queue ({q} x {d} f32)"), q * d * 4 + q * 4);
    let max_mined = cfg
        .curriculum
        .phases()
        .iter()
        .filter_map(|p| p.band)
        .map(|b| b.count)
        .max()
        .unwrap_or(0) as u64;
    let cands = b + b * max_mined + cfg.random_negatives as u64;
    // Floats kept per context step: a recurrent tower's gates and states; a
    // transformer's ~14 hidden-wide activations per block plus scratch, and
    // its attention weights (heads x L per step and block).
    let per_step = match model.kind {
        tandem_nn::TowerKind::Transformer => {
            let layers = model.layers as u64;
            layers * (14 * h + model.heads as u64 * len) + 11 * h
        }
        _ => 6 * h,
    };
    e.add(
        format!("batch activations (B {b}, L <= {len}, {cands} candidates + {q} queued)"),
        4 * (b * len * (d + per_step) + 2 * cands * d + b * (cands + q) * 2) + b * (cands + q),
    );
    e.add(
        "exact search tiles (mining, validation)",
        2 * 256 * 512 * 4 + 2 * 512 * d * 4,
    );
    let depth = eval_depth(&cfg.ks, bank.rows()) as u64;
    e.add(
        "evaluation rankings (2,048 queries at a time, trec_eval bookkeeping)",
        (val.min(2048) as u64) * depth * 96,
    );
    if model.doc == tandem_nn::DocTower::Linear {
        e.add(
            "doc-encoded bank for evaluation (f32)",
            bank.rows() as u64 * d * 4,
        );
    }
    e
}

trait DtypeName {
    fn dtype_name(&self) -> &'static str;
}

impl DtypeName for Bank {
    fn dtype_name(&self) -> &'static str {
        match self.vectors() {
            tandem_bank::Vectors::F16(_) => "f16",
            tandem_bank::Vectors::F32(_) => "f32",
        }
    }
}

/// Trains a two-tower model as `cfg` says; see the module docs.
pub fn train(cfg: &TrainConfig, resume: Resume) -> Result<Outcome, TrainError> {
    // Everything is checked before the run directory is touched: a typo
    // never costs an earlier run (not even with --force).
    cfg.check()?;
    let max_rss = cfg.max_rss_bytes()?;
    let ds = Dataset::open(&cfg.data)?;
    let bank = ds.bank();
    if let Some(&k) = cfg.ks.iter().find(|&&k| k > bank.rows()) {
        return Err(cfg.invalid_key(
            "ks",
            format!("cutoff {k} exceeds the bank's {} rows", bank.rows()),
            "pass --ks with cutoffs no larger than the bank, e.g. --ks 1,5,10",
        ));
    }
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

    let train: Vec<Example<'_>> = ds.examples(Split::Train).collect();
    let limit = if cfg.eval_limit == 0 {
        usize::MAX
    } else {
        cfg.eval_limit
    };
    let val: Vec<Example<'_>> = ds.examples(Split::Val).take(limit).collect();
    let micro = (train.len() / cfg.batch) as u64;
    let steps_per_epoch = micro / cfg.accum as u64;
    if steps_per_epoch == 0 {
        return Err(cfg.invalid_key(
            "batch",
            format!(
                "the train split of {} has {} examples, fewer than one optimizer step of batch {} x accum {}",
                cfg.data.display(),
                train.len(),
                cfg.batch,
                cfg.accum
            ),
            "lower --batch or --accum",
        ));
    }
    let mut total = steps_per_epoch * cfg.epochs as u64;
    if cfg.max_steps > 0 {
        total = total.min(cfg.max_steps);
    }
    let mcfg = model_config(cfg, bank);
    mcfg.check().map_err(|e| {
        cfg.invalid_key(
            "kind",
            e.to_string(),
            "adjust --kind, --hidden, --projection or --doc",
        )
    })?;
    let estimate = estimate(cfg, &mcfg, bank, val.len());
    if let Some(limit) = max_rss {
        if estimate.total() > limit {
            return Err(cfg.invalid_key(
                "max_rss",
                format!(
                    "the run needs about {} (estimate below) but max_rss is {}:\n{}",
                    format_size(estimate.total()),
                    format_size(limit),
                    estimate.table()
                ),
                "raise --max-rss or lower --queue, --batch, --hidden",
            ));
        }
    }
    if let (Some(limit), Some(now)) = (max_rss, rss_bytes()) {
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
    let index = mining_index(cfg, bank)?;
    let index: &dyn Index = index.as_ref();

    let mut setup = Setup {
        val_reference: String::new(),
        cfg,
        ds: &ds,
        len: ds.context_len(),
        train,
        val,
        steps_per_epoch,
        total,
        loss: InfoNce {
            tau: cfg.tau,
            margin: cfg.margin,
        },
        mine: MineSettings {
            pool: cfg.mine_pool,
            dup_threshold: cfg.dup_threshold,
            seed: cfg.seed,
        },
    };
    eprintln!(
        "{}: {} tower over {} ({} x {}), {} train / {} val examples; effective batch {} ({} x accum {}), {} steps/epoch, {} steps, {} threads",
        cfg.command(),
        cfg.kind,
        cfg.data.display(),
        bank.rows(),
        bank.dim(),
        setup.train.len(),
        setup.val.len(),
        cfg.batch * cfg.accum,
        cfg.batch,
        cfg.accum,
        steps_per_epoch,
        total,
        threads
    );
    if cfg.warmup > total {
        eprintln!(
            "note: warmup {} is longer than the run; it is cut to {total} steps",
            cfg.warmup
        );
    }
    eprintln!("memory estimate:\n{}", estimate.table());
    if let Some(total_ram) = meminfo("MemTotal:") {
        if estimate.total() > total_ram {
            return Err(cfg.invalid_key(
                "hidden",
                format!(
                    "the run needs about {} but this machine has {} of memory:\n{}",
                    format_size(estimate.total()),
                    format_size(total_ram),
                    estimate.table()
                ),
                "lower --hidden, --queue or --batch (the largest items are listed above)",
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

    let loaded = prepare_run_dir(cfg, resume)?;
    let mut model = Model::new(mcfg, stream_seed(cfg.seed, Stream::Init, 0))
        .map_err(|e| cfg.invalid_key("kind", e.to_string(), "adjust the model keys"))?;
    let schedule = Schedule {
        lr: cfg.lr,
        min_lr: cfg.min_lr,
        warmup: cfg.warmup.min(total),
        total,
    };
    let mut opt = AdamW::new(
        AdamWConfig {
            weight_decay: cfg.weight_decay,
            ..AdamWConfig::default()
        },
        model.params(),
    );
    let mut queue = MemoryQueue::new(cfg.queue, bank.dim());
    let mut state = State {
        format: STATE_FORMAT,
        step: 0,
        epoch: 0,
        seed: cfg.seed,
        rng: "ChaCha8 seeded per draw with SplitMix64(seed, stream, index): init/0, order/epoch, random/micro-batch, mine/micro-batch*B+example".into(),
        schedule,
        data: data_fingerprint(&ds)?,
        queue_capacity: cfg.queue,
        queue_next: 0,
        queue_rows: Vec::new(),
        best: None,
        validate_pending: false,
        elapsed_s: 0.0,
        model_fingerprint: String::new(),
    };
    let metrics_path = cfg.out.join("metrics.jsonl");
    let resumed_from = match &loaded {
        Some(ck) => {
            restore(ck, &setup, &mut model, &mut opt, &mut queue, &mut state)?;
            truncate_metrics(&metrics_path, state.step, state.validate_pending)?;
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
    let mut metrics = Metrics::open(&metrics_path)?;
    install_handlers();
    set_crash(&cfg.out, "");
    CRASH_STEP.store(state.step, Ordering::SeqCst);
    match resumed_from {
        Some(s) => eprintln!(
            "resuming from step {s} ({})",
            checkpoint::checkpoints_dir(&cfg.out)
                .join(checkpoint::step_dir_name(s))
                .display()
        ),
        None => {
            write_baselines(&ds, Split::Val, &setup.val, cfg, &mut metrics, 0)?;
        }
    }
    setup.val_reference = val_reference(&metrics_path, &cfg.best_metric);

    let stop = std::thread::scope(|scope| -> Result<Stop, TrainError> {
        let mut pipeline =
            (cfg.miner == MinerMode::Pipelined && cfg.curriculum.mines()).then(|| {
                Pipeline::start(
                    scope,
                    index,
                    bank,
                    setup.mine,
                    MINE_DEPTH,
                    Duration::from_secs_f64(cfg.miner_timeout),
                )
            });
        run_loop(
            &setup,
            index,
            &mut model,
            &mut opt,
            &mut queue,
            &mut state,
            &mut metrics,
            pipeline.as_mut(),
            max_rss,
        )
    })?;
    if stop == Stop::Signal {
        return Ok(stopped(
            cfg,
            &state,
            resumed_from,
            fingerprint(model.params()),
        ));
    }
    finish(&setup, model, state, metrics, resumed_from)
}

/// Prints a line above the progress bar, or plainly when the bar is hidden
/// (stderr not a terminal: logs, pipes, CI), where indicatif would drop it.
fn say(bar: &ProgressBar, msg: String) {
    if bar.is_hidden() {
        eprintln!("{msg}");
    } else {
        bar.println(msg);
    }
}

/// The validation baselines of `metric` recorded in `metrics.jsonl`, as
/// `mean 0.5614, last 0.4698`.
fn val_reference(metrics: &Path, metric: &str) -> String {
    let text = fs::read_to_string(metrics).unwrap_or_default();
    let parts: Vec<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["kind"] == "baseline" && v["split"] == "val")
        .filter_map(|v| {
            Some(format!(
                "{} {:.4}",
                v["query"].as_str()?,
                v[metric].as_f64()?
            ))
        })
        .collect();
    if parts.is_empty() {
        "none recorded".into()
    } else {
        parts.join(", ")
    }
}

/// The index the miner searches: exact cosine search, or the HNSW index
/// `mine_index` names (checked to be a cosine index over this bank).
fn mining_index<'a>(cfg: &TrainConfig, bank: &'a Bank) -> Result<Box<dyn Index + 'a>, TrainError> {
    if cfg.mine_index.as_os_str().is_empty() {
        let flat = Flat::new(bank, Metric::Cosine).map_err(|e| TrainError::Invalid {
            path: bank.path().map(Path::to_path_buf).unwrap_or_default(),
            problem: e.to_string(),
            fix: "check the bank with `tandem bank info`".into(),
        })?;
        return Ok(Box::new(flat));
    }
    let path = &cfg.mine_index;
    let sidecar = PathBuf::from(format!("{}.json", path.display()));
    if !sidecar.is_file() {
        return Err(TrainError::Invalid {
            path: path.clone(),
            problem: format!("not a tandem HNSW index (no {} beside it)", sidecar.display()),
            fix: "build one into a new file: tandem index build --bank <the dataset's bank> --out bank.usearch --metric cosine".into(),
        });
    }
    let hnsw = Hnsw::view(path, bank).map_err(|e| TrainError::Message(e.to_string()))?;
    if hnsw.metric() != Metric::Cosine {
        return Err(TrainError::Invalid {
            path: path.clone(),
            problem: format!(
                "the index measures {}, but the mined band is a cosine",
                hnsw.metric().name()
            ),
            fix: "build it with `tandem index build --metric cosine`".into(),
        });
    }
    Ok(Box::new(hnsw))
}

/// A line of /proc/meminfo (`MemTotal:`, `MemAvailable:`), in bytes (Linux).
fn meminfo(key: &str) -> Option<u64> {
    let text = fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// What identifies the dataset a run trains on: its manifest, its
/// sequences file's size and a fingerprint of its bank.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct DataFingerprint {
    manifest_fnv: String,
    sequences_bytes: u64,
    bank: tandem_search::BankFingerprint,
}

fn data_fingerprint(ds: &Dataset) -> Result<DataFingerprint, TrainError> {
    let manifest = ds.dir().join(tandem_data::MANIFEST_FILE);
    let bytes = fs::read(&manifest).map_err(|e| TrainError::io(&manifest, e))?;
    let seqs = ds.dir().join("sequences.jsonl");
    let sequences_bytes = fs::metadata(&seqs)
        .map_err(|e| TrainError::io(&seqs, e))?
        .len();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in &bytes {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    Ok(DataFingerprint {
        manifest_fnv: format!("{h:016x}"),
        sequences_bytes,
        bank: tandem_search::BankFingerprint::of(ds.bank()),
    })
}

/// Scores the last-vector and mean-of-context baselines on `examples` (the
/// same examples the model is scored on) and records them.
fn write_baselines(
    ds: &Dataset,
    split: Split,
    examples: &[Example<'_>],
    cfg: &TrainConfig,
    metrics: &mut Metrics,
    step: u64,
) -> Result<Vec<(String, Scores)>, TrainError> {
    let bank = ds.bank();
    let index = Flat::new(bank, Metric::InnerProduct).map_err(|e| data_err(ds, e.to_string()))?;
    let names = cfg.metric_names();
    let mut out = Vec::new();
    for kind in QueryKind::ALL {
        let values = score(ds, examples, &index, &cfg.ks, kind.name(), |batch, q| {
            for (ex, row) in batch.iter().zip(q.chunks_exact_mut(bank.dim())) {
                kind.query_into(ds, ex.context, row);
            }
        })?;
        let mut m = metric_map(&names, &values);
        m.insert("kind".into(), json!("baseline"));
        m.insert("split".into(), json!(split.name()));
        m.insert("query".into(), json!(kind.name()));
        m.insert("step".into(), json!(step));
        metrics.write(Value::Object(m))?;
        out.push((
            kind.name().to_string(),
            names.iter().cloned().zip(values).collect(),
        ));
    }
    Ok(out)
}

/// Ranking depth of an evaluation with Recall@`ks` and MRR@10.
pub fn eval_depth(ks: &[usize], rows: usize) -> usize {
    ks.iter()
        .copied()
        .chain([tandem_data::baseline::MRR_CUTOFF])
        .max()
        .unwrap_or(10)
        .min(rows)
}

fn restore(
    ck: &checkpoint::Loaded,
    setup: &Setup<'_>,
    model: &mut Model,
    opt: &mut AdamW,
    queue: &mut MemoryQueue,
    state: &mut State,
) -> Result<(), TrainError> {
    let bad = |problem: String| {
        TrainError::Checkpoint {
        path: ck.dir.clone(),
        problem,
        fix: "delete this checkpoint directory to resume from the one before, or pass --force to start over".into(),
    }
    };
    let nn = |e: tandem_nn::NnError| bad(e.to_string());
    model
        .params_mut()
        .load_safetensors(
            &ck.dir.join("model.safetensors"),
            ck.file("model.safetensors")?,
        )
        .map_err(nn)?;
    *opt = AdamW::from_safetensors(
        &ck.dir.join("optimizer.safetensors"),
        ck.file("optimizer.safetensors")?,
        model.params(),
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
    let s: State = serde_json::from_value(raw).map_err(|e| bad(format!("state.json: {e}")))?;
    if s.format != STATE_FORMAT || s.step != ck.step {
        return Err(bad(format!(
            "state.json has format {} and step {}, expected format {STATE_FORMAT} and step {}",
            s.format, s.step, ck.step
        )));
    }
    if s.data != state.data {
        let mut what = s.data.bank.differences(&state.data.bank);
        if s.data.manifest_fnv != state.data.manifest_fnv {
            what.push("dataset.json".into());
        }
        if s.data.sequences_bytes != state.data.sequences_bytes {
            what.push("sequences.jsonl".into());
        }
        return Err(TrainError::Checkpoint {
            path: setup.cfg.data.clone(),
            problem: format!(
                "the dataset differs from the one this run was trained on ({})",
                what.join(", ")
            ),
            fix: "point --data at the run's dataset, or pass --force to start the run over on this one".into(),
        });
    }
    if s.schedule != state.schedule {
        return Err(TrainError::Checkpoint {
            path: setup.cfg.data.clone(),
            problem: format!(
                "the run now has {} steps ({} warmup) but its checkpoints were made for {} ({} warmup); the dataset or the step settings changed",
                state.schedule.total, state.schedule.warmup, s.schedule.total, s.schedule.warmup
            ),
            fix: "resume with the run's dataset and settings, or pass --force to start over".into(),
        });
    }
    if s.model_fingerprint != format!("{:016x}", fingerprint(model.params())) {
        return Err(bad(
            "model.safetensors does not match the fingerprint in state.json".into(),
        ));
    }
    let d = setup.ds.bank().dim();
    let vectors = if model.doc_is_learned() {
        let bytes = ck.file("queue.safetensors")?;
        safetensors_vectors(bytes).ok_or_else(|| bad("queue.safetensors is unreadable".into()))?
    } else {
        let mut v = Vec::new();
        gather(setup.ds.bank(), &s.queue_rows, &mut v);
        v
    };
    *queue = MemoryQueue::restore(
        setup.cfg.queue,
        d,
        s.queue_rows.clone(),
        vectors,
        s.queue_next,
    )
    .ok_or_else(|| bad("the saved memory queue does not fit the configured size".into()))?;
    *state = s;
    Ok(())
}

fn safetensors_vectors(bytes: &[u8]) -> Option<Vec<f32>> {
    let st = safetensors::SafeTensors::deserialize(bytes).ok()?;
    let t = st.tensor("queue").ok()?;
    Some(
        t.data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    )
}

fn save(
    setup: &Setup<'_>,
    model: &Model,
    opt: &AdamW,
    queue: &MemoryQueue,
    state: &mut State,
) -> Result<(), TrainError> {
    let cfg = setup.cfg;
    state.queue_rows = queue.rows().to_vec();
    state.queue_next = queue.next_slot();
    state.model_fingerprint = format!("{:016x}", fingerprint(model.params()));
    let meta = HashMap::from([(
        "config".to_string(),
        serde_json::to_string(model.config()).expect("plain struct"),
    )]);
    let model_bytes = model.params().to_safetensors(&meta);
    let opt_bytes = opt.to_safetensors();
    let state_bytes = serde_json::to_vec_pretty(&state).expect("plain struct");
    let config = cfg.to_toml();
    let queue_bytes;
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
    if model.doc_is_learned() {
        let mut p = tandem_nn::Params::default();
        p.push(
            "queue",
            &[queue.len(), queue.vectors().len() / queue.len().max(1)],
            queue.vectors().to_vec(),
        );
        queue_bytes = p.to_safetensors(&HashMap::new());
        files.push(CheckpointFile {
            name: "queue.safetensors",
            bytes: &queue_bytes,
        });
    }
    checkpoint::write_checkpoint(&cfg.out, state.step, &files)?;
    checkpoint::prune(&cfg.out, cfg.keep_last)?;
    Ok(())
}

/// Reusable buffers of one micro-batch.
#[derive(Default)]
struct Buffers {
    x: Vec<f32>,
    lens: Vec<usize>,
    pos: Vec<f32>,
    cand: Vec<f32>,
    cand_rows: Vec<u32>,
    valid: Vec<bool>,
    queue_valid: Vec<bool>,
    qc: QueryCache,
    pos_dc: DocCache,
    cand_dc: DocCache,
    out: LossOutput,
}

#[allow(clippy::too_many_arguments)]
fn run_loop(
    setup: &Setup<'_>,
    index: &(dyn Index + Sync),
    model: &mut Model,
    opt: &mut AdamW,
    queue: &mut MemoryQueue,
    state: &mut State,
    metrics: &mut Metrics,
    mut pipeline: Option<&mut Pipeline>,
    max_rss: Option<u64>,
) -> Result<Stop, TrainError> {
    let cfg = setup.cfg;
    let bank = setup.ds.bank();
    let d = bank.dim();
    let accum = cfg.accum as u64;
    let mut grads = model.params().zeros_like();
    let mut buf = Buffers::default();
    let mut order = (usize::MAX, Vec::new());
    let mut stats = MineStats::default();
    let mut window = (Instant::now(), 0u64, 0.0f64, 0.0f64, 0u64); // start, steps, loss sum, acc sum, micro count
    let started = Instant::now() - Duration::from_secs_f64(state.elapsed_s);
    let mut watch: Option<RssWatch> = None;
    let mut fill_mark = (0.0f64, 0u64);
    let mut warned_band: Option<crate::curriculum::Band> = None;
    let mut plain_mark = Instant::now();
    let mut last_rss: Option<u64> = None;
    let bar = ProgressBar::new(setup.total);
    bar.set_style(
        ProgressStyle::with_template("train [{bar:30}] {pos}/{len} {msg} ({per_sec}, eta {eta})")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_position(state.step);

    if state.validate_pending {
        validate(setup, model, state, metrics, &bar)?;
        save(setup, model, opt, queue, state)?;
    }
    // Queue the pipelined miner's first requests.
    let mut next_submit = state.step * accum;
    let end_micro = setup.total * accum;
    let submit = |p: &mut Pipeline,
                  upto: u64,
                  next: &mut u64,
                  order: &mut (usize, Vec<usize>)|
     -> Result<(), TrainError> {
        while *next < upto.min(end_micro) {
            if let Some(req) = setup.mine_request(*next, order, None) {
                p.submit(req)?;
            }
            *next += 1;
        }
        Ok(())
    };

    while state.step < setup.total {
        let step = state.step;
        let lr = state.schedule.lr_at(step);
        for k in 0..accum {
            let g = step * accum + k;
            if let Some(p) = pipeline.as_deref_mut() {
                // Keep the worker MINE_DEPTH micro-batches ahead (at most
                // MINE_DEPTH + 1 requests outstanding: fewer than the two
                // channels and the worker hold, so sending never deadlocks).
                submit(p, g + 1 + MINE_DEPTH as u64, &mut next_submit, &mut order)?;
            }
            let exs = setup.micro_batch(g, &mut order);
            fill_batch(bank, &exs, setup.len, &mut buf.x, &mut buf.lens);
            let batch = Batch {
                x: &buf.x,
                lens: &buf.lens,
                len: setup.len,
                dim: d,
            };
            model.forward_queries(&batch, &mut buf.qc);
            let positives: Vec<u32> = exs.iter().map(|e| e.target).collect();
            let band = cfg.curriculum.band(setup.epoch_of_micro(g));
            let mined: Option<Mined> = match (band, pipeline.as_deref_mut()) {
                (None, _) => None,
                (Some(_), Some(p)) => Some(p.next(index, bank, &setup.mine, &mut stats)?),
                (Some(_), None) => {
                    let queries =
                        (cfg.band_anchor == Anchor::Query).then(|| buf.qc.queries().to_vec());
                    let req = setup
                        .mine_request(g, &mut order, queries)
                        .expect("band checked");
                    let t = Instant::now();
                    let m = mine(index, bank, &setup.mine, &req)?;
                    stats.search_secs += m.secs;
                    stats.blocked_secs += t.elapsed().as_secs_f64();
                    Some(m)
                }
            };
            if let (Some(m), Some(b)) = (&mined, band) {
                stats.fill_sum += m.fill(&b);
                stats.batches += 1;
            }
            // Candidates: in-batch positives, own mined negatives, random rows.
            let b = exs.len();
            buf.cand_rows.clear();
            buf.cand_rows.extend_from_slice(&positives);
            let mut owner: Vec<Option<usize>> = vec![None; b];
            if let Some(m) = &mined {
                for (i, negs) in m.negatives.iter().enumerate() {
                    buf.cand_rows.extend_from_slice(negs);
                    owner.extend(std::iter::repeat_n(Some(i), negs.len()));
                }
            }
            if cfg.random_negatives > 0 {
                let mut rng = ChaCha8Rng::seed_from_u64(stream_seed(cfg.seed, Stream::Random, g));
                let n = cfg.random_negatives.min(bank.rows());
                buf.cand_rows.extend(
                    sample(&mut rng, bank.rows(), n)
                        .into_iter()
                        .map(|r| r as u32),
                );
                owner.extend(std::iter::repeat_n(None, n));
            }
            let n = buf.cand_rows.len();
            buf.valid.clear();
            for (i, &p) in positives.iter().enumerate() {
                for (c, &r) in buf.cand_rows.iter().enumerate() {
                    let own = match (c < b, owner[c]) {
                        (true, _) => true,
                        (false, Some(o)) => o == i,
                        (false, None) => true,
                    };
                    buf.valid.push(own && r != p);
                }
            }
            buf.queue_valid.clear();
            for &p in &positives {
                buf.queue_valid.extend(queue.rows().iter().map(|&r| r != p));
            }
            gather(bank, &positives, &mut buf.pos);
            gather(bank, &buf.cand_rows, &mut buf.cand);
            model.forward_docs(&buf.pos, &mut buf.pos_dc);
            model.forward_docs(&buf.cand, &mut buf.cand_dc);
            let input = LossInput {
                q: buf.qc.queries(),
                pos: buf.pos_dc.docs(),
                cand: buf.cand_dc.docs(),
                valid: &buf.valid,
                queue: queue.vectors(),
                queue_valid: &buf.queue_valid,
                dim: d,
            };
            if cfg.loss_infonce > 0.0 {
                setup
                    .loss
                    .evaluate(&input, model.doc_is_learned(), &mut buf.out);
                let w = cfg.loss_infonce;
                buf.out.loss *= w;
                for g in [&mut buf.out.dq, &mut buf.out.dpos, &mut buf.out.dcand] {
                    g.iter_mut().for_each(|v| *v *= w);
                }
            } else {
                buf.out.loss = 0.0;
                buf.out.accuracy = 0.0;
                buf.out.dq.clear();
                buf.out.dq.resize(b * d, 0.0);
                buf.out.dpos.clear();
                buf.out.dpos.resize(b * d, 0.0);
                buf.out.dcand.clear();
                buf.out.dcand.resize(n * d, 0.0);
            }
            if cfg.loss_mse > 0.0 || cfg.loss_cosine > 0.0 {
                // The next-vector losses pull the query onto the target row.
                let reg = Regression {
                    mse: cfg.loss_mse,
                    cosine: cfg.loss_cosine,
                };
                let (mse, cos) = reg.evaluate(buf.qc.queries(), &buf.pos, d, &mut buf.out.dq);
                buf.out.loss += cfg.loss_mse * mse + cfg.loss_cosine * cos;
            }
            if !buf.out.loss.is_finite() {
                return Err(TrainError::Invalid {
                    path: cfg.out.join("metrics.jsonl"),
                    problem: format!("the loss became {} at step {step}", buf.out.loss),
                    fix:
                        "lower --lr or raise --tau; rerunning resumes from the last good checkpoint"
                            .into(),
                });
            }
            let scale = 1.0 / accum as f32;
            buf.out.dq.iter_mut().for_each(|v| *v *= scale);
            model.backward_queries(&batch, &mut buf.qc, &buf.out.dq, &mut grads);
            if model.doc_is_learned() {
                buf.out.dpos.iter_mut().for_each(|v| *v *= scale);
                buf.out.dcand.iter_mut().for_each(|v| *v *= scale);
                model.backward_docs(&buf.pos, &mut buf.pos_dc, &buf.out.dpos, &mut grads);
                model.backward_docs(&buf.cand, &mut buf.cand_dc, &buf.out.dcand, &mut grads);
            }
            debug_assert_eq!(buf.valid.len(), b * n);
            queue.push(&positives, buf.pos_dc.docs());
            window.2 += f64::from(buf.out.loss);
            window.3 += f64::from(buf.out.accuracy);
            window.4 += 1;
        }
        // Clipping is folded into the update (one pass over the gradients).
        let coef = if cfg.clip > 0.0 {
            clip_coef(grad_norm(&grads), cfg.clip)
        } else {
            1.0
        };
        opt.update_scaled(model.params_mut(), &grads, lr, coef);
        grads.zero();
        state.step += 1;
        window.1 += 1;
        let step = state.step;
        state.epoch = ((step) / setup.steps_per_epoch) as usize;
        state.elapsed_s = started.elapsed().as_secs_f64();
        bar.set_position(step);
        CRASH_STEP.store(step, Ordering::SeqCst);
        if fault_step() == Some(step) {
            panic!("fault injected by {FAULT_ENV} at step {step}");
        }

        let rss = if step.is_multiple_of(cfg.rss_every.max(1)) || step == 1 {
            rss_bytes()
        } else {
            None
        };
        if let Some(r) = rss {
            let w = watch
                .get_or_insert_with(|| RssWatch::new(r.max(RSS_WARN_FLOOR), cfg.rss_warn_growth));
            // Growth must show in two readings in a row: validation and the
            // checkpoint writes allocate for a moment and give it back.
            let sustained = last_rss.map_or(r, |p: u64| p.min(r));
            last_rss = Some(r);
            if let Some(msg) = w.observe(sustained) {
                say(&bar, format!("warning: {msg}"));
                metrics.write(json!({"kind": "event", "step": step, "message": msg}))?;
            }
        }
        if step.is_multiple_of(LOG_EVERY) || step == setup.total {
            let secs = window.0.elapsed().as_secs_f64();
            let loss = window.2 / window.4.max(1) as f64;
            let mut line = json!({
                "kind": "train", "step": step, "epoch": (step - 1) / setup.steps_per_epoch,
                "loss": loss, "accuracy": window.3 / window.4.max(1) as f64, "lr": lr,
                "steps_per_s": window.1 as f64 / secs.max(1e-9), "elapsed_s": state.elapsed_s,
                "queue": queue.len(),
            });
            if let Some(r) = rss_bytes() {
                line["rss_bytes"] = json!(r);
            }
            if stats.batches > 0 {
                line["mine_s"] = json!(stats.search_secs);
                line["mine_hidden"] = json!(stats.hidden());
                line["band_fill"] = json!(stats.fill());
                line["mine_fallbacks"] = json!(stats.fallbacks);
                let (sum, n) = (stats.fill_sum - fill_mark.0, stats.batches - fill_mark.1);
                fill_mark = (stats.fill_sum, stats.batches);
                let band = cfg.curriculum.band(setup.epoch_of_micro(step * accum - 1));
                if let Some(b) =
                    band.filter(|b| n > 0 && sum / (n as f64) < 0.5 && warned_band != Some(*b))
                {
                    warned_band = Some(b);
                    let msg = format!(
                        "the mined band {b} filled only {:.0}% of the negatives asked over the last {n} batches; widen the band or raise --mine-pool (now {})",
                        100.0 * sum / n as f64,
                        cfg.mine_pool
                    );
                    say(&bar, format!("warning: {msg}"));
                    metrics.write(json!({"kind": "event", "step": step, "message": msg}))?;
                }
            }
            bar.set_message(format!("loss {loss:.4} lr {lr:.2e}"));
            if bar.is_hidden() && plain_mark.elapsed() >= PLAIN_EVERY {
                // Logs and pipes get a line now and then instead of a bar.
                plain_mark = Instant::now();
                eprintln!(
                    "step {step}/{} (epoch {}) loss {loss:.4} lr {lr:.2e} {:.1} steps/s",
                    setup.total,
                    (step - 1) / setup.steps_per_epoch,
                    window.1 as f64 / secs.max(1e-9)
                );
            }
            metrics.write(line)?;
            set_crash(&cfg.out, &metrics.last);
            window = (Instant::now(), 0, 0.0, 0.0, 0);
        }

        let epoch_end = step.is_multiple_of(setup.steps_per_epoch);
        let val_due = (epoch_end
            || step == setup.total
            || (cfg.val_every > 0 && step.is_multiple_of(cfg.val_every)))
            && !setup.val.is_empty();
        let stopping = STOP.load(Ordering::SeqCst);
        let over = max_rss.zip(rss_bytes()).filter(|(m, r)| r > m);
        if step.is_multiple_of(cfg.ckpt_every)
            || epoch_end
            || val_due
            || step == setup.total
            || stopping
            || over.is_some()
        {
            state.validate_pending = val_due;
            save(setup, model, opt, queue, state)?;
        }
        if let Some((limit, r)) = over {
            let msg = format!(
                "resident memory {} exceeded max_rss {} at step {step}; checkpointed",
                format_size(r),
                format_size(limit)
            );
            metrics.write(json!({"kind": "event", "step": step, "message": msg}))?;
            bar.abandon();
            return Err(cfg.invalid_key(
                "max_rss",
                msg,
                "rerun the same command with a higher --max-rss to resume (a smaller --queue or --batch means a new run: --force)",
            ));
        }
        if stopping {
            metrics.write(json!({"kind": "event", "step": step, "message": "stopped by signal; checkpointed"}))?;
            bar.abandon_with_message("stopped by signal; checkpoint written");
            eprintln!("stopped by signal at step {step}; rerun the same command to resume");
            return Ok(Stop::Signal);
        }
        if val_due {
            validate(setup, model, state, metrics, &bar)?;
            save(setup, model, opt, queue, state)?;
        }
    }
    bar.finish_and_clear();
    Ok(Stop::Finished)
}

/// The outcome of a run stopped by a signal (its report written as it is).
fn stopped(
    cfg: &TrainConfig,
    state: &State,
    resumed_from: Option<u64>,
    fingerprint: u64,
) -> Outcome {
    Outcome {
        run_dir: cfg.out.clone(),
        steps: state.step,
        stop: Stop::Signal,
        resumed_from,
        best: state.best.as_ref().map(|b| (b.value, b.step)),
        test: Vec::new(),
        test_baselines: Vec::new(),
        report: crate::report::write_report(&cfg.out, "tandem train (interrupted)").ok(),
        fingerprint,
    }
}

fn validate(
    setup: &Setup<'_>,
    model: &Model,
    state: &mut State,
    metrics: &mut Metrics,
    bar: &ProgressBar,
) -> Result<(), TrainError> {
    let cfg = setup.cfg;
    let names = cfg.metric_names();
    let values =
        bar.suspend(|| evaluate_model(model, setup.ds, &setup.val, &cfg.ks, "validate"))?;
    let mut line = metric_map(&names, &values);
    line.insert("kind".into(), json!("val"));
    line.insert("step".into(), json!(state.step));
    line.insert(
        "epoch".into(),
        json!(state.step.saturating_sub(1) / setup.steps_per_epoch),
    );
    metrics.write(Value::Object(line))?;
    let k = names
        .iter()
        .position(|n| *n == cfg.best_metric)
        .expect("checked in config");
    let value = values[k];
    let improved = state.best.as_ref().is_none_or(|b| value > b.value);
    say(
        bar,
        format!(
            "step {}: validation {} = {value:.4}{}  [baselines: {}]",
            state.step,
            cfg.best_metric,
            if improved { " (best)" } else { "" },
            setup.val_reference
        ),
    );
    if improved {
        state.best = Some(Best {
            metric: cfg.best_metric.clone(),
            value,
            step: state.step,
        });
        checkpoint::mark_best(&cfg.out, state.step)?;
    }
    state.validate_pending = false;
    Ok(())
}

fn finish(
    setup: &Setup<'_>,
    mut model: Model,
    state: State,
    mut metrics: Metrics,
    resumed_from: Option<u64>,
) -> Result<Outcome, TrainError> {
    let cfg = setup.cfg;
    let ds = setup.ds;
    let final_fp = fingerprint(model.params());
    if STOP.load(Ordering::SeqCst) {
        // The last checkpoint is written; the test evaluation runs when the
        // same command is run again.
        eprintln!("stopped by signal before the test evaluation; rerun the same command to run it");
        return Ok(stopped(cfg, &state, resumed_from, final_fp));
    }
    // Test with the best checkpoint's weights (the final ones without validation).
    if let Some(best) = &state.best {
        let dir = checkpoint::checkpoints_dir(&cfg.out).join(checkpoint::step_dir_name(best.step));
        let path = dir.join("model.safetensors");
        let bytes = fs::read(&path).map_err(|e| TrainError::io(&path, e))?;
        model
            .params_mut()
            .load_safetensors(&path, &bytes)
            .map_err(|e| TrainError::Checkpoint {
                path: path.clone(),
                problem: e.to_string(),
                fix: "the best checkpoint is damaged; evaluate another with `tandem encode`".into(),
            })?;
    }
    let limit = if cfg.eval_limit == 0 {
        usize::MAX
    } else {
        cfg.eval_limit
    };
    let test: Vec<Example<'_>> = ds.examples(Split::Test).take(limit).collect();
    let names = cfg.metric_names();
    let (test_metrics, test_baselines) = if test.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        let values = evaluate_model(&model, ds, &test, &cfg.ks, "test")?;
        let mut line = metric_map(&names, &values);
        line.insert("kind".into(), json!("test"));
        line.insert("step".into(), json!(state.step));
        line.insert(
            "model_step".into(),
            json!(state.best.as_ref().map_or(state.step, |b| b.step)),
        );
        metrics.write(Value::Object(line))?;
        let baselines = write_baselines(ds, Split::Test, &test, cfg, &mut metrics, state.step)?;
        encode::write_ranking(
            &model,
            ds,
            &test,
            &cfg.out.join("test.run"),
            &cfg.out.join("test.qrels"),
            &cfg.ks,
        )?;
        (names.iter().cloned().zip(values).collect(), baselines)
    };
    let report = crate::report::write_report(
        &cfg.out,
        &format!(
            "{}: {} tower on {}",
            cfg.command(),
            cfg.kind,
            cfg.data.display()
        ),
    )?;
    Ok(Outcome {
        run_dir: cfg.out.clone(),
        steps: state.step,
        stop: Stop::Finished,
        resumed_from,
        best: state.best.as_ref().map(|b| (b.value, b.step)),
        test: test_metrics,
        test_baselines,
        report: Some(report),
        fingerprint: final_fp,
    })
}
