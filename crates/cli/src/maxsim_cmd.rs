//! `tandem search` over a multi-vector bank: late-interaction (MaxSim)
//! search of a ColBERT's query token vectors (`tandem embed --tower query`)
//! against its documents' (`tandem embed`), exact or through a PLAID index;
//! and `tandem index build` of that index.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use tandem_bank::MultiBank;
use tandem_io::Overwrite;
use tandem_search::{MaxSim, Plaid, PlaidParams, PlaidSearch};

use crate::search_cmd::{check_finite, check_shapes, start, worker_threads, BuildArgs, SearchArgs};

/// Opens `path` as a multi-vector bank, `what` naming it in errors.
fn open(path: &Path, ids: &Option<PathBuf>, what: &str) -> anyhow::Result<MultiBank> {
    if !tandem_bank::is_multi_vector(path) {
        bail!(
            "{}: a dense bank (one vector per row), where MaxSim needs {what} as token vectors ({} beside it); embed them with tandem embed --model COLBERT_DIR{}",
            path.display(),
            tandem_bank::offsets_path(path).display(),
            if what == "the queries" { " --tower query" } else { "" }
        );
    }
    // the ids tandem embed writes beside a bank, unless others are given
    let default_ids = tandem_text::job::ids_path(path);
    let ids = ids
        .clone()
        .or_else(|| default_ids.is_file().then_some(default_ids));
    Ok(MultiBank::open(path, ids.as_deref())?)
}

/// `tandem search` when the bank or the queries are multi-vector: both
/// must be, from the same model.
pub fn run(a: SearchArgs) -> anyhow::Result<()> {
    let meta_path = start(&a)?;
    for (given, flag) in [
        (a.exclude.is_some(), "--exclude"),
        (a.metric.is_some(), "--metric"),
        (
            a.key.is_some() || a.query_key.is_some(),
            "--key / --query-key",
        ),
    ] {
        if given {
            bail!("{flag} does not apply to a MaxSim search over multi-vector banks; drop it");
        }
    }
    let t_open = Instant::now();
    let bank = open(&a.bank, &a.ids, "the bank")?;
    let queries = open(&a.queries, &a.query_ids, "the queries")?;
    check_shapes(&a, queries.dim(), bank.dim(), bank.docs(), "documents")?;
    let qv = queries.tokens().to_f32_vec();
    check_finite(&a.queries, &qv, queries.dim(), "query token row")?;
    let open_s = t_open.elapsed().as_secs_f64();

    let t_prep = Instant::now();
    let plaid = match &a.index {
        Some(dir) => Some(Plaid::open(dir, &bank)?),
        None => None,
    };
    let prepare_s = t_prep.elapsed().as_secs_f64();
    let t_search = Instant::now();
    let (hits, index_meta) = match &plaid {
        None => {
            let bar = tandem_io::progress(bank.docs() as u64, "maxsim");
            let hits =
                MaxSim::new(&bank).search(&qv, queries.offsets(), a.k, |n| bar.inc(n as u64))?;
            bar.finish_and_clear();
            (hits, serde_json::json!({ "kind": "exact-maxsim" }))
        }
        Some(index) => {
            let d = PlaidSearch::for_k(a.k);
            let p = PlaidSearch {
                ncells: a.ncells.unwrap_or(d.ncells),
                centroid_threshold: a.centroid_threshold.unwrap_or(d.centroid_threshold),
                ndocs: a.ndocs.unwrap_or(d.ndocs),
                rerank: a.rerank.unwrap_or(d.rerank),
            };
            let bar = tandem_io::progress(queries.docs() as u64, "plaid");
            let hits = index.search(&qv, queries.offsets(), a.k, &p, |n| bar.inc(n as u64))?;
            bar.finish_and_clear();
            let side = index.sidecar();
            let meta = serde_json::json!({
                "kind": "plaid", "path": a.index, "nbits": side.nbits, "centroids": side.centroids,
                "ncells": p.ncells, "centroid_threshold": p.centroid_threshold, "ndocs": p.ndocs,
                "rerank": p.rerank, "build_seconds": side.build_seconds,
            });
            (hits, meta)
        }
    };
    let search_s = t_search.elapsed().as_secs_f64();

    let name = |b: &MultiBank, i: usize| -> String {
        b.ids().map_or_else(|| i.to_string(), |ids| ids[i].clone())
    };
    let t_write = Instant::now();
    tandem_io::write_atomic(&a.out, Overwrite::from_force(a.force), |w| {
        for (q, list) in hits.iter().enumerate() {
            let docs: Vec<String> = list.iter().map(|&(d, _)| name(&bank, d as usize)).collect();
            let ranked = docs
                .iter()
                .map(String::as_str)
                .zip(list.iter().map(|&(_, s)| s));
            tandem_eval::trec::write_run_lines(w, &name(&queries, q), ranked, &a.tag)?;
        }
        Ok(())
    })?;
    let write_s = t_write.elapsed().as_secs_f64();
    let nq = queries.docs();
    let qps = nq as f64 / search_s.max(1e-9);
    let meta = serde_json::json!({
        "command": "search",
        "tandem_version": env!("CARGO_PKG_VERSION"),
        "bank": { "path": a.bank, "ids": a.ids, "documents": bank.docs(), "tokens": bank.tokens().rows(), "dim": bank.dim(), "dtype": bank.tokens().dtype().name() },
        "queries": { "path": a.queries, "ids": a.query_ids, "rows": nq, "tokens": queries.tokens().rows() },
        "k": a.k,
        "metric": "maxsim",
        "index": index_meta,
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
        "searched {nq} queries against {} documents ({} token vectors, {}, k {}) in {search_s:.2}s ({qps:.0} queries/s); wrote {}",
        bank.docs(),
        bank.tokens().rows(),
        if plaid.is_some() { "PLAID index, exact MaxSim re-ranking" } else { "exact MaxSim" },
        a.k,
        a.out.display()
    );
    Ok(())
}

/// `tandem index build` over a multi-vector bank: a PLAID index folder.
pub fn run_index(a: BuildArgs) -> anyhow::Result<()> {
    for (given, flag) in [
        (a.metric.is_some(), "--metric"),
        (a.m.is_some(), "--m"),
        (a.ef_construction.is_some(), "--ef-construction"),
        (a.scalar.is_some(), "--scalar"),
        (a.key.is_some(), "--key"),
    ] {
        if given {
            bail!(
                "{flag} applies to an HNSW index over a dense bank, but {} is multi-vector (a PLAID index is built); drop it",
                a.bank.display()
            );
        }
    }
    let overwrite = Overwrite::from_force(a.force);
    // Before minutes of building: can the index be saved there at all?
    Plaid::check_save_path(&a.out, overwrite)?;
    let meta_path = build_meta_path(&a.out);
    crate::search_cmd::refuse_existing(&[&meta_path], a.force)?;
    let bank = open(&a.bank, &None, "the bank")?;
    let d = PlaidParams::default();
    let params = PlaidParams {
        nbits: a.nbits.unwrap_or(d.nbits),
        centroids: a.centroids,
        kmeans_iters: a.kmeans_iters.unwrap_or(d.kmeans_iters),
        seed: a.seed.unwrap_or(d.seed),
    };
    let mut index = Plaid::build(&bank, &params)
        .with_context(|| format!("building a PLAID index over {}", a.bank.display()))?;
    let t_save = Instant::now();
    index.save(&a.out, overwrite)?;
    let save_s = t_save.elapsed().as_secs_f64();
    let side = index.sidecar();
    let meta = serde_json::json!({
        "command": "index build",
        "tandem_version": env!("CARGO_PKG_VERSION"),
        "kind": "plaid",
        "bank": { "path": a.bank, "documents": bank.docs(), "tokens": bank.tokens().rows(), "dim": bank.dim(), "dtype": bank.tokens().dtype().name() },
        "out": a.out,
        "params": params,
        "centroids": side.centroids,
        "kmeans_sample": side.kmeans_sample,
        "threads": a.threads,
        "worker_threads": worker_threads(),
        "timings_s": { "build": side.build_seconds, "save": save_s },
        "bytes": side.files.values().sum::<u64>(),
    });
    let text = serde_json::to_vec_pretty(&meta).expect("json values serialise");
    tandem_io::write_bytes_atomic(&meta_path, overwrite, &text)?;
    eprintln!(
        "index {}: PLAID over {} documents ({} token vectors, dim {}), {} centroids, {}-bit residuals, {:.1} MB, built in {:.1}s",
        a.out.display(),
        bank.docs(),
        bank.tokens().rows(),
        bank.dim(),
        side.centroids,
        side.nbits,
        side.files.values().sum::<u64>() as f64 / 1e6,
        side.build_seconds
    );
    Ok(())
}

/// The build record beside an index folder: `<out>.meta.json`.
fn build_meta_path(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".meta.json");
    PathBuf::from(s)
}
