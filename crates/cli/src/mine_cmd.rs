//! `tandem mine`: hard negatives for (query, positive) training data, mined
//! with a model as sentence-transformers' `mine_hard_negatives` mines them,
//! written as JSON lines that `tandem train --task dense` reads. A dense
//! model scores by cosine, a ColBERT by MaxSim (the score flags are then
//! in MaxSim units).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::bail;
use clap::{Args, ValueEnum};
use serde_json::{json, Value};
use tandem_io::Overwrite;
use tandem_text::beir::Beir;
use tandem_text::mine::{candidates, MineSettings, Ranker, Sampling};
use tandem_text::{job, read_examples, Corpus, Embedder, Interner, PairFormat, Side, Tokenize};

use crate::embed_cmd::ModelArgs;

/// What each output line holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// One line per (query, positive, negative): `query`, `positive`,
    /// `negative`.
    Triplet,
    /// One line per (query, positive) with `negative_1` ... `negative_N`;
    /// pairs with fewer than N negatives are left out.
    NTuple,
    /// One FlagEmbedding line per (query, positive) with at least one
    /// negative: `query`, `pos`, `neg`, `pos_scores`, `neg_scores` (the
    /// mining model's cosines, or MaxSim for a ColBERT: data for MarginMSE
    /// or KL distillation).
    Flag,
}

/// Flags of `tandem mine`.
#[derive(Debug, Args)]
pub struct MineArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Training data: a BEIR folder, JSON lines (JSONL, Tevatron,
    /// FlagEmbedding) or MS MARCO triples; its (query, positive) pairs are
    /// mined (negatives it already has are not kept).
    #[arg(long)]
    pub data: PathBuf,
    /// The data's format.
    #[arg(long, default_value = "auto")]
    pub format: String,
    /// The qrels split of a BEIR folder.
    #[arg(long, default_value = "train")]
    pub split: String,
    /// Candidate negatives: a corpus file (JSON lines with `text` and an
    /// optional `title`, or plain lines) [default: a BEIR folder's
    /// corpus.jsonl; else the positives of the data, as
    /// sentence-transformers does]. The positives are always in it.
    #[arg(long)]
    pub corpus: Option<PathBuf>,
    /// The JSON lines to write; the settings and statistics go beside it as
    /// <stem>.mine.json.
    #[arg(long)]
    pub out: PathBuf,
    /// Candidates skipped at the top of the ranking (after the filters).
    #[arg(long, default_value_t = 0)]
    pub range_min: usize,
    /// Candidates considered per query [default: range_min plus
    /// num_negatives plus the most positives of a query, with 10 x
    /// num_negatives when a score or margin filter is set].
    #[arg(long)]
    pub range_max: Option<usize>,
    /// Drop candidates whose cosine (a ColBERT's MaxSim) to the query is
    /// above it.
    #[arg(long)]
    pub max_score: Option<f32>,
    /// Drop candidates whose cosine (a ColBERT's MaxSim) to the query is
    /// below it.
    #[arg(long)]
    pub min_score: Option<f32>,
    /// Drop candidates with cosine + margin > the query's lowest positive
    /// cosine (0 keeps negatives below every positive).
    #[arg(long)]
    pub absolute_margin: Option<f32>,
    /// Drop candidates with cosine > positive - |positive| x margin (0.05
    /// is NV-Retriever's TopK-PercPos 95%).
    #[arg(long)]
    pub relative_margin: Option<f32>,
    /// Negatives per query.
    #[arg(long, default_value_t = 3)]
    pub num_negatives: usize,
    /// The best candidates (top) or a uniform sample of them (random).
    #[arg(long, default_value = "top")]
    pub sampling: Sampling,
    /// The output lines' layout.
    #[arg(long, value_enum, default_value_t = OutputFormat::Triplet)]
    pub output_format: OutputFormat,
    /// Add `scores` ([positive, negatives...] cosines or MaxSim) to triplet and
    /// n-tuple lines.
    #[arg(long)]
    pub scores: bool,
    /// Query prompt [default: the model's "query" prompt, if any].
    #[arg(long)]
    pub query_prompt: Option<String>,
    /// Document prompt [default: the model's "document" or "passage"
    /// prompt, if any].
    #[arg(long)]
    pub doc_prompt: Option<String>,
    /// Seed of the random sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Replace an existing output.
    #[arg(long)]
    pub force: bool,
}

/// Quantiles and moments of `v`, as sentence-transformers prints them.
fn summary(v: &[f32]) -> Value {
    if v.is_empty() {
        return json!({ "count": 0 });
    }
    let mut s: Vec<f64> = v.iter().map(|&x| f64::from(x)).collect();
    s.sort_by(f64::total_cmp);
    let n = s.len() as f64;
    let mean = s.iter().sum::<f64>() / n;
    let std = (s.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0)).sqrt();
    // linear interpolation between closest ranks (torch.quantile's default)
    let q = |p: f64| {
        let at = p * (n - 1.0);
        let (lo, hi) = (at.floor() as usize, at.ceil() as usize);
        s[lo] + (s[hi] - s[lo]) * (at - lo as f64)
    };
    json!({
        "count": s.len(), "mean": mean, "median": q(0.5), "std": std,
        "min": s[0], "25%": q(0.25), "50%": q(0.5), "75%": q(0.75), "max": s[s.len() - 1],
    })
}

fn print_table(stats: &[(&str, &Value)]) {
    eprintln!(
        "{:<6} {:>14} {:>14} {:>14}",
        "Metric", stats[0].0, stats[1].0, stats[2].0
    );
    for key in [
        "count", "mean", "median", "std", "min", "25%", "50%", "75%", "max",
    ] {
        let cell = |v: &Value| match &v[key] {
            Value::Number(n) if key == "count" => n.to_string(),
            Value::Number(n) => format!("{:.4}", n.as_f64().unwrap_or(f64::NAN)),
            _ => String::new(),
        };
        eprintln!(
            "{:<6} {:>14} {:>14} {:>14}",
            key,
            cell(stats[0].1),
            cell(stats[1].1),
            cell(stats[2].1)
        );
    }
}

/// The report file beside `out`: `<stem>.mine.json`.
fn report_path(out: &Path) -> PathBuf {
    out.with_extension("mine.json")
}

pub fn run(a: MineArgs) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let format: PairFormat = a.format.parse().map_err(anyhow::Error::msg)?;
    let report = report_path(&a.out);
    let mut inputs: Vec<&Path> = vec![&a.data, &a.model.model];
    if let Some(c) = &a.corpus {
        inputs.push(c);
    }
    job::check_outputs(
        &[a.out.clone(), report.clone()],
        &inputs,
        Overwrite::from_force(a.force),
    )?;
    let examples = read_examples(&a.data, format, &a.split)?;
    let corpus_file = match &a.corpus {
        Some(c) => Some(c.clone()),
        None if examples.format == PairFormat::Beir => {
            Some(Beir::paths(&a.data, &a.split)[0].clone())
        }
        None => None,
    };
    // a ColBERT ranks by MaxSim over its token vectors, a dense model by
    // cosine
    let model = match a.model.load_colbert(false)? {
        Some(c) => Ranker::Colbert(Box::new(c)),
        None => Ranker::Towers(Box::new(a.model.load_towers()?)),
    };
    let (encoder, tokenizer): (&Embedder, &dyn Tokenize) = match &model {
        Ranker::Towers(t) => (t.query(), t.as_ref()),
        Ranker::Colbert(c) => (c.embedder(), c.as_ref()),
    };
    let (query_prompt, doc_prompt) = match &model {
        Ranker::Towers(t) => t.prompts(a.query_prompt.as_deref(), a.doc_prompt.as_deref()),
        Ranker::Colbert(c) => c.prompts(a.query_prompt.as_deref(), a.doc_prompt.as_deref()),
    };

    // queries in first-appearance order, each with its positives; the
    // corpus first, then the positives it lacks (sentence-transformers'
    // `dict.fromkeys(corpus + positives)`)
    let (mut queries, mut docs) = (Interner::default(), Interner::default());
    if let Some(c) = &corpus_file {
        for t in Corpus::read(c, "text")?.texts {
            docs.id(&t);
        }
    }
    let mut positives: Vec<Vec<u32>> = Vec::new();
    for e in &examples.examples {
        let q = queries.id(&e.query);
        if q == positives.len() {
            positives.push(Vec::new());
        }
        for p in &e.positives {
            let d = docs.id(p) as u32;
            if !positives[q].contains(&d) {
                positives[q].push(d);
            }
        }
    }
    if docs.texts.len() < 2 {
        bail!(
            "{}: fewer than two distinct documents to mine from; pass --corpus FILE with candidate negatives",
            a.data.display()
        );
    }
    let max_positives = positives.iter().map(Vec::len).max().unwrap_or(1);
    let mut settings = MineSettings {
        range_min: a.range_min,
        range_max: 0,
        max_score: a.max_score,
        min_score: a.min_score,
        absolute_margin: a.absolute_margin,
        relative_margin: a.relative_margin,
        num_negatives: a.num_negatives,
        sampling: a.sampling,
    };
    settings.range_max = a
        .range_max
        .unwrap_or_else(|| settings.default_range_max(max_positives));
    if let Some(problem) = settings.problem() {
        bail!("{problem}; change --num-negatives, --range-min or --range-max");
    }

    let tokenize = |side: Side, texts: &[String], prompt: &str| -> anyhow::Result<Vec<Vec<u32>>> {
        let prompted: Vec<String> = texts.iter().map(|t| format!("{prompt}{t}")).collect();
        Ok(tokenizer
            .tokenize_side(side, &prompted)?
            .into_iter()
            .map(|t| t.0)
            .collect())
    };
    let q_tokens = tokenize(Side::Query, &queries.texts, &query_prompt)?;
    let d_tokens = tokenize(Side::Document, &docs.texts, &doc_prompt)?;
    eprintln!(
        "mine: {} queries ({} pairs), {} candidate documents, range {}..{}, {} negatives ({}, {})",
        q_tokens.len(),
        positives.iter().map(Vec::len).sum::<usize>(),
        d_tokens.len(),
        settings.range_min,
        settings.range_max,
        settings.num_negatives,
        settings.sampling,
        if model.is_colbert() {
            "MaxSim scores"
        } else {
            "cosine scores"
        }
    );
    let t_embed = Instant::now();
    let bar = tandem_io::progress((q_tokens.len() + d_tokens.len()) as u64, "embed");
    let cand = candidates(
        &model,
        &q_tokens,
        &d_tokens,
        &positives,
        settings.range_max,
        |n| bar.inc(n as u64),
    )?;
    bar.finish_and_clear();
    let embed_s = t_embed.elapsed().as_secs_f64();

    let (negatives, skipped) = settings.select_all(&cand, a.seed);
    let (mut pos_scores, mut neg_scores, mut diffs) = (Vec::new(), Vec::new(), Vec::new());
    let (mut lines, mut short) = (0usize, 0usize);
    let mut out_text = Vec::new();
    for (q, (ps, negs)) in positives.iter().zip(&negatives).enumerate() {
        for (&p, &ps_score) in ps.iter().zip(&cand.positive_scores[q]) {
            pos_scores.push(ps_score);
            neg_scores.extend(negs.iter().map(|h| h.1));
            diffs.extend(negs.iter().map(|h| ps_score - h.1));
            if negs.len() < settings.num_negatives {
                short += 1;
            }
            let (query, positive) = (&queries.texts[q], &docs.texts[p as usize]);
            let text = |h: &(u32, f32)| docs.texts[h.0 as usize].as_str();
            // fields in order, as sentence-transformers' columns
            let mut rows: Vec<Vec<(String, Value)>> = Vec::new();
            let head = || vec![("query".to_string(), json!(query))];
            let scores = |negs: &[(u32, f32)]| {
                let mut s = vec![ps_score];
                s.extend(negs.iter().map(|h| h.1));
                ("scores".to_string(), json!(s))
            };
            match a.output_format {
                OutputFormat::Triplet => {
                    for h in negs {
                        let mut row = head();
                        row.push(("positive".into(), json!(positive)));
                        row.push(("negative".into(), json!(text(h))));
                        if a.scores {
                            row.push(scores(std::slice::from_ref(h)));
                        }
                        rows.push(row);
                    }
                }
                OutputFormat::NTuple if negs.len() == settings.num_negatives => {
                    let mut row = head();
                    row.push(("positive".into(), json!(positive)));
                    for (i, h) in negs.iter().enumerate() {
                        row.push((format!("negative_{}", i + 1), json!(text(h))));
                    }
                    if a.scores {
                        row.push(scores(negs));
                    }
                    rows.push(row);
                }
                OutputFormat::NTuple => {}
                OutputFormat::Flag if !negs.is_empty() => {
                    let mut row = head();
                    row.push(("pos".into(), json!([positive])));
                    row.push((
                        "neg".into(),
                        json!(negs.iter().map(text).collect::<Vec<_>>()),
                    ));
                    row.push(("pos_scores".into(), json!([ps_score])));
                    row.push((
                        "neg_scores".into(),
                        json!(negs.iter().map(|h| h.1).collect::<Vec<_>>()),
                    ));
                    rows.push(row);
                }
                OutputFormat::Flag => {}
            }
            for row in rows {
                out_text.push(b'{');
                for (i, (k, v)) in row.iter().enumerate() {
                    if i > 0 {
                        out_text.push(b',');
                    }
                    serde_json::to_writer(&mut out_text, k)?;
                    out_text.push(b':');
                    serde_json::to_writer(&mut out_text, v)?;
                }
                out_text.extend_from_slice(b"}\n");
                lines += 1;
            }
        }
    }
    if lines == 0 {
        bail!(
            "{}: no negative passed the filters for any query; widen --range-max or loosen the score and margin filters",
            a.data.display()
        );
    }
    let overwrite = Overwrite::from_force(a.force);
    tandem_io::write_atomic(&a.out, overwrite, |w| w.write_all(&out_text))?;

    let (sp, sn, sd) = (summary(&pos_scores), summary(&neg_scores), summary(&diffs));
    print_table(&[("Positive", &sp), ("Negative", &sn), ("Difference", &sd)]);
    let candidates_total: usize = cand.hits.iter().map(Vec::len).sum();
    for (name, n) in [
        ("absolute_margin", skipped.absolute_margin),
        ("relative_margin", skipped.relative_margin),
        ("max_score", skipped.max_score),
        ("min_score", skipped.min_score),
    ] {
        if n > 0 {
            eprintln!(
                "Skipped {n} potential negatives ({:.2}%) due to the {name}.",
                100.0 * n as f64 / candidates_total.max(1) as f64
            );
        }
    }
    if short > 0 {
        eprintln!(
            "Could not find enough negatives for {short} pairs ({:.2}%); widen --range-max or loosen the filters to find more.",
            100.0 * short as f64 / pos_scores.len().max(1) as f64
        );
    }
    let doc = json!({
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "tandem": env!("CARGO_PKG_VERSION"),
        "model": a.model.model, "model_fingerprint": encoder.fingerprint(),
        "scores_are": if model.is_colbert() { "maxsim" } else { "cosine" },
        "data": a.data, "format": examples.format.name(), "split": a.split,
        "corpus": corpus_file,
        "settings": {
            "range_min": settings.range_min, "range_max": settings.range_max,
            "max_score": settings.max_score, "min_score": settings.min_score,
            "absolute_margin": settings.absolute_margin, "relative_margin": settings.relative_margin,
            "num_negatives": settings.num_negatives, "sampling": settings.sampling.to_string(),
            "output_format": format!("{:?}", a.output_format).to_lowercase(),
            "query_prompt": query_prompt, "doc_prompt": doc_prompt, "seed": a.seed,
            "batch": a.model.batch, "max_length": encoder.max_len(), "precision": a.model.precision.name(),
        },
        "counts": {
            "queries": q_tokens.len(), "pairs": pos_scores.len(), "documents": d_tokens.len(),
            "lines": lines, "pairs_short_of_negatives": short,
        },
        "skipped": {
            "absolute_margin": skipped.absolute_margin, "relative_margin": skipped.relative_margin,
            "max_score": skipped.max_score, "min_score": skipped.min_score,
        },
        "scores": { "positive": sp, "negative": sn, "difference": sd },
        "seconds": { "embed_and_search": embed_s, "total": t0.elapsed().as_secs_f64() },
    });
    let mut text = serde_json::to_string_pretty(&doc)?;
    text.push('\n');
    tandem_io::write_bytes_atomic(&report, overwrite, text.as_bytes())?;
    eprintln!(
        "mine: {lines} lines -> {} ({:.1} s; report {})",
        a.out.display(),
        t0.elapsed().as_secs_f64(),
        report.display()
    );
    Ok(())
}
