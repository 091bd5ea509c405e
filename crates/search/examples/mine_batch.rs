//! Exact cosine search of bank rows against their bank (as the miner
//! searches positives), timed per batch size: does a wider batch make each
//! query cheaper? Used for BENCHMARKS.md, "Mining at 771,000 rows".
//!
//! ```text
//! cargo run --release -p tandem-search --example mine_batch -- BANK.npy THREADS N1,N2,.. [K]
//! ```
//! Queries are rows `i * 7919 % rows` (each excluded from its own search),
//! k = K (default 200, the miner's `mine_pool`). Prints one line per batch size.

use std::path::PathBuf;
use std::time::Instant;

use tandem_bank::{Bank, OpenOptions};
use tandem_search::{Flat, Index, Metric};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: mine_batch BANK.npy THREADS N1,N2,.. [K]");
        std::process::exit(2);
    }
    let bank = Bank::open(&PathBuf::from(&args[1]), &OpenOptions::default()).expect("a bank");
    let threads: usize = args[2].parse().expect("THREADS is a number");
    let k: usize = args
        .get(4)
        .map_or(200, |v| v.parse().expect("K is a number"));
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .expect("one global pool");
    let t = Instant::now();
    let flat = Flat::new(&bank, Metric::Cosine).expect("a finite bank");
    println!(
        "index built in {:.2} s, kernel {}",
        t.elapsed().as_secs_f64(),
        flat.kernel()
    );
    let d = bank.dim();
    for nq in args[3]
        .split(',')
        .map(|v| v.parse::<usize>().expect("batch sizes are numbers"))
    {
        let rows: Vec<usize> = (0..nq).map(|i| (i * 7919) % bank.rows()).collect();
        let mut q = Vec::with_capacity(nq * d);
        for &r in &rows {
            q.extend_from_slice(&bank.row_f32(r));
        }
        let exclude: Vec<Vec<u32>> = rows.iter().map(|&r| vec![r as u32]).collect();
        let t = Instant::now();
        let hits = flat.search(&q, k, &exclude).expect("a valid request");
        let s = t.elapsed().as_secs_f64();
        assert!(hits.iter().all(|h| h.len() == k.min(bank.rows() - 1)));
        println!("{nq} queries: {s:.2} s, {:.0} queries/s", nq as f64 / s);
    }
}
