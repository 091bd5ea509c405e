//! `tandem train` and `tandem encode`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde::Serialize;
use tandem_bank::write_npy;
use tandem_data::{Dataset, Split};
use tandem_io::Overwrite;
use tandem_train::encode::{encode_examples, write_ranking};
use tandem_train::{train, Resume, Stop, TaskKind, TrainConfig};

/// Train a two-tower retriever over vectors, or (`--task dense --model DIR`)
/// fine-tune a Hugging Face text encoder on text pairs. Every key of the
/// config file is also a flag; flags win over the file, the file over the
/// defaults. Rerunning the same command on the same --out resumes from the
/// newest checkpoint.
#[derive(Debug, Args, Serialize)]
pub struct TrainArgs {
    /// A TOML file with any of the keys below (snake_case).
    #[arg(long)]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Require a checkpoint to resume from (rerunning without it resumes too).
    #[arg(long, conflicts_with = "force")]
    #[serde(skip)]
    resume: bool,
    /// Delete the earlier run in --out (checkpoints, metrics, report) and start over.
    #[arg(long)]
    #[serde(skip)]
    force: bool,
    /// Dataset directory (`tandem data ...` or `tandem synth`). Required.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<PathBuf>,
    /// Run directory [default: runs/train; a dense run: output/<model>/<data>].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    out: Option<PathBuf>,
    /// Query tower: mean, attention, gru, lstm, transformer [default: gru].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<String>,
    /// Hidden size of the GRU/LSTM/attention/transformer; 0 = the bank's dimension [default: 0].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    hidden: Option<usize>,
    /// Transformer blocks (kind transformer) [default: 2].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    layers: Option<usize>,
    /// Attention heads per transformer block (kind transformer) [default: 4].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    heads: Option<usize>,
    /// Linear projection after pooling [default: true].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    projection: Option<bool>,
    /// Residual added to the query: none, mean, last [default: mean].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    residual: Option<String>,
    /// Doc tower: identity, linear [default: identity].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    doc: Option<String>,
    /// InfoNCE temperature [default: 0.05].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    tau: Option<f32>,
    /// Additive margin on the positive [default: 0.03].
    #[arg(long, allow_negative_numbers = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    margin: Option<f32>,
    /// Weight of InfoNCE in the loss [default: 1].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    loss_infonce: Option<f32>,
    /// Weight of the MSE between the (unit) query and the target vector (next-vector models) [default: 0].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    loss_mse: Option<f32>,
    /// Weight of 1 - cos(query, target vector) (next-vector models) [default: 0].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    loss_cosine: Option<f32>,
    /// FIFO memory queue of recent positives used as negatives; 0 = off [default: 0].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    queue: Option<usize>,
    /// Random bank rows added as negatives per step [default: 0].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    random_negatives: Option<usize>,
    /// Mined negatives per epoch range, e.g. "0-5:none;6-10:8@0.82-0.92" [default: none].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    curriculum: Option<String>,
    /// What the band's cosine is measured against: positive, query [default: positive].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    band_anchor: Option<String>,
    /// Cosine to the positive at or above which a row is a near-duplicate, never a negative [default: 0.98].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    dup_threshold: Option<f32>,
    /// Nearest rows searched per example before the band filter [default: 200].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    mine_pool: Option<usize>,
    /// HNSW index of the bank to mine with (`tandem index build --metric cosine`); unset = exact search.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    mine_index: Option<PathBuf>,
    /// Miner: sync, pipelined [default: pipelined].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    miner: Option<String>,
    /// Seconds to wait for the mining worker before mining synchronously [default: 30].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    miner_timeout: Option<f64>,
    /// Epochs [default: 10].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    epochs: Option<usize>,
    /// Examples per micro-batch [default: 32].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    batch: Option<usize>,
    /// Micro-batches per optimizer step (gradient accumulation) [default: 1].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    accum: Option<usize>,
    /// Peak learning rate [default: 5e-5].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    lr: Option<f32>,
    /// Final learning rate of the cosine decay [default: 1e-6].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    min_lr: Option<f32>,
    /// Warmup optimizer steps [default: 100].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    warmup: Option<u64>,
    /// AdamW weight decay [default: 0.01].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    weight_decay: Option<f32>,
    /// Gradient-norm clip; 0 = off [default: 1.0].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    clip: Option<f32>,
    /// Stop after this many optimizer steps; 0 = all epochs [default: 0].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_steps: Option<u64>,
    /// Seed of initialisation, data order and negatives [default: 42].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<u64>,
    /// Compute threads; 0 = every core [default: 0].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    threads: Option<usize>,
    /// Validate every N steps as well as at epoch ends; 0 = epoch ends only [default: 0].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    val_every: Option<u64>,
    /// Validation metric that picks the best checkpoint: recall@k, mrr@10 or cosine [default: recall@10].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    best_metric: Option<String>,
    /// Evaluate at most this many validation and test examples (the first ones); 0 = all [default: 0].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    eval_limit: Option<usize>,
    /// Recall@k cutoffs, comma-separated [default: 1,5,10,50,100,500].
    #[arg(long, value_delimiter = ',')]
    #[serde(skip_serializing_if = "Option::is_none")]
    ks: Option<Vec<usize>>,
    /// Checkpoint every N steps (also at epoch ends and before validation) [default: 500].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    ckpt_every: Option<u64>,
    /// Checkpoints kept besides the best [default: 3].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    keep_last: Option<usize>,
    /// Log resident memory every N steps [default: 50].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    rss_every: Option<u64>,
    /// Warn when resident memory grows past its baseline by this fraction [default: 0.5].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    rss_warn_growth: Option<f64>,
    /// Checkpoint and stop when resident memory exceeds this, e.g. 3G [default: no limit].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_rss: Option<String>,
    /// cpu, cuda, metal [default: cpu].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    device: Option<String>,
    /// What to train: retriever, lvm (as `tandem lvm train`), dense (a Hugging Face text encoder on text pairs) [default: retriever].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    task: Option<String>,
    /// Dense: the Hugging Face / sentence-transformers model directory to fine-tune.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<PathBuf>,
    /// Dense: the training data's format: auto, beir, jsonl, tevatron, flag, msmarco [default: auto].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    format: Option<String>,
    /// Dense: the split of a BEIR folder to train on [default: train].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    train_split: Option<String>,
    /// Dense: the BEIR folder to validate and test on [default: --data, when it is one].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    eval_data: Option<PathBuf>,
    /// Dense: its validation split (empty: no validation) [default: empty].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    val_split: Option<String>,
    /// Dense: its test split (empty: no test) [default: test].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    test_split: Option<String>,
    /// Dense: tokens per text; 0 = the model's max_seq_length [default: 0].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_length: Option<usize>,
    /// Dense: the loss: mnrl, margin_mse, kl [default: mnrl].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    text_loss: Option<String>,
    /// Dense: both directions of the contrastive loss [default: false].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    symmetric: Option<bool>,
    /// Dense: hard negatives per query from the data [default: 1].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    negatives: Option<usize>,
    /// Dense: GradCache mini-batch in texts; 0 = off; auto = the largest that fits --max-rss [default: 0].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_batch: Option<tandem_train::config::CacheBatch>,
    /// Dense: add a linear projection head to this many dimensions; 0 = none [default: 0].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    head_dim: Option<usize>,
    /// Dense: unnormalised vectors and Euclidean scores (RAGCUN's Gaussian head) [default: false].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    gaussian: Option<bool>,
    /// Dense: train the heads only [default: false].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    freeze_base: Option<bool>,
    /// Dense: separate query and document towers, each starting from --model and trained apart, saved as a sentence-transformers Router (a model saved with two towers trains two anyway) [default: false].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    separate_towers: Option<bool>,
    /// Dense: learning rate of the heads; 0 = --lr [default: 0].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    head_lr: Option<f32>,
    /// Dense: f32, bf16 or auto (bf16 where the CPU has native bf16 products) forward matrix products [default: f32].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    precision: Option<String>,
    /// Dense: a quick run on this many examples of the data, drawn with the seed; 0 = all [default: 0].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    sample: Option<usize>,
    /// Dense: temperature of the KL distillation loss [default: 1].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    distill_temperature: Option<f32>,
    /// Dense: min-max normalise each query's scores before the KL loss (PyLate's Distillation does) [default: false].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    distill_normalize: Option<bool>,
    /// ColBERT: temperature of the contrastive loss over MaxSim scores [default: 1, PyLate's].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    colbert_tau: Option<f32>,
    /// Dense: weight of the covariance-to-identity loss [default: 0].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    iso_cov: Option<f32>,
    /// Dense: weight of SIGReg [default: 0].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    iso_sigreg: Option<f32>,
    /// Dense: SIGReg's random directions per step [default: 64].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    sigreg_projections: Option<usize>,
    /// Dense: weight of (std - std_target)^2 [default: 0].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    iso_std: Option<f32>,
    /// Dense: its target standard deviation [default: 1].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    std_target: Option<f32>,
    /// Dense: prompt before each query [default: the model's query prompt].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    query_prompt: Option<String>,
    /// Dense: prompt before each document [default: the model's document prompt].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    doc_prompt: Option<String>,
    /// Warmup as a fraction of the run's steps; 0 = --warmup steps [default: 0; dense: 0.1].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    warmup_ratio: Option<f64>,
    /// Dense: candidate documents for mined negatives besides the data's (a corpus file) [default: a BEIR folder's corpus.jsonl].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    corpus: Option<PathBuf>,
    /// Dense: refresh the mined negatives' ranking every N steps with the current weights, in the background; 0 = rank once with the starting weights [default: 0].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_every: Option<u64>,
    /// Dense: dropout in training: config (the model's config.json, as transformers trains), off, or one probability for every site [default: config].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    dropout: Option<String>,
    /// Dense: steps from a refresh's weights to its use; 0 = --refresh-every [default: 0].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_lag: Option<u64>,
}

/// Next-vector models (LVMs).
#[derive(Debug, Subcommand)]
pub enum LvmCmd {
    /// Train a next-vector model (LVM): it predicts the next bank vector of a
    /// sequence. The keys and flags are those of `tandem train`, with an LVM's
    /// defaults, which replace the [default]s listed below: task lvm, doc
    /// identity, --loss-cosine 1 --loss-infonce 0.1, --ks 1,5,10 (reported as
    /// hit@k), --best-metric cosine, --out runs/lvm. Rerunning the same
    /// command on the same --out resumes.
    Train(Box<TrainArgs>),
}

/// The defaults `tandem lvm train` puts under the config file and the flags.
fn lvm_defaults() -> toml::Table {
    let mut t = toml::Table::new();
    t.insert("task".into(), "lvm".into());
    t.insert("loss_cosine".into(), 1.0.into());
    t.insert("loss_infonce".into(), 0.1.into());
    t.insert("best_metric".into(), "cosine".into());
    t.insert(
        "ks".into(),
        toml::Value::Array(vec![1.into(), 5.into(), 10.into()]),
    );
    t.insert("out".into(), "runs/lvm".into());
    t
}

/// The defaults of a dense text run (sentence-transformers' fine-tuning
/// recipe: MNRL at temperature 0.05, lr 2e-5, 10% warmup, batch 32).
fn dense_defaults() -> toml::Table {
    let mut t = toml::Table::new();
    t.insert("task".into(), "dense".into());
    t.insert("lr".into(), 2e-5.into());
    t.insert("min_lr".into(), 0.0.into());
    t.insert("epochs".into(), 1.into());
    t.insert("warmup_ratio".into(), 0.1.into());
    t.insert("best_metric".into(), "ndcg@10".into());
    t.insert("ckpt_every".into(), 50.into());
    t
}

/// `tandem lvm ...`.
pub fn run_lvm(cmd: LvmCmd) -> Result<()> {
    match cmd {
        LvmCmd::Train(args) => {
            let cfg = config_of(&args, lvm_defaults())?;
            if cfg.task != TaskKind::Lvm {
                bail!("task = {} in the config of `tandem lvm train`; fix: remove the task key (an LVM run has task lvm) or use `tandem train` for a retriever", cfg.task);
            }
            train_with(&args, &cfg)
        }
    }
}

/// Merges `base` (the command's defaults over TrainConfig's), the config
/// file and the flags, later ones winning.
fn config_of(args: &TrainArgs, base: toml::Table) -> Result<TrainConfig> {
    let file = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                anyhow::anyhow!("{}: cannot read the config file ({e}); fix: pass --config an existing TOML file", path.display())
            })?;
            // The file on its own first, so that its errors carry its lines.
            TrainConfig::from_toml(path, &text)?;
            text.parse::<toml::Table>()?
        }
        None => toml::Table::new(),
    };
    let flags = toml::Table::try_from(args).context("flags")?;
    // A config that says task = "lvm" (or "dense") gets that task's
    // defaults whichever command reads it.
    let task = flags
        .get("task")
        .or_else(|| file.get("task"))
        .and_then(|t| t.as_str());
    let mut table = match task {
        Some("lvm") => lvm_defaults(),
        Some("dense") => dense_defaults(),
        _ => base,
    };
    table.extend(file);
    table.extend(flags);
    if table.get("task").and_then(|t| t.as_str()) == Some("dense") && !table.contains_key("out") {
        // output/<model>/<data>: the same command finds its run again
        let name = |key: &str| -> String {
            table
                .get(key)
                .and_then(|v| v.as_str())
                .and_then(|p| Path::new(p).file_name())
                .map_or("unnamed".into(), |n| n.to_string_lossy().into_owned())
        };
        let out = Path::new("output").join(name("model")).join(name("data"));
        table.insert("out".into(), out.display().to_string().into());
    }
    let cfg = TrainConfig::from_toml(Path::new("command line"), &toml::to_string(&table)?)?;
    if cfg.data.as_os_str().is_empty() {
        bail!("no dataset given; fix: pass --data DIR (a dataset made by `tandem data` or `tandem synth`) or set data in the config file");
    }
    Ok(cfg)
}

/// `tandem train`.
pub fn run_train(args: TrainArgs) -> Result<()> {
    let cfg = config_of(&args, toml::Table::new())?;
    train_with(&args, &cfg)
}

/// Trains `cfg` (resuming as the flags say) and prints the test table.
fn train_with(args: &TrainArgs, cfg: &TrainConfig) -> Result<()> {
    // The vector tasks' buffers are small and reused: their figures are
    // unchanged by keeping pages, and their memory stays as it was.
    if cfg.task == TaskKind::Dense {
        crate::keep_freed_pages();
    }
    let resume = if args.force {
        Resume::Restart
    } else if args.resume {
        Resume::Require
    } else {
        Resume::Auto
    };
    let out = train(cfg, resume)?;
    if out.stop == Stop::Signal {
        return Ok(());
    }
    if !out.test.is_empty() {
        println!("test split ({}):", cfg.data.display());
        let names: Vec<&str> = out.test.iter().map(|(n, _)| n.as_str()).collect();
        println!("| query | {} |", names.join(" | "));
        println!("|---|{}", "---|".repeat(names.len()));
        let row = |label: &str, vals: &[(String, f64)]| {
            let cells: Vec<String> = vals.iter().map(|(_, v)| format!("{v:.4}")).collect();
            println!("| {label} | {} |", cells.join(" | "));
        };
        let label = match cfg.task {
            TaskKind::Dense => "trained model".to_string(),
            _ => format!("{} tower", cfg.kind),
        };
        row(&label, &out.test);
        for (name, vals) in &out.test_baselines {
            row(&format!("{name} baseline"), vals);
        }
    }
    if let Some((v, s)) = out.best {
        println!("best validation {} {v:.4} at step {s}", cfg.best_metric);
    }
    if let Some(r) = &out.report {
        println!("report: {}", r.display());
    }
    Ok(())
}

/// Apply a trained query tower: write the query vectors of a split as .npy,
/// and optionally its ranking as a TREC run plus qrels (for `tandem eval`).
#[derive(Debug, Args)]
pub struct EncodeArgs {
    /// A checkpoint directory (`<run>/checkpoints/step-N`) or a run directory
    /// (its best checkpoint, else its newest).
    #[arg(long)]
    checkpoint: PathBuf,
    /// The dataset directory.
    #[arg(long)]
    data: PathBuf,
    /// Which split: train, val, test.
    #[arg(long, default_value = "test")]
    split: String,
    /// Output .npy of query vectors (float32, one row per example).
    #[arg(long)]
    out: PathBuf,
    /// Also write the split's ranking as a TREC run here.
    #[arg(long)]
    run: Option<PathBuf>,
    /// Also write the doc tower's vectors of every bank row here (.npy,
    /// float32): the bank to search the query vectors against. For an
    /// identity doc tower they are the bank's own vectors.
    #[arg(long)]
    docs: Option<PathBuf>,
    /// Where to write the qrels of --run [default: the run path with .qrels].
    #[arg(long, requires = "run")]
    qrels: Option<PathBuf>,
    /// Ranking depth of --run.
    #[arg(long, default_value_t = 100)]
    depth: usize,
    /// Overwrite existing outputs.
    #[arg(long)]
    force: bool,
}

/// `tandem encode`.
pub fn run_encode(args: EncodeArgs) -> Result<()> {
    let split: Split = args
        .split
        .parse()
        .map_err(|e| anyhow::anyhow!("--split {}: {e}", args.split))?;
    let overwrite = Overwrite::from_force(args.force);
    let qrels = args
        .qrels
        .clone()
        .or_else(|| args.run.as_ref().map(|r| r.with_extension("qrels")));
    let outputs: Vec<&PathBuf> = [
        Some(&args.out),
        args.run.as_ref(),
        qrels.as_ref(),
        args.docs.as_ref(),
    ]
    .into_iter()
    .flatten()
    .collect();
    for (i, p) in outputs.iter().enumerate() {
        if p.exists() && !args.force {
            bail!(
                "{}: already exists; fix: pass --force to overwrite it or choose another path",
                p.display()
            );
        }
        let abs = std::path::absolute(p)?;
        if outputs[..i]
            .iter()
            .any(|q| std::path::absolute(q).ok().as_ref() == Some(&abs))
        {
            bail!("{}: given for two outputs (--out, --run, --qrels, --docs); fix: give each output its own path", p.display());
        }
    }
    if args.depth == 0 {
        bail!("--depth 0: a ranking needs at least one row per query; fix: pass --depth 100 or so");
    }
    let ck = tandem_train::encode::checkpoint_of(&args.checkpoint)?;
    let dir = ck.dir.clone();
    let model = tandem_train::encode::model_of(&ck)?;
    let ds = Dataset::open(&args.data)?;
    if ds.bank().dim() != model.config().dim {
        bail!(
            "{}: the bank has dimension {} but the model in {} was trained on {}; fix: encode with the dataset the model was trained on",
            args.data.display(),
            ds.bank().dim(),
            dir.display(),
            model.config().dim
        );
    }
    let examples: Vec<_> = ds.examples(split).collect();
    if examples.is_empty() {
        bail!(
            "{}: the {split} split has no examples; fix: choose another --split",
            args.data.display()
        );
    }
    let vectors = encode_examples(&model, &ds, &examples);
    let d = model.config().dim;
    write_npy(
        &args.out,
        examples.len(),
        d,
        tandem_bank::Vectors::F32(&vectors),
        overwrite,
    )?;
    println!(
        "{} query vectors ({} x {d}) from {} -> {}",
        split,
        examples.len(),
        dir.display(),
        args.out.display()
    );
    if let Some(docs) = &args.docs {
        let bank = ds.bank();
        let v = tandem_train::encode::doc_vectors(&model, bank);
        write_npy(
            docs,
            bank.rows(),
            d,
            tandem_bank::Vectors::F32(&v),
            overwrite,
        )?;
        println!(
            "doc vectors ({} x {d}, doc tower {}) -> {}",
            bank.rows(),
            model.config().doc,
            docs.display()
        );
    }
    if let (Some(run), Some(qrels)) = (&args.run, &qrels) {
        let ks = [args.depth.min(ds.bank().rows())];
        write_ranking(&model, &ds, &examples, run, qrels, &ks)?;
        println!(
            "ranking -> {} (qrels {}); score it with: tandem eval --qrels {} --run {}",
            run.display(),
            qrels.display(),
            qrels.display(),
            run.display()
        );
    }
    Ok(())
}
