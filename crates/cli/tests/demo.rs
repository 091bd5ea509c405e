//! `tandem demo`: the README's main job runs end to end, writes its report,
//! and never replaces anything but an earlier demo.

use assert_cmd::Command;
use predicates::str::contains;

fn tandem() -> Command {
    Command::cargo_bin("tandem").unwrap()
}

#[test]
fn demo_trains_beats_the_baselines_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    tandem()
        .args(["demo", "--threads", "2", "--out"])
        .arg(&out)
        .assert()
        .success()
        .stdout(contains("mean of context (baseline)"))
        .stdout(contains("gru tower"))
        .stdout(contains("report: "));
    for f in [
        "demo.json",
        "world/dataset.json",
        "run/report.md",
        "run/recall.svg",
        "run/test.run",
        "run/config.toml",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("demo.json")).unwrap()).unwrap();
    let tower = report["test"]["recall@10"].as_f64().unwrap();
    let mean = report["baselines"]["mean"]["recall@10"].as_f64().unwrap();
    // The synthetic world hides the next vector behind a learnable map of the
    // context: a trained GRU tower must beat the mean of the context by far.
    assert!(tower > mean + 0.3, "tower {tower} vs mean {mean}");
    // The run file scored by eval is the tower's ranking.
    let from_run = report["eval"]["mean"]["recall@10"].as_f64().unwrap();
    assert!((from_run - tower).abs() < 1e-9, "{from_run} vs {tower}");

    // A finished demo is refused without --force, and rerun with it.
    tandem()
        .args(["demo", "--out"])
        .arg(&out)
        .assert()
        .code(2)
        .stderr(contains("--force"));
    tandem()
        .args(["demo", "--force", "--threads", "2", "--out"])
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
