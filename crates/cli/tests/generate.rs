//! `tandem generate`: a trained next-vector model generates through the
//! SNAP / BLEND / NOVEL decoder, per lane, with telemetry, and a retrieval
//! over its time budget goes NOVEL with the reason recorded.

use assert_cmd::Command;
use predicates::str::contains;
use serde_json::Value;

fn tandem() -> Command {
    Command::cargo_bin("tandem").unwrap()
}

fn lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn generate_with_lanes_telemetry_and_fallbacks() {
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path().join("world");
    tandem()
        .args([
            "synth", "--rows", "3000", "--dim", "32", "--seed", "7", "--out",
        ])
        .arg(&w)
        .assert()
        .success();
    let run = dir.path().join("lvm");
    tandem()
        .args([
            "train",
            "--max-steps",
            "30",
            "--lr",
            "2e-3",
            "--warmup",
            "5",
            "--threads",
            "2",
        ])
        .args([
            "--loss-infonce",
            "0.5",
            "--loss-cosine",
            "1",
            "--best-metric",
            "cosine",
            "--data",
        ])
        .arg(&w)
        .arg("--out")
        .arg(&run)
        .assert()
        .success();
    let lanes = dir.path().join("lanes.toml");
    std::fs::write(
        &lanes,
        "[[lane]]\nname = \"loose\"\nsnap = 0.3\nnovel = 0.1\n",
    )
    .unwrap();
    let out = dir.path().join("gen.jsonl");
    let gen = |lane: &str, budget: &str| {
        let mut c = tandem();
        c.args([
            "generate", "--start", "0,1,2", "--steps", "6", "--force", "--lane", lane,
        ])
        .args(["--budget-ms", budget, "--lvm"])
        .arg(&run)
        .arg("--data")
        .arg(&w)
        .arg("--lanes")
        .arg(&lanes)
        .arg("--out")
        .arg(&out);
        c
    };
    gen("loose", "1000")
        .assert()
        .success()
        .stdout(contains("| loose | 6 |"));
    let steps = lines(&out);
    assert_eq!(steps.len(), 6);
    for s in &steps {
        let d = s["decision"].as_str().unwrap();
        assert!(["SNAP", "BLEND", "NOVEL"].contains(&d), "{s}");
        let c = s["cosine"].as_f64().unwrap();
        match d {
            "SNAP" => assert!(c >= 0.3 && s["row"].is_u64(), "{s}"),
            "NOVEL" => assert!(c <= 0.1, "{s}"),
            _ => assert!(s["alpha"].as_f64().unwrap() > 0.0, "{s}"),
        }
        // The starting rows are never snapped to.
        assert!(![0, 1, 2].contains(&s["row"].as_u64().unwrap_or(99)), "{s}");
    }
    // A retrieval budget of 0 ms: every step NOVEL, the reason recorded.
    gen("neutral", "0")
        .assert()
        .success()
        .stdout(contains("| neutral | 6 | 0.0 | 0.0 | 100.0 | - | 6 |"));
    for s in lines(&out) {
        assert_eq!(s["decision"], "NOVEL");
        assert!(s["fallback"].as_str().unwrap().contains("budget"), "{s}");
    }
    // Bad input: an unknown lane, an existing output without --force.
    gen("legal", "1000")
        .assert()
        .code(2)
        .stderr(contains("conservative, neutral, creative, loose"));
    tandem()
        .args(["generate", "--start", "0", "--lvm"])
        .arg(&run)
        .arg("--data")
        .arg(&w)
        .arg("--out")
        .arg(&out)
        .assert()
        .code(2)
        .stderr(contains("--force"));
}
