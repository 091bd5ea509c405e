//! `Flat` against a naive oracle (every score in f64, sort, take k), for
//! random shapes, k, exclusions, both metrics and both dtypes; determinism
//! across thread counts; and `Hnsw` recall and persistence.

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tandem_bank::{f16, Bank};
use tandem_search::{Flat, Hit, Index, Metric};

/// Every score of `q` against `x` (rows of `dim`), in f64.
fn true_scores(x: &[f32], q: &[f32], dim: usize, metric: Metric) -> Vec<f64> {
    let norm = |v: &[f32]| v.iter().map(|&a| a as f64 * a as f64).sum::<f64>().sqrt();
    let qn = norm(q);
    x.chunks_exact(dim)
        .map(|r| {
            let dot: f64 = r.iter().zip(q).map(|(&a, &b)| a as f64 * b as f64).sum();
            match metric {
                Metric::InnerProduct => dot,
                Metric::Cosine if qn == 0.0 || norm(r) == 0.0 => 0.0,
                Metric::Cosine => dot / (qn * norm(r)),
            }
        })
        .collect()
}

/// The oracle: all non-excluded rows sorted by (score desc, row asc), first k.
fn oracle(scores: &[f64], k: usize, exclude: &[u32]) -> Vec<(u32, f64)> {
    let mut all: Vec<(u32, f64)> = scores
        .iter()
        .enumerate()
        .map(|(r, &s)| (r as u32, s))
        .filter(|(r, _)| !exclude.contains(r))
        .collect();
    all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    all.truncate(k);
    all
}

/// Checks one query's hits against the oracle, up to float rounding `tol`:
/// right length, no duplicates or excluded rows, each reported score equal to
/// that row's true score, best first, and the i-th true score equal to the
/// oracle's i-th (so the set is the exact top-k, ties aside).
fn check(hits: &[Hit], scores: &[f64], k: usize, exclude: &[u32], tol: f64) -> Result<(), String> {
    let want = oracle(scores, k, exclude);
    if hits.len() != want.len() {
        return Err(format!("{} hits, oracle has {}", hits.len(), want.len()));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, &(row, s)) in hits.iter().enumerate() {
        if !seen.insert(row) || exclude.contains(&row) {
            return Err(format!("row {row} duplicated or excluded"));
        }
        let truth = scores[row as usize];
        if (s as f64 - truth).abs() > tol {
            return Err(format!("row {row}: score {s} vs true {truth}"));
        }
        if (truth - want[i].1).abs() > tol {
            return Err(format!(
                "rank {i}: row {row} ({truth}) but oracle has row {} ({})",
                want[i].0, want[i].1
            ));
        }
        if i > 0 && (hits[i - 1].1 < s || (hits[i - 1].1 == s && hits[i - 1].0 > row)) {
            return Err(format!("rank {i} out of order"));
        }
    }
    Ok(())
}

fn bank_of(data: &[f32], dim: usize, half: bool) -> Bank {
    if half {
        Bank::from_f16(data.iter().map(|&v| f16::from_f32(v)).collect(), dim)
    } else {
        Bank::from_f32(data.to_vec(), dim)
    }
}

fn random(n: usize, rng: &mut ChaCha8Rng) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn flat_matches_the_oracle(
        rows in 1usize..1400,
        dim in 1usize..40,
        nq in 1usize..300,
        kfrac in 0.0f64..1.0,
        cosine in any::<bool>(),
        half in any::<bool>(),
        with_exclusions in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let metric = if cosine { Metric::Cosine } else { Metric::InnerProduct };
        let mut data = random(rows * dim, &mut rng);
        if rows > 3 {
            data[dim..2 * dim].fill(0.0); // a zero row
        }
        let bank = bank_of(&data, dim, half);
        // The oracle sees what the bank holds (f16-rounded values for f16 banks).
        let held = bank.to_f32_vec();
        let queries = random(nq * dim, &mut rng);
        let k = 1 + ((rows - 1) as f64 * kfrac * kfrac) as usize;
        let exclude: Vec<Vec<u32>> = if with_exclusions {
            (0..nq).map(|_| (0..rng.gen_range(0..rows.min(30) + 1)).map(|_| rng.gen_range(0..rows as u32)).collect()).collect()
        } else {
            Vec::new()
        };
        let flat = Flat::new(&bank, metric).unwrap();
        let got = flat.search(&queries, k, &exclude).unwrap();
        prop_assert_eq!(got.len(), nq);
        for (i, hits) in got.iter().enumerate() {
            let q = &queries[i * dim..(i + 1) * dim];
            let scores = true_scores(&held, q, dim, metric);
            let ex: &[u32] = exclude.get(i).map_or(&[], |v| v.as_slice());
            check(hits, &scores, k, ex, 1e-4 * (dim as f64).sqrt()).map_err(|e| TestCaseError::fail(format!("query {i}: {e}")))?;
        }
    }
}

/// Small integers make every score exact in f32, so ties are real ties and
/// the result must equal the oracle row for row (ties to the lower row).
#[test]
fn exact_ties_go_to_the_lower_row() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let (rows, dim, nq) = (3000, 24, 300);
    let data: Vec<f32> = (0..rows * dim)
        .map(|_| rng.gen_range(-2i32..3) as f32)
        .collect();
    let queries: Vec<f32> = (0..nq * dim)
        .map(|_| rng.gen_range(-2i32..3) as f32)
        .collect();
    for half in [false, true] {
        let bank = bank_of(&data, dim, half);
        let flat = Flat::new(&bank, Metric::InnerProduct).unwrap();
        for k in [1, 10, 100, 700] {
            let got = flat.search(&queries, k, &[]).unwrap();
            for (i, hits) in got.iter().enumerate() {
                let scores = true_scores(
                    &data,
                    &queries[i * dim..(i + 1) * dim],
                    dim,
                    Metric::InnerProduct,
                );
                let want: Vec<Hit> = oracle(&scores, k, &[])
                    .into_iter()
                    .map(|(r, s)| (r, s as f32))
                    .collect();
                assert_eq!(hits, &want, "query {i}, k {k}, f16 {half}");
            }
        }
    }
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let (rows, dim, nq) = (5000, 48, 600);
    let data = random(rows * dim, &mut rng);
    let queries = random(nq * dim, &mut rng);
    for half in [false, true] {
        let bank = bank_of(&data, dim, half);
        for metric in [Metric::InnerProduct, Metric::Cosine] {
            let flat = Flat::new(&bank, metric).unwrap();
            let run = |threads| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                pool.install(|| flat.search(&queries, 50, &[]).unwrap())
            };
            let one = run(1);
            for threads in [2, 3, 8] {
                assert_eq!(run(threads), one, "{threads} threads, {metric}, f16 {half}");
            }
        }
    }
}

#[test]
fn fewer_candidates_than_k_returns_what_there_is() {
    let bank = Bank::from_f32(vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0], 2);
    let flat = Flat::new(&bank, Metric::InnerProduct).unwrap();
    let got = flat.search(&[1.0, 0.5], 3, &[vec![2, 2, 0]]).unwrap();
    assert_eq!(got, vec![vec![(1, 0.5)]]);
}

#[test]
fn no_queries_no_results() {
    let bank = Bank::from_f32(vec![1.0, 0.0, 0.0, 1.0], 2);
    for metric in [Metric::InnerProduct, Metric::Cosine] {
        let flat = Flat::new(&bank, metric).unwrap();
        assert!(flat.search(&[], 1, &[]).unwrap().is_empty());
    }
}

#[test]
fn bad_requests_are_clear_errors() {
    let bank = Bank::from_f32(vec![1.0, 0.0, 0.0, 1.0], 2);
    let flat = Flat::new(&bank, Metric::Cosine).unwrap();
    let e = flat.search(&[1.0, 0.0], 3, &[]).unwrap_err().to_string();
    assert!(e.contains("only 2 rows") && e.contains("--k 2"), "{e}");
    let e = flat
        .search(&[1.0, 0.0, 1.0], 1, &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("dimension 2"), "{e}");
    let e = flat
        .search(&[1.0, 0.0, f32::INFINITY, 0.0], 1, &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("query row 1"), "{e}");
    let nan_bank = Bank::from_f32(vec![1.0, 0.0, f32::NAN, 1.0], 2);
    let e = Flat::new(&nan_bank, Metric::InnerProduct)
        .unwrap_err()
        .to_string();
    assert!(e.contains("bank row 1"), "{e}");
}

/// Real float16 embeddings (MS MARCO slice, MiniLM): exact cosine search
/// agrees with the oracle. Skips when `../shared/data` is absent.
#[test]
fn real_msmarco_bank_matches_the_oracle() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/msmarco-dl-5k");
    if !dir.exists() {
        eprintln!("skipping: {} is absent (real-data test)", dir.display());
        return;
    }
    let open =
        |name: &str| Bank::open(&dir.join(name), &tandem_bank::OpenOptions::default()).unwrap();
    let bank = open("corpus.minilm.f16.npy");
    let queries = open("queries.minilm.f16.npy").to_f32_vec();
    let (dim, k) = (bank.dim(), 100);
    let held = bank.to_f32_vec();
    let flat = Flat::new(&bank, Metric::Cosine).unwrap();
    let got = flat.search(&queries, k, &[]).unwrap();
    assert_eq!(got.len(), 50);
    for (i, hits) in got.iter().enumerate() {
        let scores = true_scores(&held, &queries[i * dim..(i + 1) * dim], dim, Metric::Cosine);
        check(hits, &scores, k, &[], 1e-5).unwrap_or_else(|e| panic!("query {i}: {e}"));
    }
}
