//! `tandem index build` and `tandem search`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use tandem_bank::{Bank, OpenOptions};
use tandem_io::Overwrite;
use tandem_search::{Flat, Hit, Hnsw, HnswParams, Index, Metric, Precision, Scalar};

/// Queries searched per call (and per progress-bar tick); a multiple of the
/// exact search's query tile, so results never depend on it.
const QUERY_CHUNK: usize = 1024;

#[derive(Debug, Subcommand)]
pub enum IndexCmd {
    /// Build an index over a bank and save it: HNSW over a dense bank (a
    /// file, plus a `<out>.json` sidecar that ties it to the bank), PLAID
    /// over a multi-vector bank (a folder of arrays and `plaid.json`).
    Build(BuildArgs),
}

/// Flags of `tandem index build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The bank: .npy, .npz, .safetensors or .fvecs.
    #[arg(long)]
    pub bank: PathBuf,
    /// Array name inside an .npz or tensor name inside a .safetensors bank.
    #[arg(long)]
    pub key: Option<String>,
    /// Where to write the index: a file for HNSW (the sidecar goes to
    /// `<out>.json`), a folder for PLAID.
    #[arg(long)]
    pub out: PathBuf,
    /// HNSW: similarity, ip (inner product) or cosine [default: ip].
    #[arg(long)]
    pub metric: Option<Metric>,
    /// HNSW: connectivity (neighbours per node), at least 2 [default: 32].
    #[arg(long, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(2..))]
    pub m: Option<usize>,
    /// HNSW: candidate list size while inserting, at least 1 [default: 200].
    #[arg(long, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub ef_construction: Option<usize>,
    /// HNSW: element type stored in the graph, which the graph walk measures
    /// with: f32, f16, bf16 (half the memory and faster walks; AVX512-BF16
    /// where the CPU has it) or i8 (a quarter; AVX512-VNNI; measures angles,
    /// so with --metric ip every row must have the same length). Hits are
    /// always rescored exactly from the bank [default: the bank's dtype].
    #[arg(long)]
    pub scalar: Option<Scalar>,
    /// PLAID: bits per residual dimension, 2 or 4 [default: 4].
    #[arg(long, value_parser = clap::builder::RangedU64ValueParser::<u32>::new().range(2..=4))]
    pub nbits: Option<u32>,
    /// PLAID: k-means centroids [default: 2^floor(log2(16 sqrt(tokens))), PLAID's].
    #[arg(long)]
    pub centroids: Option<usize>,
    /// PLAID: k-means iterations [default: 4].
    #[arg(long)]
    pub kmeans_iters: Option<usize>,
    /// PLAID: seed of the k-means sample and starting centroids [default: 42].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Replace an existing index.
    #[arg(long)]
    pub force: bool,
    /// Worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

/// Flags of `tandem search`.
///
/// The exclude file has one line per query, in query order: whitespace-separated
/// bank row numbers (0-based), or doc ids when --ids is given, that must never
/// be returned for that query. An empty line excludes nothing.
#[derive(Debug, Args)]
#[command(
    after_help = "EXCLUDE FILE: one line per query, in query order, holding whitespace-separated \
bank row numbers (0-based) - or doc ids when --ids is given - that must never be returned for \
that query; an empty line excludes nothing.\n\nOUTPUTS: the TREC run (--out) and <out>.meta.json \
with the configuration, timings and queries/s.\n\nMULTI-VECTOR BANKS: when --bank holds a ColBERT's \
document token vectors (tandem embed with a ColBERT) and --queries its query token vectors \
(tandem embed --tower query), the search is exact MaxSim."
)]
pub struct SearchArgs {
    /// The bank: .npy, .npz, .safetensors or .fvecs.
    #[arg(long)]
    pub bank: PathBuf,
    /// Array name inside an .npz or tensor name inside a .safetensors bank.
    #[arg(long)]
    pub key: Option<String>,
    /// Doc ids of the bank, one per line (default: row numbers).
    #[arg(long)]
    pub ids: Option<PathBuf>,
    /// The queries, same formats as the bank, same dimension.
    #[arg(long)]
    pub queries: PathBuf,
    /// Array name inside an .npz or tensor name inside a .safetensors query file.
    #[arg(long)]
    pub query_key: Option<String>,
    /// Query ids, one per line (default: row numbers).
    #[arg(long)]
    pub query_ids: Option<PathBuf>,
    /// An index built by `tandem index build` (default: exact search): an
    /// HNSW file for a dense bank, a PLAID folder for a multi-vector one.
    #[arg(long)]
    pub index: Option<PathBuf>,
    /// HNSW candidate list size while searching (only with an HNSW --index):
    /// the graph walk gathers max(ef, k) candidates, all rescored exactly.
    #[arg(long, default_value_t = 256, requires = "index")]
    pub ef: usize,
    /// PLAID: centroids probed per query token [default: 4 / 8 / 16 for --k up
    /// to 10 / 100 / more].
    #[arg(long, requires = "index")]
    pub ncells: Option<usize>,
    /// PLAID: centroids that no query token scores this much with are left
    /// out of the first centroid interaction [default: 0.45 / 0.4 / 0.35].
    #[arg(long, requires = "index")]
    pub centroid_threshold: Option<f32>,
    /// PLAID: candidates kept by the pruned centroid interaction, half of
    /// them by the full one [default: 1024 / 4096 / max(8192, 8k)].
    #[arg(long, requires = "index")]
    pub ndocs: Option<usize>,
    /// PLAID: candidates the decompressed residuals keep for the exact
    /// MaxSim re-ranking [default: 3k].
    #[arg(long, requires = "index")]
    pub rerank: Option<usize>,
    /// Hits per query.
    #[arg(long, default_value_t = 100)]
    pub k: usize,
    /// Similarity: ip or cosine [default: ip; with --index, the index's metric].
    #[arg(long)]
    pub metric: Option<Metric>,
    /// Exact search's scan: auto (int8 with AVX512-VNNI where the CPU has it,
    /// then an exact float32 rescore; an int8 copy of the bank, one byte per
    /// number, is held beside it) or f32. The results are the same.
    #[arg(long, default_value_t = Precision::Auto, conflicts_with = "index")]
    pub precision: Precision,
    /// Rows (or doc ids with --ids) to exclude, one line per query; see below.
    #[arg(long)]
    pub exclude: Option<PathBuf>,
    /// The TREC run file to write.
    #[arg(long, default_value = "run.trec")]
    pub out: PathBuf,
    /// Run tag (last column of the run file).
    #[arg(long, default_value = "tandem")]
    pub tag: String,
    /// Replace existing output files.
    #[arg(long)]
    pub force: bool,
    /// Worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

/// Sets the size of rayon's global pool; must run before anything uses rayon.
pub(crate) fn set_threads(threads: usize) {
    if threads > 0 {
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    }
}

/// The number of worker threads rayon runs with (its documented rule).
pub(crate) fn worker_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Fails early, before any work, when an output exists and --force is absent.
pub(crate) fn refuse_existing(paths: &[&Path], force: bool) -> anyhow::Result<()> {
    for p in paths {
        if !force && p.exists() {
            return Err(tandem_io::WriteError::Exists(p.to_path_buf()).into());
        }
    }
    Ok(())
}

fn open_bank(path: &Path, key: &Option<String>, ids: &Option<PathBuf>) -> anyhow::Result<Bank> {
    if tandem_bank::is_multi_vector(path) {
        anyhow::bail!(
            "{}: a multi-vector bank (a ColBERT's token vectors, {} beside it), where a dense bank (one vector per document) is needed; search it by MaxSim with tandem search (queries from tandem embed --model COLBERT_DIR --tower query) or tandem beir --model COLBERT_DIR, or embed the corpus with a dense model",
            path.display(),
            tandem_bank::offsets_path(path).display()
        );
    }
    Ok(Bank::open(
        path,
        &OpenOptions {
            key: key.clone(),
            ids: ids.clone(),
        },
    )?)
}

pub fn run_index(cmd: IndexCmd) -> anyhow::Result<()> {
    let IndexCmd::Build(a) = cmd;
    set_threads(a.threads);
    if tandem_bank::is_multi_vector(&a.bank) {
        return crate::maxsim_cmd::run_index(a);
    }
    for (given, flag) in [
        (a.nbits.is_some(), "--nbits"),
        (a.centroids.is_some(), "--centroids"),
        (a.kmeans_iters.is_some(), "--kmeans-iters"),
        (a.seed.is_some(), "--seed"),
    ] {
        if given {
            bail!(
                "{flag} builds a PLAID index, for a multi-vector bank (a ColBERT's token vectors), but {} is dense; drop it (an HNSW index is built)",
                a.bank.display()
            );
        }
    }
    // Before minutes of building: can the index be saved there at all?
    Hnsw::check_save_path(&a.out, Overwrite::from_force(a.force))?;
    let bank = open_bank(&a.bank, &a.key, &None)?;
    let defaults = HnswParams::default();
    let params = HnswParams {
        connectivity: a.m.unwrap_or(defaults.connectivity),
        expansion_add: a.ef_construction.unwrap_or(defaults.expansion_add),
        scalar: a.scalar,
        ..defaults
    };
    let metric = a.metric.unwrap_or(Metric::InnerProduct);
    let mut hnsw = Hnsw::build(&bank, metric, params)
        .with_context(|| format!("building an index over {}", a.bank.display()))?;
    hnsw.save(&a.out, Overwrite::from_force(a.force))?;
    eprintln!(
        "index {}: {} rows, dim {}, metric {}, M {}, ef_construction {}, scalar {}, built in {:.1}s",
        a.out.display(),
        bank.rows(),
        bank.dim(),
        metric,
        params.connectivity,
        params.expansion_add,
        hnsw.sidecar().scalar,
        hnsw.sidecar().build_seconds
    );
    Ok(())
}

/// Reads the exclude file: one line per query of row numbers, or of doc ids
/// when the bank has ids.
fn read_exclusions(path: &Path, bank: &Bank, queries: usize) -> anyhow::Result<Vec<Vec<u32>>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read the exclude file", path.display()))?;
    let by_id: Option<HashMap<&str, u32>> = bank.ids().map(|ids| {
        ids.iter()
            .enumerate()
            .map(|(r, id)| (id.as_str(), r as u32))
            .collect()
    });
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() != queries {
        bail!(
            "{}: {} lines for {} queries; the exclude file needs one line per query (an empty line excludes nothing)",
            path.display(),
            lines.len(),
            queries
        );
    }
    lines
        .iter()
        .enumerate()
        .map(|(n, line)| {
            line.split_whitespace()
                .map(|tok| match &by_id {
                    Some(map) => map.get(tok).copied().with_context(|| {
                        format!("{}:{}: doc id {tok:?} is not in the bank's ids file; fix the id or drop it", path.display(), n + 1)
                    }),
                    None => match tok.parse::<u32>() {
                        Ok(r) if (r as usize) < bank.rows() => Ok(r),
                        _ => bail!(
                            "{}:{}: {tok:?} is not a bank row number (0..{}); give row numbers, or pass --ids to use doc ids",
                            path.display(),
                            n + 1,
                            bank.rows()
                        ),
                    },
                })
                .collect()
        })
        .collect()
}

/// Write one query's hits as TREC run lines, naming rows by the bank's doc ids.
/// What every search does first: the thread count, then the outputs
/// (refused when they exist, before any work) and `--k` checked. Returns
/// the meta file's path.
pub(crate) fn start(a: &SearchArgs) -> anyhow::Result<PathBuf> {
    set_threads(a.threads);
    let meta_path = {
        let mut s = a.out.as_os_str().to_owned();
        s.push(".meta.json");
        PathBuf::from(s)
    };
    refuse_existing(&[&a.out, &meta_path], a.force)?;
    if a.k == 0 {
        bail!("--k 0: ask for at least one hit per query");
    }
    Ok(meta_path)
}

/// Refuses queries of another width than the bank's, and `--k` past the
/// bank's `rows` (`unit`: rows or documents).
pub(crate) fn check_shapes(
    a: &SearchArgs,
    query_dim: usize,
    bank_dim: usize,
    rows: usize,
    unit: &str,
) -> anyhow::Result<()> {
    if query_dim != bank_dim {
        bail!(
            "{}: queries have dimension {query_dim} but the bank {} has dimension {bank_dim}; embed both with the same model",
            a.queries.display(),
            a.bank.display(),
        );
    }
    if a.k > rows {
        bail!(
            "--k {} but the bank {} has only {rows} {unit}; pass --k {rows} or less",
            a.k,
            a.bank.display(),
        );
    }
    Ok(())
}

/// Refuses query vectors holding NaN or Inf (`what` names a row).
pub(crate) fn check_finite(path: &Path, v: &[f32], dim: usize, what: &str) -> anyhow::Result<()> {
    if let Some(row) = v
        .chunks_exact(dim)
        .position(|q| q.iter().any(|x| !x.is_finite()))
    {
        bail!(
            "{}: {what} {row} holds NaN or Inf; fix or drop that query",
            path.display()
        );
    }
    Ok(())
}

pub(crate) fn write_hits<W: std::io::Write>(
    w: &mut W,
    bank: &Bank,
    qid: &str,
    hits: &[Hit],
    tag: &str,
) -> std::io::Result<()> {
    let names: Vec<_> = hits.iter().map(|&(r, _)| bank.doc_id(r as usize)).collect();
    let ranked = names
        .iter()
        .map(|n| n.as_ref())
        .zip(hits.iter().map(|&(_, s)| s));
    tandem_eval::trec::write_run_lines(w, qid, ranked, tag)
}

pub fn run_search(a: SearchArgs) -> anyhow::Result<()> {
    if tandem_bank::is_multi_vector(&a.bank) || tandem_bank::is_multi_vector(&a.queries) {
        return crate::maxsim_cmd::run(a);
    }
    let meta_path = start(&a)?;
    for (given, flag) in [
        (a.ncells.is_some(), "--ncells"),
        (a.centroid_threshold.is_some(), "--centroid-threshold"),
        (a.ndocs.is_some(), "--ndocs"),
        (a.rerank.is_some(), "--rerank"),
    ] {
        if given {
            bail!("{flag} applies to a PLAID index over a multi-vector bank (a ColBERT's token vectors), but {} is dense; drop it", a.bank.display());
        }
    }
    if let Some(p) = a
        .index
        .as_deref()
        .filter(|p| tandem_search::is_plaid_index(p))
    {
        bail!(
            "{}: a PLAID index, for a multi-vector bank (a ColBERT's token vectors), but {} is dense (one vector per document); pass an HNSW index built with tandem index build --bank {}, or drop --index for exact search",
            p.display(),
            a.bank.display(),
            a.bank.display()
        );
    }
    let t_open = Instant::now();
    let bank = open_bank(&a.bank, &a.key, &a.ids)?;
    let queries = open_bank(&a.queries, &a.query_key, &a.query_ids)?;
    check_shapes(&a, queries.dim(), bank.dim(), bank.rows(), "rows")?;
    let nq = queries.rows();
    let qv = queries.to_f32_vec();
    check_finite(&a.queries, &qv, queries.dim(), "query row")?;
    let exclude = match &a.exclude {
        Some(p) => read_exclusions(p, &bank, nq)?,
        None => Vec::new(),
    };
    let open_s = t_open.elapsed().as_secs_f64();

    let t_prep = Instant::now();
    let (index, index_meta): (Box<dyn Index + '_>, serde_json::Value) = match &a.index {
        Some(path) => {
            let hnsw = Hnsw::view(path, &bank)?;
            if let Some(m) = a.metric {
                if m != hnsw.metric() {
                    bail!(
                        "--metric {m} but the index {} was built with metric {}; drop --metric or rebuild the index with --metric {m}",
                        path.display(),
                        hnsw.metric()
                    );
                }
            }
            hnsw.set_expansion_search(a.ef);
            let p = hnsw.params();
            let meta = serde_json::json!({
                "kind": "hnsw", "path": path, "m": p.connectivity,
                "ef_construction": p.expansion_add, "ef": p.expansion_search,
                "scalar": hnsw.sidecar().scalar,
            });
            (Box::new(hnsw), meta)
        }
        None => {
            let flat =
                Flat::with_precision(&bank, a.metric.unwrap_or(Metric::InnerProduct), a.precision)?;
            let meta = serde_json::json!({
                "kind": "flat", "precision": a.precision.name(), "kernel": flat.kernel(),
            });
            (Box::new(flat), meta)
        }
    };
    let prepare_s = t_prep.elapsed().as_secs_f64();

    let t_search = Instant::now();
    let bar = tandem_io::progress(nq as u64, "search");
    let mut hits: Vec<Vec<Hit>> = Vec::with_capacity(nq);
    let dim = bank.dim();
    for start in (0..nq).step_by(QUERY_CHUNK) {
        let end = (start + QUERY_CHUNK).min(nq);
        let ex = if exclude.is_empty() {
            &[][..]
        } else {
            &exclude[start..end]
        };
        let block = index
            .search(&qv[start * dim..end * dim], a.k, ex)
            .with_context(|| {
                format!(
                    "searching {} for queries {}",
                    a.bank.display(),
                    a.queries.display()
                )
            })?;
        hits.extend(block);
        bar.inc((end - start) as u64);
    }
    bar.finish_and_clear();
    let search_s = t_search.elapsed().as_secs_f64();

    let t_write = Instant::now();
    tandem_io::write_atomic(&a.out, Overwrite::from_force(a.force), |w| {
        for (q, list) in hits.iter().enumerate() {
            write_hits(w, &bank, &queries.doc_id(q), list, &a.tag)?;
        }
        Ok(())
    })?;
    let write_s = t_write.elapsed().as_secs_f64();
    let qps = nq as f64 / search_s.max(1e-9);
    let meta = serde_json::json!({
        "command": "search",
        "tandem_version": env!("CARGO_PKG_VERSION"),
        "bank": { "path": a.bank, "key": a.key, "ids": a.ids, "rows": bank.rows(), "dim": dim, "dtype": bank.dtype().name() },
        "queries": { "path": a.queries, "key": a.query_key, "ids": a.query_ids, "rows": nq },
        "k": a.k,
        "metric": index.metric().name(),
        "index": index_meta,
        "exclude": a.exclude,
        "out": a.out,
        "tag": a.tag,
        "threads": a.threads,
        "worker_threads": worker_threads(),
        "timings_s": { "open": open_s, "prepare": prepare_s, "search": search_s, "write": write_s },
        "queries_per_second": qps,
    });
    let text = serde_json::to_vec_pretty(&meta).expect("json values serialise");
    tandem_io::write_bytes_atomic(&meta_path, Overwrite::from_force(a.force), &text)?;
    eprintln!(
        "searched {nq} queries against {} rows ({}, k {}) in {search_s:.2}s ({qps:.0} queries/s); wrote {}",
        bank.rows(),
        index_meta["kind"].as_str().unwrap_or("?"),
        a.k,
        a.out.display()
    );
    Ok(())
}
