//! `tandem search` over a multi-vector bank: exact late-interaction
//! (MaxSim) search of a ColBERT's query token vectors (`tandem embed --tower
//! query`) against its documents' (`tandem embed`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::bail;
use tandem_bank::MultiBank;
use tandem_io::Overwrite;
use tandem_search::MaxSim;

use crate::search_cmd::{check_finite, check_shapes, start, worker_threads, SearchArgs};

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
        (a.index.is_some(), "--index"),
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

    let t_search = Instant::now();
    let bar = tandem_io::progress(bank.docs() as u64, "maxsim");
    let hits = MaxSim::new(&bank).search(&qv, queries.offsets(), a.k, |n| bar.inc(n as u64))?;
    bar.finish_and_clear();
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
        "index": { "kind": "exact-maxsim" },
        "out": a.out,
        "tag": a.tag,
        "threads": a.threads,
        "worker_threads": worker_threads(),
        "timings_s": { "open": open_s, "search": search_s, "write": write_s },
        "queries_per_second": qps,
    });
    let text = serde_json::to_vec_pretty(&meta).expect("json values serialise");
    tandem_io::write_bytes_atomic(&meta_path, Overwrite::from_force(a.force), &text)?;
    eprintln!(
        "searched {nq} queries against {} documents ({} token vectors, exact MaxSim, k {}) in {search_s:.2}s ({qps:.0} queries/s); wrote {}",
        bank.docs(),
        bank.tokens().rows(),
        a.k,
        a.out.display()
    );
    Ok(())
}
