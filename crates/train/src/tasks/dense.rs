//! The dense text task: a Hugging Face encoder (with its pooling and
//! heads, and optionally a new projection head) fine-tuned on text pairs
//! with a contrastive or distillation loss and isotropy regularisers,
//! validated and tested on BEIR splits, and saved as a sentence-transformers
//! directory (`model/` in the run directory). A ColBERT (a PyLate
//! directory as `--model`) trains the same way with its token vectors
//! scored by MaxSim (PyLate's Contrastive, CachedContrastive and
//! Distillation losses) and is saved as a PyLate directory.
//!
//! A micro-batch is `batch` examples of the epoch's order, without
//! duplicate texts (sentence-transformers' NoDuplicatesBatchSampler); the
//! hard negatives of each example are drawn per micro-batch. Nothing is
//! carried across steps but the parameters and the optimizer, so a
//! checkpoint needs nothing of the task's but the data's fingerprint.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tandem_nn::contrastive::{Distill, Isotropy, Mnrl, Similarity};
use tandem_nn::Params;
use tandem_text::beir::{Beir, Ranking};
use tandem_text::mine::Ranker;
use tandem_text::{
    read_examples, ColBert, Corpus, Dropout, EmbedOptions, Embedder, Joined, MainLoss, Objective,
    PairFormat, StepStats, Tokenize, Towers, TrainSet,
};

use super::refresh::{RefreshState, Refresher, Schedule, MINED_FILE, PENDING_FILE};
use super::vector::ORDER;
use crate::checkpoint::Loaded;
use crate::config::{CacheBatch, TextLoss, TrainConfig};
use crate::harness::{Micro, Scores, Snapshot, Stream, Task, Tested, TrainLine};
use crate::memory::Estimate;
use crate::TrainError;

/// The positives and hard negatives drawn for a micro-batch, and SIGReg's
/// directions (index: the global micro-batch).
const DRAW: Stream = Stream {
    id: 5,
    name: "draw",
    index: "micro-batch",
};
/// A new projection head's initialisation (index: the tower, 0 for the
/// query tower or the only one, 1 for a separate document tower).
const HEAD: Stream = Stream {
    id: 6,
    name: "head",
    index: "tower",
};
/// The examples a `--sample` run keeps (index: 0).
const SAMPLE: Stream = Stream {
    id: 7,
    name: "sample",
    index: "none",
};
const STREAMS: [Stream; 4] = [ORDER, DRAW, HEAD, SAMPLE];

/// What the checkpoint's `state.json` holds for the task.
#[derive(Debug, Serialize, Deserialize)]
pub struct DenseState {
    /// SHA-256 of the training data's files.
    data_sha256: String,
    /// The base model's fingerprint.
    base_model: String,
    /// The mined negatives' rankings.
    #[serde(default)]
    refresh: RefreshState,
}

/// Sums of the step statistics since the last `train` line.
#[derive(Debug, Default)]
struct Window {
    n: f64,
    main: f64,
    accuracy: f64,
    std: f64,
    mean_norm: f64,
    cov_error: f64,
    positive_distance: f64,
    candidates: f64,
    padded_tokens: f64,
    seconds: f64,
}

impl Window {
    fn add(&mut self, s: &StepStats, tokens: usize, seconds: f64) {
        self.n += 1.0;
        self.main += s.main;
        self.accuracy += s.accuracy;
        self.std += s.isotropy.std;
        self.mean_norm += s.isotropy.mean_norm;
        self.cov_error += s.isotropy.cov_error;
        self.positive_distance += s.positive_distance;
        self.candidates += s.candidates;
        self.padded_tokens += tokens as f64;
        self.seconds += seconds;
    }
}

/// A dense text retriever being fine-tuned.
pub struct DenseTask<'a> {
    cfg: &'a TrainConfig,
    /// The model being trained.
    model: Model,
    /// The base model's fingerprint.
    base_model: String,
    train: TrainSet,
    objective: Objective,
    prompts: (String, String),
    ranking: Ranking,
    val: Option<Beir>,
    test: Option<Beir>,
    steps_per_epoch: u64,
    /// The epoch whose batches are cached, and those batches.
    order: (usize, Vec<Vec<usize>>),
    data_sha256: String,
    window: Window,
    /// The rankings mined negatives are drawn from (when the curriculum
    /// mines).
    refresh: Option<Refresher>,
    /// Memory per text in a forward pass with activations, and the bytes
    /// the run holds besides them (see [`DenseTask::estimate`]).
    footprint: Footprint,
}

/// What a dense run trains.
enum Model {
    /// The towers (one, or a query and a document tower) as one parameter
    /// set.
    Towers(Box<Joined>),
    /// A ColBERT (one encoder for both sides, token vectors).
    Colbert(Box<ColBert>),
}

impl Model {
    fn params(&self) -> &Params {
        match self {
            Model::Towers(j) => j.params(),
            Model::Colbert(c) => c.embedder().params(),
        }
    }

    fn params_mut(&mut self) -> &mut Params {
        match self {
            Model::Towers(j) => j.params_mut(),
            Model::Colbert(c) => c.embedder_mut().params_mut(),
        }
    }

    fn sync(&mut self) {
        match self {
            Model::Towers(j) => j.sync(),
            Model::Colbert(c) => c.embedder_mut().sync(),
        }
    }

    /// Whether tensor `i` of the parameters belongs to a head (not to an
    /// encoder).
    fn is_head(&self, i: usize) -> bool {
        match self {
            Model::Towers(j) => j.is_head(i),
            Model::Colbert(c) => i >= c.embedder().encoder_tensors(),
        }
    }

    /// The query tower, or the ColBERT's model.
    fn query(&self) -> &Embedder {
        match self {
            Model::Towers(j) => j.query(),
            Model::Colbert(c) => c.embedder(),
        }
    }

    fn separate(&self) -> bool {
        matches!(self, Model::Towers(j) if j.separate())
    }

    fn is_colbert(&self) -> bool {
        matches!(self, Model::Colbert(_))
    }
}

/// A model as it is loaded, before its parameters are joined.
enum Fresh {
    Towers(Box<Towers>),
    Colbert(Box<ColBert>),
}

impl Fresh {
    fn fingerprint(&self) -> String {
        match self {
            Fresh::Towers(t) => t.fingerprint(),
            Fresh::Colbert(c) => c.embedder().fingerprint().to_string(),
        }
    }

    fn tokenizer(&self) -> &dyn Tokenize {
        match self {
            Fresh::Towers(t) => t.as_ref(),
            Fresh::Colbert(c) => c.as_ref(),
        }
    }

    fn prompts(&self, query: Option<&str>, document: Option<&str>) -> (String, String) {
        match self {
            Fresh::Towers(t) => t.prompts(query, document),
            Fresh::Colbert(c) => c.prompts(query, document),
        }
    }

    fn join(self) -> Model {
        match self {
            Fresh::Towers(t) => Model::Towers(Box::new(Joined::new(*t))),
            Fresh::Colbert(c) => Model::Colbert(c),
        }
    }
}

/// What the memory estimate of a dense run is made of.
#[derive(Debug, Clone, Copy)]
struct Footprint {
    /// Activations kept per text: about 14 x hidden floats per token and
    /// layer (inputs, q/k/v, attention output, both norms' inputs, the
    /// feed-forward's pre-activation of 4 x hidden).
    per_text: u64,
    /// Texts of a micro-batch: queries, positives, data and mined negatives.
    texts: u64,
    /// Tokens of every distinct training text and corpus document.
    tokens: u64,
    /// A refresh's copy of the weights (0 without mining).
    refresh_weights: u64,
    /// The mined ranking: queries x mine_pool x (document, score).
    ranking: u64,
}

impl Footprint {
    /// Everything but the activations, with `numel` parameters (weights,
    /// gradients and AdamW's two moments, as the harness counts them).
    fn fixed(&self, numel: u64) -> u64 {
        16 * numel + self.tokens + self.refresh_weights + self.ranking
    }

    /// `cache_batch = auto`: the largest GradCache mini-batch whose
    /// activations, with everything else and what the process holds now,
    /// fit `max_rss`; `None` when the whole batch fits.
    fn fit(&self, cfg: &TrainConfig, numel: u64) -> Result<Option<usize>, TrainError> {
        let Some(limit) = cfg.max_rss_bytes()? else {
            return Err(cfg.invalid_key(
                "cache_batch",
                "cache_batch = auto sizes the GradCache mini-batch to the memory limit, and there is none".to_string(),
                "give --max-rss (e.g. 4G), or a number of texts (--cache-batch 16)",
            ));
        };
        let now = crate::memory::rss_bytes().unwrap_or(0);
        let room = limit.saturating_sub(self.fixed(numel) + now);
        let fits = room / self.per_text.max(1);
        if fits == 0 {
            return Err(cfg.invalid_key(
                "max_rss",
                format!(
                    "max_rss {} leaves no room for the activations of one text ({}; the rest of the run needs {}, and {} is in use)",
                    crate::memory::format_size(limit),
                    crate::memory::format_size(self.per_text),
                    crate::memory::format_size(self.fixed(numel)),
                    crate::memory::format_size(now)
                ),
                "raise --max-rss, or lower --max-length",
            ));
        }
        if fits >= self.texts {
            eprintln!(
                "cache_batch = auto: the whole batch ({} texts) fits max_rss; no GradCache",
                self.texts
            );
            return Ok(None);
        }
        eprintln!(
            "cache_batch = auto: GradCache mini-batches of {fits} texts fit max_rss {}",
            crate::memory::format_size(limit)
        );
        Ok(Some(fits as usize))
    }
}

/// SHA-256 over the files at `paths` (names and bytes).
fn sha256_files(paths: &[PathBuf]) -> Result<String, TrainError> {
    let mut h = Sha256::new();
    for p in paths {
        let bytes = std::fs::read(p).map_err(|e| TrainError::io(p, e))?;
        h.update(
            p.file_name()
                .map(|n| n.as_encoded_bytes())
                .unwrap_or_default(),
        );
        h.update(Sha256::digest(&bytes));
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn text_err(e: tandem_text::TextError) -> TrainError {
    TrainError::Message(e.to_string())
}

/// The model `cfg` trains, as it starts: loaded (a ColBERT when the
/// directory is one; else two towers when asked or when the model has
/// them), with the new heads (at their initial weights) and the
/// normalisation and precision asked for.
fn fresh_model(cfg: &TrainConfig) -> Result<Fresh, TrainError> {
    let precision = cfg.forward_precision()?;
    let opts = EmbedOptions {
        batch: cfg.batch.max(16),
        max_length: (cfg.max_length > 0).then_some(cfg.max_length),
        precision,
    };
    if ColBert::is_colbert(&cfg.model).map_err(text_err)? {
        colbert_settings(cfg)?;
        let mut c = ColBert::load(&cfg.model, opts).map_err(text_err)?;
        let e = c.embedder_mut();
        e.set_precision(precision);
        e.set_dropout(dropout(cfg)?);
        return Ok(Fresh::Colbert(Box::new(c)));
    }
    let mut towers = if cfg.separate_towers {
        Towers::load_separate(&cfg.model, opts)
    } else {
        Towers::load(&cfg.model, opts)
    }
    .map_err(text_err)?;
    let dropout = dropout(cfg)?;
    for (i, model) in towers.each_mut().enumerate() {
        if cfg.head_dim > 0 {
            model.add_head(cfg.head_dim, HEAD.seed(cfg.seed, i as u64));
        }
        if cfg.gaussian {
            model.set_normalize(false);
        }
        model.set_precision(precision);
        model.set_dropout(dropout);
    }
    Ok(Fresh::Towers(Box::new(towers)))
}

/// Refuses the settings a ColBERT run does not take, naming each.
fn colbert_settings(cfg: &TrainConfig) -> Result<(), TrainError> {
    let refused = [
        (
            cfg.separate_towers,
            "separate_towers",
            "a ColBERT has one encoder for queries and documents",
        ),
        (
            cfg.head_dim > 0,
            "head_dim",
            "a ColBERT keeps the Dense head of its directory",
        ),
        (
            cfg.gaussian,
            "gaussian",
            "ColBERT token vectors are normalised",
        ),
        (
            cfg.symmetric,
            "symmetric",
            "MaxSim is not symmetric (PyLate's Contrastive is one-way)",
        ),
        (
            cfg.iso_cov > 0.0 || cfg.iso_sigreg > 0.0 || cfg.iso_std > 0.0,
            "iso_cov",
            "the isotropy losses are over single vectors",
        ),
    ];
    for (on, key, why) in refused {
        if on {
            return Err(cfg.invalid_key(
                key,
                format!("{} is a ColBERT, and {why}", cfg.model.display()),
                "drop that setting for a ColBERT (or train a dense model)",
            ));
        }
    }
    Ok(())
}

/// The `dropout` setting: `config`, `off` or a probability in `[0, 1)`.
fn dropout(cfg: &TrainConfig) -> Result<Dropout, TrainError> {
    match cfg.dropout.trim() {
        "config" => Ok(Dropout::Config),
        "off" => Ok(Dropout::Off),
        p => match p.parse::<f32>() {
            Ok(r) if (0.0..1.0).contains(&r) => Ok(Dropout::Rate(r)),
            _ => Err(cfg.invalid_key(
                "dropout",
                format!("dropout = {:?}", cfg.dropout),
                "use config (the model's rates), off, or a probability in [0, 1) such as 0.1",
            )),
        },
    }
}

/// A fresh model carrying `params` (the layout of [`Model::params`]), to
/// rank with: a refresh's copy of the weights.
fn model_with(cfg: &TrainConfig, params: &Params) -> Result<Ranker, TrainError> {
    Ok(match fresh_model(cfg)? {
        Fresh::Towers(towers) => {
            let mut m = Joined::new(*towers);
            m.params_mut().clone_from(params);
            m.sync();
            Ranker::Towers(Box::new(m.into_towers()))
        }
        Fresh::Colbert(mut c) => {
            let e = c.embedder_mut();
            e.params_mut().clone_from(params);
            e.sync();
            Ranker::Colbert(c)
        }
    })
}

impl<'a> DenseTask<'a> {
    /// The task `cfg` describes: the model loaded, the data read and
    /// tokenised, every setting checked. Build it after
    /// [`Harness::new`](crate::harness::Harness::new).
    pub fn new(cfg: &'a TrainConfig) -> Result<DenseTask<'a>, TrainError> {
        let fresh = fresh_model(cfg)?;
        let base_model = fresh.fingerprint();
        let format: PairFormat = cfg.format.parse().map_err(|e: String| {
            cfg.invalid_key(
                "format",
                e,
                "use auto, beir, jsonl, tevatron, flag or msmarco",
            )
        })?;
        let mut examples = read_examples(&cfg.data, format, &cfg.train_split).map_err(text_err)?;
        if cfg.sample > 0 && cfg.sample < examples.examples.len() {
            // a quick run: `sample` examples drawn with the seed, in file order
            let n = examples.examples.len();
            let mut keep =
                rand::seq::index::sample(&mut SAMPLE.rng(cfg.seed, 0), n, cfg.sample).into_vec();
            keep.sort_unstable();
            let mut all = std::mem::take(&mut examples.examples)
                .into_iter()
                .enumerate();
            examples.examples = keep
                .into_iter()
                .map(|k| all.find(|(i, _)| *i == k).expect("sampled in range").1)
                .collect();
        }
        let prompts = fresh.prompts(cfg.query_prompt.as_deref(), cfg.doc_prompt.as_deref());
        // mined negatives come from the data's documents and the corpus
        let corpus = match (&cfg.corpus, cfg.curriculum.mines()) {
            (_, false) => Vec::new(),
            (c, true) if !c.as_os_str().is_empty() => {
                Corpus::read(c, "text").map_err(text_err)?.texts
            }
            (_, true) if cfg.data.is_dir() => {
                let path = &Beir::paths(&cfg.data, &cfg.train_split)[0];
                Corpus::read(path, "text").map_err(text_err)?.texts
            }
            (_, true) => Vec::new(),
        };
        let train = TrainSet::new(
            &examples,
            &corpus,
            fresh.tokenizer(),
            &prompts.0,
            &prompts.1,
        )
        .map_err(text_err)?;
        let model = fresh.join();
        let micro = train.len().div_ceil(cfg.batch) as u64;
        let steps_per_epoch = micro / cfg.accum as u64;
        if steps_per_epoch == 0 || train.len() < 2 {
            return Err(cfg.invalid_key(
                "batch",
                format!(
                    "{} has {} training examples, fewer than one optimizer step of batch {} x accum {}",
                    cfg.data.display(),
                    train.len(),
                    cfg.batch,
                    cfg.accum
                ),
                "lower --batch or --accum",
            ));
        }
        let similarity = if cfg.gaussian {
            Similarity::NegL2
        } else {
            Similarity::Dot
        };
        let loss = match cfg.text_loss {
            TextLoss::Mnrl if model.is_colbert() => MainLoss::Contrastive(Mnrl {
                scale: 1.0 / cfg.colbert_tau,
                symmetric: false,
                similarity,
            }),
            TextLoss::Mnrl => MainLoss::Contrastive(Mnrl {
                scale: 1.0 / cfg.tau,
                symmetric: cfg.symmetric,
                similarity,
            }),
            TextLoss::MarginMse => MainLoss::Distill(Distill::MarginMse),
            TextLoss::Kl => MainLoss::Distill(Distill::Kl {
                temperature: cfg.distill_temperature,
                normalize: cfg.distill_normalize,
            }),
        };
        if matches!(loss, MainLoss::Distill(_)) && (!train.has_scores() || cfg.negatives == 0) {
            return Err(cfg.invalid_key(
                "text_loss",
                format!(
                    "text_loss = {} needs teacher scores for every positive and negative of {}, and --negatives >= 1",
                    cfg.text_loss,
                    cfg.data.display()
                ),
                "give data with pos_scores and neg_scores (FlagEmbedding's format), or use --text-loss mnrl",
            ));
        }
        let mut isotropy = Vec::new();
        if cfg.iso_cov > 0.0 {
            isotropy.push((Isotropy::Covariance, cfg.iso_cov));
        }
        if cfg.iso_sigreg > 0.0 {
            isotropy.push((
                Isotropy::SigReg {
                    projections: cfg.sigreg_projections.max(1),
                    seed: cfg.seed,
                },
                cfg.iso_sigreg,
            ));
        }
        if cfg.iso_std > 0.0 {
            isotropy.push((
                Isotropy::Std {
                    target: cfg.std_target,
                },
                cfg.iso_std,
            ));
        }
        if cfg.freeze_base && !(0..model.params().len()).any(|i| model.is_head(i)) {
            return Err(cfg.invalid_key(
                "freeze_base",
                "freeze_base with no head after the pooling leaves nothing to train".to_string(),
                "add a head with --head-dim N, or train the encoder (no --freeze-base)",
            ));
        }
        // training data that is not a BEIR folder evaluates nothing unless
        // --eval-data names one
        let eval_dir = if !cfg.eval_data.as_os_str().is_empty() {
            Some(&cfg.eval_data)
        } else if cfg.data.is_dir() {
            Some(&cfg.data)
        } else {
            None
        };
        let open = |split: &str| -> Result<Option<Beir>, TrainError> {
            match eval_dir {
                Some(dir) if !split.is_empty() => {
                    Beir::open(dir, split).map(Some).map_err(text_err)
                }
                _ => Ok(None),
            }
        };
        let (val, test) = (open(&cfg.val_split)?, open(&cfg.test_split)?);
        let mut files: Vec<PathBuf> = if cfg.data.is_dir() {
            Beir::paths(&cfg.data, &cfg.train_split).to_vec()
        } else {
            vec![cfg.data.clone()]
        };
        if cfg.curriculum.mines() && !cfg.corpus.as_os_str().is_empty() {
            files.push(cfg.corpus.clone());
        }
        let ranking = Ranking::from_similarity(similarity, model.query().normalizes());
        let mined = cfg
            .curriculum
            .phases()
            .iter()
            .filter_map(|p| p.band.map(|b| b.count))
            .max()
            .unwrap_or(0);
        let texts = train.mine_texts();
        let footprint = Footprint {
            per_text: model.query().max_len() as u64
                * model.query().encoder().layers() as u64
                * 14
                * model.query().encoder().hidden() as u64
                * 4,
            texts: cfg.batch as u64 * (2 + (cfg.negatives + mined) as u64),
            tokens: 4 * texts
                .queries
                .iter()
                .chain(texts.docs.iter())
                .map(|t| t.len() as u64)
                .sum::<u64>(),
            refresh_weights: if mined > 0 {
                model.params().numel() as u64 * 4
            } else {
                0
            },
            // the hits, and a ColBERT's token vectors of the documents
            // (float32 as embedded, then float16 to search)
            ranking: if mined > 0 {
                texts.queries.len() as u64 * cfg.mine_pool as u64 * 8
                    + if model.is_colbert() {
                        texts.docs.iter().map(|t| t.len() as u64).sum::<u64>()
                            * model.query().dim() as u64
                            * 6
                    } else {
                        0
                    }
            } else {
                0
            },
        };
        let cache_batch = match cfg.cache_batch {
            CacheBatch::Off => None,
            CacheBatch::Texts(n) => Some(n),
            CacheBatch::Auto => footprint.fit(cfg, model.params().numel() as u64)?,
        };
        let refresh = cfg.curriculum.mines().then(|| {
            let lag = if cfg.refresh_lag > 0 {
                cfg.refresh_lag
            } else {
                cfg.refresh_every
            };
            let mut steps = steps_per_epoch * cfg.epochs as u64;
            if cfg.max_steps > 0 {
                steps = steps.min(cfg.max_steps);
            }
            let schedule = Schedule::new(
                &cfg.curriculum,
                cfg.refresh_every,
                lag,
                steps,
                steps_per_epoch,
            );
            Refresher::new(schedule, train.mine_texts().clone(), cfg.mine_pool)
        });
        Ok(DenseTask {
            cfg,
            model,
            base_model,
            train,
            objective: Objective {
                loss,
                similarity,
                isotropy,
                cache_batch,
                train_encoder: !cfg.freeze_base,
            },
            prompts,
            ranking,
            val,
            test,
            steps_per_epoch,
            order: (usize::MAX, Vec::new()),
            data_sha256: sha256_files(&files)?,
            window: Window::default(),
            refresh,
            footprint,
        })
    }

    /// Scores the model on the test split (`what` = `test`) or the
    /// validation split, the corpus embedded with the current weights.
    fn score(&mut self, what: &str) -> Result<Scores, TrainError> {
        let beir = if what == "test" {
            &self.test
        } else {
            &self.val
        };
        let beir = beir.as_ref().expect("scored only when the split exists");
        let bar = tandem_io::progress(beir.corpus.len() as u64, what);
        let (prompts, ranking) = (&self.prompts, self.ranking);
        let progress = |n: usize| bar.inc(n as u64);
        let (scores, hits) = match &mut self.model {
            Model::Towers(j) => {
                j.with(|t| beir.evaluate(t, (&prompts.0, &prompts.1), ranking, progress))
            }
            Model::Colbert(c) => beir.evaluate_colbert(c, progress),
        }
        .map_err(text_err)?;
        bar.finish_and_clear();
        if what == "test" {
            let path = self.cfg.out.join("test.run");
            tandem_io::write_bytes_atomic(
                &path,
                tandem_io::Overwrite::Allow,
                &beir.trec(&hits, "tandem"),
            )?;
        }
        Ok(scores)
    }

    /// The model card of the saved model.
    fn card(&self, scores: &Scores) -> String {
        let cfg = self.cfg;
        let colbert = self.model.is_colbert();
        let library = if colbert {
            "PyLate\ntags:\n- ColBERT\n- PyLate"
        } else {
            "sentence-transformers\ntags:\n- sentence-transformers"
        };
        let mut s = format!(
            "---\nlibrary_name: {library}\n- tandem\n---\n\n# {}\n\nFine-tuned by tandem {} from `{}` ({}{}).\n\n",
            cfg.out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            env!("CARGO_PKG_VERSION"),
            cfg.model.display(),
            self.model.query().model_type(),
            if colbert { ", ColBERT" } else { "" }
        );
        s += &format!(
            "## Data\n\n- training: `{}` (split `{}`), {} examples\n- evaluation: {}\n\n",
            cfg.data.display(),
            cfg.train_split,
            self.train.len(),
            self.test.as_ref().map_or("none".to_string(), |t| format!(
                "`{}` split `{}`",
                t.dir.display(),
                t.split
            ))
        );
        s += &format!(
            "## Settings\n\n- loss: {} (temperature {}, symmetric {}), hard negatives {}, GradCache mini-batch {}\n- batch {} x accum {}, epochs {}, lr {} (heads {}), warmup {}, weight decay {}, clip {}\n- max length {}, precision {}, dropout {}, head {}, gaussian {}, freeze_base {}, separate towers {}\n- isotropy: covariance {}, SIGReg {}, std {} (target {})\n- similarity: {}\n\n",
            cfg.text_loss, if colbert { cfg.colbert_tau } else { cfg.tau }, cfg.symmetric, cfg.negatives, self.objective.cache_batch.unwrap_or(0),
            cfg.batch, cfg.accum, cfg.epochs, cfg.lr, if cfg.head_lr > 0.0 { cfg.head_lr } else { cfg.lr },
            if cfg.warmup_ratio > 0.0 { format!("{} of the steps", cfg.warmup_ratio) } else { format!("{} steps", cfg.warmup) },
            cfg.weight_decay, cfg.clip, self.model.query().max_len(), cfg.precision, cfg.dropout, cfg.head_dim, cfg.gaussian, cfg.freeze_base, self.model.separate(),
            cfg.iso_cov, cfg.iso_sigreg, cfg.iso_std, cfg.std_target, if colbert { "MaxSim" } else { self.ranking.name() }
        );
        if !scores.is_empty() {
            s += "## Test metrics\n\n| metric | value |\n|---|---|\n";
            for (k, v) in scores {
                s += &format!("| {k} | {v:.4} |\n");
            }
            s += "\n";
        }
        if colbert {
            s += "## Use\n\n```python\nfrom pylate import models\nmodel = models.ColBERT(\"PATH\")\nqueries = model.encode([\"a question\"], is_query=True)\ndocuments = model.encode([\"a passage\"], is_query=False)\n```\n";
            return s;
        }
        s += "## Use\n\n```python\nfrom sentence_transformers import SentenceTransformer\nmodel = SentenceTransformer(\"PATH\")\n";
        if self.model.separate() {
            // a Router routes by task: encode() alone takes the document tower
            s += "queries = model.encode_query([\"a question\"])\ndocuments = model.encode_document([\"a passage\"])\n";
        }
        s += "```\n";
        s
    }
}

impl Task for DenseTask<'_> {
    type State = DenseState;

    fn describe(&self) -> String {
        format!(
            "{}: {} ({}, {} dims{}) on {} ({} examples)",
            self.cfg.command(),
            self.cfg.model.display(),
            self.model.query().model_type(),
            self.model.query().dim(),
            if self.model.separate() {
                ", separate query and document towers"
            } else if self.model.is_colbert() {
                ", ColBERT token vectors scored by MaxSim"
            } else {
                ""
            },
            self.cfg.data.display(),
            self.train.len()
        )
    }

    fn title(&self) -> String {
        format!(
            "{}: {} on {}",
            self.cfg.command(),
            self.cfg.model.display(),
            self.cfg.data.display()
        )
    }

    fn outputs(&self) -> &'static [&'static str] {
        &["test.run", "model"]
    }

    fn streams(&self) -> &'static [Stream] {
        &STREAMS
    }

    fn steps_per_epoch(&self) -> u64 {
        self.steps_per_epoch
    }

    fn estimate(&self, estimate: &mut Estimate) {
        let f = &self.footprint;
        let texts = self
            .objective
            .cache_batch
            .map_or(f.texts, |mb| (mb as u64).min(f.texts));
        estimate.add(
            "activations (texts x length x layers x 14 x hidden x 4 B)",
            texts * f.per_text,
        );
        estimate.add("tokenised training texts and corpus", f.tokens);
        if f.refresh_weights > 0 {
            estimate
                .add("refresh: a copy of the weights", f.refresh_weights)
                .add("refresh: the mined ranking", f.ranking);
        }
    }

    fn shrink_keys(&self) -> &'static [&'static str] {
        &["cache_batch", "batch", "max_length"]
    }

    fn params(&self) -> &Params {
        self.model.params()
    }

    fn params_mut(&mut self) -> &mut Params {
        self.model.params_mut()
    }

    fn weights_metadata(&self) -> HashMap<String, String> {
        HashMap::from([("base_model".to_string(), self.base_model.clone())])
    }

    fn lr_scales(&self) -> Vec<f32> {
        let head = if self.cfg.head_lr > 0.0 {
            self.cfg.head_lr / self.cfg.lr
        } else {
            1.0
        };
        let base = if self.cfg.freeze_base { 0.0 } else { 1.0 };
        (0..self.model.params().len())
            .map(|i| if self.model.is_head(i) { head } else { base })
            .collect()
    }

    fn parameters_changed(&mut self) {
        self.model.sync();
    }

    fn with_workers<R>(&mut self, train: impl FnOnce(&mut Self) -> R) -> R {
        // the refresh worker is the Refresher's: stopped and joined when
        // it drops, here or when the task unwinds
        let r = train(self);
        self.refresh = None;
        r
    }

    fn micro_step(&mut self, at: &Micro<'_>, grads: &mut Params) -> Result<f64, TrainError> {
        let cfg = self.cfg;
        if self.order.0 != at.epoch {
            let mut rng = ORDER.rng(cfg.seed, at.epoch as u64);
            self.order = (at.epoch, self.train.batches(cfg.batch, &mut rng));
        }
        let in_epoch =
            (at.step - at.epoch as u64 * self.steps_per_epoch) as usize * at.accum + at.index;
        let ids = &self.order.1[in_epoch];
        if at.index == 0 {
            if let Some(r) = &mut self.refresh {
                let current = self.model.params();
                if let Some(line) = r.at_step(at.step, || model_with(cfg, current))? {
                    at.progress.say(line);
                }
            }
        }
        let band = cfg.curriculum.band(at.epoch);
        let mut rng = DRAW.rng(cfg.seed, at.global);
        let refresh = &mut self.refresh;
        let b = ids.len() as u64;
        let batch = self.train.batch(
            ids,
            cfg.negatives,
            &mut rng,
            |slot, query, positive| match (band, refresh.as_mut()) {
                (Some(band), Some(r)) => r.mine(
                    band,
                    query,
                    positive,
                    cfg.seed,
                    at.global * b + slot as u64,
                    at.step,
                ),
                _ => Vec::new(),
            },
        );
        let t = Instant::now();
        let objective = &self.objective;
        let (scale, seed) = (at.grad_scale(), DRAW.seed(cfg.seed, at.global));
        let stats = match &mut self.model {
            Model::Towers(j) => j.with_grads(grads, |towers, grads| {
                objective.step(towers, &batch, scale, seed, grads)
            }),
            Model::Colbert(c) => objective.step_colbert(c, &batch, scale, seed, grads),
        };
        let tokens: usize = batch.queries.iter().chain(&batch.docs).map(Vec::len).sum();
        self.window.add(&stats, tokens, t.elapsed().as_secs_f64());
        if !stats.loss.is_finite() {
            return Err(cfg.invalid_key(
                "lr",
                format!("the loss became {} at step {}", stats.loss, at.step),
                "lower --lr, raise --tau, or resume from an earlier checkpoint",
            ));
        }
        Ok(stats.loss)
    }

    fn log(&mut self, line: &mut TrainLine<'_>) {
        let w = std::mem::take(&mut self.window);
        let n = w.n.max(1.0);
        line.set("main_loss", w.main / n);
        line.set("accuracy", w.accuracy / n);
        line.set("emb_std", w.std / n);
        line.set("emb_norm", w.mean_norm / n);
        line.set("cov_error", w.cov_error / n);
        line.set("pos_distance", w.positive_distance / n);
        line.set("candidates", w.candidates / n);
        line.set("tokens_per_s", w.padded_tokens / w.seconds.max(1e-9));
        if let Some(r) = &mut self.refresh {
            let st = std::mem::take(&mut r.stats);
            if st.batches > 0.0 {
                line.set("mined_fill", st.fill / st.batches);
                line.set("staleness", st.staleness / st.batches);
            }
            if let Some(s) = st.last_s {
                line.set("refresh_s", s);
            }
            line.set("refresh_wait_s", st.wait_s);
        }
    }

    fn validates(&self) -> bool {
        self.val.is_some()
    }

    fn validate(&mut self) -> Result<Scores, TrainError> {
        self.score("validate")
    }

    fn baselines(&mut self) -> Result<Vec<(String, Scores)>, TrainError> {
        // the base model, before any step
        if self.val.is_none() {
            return Ok(Vec::new());
        }
        Ok(vec![("base model".into(), self.score("baseline")?)])
    }

    fn snapshot(&self) -> Snapshot<DenseState> {
        let (refresh, files) = self
            .refresh
            .as_ref()
            .map(Refresher::snapshot)
            .unwrap_or_default();
        Snapshot {
            state: DenseState {
                data_sha256: self.data_sha256.clone(),
                base_model: self.base_model.clone(),
                refresh,
            },
            files,
        }
    }

    fn restore(&mut self, state: DenseState, checkpoint: &Loaded) -> Result<(), TrainError> {
        if state.data_sha256 != self.data_sha256 {
            return Err(TrainError::Checkpoint {
                path: self.cfg.data.clone(),
                problem: "the training data differs from the one this run was trained on".into(),
                fix: "point --data at the run's data, or pass --force to start the run over".into(),
            });
        }
        if state.base_model != self.base_model {
            return Err(TrainError::Checkpoint {
                path: self.cfg.model.clone(),
                problem: "the model differs from the one this run started from".into(),
                fix: "point --model at the run's base model, or pass --force to start over".into(),
            });
        }
        if let Some(r) = &mut self.refresh {
            let has = |name: &str| checkpoint.names().any(|n| n == name);
            let mined = if has(MINED_FILE) {
                Some(checkpoint.file(MINED_FILE)?)
            } else {
                None
            };
            let pending = if has(PENDING_FILE) {
                let path = checkpoint.dir.join(PENDING_FILE);
                let mut params = self.model.params().clone();
                params
                    .load_safetensors(&path, checkpoint.file(PENDING_FILE)?)
                    .map_err(|e| TrainError::Message(e.to_string()))?;
                Some(model_with(self.cfg, &params)?)
            } else {
                None
            };
            r.restore(&state.refresh, mined, pending)
                .map_err(|problem| TrainError::Checkpoint {
                    path: checkpoint.dir.clone(),
                    problem,
                    fix: "resume from an earlier checkpoint (move this one away), or pass --force to start over".into(),
                })?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<Tested, TrainError> {
        let scores = if self.test.is_some() {
            self.score("test")?
        } else {
            Vec::new()
        };
        let out = self.cfg.out.join("model");
        if out.exists() {
            std::fs::remove_dir_all(&out).map_err(|e| TrainError::io(&out, e))?;
        }
        let similarity = if self.cfg.gaussian {
            "euclidean"
        } else {
            "dot"
        };
        let card = self.card(&scores);
        match &mut self.model {
            Model::Towers(j) => j.with(|t| t.save(&out, &card, similarity)),
            Model::Colbert(c) => c.save(&out, &card),
        }
        .map_err(text_err)?;
        Ok(Tested {
            scores,
            baselines: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_batch_auto_fits_the_memory_limit() {
        const MB: u64 = 1 << 20;
        let f = Footprint {
            per_text: MB,
            texts: 96,
            tokens: 3 * MB,
            refresh_weights: 0,
            ranking: 0,
        };
        let numel = 1_000_000;
        let cfg = |max_rss: String| TrainConfig {
            max_rss,
            ..TrainConfig::default()
        };
        let now = crate::memory::rss_bytes().unwrap_or(0);
        // room for about 40 texts besides what the run and the process hold
        let limit = now + f.fixed(numel) + 40 * MB;
        let got = f.fit(&cfg(format!("{limit}")), numel).unwrap().unwrap();
        assert!((30..=40).contains(&got), "{got} texts");
        assert_eq!(f.fit(&cfg("64G".into()), numel).unwrap(), None, "all fits");
        let small = format!("{}", now + f.fixed(numel) / 2);
        assert!(f
            .fit(&cfg(small), numel)
            .unwrap_err()
            .to_string()
            .contains("no room"));
        assert!(f
            .fit(&cfg(String::new()), numel)
            .unwrap_err()
            .to_string()
            .contains("--max-rss"));
    }
}
