//! `tandem data ...`, `tandem synth`, `tandem baseline`: build next-vector
//! sequence datasets and score the two context baselines on them.

use std::io::Write;
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
    /// Make (query, positive) training pairs from raw documents, as a BEIR folder.
    ///
    /// Modes: title-body (query = the title, positive = the body; documents
    /// without both are skipped), sentence-rest (query = one sentence,
    /// positive = the rest of the document, one pair per sentence of every
    /// document with two or more), neighbours (the document cut into chunks
    /// of whole sentences of about --chunk-words words; query = a chunk,
    /// positive = the next one). Documents are split train/val/test by a
    /// seeded shuffle (no document in two splits). DIR gets corpus.jsonl,
    /// queries.jsonl, qrels/{train,val,test}.tsv and pairs.json (settings,
    /// counts); train with `--data DIR --split train`, validate on `val`.
    Pairs(PairsArgs),
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

/// How `tandem data pairs` makes a (query, positive) pair from a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PairMode {
    /// Query = the title, positive = the body.
    TitleBody,
    /// Query = one sentence, positive = the other sentences.
    SentenceRest,
    /// Query = a chunk of sentences, positive = the next chunk.
    Neighbours,
}

/// Flags of `tandem data pairs`.
#[derive(Debug, Args)]
pub struct PairsArgs {
    /// Documents: JSON lines (body in --field, title in --title-field) or plain lines.
    #[arg(long)]
    pub input: PathBuf,
    /// Output BEIR folder.
    #[arg(long)]
    pub out: PathBuf,
    /// JSON field of the document body.
    #[arg(long, default_value = "text")]
    pub field: String,
    /// JSON field of the document title (optional on a line).
    #[arg(long, default_value = "title")]
    pub title_field: String,
    /// How a document becomes pairs.
    #[arg(long, value_enum, default_value_t = PairMode::TitleBody)]
    pub mode: PairMode,
    /// neighbours: about this many words per chunk (whole sentences).
    #[arg(long, default_value_t = 100)]
    pub chunk_words: usize,
    /// Keep at most this many pairs (a seeded choice among all).
    #[arg(long)]
    pub num_pairs: Option<usize>,
    /// Fractions of the documents in train, val and test (summing to 1).
    #[arg(long, num_args = 3, value_names = ["TRAIN", "VAL", "TEST"], default_values_t = [0.8, 0.1, 0.1])]
    pub split: Vec<f64>,
    /// Seed of the document split, --sample and --num-pairs.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Use only this many documents (a seeded choice; a quick run).
    #[arg(long)]
    pub sample: Option<usize>,
    /// Replace an existing folder written by `tandem data pairs`.
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
        DataCmd::Pairs(a) => run_pairs(&a).context("tandem data pairs failed")?,
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

/// The name of the settings and counts file of `tandem data pairs`.
const PAIRS_FILE: &str = "pairs.json";

/// The split names of a pairs folder, in `--split` order.
const PAIR_SPLITS: [&str; 3] = ["train", "val", "test"];

/// A seeded, platform-independent 64-bit hash of `(seed, stream, i)`
/// (SplitMix64's mixer at each step): sorting items by it is a seeded shuffle.
fn shuffle_key(seed: u64, stream: u64, i: usize) -> u64 {
    let mix = |x: u64| {
        let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    mix(mix(mix(seed) ^ stream) ^ i as u64)
}

/// `0..n` in a seeded order.
fn seeded_order(n: usize, seed: u64, stream: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| (shuffle_key(seed, stream, i), i));
    order
}

/// The split (0 train, 1 val, 2 test) of each of `n` documents, `None` for
/// one left out by `sample`: the documents are shuffled by `seed`, the first
/// `sample` kept, and that order cut by the (rounded) `fractions`.
fn assign_splits(
    n: usize,
    seed: u64,
    sample: Option<usize>,
    fractions: [f64; 3],
) -> Vec<Option<usize>> {
    let mut order = seeded_order(n, seed, 0);
    if let Some(k) = sample {
        order.truncate(k);
    }
    let used = order.len() as f64;
    let n_train = (fractions[0] * used).round() as usize;
    let n_val = ((fractions[1] * used).round() as usize).min(order.len() - n_train);
    let mut split_of = vec![None; n];
    for (rank, &doc) in order.iter().enumerate() {
        split_of[doc] = Some(usize::from(rank >= n_train) + usize::from(rank >= n_train + n_val));
    }
    split_of
}

/// One (query, positive) pair made from a document.
struct Pair {
    /// Index of its document.
    doc: usize,
    query_id: String,
    query: String,
    positive_id: String,
    positive: String,
}

/// Sentences grouped greedily into chunks of at least `words` words (the
/// last may be shorter), each chunk its sentences joined with a space.
fn chunks(sentences: &[&str], words: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut chunk: Vec<&str> = Vec::new();
    let mut count = 0;
    for s in sentences {
        chunk.push(s);
        count += s.split_whitespace().count();
        if count >= words {
            out.push(chunk.join(" "));
            chunk.clear();
            count = 0;
        }
    }
    if !chunk.is_empty() {
        out.push(chunk.join(" "));
    }
    out
}

/// The pairs of one document (`doc` its index), none when it cannot give one.
fn pairs_of(doc: usize, d: &tandem_text::Document, mode: PairMode, words: usize) -> Vec<Pair> {
    let id = |k: usize| format!("{}#{k}", d.id);
    let pair = |query_id, query, positive_id, positive| Pair {
        doc,
        query_id,
        query,
        positive_id,
        positive,
    };
    match mode {
        PairMode::TitleBody if d.title.is_empty() || d.text.is_empty() => Vec::new(),
        PairMode::TitleBody => vec![pair(
            d.id.clone(),
            d.title.clone(),
            d.id.clone(),
            d.text.clone(),
        )],
        PairMode::SentenceRest => {
            let s = tandem_text::split::sentences(&d.text);
            if s.len() < 2 {
                return Vec::new();
            }
            (0..s.len())
                .map(|k| {
                    let rest: Vec<&str> = s
                        .iter()
                        .enumerate()
                        .filter(|&(j, _)| j != k)
                        .map(|(_, t)| *t)
                        .collect();
                    pair(id(k), s[k].to_string(), id(k), rest.join(" "))
                })
                .collect()
        }
        PairMode::Neighbours => {
            let c = chunks(&tandem_text::split::sentences(&d.text), words);
            c.windows(2)
                .enumerate()
                .map(|(k, w)| pair(id(k), w[0].clone(), id(k + 1), w[1].clone()))
                .collect()
        }
    }
}

/// Refuse an existing `out` unless `--force`, and even then one that
/// `tandem data pairs` did not write (an empty folder is fine).
fn check_pairs_out(out: &Path, force: bool) -> anyhow::Result<()> {
    if !out.exists() {
        return Ok(());
    }
    let empty_dir = out.is_dir()
        && std::fs::read_dir(out)
            .with_context(|| format!("{}: cannot list", out.display()))?
            .next()
            .is_none();
    if empty_dir {
        return Ok(());
    }
    if !force {
        anyhow::bail!(
            "{}: already exists; choose another --out or pass --force to replace it",
            out.display()
        );
    }
    if !out.join(PAIRS_FILE).is_file() {
        anyhow::bail!(
            "{}: exists and was not written by `tandem data pairs` (no {PAIRS_FILE}); choose another --out (tandem never deletes a folder it did not write)",
            out.display()
        );
    }
    Ok(())
}

/// Run `tandem data pairs`.
fn run_pairs(a: &PairsArgs) -> anyhow::Result<()> {
    let fractions = [a.split[0], a.split[1], a.split[2]];
    if fractions.iter().any(|f| !(0.0..=1.0).contains(f))
        || (fractions.iter().sum::<f64>() - 1.0).abs() > 1e-6
    {
        anyhow::bail!(
            "--split {} {} {}: give three fractions between 0 and 1 that sum to 1 (train val test, e.g. --split 0.8 0.1 0.1)",
            fractions[0],
            fractions[1],
            fractions[2]
        );
    }
    for (flag, v) in [
        ("--chunk-words", Some(a.chunk_words)),
        ("--num-pairs", a.num_pairs),
        ("--sample", a.sample),
    ] {
        if v == Some(0) {
            anyhow::bail!("{flag} 0: give 1 or more");
        }
    }
    check_pairs_out(&a.out, a.force)?;
    let docs = tandem_text::read_documents(&a.input, &a.field, &a.title_field)?;
    let mut seen = std::collections::HashMap::new();
    for d in &docs {
        if d.id.is_empty() || d.id.contains(char::is_whitespace) {
            anyhow::bail!(
                "{}: line {}: document id {:?} is empty or holds whitespace, which a qrels line cannot hold; give it an id without spaces",
                a.input.display(),
                d.line,
                d.id
            );
        }
        if let Some(first) = seen.insert(d.id.as_str(), d.line) {
            anyhow::bail!(
                "{}: line {}: document id {:?} is also on line {first}; give every document a unique id",
                a.input.display(),
                d.line,
                d.id
            );
        }
    }

    let split_of = assign_splits(docs.len(), a.seed, a.sample, fractions);
    let n = split_of.iter().flatten().count();

    // every pair of the used documents (in file order), then the seeded cap
    let mut skipped = 0;
    let mut pairs = Vec::new();
    for (i, d) in docs
        .iter()
        .enumerate()
        .filter(|(i, _)| split_of[*i].is_some())
    {
        let p = pairs_of(i, d, a.mode, a.chunk_words);
        skipped += usize::from(p.is_empty());
        pairs.extend(p);
    }
    for ids in [
        pairs.iter().map(|p| &p.query_id).collect::<Vec<_>>(),
        pairs.iter().map(|p| &p.positive_id).collect(),
    ] {
        let mut seen = std::collections::HashSet::new();
        if let Some(id) = ids.into_iter().find(|id| !seen.insert(*id)) {
            anyhow::bail!(
                "{}: the id {id:?} is made twice (a document id holds `#k`, as the ids of its pieces do); rename that document",
                a.input.display()
            );
        }
    }
    let candidates = pairs.len();
    if let Some(cap) = a.num_pairs.filter(|&c| c < pairs.len()) {
        let mut keep = vec![false; pairs.len()];
        for i in seeded_order(pairs.len(), a.seed, 1).into_iter().take(cap) {
            keep[i] = true;
        }
        let mut k = keep.into_iter();
        pairs.retain(|_| k.next().unwrap_or(false));
    }
    let why = match a.mode {
        PairMode::TitleBody => "without both a title and a body",
        PairMode::SentenceRest => "with fewer than 2 sentences",
        PairMode::Neighbours => "with fewer than 2 chunks",
    };
    let split_of = &split_of;
    let split_pairs = |s: usize| pairs.iter().filter(move |p| split_of[p.doc] == Some(s));
    if split_pairs(0).next().is_none() {
        anyhow::bail!(
            "{}: no training pair from {n} documents ({skipped} {why}); check --field/--title-field, try another --mode, or raise the train fraction of --split",
            a.input.display()
        );
    }
    let mut counts = serde_json::Map::new();
    for (s, name) in PAIR_SPLITS.iter().enumerate() {
        let docs_in: std::collections::HashSet<usize> = split_pairs(s).map(|p| p.doc).collect();
        counts.insert(
            name.to_string(),
            json!({ "documents": docs_in.len(), "pairs": split_pairs(s).count() }),
        );
    }
    let report = json!({
        "builder": "tandem data pairs",
        "command": command_line(),
        "tool": concat!("tandem ", env!("CARGO_PKG_VERSION")),
        "input": a.input.display().to_string(),
        "settings": {
            "mode": a.mode.to_possible_value().map(|v| v.get_name().to_string()),
            "field": a.field,
            "title_field": a.title_field,
            "chunk_words": a.chunk_words,
            "num_pairs": a.num_pairs,
            "split": fractions,
            "seed": a.seed,
            "sample": a.sample,
            "sentence_splitter": tandem_text::split::SENTENCE_SPLITTER,
        },
        "counts": {
            "documents": docs.len(),
            "used": n,
            "skipped": skipped,
            "skipped_reason": why,
            "candidate_pairs": candidates,
            "pairs": pairs.len(),
            "splits": counts,
        },
    });

    write_dir_atomic(&a.out, |stage| {
        write_pairs(stage, &pairs, split_of, &report)?;
        // check what was written the way training will read it
        for (s, name) in PAIR_SPLITS.iter().enumerate() {
            let want = split_pairs(s).count();
            if want > 0 {
                let got = tandem_text::read_examples(stage, tandem_text::PairFormat::Beir, name)?;
                anyhow::ensure!(
                    got.len() == want,
                    "split {name}: wrote {want} pairs but read back {}",
                    got.len()
                );
            }
        }
        Ok(())
    })?;
    println!(
        "wrote {}: {} pairs ({}) from {n} of {} documents ({skipped} skipped {why})",
        a.out.display(),
        pairs.len(),
        a.mode
            .to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default(),
        docs.len()
    );
    for (s, name) in PAIR_SPLITS.iter().enumerate() {
        println!(
            "  {name:<5} {:>8} pairs {:>8} documents",
            split_pairs(s).count(),
            counts[*name]["documents"]
        );
    }
    Ok(())
}

/// One line of a BEIR corpus or queries file.
#[derive(serde::Serialize)]
struct BeirLine<'a> {
    _id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    title: Option<&'a str>,
    text: &'a str,
}

/// The files of a pairs folder in `dir`: corpus.jsonl (titles empty, so a
/// positive reads back as written), queries.jsonl, qrels/<split>.tsv (with
/// the header; header only for a split without pairs) and pairs.json.
fn write_pairs(
    dir: &Path,
    pairs: &[Pair],
    split_of: &[Option<usize>],
    report: &serde_json::Value,
) -> anyhow::Result<()> {
    let lines = |path: &Path, line: &dyn Fn(&Pair) -> BeirLine<'_>| {
        tandem_io::write_atomic(path, Overwrite::Refuse, |w| {
            for p in pairs {
                serde_json::to_writer(&mut *w, &line(p))?;
                w.write_all(b"\n")?;
            }
            Ok(())
        })
    };
    lines(&dir.join("corpus.jsonl"), &|p| BeirLine {
        _id: &p.positive_id,
        title: Some(""),
        text: &p.positive,
    })?;
    lines(&dir.join("queries.jsonl"), &|p| BeirLine {
        _id: &p.query_id,
        title: None,
        text: &p.query,
    })?;
    let qrels = dir.join("qrels");
    std::fs::create_dir(&qrels).with_context(|| format!("{}: cannot create", qrels.display()))?;
    for (s, name) in PAIR_SPLITS.iter().enumerate() {
        tandem_io::write_atomic(&qrels.join(format!("{name}.tsv")), Overwrite::Refuse, |w| {
            writeln!(w, "query-id\tcorpus-id\tscore")?;
            for p in pairs.iter().filter(|p| split_of[p.doc] == Some(s)) {
                writeln!(w, "{}\t{}\t1", p.query_id, p.positive_id)?;
            }
            Ok(())
        })?;
    }
    let mut text = serde_json::to_string_pretty(report)?;
    text.push('\n');
    tandem_io::write_bytes_atomic(&dir.join(PAIRS_FILE), Overwrite::Refuse, text.as_bytes())?;
    Ok(())
}

/// Makes the folder `out` appear complete or not at all: `fill` writes into
/// a staging folder beside it, which then replaces `out` (an old `out` is
/// moved aside first and deleted after). On any error the staging folder is
/// removed and `out` is untouched.
fn write_dir_atomic(
    out: &Path,
    fill: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let name = out
        .file_name()
        .with_context(|| {
            format!(
                "{}: not a folder name; give --out a folder path",
                out.display()
            )
        })?
        .to_string_lossy()
        .into_owned();
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent)
        .with_context(|| format!("{}: cannot create", parent.display()))?;
    let stage = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let old = parent.join(format!(".{name}.old-{}", std::process::id()));
    let result = (|| {
        std::fs::create_dir(&stage)
            .with_context(|| format!("{}: cannot create", stage.display()))?;
        fill(&stage)?;
        let had_old = out.exists();
        if had_old {
            std::fs::rename(out, &old)
                .with_context(|| format!("{}: cannot move aside", out.display()))?;
        }
        if let Err(e) = std::fs::rename(&stage, out) {
            if had_old {
                let _ = std::fs::rename(&old, out);
            }
            return Err(e).with_context(|| format!("{}: cannot create", out.display()));
        }
        if had_old {
            std::fs::remove_dir_all(&old)
                .with_context(|| format!("{}: cannot remove", old.display()))?;
        }
        std::fs::File::open(&parent)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("{}: cannot sync", parent.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&stage);
    }
    result
}
