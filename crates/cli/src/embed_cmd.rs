//! `tandem embed` (texts to a bank with a Hugging Face model), `tandem bank
//! merge` (shards to one bank) and `tandem beir` (a model on a BEIR dataset
//! end to end).

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use serde_json::{json, Value};
use tandem_bank::{Bank, Dtype, Overwrite};
use tandem_search::{Plaid, PlaidParams, PlaidSearch};
use tandem_text::beir::{Beir, Ranking};
use tandem_text::job::{self, EmbedJob, Shard};
use tandem_text::{ColBert, Corpus, EmbedOptions, Embedder, Precision, Side, Tower, Towers};

/// Element type of a written bank.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum BankDtype {
    /// 2 bytes a value.
    Float16,
    /// 4 bytes a value.
    Float32,
}

impl From<BankDtype> for Dtype {
    fn from(d: BankDtype) -> Dtype {
        match d {
            BankDtype::Float16 => Dtype::F16,
            BankDtype::Float32 => Dtype::F32,
        }
    }
}

/// The model flags that `embed` and `beir` share.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// A Hugging Face model directory (config.json, tokenizer.json,
    /// model.safetensors; sentence-transformers modules when present).
    #[arg(long)]
    pub model: PathBuf,
    /// Texts per forward pass.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Tokens per text, special tokens included [default: the model's
    /// max_seq_length].
    #[arg(long)]
    pub max_length: Option<usize>,
    /// Matrix products in float32, or bfloat16 with float32 accumulation
    /// (fast on CPUs with AVX512-BF16 / AMX).
    #[arg(long, default_value = "f32")]
    pub precision: Precision,
    /// Worker threads (0: all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

/// A tower of a model with separate query and document towers.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TowerArg {
    /// The query tower (sentence-transformers' `encode_query`).
    Query,
    /// The document tower (`encode_document`).
    Document,
}

impl From<TowerArg> for Tower {
    fn from(t: TowerArg) -> Tower {
        match t {
            TowerArg::Query => Tower::Query,
            TowerArg::Document => Tower::Document,
        }
    }
}

impl ModelArgs {
    fn options(&self) -> anyhow::Result<EmbedOptions> {
        set_threads(self.threads);
        if self.batch == 0 {
            bail!("--batch 0: pass at least 1");
        }
        Ok(EmbedOptions {
            batch: self.batch,
            max_length: self.max_length,
            precision: self.precision,
        })
    }

    /// The model, or its tower `tower` when it has two (refused without
    /// one).
    pub(crate) fn load(&self, tower: Option<Tower>) -> anyhow::Result<Embedder> {
        let opts = self.options()?;
        Ok(match tower {
            Some(t) => Embedder::load_tower(&self.model, opts, t)?,
            None => Embedder::load(&self.model, opts)?,
        })
    }

    /// The model's query and document towers (one for both, or two).
    pub(crate) fn load_towers(&self) -> anyhow::Result<Towers> {
        Ok(Towers::load(&self.model, self.options()?)?)
    }

    /// The model as a ColBERT when its directory is one (PyLate's
    /// settings), or when `colbert` insists (refused for a dense model).
    pub(crate) fn load_colbert(&self, colbert: bool) -> anyhow::Result<Option<ColBert>> {
        if !colbert && !ColBert::is_colbert(&self.model)? {
            return Ok(None);
        }
        Ok(Some(ColBert::load(&self.model, self.options()?)?))
    }

    fn settings(&self) -> Value {
        json!({ "batch": self.batch, "precision": self.precision.name() })
    }
}

/// Uses `threads` worker threads (0: every core) for the kernels and rayon.
pub(crate) fn set_threads(threads: usize) {
    let n = if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        threads
    };
    tandem_nn::linalg::set_threads(n);
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global();
}

/// The prompt flags of `embed` and `data from-text`.
#[derive(Debug, Args)]
pub struct PromptArgs {
    /// Text put before every input (e.g. "query: ").
    #[arg(long)]
    pub prompt: Option<String>,
    /// A prompt of the model by name (config_sentence_transformers.json),
    /// e.g. query or document.
    #[arg(long)]
    pub prompt_name: Option<String>,
}

impl PromptArgs {
    /// The prompt to use: `--prompt` as given, or the model's prompt named
    /// by `--prompt-name`, or the model's default prompt.
    pub(crate) fn resolve(&self, e: &Embedder) -> anyhow::Result<String> {
        let prompts = &e.dir().prompts;
        match (&self.prompt, &self.prompt_name) {
            (Some(_), Some(_)) => bail!("--prompt and --prompt-name both given: pass one"),
            (Some(p), None) => Ok(p.clone()),
            (None, Some(n)) => match prompts.get(n) {
                Some(p) => Ok(p.clone()),
                None => bail!(
                    "{}: the model has no prompt named {n:?} (it has: {}); pass --prompt TEXT instead",
                    e.dir().path.join("config_sentence_transformers.json").display(),
                    if prompts.is_empty() {
                        "none".to_string()
                    } else {
                        prompts.keys().cloned().collect::<Vec<_>>().join(", ")
                    }
                ),
            },
            (None, None) => Ok(e
                .dir()
                .default_prompt_name
                .as_ref()
                .and_then(|n| prompts.get(n))
                .cloned()
                .unwrap_or_default()),
        }
    }
}

/// Flags of `tandem embed`.
#[derive(Debug, Args)]
pub struct EmbedArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Texts: JSON lines (BEIR corpus lines become title + " " + text) or
    /// plain lines.
    #[arg(long)]
    pub input: PathBuf,
    /// The bank to write (.npy); `<stem>.ids.txt` and `<stem>.json` (model
    /// fingerprint, settings, counts) are written beside it.
    #[arg(long)]
    pub out: PathBuf,
    /// The text field of JSON lines.
    #[arg(long, default_value = "text")]
    pub field: String,
    #[command(flatten)]
    pub prompt: PromptArgs,
    /// Which tower embeds, for a model with separate query and document
    /// towers (a sentence-transformers Router; refused without it there),
    /// or which side for a ColBERT (query: the query prefix and [MASK]
    /// expansion, for `tandem search` by MaxSim; default document).
    #[arg(long, value_enum)]
    pub tower: Option<TowerArg>,
    /// Element type of the bank [default: float32; float16 for a
    /// multi-vector bank].
    #[arg(long, value_enum)]
    pub dtype: Option<BankDtype>,
    /// Write a multi-vector bank (token vectors, `<stem>.offsets.npy`
    /// beside) with a ColBERT model; chosen by itself when the model
    /// directory is a ColBERT, refused for a dense model.
    #[arg(long)]
    pub colbert: bool,
    /// Embed part i of n equal parts of the rows (e.g. 0/4); join the parts
    /// with `tandem bank merge`.
    #[arg(long)]
    pub shard: Option<String>,
    /// Replace existing outputs.
    #[arg(long)]
    pub force: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run_embed(a: EmbedArgs) -> anyhow::Result<()> {
    crate::keep_freed_pages();
    let shard = a
        .shard
        .as_deref()
        .map(Shard::parse)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let overwrite = Overwrite::from_force(a.force);
    // outputs are checked before minutes of loading and embedding (a run
    // being resumed may replace what it wrote before it was killed)
    let outs = [
        a.out.clone(),
        job::ids_path(&a.out),
        job::sidecar_path(&a.out),
        tandem_bank::offsets_path(&a.out),
    ];
    let early = if job::partial_dir(&a.out).is_dir() {
        Overwrite::Allow
    } else {
        overwrite
    };
    job::check_outputs(&outs, &[&a.input, &a.model.model], early)?;
    let corpus = Corpus::read(&a.input, &a.field)?;
    if corpus.is_empty() {
        bail!(
            "{}: no texts; give a file with one text (or JSON object) per line",
            a.input.display()
        );
    }
    let colbert = a.model.load_colbert(a.colbert)?;
    let loaded;
    let embedder = match &colbert {
        Some(c) => c.embedder(),
        None => {
            loaded = a.model.load(a.tower.map(Tower::from))?;
            &loaded
        }
    };
    let prompt = match &colbert {
        // a ColBERT's prefixes are its own (a v6 model's prompts): no
        // default prompt on top of them
        Some(_) if a.prompt.prompt.is_none() && a.prompt.prompt_name.is_none() => String::new(),
        _ => a.prompt.resolve(embedder)?,
    };
    let input_fingerprint = job::file_fingerprint(&a.input)?;
    let mut settings = a.model.settings();
    settings["field"] = json!(a.field);
    if let Some(t) = embedder.dir().tower {
        settings["tower"] = json!(t.route());
    }
    // a ColBERT embeds queries (prefix, [MASK] expansion) or documents
    let side = match a.tower {
        Some(TowerArg::Query) => Side::Query,
        _ => Side::Document,
    };
    let dtype = a.dtype.map_or(
        if colbert.is_some() {
            Dtype::F16
        } else {
            Dtype::F32
        },
        Dtype::from,
    );
    let report = EmbedJob {
        embedder,
        corpus: &corpus,
        input: &a.input,
        input_fingerprint: &input_fingerprint,
        settings,
        prompt: &prompt,
        shard,
        dtype,
        out: &a.out,
        overwrite,
        progress: true,
        colbert: colbert.as_ref().map(|c| (c, side)),
    }
    .run()?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report.sidecar)?);
    } else {
        let rate = (report.rows - report.resumed) as f64 / report.seconds.max(1e-9);
        println!(
            "embedded {} texts ({} resumed) into {} [{} x {}], {:.1} s, {:.1} texts/s; {} truncated to {} tokens, {} empty",
            report.rows,
            report.resumed,
            a.out.display(),
            report.tokens,
            report.dim,
            report.seconds,
            rate,
            report.truncated,
            colbert
                .as_ref()
                .map_or(embedder.max_len(), |c| c.config().document_length),
            report.empty
        );
    }
    Ok(())
}

/// Flags of `tandem bank merge`.
#[derive(Debug, Args)]
pub struct MergeArgs {
    /// The shard banks of one `tandem embed --shard i/n` job, in order.
    #[arg(required = true)]
    pub parts: Vec<PathBuf>,
    /// The merged bank (.npy); ids and sidecar are written beside it.
    #[arg(long)]
    pub out: PathBuf,
    /// Replace existing outputs.
    #[arg(long)]
    pub force: bool,
}

pub fn run_merge(a: MergeArgs) -> anyhow::Result<()> {
    let side = job::merge(&a.parts, &a.out, Overwrite::from_force(a.force))?;
    println!(
        "merged {} shards into {} ({} rows)",
        a.parts.len(),
        a.out.display(),
        side["rows"][1]
    );
    Ok(())
}

/// Flags of `tandem beir`.
#[derive(Debug, Args)]
pub struct BeirArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// A BEIR dataset folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv.
    #[arg(long)]
    pub data: PathBuf,
    /// The qrels split to evaluate.
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Where the corpus embeddings are cached, keyed by the model, the
    /// corpus and the settings [default: DATA/.tandem-cache].
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// The TREC run to write [default: <dataset>-<split>.run]; the metrics
    /// and settings go beside it as <stem>.json.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Hits per query in the run.
    #[arg(long, default_value_t = 1000)]
    pub k: usize,
    /// Never return a document whose id equals the query id (BEIR's
    /// ignore_identical_ids).
    #[arg(long)]
    pub ignore_identical_ids: bool,
    /// Query prompt [default: the model's "query" prompt, if any].
    #[arg(long)]
    pub query_prompt: Option<String>,
    /// Document prompt [default: the model's "document" or "passage"
    /// prompt, if any].
    #[arg(long)]
    pub doc_prompt: Option<String>,
    /// Replace an existing run.
    #[arg(long)]
    pub force: bool,
    /// Print the metrics as JSON.
    #[arg(long)]
    pub json: bool,
    /// How a ColBERT ranks the corpus: exact MaxSim over every document, or
    /// through a PLAID index built over the cached corpus bank (cached beside
    /// it) with exact MaxSim re-ranking of its candidates.
    #[arg(long, value_enum, default_value_t = LateIndex::Exact)]
    pub index: LateIndex,
    /// PLAID: bits per residual dimension, 2 or 4 [default: 4].
    #[arg(long, value_parser = clap::builder::RangedU64ValueParser::<u32>::new().range(2..=4))]
    pub nbits: Option<u32>,
}

/// How `tandem beir` ranks with a ColBERT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LateIndex {
    /// Exact MaxSim over every document.
    Exact,
    /// A PLAID index (candidates by centroid interaction, exact MaxSim
    /// re-ranking).
    Plaid,
}

pub fn run_beir(a: BeirArgs) -> anyhow::Result<()> {
    crate::keep_freed_pages();
    let t0 = Instant::now();
    let name = a
        .data
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "beir".to_string());
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{name}-{}.run", a.split)));
    let meta = job::sidecar_path(&out);
    let overwrite = Overwrite::from_force(a.force);
    let [corpus_path, queries_path, qrels_path] = Beir::paths(&a.data, &a.split);
    for p in [&corpus_path, &queries_path, &qrels_path] {
        if !p.is_file() {
            bail!("{}: missing; a BEIR folder has corpus.jsonl, queries.jsonl and qrels/<split>.tsv (pass --split for another split)", p.display());
        }
    }
    job::check_outputs(
        &[out.clone(), meta.clone()],
        &[&corpus_path, &queries_path, &qrels_path],
        overwrite,
    )?;
    if a.k == 0 {
        bail!("--k 0: ask for at least one hit per query");
    }
    let beir = Beir::open(&a.data, &a.split)?;
    let corpus = &beir.corpus;
    let colbert = a.model.load_colbert(false)?;
    if colbert.is_none() && (a.index == LateIndex::Plaid || a.nbits.is_some()) {
        bail!(
            "--index plaid / --nbits index a ColBERT's token vectors, but {} is a dense model; drop them",
            a.model.model.display()
        );
    }
    // a dense model's towers (one for both, or a query and a document tower)
    let towers = match &colbert {
        Some(_) => None,
        None => Some(a.model.load_towers()?),
    };
    // the model that embeds the corpus
    let embedder = match (&colbert, &towers) {
        (Some(c), _) => c.embedder(),
        (None, Some(t)) => t.document(),
        (None, None) => unreachable!("a dense model's towers are loaded"),
    };
    let (query_prompt, doc_prompt) = match &colbert {
        Some(c) => c.prompts(a.query_prompt.as_deref(), a.doc_prompt.as_deref()),
        None => embedder.prompts(a.query_prompt.as_deref(), a.doc_prompt.as_deref()),
    };

    // the corpus bank, cached by model, corpus and settings
    let corpus_fp = job::file_fingerprint(&corpus_path)?;
    let settings = a.model.settings();
    let key = {
        use sha2::{Digest, Sha256};
        let text = json!([
            embedder.fingerprint(),
            corpus_fp,
            embedder.max_len(),
            doc_prompt,
            settings,
            colbert.as_ref().map(|c| format!("{:?}", c.config()))
        ])
        .to_string();
        Sha256::digest(text.as_bytes())
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let cache = a
        .cache
        .clone()
        .unwrap_or_else(|| a.data.join(".tandem-cache"));
    std::fs::create_dir_all(&cache).with_context(|| {
        format!(
            "{}: cannot create the embedding cache; pass --cache DIR with a writable folder",
            cache.display()
        )
    })?;
    let bank_path = cache.join(format!("corpus-{key}.npy"));
    let cached = bank_path.is_file();
    let t_corpus = Instant::now();
    if cached {
        eprintln!("corpus: cached embeddings {}", bank_path.display());
    } else {
        EmbedJob {
            embedder,
            corpus,
            input: &corpus_path,
            input_fingerprint: &corpus_fp,
            settings: settings.clone(),
            prompt: &doc_prompt,
            shard: None,
            dtype: if colbert.is_some() {
                Dtype::F16
            } else {
                Dtype::F32
            },
            out: &bank_path,
            overwrite: Overwrite::Refuse,
            progress: true,
            colbert: colbert.as_ref().map(|c| (c, Side::Document)),
        }
        .run()?;
    }
    let corpus_s = t_corpus.elapsed().as_secs_f64();
    let ids = job::ids_path(&bank_path);
    let stale = |rows: usize, dim: usize| {
        anyhow::anyhow!(
            "{}: {rows} x {dim} cached, {} x {} expected; delete it to embed again",
            bank_path.display(),
            corpus.len(),
            embedder.dim()
        )
    };
    let t_q = Instant::now();
    let qsel = &beir.queries;
    let mut index_meta = Value::Null;
    let (hits, k, docs, metric, queries_truncated, query_s, search_s) = match &colbert {
        None => {
            let bank = Bank::open(
                &bank_path,
                &tandem_bank::OpenOptions {
                    key: None,
                    ids: Some(ids),
                },
            )?;
            if bank.rows() != corpus.len() || bank.dim() != embedder.dim() {
                return Err(stale(bank.rows(), bank.dim()));
            }
            let query = towers.as_ref().map_or(embedder, Towers::query);
            let qv = query.embed(&qsel.texts, &query_prompt, |_| {})?;
            let query_s = t_q.elapsed().as_secs_f64();
            let ranking = Ranking::of(query);
            let k = a.k.min(bank.rows());
            let t_s = Instant::now();
            let hits = beir.search(&bank, &qv.vectors, ranking, k, a.ignore_identical_ids)?;
            let search_s = t_s.elapsed().as_secs_f64();
            (
                hits,
                k,
                bank.rows(),
                ranking.name(),
                qv.truncated,
                query_s,
                search_s,
            )
        }
        Some(c) => {
            let bank = tandem_bank::MultiBank::open(&bank_path, Some(&ids))?;
            if bank.docs() != corpus.len() || bank.dim() != c.dim() {
                return Err(stale(bank.docs(), bank.dim()));
            }
            let with: Vec<String> = qsel
                .texts
                .iter()
                .map(|t| format!("{query_prompt}{t}"))
                .collect();
            let qv = c.encode(&with, Side::Query, |_| {})?;
            let query_s = t_q.elapsed().as_secs_f64();
            let k = a.k.min(bank.docs());
            let hits = match a.index {
                LateIndex::Exact => {
                    let t_s = Instant::now();
                    let bar = tandem_io::progress(bank.docs() as u64, "maxsim");
                    let hits = beir.search_maxsim(&bank, &qv, k, a.ignore_identical_ids, |n| {
                        bar.inc(n as u64)
                    })?;
                    bar.finish_and_clear();
                    index_meta =
                        json!({ "kind": "exact-maxsim", "search_s": t_s.elapsed().as_secs_f64() });
                    hits
                }
                LateIndex::Plaid => {
                    let nbits = a.nbits.unwrap_or(PlaidParams::default().nbits);
                    let dir = cache.join(format!("corpus-{key}.plaid-{nbits}bit"));
                    let reused = tandem_search::is_plaid_index(&dir);
                    let t_b = Instant::now();
                    let index = if reused {
                        eprintln!("index: cached PLAID index {}", dir.display());
                        Plaid::open(&dir, &bank)?
                    } else {
                        let mut index = Plaid::build(
                            &bank,
                            &PlaidParams {
                                nbits,
                                ..PlaidParams::default()
                            },
                        )?;
                        index.save(&dir, Overwrite::Refuse)?;
                        index
                    };
                    let index_s = t_b.elapsed().as_secs_f64();
                    let t_s = Instant::now();
                    let bar = tandem_io::progress(qsel.len() as u64, "plaid");
                    let hits =
                        beir.search_plaid(&index, &qv, k, None, a.ignore_identical_ids, |n| {
                            bar.inc(n as u64)
                        })?;
                    bar.finish_and_clear();
                    let side = index.sidecar();
                    index_meta = json!({
                        "kind": "plaid", "path": dir, "reused": reused, "nbits": side.nbits,
                        "centroids": side.centroids, "search": PlaidSearch::for_k(k + usize::from(a.ignore_identical_ids && k < bank.docs())),
                        "build_seconds": side.build_seconds, "open_or_build_s": index_s,
                        "search_s": t_s.elapsed().as_secs_f64(),
                    });
                    hits
                }
            };
            let search_s = index_meta["search_s"].as_f64().unwrap_or(0.0);
            (
                hits,
                k,
                bank.docs(),
                "maxsim",
                qv.truncated,
                query_s,
                search_s,
            )
        }
    };
    let text = beir.trec(&hits, "tandem");
    let scores = beir.metrics(&beir.run(&hits)?)?;
    let metrics: serde_json::Map<String, Value> =
        scores.iter().map(|(m, v)| (m.clone(), json!(v))).collect();
    tandem_io::write_bytes_atomic(&out, overwrite, &text)?;
    let summary = json!({
        "tool": "tandem beir",
        "dataset": a.data,
        "split": a.split,
        "queries": qsel.len(),
        "documents": docs,
        "metrics": metrics,
        "model": { "path": a.model.model, "fingerprint": towers.as_ref().map_or_else(|| embedder.fingerprint().to_string(), Towers::fingerprint), "model_type": embedder.model_type(), "max_length": embedder.max_len(), "separate_towers": towers.as_ref().is_some_and(Towers::separate) },
        "settings": settings,
        "metric": metric,
        "index": index_meta,
        "k": k,
        "ignore_identical_ids": a.ignore_identical_ids,
        "query_prompt": query_prompt,
        "doc_prompt": doc_prompt,
        "corpus_cache": { "path": bank_path, "reused": cached },
        "run": out,
        "queries_truncated": queries_truncated,
        "seconds": { "corpus": corpus_s, "queries": query_s, "search": search_s, "total": t0.elapsed().as_secs_f64() },
    });
    tandem_io::write_bytes_atomic(
        &meta,
        overwrite,
        serde_json::to_string_pretty(&summary)?.as_bytes(),
    )?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        let mut o = std::io::stdout().lock();
        writeln!(
            o,
            "{name} ({} split): {} queries, {} documents, {}",
            a.split,
            qsel.len(),
            docs,
            embedder.model_type()
        )?;
        for (m, v) in &scores {
            writeln!(o, "  {m:<12} {v:.4}")?;
        }
        writeln!(o, "run: {}  metrics: {}", out.display(), meta.display())?;
    }
    Ok(())
}
