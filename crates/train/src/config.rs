//! The training configuration: every key of `run.toml`, its default, and the
//! checks made before anything runs.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tandem_nn::{DocTower, Residual, TowerKind};

use crate::curriculum::Curriculum;
use crate::TrainError;

tandem_nn::named_enum!(
    /// Where the mined band is measured from.
    Anchor {
        /// Cosine between a candidate and the positive (model-independent).
        Positive = "positive",
        /// Cosine between a candidate and the current query.
        Query = "query",
    }
);

tandem_nn::named_enum!(
    /// How negatives are mined.
    MinerMode {
        /// In the training thread, before each step.
        Sync = "sync",
        /// In a worker thread, one batch ahead, over a bounded queue.
        Pipelined = "pipelined",
    }
);

tandem_nn::named_enum!(
    /// What the run trains.
    TaskKind {
        /// A two-tower retriever: the query tower's output searches the doc
        /// tower's vectors (`tandem train`).
        Retriever = "retriever",
        /// A next-vector model (LVM): the output is a prediction of the next
        /// bank vector itself (`tandem lvm train`); the doc tower is the
        /// identity and validation reports Hit@k of the true next row.
        Lvm = "lvm",
        /// A dense text retriever: a Hugging Face encoder (`model`)
        /// fine-tuned on text pairs (`tandem train --task dense`), scored by
        /// BEIR's measures.
        Dense = "dense",
    }
);

tandem_nn::named_enum!(
    /// The main loss of a dense text run.
    TextLoss {
        /// InfoNCE / MultipleNegativesRankingLoss (in-batch and hard
        /// negatives, temperature `tau`).
        Mnrl = "mnrl",
        /// MarginMSE over the teacher scores of the data.
        MarginMse = "margin_mse",
        /// KL divergence to the teacher scores of the data.
        Kl = "kl",
    }
);

tandem_nn::named_enum!(
    /// The compute device.
    Device {
        /// The CPU (the default, what CI tests).
        Cpu = "cpu",
        /// An NVIDIA GPU.
        Cuda = "cuda",
        /// An Apple GPU.
        Metal = "metal",
    }
);

/// Every setting of a training run. The defaults are the seeds' recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// What is trained: retriever (`tandem train`) or lvm (`tandem lvm train`).
    pub task: TaskKind,
    /// The dataset directory (`tandem data ...`).
    pub data: PathBuf,
    /// The run directory (config, metrics, checkpoints, report).
    pub out: PathBuf,
    /// Query tower: mean, attention, gru, lstm, transformer.
    pub kind: TowerKind,
    /// Hidden size of the GRU/LSTM/attention/transformer (0 = the bank's dimension).
    pub hidden: usize,
    /// Transformer blocks (kind transformer).
    pub layers: usize,
    /// Attention heads per transformer block (kind transformer).
    pub heads: usize,
    /// A linear projection after pooling.
    pub projection: bool,
    /// Residual added to the projected query: none, mean, last.
    pub residual: Residual,
    /// Doc tower: identity or linear.
    pub doc: DocTower,
    /// InfoNCE temperature.
    pub tau: f32,
    /// Additive margin on the positive.
    pub margin: f32,
    /// Weight of InfoNCE in the loss.
    pub loss_infonce: f32,
    /// Weight of the MSE between the (unit) query and the target vector.
    pub loss_mse: f32,
    /// Weight of `1 - cos(query, target)`.
    pub loss_cosine: f32,
    /// Size of the FIFO memory queue of recent positives (0 = off).
    pub queue: usize,
    /// Random bank rows added as negatives each step.
    pub random_negatives: usize,
    /// Mined negatives per epoch range, e.g. `0-5:none;6-10:8@0.82-0.92`.
    pub curriculum: Curriculum,
    /// What the band's cosine is measured against.
    pub band_anchor: Anchor,
    /// Candidates with cosine to the positive at or above this are
    /// near-duplicates of it and never negatives.
    pub dup_threshold: f32,
    /// Nearest rows searched per example before the band filter.
    pub mine_pool: usize,
    /// An HNSW index of the bank (`tandem index build --metric cosine`) to
    /// mine with instead of exact search (empty = exact).
    pub mine_index: PathBuf,
    /// Mining in the training thread or a worker one batch ahead.
    pub miner: MinerMode,
    /// Seconds to wait for the worker before mining synchronously instead.
    pub miner_timeout: f64,
    /// Epochs.
    pub epochs: usize,
    /// Examples per micro-batch.
    pub batch: usize,
    /// Micro-batches per optimizer step.
    pub accum: usize,
    /// Peak learning rate.
    pub lr: f32,
    /// Final learning rate of the cosine decay.
    pub min_lr: f32,
    /// Linear warmup, in optimizer steps.
    pub warmup: u64,
    /// AdamW decoupled weight decay.
    pub weight_decay: f32,
    /// Global gradient-norm clip (0 = off).
    pub clip: f32,
    /// Stop after this many optimizer steps (0 = run every epoch).
    pub max_steps: u64,
    /// Seed of the initialisation, data order, random and mined negatives.
    pub seed: u64,
    /// Compute threads (0 = every core).
    pub threads: usize,
    /// Validate every N optimizer steps as well as at each epoch end (0 = epoch ends only).
    pub val_every: u64,
    /// The validation metric that picks the best checkpoint.
    pub best_metric: String,
    /// Evaluate at most this many validation and test examples, the first
    /// ones in dataset order (0 = all).
    pub eval_limit: usize,
    /// Recall@k cutoffs of validation and test.
    pub ks: Vec<usize>,
    /// Checkpoint every N optimizer steps (also at each epoch end and before each validation).
    pub ckpt_every: u64,
    /// Complete checkpoints kept besides the best.
    pub keep_last: usize,
    /// Log resident memory every N optimizer steps.
    pub rss_every: u64,
    /// Warn when resident memory grows past the post-setup baseline by this fraction.
    pub rss_warn_growth: f64,
    /// Checkpoint and stop when resident memory exceeds this (e.g. `3G`; empty = no limit).
    pub max_rss: String,
    /// cpu, cuda or metal.
    pub device: Device,
    /// Dense text runs: the Hugging Face / sentence-transformers model
    /// directory to fine-tune.
    pub model: PathBuf,
    /// Dense: the training data's format: auto, beir, jsonl, tevatron,
    /// flag, msmarco.
    pub format: String,
    /// Dense: the split of a BEIR folder to train on.
    pub train_split: String,
    /// Dense: the BEIR folder to validate and test on (empty: `data`, when
    /// it is one).
    pub eval_data: PathBuf,
    /// Dense: its validation split (empty: no validation; the final
    /// weights are tested).
    pub val_split: String,
    /// Dense: its test split (empty: no test).
    pub test_split: String,
    /// Dense: tokens per text (0: the model's `max_seq_length`).
    pub max_length: usize,
    /// Dense: the main loss: mnrl, margin_mse, kl.
    pub text_loss: TextLoss,
    /// Dense: both directions of the contrastive loss (queries to
    /// documents and back).
    pub symmetric: bool,
    /// Dense: hard negatives per query from the data (each example's
    /// first ones are drawn from all it has).
    pub negatives: usize,
    /// Dense: GradCache mini-batch, texts per forward pass (0: off;
    /// `auto`: the largest that fits `max_rss`).
    pub cache_batch: CacheBatch,
    /// Dense: a new linear projection head to this many dimensions (0:
    /// none).
    pub head_dim: usize,
    /// Dense: RAGCUN's Gaussian mode: unnormalised vectors scored by
    /// negative squared Euclidean distance in training, search and
    /// evaluation.
    pub gaussian: bool,
    /// Dense: train the heads only (the encoder frozen).
    pub freeze_base: bool,
    /// Dense: a query tower and a document tower with weights of their
    /// own (both start from `model`; a model saved with two towers has
    /// them anyway), saved as a sentence-transformers Router.
    pub separate_towers: bool,
    /// Dense: the learning rate of the heads after the pooling (0: `lr`).
    pub head_lr: f32,
    /// Dense: f32 or bf16 matrix products in the forward passes.
    pub precision: String,
    /// Dense: train on this many examples of the data, drawn with the seed
    /// (a quick run); 0: all of them.
    pub sample: usize,
    /// Dense: the temperature of the KL distillation loss.
    pub distill_temperature: f32,
    /// Dense: min-max normalises each query's student scores before the KL
    /// distillation loss (PyLate's Distillation `normalize_scores`).
    pub distill_normalize: bool,
    /// ColBERT: the temperature of the contrastive loss over MaxSim scores
    /// (PyLate's Contrastive: 1).
    pub colbert_tau: f32,
    /// Dense: weight of the covariance-to-identity isotropy loss.
    pub iso_cov: f32,
    /// Dense: weight of SIGReg (Epps-Pulley over random projections).
    pub iso_sigreg: f32,
    /// Dense: random directions of SIGReg per step.
    pub sigreg_projections: usize,
    /// Dense: weight of `(std - std_target)^2`.
    pub iso_std: f32,
    /// Dense: the target standard deviation of `iso_std`.
    pub std_target: f32,
    /// Dense: the prompt before each query (unset: the model's `query`
    /// prompt).
    pub query_prompt: Option<String>,
    /// Dense: the prompt before each document (unset: the model's
    /// `document` / `passage` prompt).
    pub doc_prompt: Option<String>,
    /// Warmup as a fraction of the run's steps (0: `warmup` steps).
    pub warmup_ratio: f64,
    /// Dense: candidate documents for mined negatives besides the data's
    /// (a corpus file; empty: a BEIR folder's corpus.jsonl).
    pub corpus: PathBuf,
    /// Dense: steps between refreshes of the mined negatives' ranking
    /// (0: ranked once, with the starting weights).
    pub refresh_every: u64,
    /// Dense: steps from a refresh's weights to its use (0:
    /// `refresh_every`); at most `refresh_every`.
    pub refresh_lag: u64,
    /// Dense: dropout in training passes: `config` (the model's
    /// config.json, as transformers trains), `off`, or one probability for
    /// every site.
    pub dropout: String,
}

/// A dense run's GradCache mini-batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheBatch {
    /// No GradCache: the whole batch in one pass (written 0).
    #[default]
    Off,
    /// This many texts per forward pass.
    Texts(usize),
    /// The largest mini-batch whose activations keep the memory estimate
    /// under `max_rss` (written `auto`).
    Auto,
}

impl std::str::FromStr for CacheBatch {
    type Err = String;

    fn from_str(s: &str) -> Result<CacheBatch, String> {
        match s.trim() {
            "auto" => Ok(CacheBatch::Auto),
            "0" => Ok(CacheBatch::Off),
            n => n.parse().map(CacheBatch::Texts).map_err(|_| {
                format!("cache_batch = {s:?}: give a number of texts (0: off) or auto")
            }),
        }
    }
}

impl std::fmt::Display for CacheBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CacheBatch::Off => f.write_str("0"),
            CacheBatch::Texts(n) => write!(f, "{n}"),
            CacheBatch::Auto => f.write_str("auto"),
        }
    }
}

impl Serialize for CacheBatch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            CacheBatch::Off => s.serialize_u64(0),
            CacheBatch::Texts(n) => s.serialize_u64(*n as u64),
            CacheBatch::Auto => s.serialize_str("auto"),
        }
    }
}

impl<'de> Deserialize<'de> for CacheBatch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<CacheBatch, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(0) => Ok(CacheBatch::Off),
            Raw::N(n) => Ok(CacheBatch::Texts(n as usize)),
            Raw::S(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            task: TaskKind::Retriever,
            data: PathBuf::new(),
            out: PathBuf::from("runs/train"),
            kind: TowerKind::Gru,
            hidden: 0,
            layers: 2,
            heads: 4,
            projection: true,
            residual: Residual::Mean,
            doc: DocTower::Identity,
            tau: 0.05,
            margin: 0.03,
            loss_infonce: 1.0,
            loss_mse: 0.0,
            loss_cosine: 0.0,
            queue: 0,
            random_negatives: 0,
            curriculum: Curriculum::none(),
            band_anchor: Anchor::Positive,
            dup_threshold: 0.98,
            mine_pool: 200,
            mine_index: PathBuf::new(),
            miner: MinerMode::Pipelined,
            miner_timeout: 30.0,
            epochs: 10,
            batch: 32,
            accum: 1,
            lr: 5e-5,
            min_lr: 1e-6,
            warmup: 100,
            weight_decay: 0.01,
            clip: 1.0,
            max_steps: 0,
            seed: 42,
            threads: 0,
            val_every: 0,
            best_metric: "recall@10".into(),
            eval_limit: 0,
            ks: vec![1, 5, 10, 50, 100, 500],
            ckpt_every: 500,
            keep_last: 3,
            rss_every: 50,
            rss_warn_growth: 0.5,
            max_rss: String::new(),
            device: Device::Cpu,
            model: PathBuf::new(),
            format: "auto".into(),
            train_split: "train".into(),
            eval_data: PathBuf::new(),
            val_split: String::new(),
            test_split: "test".into(),
            max_length: 0,
            text_loss: TextLoss::Mnrl,
            symmetric: false,
            negatives: 1,
            cache_batch: CacheBatch::Off,
            head_dim: 0,
            gaussian: false,
            freeze_base: false,
            separate_towers: false,
            head_lr: 0.0,
            precision: "f32".into(),
            sample: 0,
            distill_temperature: 1.0,
            distill_normalize: false,
            colbert_tau: 1.0,
            iso_cov: 0.0,
            iso_sigreg: 0.0,
            sigreg_projections: 64,
            iso_std: 0.0,
            std_target: 1.0,
            query_prompt: None,
            doc_prompt: None,
            warmup_ratio: 0.0,
            corpus: PathBuf::new(),
            refresh_every: 0,
            refresh_lag: 0,
            dropout: "config".into(),
        }
    }
}

/// The keys that may differ between a run and its resumption: they do not
/// change what is computed (`data` may be spelled another way or moved; the
/// checkpoint's fingerprint of the dataset decides whether it is the same).
pub const RESUMABLE_KEYS: [&str; 8] = [
    "data",
    "out",
    "threads",
    "max_rss",
    "rss_every",
    "rss_warn_growth",
    "miner_timeout",
    "miner",
];

impl TrainConfig {
    /// Reads a `run.toml`; unknown keys are errors that name them.
    pub fn from_toml(path: &Path, text: &str) -> Result<TrainConfig, TrainError> {
        toml::from_str(text).map_err(|e| {
            // A position only means something in a file the user wrote.
            let at = match e.span() {
                Some(span) if path.is_file() => {
                    let before = &text[..span.start.min(text.len())];
                    let line = before.matches('\n').count() + 1;
                    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                    format!(" (line {line}, column {col})")
                }
                _ => String::new(),
            };
            let msg = e.message().trim_end().to_string();
            if msg.contains("fix:") {
                TrainError::Message(format!("{}: {msg}{at}", path.display()))
            } else {
                TrainError::Invalid {
                    path: path.to_path_buf(),
                    problem: format!("{msg}{at}"),
                    fix: "see `tandem train --help` for every key, its type and its default".into(),
                }
            }
        })
    }

    /// The config as TOML (what `config.toml` in the run directory holds).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("every field serialises")
    }

    /// The hard memory limit in bytes, if any.
    pub fn max_rss_bytes(&self) -> Result<Option<u64>, TrainError> {
        if self.max_rss.trim().is_empty() {
            return Ok(None);
        }
        crate::memory::parse_size(&self.max_rss)
            .map(Some)
            .map_err(|e| {
                self.invalid_key(
                    "max_rss",
                    format!("max_rss = {:?}: {e}", self.max_rss),
                    "write e.g. 3G or 512M",
                )
            })
    }

    /// An error about setting `key`, named as its flag (`--batch`), which is
    /// also the key of the config file.
    pub fn invalid_key(&self, key: &str, problem: impl Into<String>, fix: &str) -> TrainError {
        TrainError::Invalid {
            path: PathBuf::from(format!("--{}", key.replace('_', "-"))),
            problem: problem.into(),
            fix: fix.to_string(),
        }
    }

    /// Checks every value that can be checked without the data.
    pub fn check(&self) -> Result<(), TrainError> {
        let bad = |ok: bool, key: &str, problem: String, fix: &str| {
            if ok {
                Ok(())
            } else {
                Err(self.invalid_key(key, problem, fix))
            }
        };
        bad(
            self.device == Device::Cpu,
            "device",
            format!(
                "device {} is not compiled into this build of tandem",
                self.device
            ),
            "use --device cpu (the GPU backends are not part of this build)",
        )?;
        bad(
            self.tau > 0.0 && self.tau.is_finite(),
            "tau",
            format!("tau = {}", self.tau),
            "use a positive temperature such as 0.05",
        )?;
        bad(
            self.margin.is_finite() && self.margin.abs() < 1.0,
            "margin",
            format!("margin = {}", self.margin),
            "use a margin between 0 and 1, e.g. 0.03",
        )?;
        let weights = [self.loss_infonce, self.loss_mse, self.loss_cosine];
        bad(
            weights.iter().all(|w| w.is_finite() && *w >= 0.0) && weights.iter().sum::<f32>() > 0.0,
            "loss_infonce",
            format!(
                "loss weights infonce {}, mse {}, cosine {}",
                self.loss_infonce, self.loss_mse, self.loss_cosine
            ),
            "use non-negative weights, at least one positive (e.g. --loss-infonce 1)",
        )?;
        bad(
            self.epochs >= 1,
            "epochs",
            "epochs = 0".into(),
            "train for at least one epoch",
        )?;
        bad(
            self.batch >= 2,
            "batch",
            format!("batch = {}", self.batch),
            "use a batch of at least 2 (in-batch negatives need company)",
        )?;
        bad(
            self.accum >= 1,
            "accum",
            "accum = 0".into(),
            "use accum = 1 for no accumulation",
        )?;
        bad(
            self.lr > 0.0 && self.min_lr >= 0.0 && self.min_lr <= self.lr,
            "lr",
            format!("lr = {} and min_lr = {}", self.lr, self.min_lr),
            "use 0 <= min_lr <= lr, e.g. lr 5e-5, min_lr 1e-6",
        )?;
        bad(
            self.weight_decay >= 0.0,
            "weight_decay",
            format!("weight_decay = {}", self.weight_decay),
            "use a non-negative weight decay",
        )?;
        bad(
            self.clip >= 0.0,
            "clip",
            format!("clip = {}", self.clip),
            "use 0 (no clipping) or a positive norm",
        )?;
        bad(
            (0.0..=1.0).contains(&self.dup_threshold),
            "dup_threshold",
            format!("dup_threshold = {}", self.dup_threshold),
            "use a cosine between 0 and 1, e.g. 0.98",
        )?;
        bad(
            self.mine_pool >= 1,
            "mine_pool",
            "mine_pool = 0".into(),
            "search at least as many rows as the band needs, e.g. 200",
        )?;
        bad(
            self.miner_timeout > 0.0,
            "miner_timeout",
            format!("miner_timeout = {}", self.miner_timeout),
            "use a positive number of seconds",
        )?;
        bad(
            self.ckpt_every >= 1,
            "ckpt_every",
            "ckpt_every = 0".into(),
            "checkpoint every N >= 1 steps",
        )?;
        bad(
            self.keep_last >= 1,
            "keep_last",
            "keep_last = 0".into(),
            "keep at least the newest checkpoint",
        )?;
        bad(
            !self.ks.is_empty() && !self.ks.contains(&0) && self.ks.windows(2).all(|w| w[0] < w[1]),
            "ks",
            format!("ks = {:?}", self.ks),
            "list cutoffs >= 1 in increasing order without repeats, e.g. --ks 1,5,10",
        )?;
        bad(
            self.metric_names().contains(&self.best_metric),
            "best_metric",
            format!(
                "best_metric = {:?} is not one of the validation metrics {:?}",
                self.best_metric,
                self.metric_names()
            ),
            "choose one of the recall@k (hit@k for an LVM) of ks, mrr@10 or cosine",
        )?;
        bad(
            !(self.task == TaskKind::Lvm && self.doc != DocTower::Identity),
            "doc",
            format!("doc = {} in an LVM run: an LVM predicts the next bank vector itself, so the targets cannot be moved by a doc tower", self.doc),
            "use doc = identity for an LVM, or train a retriever with `tandem train`",
        )?;
        bad(!(self.band_anchor == Anchor::Query && self.miner == MinerMode::Pipelined && self.curriculum.mines()), "band_anchor", "band_anchor = query with miner = pipelined: the query changes with every step, so it cannot be mined a batch ahead".into(), "use miner = sync with band_anchor = query, or band_anchor = positive")?;
        for p in self.curriculum.phases() {
            if let Some(b) = p.band {
                bad(
                    b.count <= self.mine_pool,
                    "mine_pool",
                    format!(
                        "the curriculum asks for {} mined negatives but mine_pool = {}",
                        b.count, self.mine_pool
                    ),
                    "raise mine_pool above the largest count",
                )?;
            }
        }
        self.curriculum.check_covers(self.epochs)?;
        self.max_rss_bytes()?;
        if self.task == TaskKind::Dense {
            bad(
                !self.model.as_os_str().is_empty(),
                "model",
                "no model given".into(),
                "pass --model DIR, a Hugging Face or sentence-transformers model directory",
            )?;
            bad(
                matches!(self.precision.as_str(), "f32" | "bf16" | "auto"),
                "precision",
                format!("precision = {:?}", self.precision),
                "use f32, bf16, or auto (bf16 where the CPU has native bf16 products)",
            )?;
            bad(
                (0.0..1.0).contains(&self.warmup_ratio),
                "warmup_ratio",
                format!("warmup_ratio = {}", self.warmup_ratio),
                "use a fraction in [0, 1), e.g. 0.1",
            )?;
            bad(
                [self.iso_cov, self.iso_sigreg, self.iso_std, self.head_lr]
                    .iter()
                    .all(|w| w.is_finite() && *w >= 0.0),
                "iso_cov",
                "a negative isotropy weight or head_lr".into(),
                "use weights >= 0",
            )?;
            bad(
                !(self.curriculum.mines() && self.text_loss != TextLoss::Mnrl),
                "curriculum",
                format!("text_loss = {} with mined negatives: mined negatives have no teacher scores", self.text_loss),
                "use --text-loss mnrl with a mining curriculum, or mine offline with `tandem mine --output-format flag` (it writes the mining model's scores)",
            )?;
            bad(
                self.refresh_every == 0 || self.curriculum.mines(),
                "refresh_every",
                format!(
                    "refresh_every = {} without a curriculum that mines",
                    self.refresh_every
                ),
                "give a --curriculum such as \"0:none;1-2:4@0.6-0.95\", or drop --refresh-every",
            )?;
            bad(
                self.refresh_lag <= self.refresh_every,
                "refresh_lag",
                format!(
                    "refresh_lag = {} is more than refresh_every = {}",
                    self.refresh_lag, self.refresh_every
                ),
                "use a lag of at most refresh_every (0 means refresh_every)",
            )?;
            bad(
                self.colbert_tau > 0.0 && self.colbert_tau.is_finite(),
                "colbert_tau",
                format!("colbert_tau = {}", self.colbert_tau),
                "use a positive temperature, e.g. 1 (PyLate's)",
            )?;
            bad(
                self.distill_temperature > 0.0,
                "distill_temperature",
                format!("distill_temperature = {}", self.distill_temperature),
                "use a positive temperature, e.g. 1",
            )?;
        }
        Ok(())
    }

    /// The forward precision of a dense run: `precision`, with `auto`
    /// resolved for this CPU.
    pub fn forward_precision(&self) -> Result<tandem_nn::kernels::Precision, TrainError> {
        let name = match self.precision.as_str() {
            "auto" if tandem_nn::kernels::bf16::has_native_bf16() => "bf16",
            "auto" => "f32",
            p => p,
        };
        name.parse().map_err(|_| {
            self.invalid_key(
                "precision",
                format!("precision = {:?}", self.precision),
                "use f32, bf16 or auto",
            )
        })
    }

    /// Warmup steps of a run of `total` steps: `warmup_ratio` of them when
    /// set, else `warmup` (at most `total`).
    pub fn warmup_steps(&self, total: u64) -> u64 {
        if self.warmup_ratio > 0.0 {
            (self.warmup_ratio * total as f64).ceil() as u64
        } else {
            self.warmup.min(total)
        }
    }

    /// The command that trains this task.
    pub fn command(&self) -> &'static str {
        match self.task {
            TaskKind::Retriever => "tandem train",
            TaskKind::Lvm => "tandem lvm train",
            TaskKind::Dense => "tandem train --task dense",
        }
    }

    /// The names of the validation metrics, in report order: Recall@k
    /// (Hit@k for an LVM: one true next row, so the same number), MRR@10,
    /// and the mean cosine of the query to the target vector.
    pub fn metric_names(&self) -> Vec<String> {
        let at = match self.task {
            TaskKind::Retriever => "recall",
            TaskKind::Lvm => "hit",
            TaskKind::Dense => {
                return ["ndcg@10", "recall@100", "map@100", "mrr@10"]
                    .map(String::from)
                    .to_vec()
            }
        };
        self.ks
            .iter()
            .map(|k| format!("{at}@{k}"))
            .chain(["mrr@10".to_string(), "cosine".to_string()])
            .collect()
    }

    /// The keys whose values differ from `other`'s, except those that may
    /// change on resume.
    pub fn differences(&self, other: &TrainConfig) -> Vec<String> {
        let (a, b) = (
            toml::Value::try_from(self).ok(),
            toml::Value::try_from(other).ok(),
        );
        let (Some(toml::Value::Table(a)), Some(toml::Value::Table(b))) = (a, b) else {
            return vec!["<unreadable>".into()];
        };
        a.keys()
            .chain(b.keys())
            .filter(|k| !RESUMABLE_KEYS.contains(&k.as_str()))
            .filter(|k| a.get(*k) != b.get(*k))
            .map(|k| format!("{k} ({} vs {})", show(a.get(k)), show(b.get(k))))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect()
    }
}

fn show(v: Option<&toml::Value>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "unset".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_round_trip_and_unknown_keys() {
        let c = TrainConfig {
            curriculum: "0-1:none;2-9:4@0.8-0.9".parse().unwrap(),
            kind: TowerKind::Lstm,
            ..TrainConfig::default()
        };
        let back = TrainConfig::from_toml(Path::new("run.toml"), &c.to_toml()).unwrap();
        assert_eq!(c, back);
        let err = TrainConfig::from_toml(Path::new("run.toml"), "epocs = 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("run.toml") && err.contains("epocs"), "{err}");
        let err = TrainConfig::from_toml(Path::new("run.toml"), "kind = \"mamba\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("mamba"), "{err}");
    }

    #[test]
    fn precision_auto_is_bf16_where_the_cpu_has_it() {
        use tandem_nn::kernels::Precision;
        let with = |p: &str| TrainConfig {
            precision: p.into(),
            ..TrainConfig::default()
        };
        let native = tandem_nn::kernels::bf16::has_native_bf16();
        let want = if native {
            Precision::Bf16
        } else {
            Precision::F32
        };
        assert_eq!(with("auto").forward_precision().unwrap(), want);
        assert_eq!(with("f32").forward_precision().unwrap(), Precision::F32);
        assert_eq!(with("bf16").forward_precision().unwrap(), Precision::Bf16);
        let err = with("fp8").forward_precision().unwrap_err().to_string();
        assert!(err.contains("precision") && err.contains("auto"), "{err}");
    }

    #[test]
    fn checks_name_the_key() {
        type Edit = fn(&mut TrainConfig);
        let cases: [(&str, Edit); 8] = [
            ("tau", |c| c.tau = 0.0),
            ("batch", |c| c.batch = 1),
            ("device cuda", |c| c.device = Device::Cuda),
            ("best_metric", |c| c.best_metric = "recall@7".into()),
            ("band_anchor = query", |c| {
                c.band_anchor = Anchor::Query;
                c.curriculum = "0-9:4@0.8-0.9".parse().unwrap();
            }),
            ("max_rss", |c| c.max_rss = "lots".into()),
            ("doc = linear in an LVM", |c| {
                c.task = TaskKind::Lvm;
                c.best_metric = "cosine".into();
                c.doc = DocTower::Linear;
            }),
            // An LVM's cutoffs are hit@k.
            (
                "recall@10\" is not one of the validation metrics [\"hit@1",
                |c| {
                    c.task = TaskKind::Lvm;
                },
            ),
        ];
        for (want, f) in cases {
            let mut c = TrainConfig::default();
            f(&mut c);
            let err = c.check().unwrap_err().to_string();
            assert!(err.contains(want), "{want}: {err}");
        }
        assert!(TrainConfig::default().check().is_ok());
        let c = TrainConfig {
            curriculum: "0-3:none".parse().unwrap(),
            ..TrainConfig::default()
        };
        assert!(c.check().unwrap_err().to_string().contains("4"));
    }

    #[test]
    fn differences_ignore_resumable_keys() {
        let a = TrainConfig::default();
        let mut b = a.clone();
        b.threads = 7;
        b.max_rss = "2G".into();
        assert!(a.differences(&b).is_empty());
        b.lr = 1e-3;
        assert_eq!(a.differences(&b).len(), 1);
        assert!(a.differences(&b)[0].starts_with("lr"));
    }
}
