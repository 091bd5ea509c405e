//! CPU time per query of exact search (`Flat`, the default scan), for A/B
//! comparisons on a shared machine: unlike wall time, the CPU seconds of a
//! search barely move when other processes take turns on the cores.
//!
//! ```text
//! cargo run --release -p tandem-search --example exact_cpu -- BANK.npy QUERIES.npy THREADS K1,K2,.. REPS
//! ```
//! Searches all queries REPS times at each k, in turn (k1, k2, k1, k2, ..),
//! and prints per k the least CPU microseconds (all threads) and wall
//! microseconds per query over the REPS searches.

use std::path::PathBuf;
use std::time::Instant;

use tandem_bank::{Bank, OpenOptions};
use tandem_search::{Flat, Index, Metric};

/// CPU seconds of this process so far (all threads, user and system).
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

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 5 {
        eprintln!("usage: exact_cpu BANK QUERIES THREADS K1,K2,.. REPS");
        std::process::exit(2);
    }
    let open = |p: &str| {
        Bank::open(&PathBuf::from(p), &OpenOptions::default()).unwrap_or_else(|e| panic!("{e}"))
    };
    let bank = open(&args[0]);
    let queries = open(&args[1]).to_f32_vec();
    let threads: usize = args[2].parse().expect("THREADS");
    let ks: Vec<usize> = args[3]
        .split(',')
        .map(|v| v.parse().expect("comma-separated integers"))
        .collect();
    let reps: usize = args[4].parse().expect("REPS");
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .expect("first pool");
    let nq = queries.len() / bank.dim();
    let flat = Flat::new(&bank, Metric::InnerProduct).expect("flat");
    flat.search(&queries[..bank.dim() * nq.min(64)], ks[0], &[])
        .expect("warm-up");
    let mut best = vec![(f64::INFINITY, f64::INFINITY); ks.len()];
    for _ in 0..reps {
        for (&k, best) in ks.iter().zip(&mut best) {
            let (t, cpu) = (Instant::now(), cpu_seconds());
            flat.search(&queries, k, &[]).expect("search");
            let cpu = (cpu_seconds() - cpu) * 1e6 / nq as f64;
            let wall = t.elapsed().as_secs_f64() * 1e6 / nq as f64;
            *best = (best.0.min(cpu), best.1.min(wall));
        }
    }
    for (k, (cpu, wall)) in ks.iter().zip(best) {
        println!(
            "k={k} cpu_us_per_query={cpu:.1} wall_us_per_query={wall:.1} kernel={}",
            flat.kernel()
        );
    }
}
