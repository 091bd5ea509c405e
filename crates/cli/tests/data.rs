//! `tandem synth`, `tandem data from-sentences` and `tandem baseline` end to end.

use std::fs;
use std::path::Path;

use assert_cmd::Command;
use predicates::prelude::PredicateBooleanExt;
use predicates::str::contains;
use serde_json::Value;
use tandem_bank::{Overwrite, Vectors};

fn tandem() -> Command {
    Command::cargo_bin("tandem").unwrap()
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn synth_small_then_baseline_mean_beats_last() {
    let tmp = tempfile::tempdir().unwrap();
    let world = tmp.path().join("world");
    tandem()
        .args(["synth", "--out"])
        .arg(&world)
        .assert()
        .success()
        .stdout(contains("20000 x 64"));
    tandem()
        .arg("baseline")
        .arg(&world)
        .assert()
        .success()
        .stdout(contains("mean of context vectors"));
    let report = json(&world.join("baseline.json"));
    assert_eq!(report["config"]["split"], "test");
    let r = &report["metrics"]["results"];
    for m in ["recall@10", "recall@100", "recip_rank@10"] {
        let (last, mean) = (
            r["last"][m].as_f64().unwrap(),
            r["mean"][m].as_f64().unwrap(),
        );
        assert!(
            mean > last * 1.3,
            "{m}: mean {mean} should clearly beat last {last}"
        );
    }
    // A second run refuses to replace the report without --force.
    tandem()
        .arg("baseline")
        .arg(&world)
        .assert()
        .code(2)
        .stderr(contains("--force"));
    // Bad cutoffs are reported before the existing report.
    for (k, what) in [
        ("0", "k must be >= 1"),
        ("10,30000", "k = 30000 but the bank has only 20000 rows"),
    ] {
        tandem()
            .arg("baseline")
            .arg(&world)
            .args(["--k", k])
            .assert()
            .code(2)
            .stderr(contains(what))
            .stderr(contains("already exists").not());
    }
    let out = tmp.path().join("b.json");
    tandem()
        .arg("baseline")
        .arg(&world)
        .args(["--split", "val", "--k", "1,10", "--json", "--out"])
        .arg(&out)
        .assert()
        .success();
    let report = json(&out);
    assert_eq!(
        report["metrics"]["measures"],
        serde_json::json!(["recall@1", "recall@10", "recip_rank@10"])
    );
}

#[test]
fn synth_is_byte_identical_for_a_seed() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |name: &str, seed: &str| {
        let dir = tmp.path().join(name);
        tandem()
            .args([
                "synth", "--rows", "3000", "--dim", "32", "--seed", seed, "--out",
            ])
            .arg(&dir)
            .assert()
            .success();
        dir
    };
    let (a, b, c) = (run("a", "5"), run("b", "5"), run("c", "6"));
    for f in ["bank.npy", "sequences.jsonl", "ids.txt", "dataset.json"] {
        assert_eq!(
            fs::read(a.join(f)).unwrap(),
            fs::read(b.join(f)).unwrap(),
            "{f} differs for the same seed"
        );
    }
    assert_ne!(
        fs::read(a.join("bank.npy")).unwrap(),
        fs::read(c.join("bank.npy")).unwrap()
    );
    // Existing output: refused without --force, replaced with it.
    tandem()
        .args([
            "synth", "--rows", "3000", "--dim", "32", "--seed", "6", "--out",
        ])
        .arg(&a)
        .assert()
        .code(2)
        .stderr(contains("--force"));
    tandem()
        .args([
            "synth", "--rows", "3000", "--dim", "32", "--seed", "6", "--force", "--out",
        ])
        .arg(&a)
        .assert()
        .success();
    assert_eq!(
        fs::read(a.join("bank.npy")).unwrap(),
        fs::read(c.join("bank.npy")).unwrap()
    );
    let names: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names.len(),
        3,
        "no staging directories left behind: {names:?}"
    );
}

/// Four documents of 3, 2, 4 and 1 sentences, with 2-D vectors.
fn sentences(
    dir: &Path,
    lines: &[(&str, u32)],
    rows: usize,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let s = dir.join("sentences.jsonl");
    let text: String = lines
        .iter()
        .map(|(d, i)| {
            format!("{{\"doc_id\": \"{d}\", \"idx\": {i}, \"text\": \"sentence {i} of {d}\"}}\n")
        })
        .collect();
    fs::write(&s, text).unwrap();
    let v = dir.join("vectors.npy");
    let data: Vec<f32> = (0..rows * 2)
        .map(|x| ((x * 7) % 11) as f32 / 11.0 + 0.1)
        .collect();
    tandem_bank::write_npy(&v, rows, 2, Vectors::F32(&data), Overwrite::Refuse).unwrap();
    (s, v)
}

const DOCS: [(&str, u32); 10] = [
    ("a", 0),
    ("a", 1),
    ("a", 2),
    ("b", 0),
    ("b", 1),
    ("c", 0),
    ("c", 2),
    ("c", 5),
    ("c", 6),
    ("d", 0),
];

#[test]
fn from_sentences_builds_a_loadable_dataset() {
    let tmp = tempfile::tempdir().unwrap();
    let (s, v) = sentences(tmp.path(), &DOCS, DOCS.len());
    let out = tmp.path().join("ds");
    tandem()
        .args(["data", "from-sentences", "--context", "2", "--sentences"])
        .arg(&s)
        .arg("--vectors")
        .arg(&v)
        .arg("--out")
        .arg(&out)
        .assert()
        .success()
        .stdout(contains("test"));
    let m = json(&out.join("dataset.json"));
    // An absolute --vectors is stored as given; a relative one relative to the dataset.
    assert_eq!(m["bank"].as_str().unwrap(), v.to_str().unwrap());
    tandem()
        .current_dir(tmp.path())
        .args(["data", "from-sentences", "--sentences"])
        .arg(&s)
        .args(["--vectors", "vectors.npy", "--out", "rel"])
        .assert()
        .success();
    assert_eq!(
        json(&tmp.path().join("rel").join("dataset.json"))["bank"],
        "../vectors.npy"
    );
    assert_eq!(m["context"], 2);
    // Document ordinals 0 (a) test, 1 (b) val, 2 (c) and 3 (d) train.
    assert_eq!(
        m["splits"]["test"],
        serde_json::json!({"sequences": 1, "examples": 2})
    );
    assert_eq!(
        m["splits"]["val"],
        serde_json::json!({"sequences": 1, "examples": 1})
    );
    assert_eq!(
        m["splits"]["train"],
        serde_json::json!({"sequences": 2, "examples": 3})
    );
    let seqs = fs::read_to_string(out.join("sequences.jsonl")).unwrap();
    assert_eq!(
        seqs.lines().nth(2).unwrap(),
        r#"{"id":"c","split":"train","rows":[5,6,7,8]}"#
    );
    assert_eq!(
        fs::read_to_string(out.join("ids.txt"))
            .unwrap()
            .lines()
            .nth(7),
        Some("c#5")
    );
    tandem()
        .arg("baseline")
        .arg(&out)
        .args(["--k", "1,2"])
        .assert()
        .success()
        .stdout(contains("2 examples"));

    // --copy-bank makes a self-contained dataset.
    let copy = tmp.path().join("copy");
    tandem()
        .args(["data", "from-sentences", "--copy-bank", "--sentences"])
        .arg(&s)
        .arg("--vectors")
        .arg(&v)
        .arg("--out")
        .arg(&copy)
        .assert()
        .success();
    assert_eq!(json(&copy.join("dataset.json"))["bank"], "bank.npy");
    assert_eq!(
        fs::read(copy.join("bank.npy")).unwrap(),
        fs::read(&v).unwrap()
    );

    // A dataset whose referenced bank is gone names that file and the fix.
    fs::remove_file(&v).unwrap();
    tandem()
        .arg("baseline")
        .arg(&out)
        .assert()
        .code(2)
        .stderr(contains(format!("refers to the bank file {}", v.display())))
        .stderr(contains("--copy-bank"));
}

/// `tandem data from-sentences` over the given files.
fn from_sentences(sentences: &Path, vectors: &Path, out: &Path) -> Command {
    let mut cmd = tandem();
    cmd.args(["data", "from-sentences", "--sentences"])
        .arg(sentences)
        .arg("--vectors")
        .arg(vectors)
        .arg("--out")
        .arg(out);
    cmd
}

fn build_fails(lines: &[(&str, u32)], rows: usize, what: &str, file: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let (s, v) = sentences(tmp.path(), lines, rows);
    let out = tmp.path().join("ds");
    let assert = from_sentences(&s, &v, &out)
        .assert()
        .code(2)
        .stderr(contains(what))
        .stderr(contains(file));
    let err = String::from_utf8(assert.get_output().stderr.clone()).unwrap();
    assert_eq!(err.lines().count(), 1, "one readable error: {err}");
    assert!(!out.exists(), "no partial output");
}

#[test]
fn malformed_sentences_exit_2_naming_the_file() {
    let scattered = [("a", 0), ("b", 0), ("a", 1)];
    build_fails(&scattered, 3, "not contiguous", "sentences.jsonl:3");
    build_fails(
        &[("a", 0), ("a", 0)],
        2,
        "does not increase",
        "sentences.jsonl:2",
    );
    build_fails(&DOCS, DOCS.len() + 1, "holds 11 vectors but", "vectors.npy");
}

/// Build a valid dataset, then corrupt line 2 of its sequences file.
fn corrupted(line: &str, what: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let (s, v) = sentences(tmp.path(), &DOCS, DOCS.len());
    let out = tmp.path().join("ds");
    from_sentences(&s, &v, &out).assert().success();
    let path = out.join("sequences.jsonl");
    let text = fs::read_to_string(&path).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines[1] = line;
    fs::write(&path, lines.join("\n") + "\n").unwrap();
    let assert = tandem()
        .arg("baseline")
        .arg(&out)
        .assert()
        .code(2)
        .stderr(contains(what))
        .stderr(contains("sequences.jsonl:2"));
    let err = String::from_utf8(assert.get_output().stderr.clone()).unwrap();
    assert_eq!(err.lines().count(), 1, "one readable error: {err}");
    assert!(!out.join("baseline.json").exists());
}

#[test]
fn malformed_datasets_exit_2_naming_the_file_and_line() {
    corrupted(
        r#"{"id":"b","split":"dev","rows":[3,4]}"#,
        "unknown split \"dev\"",
    );
    corrupted(
        r#"{"id":"b","split":"val","rows":[3,10]}"#,
        "names row 10, but the bank has 10 rows",
    );
    corrupted(
        r#"{"id":"a","split":"val","rows":[3,4]}"#,
        "already used on line 1",
    );
    corrupted(r#"{"id":"b","split":"val","rows":[3,4]"#, "not a sequence");
}

#[test]
fn baseline_of_a_missing_dataset_says_how_to_build_one() {
    let tmp = tempfile::tempdir().unwrap();
    tandem()
        .arg("baseline")
        .arg(tmp.path())
        .assert()
        .code(2)
        .stderr(contains("not a tandem dataset"))
        .stderr(contains("tandem synth"));
    tandem()
        .arg("baseline")
        .arg(tmp.path())
        .args(["--split", "dev"])
        .assert()
        .code(2)
        .stderr(contains("train, val or test"));
}
