//! Throughput benchmark for `Flat` and `Hnsw`, driven by `bench/flat_vs_faiss.py`.
//!
//! ```text
//! cargo run --release -p tandem-search --example bench_search -- \
//!     BANK.npy QUERIES.npy THREADS K1,K2,.. REPS [M EF_CONSTRUCTION EF1,EF2,.. SCALAR1,SCALAR2]
//! ```
//! Prints one JSON object per measurement on stdout. `Flat` is timed with
//! each precision (`auto`: the int8 scan where the CPU has it, then `f32`);
//! with `BENCH_IDS=PREFIX` set, each result's ids (uint32, queries x k) go to
//! `PREFIX_{precision}_k{k}.u32` and the JSON names the file. With the HNSW arguments,
//! it also builds one HNSW index per scalar type (f32, f16, bf16, i8) and reports
//! queries/s and recall@K1 against the exact result for each ef of the sweep
//! up to the first that reaches recall 0.99, then for the efs of a bisection
//! down to the smallest ef (within 16) that reaches it. HNSW rows also carry
//! the process's CPU seconds (all threads) of the build and of one search of
//! all queries: on a shared machine they move far less than the wall time.
//! `BENCH_PRECISIONS=auto` times only the given precisions
//! (comma-separated; for profiling one scan).

use std::path::PathBuf;
use std::time::Instant;

use tandem_bank::{Bank, OpenOptions};
use tandem_search::{Flat, Hit, Hnsw, HnswParams, Index, Metric, Precision, Scalar};

fn list(s: &str) -> Vec<usize> {
    s.split(',')
        .map(|v| v.parse().expect("comma-separated integers"))
        .collect()
}

/// Best wall time of `reps` runs of `f`, and the last result.
fn best_of<T>(reps: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::INFINITY;
    let mut out = None;
    for _ in 0..reps {
        let t = Instant::now();
        let r = f();
        best = best.min(t.elapsed().as_secs_f64());
        out = Some(r);
    }
    (best, out.expect("reps >= 1"))
}

/// CPU time of this process so far, all threads, user and system, in
/// seconds: unlike the wall time, barely moved by other processes sharing
/// the cores.
fn cpu_seconds() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the rusage it points to (or fails and leaves
    // the zeroes, a valid rusage).
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

fn recall(approx: &[Vec<Hit>], exact: &[Vec<Hit>]) -> f64 {
    let mut found = 0usize;
    let mut total = 0usize;
    for (a, e) in approx.iter().zip(exact) {
        let truth: std::collections::HashSet<u32> = e.iter().map(|h| h.0).collect();
        found += a.iter().filter(|h| truth.contains(&h.0)).count();
        total += e.len();
    }
    found as f64 / total as f64
}

/// The recall@K1 whose smallest ef the HNSW sweep looks for.
const TARGET_RECALL: f64 = 0.99;
/// The bisection of [`sweep_to_target`] stops when the bracket is this narrow.
const EF_STEP: usize = 16;

/// Measures `recall(ef)` at every ef of the sweep `efs` (ascending) up to the
/// first that reaches `target`, then bisects between it and the ef before it
/// down to [`EF_STEP`]: the smallest ef measured to reach `target` is then
/// the smallest that does, within [`EF_STEP`] (recall grows with ef).
/// bench/flat_vs_faiss.py does the same for faiss.
fn sweep_to_target(efs: &[usize], target: f64, mut recall: impl FnMut(usize) -> f64) {
    let mut lo = 0;
    let mut hi = None;
    for &ef in efs {
        if recall(ef) >= target {
            hi = Some(ef);
            break;
        }
        lo = ef;
    }
    let Some(mut hi) = hi else { return };
    while hi - lo > EF_STEP {
        let mid = (lo + hi) / 2;
        if recall(mid) >= target {
            hi = mid;
        } else {
            lo = mid;
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 5 && args.len() != 9 {
        eprintln!(
            "usage: bench_search BANK QUERIES THREADS K1,K2 REPS [M EF_CONSTRUCTION EF1,EF2 SCALAR1,SCALAR2]"
        );
        std::process::exit(2);
    }
    let open = |p: &str| {
        Bank::open(&PathBuf::from(p), &OpenOptions::default()).unwrap_or_else(|e| panic!("{e}"))
    };
    let bank = open(&args[0]);
    let queries = open(&args[1]).to_f32_vec();
    let threads: usize = args[2].parse().expect("THREADS");
    let ks = list(&args[3]);
    let reps: usize = args[4].parse().expect("REPS");
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .expect("first pool");
    let nq = queries.len() / bank.dim();

    let ids_prefix = std::env::var("BENCH_IDS").ok();
    let mut exact = Vec::new();
    let precisions: Vec<Precision> = std::env::var("BENCH_PRECISIONS")
        .unwrap_or_else(|_| "auto,f32".into())
        .split(',')
        .map(|p| p.parse().unwrap_or_else(|e| panic!("{e}")))
        .collect();
    for precision in precisions {
        let t = Instant::now();
        let flat = Flat::with_precision(&bank, Metric::InnerProduct, precision).expect("flat");
        let prep = t.elapsed().as_secs_f64();
        flat.search(&queries[..bank.dim() * nq.min(64)], ks[0], &[])
            .expect("warm-up");
        for &k in &ks {
            let (secs, hits) = best_of(reps, || flat.search(&queries, k, &[]).expect("search"));
            let ids = match &ids_prefix {
                Some(prefix) => {
                    let path = format!("{prefix}_{precision}_k{k}.u32");
                    let bytes: Vec<u8> = hits
                        .iter()
                        .flatten()
                        .flat_map(|h| h.0.to_le_bytes())
                        .collect();
                    std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("{path}: {e}"));
                    format!(r#","ids":"{path}""#)
                }
                None => String::new(),
            };
            println!(
                r#"{{"engine":"tandem","index":"flat","precision":"{precision}","kernel":"{}","k":{k},"threads":{threads},"queries":{nq},"seconds":{secs},"qps":{},"prepare_seconds":{prep}{ids}}}"#,
                flat.kernel(),
                nq as f64 / secs
            );
            if k == ks[0] && precision == Precision::Auto {
                exact = hits;
            }
        }
    }
    if args.len() == 9 {
        for scalar in args[8].split(',') {
            let params = HnswParams {
                connectivity: args[5].parse().expect("M"),
                expansion_add: args[6].parse().expect("EF_CONSTRUCTION"),
                scalar: Some(scalar.parse::<Scalar>().unwrap_or_else(|e| panic!("{e}"))),
                ..HnswParams::default()
            };
            let (t, cpu0) = (Instant::now(), cpu_seconds());
            let hnsw = Hnsw::build(&bank, Metric::InnerProduct, params).expect("build");
            let build = t.elapsed().as_secs_f64();
            let build_cpu = cpu_seconds() - cpu0;
            eprintln!("usearch kernels: {}", hnsw.hardware_acceleration());
            let measure = |ef: usize| {
                hnsw.set_expansion_search(ef);
                let cpu0 = cpu_seconds();
                let (secs, hits) =
                    best_of(reps, || hnsw.search(&queries, ks[0], &[]).expect("search"));
                let cpu = (cpu_seconds() - cpu0) / reps as f64;
                let r = recall(&hits, &exact);
                println!(
                    r#"{{"engine":"tandem","index":"hnsw","scalar":"{scalar}","m":{},"ef_construction":{},"ef":{ef},"k":{},"threads":{threads},"queries":{nq},"build_seconds":{build},"build_cpu_seconds":{build_cpu},"seconds":{secs},"cpu_seconds":{cpu},"qps":{},"recall":{r}}}"#,
                    params.connectivity,
                    params.expansion_add,
                    ks[0],
                    nq as f64 / secs,
                );
                r
            };
            sweep_to_target(&list(&args[7]), TARGET_RECALL, measure);
        }
    }
}
