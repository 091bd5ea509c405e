//! `tandem demo`: the README's main job runs end to end, writes its report,
//! and never replaces anything but an earlier demo.

use assert_cmd::Command;
use predicates::str::contains;

fn tandem() -> Command {
    Command::cargo_bin("tandem").unwrap()
}

#[test]
fn demo_runs_the_pipeline_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    tandem()
        .args(["demo", "--out"])
        .arg(&out)
        .assert()
        .success()
        .stdout(contains("mean of context vectors"))
        .stdout(contains("HNSW recall@100"));
    for f in [
        "demo.json",
        "hnsw-mean.trec",
        "qrels.test.txt",
        "world/dataset.json",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("demo.json")).unwrap()).unwrap();
    let exact = report["baseline"]["results"]["mean"]["recall@100"]
        .as_f64()
        .unwrap();
    let hnsw = report["hnsw"]["eval"]["mean"]["recall@100"]
        .as_f64()
        .unwrap();
    // The synthetic world makes the mean of the context a useful query, and
    // HNSW finds (almost) what exact search finds.
    assert!(exact > 0.3, "exact recall@100 {exact}");
    assert!((exact - hnsw).abs() < 0.02, "hnsw {hnsw} vs exact {exact}");
    // No temporary directory is left beside the output.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("demo")]);

    // A second run refuses without --force, and replaces the demo with it.
    tandem()
        .args(["demo", "--out"])
        .arg(&out)
        .assert()
        .code(2)
        .stderr(contains("--force"));
    tandem()
        .args(["demo", "--force", "--out"])
        .arg(&out)
        .assert()
        .success();
}

#[test]
fn demo_never_replaces_a_directory_it_did_not_write() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
    tandem()
        .args(["demo", "--force", "--out"])
        .arg(dir.path())
        .assert()
        .code(2)
        .stderr(contains("not an earlier demo"));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("notes.txt")).unwrap(),
        "mine"
    );
}
