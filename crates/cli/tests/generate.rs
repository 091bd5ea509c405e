//! `tandem lvm train` and `tandem generate`: a trained next-vector model
//! generates through the SNAP / BLEND / NOVEL decoder, per lane, with
//! telemetry and the text of snapped rows; candidates come from the bank or
//! from a trained two-tower retriever; a failing or slow retrieval goes NOVEL
//! with the reason recorded; `--eval` scores the decoder teacher-forced and
//! sweeps its thresholds.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use assert_cmd::Command;
use predicates::str::contains;
use serde_json::Value;

fn tandem() -> Command {
    Command::cargo_bin("tandem").unwrap()
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A short training run.
const SHORT: [&str; 8] = [
    "--max-steps",
    "30",
    "--lr",
    "2e-3",
    "--warmup",
    "5",
    "--threads",
    "2",
];

/// `tandem lvm train`, short, on `world` into `out`.
fn lvm_train(world: &Path, out: &Path) -> Command {
    let mut c = tandem();
    c.args(["lvm", "train"])
        .args(SHORT)
        .arg("--data")
        .arg(world)
        .arg("--out")
        .arg(out);
    c
}

/// A synthetic world with a text per bank row, an LVM and a retriever
/// trained on it, shared by the tests.
struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    world: PathBuf,
    lvm: PathBuf,
    retriever: PathBuf,
    lanes: PathBuf,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let world = root.join("world");
        tandem()
            .args([
                "synth", "--rows", "3000", "--dim", "32", "--seed", "7", "--out",
            ])
            .arg(&world)
            .assert()
            .success();
        // The text of row r is "sentence r".
        let texts: String = (0..3000)
            .map(|r| format!("{{\"text\":\"sentence {r}\"}}\n"))
            .collect();
        std::fs::write(world.join("texts.jsonl"), texts).unwrap();

        let lvm = root.join("lvm");
        lvm_train(&world, &lvm)
            .assert()
            .success()
            .stdout(contains("| hit@1 | hit@5 | hit@10 | mrr@10 | cosine |"));
        let retriever = root.join("retriever");
        tandem()
            .arg("train")
            .args(SHORT)
            .args(["--doc", "linear", "--kind", "mean", "--data"])
            .arg(&world)
            .arg("--out")
            .arg(&retriever)
            .assert()
            .success();
        let lanes = root.join("lanes.toml");
        std::fs::write(
            &lanes,
            "[[lane]]\nname = \"loose\"\nsnap = 0.3\nnovel = 0.1\n",
        )
        .unwrap();
        Fixture {
            _dir: dir,
            root,
            world,
            lvm,
            retriever,
            lanes,
        }
    })
}

/// `tandem generate` over the fixture's world with its LVM and lanes.
fn generate(f: &Fixture, out: &Path) -> Command {
    let mut c = tandem();
    c.args(["generate", "--force", "--lvm"])
        .arg(&f.lvm)
        .arg("--data")
        .arg(&f.world)
        .arg("--lanes")
        .arg(&f.lanes)
        .arg("--out")
        .arg(out);
    c
}

#[test]
fn an_lvm_run_is_an_lvm() {
    let f = fixture();
    let config = std::fs::read_to_string(f.lvm.join("config.toml")).unwrap();
    assert!(config.contains("task = \"lvm\""), "{config}");
    assert!(config.contains("best_metric = \"cosine\""), "{config}");
    let metrics = std::fs::read_to_string(f.lvm.join("metrics.jsonl")).unwrap();
    assert!(metrics.contains("\"hit@5\""), "validation reports hit@k");
    // The same command again resumes the run (its LVM defaults included).
    lvm_train(&f.world, &f.lvm)
        .assert()
        .success()
        .stderr(contains("resuming from step 30"));
    // An LVM's doc tower is the identity: a learned one is refused up front.
    tandem()
        .args(["lvm", "train", "--doc", "linear", "--data"])
        .arg(&f.world)
        .arg("--out")
        .arg(f.root.join("bad-lvm"))
        .assert()
        .code(2)
        .stderr(contains("doc = identity"));
    assert!(!f.root.join("bad-lvm").exists());
    // A retriever with a learned doc tower is not an LVM.
    tandem()
        .args(["generate", "--start", "0", "--out"])
        .arg(f.root.join("x.jsonl"))
        .arg("--data")
        .arg(&f.world)
        .arg("--lvm")
        .arg(&f.retriever)
        .assert()
        .code(2)
        .stderr(contains("task lvm"));
}

#[test]
fn generate_with_lanes_texts_and_telemetry() {
    let f = fixture();
    let out = f.root.join("gen.jsonl");
    let vectors = f.root.join("gen.npy");
    generate(f, &out)
        .args(["--start", "0,1,2", "--steps", "6", "--lane", "loose"])
        .arg("--vectors")
        .arg(&vectors)
        .assert()
        .success()
        .stdout(contains("| loose | 6 |"));
    let steps = lines(&out);
    assert_eq!(steps.len(), 6);
    let mut snapped = 0;
    for s in &steps {
        let d = s["decision"].as_str().unwrap();
        let c = s["cosine"].as_f64().unwrap();
        match d {
            "SNAP" => {
                snapped += 1;
                assert!(c >= 0.3, "{s}");
                let row = s["row"].as_u64().unwrap();
                assert_eq!(s["text"], format!("sentence {row}"), "{s}");
            }
            "NOVEL" => assert!(c <= 0.1 && s["text"].is_null(), "{s}"),
            "BLEND" => assert!(s["alpha"].as_f64().unwrap() > 0.0, "{s}"),
            other => panic!("decision {other}"),
        }
        // The starting rows are never snapped to.
        assert!(![0, 1, 2].contains(&s["row"].as_u64().unwrap_or(99)), "{s}");
    }
    assert!(snapped > 0, "a loose lane snaps: {steps:?}");
    // Settings and telemetry beside the steps.
    let t: Value =
        serde_json::from_str(&std::fs::read_to_string(f.root.join("gen.telemetry.json")).unwrap())
            .unwrap();
    assert_eq!(t["settings"]["lane"]["name"], "loose");
    assert_eq!(t["telemetry"]["lanes"]["loose"]["steps"], 6);
    assert_eq!(t["telemetry"]["lanes"]["loose"]["snap"], snapped);
    // The emitted vectors: one unit row per step.
    let npy = std::fs::read(&vectors).unwrap();
    assert!(npy.starts_with(b"\x93NUMPY"));
    assert_eq!(
        npy.len() - (npy[8] as usize | (npy[9] as usize) << 8) - 10,
        6 * 32 * 4
    );
    // Generation goes on from a vectors file: the steps just generated.
    let start = vectors;
    let out2 = f.root.join("gen2.jsonl");
    generate(f, &out2)
        .args(["--steps", "6", "--lane", "loose", "--window", "0"])
        .arg("--start-vectors")
        .arg(&start)
        .assert()
        .success();
    assert_eq!(lines(&out2).len(), 6);
    // Bad input: an unknown lane; an existing output without --force; a
    // vectors file of the wrong dimension.
    generate(f, &out)
        .args(["--start", "0", "--lane", "legal"])
        .assert()
        .code(2)
        .stderr(contains("conservative, neutral, creative, loose"));
    tandem()
        .args(["generate", "--start", "0", "--lvm"])
        .arg(&f.lvm)
        .arg("--data")
        .arg(&f.world)
        .arg("--out")
        .arg(&out)
        .assert()
        .code(2)
        .stderr(contains("--force"));
}

#[test]
fn retrieval_that_fails_or_is_slow_goes_novel_and_generation_goes_on() {
    let f = fixture();
    let out = f.root.join("faulty.jsonl");
    // Every second retrieval fails (through the two-tower retriever).
    generate(f, &out)
        .env("TANDEM_FAULT_RETRIEVAL_EVERY", "2")
        .args([
            "--start",
            "0,1,2",
            "--steps",
            "8",
            "--lane",
            "loose",
            "--retriever",
        ])
        .arg(&f.retriever)
        .assert()
        .success()
        .stdout(contains("| loose | 8 |"))
        .stdout(contains("| 4 |\n"));
    let steps = lines(&out);
    assert_eq!(steps.len(), 8);
    for (i, s) in steps.iter().enumerate() {
        if i % 2 == 1 {
            assert_eq!(s["decision"], "NOVEL", "{s}");
            assert!(s["cosine"].is_null(), "{s}");
            assert!(
                s["fallback"].as_str().unwrap().contains("injected fault"),
                "{s}"
            );
        } else {
            assert!(s["fallback"].is_null(), "{s}");
            assert!(s["cosine"].is_f64(), "{s}");
        }
    }
    // A retrieval budget of 0 ms: every step NOVEL, the reason recorded.
    generate(f, &out)
        .args(["--start", "0,1,2", "--steps", "6", "--budget-ms", "0"])
        .assert()
        .success()
        .stdout(contains("| neutral | 6 | 0.0 | 0.0 | 100.0 | - | 6 |"));
    for s in lines(&out) {
        assert_eq!(s["decision"], "NOVEL");
        assert!(s["fallback"].as_str().unwrap().contains("budget"), "{s}");
    }
}

#[test]
fn eval_scores_decisions_and_sweeps_thresholds() {
    let f = fixture();
    let out = f.root.join("eval");
    let eval = |extra: &[&str]| {
        let mut c = generate(f, &out);
        c.args(["--eval", "--limit", "120", "--lane", "loose"])
            .args(["--sweep-snap", "0.3,0.6,0.9", "--sweep-novel", "0.1,0.5"])
            .args(extra);
        c
    };
    eval(&[])
        .assert()
        .success()
        .stdout(contains("decoder, lane loose (0.3/0.1)"))
        .stdout(contains("LVM alone (always NOVEL)"));
    let cases = lines(&out.join("eval.jsonl"));
    assert_eq!(cases.len(), 120);
    let (mut hits, mut cos) = (0usize, 0.0f64);
    for c in &cases {
        hits += usize::from(c["hit"].as_bool().unwrap());
        cos += c["cos_true"].as_f64().unwrap();
        if c["decision"] == "NOVEL" {
            assert_eq!(c["cos_true"], c["lvm_cos_true"], "{c}");
        }
    }
    let metrics: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("eval.json")).unwrap()).unwrap();
    let all = &metrics["lane"]["all"];
    assert_eq!(all["n"], 120);
    assert!((all["hit"].as_f64().unwrap() - hits as f64 / 120.0).abs() < 1e-9);
    assert!((all["cos_true"].as_f64().unwrap() - cos / 120.0).abs() < 1e-6);
    // The sweep: pairs with novel < snap, 5 of them; its row for the lane's
    // own thresholds agrees with the lane.
    let csv = std::fs::read_to_string(out.join("sweep.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(rows.len(), 5, "{csv}");
    let own = rows.iter().find(|r| r.starts_with("0.3,0.1,")).unwrap();
    let hit: f64 = own.rsplit(',').next().unwrap().parse().unwrap();
    assert!((hit - hits as f64 / 120.0).abs() < 1e-5, "{own}");
    let svg = std::fs::read_to_string(out.join("sweep.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("novel 0.10"));
    assert!(out.join("summary.md").is_file());
    // Retrieval failures are counted, not fatal: every third one of 120.
    eval(&[])
        .env("TANDEM_FAULT_RETRIEVAL_EVERY", "3")
        .assert()
        .success()
        .stdout(contains("(40 fallbacks)"));
    // An evaluation is not overwritten without --force.
    tandem()
        .args(["generate", "--eval", "--lvm"])
        .arg(&f.lvm)
        .arg("--data")
        .arg(&f.world)
        .arg("--out")
        .arg(&out)
        .assert()
        .code(2)
        .stderr(contains("--force"));
}

/// A float32 `.npy` of `rows` x 32 filled with `value`.
fn npy_filled(path: &Path, rows: usize, value: f32) {
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, 32), }}");
    while (header.len() + 11) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for _ in 0..rows * 32 {
        bytes.extend_from_slice(&value.to_le_bytes());
    }
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn bad_inputs_are_refused_before_anything_is_written() {
    let f = fixture();
    let dir = f.root.join("bad");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("g.jsonl");
    let refused = |c: &mut Command, want: &str| {
        c.assert().code(2).stderr(contains(want));
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().starts_with('g'))
            .collect();
        assert!(left.is_empty(), "{want}: left {left:?}");
    };
    // Two outputs on one path; an output in a missing folder.
    refused(
        generate(f, &out)
            .args(["--start", "0", "--vectors"])
            .arg(&out),
        "two outputs",
    );
    refused(
        generate(f, &out)
            .args(["--start", "0", "--vectors"])
            .arg(dir.join("nowhere/g.npy")),
        "does not exist",
    );
    // An output over an input, even with --force.
    let texts = f.world.join("texts.jsonl");
    let before = std::fs::read(&texts).unwrap();
    tandem()
        .args(["generate", "--force", "--start", "0", "--lvm"])
        .arg(&f.lvm)
        .arg("--data")
        .arg(&f.world)
        .arg("--out")
        .arg(&texts)
        .assert()
        .code(2)
        .stderr(contains("is an input"));
    assert_eq!(std::fs::read(&texts).unwrap(), before);
    // Starting vectors with NaN; --k 0; a sweep without a pair; a lane twice.
    let nan = f.root.join("nan.npy");
    npy_filled(&nan, 2, f32::NAN);
    refused(
        generate(f, &out).arg("--start-vectors").arg(&nan),
        "row 0 is all zeros or holds NaN",
    );
    refused(
        generate(f, &out).args(["--start", "0", "--k", "0"]),
        "--k 0",
    );
    refused(
        generate(f, &dir.join("g-eval")).args([
            "--eval",
            "--sweep-snap",
            "0.5",
            "--sweep-novel",
            "0.6",
        ]),
        "no pair with novel < snap",
    );
    let twice = f.root.join("twice.toml");
    std::fs::write(
        &twice,
        "[[lane]]\nname = \"a\"\nsnap = 0.9\nnovel = 0.8\n[[lane]]\nname = \"a\"\nsnap = 0.95\nnovel = 0.8\n",
    )
    .unwrap();
    refused(
        tandem()
            .args(["generate", "--start", "0", "--lvm"])
            .arg(&f.lvm)
            .arg("--data")
            .arg(&f.world)
            .arg("--out")
            .arg(&out)
            .arg("--lanes")
            .arg(&twice),
        "defined twice",
    );
    // A model of another bank of the same dimension.
    let other = f.root.join("other-world");
    tandem()
        .args([
            "synth", "--rows", "2000", "--dim", "32", "--seed", "8", "--out",
        ])
        .arg(&other)
        .assert()
        .success();
    tandem()
        .args(["generate", "--start", "0", "--lvm"])
        .arg(&f.lvm)
        .arg("--data")
        .arg(&other)
        .arg("--out")
        .arg(&out)
        .assert()
        .code(2)
        .stderr(contains("another bank"));
    assert!(!out.exists());
}
