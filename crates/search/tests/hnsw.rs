//! `Hnsw`: recall against `Flat`, exclusions, save / load / view, and the
//! sidecar check that refuses an index built from another bank.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;

use tandem_bank::{f16, write_npy, Bank, OpenOptions, Overwrite, Vectors};
use tandem_search::{sidecar_path, Flat, Hit, Hnsw, HnswParams, Index, Metric, Scalar};

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

/// A `rows` x `dim` float32 bank of [`random`] numbers (`seed`), written to
/// `dir`/bank.npy and opened from there.
fn bank_on_disk(dir: &Path, rows: usize, dim: usize, seed: u64) -> Bank {
    let path = dir.join("bank.npy");
    let data = random(rows * dim, seed);
    write_npy(&path, rows, dim, Vectors::F32(&data), Overwrite::Refuse).unwrap();
    Bank::open(&path, &OpenOptions::default()).unwrap()
}

fn recall(approx: &[Vec<Hit>], exact: &[Vec<Hit>]) -> f64 {
    let (mut found, mut total) = (0, 0);
    for (a, e) in approx.iter().zip(exact) {
        found += a.iter().filter(|h| e.iter().any(|x| x.0 == h.0)).count();
        total += e.len();
    }
    found as f64 / total as f64
}

const PARAMS: HnswParams = HnswParams {
    connectivity: 16,
    expansion_add: 128,
    expansion_search: 200,
    scalar: None,
};

/// `data` as a bank of width `dim`, float16 when `half`.
fn bank_of(data: &[f32], dim: usize, half: bool) -> Bank {
    if half {
        Bank::from_f16(data.iter().map(|&v| f16::from_f32(v)).collect(), dim)
    } else {
        Bank::from_f32(data.to_vec(), dim)
    }
}

#[test]
fn recall_against_exact_for_both_metrics_and_dtypes() {
    let (rows, dim, nq, k) = (3000, 16, 50, 10);
    let data = random(rows * dim, 1);
    let queries = random(nq * dim, 2);
    for half in [false, true] {
        let bank = bank_of(&data, dim, half);
        for metric in [Metric::InnerProduct, Metric::Cosine] {
            let exact = Flat::new(&bank, metric)
                .unwrap()
                .search(&queries, k, &[])
                .unwrap();
            let hnsw = Hnsw::build(&bank, metric, PARAMS).unwrap();
            assert_eq!((hnsw.len(), hnsw.dim(), hnsw.metric()), (rows, dim, metric));
            let approx = hnsw.search(&queries, k, &[]).unwrap();
            let r = recall(&approx, &exact);
            assert!(r >= 0.95, "recall {r} ({metric}, f16 {half})");
            // Scores are the metric's similarities, not usearch distances.
            for (a, e) in approx.iter().zip(&exact) {
                assert!(
                    (a[0].1 - e[0].1).abs() < 1e-2 || a[0].0 != e[0].0,
                    "score {} vs {}",
                    a[0].1,
                    e[0].1
                );
            }
        }
    }
}

#[test]
fn exclusions_are_never_returned() {
    let (rows, dim) = (2000, 8);
    let data = random(rows * dim, 3);
    let bank = Bank::from_f32(data.clone(), dim);
    let hnsw = Hnsw::build(&bank, Metric::Cosine, PARAMS).unwrap();
    let queries = data[..5 * dim].to_vec(); // rows 0..5: each its own nearest
    let exclude: Vec<Vec<u32>> = (0..5u32).map(|i| vec![i, i + 10, 1999]).collect();
    let got = hnsw.search(&queries, 20, &exclude).unwrap();
    for (i, hits) in got.iter().enumerate() {
        assert_eq!(hits.len(), 20);
        assert!(
            hits.iter().all(|h| !exclude[i].contains(&h.0)),
            "query {i}: {hits:?}"
        );
    }
    let plain = hnsw.search(&queries, 1, &[]).unwrap();
    assert_eq!(
        plain.iter().map(|h| h[0].0).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4]
    );
    let e = hnsw.search(&queries, 2001, &[]).unwrap_err().to_string();
    assert!(e.contains("--k 2000"), "{e}");
}

#[test]
fn save_load_view_and_refuse_a_different_bank() {
    let dir = tempfile::tempdir().unwrap();
    let (rows, dim) = (1500, 12);
    let bank = bank_on_disk(dir.path(), rows, dim, 4);
    let data = bank.to_f32_vec();
    let idx = dir.path().join("bank.usearch");
    let mut built = Hnsw::build(&bank, Metric::InnerProduct, PARAMS).unwrap();
    built.save(&idx, Overwrite::Refuse).unwrap();
    let e = built.save(&idx, Overwrite::Refuse).unwrap_err().to_string();
    assert!(e.contains("--force"), "{e}");
    let sidecar: serde_json::Value =
        serde_json::from_slice(&std::fs::read(sidecar_path(&idx)).unwrap()).unwrap();
    assert_eq!(sidecar["metric"], "ip");
    assert_eq!(sidecar["connectivity"], 16);
    assert_eq!(sidecar["bank_fingerprint"]["rows"], rows);

    let queries = random(20 * dim, 5);
    let want = built.search(&queries, 10, &[]).unwrap();
    for opened in [
        Hnsw::load(&idx, &bank).unwrap(),
        Hnsw::view(&idx, &bank).unwrap(),
    ] {
        assert_eq!(opened.metric(), Metric::InnerProduct);
        assert_eq!(opened.params().connectivity, 16);
        opened.set_expansion_search(PARAMS.expansion_search);
        assert_eq!(opened.search(&queries, 10, &[]).unwrap(), want);
    }

    // More searching threads than the machine has cores, on a memory-mapped index.
    let viewed = Hnsw::view(&idx, &bank).unwrap();
    viewed.set_expansion_search(PARAMS.expansion_search);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(8)
        .build()
        .unwrap();
    let many = random(400 * dim, 6);
    let hits = pool.install(|| viewed.search(&many, 10, &[])).unwrap();
    assert_eq!(hits.len(), 400);
    assert!(hits.iter().all(|h| h.len() == 10));

    // Same shape, one value changed: the sampled-row hash catches row 0.
    let mut changed = data.clone();
    changed[0] += 0.5;
    let other = Bank::from_f32(changed, dim);
    let e = Hnsw::view(&idx, &other).unwrap_err().to_string();
    assert!(
        e.contains("does not match") && e.contains("contents") && e.contains("--force"),
        "{e}"
    );
    let smaller = Bank::from_f32(data[..(rows - 1) * dim].to_vec(), dim);
    let e = Hnsw::load(&idx, &smaller).unwrap_err().to_string();
    assert!(e.contains("shape (1500, 12) vs (1499, 12)"), "{e}");

    // A damaged sidecar or a missing index is refused with the fix.
    std::fs::write(sidecar_path(&idx), b"{").unwrap();
    let e = Hnsw::load(&idx, &bank).unwrap_err().to_string();
    assert!(
        e.contains("not a tandem index sidecar") && e.contains("rebuild"),
        "{e}"
    );
    let e = Hnsw::load(&dir.path().join("missing.usearch"), &bank)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("not found") && e.contains("tandem index build"),
        "{e}"
    );
}

#[test]
fn every_query_gets_its_own_hits_whatever_the_threads() {
    let (rows, dim, nq, k) = (2000, 12, 300, 10);
    let bank = Bank::from_f32(random(rows * dim, 7), dim);
    let hnsw = Hnsw::build(&bank, Metric::Cosine, PARAMS).unwrap();
    let queries = random(nq * dim, 8);
    // Each query excludes rows of its own, so a result given to the wrong
    // query shows even where two queries share neighbours.
    let exclude: Vec<Vec<u32>> = (0..nq as u32).map(|i| vec![i, 1000 + i]).collect();
    let alone: Vec<Vec<Hit>> = (0..nq)
        .map(|i| {
            let q = &queries[i * dim..(i + 1) * dim];
            let mut hits = hnsw.search(q, k, &exclude[i..i + 1]).unwrap();
            hits.pop().unwrap()
        })
        .collect();
    for threads in [1, 3, 8] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let together = pool.install(|| hnsw.search(&queries, k, &exclude)).unwrap();
        assert_eq!(together, alone, "{threads} threads");
    }
}

#[test]
fn float16_storage_for_a_float32_bank() {
    let (rows, dim, nq, k) = (3000, 16, 50, 10);
    let data = random(rows * dim, 8);
    let queries = random(nq * dim, 9);
    let bank = Bank::from_f32(data.clone(), dim);
    let params = HnswParams {
        scalar: Some(Scalar::F16),
        ..PARAMS
    };
    let hnsw = Hnsw::build(&bank, Metric::Cosine, params).unwrap();
    assert_eq!(hnsw.sidecar().scalar, "f16");
    assert_eq!(hnsw.params().scalar, Some(Scalar::F16));
    let exact = Flat::new(&bank, Metric::Cosine)
        .unwrap()
        .search(&queries, k, &[])
        .unwrap();
    let r = recall(&hnsw.search(&queries, k, &[]).unwrap(), &exact);
    assert!(r >= 0.95, "recall {r}");

    let mut big = data;
    big[5 * dim + 3] = 70000.0;
    let e = Hnsw::build(&Bank::from_f32(big, dim), Metric::Cosine, params)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("row 5") && e.contains("65504") && e.contains("f32"),
        "{e}"
    );
    assert_eq!("F16".parse::<Scalar>().unwrap(), Scalar::F16);
    assert!("i4"
        .parse::<Scalar>()
        .unwrap_err()
        .to_string()
        .contains("\"f16\""));
}

#[test]
fn bad_parameters_and_missing_folders_are_refused_up_front() {
    let bank = Bank::from_f32(random(200 * 8, 11), 8);
    for (m, ef, what) in [
        (1, 100, "M = 1"),
        (0, 100, "M = 0"),
        (16, 0, "ef_construction"),
    ] {
        let params = HnswParams {
            connectivity: m,
            expansion_add: ef,
            ..PARAMS
        };
        let e = Hnsw::build(&bank, Metric::InnerProduct, params)
            .unwrap_err()
            .to_string();
        assert!(e.contains(what) && !e.contains("internal"), "{e}");
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("nodir").join("b.usearch");
    let e = Hnsw::check_save_path(&out, Overwrite::Refuse)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("b.usearch") && e.contains("nodir does not exist"),
        "{e}"
    );
    let mut hnsw = Hnsw::build(&bank, Metric::InnerProduct, PARAMS).unwrap();
    let e = hnsw.save(&out, Overwrite::Allow).unwrap_err().to_string();
    assert!(
        e.contains("does not exist") && !e.contains("internal"),
        "{e}"
    );
    assert!(Hnsw::check_save_path(&dir.path().join("b.usearch"), Overwrite::Refuse).is_ok());
}

/// Every scalar type, both metrics, float32 and float16 banks: the hits are
/// rescored exactly, so wherever the graph finds a row its score has the
/// bits `Flat` gives it, and the hits are the best k of all the walk's
/// candidates by that score.
#[test]
fn every_scalar_rescores_the_candidates_exactly() {
    let (rows, dim, nq, k) = (1500, 24, 30, 10);
    let data = random(rows * dim, 12);
    let queries = random(nq * dim, 13);
    let serial = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    for half in [false, true] {
        let bank = bank_of(&data, dim, half);
        for metric in [Metric::InnerProduct, Metric::Cosine] {
            let exact = Flat::new(&bank, metric)
                .unwrap()
                .search(&queries, k, &[])
                .unwrap();
            for scalar in [Scalar::F32, Scalar::F16, Scalar::BF16, Scalar::I8] {
                let what = format!("{metric}, {scalar} graph, f16 bank {half}");
                let params = HnswParams {
                    scalar: Some(scalar),
                    ..PARAMS
                };
                // Built on one thread: usearch's concurrent inserts can leave a
                // few rows that no walk reaches (unum-cloud/USearch#735), which
                // would make the recall at ef = rows below depend on the thread
                // timing; a serial build is the same graph every time.
                let built = serial.install(|| Hnsw::build(&bank, metric, params));
                if scalar == Scalar::I8 && metric == Metric::InnerProduct {
                    // These rows have different lengths: an angle would rank them wrongly.
                    let e = built.unwrap_err().to_string();
                    assert!(
                        e.contains("i8 graph measures angles") && e.contains("--scalar bf16"),
                        "{e}"
                    );
                    continue;
                }
                let hnsw = built.unwrap();
                assert_eq!(hnsw.sidecar().scalar, scalar.name());
                hnsw.set_expansion_search(64);
                let approx = hnsw.search(&queries, k, &[]).unwrap();
                let r = recall(&approx, &exact);
                assert!(r >= 0.9, "recall {r} ({what})");
                for (a, e) in approx.iter().zip(&exact) {
                    assert!(a.windows(2).all(|w| w[0].1 >= w[1].1), "{what}: {a:?}");
                    for hit in a
                        .iter()
                        .filter_map(|h| e.iter().find(|x| x.0 == h.0).map(|x| (h, x)))
                    {
                        assert_eq!(hit.0 .1.to_bits(), hit.1 .1.to_bits(), "{what}");
                    }
                }
                // The same walk (ef 64) for k = 10 and k = 64: the best 10 of
                // its 64 candidates by the exact score, in order.
                let all = hnsw.search(&queries, 64, &[]).unwrap();
                for (a, all) in approx.iter().zip(&all) {
                    assert_eq!(a[..], all[..k], "{what}");
                }
                // ef = rows: every row the graph reaches (HNSW may leave a
                // row or two without incoming edges).
                hnsw.set_expansion_search(rows);
                let r = recall(&hnsw.search(&queries, k, &[]).unwrap(), &exact);
                assert!(r >= 0.99, "recall {r} ({what}, ef = rows)");
            }
        }
    }
}

/// An int8 graph for the inner product over rows of one length (unit
/// rows, the usual embeddings): built, it ranks as exact search does.
#[test]
fn an_int8_graph_serves_the_inner_product_of_unit_rows() {
    let (rows, dim, nq, k) = (1500, 24, 30, 10);
    let mut data = random(rows * dim, 16);
    for row in data.chunks_exact_mut(dim) {
        let n = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        row.iter_mut().for_each(|v| *v /= n);
    }
    let bank = Bank::from_f32(data, dim);
    let queries = random(nq * dim, 17);
    let exact = Flat::new(&bank, Metric::InnerProduct)
        .unwrap()
        .search(&queries, k, &[])
        .unwrap();
    let params = HnswParams {
        scalar: Some(Scalar::I8),
        ..PARAMS
    };
    let hnsw = Hnsw::build(&bank, Metric::InnerProduct, params).unwrap();
    assert_eq!(hnsw.params().scalar, Some(Scalar::I8));
    let r = recall(&hnsw.search(&queries, k, &[]).unwrap(), &exact);
    assert!(r >= 0.95, "recall {r}");
}

/// A bfloat16 graph on disk: reloaded and viewed, it returns what it
/// returned when built; a sidecar that names another scalar type than the
/// graph stores is refused, naming both.
#[test]
fn a_bfloat16_index_reloads_and_a_mismatched_sidecar_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (rows, dim) = (1200, 16);
    let bank = bank_on_disk(dir.path(), rows, dim, 14);
    let idx = dir.path().join("bank.usearch");
    let params = HnswParams {
        scalar: Some(Scalar::BF16),
        ..PARAMS
    };
    let mut built = Hnsw::build(&bank, Metric::InnerProduct, params).unwrap();
    built.save(&idx, Overwrite::Refuse).unwrap();
    let queries = random(20 * dim, 15);
    let want = built.search(&queries, 10, &[]).unwrap();
    for opened in [
        Hnsw::load(&idx, &bank).unwrap(),
        Hnsw::view(&idx, &bank).unwrap(),
    ] {
        assert_eq!(opened.params().scalar, Some(Scalar::BF16));
        assert_eq!(opened.search(&queries, 10, &[]).unwrap(), want);
    }
    let side = sidecar_path(&idx);
    let text = std::fs::read_to_string(&side).unwrap();
    std::fs::write(&side, text.replace("\"bf16\"", "\"f16\"")).unwrap();
    let e = Hnsw::view(&idx, &bank).unwrap_err().to_string();
    assert!(
        e.contains("bf16") && e.contains("says f16") && e.contains("--force"),
        "{e}"
    );
    std::fs::write(&side, text.replace("\"bf16\"", "\"i4\"")).unwrap();
    let e = Hnsw::view(&idx, &bank).unwrap_err().to_string();
    assert!(
        e.contains("\"i4\"") && e.contains("bf16") && e.contains("--force"),
        "{e}"
    );
}
