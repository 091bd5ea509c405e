//! Embedding a corpus into a bank file, crash-only: the rows are embedded
//! in fixed blocks, each block saved atomically in `<out>.partial/` as it
//! finishes, so a killed run resumes at the first missing block when rerun
//! with the same settings; the final file is assembled from the blocks and
//! is byte-identical to an uninterrupted run's. `--shard i/n` embeds one
//! contiguous part of the rows; [`merge`] joins the parts. With a ColBERT
//! the bank is a multi-vector one (the documents' token vectors, their
//! offsets beside them: [`tandem_bank::MultiBank`]), with the same blocks,
//! resume and shards.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tandem_bank::Dtype;
use tandem_io::Overwrite;

use crate::{ColBert, ColbertConfig, Corpus, Embedder, Side, TextError};

/// Rows per saved block.
pub const BLOCK: usize = 1024;

/// Part `index` (from 0) of `count` equal contiguous parts of the rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// Which part, `0..count`.
    pub index: usize,
    /// How many parts.
    pub count: usize,
}

impl Shard {
    /// Parses `i/n` (`0 <= i < n`).
    pub fn parse(s: &str) -> Result<Shard, String> {
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| format!("--shard {s:?}: write it as i/n, e.g. 0/4"))?;
        let (index, count): (usize, usize) = match (i.trim().parse(), n.trim().parse()) {
            (Ok(i), Ok(n)) => (i, n),
            _ => {
                return Err(format!(
                    "--shard {s:?}: write it as i/n with whole numbers, e.g. 0/4"
                ))
            }
        };
        if count == 0 {
            return Err(format!("--shard {s:?}: n must be at least 1"));
        }
        if index >= count {
            return Err(format!(
                "--shard {s:?}: i must be below n (0/{count} to {}/{count})",
                count - 1
            ));
        }
        Ok(Shard { index, count })
    }

    /// The rows of this part of `total`: whole blocks of [`BLOCK`] rows, so
    /// that every row is embedded in the same batch company as in an
    /// unsharded run (the merged bank is then byte-identical to it). Refused
    /// when the part would hold no block.
    pub fn rows(self, total: usize) -> Result<std::ops::Range<usize>, String> {
        let blocks = total.div_ceil(BLOCK);
        if self.count > blocks {
            return Err(format!(
                "--shard {}/{}: the input's {total} texts make {blocks} block(s) of {BLOCK}, and a shard holds whole blocks; use at most {blocks} shard(s)",
                self.index, self.count
            ));
        }
        let at = |i: usize| (i * blocks / self.count * BLOCK).min(total);
        Ok(at(self.index)..at(self.index + 1))
    }
}

/// What to embed and where.
#[derive(Debug)]
pub struct EmbedJob<'a> {
    /// The model.
    pub embedder: &'a Embedder,
    /// The whole input.
    pub corpus: &'a Corpus,
    /// The input file (for the sidecar).
    pub input: &'a Path,
    /// Its fingerprint (see [`file_fingerprint`]).
    pub input_fingerprint: &'a str,
    /// The settings that shape the output beyond the model (prompt, field,
    /// precision, ...), recorded and compared on resume.
    pub settings: Value,
    /// Prefixed to every text.
    pub prompt: &'a str,
    /// The part of the rows to embed (all when `None`).
    pub shard: Option<Shard>,
    /// The bank's element type.
    pub dtype: Dtype,
    /// The bank file (`.npy`).
    pub out: &'a Path,
    /// Whether existing outputs may be replaced.
    pub overwrite: Overwrite,
    /// Whether to draw a progress bar.
    pub progress: bool,
    /// A ColBERT (over `embedder`) and the side the texts are on: the bank
    /// is then a multi-vector bank, the texts' token vectors with their
    /// offsets ([`tandem_bank::MultiBank`]).
    pub colbert: Option<(&'a ColBert, Side)>,
}

/// What an embedding run did.
#[derive(Debug, Clone)]
pub struct EmbedReport {
    /// Rows in the output (documents; a multi-vector bank has `tokens`
    /// token rows for them).
    pub rows: usize,
    /// Token vectors written (multi-vector banks; `rows` otherwise).
    pub tokens: usize,
    /// Their width.
    pub dim: usize,
    /// Rows found already embedded in `<out>.partial/`.
    pub resumed: usize,
    /// Texts cut to the maximum length.
    pub truncated: usize,
    /// Empty texts (embedded all the same).
    pub empty: usize,
    /// Seconds spent embedding in this run.
    pub seconds: f64,
    /// The sidecar written.
    pub sidecar: Value,
}

/// `<out>` with its extension replaced by `ext` (`vectors.npy` ->
/// `vectors.ids.txt`).
pub fn beside(out: &Path, ext: &str) -> PathBuf {
    out.with_extension(ext)
}

/// The ids file written beside a bank.
pub fn ids_path(out: &Path) -> PathBuf {
    beside(out, "ids.txt")
}

/// The sidecar written beside a bank.
pub fn sidecar_path(out: &Path) -> PathBuf {
    beside(out, "json")
}

/// Where the blocks of an unfinished run wait.
pub fn partial_dir(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".partial");
    PathBuf::from(s)
}

/// SHA-256 of a file's bytes, hex.
pub fn file_fingerprint(path: &Path) -> Result<String, TextError> {
    let bytes = std::fs::read(path).map_err(|e| {
        TextError::file(
            path,
            format!("cannot read ({e})"),
            "check the path and its permissions",
        )
    })?;
    Ok(hex(&Sha256::digest(&bytes)))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> TextError {
    TextError::file(
        path,
        format!("cannot write ({e})"),
        "check the folder exists, is writable and has space",
    )
}

/// Refuses outputs that exist (without `overwrite`) or that would land on
/// an input: an input file itself, or anything inside an input directory
/// (a model directory); nothing is written when this fails.
pub fn check_outputs(
    outs: &[PathBuf],
    inputs: &[&Path],
    overwrite: Overwrite,
) -> Result<(), TextError> {
    let canon = |p: &Path| std::fs::canonicalize(p).ok();
    let inputs: Vec<(PathBuf, bool)> = inputs
        .iter()
        .filter_map(|i| canon(i).map(|c| (c, i.is_dir())))
        .collect();
    for out in outs {
        // the path it would have: its folder resolved, its name as given
        let target = match (out.parent(), out.file_name()) {
            (Some(p), Some(n)) => canon(if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            })
            .map(|d| d.join(n)),
            _ => None,
        };
        if let Some(t) = &target {
            if inputs
                .iter()
                .any(|(c, is_dir)| c == t || (*is_dir && t.starts_with(c)))
            {
                return Err(TextError::file(
                    out,
                    "this output would overwrite an input (or write into the model directory)",
                    "write the output somewhere else",
                ));
            }
        }
        if overwrite == Overwrite::Refuse && out.exists() {
            return Err(TextError::file(
                out,
                "exists",
                "pass --force to replace it, or choose another --out",
            ));
        }
    }
    Ok(())
}

impl EmbedJob<'_> {
    /// Embeds the rows, resuming from `<out>.partial/` when it holds blocks
    /// of the same job, then writes the bank, the ids file and the sidecar
    /// (with the model's fingerprint and the settings) and removes the
    /// blocks.
    pub fn run(&self) -> Result<EmbedReport, TextError> {
        let out = self.out;
        let (ids_file, sidecar_file) = (ids_path(out), sidecar_path(out));
        let dir = self.embedder.dir();
        let inputs: Vec<&Path> = vec![self.input, &dir.path, &dir.transformer];
        let total = self.corpus.len();
        let range = match self.shard {
            Some(s) => s
                .rows(total)
                .map_err(|e| TextError::file(self.input, e, "pass fewer shards"))?,
            None => 0..total,
        };
        let rows = range.len();
        let dim = self.embedder.dim();
        let job = json!({
            "model_fingerprint": self.embedder.fingerprint(),
            "input_fingerprint": self.input_fingerprint,
            "rows": [range.start, range.end],
            "total_rows": total,
            "block": BLOCK,
            "dim": dim,
            "max_length": self.embedder.max_len(),
            "prompt": self.prompt,
            "settings": self.settings,
            "colbert": self.colbert.map(|(c, side)| json!({"config": colbert_json(c.config()), "side": side.name()})),
        });
        let partial = partial_dir(out);
        let job_file = partial.join("job.json");
        // a folder killed before its job.json was written holds nothing to keep
        let started =
            partial.is_dir() && std::fs::read_dir(&partial).is_ok_and(|mut d| d.next().is_some());
        if started {
            let before: Value = std::fs::read_to_string(&job_file)
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or(Value::Null);
            if before != job {
                return Err(TextError::file(
                    &partial,
                    "holds an unfinished embedding of another model, input or settings",
                    "rerun with the same settings to resume it, or delete that folder to start over",
                ));
            }
        }
        // a run being resumed may replace what it wrote before it was killed
        let overwrite = if started {
            Overwrite::Allow
        } else {
            self.overwrite
        };
        let mut outs = vec![out.to_path_buf(), ids_file.clone(), sidecar_file.clone()];
        if self.colbert.is_some() {
            outs.push(tandem_bank::offsets_path(out));
        }
        check_outputs(&outs, &inputs, overwrite)?;
        if !started {
            std::fs::create_dir_all(&partial).map_err(|e| io_err(&partial, e))?;
            tandem_io::write_bytes_atomic(
                &job_file,
                Overwrite::Allow,
                serde_json::to_string_pretty(&job).unwrap().as_bytes(),
            )
            .map_err(|e| io_err(&job_file, e))?;
        }
        let blocks = rows.div_ceil(BLOCK);
        let block_file = |b: usize| partial.join(format!("block-{b:06}.f32"));
        // a multi-vector block's token count per document
        let counts_file = |b: usize| partial.join(format!("block-{b:06}.counts"));
        let block_rows =
            |b: usize| (range.start + b * BLOCK)..(range.start + ((b + 1) * BLOCK).min(rows));
        let read_counts = |b: usize| -> Option<Vec<usize>> {
            let bytes = std::fs::read(counts_file(b)).ok()?;
            (bytes.len() == block_rows(b).len() * 4).then(|| {
                bytes
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as usize)
                    .collect()
            })
        };
        let done: Vec<bool> = (0..blocks)
            .map(|b| {
                let vectors = match self.colbert {
                    None => block_rows(b).len(),
                    Some(_) => match read_counts(b) {
                        Some(c) => c.iter().sum(),
                        None => return false,
                    },
                };
                std::fs::metadata(block_file(b))
                    .is_ok_and(|m| m.len() as usize == vectors * dim * 4)
            })
            .collect();
        let resumed: usize = (0..blocks)
            .filter(|&b| done[b])
            .map(|b| block_rows(b).len())
            .sum();
        let bar = self.progress.then(|| {
            let bar = tandem_io::progress(rows as u64, "embed");
            bar.set_position(resumed as u64);
            bar.reset_eta();
            bar
        });
        let t0 = Instant::now();
        let (mut truncated, mut empty) = (0usize, 0usize);
        let tick = |n: usize| {
            if let Some(bar) = &bar {
                bar.inc(n as u64);
            }
        };
        for (b, &done) in done.iter().enumerate() {
            let r = block_rows(b);
            let with: Vec<String> = self.corpus.texts[r.clone()]
                .iter()
                .map(|t| format!("{}{t}", self.prompt))
                .collect();
            if done {
                // counted again from the tokens, which are cheap
                truncated += match self.colbert {
                    None => self
                        .embedder
                        .tokenize(&with)?
                        .iter()
                        .filter(|(_, t)| *t)
                        .count(),
                    Some((c, side)) => c
                        .tokenize(&with, side)?
                        .iter()
                        .filter(|t| t.truncated)
                        .count(),
                };
                empty += with.iter().filter(|t| t.trim().is_empty()).count();
                continue;
            }
            let vectors = match self.colbert {
                None => {
                    let e = self
                        .embedder
                        .embed(&self.corpus.texts[r], self.prompt, tick)?;
                    truncated += e.truncated;
                    empty += e.empty;
                    e.vectors
                }
                Some((c, side)) => {
                    let m = c.encode(&with, side, tick)?;
                    truncated += m.truncated;
                    empty += m.empty;
                    let counts: Vec<u8> = m
                        .offsets
                        .windows(2)
                        .flat_map(|w| ((w[1] - w[0]) as u32).to_le_bytes())
                        .collect();
                    let f = counts_file(b);
                    tandem_io::write_bytes_atomic(&f, Overwrite::Allow, &counts)
                        .map_err(|e| io_err(&f, e))?;
                    m.vectors
                }
            };
            let bytes: Vec<u8> = vectors.iter().flat_map(|v| v.to_le_bytes()).collect();
            let f = block_file(b);
            // the vectors last: a block is done once they are whole
            tandem_io::write_bytes_atomic(&f, Overwrite::Allow, &bytes)
                .map_err(|e| io_err(&f, e))?;
        }
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        let seconds = t0.elapsed().as_secs_f64();
        // a multi-vector bank's offsets, from the blocks' counts
        let offsets = match self.colbert {
            None => None,
            Some(_) => {
                let mut offsets = vec![0usize];
                for b in 0..blocks {
                    let counts = read_counts(b).ok_or_else(|| {
                        io_err(&counts_file(b), "the block's token counts are missing")
                    })?;
                    for n in counts {
                        offsets.push(offsets.last().expect("not empty") + n);
                    }
                }
                Some(offsets)
            }
        };
        let tokens = offsets
            .as_ref()
            .map_or(rows, |o| *o.last().expect("not empty"));
        tandem_bank::write_npy_streamed(out, tokens, dim, self.dtype, overwrite, |w| {
            for b in 0..blocks {
                let bytes = std::fs::read(block_file(b))?;
                let v: Vec<f32> = bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                w(&v)?;
            }
            Ok(())
        })
        .map_err(|e| io_err(out, e))?;
        if let Some(o) = &offsets {
            let p = tandem_bank::offsets_path(out);
            tandem_bank::write_offsets(&p, o, overwrite).map_err(|e| io_err(&p, e))?;
        }
        let mut ids = self.corpus.ids[range.clone()].join("\n");
        ids.push('\n');
        tandem_io::write_bytes_atomic(&ids_file, overwrite, ids.as_bytes())
            .map_err(|e| io_err(&ids_file, e))?;
        let embedded = rows - resumed;
        let sidecar = json!({
            "tool": "tandem embed",
            "version": env!("CARGO_PKG_VERSION"),
            "model": {
                "path": self.embedder.dir().path,
                "model_type": self.embedder.model_type(),
                "fingerprint": self.embedder.fingerprint(),
                "dim": dim,
                "max_length": self.embedder.max_len(),
                "pooling": self.embedder.dir().pooling.modes.iter().map(|m| m.name()).collect::<Vec<_>>(),
                "normalize": self.embedder.dir().normalize,
            },
            "input": { "path": self.input, "fingerprint": self.input_fingerprint, "rows": total },
            "rows": [range.start, range.end],
            "shard": self.shard.map(|s| json!({"index": s.index, "count": s.count})),
            "dtype": self.dtype.name(),
            "prompt": self.prompt,
            "settings": self.settings,
            "ids": ids_file.file_name().map(|n| n.to_string_lossy().into_owned()),
            "truncated": truncated,
            "empty": empty,
            "multi_vector": self.colbert.map(|(c, side)| json!({
                "tokens": tokens,
                "offsets": tandem_bank::offsets_path(out).file_name().map(|n| n.to_string_lossy().into_owned()),
                "colbert": colbert_json(c.config()),
                "side": side.name(),
            })),
            "resumed_rows": resumed,
            "seconds": seconds,
            "texts_per_second": if seconds > 0.0 { embedded as f64 / seconds } else { 0.0 },
        });
        tandem_io::write_bytes_atomic(
            &sidecar_file,
            overwrite,
            serde_json::to_string_pretty(&sidecar).unwrap().as_bytes(),
        )
        .map_err(|e| io_err(&sidecar_file, e))?;
        std::fs::remove_dir_all(&partial).map_err(|e| io_err(&partial, e))?;
        Ok(EmbedReport {
            rows,
            tokens,
            dim,
            resumed,
            truncated,
            empty,
            seconds,
            sidecar,
        })
    }
}

/// A ColBERT's settings as the sidecar records them.
fn colbert_json(c: &ColbertConfig) -> Value {
    json!({
        "query_prefix": c.query_prefix,
        "document_prefix": c.document_prefix,
        "query_length": c.query_length,
        "document_length": c.document_length,
        "attend_to_expansion_tokens": c.attend_to_expansion_tokens,
        "do_query_expansion": c.do_query_expansion,
        "skiplist_words": c.skiplist_words,
    })
}

/// Joins banks written by `tandem embed --shard i/n` of one job, given in
/// shard order, into one bank with its ids and sidecar. Refused unless they
/// come from the same model, input and settings and their rows follow each
/// other from the first row to the last.
pub fn merge(parts: &[PathBuf], out: &Path, overwrite: Overwrite) -> Result<Value, TextError> {
    if parts.is_empty() {
        return Err(TextError::file(
            out,
            "no parts to merge",
            "pass the shard banks in order",
        ));
    }
    let (ids_file, sidecar_file) = (ids_path(out), sidecar_path(out));
    let inputs: Vec<&Path> = parts.iter().map(PathBuf::as_path).collect();
    check_outputs(
        &[out.to_path_buf(), ids_file.clone(), sidecar_file.clone()],
        &inputs,
        overwrite,
    )?;
    let read = |p: &Path| -> Result<Value, TextError> {
        let sp = sidecar_path(p);
        let text = std::fs::read_to_string(&sp).map_err(|e| {
            TextError::file(
                &sp,
                format!("cannot read the sidecar of {} ({e})", p.display()),
                "merge banks written by tandem embed, with their .json and .ids.txt beside them",
            )
        })?;
        serde_json::from_str(&text)
            .map_err(|e| TextError::file(&sp, format!("not valid JSON ({e})"), "rerun that shard"))
    };
    let first = read(&parts[0])?;
    let same = ["model", "input", "dtype", "prompt", "settings"];
    let total = first["input"]["rows"].as_u64().unwrap_or(0) as usize;
    let mut next = 0usize;
    let mut banks = Vec::new();
    // a multi-vector bank's offsets, shifted part after part
    let multi = !first["multi_vector"].is_null();
    let mut offsets = vec![0usize];
    let mut ids = String::new();
    let (mut truncated, mut empty) = (0u64, 0u64);
    for p in parts {
        let side = read(p)?;
        for key in same {
            if side[key] != first[key] {
                return Err(TextError::file(
                    p,
                    format!("its {key} differs from that of {}", parts[0].display()),
                    "merge only the shards of one tandem embed job (same model, input and settings)",
                ));
            }
        }
        let (a, b) = (
            side["rows"][0].as_u64().unwrap_or(0) as usize,
            side["rows"][1].as_u64().unwrap_or(0) as usize,
        );
        if a != next {
            return Err(TextError::file(
                p,
                format!("holds rows {a}..{b} but the rows before it end at {next}"),
                "pass every shard, in order (0/n, 1/n, ...)",
            ));
        }
        next = b;
        let rerun =
            |e: tandem_bank::BankError| TextError::file(p, e.to_string(), "rerun that shard");
        let (bank, docs, part_ids) = if multi {
            let m = tandem_bank::MultiBank::open(p, Some(&ids_path(p))).map_err(rerun)?;
            let base = *offsets.last().expect("not empty");
            offsets.extend(m.offsets()[1..].iter().map(|o| base + o));
            let part_ids = m.ids().unwrap_or_default().to_vec();
            (m.into_tokens(), part_ids.len(), part_ids)
        } else {
            let bank = tandem_bank::Bank::open(
                p,
                &tandem_bank::OpenOptions {
                    key: None,
                    ids: Some(ids_path(p)),
                },
            )
            .map_err(rerun)?;
            let part_ids = bank.ids().unwrap_or_default().to_vec();
            (bank, part_ids.len(), part_ids)
        };
        if docs != b - a {
            return Err(TextError::file(
                p,
                format!("has {docs} rows, its sidecar says {}", b - a),
                "rerun that shard",
            ));
        }
        for id in &part_ids {
            ids.push_str(id);
            ids.push('\n');
        }
        truncated += side["truncated"].as_u64().unwrap_or(0);
        empty += side["empty"].as_u64().unwrap_or(0);
        banks.push(bank);
    }
    if next != total {
        return Err(TextError::file(
            parts.last().expect("not empty"),
            format!("the shards end at row {next} of {total}"),
            "pass every shard, in order (0/n, 1/n, ...)",
        ));
    }
    let dim = banks[0].dim();
    let dtype = banks[0].dtype();
    let rows_out = if multi {
        *offsets.last().expect("not empty")
    } else {
        total
    };
    tandem_bank::write_npy_streamed(out, rows_out, dim, dtype, overwrite, |w| {
        for bank in &banks {
            let mut at = 0;
            while at < bank.rows() {
                let end = (at + BLOCK).min(bank.rows());
                w(&bank.rows_f32(at, end))?;
                at = end;
            }
        }
        Ok(())
    })
    .map_err(|e| io_err(out, e))?;
    if multi {
        let p = tandem_bank::offsets_path(out);
        tandem_bank::write_offsets(&p, &offsets, overwrite).map_err(|e| io_err(&p, e))?;
    }
    tandem_io::write_bytes_atomic(&ids_file, overwrite, ids.as_bytes())
        .map_err(|e| io_err(&ids_file, e))?;
    let mut sidecar = first.clone();
    if multi {
        sidecar["multi_vector"]["tokens"] = json!(rows_out);
    }
    sidecar["rows"] = json!([0, total]);
    sidecar["shard"] = Value::Null;
    sidecar["truncated"] = json!(truncated);
    sidecar["empty"] = json!(empty);
    sidecar["ids"] = json!(ids_file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned()));
    sidecar["merged_from"] = json!(parts);
    tandem_io::write_bytes_atomic(
        &sidecar_file,
        overwrite,
        serde_json::to_string_pretty(&sidecar).unwrap().as_bytes(),
    )
    .map_err(|e| io_err(&sidecar_file, e))?;
    Ok(sidecar)
}
