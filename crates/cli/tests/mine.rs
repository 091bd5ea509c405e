//! `tandem mine` against sentence-transformers' `mine_hard_negatives` with
//! the real all-MiniLM-L6-v2: 40 SciFact training queries, a 300-document
//! corpus, two settings (a rank window with a relative margin as triplets;
//! an absolute margin with a score cap as n-tuples). The goldens are
//! sentence-transformers' output (`bench/make_mine_golden.py`): the same
//! rows in the same order, the same texts, cosines within 1e-4. Then the
//! mined file trains, and bad settings fail cleanly.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use predicates::prelude::*;
use predicates::str::contains;
use serde_json::Value;

fn tandem() -> Command {
    Command::cargo_bin("tandem").unwrap()
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mine")
}

fn read_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `tandem mine` of the fixture pairs with `model` into `out`, candidates
/// from the fixture corpus (or `corpus`).
fn mine_in(model: &Path, out: &Path, corpus: &Path, settings: &[&str]) -> Command {
    let mut c = tandem();
    c.arg("mine")
        .arg("--model")
        .arg(model)
        .arg("--data")
        .arg(fixtures().join("pairs.jsonl"))
        .arg("--corpus")
        .arg(corpus)
        .arg("--out")
        .arg(out)
        .args(["--threads", "2"])
        .args(settings);
    c
}

fn mine_cmd(model: &Path, out: &Path, settings: &[&str]) -> Command {
    mine_in(model, out, &fixtures().join("corpus.jsonl"), settings)
}

fn mine(model: &Path, out: &Path, settings: &[&str]) {
    let mut s = vec!["--scores"];
    s.extend_from_slice(settings);
    mine_cmd(model, out, &s).assert().success();
}

/// FlagEmbedding lines of `tandem mine --num-negatives 2` on the fixture
/// pairs: one per pair, two negatives each, best first, never a positive.
/// Returns each line's positive score and negative scores.
fn flag_lines_with_two_negatives(lines: &[Value]) -> Vec<(f64, Vec<f64>)> {
    assert_eq!(lines.len(), 45, "one line per pair");
    lines
        .iter()
        .map(|l| {
            let neg = l["neg"].as_array().unwrap();
            let scores: Vec<f64> = l["neg_scores"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            assert_eq!(neg.len(), 2);
            assert!(scores[0] >= scores[1], "best first");
            assert!(
                !neg.contains(&l["pos"][0]),
                "a positive is never a negative"
            );
            (l["pos_scores"][0].as_f64().unwrap(), scores)
        })
        .collect()
}

/// The rows of `got` are those of `want`: same keys in the same order,
/// same texts, scores within 1e-4.
fn same_rows(got: &[Value], want: &[Value]) {
    assert_eq!(got.len(), want.len(), "row count");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let (g, w) = (g.as_object().unwrap(), w.as_object().unwrap());
        let keys = |o: &serde_json::Map<String, Value>| o.keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(g), keys(w), "row {i}: columns");
        for (k, wv) in w {
            if k == "scores" {
                let (gs, ws) = (g[k].as_array().unwrap(), wv.as_array().unwrap());
                assert_eq!(gs.len(), ws.len());
                for (a, b) in gs.iter().zip(ws) {
                    let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
                    assert!((a - b).abs() < 1e-4, "row {i}: score {a} vs {b}");
                }
            } else {
                assert_eq!(&g[k], wv, "row {i}: {k}");
            }
        }
    }
}

#[test]
fn mines_what_sentence_transformers_mines() {
    let Some(model) = tandem_io::real_model(env!("CARGO_MANIFEST_DIR"), "all-MiniLM-L6-v2") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let relative = dir.path().join("relative.jsonl");
    mine(
        &model,
        &relative,
        &[
            "--range-min",
            "2",
            "--range-max",
            "20",
            "--relative-margin",
            "0.05",
            "--num-negatives",
            "3",
        ],
    );
    same_rows(
        &read_lines(&relative),
        &read_lines(&fixtures().join("st_relative.jsonl")),
    );
    let absolute = dir.path().join("absolute.jsonl");
    mine(
        &model,
        &absolute,
        &[
            "--absolute-margin",
            "0",
            "--max-score",
            "0.6",
            "--num-negatives",
            "4",
            "--output-format",
            "n-tuple",
        ],
    );
    same_rows(
        &read_lines(&absolute),
        &read_lines(&fixtures().join("st_absolute.jsonl")),
    );
    // the report beside it, and no second run over it without --force
    let report: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("absolute.mine.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        report["settings"]["range_max"],
        4 * 10 + 2,
        "two positives at most"
    );
    assert_eq!(report["counts"]["queries"], 40);
    mine_cmd(&model, &absolute, &[])
        .assert()
        .failure()
        .stderr(contains("exists; fix: pass --force"));
}

#[test]
fn mined_flag_lines_train_with_distillation_and_bad_settings_fail() {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../text/tests/fixtures/bert");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("flag.jsonl");
    let flag = |seed: &'static str| {
        [
            "--output-format",
            "flag",
            "--sampling",
            "random",
            "--num-negatives",
            "2",
            "--range-max",
            "30",
            "--seed",
            seed,
        ]
    };
    mine_cmd(&model, &out, &flag("7")).assert().success();
    let lines = read_lines(&out);
    flag_lines_with_two_negatives(&lines);
    // the same seed draws the same sample; another seed another one
    let again = dir.path().join("again.jsonl");
    let other = dir.path().join("other.jsonl");
    for (path, seed) in [(&again, "7"), (&other, "8")] {
        mine_cmd(&model, path, &flag(seed)).assert().success();
    }
    assert_eq!(read_lines(&again), lines);
    assert_ne!(read_lines(&other), lines);
    // the FlagEmbedding lines train a MarginMSE run
    tandem()
        .args(["train", "--task", "dense", "--text-loss", "marginmse"])
        .args(["--epochs", "1", "--batch", "8", "--threads", "2"])
        .arg("--model")
        .arg(&model)
        .arg("--data")
        .arg(&out)
        .arg("--out")
        .arg(dir.path().join("run"))
        .assert()
        .success();
    // bad settings: one error naming the fix, nothing written
    let bad = dir.path().join("bad.jsonl");
    let settings = [
        "--range-min",
        "5",
        "--range-max",
        "6",
        "--num-negatives",
        "3",
    ];
    mine_cmd(&model, &bad, &settings)
        .assert()
        .failure()
        .stderr(contains("only 1 candidates remain").and(contains("--range-max")));
    assert!(!bad.exists());
    let missing = dir.path().join("missing.jsonl");
    mine_in(&model, &bad, &missing, &[])
        .assert()
        .failure()
        .stderr(contains("missing.jsonl"));
    assert!(!bad.exists());
}

/// A ColBERT mines by MaxSim (sums over the query tokens, not cosines),
/// says so in its report, and its FlagEmbedding lines train the ColBERT
/// with PyLate's normalised KL distillation.
#[test]
fn a_colbert_mines_by_maxsim_and_distils_from_its_lines() {
    let model =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../text/tests/fixtures/colbert-modernbert");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("flag.jsonl");
    let settings = [
        "--output-format",
        "flag",
        "--num-negatives",
        "2",
        "--range-max",
        "30",
    ];
    mine_cmd(&model, &out, &settings)
        .assert()
        .success()
        .stderr(contains("MaxSim scores"));
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("flag.mine.json")).unwrap())
            .unwrap();
    assert_eq!(report["scores_are"], "maxsim");
    for (pos, neg) in flag_lines_with_two_negatives(&read_lines(&out)) {
        // at least 32 query tokens (the expansion length), each adding its
        // best cosine: far past any cosine
        assert!(pos > 1.0 && neg[0] > 1.0, "{pos} {neg:?}");
    }
    tandem()
        .args(["train", "--task", "dense", "--text-loss", "kl"])
        .args(["--distill-normalize", "true", "--negatives", "2"])
        .args(["--epochs", "1", "--batch", "8", "--threads", "2"])
        .arg("--model")
        .arg(&model)
        .arg("--data")
        .arg(&out)
        .arg("--out")
        .arg(dir.path().join("run"))
        .assert()
        .success();
    assert!(dir.path().join("run/model/1_Dense").is_dir());
}
