//! `tandem data ...`, `tandem synth`, `tandem baseline`: build next-vector
//! sequence datasets and score the two context baselines on them.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;
use tandem_data::baseline::DEFAULT_KS;
use tandem_data::synth::{Preset, SynthConfig};
use tandem_data::{Dataset, Manifest, Split, DEFAULT_CONTEXT};
use tandem_io::Overwrite;

/// `tandem data` subcommands.
#[derive(Debug, Subcommand)]
pub enum DataCmd {
    /// Build a sequence dataset from ordered sentences and their vectors.
    ///
    /// The sentences file holds {"doc_id", "idx", "text"} per line, grouped by
    /// document in reading order (idx increasing); row i of the vectors embeds
    /// line i. Documents are split by ordinal in file order: ordinal % 10 == 0
    /// test, == 1 val, the rest train. Unless --copy-bank is given, the
    /// dataset refers to the vector file: by its absolute path when --vectors
    /// is absolute, else by a path relative to the dataset directory.
    FromSentences(FromSentencesArgs),
    /// Import a Python-style .npz of (context, target) examples as a dataset.
    ///
    /// The context array is (N, L, D) vectors; the target array is (N, D)
    /// vectors or (N,) integer rows of --bank. Vectors are mapped to bank rows
    /// by exact match (or, with --bank, the nearest row with cosine >= 0.9999).
    /// Without --bank the bank is built from the unique target vectors, and
    /// every context vector must be one of them. Example i becomes the
    /// sequence (context rows..., target row), in split test when i % 10 == 0,
    /// val when i % 10 == 1, else train.
    ImportNpz(ImportNpzArgs),
    /// Build a sequence dataset from raw documents with a Hugging Face model.
    ///
    /// Each document is split into sentences (or --chunk-tokens N token
    /// chunks), the pieces are embedded, and the dataset is written as
    /// from-sentences writes it (bank copied in, texts.jsonl), with
    /// from-text.json (settings, counts, timing). Resumable: rerun a killed
    /// run with the same flags.
    FromText(Box<crate::from_text::FromTextArgs>),
}

/// Flags of `tandem data from-sentences`.
#[derive(Debug, Args)]
pub struct FromSentencesArgs {
    /// Sentences file: JSON lines {"doc_id", "idx", "text"}.
    #[arg(long)]
    pub sentences: PathBuf,
    /// Vector file (.npy/.npz/.safetensors/.fvecs) with one row per sentence line.
    #[arg(long)]
    pub vectors: PathBuf,
    /// Output dataset directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Context length L: up to L previous rows predict the next.
    #[arg(long, default_value_t = DEFAULT_CONTEXT)]
    pub context: usize,
    /// Copy the vectors into the dataset (bank.npy) instead of referring to them.
    #[arg(long)]
    pub copy_bank: bool,
    /// Replace an existing dataset at --out.
    #[arg(long)]
    pub force: bool,
}

/// Flags of `tandem data import-npz`.
#[derive(Debug, Args)]
pub struct ImportNpzArgs {
    /// The .npz file with the context and target arrays.
    pub file: PathBuf,
    /// Existing bank the vectors (or integer targets) refer to.
    #[arg(long)]
    pub bank: Option<PathBuf>,
    /// Output dataset directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Name of the (N, L, D) context array.
    #[arg(long, default_value = "context")]
    pub context_key: String,
    /// Name of the (N, D) target vectors or (N,) target rows.
    #[arg(long, default_value = "target")]
    pub target_key: String,
    /// Replace an existing dataset at --out.
    #[arg(long)]
    pub force: bool,
}

/// Which preset `tandem synth` starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PresetArg {
    /// 20,000 x 64 (seconds).
    Small,
    /// 771,000 x 768, float16 (about 1.2 GB; a few minutes on 2 cores).
    Project,
}

/// The generative process, shown by `tandem synth --help`.
const SYNTH_PROCESS: &str = "\
The world (see docs/dataset-format.md):
  1. Document lengths are drawn uniformly from min-len..=max-len until they fill
     --rows (the last is cut to fit). The first --docs documents are sequences;
     the rows of the others are distractors (in the bank, in no sequence).
  2. K = max(1, documents / 64) topic centres c_k, uniform on the unit sphere,
     and one fixed random signed permutation A.
  3. Document d: topic t = unit(c_k + 0.5 u), k uniform, u uniform on the sphere.
  4. Hidden state: h_0, h_1 random unit vectors, then
     h_i = unit(A h_{i-2} + 0.3 g_i), g_i ~ N(0, I/D).
  5. Emitted (bank) vector: v_i = unit(0.8 t + h_i + noise e_i), e_i uniform on
     the sphere, stored as float16.
A single vector shares only the topic with the next one, so the mean of the
context is a better query than the last vector; a model that learns A (from
v_{i-2}) beats both. Documents are split by ordinal: % 10 == 0 test, == 1 val,
else train. Every document has its own seeded ChaCha8 stream: the same seed
gives byte-identical files on any number of threads.";

/// Flags of `tandem synth`.
#[derive(Debug, Args)]
#[command(after_long_help = SYNTH_PROCESS)]
pub struct SynthArgs {
    /// Output dataset directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Starting configuration; the flags below override it.
    #[arg(long, value_enum, default_value_t = PresetArg::Small)]
    pub preset: PresetArg,
    /// Bank rows [default: 20000 (small), 771000 (project)].
    #[arg(long)]
    pub rows: Option<usize>,
    /// Vector dimension [default: 64 (small), 768 (project)].
    #[arg(long)]
    pub dim: Option<usize>,
    /// Documents listed as sequences [default: those within the first 90% of the rows].
    #[arg(long)]
    pub docs: Option<usize>,
    /// Shortest document, in rows (>= 2) [default: 4].
    #[arg(long)]
    pub min_len: Option<usize>,
    /// Longest document, in rows [default: 16].
    #[arg(long)]
    pub max_len: Option<usize>,
    /// Emission noise relative to the unit state [default: 0.1].
    #[arg(long)]
    pub noise: Option<f64>,
    /// Random seed [default: 42].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Context length L recorded in the dataset [default: 8].
    #[arg(long)]
    pub context: Option<usize>,
    /// Replace an existing dataset at --out.
    #[arg(long)]
    pub force: bool,
}

/// Flags of `tandem baseline`.
#[derive(Debug, Args)]
pub struct BaselineArgs {
    /// Dataset directory.
    pub dataset: PathBuf,
    /// Split to score: train, val or test.
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Recall cutoffs, comma-separated (MRR@10 is always reported).
    #[arg(long, value_delimiter = ',', default_values_t = DEFAULT_KS)]
    pub k: Vec<usize>,
    /// Print the JSON report instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Where to write the report [default: DATASET/baseline.json].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Replace an existing report.
    #[arg(long)]
    pub force: bool,
}

fn command_line() -> String {
    std::env::args().collect::<Vec<_>>().join(" ")
}

fn print_summary(out: &Path, m: &Manifest) {
    println!(
        "wrote {}: {} x {} {} bank ({}), context {}",
        out.display(),
        m.rows,
        m.dim,
        m.dtype,
        m.bank,
        m.context
    );
    for split in Split::ALL {
        let c = m.splits.get(split);
        println!(
            "  {:<5} {:>8} sequences {:>9} examples",
            split.name(),
            c.sequences,
            c.examples
        );
    }
}

/// Run a `tandem data` subcommand.
pub fn run(cmd: DataCmd) -> anyhow::Result<()> {
    match cmd {
        DataCmd::FromSentences(a) => {
            let m = tandem_data::from_sentences(&tandem_data::SentencesOptions {
                sentences: &a.sentences,
                vectors: &a.vectors,
                out: &a.out,
                context: a.context,
                copy_bank: a.copy_bank,
                overwrite: Overwrite::from_force(a.force),
                command: command_line(),
            })
            .context("tandem data from-sentences failed")?;
            print_summary(&a.out, &m);
        }
        DataCmd::ImportNpz(a) => {
            let m = tandem_data::import::import_npz(&tandem_data::import::ImportOptions {
                file: &a.file,
                bank: a.bank.as_deref(),
                out: &a.out,
                context_key: &a.context_key,
                target_key: &a.target_key,
                overwrite: Overwrite::from_force(a.force),
                command: command_line(),
            })
            .context("tandem data import-npz failed")?;
            print_summary(&a.out, &m);
        }
        DataCmd::FromText(a) => {
            crate::from_text::run(*a).context("tandem data from-text failed")?
        }
    }
    Ok(())
}

/// Run `tandem synth`.
pub fn run_synth(args: SynthArgs) -> anyhow::Result<()> {
    let preset = match args.preset {
        PresetArg::Small => Preset::Small,
        PresetArg::Project => Preset::Project,
    };
    let base = preset.config();
    let cfg = SynthConfig {
        rows: args.rows.unwrap_or(base.rows),
        dim: args.dim.unwrap_or(base.dim),
        docs: args.docs.or(base.docs),
        min_len: args.min_len.unwrap_or(base.min_len),
        max_len: args.max_len.unwrap_or(base.max_len),
        noise: args.noise.unwrap_or(base.noise),
        seed: args.seed.unwrap_or(base.seed),
        context: args.context.unwrap_or(base.context),
    };
    let m = tandem_data::synth::write_synth(&cfg, &args.out, Overwrite::from_force(args.force))
        .context("tandem synth failed")?;
    print_summary(&args.out, &m);
    Ok(())
}

/// Run `tandem baseline`.
pub fn run_baseline(args: BaselineArgs) -> anyhow::Result<()> {
    let split: Split = args.split.parse().context("bad --split")?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.dataset.join("baseline.json"));
    let ds = Dataset::open(&args.dataset).context("cannot load the dataset")?;
    tandem_data::baseline::check_ks(&ds, &args.k).context("bad --k")?;
    if out.exists() && !args.force {
        anyhow::bail!(
            "{}: report already exists; pass --force to replace it or --out to write elsewhere",
            out.display()
        );
    }
    let report = tandem_data::baseline(&ds, split, &args.k)
        .with_context(|| format!("baseline on {} failed", args.dataset.display()))?;
    let m = ds.manifest();
    let doc = json!({
        "config": {
            "dataset": args.dataset.display().to_string(),
            "split": split.name(),
            "k": args.k,
            "context": m.context,
            "bank": { "path": m.bank, "rows": m.rows, "dim": m.dim, "dtype": m.dtype },
            "search": "exact (tandem_search::Flat), inner product, rows as stored, context rows excluded",
            "command": command_line(),
            "tool": tandem_data::TOOL,
        },
        "metrics": report.to_json(),
    });
    let mut text = serde_json::to_string_pretty(&doc).expect("JSON values always serialise");
    text.push('\n');
    tandem_io::write_bytes_atomic(&out, Overwrite::from_force(args.force), text.as_bytes())?;
    if args.json {
        print!("{text}");
    } else {
        println!(
            "{} split: {} examples, context up to {} rows\n",
            split, report.examples, m.context
        );
        print!("{}", report.table());
        println!("\nwrote {}", out.display());
    }
    Ok(())
}
