//! `tandem index build` over a multi-vector bank (a PLAID index folder) and
//! `tandem search --index` with it: the hits of exact MaxSim, with exact
//! scores; and one clear error for each mix-up (an index over another bank,
//! a dense bank with a PLAID index and the reverse, flags of the other kind
//! of index, a damaged file).

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tandem_bank::{f16, offsets_path, write_npy, write_offsets, Vectors};
use tandem_io::Overwrite;

const DIM: usize = 24;

fn tandem() -> Command {
    Command::cargo_bin("tandem").unwrap()
}

/// A unit vector near `v`.
fn noisy(rng: &mut ChaCha8Rng, v: &[f32], spread: f32) -> Vec<f32> {
    let mut x: Vec<f32> = v
        .iter()
        .map(|a| a + spread * (rng.gen::<f32>() - 0.5))
        .collect();
    let n = x.iter().map(|a| a * a).sum::<f32>().sqrt();
    x.iter_mut().for_each(|a| *a /= n);
    x
}

/// Document token vectors (float16, `docs` documents of words from a
/// vocabulary of 300, by topic) and query token vectors (float32, 8 words
/// of a random document each), as multi-vector banks `<name>.npy` and
/// `<name>-q.npy` with their ids.
fn banks(dir: &Path, name: &str, docs: usize, queries: usize, seed: u64) -> (PathBuf, PathBuf) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let words: Vec<Vec<f32>> = (0..300)
        .map(|_| noisy(&mut rng, &[0.0; DIM], 2.0))
        .collect();
    let (mut x, mut off, mut own) = (Vec::new(), vec![0usize], Vec::new());
    for _ in 0..docs {
        let topic = rng.gen_range(0..10);
        let ws: Vec<usize> = (0..rng.gen_range(3..=16))
            .map(|_| topic * 30 + rng.gen_range(0..30))
            .collect();
        for &w in &ws {
            x.extend(noisy(&mut rng, &words[w], 0.3));
        }
        off.push(x.len() / DIM);
        own.push(ws);
    }
    let (mut q, mut qoff) = (Vec::new(), vec![0usize]);
    for _ in 0..queries {
        let ws = &own[rng.gen_range(0..docs)];
        for _ in 0..8 {
            let w = ws[rng.gen_range(0..ws.len())];
            q.extend(noisy(&mut rng, &words[w], 0.5));
        }
        qoff.push(q.len() / DIM);
    }
    let d = dir.join(format!("{name}.npy"));
    let h: Vec<f16> = x.iter().map(|&v| f16::from_f32(v)).collect();
    write_npy(&d, x.len() / DIM, DIM, Vectors::F16(&h), Overwrite::Refuse).unwrap();
    write_offsets(&offsets_path(&d), &off, Overwrite::Refuse).unwrap();
    let ids: Vec<String> = (0..docs).map(|i| format!("doc{i}")).collect();
    std::fs::write(d.with_extension("ids.txt"), ids.join("\n") + "\n").unwrap();
    let qp = dir.join(format!("{name}-q.npy"));
    write_npy(&qp, q.len() / DIM, DIM, Vectors::F32(&q), Overwrite::Refuse).unwrap();
    write_offsets(&offsets_path(&qp), &qoff, Overwrite::Refuse).unwrap();
    (d, qp)
}

/// The run's hits per query: (doc id, score) in rank order.
fn read_run(path: &Path) -> Vec<Vec<(String, f64)>> {
    let mut out: Vec<(String, Vec<(String, f64)>)> = Vec::new();
    for l in std::fs::read_to_string(path).unwrap().lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if out.last().is_none_or(|(q, _)| q != f[0]) {
            out.push((f[0].to_string(), Vec::new()));
        }
        out.last_mut()
            .unwrap()
            .1
            .push((f[2].to_string(), f[4].parse().unwrap()));
    }
    out.into_iter().map(|(_, h)| h).collect()
}

fn search(bank: &Path, queries: &Path, index: Option<&Path>, out: &Path) -> Command {
    let mut c = tandem();
    c.args(["search", "--k", "10", "--threads", "2", "--bank"])
        .arg(bank)
        .arg("--queries")
        .arg(queries)
        .arg("--out")
        .arg(out);
    if let Some(i) = index {
        c.arg("--index").arg(i);
    }
    c
}

#[test]
fn plaid_index_finds_the_exact_maxsim_hits() {
    let dir = tempfile::tempdir().unwrap();
    let (docs, queries) = banks(dir.path(), "docs", 1200, 40, 1);
    let idx = dir.path().join("idx");
    tandem()
        .args(["index", "build", "--threads", "2", "--bank"])
        .arg(&docs)
        .arg("--out")
        .arg(&idx)
        .assert()
        .success()
        .stderr(predicates::str::contains("PLAID"));
    assert!(idx.join("plaid.json").is_file());
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("idx.meta.json")).unwrap()).unwrap();
    assert_eq!(meta["kind"], "plaid");
    assert_eq!(meta["params"]["nbits"], 4);

    let (exact, approx) = (dir.path().join("exact.trec"), dir.path().join("plaid.trec"));
    search(&docs, &queries, None, &exact).assert().success();
    search(&docs, &queries, Some(&idx), &approx)
        .assert()
        .success();
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("plaid.trec.meta.json")).unwrap())
            .unwrap();
    assert_eq!(meta["index"]["kind"], "plaid");
    let (e, a) = (read_run(&exact), read_run(&approx));
    assert_eq!(e.len(), 40);
    assert_eq!(a.len(), 40);
    let mut found = 0;
    for (eq, aq) in e.iter().zip(&a) {
        for (id, s) in eq {
            if let Some((_, t)) = aq.iter().find(|(j, _)| j == id) {
                found += 1;
                // re-ranked by exact MaxSim: the same score
                assert!((s - t).abs() < 1e-4, "{id}: {s} vs {t}");
            }
        }
    }
    let recall = found as f64 / 400.0;
    assert!(recall >= 0.99, "recall@10 against exact MaxSim {recall}");

    // an existing index needs --force; a folder of something else is never replaced
    tandem()
        .args(["index", "build", "--bank"])
        .arg(&docs)
        .arg("--out")
        .arg(&idx)
        .assert()
        .failure()
        .stderr(predicates::str::contains("--force"));
}

#[test]
fn mixed_up_indexes_and_banks_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (docs, queries) = banks(dir.path(), "docs", 150, 3, 2);
    let (other, other_q) = banks(dir.path(), "other", 150, 3, 3);
    let idx = dir.path().join("idx");
    tandem()
        .args(["index", "build", "--nbits", "2", "--bank"])
        .arg(&docs)
        .arg("--out")
        .arg(&idx)
        .assert()
        .success();
    let out = dir.path().join("run.trec");
    let fails = |c: &mut Command, says: &[&str]| {
        let a = c.assert().failure().code(2);
        let err = String::from_utf8_lossy(&a.get_output().stderr).into_owned();
        for s in says {
            assert!(err.contains(s), "{s:?} not in {err}");
        }
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(!out.exists(), "no partial output");
    };
    // an index over another bank
    fails(
        &mut search(&other, &other_q, Some(&idx), &out),
        &[
            "idx",
            "does not match",
            "tandem index build --bank",
            "--force",
        ],
    );
    // a dense bank with a PLAID index
    let dense = dir.path().join("dense.npy");
    let v = vec![0.5f32; 5 * DIM];
    write_npy(&dense, 5, DIM, Vectors::F32(&v), Overwrite::Refuse).unwrap();
    fails(
        &mut search(&dense, &dense, Some(&idx), &out),
        &["a PLAID index", "dense"],
    );
    // a multi-vector bank with an HNSW index
    let hnsw = dir.path().join("dense.hnsw");
    tandem()
        .args(["index", "build", "--bank"])
        .arg(&dense)
        .arg("--out")
        .arg(&hnsw)
        .assert()
        .success();
    fails(
        &mut search(&docs, &queries, Some(&hnsw), &out),
        &["not a PLAID index", "HNSW"],
    );
    // flags of the other kind of index
    let mut c = tandem();
    c.args(["index", "build", "--nbits", "4", "--bank"])
        .arg(&dense)
        .arg("--out")
        .arg(dir.path().join("x"));
    fails(&mut c, &["--nbits", "dense"]);
    let mut c = tandem();
    c.args(["index", "build", "--m", "16", "--bank"])
        .arg(&docs)
        .arg("--out")
        .arg(dir.path().join("y"));
    fails(&mut c, &["--m", "multi-vector"]);
    fails(
        search(&dense, &dense, Some(&hnsw), &out).args(["--ncells", "3"]),
        &["--ncells", "dense"],
    );
    // a damaged file
    let res = idx.join("residuals.npy");
    let mut bytes = std::fs::read(&res).unwrap();
    bytes.truncate(bytes.len() - 8);
    std::fs::write(&res, bytes).unwrap();
    fails(
        &mut search(&docs, &queries, Some(&idx), &out),
        &["residuals.npy", "--force"],
    );
    assert!(!dir.path().join("x").exists() && !dir.path().join("y").exists());
}

/// `tandem beir --index plaid` with a ColBERT: the index is built over the
/// cached corpus bank, cached beside it and reused, and the run's ranking
/// is exact MaxSim's on a corpus this small.
#[test]
fn beir_evaluates_through_a_cached_plaid_index() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("beir");
    std::fs::create_dir_all(data.join("qrels")).unwrap();
    let words = [
        "protein", "folding", "cell", "gene", "vaccine", "virus", "tumour", "brain", "neuron",
        "insulin", "heart", "lung", "bone", "blood", "immune", "drug", "trial", "mouse",
        "receptor", "enzyme",
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let (mut corpus, mut queries, mut qrels) = (
        String::new(),
        String::new(),
        "query-id\tcorpus-id\tscore\n".to_string(),
    );
    for i in 0..120 {
        let text: Vec<&str> = (0..rng.gen_range(4..12))
            .map(|_| words[rng.gen_range(0..words.len())])
            .collect();
        corpus.push_str(&format!(
            "{{\"_id\": \"d{i}\", \"title\": \"\", \"text\": \"{}\"}}\n",
            text.join(" ")
        ));
        if i % 6 == 0 {
            queries.push_str(&format!(
                "{{\"_id\": \"q{i}\", \"text\": \"{} {}\"}}\n",
                text[0], text[1]
            ));
            qrels.push_str(&format!("q{i}\td{i}\t1\n"));
        }
    }
    std::fs::write(data.join("corpus.jsonl"), corpus).unwrap();
    std::fs::write(data.join("queries.jsonl"), queries).unwrap();
    std::fs::write(data.join("qrels/test.tsv"), qrels).unwrap();
    let model =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../text/tests/fixtures/colbert-modernbert");
    let beir = |index: &str, out: &str| -> serde_json::Value {
        let a = tandem()
            .args(["beir", "--json", "--k", "10", "--index", index, "--model"])
            .arg(&model)
            .arg("--data")
            .arg(&data)
            .arg("--out")
            .arg(dir.path().join(out))
            .assert()
            .success();
        serde_json::from_slice(&a.get_output().stdout).unwrap()
    };
    let exact = beir("exact", "exact.run");
    let first = beir("plaid", "plaid.run");
    let again = beir("plaid", "again.run");
    assert_eq!(exact["index"]["kind"], "exact-maxsim");
    assert_eq!(first["index"]["kind"], "plaid");
    assert_eq!(first["index"]["reused"], false);
    assert_eq!(again["index"]["reused"], true);
    assert_eq!(first["index"]["nbits"], 4);
    assert!(Path::new(first["index"]["path"].as_str().unwrap())
        .join("plaid.json")
        .is_file());
    assert_eq!(exact["metrics"], first["metrics"]);
    let read = |p: &str| std::fs::read_to_string(dir.path().join(p)).unwrap();
    assert_eq!(read("plaid.run"), read("again.run"));
    let ids = |t: String| -> Vec<String> {
        t.lines()
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .collect()
    };
    assert_eq!(ids(read("exact.run")), ids(read("plaid.run")));
}
