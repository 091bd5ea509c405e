//! `tandem data pairs`: training pairs from raw documents, end to end.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use predicates::str::contains;
use serde_json::Value;
use tandem_text::{read_examples, PairFormat};

fn tandem() -> Command {
    Command::cargo_bin("tandem").unwrap()
}

/// 40 documents: titled ones with three sentences each, every fifth without a title.
fn write_docs(dir: &Path) -> PathBuf {
    let mut text = String::new();
    for i in 0..40 {
        let title = if i % 5 == 4 {
            String::new()
        } else {
            format!("Title of document {i}")
        };
        let body = format!(
            "Document {i} opens with a first sentence about topic {i}. It goes on with a second one of several words. Finally a third sentence closes document {i}."
        );
        text.push_str(
            &serde_json::json!({"_id": format!("d{i}"), "title": title, "text": body}).to_string(),
        );
        text.push('\n');
    }
    let p = dir.join("docs.jsonl");
    fs::write(&p, text).unwrap();
    p
}

/// Every file under `dir`, by relative path.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for name in [
        "corpus.jsonl",
        "queries.jsonl",
        "pairs.json",
        "qrels/train.tsv",
        "qrels/val.tsv",
        "qrels/test.tsv",
    ] {
        out.insert(name.to_string(), fs::read(dir.join(name)).unwrap());
    }
    assert_eq!(
        fs::read_dir(dir).unwrap().count(),
        4,
        "only the BEIR files and pairs.json"
    );
    out
}

/// The documents of the query ids of `split` (the id up to `#`).
fn split_docs(dir: &Path, split: &str) -> HashSet<String> {
    fs::read_to_string(dir.join("qrels").join(format!("{split}.tsv")))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            l.split('\t')
                .next()
                .unwrap()
                .split('#')
                .next()
                .unwrap()
                .to_string()
        })
        .collect()
}

fn assert_disjoint(dir: &Path) {
    let [train, val, test] = ["train", "val", "test"].map(|s| split_docs(dir, s));
    assert!(train.is_disjoint(&val) && train.is_disjoint(&test) && val.is_disjoint(&test));
}

fn report(dir: &Path) -> Value {
    serde_json::from_slice(&fs::read(dir.join("pairs.json")).unwrap()).unwrap()
}

/// Nothing beside the expected entries of `dir` (no staging folder left).
fn assert_only(dir: &Path, names: &[&str]) {
    let mut got: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    got.sort();
    assert_eq!(got, names);
}

#[test]
fn title_body_pairs_are_a_deterministic_beir_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let docs = write_docs(tmp.path());
    let run = |out: &Path, seed: &str| {
        tandem()
            .args(["data", "pairs", "--input"])
            .arg(&docs)
            .arg("--out")
            .arg(out)
            .args(["--seed", seed, "--force"])
            .assert()
            .success()
            .stdout(contains("32 pairs (title-body) from 40 of 40 documents (8 skipped without both a title and a body)"));
    };
    let out = tmp.path().join("pairs");
    run(&out, "3");
    let first = files(&out);
    run(&out, "3");
    assert_eq!(files(&out), first, "same seed, same bytes");
    assert_disjoint(&out);

    let r = report(&out);
    assert_eq!(r["settings"]["mode"], "title-body");
    assert_eq!(r["counts"]["skipped"], 8);
    let splits = &r["counts"]["splits"];
    let n: Vec<u64> = ["train", "val", "test"]
        .iter()
        .map(|s| splits[s]["pairs"].as_u64().unwrap())
        .collect();
    assert_eq!(n.iter().sum::<u64>(), 32);
    // 40 documents cut 32 / 4 / 4, the untitled ones give no pair
    assert!(n[0] >= 24 && n[1] <= 4 && n[2] <= 4, "{n:?}");

    let train = read_examples(&out, PairFormat::Auto, "train").unwrap();
    assert_eq!(train.len() as u64, n[0]);
    for e in &train.examples {
        let i = e.query.strip_prefix("Title of document ").unwrap();
        assert!(
            e.positives[0].starts_with(&format!("Document {i} opens")),
            "{e:?}"
        );
    }
    if n[1] > 0 {
        assert_eq!(
            read_examples(&out, PairFormat::Beir, "val").unwrap().len() as u64,
            n[1]
        );
    }

    // another seed, another split
    let other = tmp.path().join("other");
    run(&other, "4");
    assert_ne!(
        fs::read(other.join("qrels/train.tsv")).unwrap(),
        first["qrels/train.tsv"]
    );
    assert_disjoint(&other);
}

#[test]
fn sentence_rest_and_neighbours_with_caps() {
    let tmp = tempfile::tempdir().unwrap();
    let docs = write_docs(tmp.path());
    let out = tmp.path().join("sr");
    tandem()
        .args([
            "data",
            "pairs",
            "--mode",
            "sentence-rest",
            "--split",
            "0.5",
            "0.25",
            "0.25",
            "--num-pairs",
            "50",
            "--input",
        ])
        .arg(&docs)
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    let r = report(&out);
    assert_eq!(r["counts"]["candidate_pairs"], 120);
    assert_eq!(r["counts"]["pairs"], 50);
    assert_disjoint(&out);
    let train = read_examples(&out, PairFormat::Beir, "train").unwrap();
    for e in &train.examples {
        // the query sentence is not in its positive, the other two are
        assert!(!e.positives[0].contains(&e.query), "{e:?}");
        assert_eq!(e.positives[0].matches(". ").count() + 1, 2, "{e:?}");
    }

    let out = tmp.path().join("nb");
    tandem()
        .args([
            "data",
            "pairs",
            "--mode",
            "neighbours",
            "--chunk-words",
            "8",
            "--sample",
            "10",
            "--input",
        ])
        .arg(&docs)
        .arg("--out")
        .arg(&out)
        .assert()
        .success()
        .stdout(contains("from 10 of 40 documents"));
    let r = report(&out);
    // three sentences of 10-12 words: three chunks, two pairs a document
    assert_eq!(r["counts"]["pairs"], 20);
    let train = read_examples(&out, PairFormat::Beir, "train").unwrap();
    assert_eq!(train.len(), 16);
    assert!(train
        .examples
        .iter()
        .any(|e| e.query.starts_with("It goes on") && e.positives[0].starts_with("Finally")));
}

#[test]
fn refusals_leave_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let docs = write_docs(tmp.path());
    let out = tmp.path().join("pairs");
    let pairs = |args: &[&str], out: &Path| {
        let mut c = tandem();
        c.args(["data", "pairs", "--input"])
            .arg(&docs)
            .arg("--out")
            .arg(out)
            .args(args);
        c.assert()
    };
    pairs(&[], &out).success();
    let before = files(&out);
    // an existing folder needs --force
    pairs(&[], &out)
        .code(2)
        .stderr(contains("already exists"))
        .stderr(contains("--force"));
    assert_eq!(files(&out), before);
    // a failing run with --force keeps the old folder
    pairs(&["--field", "body", "--force"], &out)
        .code(2)
        .stderr(contains("line 1: no string field \"body\""))
        .stderr(contains("--field"));
    assert_eq!(files(&out), before);
    // a folder tandem did not write is never replaced
    let mine = tmp.path().join("mine");
    fs::create_dir(&mine).unwrap();
    fs::write(mine.join("notes.txt"), "keep").unwrap();
    pairs(&["--force"], &mine)
        .code(2)
        .stderr(contains("was not written by `tandem data pairs`"));
    assert_eq!(fs::read_to_string(mine.join("notes.txt")).unwrap(), "keep");
    // bad flags
    let fresh = tmp.path().join("fresh");
    pairs(&["--split", "0.8", "0.1", "0.2"], &fresh)
        .code(2)
        .stderr(contains("sum to 1"));
    pairs(&["--num-pairs", "0"], &fresh)
        .code(2)
        .stderr(contains("--num-pairs 0"));
    // no training pair: untitled documents in title-body mode
    let plain = tmp.path().join("plain.txt");
    fs::write(&plain, "one document. Two sentences.\n").unwrap();
    tandem()
        .args(["data", "pairs", "--input"])
        .arg(&plain)
        .arg("--out")
        .arg(&fresh)
        .assert()
        .code(2)
        .stderr(contains(
            "no training pair from 1 documents (1 without both a title and a body)",
        ))
        .stderr(contains("--mode"));
    // duplicate ids
    let dup = tmp.path().join("dup.jsonl");
    fs::write(&dup, "{\"_id\": \"a\", \"title\": \"t\", \"text\": \"x\"}\n{\"_id\": \"a\", \"title\": \"u\", \"text\": \"y\"}\n").unwrap();
    tandem()
        .args(["data", "pairs", "--input"])
        .arg(&dup)
        .arg("--out")
        .arg(&fresh)
        .assert()
        .code(2)
        .stderr(contains("line 2: document id \"a\" is also on line 1"));
    assert_only(
        tmp.path(),
        &["docs.jsonl", "dup.jsonl", "mine", "pairs", "plain.txt"],
    );
}

#[test]
fn scifact_abstracts_sample() {
    let Some(data) = tandem_io::shared_data(env!("CARGO_MANIFEST_DIR")) else {
        return;
    };
    let input = data.join("scifact-abstracts").join("corpus.jsonl");
    let tmp = tempfile::tempdir().unwrap();
    for mode in ["sentence-rest", "neighbours"] {
        let run = |out: &Path| {
            tandem()
                .args([
                    "data", "pairs", "--sample", "50", "--mode", mode, "--seed", "7", "--force",
                    "--input",
                ])
                .arg(&input)
                .arg("--out")
                .arg(out)
                .assert()
                .success()
                .stdout(contains("from 50 of 2101 documents"));
        };
        let out = tmp.path().join(mode);
        run(&out);
        let first = files(&out);
        run(&out);
        assert_eq!(files(&out), first, "{mode}: same seed, same bytes");
        assert_disjoint(&out);
        let r = report(&out);
        let train = read_examples(&out, PairFormat::Beir, "train").unwrap();
        assert_eq!(
            train.len() as u64,
            r["counts"]["splits"]["train"]["pairs"].as_u64().unwrap()
        );
        assert!(train.len() > 40, "{mode}: {}", train.len());
        let docs: u64 = ["train", "val", "test"]
            .iter()
            .map(|s| r["counts"]["splits"][s]["documents"].as_u64().unwrap())
            .sum();
        assert!((40..=50).contains(&docs), "{mode}: {docs}");
    }
}
