//! `tandem data from-text`: raw documents to a next-vector dataset. Each
//! document is split into sentences (or chunks of N tokens), the pieces are
//! written as a sentences file (`{"doc_id", "idx", "text"}` per line) in a
//! work folder `<out>.partial/`, embedded there with the resumable
//! embedding job of `tandem embed`, and the dataset is written from that
//! sentences file and its bank by the code behind `tandem data
//! from-sentences` (the bank copied into the dataset), with `from-text.json`
//! (settings, counts, timing) beside `dataset.json`.
//!
//! Crash-only: a killed run resumes when rerun with the same flags (the
//! work folder records them); the dataset's files are identical to an
//! uninterrupted run's. The work folder is removed once the dataset is in
//! place.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use serde::Serialize;
use serde_json::{json, Value};
use tandem_bank::{Bank, Dtype, Overwrite};
use tandem_data::{BankSource, DatasetParts, Provenance, Split, DEFAULT_CONTEXT};
use tandem_text::job::{self, EmbedJob};
use tandem_text::split::{self, Chunker};
use tandem_text::{Corpus, Ids};

use crate::embed_cmd::{BankDtype, ModelArgs, PromptArgs};

/// Flags of `tandem data from-text`.
#[derive(Debug, Args)]
pub struct FromTextArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Documents: JSON lines (BEIR corpus lines become title + " " + text)
    /// or plain lines (one document a line).
    #[arg(long)]
    pub input: PathBuf,
    /// Output dataset directory; the work folder `<out>.partial/` is used
    /// while it is built.
    #[arg(long)]
    pub out: PathBuf,
    /// The text field of JSON lines.
    #[arg(long, default_value = "text")]
    pub field: String,
    /// The document id field of JSON lines [default: doc_id, else _id or
    /// id, else the line number from 0].
    #[arg(long)]
    pub id_field: Option<String>,
    /// Cut documents into chunks of N model tokens instead of sentences.
    #[arg(long, value_name = "N")]
    pub chunk_tokens: Option<usize>,
    /// Context length L recorded in the dataset.
    #[arg(long, default_value_t = DEFAULT_CONTEXT)]
    pub context: usize,
    #[command(flatten)]
    pub prompt: PromptArgs,
    /// Element type of the bank.
    #[arg(long, value_enum, default_value = "float32")]
    pub dtype: BankDtype,
    /// Replace an existing dataset at --out (and discard an unfinished run
    /// of other settings in `<out>.partial/`).
    #[arg(long)]
    pub force: bool,
}

/// The work folder's files.
struct Work {
    dir: PathBuf,
}

impl Work {
    fn job(&self) -> PathBuf {
        self.dir.join("job.json")
    }
    fn sentences(&self) -> PathBuf {
        self.dir.join("sentences.jsonl")
    }
    fn bank(&self) -> PathBuf {
        self.dir.join("sentences.npy")
    }
    /// Present once a run got as far as writing the dataset: its output
    /// check passed, so whatever is at `--out` now may be replaced.
    fn writing(&self) -> PathBuf {
        self.dir.join("writing-dataset")
    }
    /// Where a finished run's work folder goes to be deleted.
    fn trash(&self) -> PathBuf {
        let mut s = self.dir.as_os_str().to_owned();
        s.push(".done");
        PathBuf::from(s)
    }
}

/// One line of the sentences file.
#[derive(Serialize)]
struct SentenceLine<'a> {
    doc_id: &'a str,
    idx: usize,
    text: &'a str,
}

/// The pieces of every document, counted.
struct Pieces {
    /// The sentences file's bytes.
    jsonl: Vec<u8>,
    /// Documents with at least one piece.
    kept: usize,
    /// Pieces in all.
    pieces: usize,
    /// Ids of the documents without a piece.
    skipped: Vec<String>,
}

fn cut(
    corpus: &Corpus,
    ids: &[(String, usize)],
    chunker: Option<(&Chunker, usize)>,
) -> anyhow::Result<Pieces> {
    let mut p = Pieces {
        jsonl: Vec::new(),
        kept: 0,
        pieces: 0,
        skipped: Vec::new(),
    };
    for (text, (id, _)) in corpus.texts.iter().zip(ids) {
        let pieces = match chunker {
            Some((c, n)) => c.chunks(text, n)?,
            None => split::sentences(text),
        };
        if pieces.is_empty() {
            p.skipped.push(id.clone());
            continue;
        }
        p.kept += 1;
        p.pieces += pieces.len();
        for (idx, text) in pieces.into_iter().enumerate() {
            serde_json::to_writer(
                &mut p.jsonl,
                &SentenceLine {
                    doc_id: id,
                    idx,
                    text,
                },
            )?;
            p.jsonl.push(b'\n');
        }
    }
    Ok(p)
}

/// Run `tandem data from-text`.
pub fn run(a: FromTextArgs) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let overwrite = Overwrite::from_force(a.force);
    if a.chunk_tokens == Some(0) {
        bail!("--chunk-tokens 0: pass at least 1");
    }
    if a.context == 0 {
        bail!("--context 0: pass 1 or more");
    }
    let work = Work {
        dir: job::partial_dir(&a.out),
    };
    // an earlier run of this job that reached the dataset passed this check
    if !work.writing().is_file() {
        tandem_data::check_output_dir(&a.out, overwrite)?;
    }
    let ids = match a.id_field.as_deref() {
        Some(f) => Ids::Given(f),
        None => Ids::FirstOf(&["doc_id", "_id", "id"]),
    };
    let (corpus, lines) = Corpus::read_with(&a.input, &a.field, ids)?;
    if corpus.is_empty() {
        bail!(
            "{}: no documents; give a file with one JSON object (or text) per line",
            a.input.display()
        );
    }
    let ids: Vec<(String, usize)> = corpus.ids.iter().cloned().zip(lines).collect();
    let mut first_line: HashMap<&str, usize> = HashMap::new();
    for (id, line) in &ids {
        if let Some(first) = first_line.insert(id.as_str(), *line) {
            bail!(
                "{}: line {line}: document id {id:?} already appeared on line {first}; document ids must be unique (pass --id-field to pick the id field)",
                a.input.display()
            );
        }
    }
    // a model with two towers embeds documents with its document tower
    let embedder = a.model.load(Some(tandem_text::Tower::Document))?;
    let prompt = a.prompt.resolve(&embedder)?;
    let chunker = match a.chunk_tokens {
        Some(n) => {
            if n + 2 > embedder.max_len() {
                bail!(
                    "--chunk-tokens {n}: with 2 special tokens a chunk needs {} tokens, but the model takes {}; pass --chunk-tokens {} or less (or a larger --max-length)",
                    n + 2,
                    embedder.max_len(),
                    embedder.max_len().saturating_sub(2)
                );
            }
            Some(Chunker::from_file(&embedder.dir().tokenizer)?)
        }
        None => None,
    };
    let splitter = match a.chunk_tokens {
        Some(n) => format!("chunks of {n} tokens (model tokenizer, no special tokens)"),
        None => split::SENTENCE_SPLITTER.to_string(),
    };
    // split (cheap and deterministic: redone on resume)
    let t_split = Instant::now();
    let pieces = cut(&corpus, &ids, chunker.as_ref().zip(a.chunk_tokens))?;
    if pieces.pieces == 0 {
        bail!(
            "{}: none of its {} documents has a sentence (field {:?}); check --field",
            a.input.display(),
            corpus.len(),
            a.field
        );
    }
    let split_s = t_split.elapsed().as_secs_f64();
    let dtype: Dtype = a.dtype.into();
    let input_fingerprint = job::file_fingerprint(&a.input)?;

    // the job: everything that shapes the output
    let settings = json!({
        "splitter": splitter,
        "chunk_tokens": a.chunk_tokens,
        "field": a.field,
        "id_field": a.id_field,
        "prompt": prompt,
        "dtype": dtype.name(),
        "batch": a.model.batch,
        "precision": a.model.precision.name(),
    });
    // paths left out: the same files reached another way resume the run
    let job_doc = json!({
        "tool": "tandem data from-text",
        "input_fingerprint": input_fingerprint,
        "model": { "fingerprint": embedder.fingerprint(), "max_length": embedder.max_len() },
        "settings": settings,
    });
    let job_text = serde_json::to_string_pretty(&job_doc)?;
    let trash = work.trash();
    if trash.exists() {
        std::fs::remove_dir_all(&trash)
            .with_context(|| format!("{}: cannot remove", trash.display()))?;
    }
    if work.dir.is_dir() {
        let before = std::fs::read_to_string(work.job()).unwrap_or_default();
        if before != job_text {
            if !a.force {
                bail!(
                    "{}: holds an unfinished from-text run of another input, model or settings; rerun with the same flags to resume it, or pass --force (or delete that folder) to start over",
                    work.dir.display()
                );
            }
            std::fs::remove_dir_all(&work.dir)
                .with_context(|| format!("{}: cannot remove", work.dir.display()))?;
        } else {
            eprintln!("resuming the unfinished run in {}", work.dir.display());
        }
    }
    if !work.dir.is_dir() {
        std::fs::create_dir_all(&work.dir).with_context(|| {
            format!(
                "{}: cannot create the work folder; check that its parent is writable",
                work.dir.display()
            )
        })?;
        tandem_io::write_bytes_atomic(&work.job(), Overwrite::Allow, job_text.as_bytes())?;
    }

    let t_sentences = Instant::now();
    let sentences_path = work.sentences();
    if std::fs::read(&sentences_path).ok().as_deref() != Some(&pieces.jsonl[..]) {
        tandem_io::write_bytes_atomic(&sentences_path, Overwrite::Allow, &pieces.jsonl)?;
    }
    let docs = tandem_data::sentences::read_sentence_docs(&sentences_path)?;
    let split_s = split_s + t_sentences.elapsed().as_secs_f64();

    // embed, resumably
    let bank_path = work.bank();
    let sidecar_path = job::sidecar_path(&bank_path);
    let side: Value = match std::fs::read_to_string(&sidecar_path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
    {
        // written last: the bank and its ids are complete
        Some(side) => {
            let leftover = job::partial_dir(&bank_path);
            if leftover.exists() {
                std::fs::remove_dir_all(&leftover)
                    .with_context(|| format!("{}: cannot remove", leftover.display()))?;
            }
            side
        }
        None => {
            let to_embed = Corpus {
                ids: docs.ids.clone(),
                texts: docs.texts.clone(),
            };
            let sentences_fingerprint = job::file_fingerprint(&sentences_path)?;
            let mut embed_settings =
                json!({ "batch": a.model.batch, "precision": a.model.precision.name() });
            embed_settings["from_text"] = settings.clone();
            EmbedJob {
                embedder: &embedder,
                corpus: &to_embed,
                input: &sentences_path,
                input_fingerprint: &sentences_fingerprint,
                settings: embed_settings,
                prompt: &prompt,
                shard: None,
                dtype,
                out: &bank_path,
                overwrite: Overwrite::Allow,
                progress: true,
                colbert: None,
            }
            .run()?
            .sidecar
        }
    };

    // the dataset, by the code behind from-sentences
    let t_write = Instant::now();
    let bank = Bank::open(&bank_path, &tandem_bank::OpenOptions::default())?;
    if bank.rows() != docs.ids.len() {
        bail!(
            "{}: {} rows for {} sentences; delete {} and rerun",
            bank_path.display(),
            bank.rows(),
            docs.ids.len(),
            work.dir.display()
        );
    }
    let resume_write = work.writing().is_file();
    tandem_io::write_bytes_atomic(&work.writing(), Overwrite::Allow, b"")?;
    let params = json!({
        "split": "document ordinal % 10: 0 test, 1 val, else train",
        "splitter": splitter,
        "chunk_tokens": a.chunk_tokens,
        "field": a.field,
        "id_field": a.id_field,
        "prompt": prompt,
        "model_fingerprint": embedder.fingerprint(),
        "max_length": embedder.max_len(),
        "precision": a.model.precision.name(),
        "batch": a.model.batch,
        "input_fingerprint": input_fingerprint,
    });
    let provenance = Provenance {
        builder: "from-text".to_string(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        tool: tandem_data::TOOL.to_string(),
        seed: None,
        sources: vec![
            a.input.display().to_string(),
            a.model.model.display().to_string(),
        ],
        params,
    };
    let parts = DatasetParts {
        bank: BankSource::Write {
            vectors: bank.vectors(),
            dim: bank.dim(),
        },
        rows: bank.rows(),
        dim: bank.dim(),
        dtype: bank.dtype().name(),
        ids: Some(&docs.ids),
        texts: Some(&docs.texts),
        sequences: &docs.sequences,
        context: a.context,
        provenance,
    };
    let manifest = tandem_data::write_dataset(
        &a.out,
        if resume_write {
            Overwrite::Allow
        } else {
            overwrite
        },
        parts,
    )?;
    drop(bank);
    let write_s = t_write.elapsed().as_secs_f64();

    let truncated = side["truncated"].as_u64().unwrap_or(0);
    let report = json!({
        "tool": "tandem data from-text",
        "version": env!("CARGO_PKG_VERSION"),
        "input": { "path": a.input, "fingerprint": input_fingerprint, "field": a.field, "id_field": a.id_field },
        "model": {
            "path": a.model.model,
            "fingerprint": embedder.fingerprint(),
            "model_type": embedder.model_type(),
            "dim": embedder.dim(),
            "max_length": embedder.max_len(),
        },
        "settings": {
            "splitter": splitter,
            "chunk_tokens": a.chunk_tokens,
            "prompt": prompt,
            "dtype": dtype.name(),
            "batch": a.model.batch,
            "precision": a.model.precision.name(),
            "context": a.context,
        },
        "counts": {
            "documents": corpus.len(),
            "sequences": pieces.kept,
            "sentences": pieces.pieces,
            "skipped": pieces.skipped.len(),
            "skipped_ids": pieces.skipped.iter().take(20).collect::<Vec<_>>(),
            "truncated": truncated,
            "splits": manifest.splits,
        },
        "timing": {
            "split_seconds": split_s,
            "embed_seconds": side["seconds"],
            "resumed_rows": side["resumed_rows"],
            "write_seconds": write_s,
            "total_seconds": t0.elapsed().as_secs_f64(),
        },
    });
    let report_path = a.out.join("from-text.json");
    let mut text = serde_json::to_string_pretty(&report)?;
    text.push('\n');
    tandem_io::write_bytes_atomic(&report_path, Overwrite::Allow, text.as_bytes())?;
    // out of the way in one step, so that a kill cannot leave half a work folder
    std::fs::rename(&work.dir, &trash)
        .with_context(|| format!("{}: cannot remove the work folder", work.dir.display()))?;
    std::fs::remove_dir_all(&trash)
        .with_context(|| format!("{}: cannot remove", trash.display()))?;

    println!(
        "wrote {}: {} documents ({} skipped without a sentence) -> {} {}, bank {} x {} {} ({} truncated to {} tokens), context {}",
        a.out.display(),
        corpus.len(),
        pieces.skipped.len(),
        pieces.pieces,
        if a.chunk_tokens.is_some() { "chunks" } else { "sentences" },
        manifest.rows,
        manifest.dim,
        manifest.dtype,
        truncated,
        embedder.max_len(),
        manifest.context
    );
    for s in Split::ALL {
        let c = manifest.splits.get(s);
        println!(
            "  {:<5} {:>8} sequences {:>9} examples",
            s.name(),
            c.sequences,
            c.examples
        );
    }
    Ok(())
}
