//! `tandem index build` and `tandem search` end to end on small .npy files.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use predicates::prelude::PredicateBooleanExt;
use predicates::str::contains;
use tandem_bank::{write_npy, Overwrite, Vectors};

fn npy(dir: &Path, name: &str, rows: usize, dim: usize, data: &[f32]) -> PathBuf {
    let p = dir.join(name);
    write_npy(&p, rows, dim, Vectors::F32(data), Overwrite::Refuse).unwrap();
    p
}

fn tandem() -> Command {
    Command::cargo_bin("tandem").unwrap()
}

/// Bank of 4 rows in 2-D and 2 queries with a known ranking.
fn fixture(dir: &Path) -> (PathBuf, PathBuf) {
    let bank = npy(
        dir,
        "bank.npy",
        4,
        2,
        &[1.0, 0.0, 0.0, 1.0, 0.7, 0.7, -1.0, 0.0],
    );
    let queries = npy(dir, "q.npy", 2, 2, &[1.0, 0.2, 0.0, -1.0]);
    (bank, queries)
}

fn run_lines(path: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect()
}

#[test]
fn exact_search_writes_a_ranked_run_and_its_meta() {
    let dir = tempfile::tempdir().unwrap();
    let (bank, q) = fixture(dir.path());
    let out = dir.path().join("run.trec");
    tandem()
        .args(["search", "--k", "3", "--threads", "1", "--bank"])
        .arg(&bank)
        .arg("--queries")
        .arg(&q)
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    let lines = run_lines(&out);
    // q0 = (1, .2): row0 1.0, row2 0.84, row1 0.2; q1 = (0, -1): row0 0, row3 0 (tie -> lower row), row2 -0.7
    let got: Vec<(&str, &str, &str)> = lines
        .iter()
        .map(|l| (l[0].as_str(), l[2].as_str(), l[3].as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("0", "0", "1"),
            ("0", "2", "2"),
            ("0", "1", "3"),
            ("1", "0", "1"),
            ("1", "3", "2"),
            ("1", "2", "3")
        ]
    );
    assert!(lines
        .iter()
        .all(|l| l.len() == 6 && l[1] == "Q0" && l[5] == "tandem"));
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("run.trec.meta.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(meta["k"], 3);
    assert_eq!(meta["metric"], "ip");
    assert_eq!(meta["index"]["kind"], "flat");
    assert_eq!(meta["queries"]["rows"], 2);
    assert!(meta["queries_per_second"].as_f64().unwrap() > 0.0);
}

#[test]
fn ids_and_exclusions_by_doc_id() {
    let dir = tempfile::tempdir().unwrap();
    let (bank, q) = fixture(dir.path());
    let ids = dir.path().join("ids.txt");
    std::fs::write(&ids, "a\nb\nc\nd\n").unwrap();
    let qids = dir.path().join("qids.txt");
    std::fs::write(&qids, "first\nsecond\n").unwrap();
    let ex = dir.path().join("ex.txt");
    std::fs::write(&ex, "a c\n\n").unwrap();
    let out = dir.path().join("run.trec");
    tandem()
        .args([
            "search", "--k", "2", "--tag", "t1", "--metric", "cosine", "--bank",
        ])
        .arg(&bank)
        .arg("--ids")
        .arg(&ids)
        .arg("--queries")
        .arg(&q)
        .arg("--query-ids")
        .arg(&qids)
        .arg("--exclude")
        .arg(&ex)
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    let got: Vec<(String, String)> = run_lines(&out)
        .into_iter()
        .map(|l| (l[0].clone(), l[2].clone()))
        .collect();
    let want = [
        ("first", "b"),
        ("first", "d"),
        ("second", "a"),
        ("second", "d"),
    ];
    assert_eq!(got, want.map(|(a, b)| (a.to_string(), b.to_string())));
}

#[test]
fn exclusions_by_row_number_and_bad_exclude_files() {
    let dir = tempfile::tempdir().unwrap();
    let (bank, q) = fixture(dir.path());
    let ex = dir.path().join("ex.txt");
    std::fs::write(&ex, "0\n0 3\n").unwrap();
    let out = dir.path().join("run.trec");
    let search = |ex: &Path, out: &Path| {
        let mut c = tandem();
        c.args(["search", "--k", "1", "--bank"])
            .arg(&bank)
            .arg("--queries")
            .arg(&q)
            .arg("--exclude")
            .arg(ex)
            .arg("--out")
            .arg(out);
        c
    };
    search(&ex, &out).assert().success();
    let got: Vec<String> = run_lines(&out).into_iter().map(|l| l[2].clone()).collect();
    // q0 without row 0: row 2 (0.84); q1 without rows 0, 3: row 2 (-0.7) beats row 1 (-1).
    assert_eq!(got, ["2", "2"]);

    std::fs::write(&ex, "0\n").unwrap();
    let out2 = dir.path().join("run2.trec");
    search(&ex, &out2)
        .assert()
        .code(2)
        .stderr(contains("1 lines for 2 queries"));
    std::fs::write(&ex, "0\n9\n").unwrap();
    search(&ex, &out2)
        .assert()
        .code(2)
        .stderr(contains("ex.txt:2").and(contains("--ids")));
    assert!(!out2.exists(), "no partial output");
}

#[test]
fn refuses_to_overwrite_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let (bank, q) = fixture(dir.path());
    let out = dir.path().join("run.trec");
    std::fs::write(&out, "keep me").unwrap();
    let mut c = tandem();
    c.args(["search", "--k", "1", "--bank"])
        .arg(&bank)
        .arg("--queries")
        .arg(&q)
        .arg("--out")
        .arg(&out);
    c.assert()
        .code(2)
        .stderr(contains("already exists").and(contains("--force")));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "keep me");
    let mut c = tandem();
    c.args(["search", "--k", "1", "--force", "--bank"])
        .arg(&bank)
        .arg("--queries")
        .arg(&q)
        .arg("--out")
        .arg(&out);
    c.assert().success();
    assert_eq!(run_lines(&out).len(), 2);
}

#[test]
fn bad_requests_fail_clearly_without_output() {
    let dir = tempfile::tempdir().unwrap();
    let (bank, q) = fixture(dir.path());
    let out = dir.path().join("run.trec");
    let base = |k: &str, queries: &Path| {
        let mut c = tandem();
        c.args(["search", "--k", k, "--bank"])
            .arg(&bank)
            .arg("--queries")
            .arg(queries)
            .arg("--out")
            .arg(&out);
        c
    };
    base("5", &q)
        .assert()
        .code(2)
        .stderr(contains("only 4 rows").and(contains("--k 4")));
    base("0", &q).assert().code(2).stderr(contains("--k 0"));
    let q3 = npy(dir.path(), "q3.npy", 1, 3, &[1.0, 2.0, 3.0]);
    base("1", &q3).assert().code(2).stderr(
        contains("q3.npy")
            .and(contains("dimension 3"))
            .and(contains("dimension 2")),
    );
    let qnan = npy(dir.path(), "qnan.npy", 2, 2, &[1.0, 2.0, f32::NAN, 0.0]);
    base("1", &qnan)
        .assert()
        .code(2)
        .stderr(contains("qnan.npy").and(contains("query row 1")));
    assert!(!out.exists());
}

#[test]
fn hnsw_index_build_search_and_stale_index() {
    let dir = tempfile::tempdir().unwrap();
    let (rows, dim) = (600, 8);
    let data: Vec<f32> = (0..rows * dim)
        .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
        .collect();
    let bank = npy(dir.path(), "bank.npy", rows, dim, &data);
    let q = npy(dir.path(), "q.npy", 20, dim, &data[..20 * dim]);
    let idx = dir.path().join("bank.hnsw");
    let build = || {
        let mut c = tandem();
        c.args([
            "index",
            "build",
            "--m",
            "16",
            "--ef-construction",
            "100",
            "--metric",
            "cosine",
            "--scalar",
            "f16",
            "--bank",
        ])
        .arg(&bank)
        .arg("--out")
        .arg(&idx);
        c
    };
    // Bad graph parameters and a missing output folder fail before building.
    for (flag, value, what) in [
        ("--m", "1", "--m"),
        ("--m", "0", "--m"),
        ("--ef-construction", "0", "--ef-construction"),
    ] {
        tandem()
            .args(["index", "build", flag, value, "--bank"])
            .arg(&bank)
            .arg("--out")
            .arg(&idx)
            .assert()
            .code(2)
            .stderr(contains(what));
    }
    let nodir = dir.path().join("nodir").join("b.usearch");
    tandem()
        .args(["index", "build", "--bank"])
        .arg(&bank)
        .arg("--out")
        .arg(&nodir)
        .assert()
        .code(2)
        .stderr(contains("b.usearch"))
        .stderr(contains("does not exist"))
        .stderr(contains("internal").not());
    build().assert().success();
    assert!(idx.exists() && dir.path().join("bank.hnsw.json").exists());
    build().assert().code(2).stderr(contains("--force"));

    let search = |extra: &[&str], out: &str| {
        let mut c = tandem();
        c.args(["search", "--k", "10", "--ef", "128", "--bank"])
            .arg(&bank)
            .arg("--queries")
            .arg(&q)
            .arg("--index")
            .arg(&idx)
            .arg("--out")
            .arg(dir.path().join(out))
            .args(extra);
        c
    };
    search(&[], "hnsw.trec").assert().success();
    let lines = run_lines(&dir.path().join("hnsw.trec"));
    assert_eq!(lines.len(), 200);
    // Each query is a bank row: with cosine it is its own best hit.
    for (i, chunk) in lines.chunks(10).enumerate() {
        assert_eq!(chunk[0][2], i.to_string());
    }
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("hnsw.trec.meta.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(meta["index"]["scalar"], "f16");
    assert_eq!(
        (
            meta["index"]["kind"].as_str(),
            meta["index"]["ef"].as_u64(),
            meta["metric"].as_str()
        ),
        (Some("hnsw"), Some(128), Some("cosine"))
    );
    search(&["--metric", "ip"], "x.trec")
        .assert()
        .code(2)
        .stderr(contains("built with metric cosine"));

    // A different bank at the same path: the sidecar no longer matches.
    std::fs::remove_file(&bank).unwrap();
    let mut other = data.clone();
    other[0] += 1.0;
    npy(dir.path(), "bank.npy", rows, dim, &other);
    search(&[], "stale.trec")
        .assert()
        .code(2)
        .stderr(contains("does not match").and(contains("--force")));
    assert!(!dir.path().join("stale.trec").exists());
}

#[test]
fn ef_without_an_index_is_refused_not_ignored() {
    tandem()
        .args([
            "search",
            "--bank",
            "b.npy",
            "--queries",
            "q.npy",
            "--ef",
            "10",
        ])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("--index"));
}

#[test]
fn both_precisions_write_the_same_run() {
    let dir = tempfile::tempdir().unwrap();
    // 300 rows in 40-D with near-ties: enough for the int8 scan's groups.
    let data: Vec<f32> = (0..300 * 40)
        .map(|i| {
            ((i * 7919 % 1009) as f32 / 1009.0 - 0.5) * if i % 3 == 0 { 1.0 } else { 1.0 + 1e-7 }
        })
        .collect();
    let bank = npy(dir.path(), "bank.npy", 300, 40, &data);
    let q = npy(dir.path(), "q.npy", 5, 40, &data[40 * 10..40 * 15]);
    let mut runs = Vec::new();
    for precision in ["auto", "f32"] {
        let out = dir.path().join(format!("{precision}.trec"));
        tandem()
            .args([
                "search",
                "--k",
                "50",
                "--metric",
                "cosine",
                "--precision",
                precision,
                "--bank",
            ])
            .arg(&bank)
            .arg("--queries")
            .arg(&q)
            .arg("--out")
            .arg(&out)
            .assert()
            .success();
        let meta: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join(format!("{precision}.trec.meta.json")))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(meta["index"]["precision"], precision);
        runs.push(std::fs::read_to_string(&out).unwrap());
    }
    assert_eq!(runs[0], runs[1]);
    tandem()
        .args(["search", "--precision", "bf16", "--bank"])
        .arg(&bank)
        .arg("--queries")
        .arg(&q)
        .assert()
        .failure()
        .stderr(contains("unknown precision").and(contains("auto")));
}

#[test]
fn a_bfloat16_index_gives_exact_scores_and_bad_scalars_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (rows, dim) = (400, 32);
    let data: Vec<f32> = (0..rows * dim)
        .map(|i| ((i * 7919 % 1009) as f32 / 1009.0) - 0.5)
        .collect();
    let bank = npy(dir.path(), "bank.npy", rows, dim, &data);
    let q = npy(dir.path(), "q.npy", 10, dim, &data[dim * 50..dim * 60]);
    let idx = dir.path().join("bank.usearch");
    tandem()
        .args(["index", "build", "--scalar", "int4", "--bank"])
        .arg(&bank)
        .arg("--out")
        .arg(&idx)
        .assert()
        .code(2)
        .stderr(contains("int4").and(contains("bf16")));
    // The rows have different lengths: an int8 graph (angles) is refused for ip.
    tandem()
        .args(["index", "build", "--scalar", "i8", "--bank"])
        .arg(&bank)
        .arg("--out")
        .arg(&idx)
        .assert()
        .code(2)
        .stderr(contains("bank.npy").and(contains("--metric cosine")));
    assert!(!idx.exists());
    tandem()
        .args(["index", "build", "--scalar", "bf16", "--m", "16", "--bank"])
        .arg(&bank)
        .arg("--out")
        .arg(&idx)
        .assert()
        .success()
        .stderr(contains("scalar bf16"));
    let search = |out: &str, index: bool| {
        let mut c = tandem();
        c.args(["search", "--k", "20", "--bank"])
            .arg(&bank)
            .arg("--queries")
            .arg(&q)
            .arg("--out")
            .arg(dir.path().join(out));
        if index {
            c.args(["--ef", "64", "--index"]).arg(&idx);
        }
        c.assert().success();
        run_lines(&dir.path().join(out))
    };
    let exact = search("exact.trec", false);
    let hnsw = search("hnsw.trec", true);
    assert_eq!(hnsw.len(), 200);
    // Every hit the graph finds carries the exact search's score, printed
    // the same; the graph finds nearly all of them.
    let exact_hits: std::collections::HashSet<(&str, &str, &str)> = exact
        .iter()
        .map(|l| (l[0].as_str(), l[2].as_str(), l[4].as_str()))
        .collect();
    let found = hnsw
        .iter()
        .filter(|l| exact_hits.contains(&(l[0].as_str(), l[2].as_str(), l[4].as_str())))
        .count();
    assert!(found >= 190, "{found} of 200 hits as exact search has them");
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("hnsw.trec.meta.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(meta["index"]["scalar"], "bf16");
}
