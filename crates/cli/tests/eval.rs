//! `tandem eval` end to end on tiny fixtures.

use std::fs;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use predicates::prelude::*;

const QRELS: &str = "q1 0 d1 2\nq1 0 d2 0\nq1 0 d3 1\nq2 0 d4 1\nq3 0 d9 1\n";
// q1: d2 (0.9) first, then d3/d1 tie at 0.5 -> d3 before d1 (doc id descending).
const RUN_A: &str =
    "q1 Q0 d1 1 0.5 a\nq1 Q0 d3 2 0.5 a\nq1 Q0 d2 3 0.9 a\nq2 Q0 d4 1 1.0 a\nq7 Q0 d1 1 1.0 a\n";
const RUN_B: &str =
    "q1 Q0 d1 1 0.9 b\nq1 Q0 d3 2 0.8 b\nq2 Q0 d5 1 1.0 b\nq2 Q0 d4 2 0.5 b\nq3 Q0 d9 1 1.0 b\n";

fn files(dir: &Path, items: &[(&str, &str)]) -> Vec<PathBuf> {
    items
        .iter()
        .map(|(name, text)| {
            let p = dir.join(name);
            fs::write(&p, text).unwrap();
            p
        })
        .collect()
}

/// `tandem eval --qrels QRELS <runs...> <extra...>`; one run is `--run`, two are `--compare`.
fn eval(paths: &[PathBuf], extra: &[&str]) -> Command {
    let mut c = Command::cargo_bin("tandem").unwrap();
    c.arg("eval").arg("--qrels").arg(&paths[0]);
    c.arg(if paths.len() == 2 {
        "--run"
    } else {
        "--compare"
    });
    c.args(&paths[1..]).args(extra);
    c
}

fn stdout(c: &mut Command) -> String {
    String::from_utf8(c.assert().success().get_output().stdout.clone()).unwrap()
}

#[test]
fn prints_an_aligned_table_and_per_query_rows() {
    let dir = tempfile::tempdir().unwrap();
    let p = files(dir.path(), &[("q.txt", QRELS), ("a.run", RUN_A)]);
    // q1: RR 1/2, P@2 1/2, recall@1 0; q2: 1, 1/2, 1. Means over q1, q2 (q3 unanswered, q7 unjudged).
    assert_eq!(
        stdout(&mut eval(&p, &["--metrics", "recip_rank,P@2,recall@1"])),
        "measure     qid  value\nrecip_rank  all  0.7500\nP@2         all  0.5000\nrecall@1    all  0.5000\n"
    );
    let text = stdout(&mut eval(
        &p,
        &["--metrics", "recip_rank", "--per-query", "--complete"],
    ));
    assert_eq!(
        text,
        "measure     qid  value\nrecip_rank  q1   0.5000\nrecip_rank  q2   1.0000\nrecip_rank  q3   0.0000\nrecip_rank  all  0.5000\n"
    );
}

#[test]
fn json_parses_and_out_is_written_once() {
    let dir = tempfile::tempdir().unwrap();
    let p = files(dir.path(), &[("q.txt", QRELS), ("a.run", RUN_A)]);
    let report = dir.path().join("report.json");
    let out = report.to_str().unwrap();
    let args = ["--json", "--metrics", "ndcg@10,mrr@10", "--out", out];
    let v: serde_json::Value = serde_json::from_str(&stdout(&mut eval(&p, &args))).unwrap();
    assert_eq!(v["queries"], 2);
    assert_eq!(v["mean"]["recip_rank@10"], 0.75);
    assert!(v.get("per_query").is_none());
    let saved: serde_json::Value = serde_json::from_slice(&fs::read(&report).unwrap()).unwrap();
    assert_eq!(saved["per_query"]["q1"]["recip_rank@10"], 0.5);
    eval(&p, &args)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--force"));
    eval(&p, &[&args[..], &["--force"]].concat())
        .assert()
        .success();
}

/// `tandem eval` over `p` exits 2, prints nothing on stdout, and says `want`.
fn fails_with(p: &[PathBuf], want: &str) {
    eval(p, &[])
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicate::str::contains(want));
}

#[test]
fn bad_qrels_line_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = files(
        dir.path(),
        &[("q.txt", "q1 0 d1 1\nq1 0 d2\n"), ("a.run", RUN_A)],
    );
    let want = format!("{}:2: found 3 fields, expected 4", p[0].display());
    fails_with(&p, &want);
}

#[test]
fn duplicate_doc_in_run_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let p = files(
        dir.path(),
        &[
            ("q.txt", QRELS),
            ("a.run", "q1 Q0 d1 1 0.5 a\nq1 Q0 d1 2 0.4 a\n"),
        ],
    );
    let want = format!(
        "{}:2: query q1: document d1 is ranked twice",
        p[1].display()
    );
    fails_with(&p, &want);
}

#[test]
fn unknown_metric_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let p = files(dir.path(), &[("q.txt", QRELS), ("a.run", RUN_A)]);
    eval(&p, &["--metrics", "ndcg@10,bleu"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("unknown measure \"bleu\""));
}

#[test]
fn compare_prints_p_values() {
    let dir = tempfile::tempdir().unwrap();
    let p = files(
        dir.path(),
        &[("q.txt", QRELS), ("a.run", RUN_A), ("b.run", RUN_B)],
    );
    for test in ["randomization", "t-test"] {
        let text = stdout(&mut eval(
            &p,
            &[
                "--metrics",
                "recip_rank,P@1",
                "--test",
                test,
                "--trials",
                "2000",
            ],
        ));
        // Queries q1, q2, q3 (q3 only in B). recip_rank A: 1/2, 1, 0; B: 1, 1/2, 1.
        assert!(
            text.contains("measure           A        B      diff   p-value\n"),
            "{text}"
        );
        assert!(
            text.contains("recip_rank   0.5000   0.8333   +0.3333"),
            "{text}"
        );
        assert!(text.contains("3 queries; diff = B - A"), "{text}");
    }
    let json = stdout(&mut eval(
        &p,
        &["--json", "--metrics", "recip_rank", "--test", "t-test"],
    ));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let p_value = v["measures"][0]["p_value"].as_f64().unwrap();
    // scipy.stats.ttest_rel([0.5, 1, 0], [1, 0.5, 1]).pvalue
    assert!((p_value - 0.5285954792089683).abs() < 1e-12, "{p_value}");
    assert_eq!(v["measures"][0]["significant"], false);
}
