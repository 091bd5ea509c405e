//! `tandem data from-text` end to end on the small random BERT fixture:
//! documents to a dataset whose texts are the sentences in order and whose
//! bank is what `tandem embed` and `tandem data from-sentences` make of
//! them; token chunks; training on the result; a kill -9 during embedding
//! resumed to identical files; bad input refused; and the sentence splitter
//! against the SciFact authors' split.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::cargo::CommandCargoExt;
use assert_cmd::Command;
use predicates::prelude::PredicateBooleanExt;
use predicates::str::contains;
use serde_json::{json, Value};
use tandem_bank::{Bank, OpenOptions};
use tandem_text::split::{self, Chunker};

fn tandem() -> Command {
    Command::cargo_bin("tandem").unwrap()
}

fn bert() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../text/tests/fixtures/bert")
}

fn json_file(path: &Path) -> Value {
    serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap()
}

fn lines(path: &Path) -> Vec<Value> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn rows(path: &Path) -> Vec<f32> {
    let b = Bank::open(path, &OpenOptions::default()).unwrap();
    b.rows_f32(0, b.rows()).into_owned()
}

/// `tandem data from-text` on the fixture model.
fn from_text(input: &Path, out: &Path) -> Command {
    let mut c = tandem();
    c.args(["data", "from-text", "--model"])
        .arg(bert())
        .arg("--input")
        .arg(input)
        .arg("--out")
        .arg(out);
    c
}

/// Twelve documents in reading order, of several id kinds, one without any
/// text; with the sentences each should give.
fn documents(dir: &Path) -> (PathBuf, Vec<(String, Vec<&'static str>)>) {
    let docs: Vec<(Value, Vec<&'static str>)> = vec![
        (
            json!({"doc_id": "a1", "text": "The cat sat on the mat. It was happy, e.g. Very happy. Then it slept."}),
            vec![
                "The cat sat on the mat.",
                "It was happy, e.g. Very happy.",
                "Then it slept.",
            ],
        ),
        (
            json!({"doc_id": 7, "text": "Dr. Smith et al. Found 3.5 mm cells! Were they real? Yes."}),
            vec![
                "Dr. Smith et al. Found 3.5 mm cells!",
                "Were they real?",
                "Yes.",
            ],
        ),
        (json!({"doc_id": "empty", "text": "   "}), vec![]),
        (
            json!({"_id": "beir", "title": "A Title", "text": "Body one. Body two."}),
            vec!["A Title Body one.", "Body two."],
        ),
        (
            json!({"doc_id": "para", "text": "Heading\n\nFirst paragraph here. And more.\n\nLast"}),
            vec!["Heading", "First paragraph here.", "And more.", "Last"],
        ),
    ];
    let mut docs = docs;
    for d in 0..8 {
        docs.push((
            json!({"doc_id": format!("d{d}"), "text": "Mice grew fast. The rats did not. Cells (B. subtilis) were seen."}),
            vec!["Mice grew fast.", "The rats did not.", "Cells (B. subtilis) were seen."],
        ));
    }
    let path = dir.join("docs.jsonl");
    let text: String = docs.iter().map(|(v, _)| format!("{v}\n")).collect();
    fs::write(&path, text).unwrap();
    let want = docs
        .into_iter()
        .map(|(v, s)| {
            let id = match v.get("doc_id").or_else(|| v.get("_id")).unwrap() {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (id, s)
        })
        .collect();
    (path, want)
}

#[test]
fn sentences_in_order_with_the_rows_of_tandem_embed_and_from_sentences() {
    let dir = tempfile::tempdir().unwrap();
    let (input, want) = documents(dir.path());
    let out = dir.path().join("ds");
    from_text(&input, &out)
        .assert()
        .success()
        .stdout(contains("13 documents (1 skipped without a sentence)"));
    assert!(
        !dir.path().join("ds.partial").exists(),
        "the work folder is removed"
    );

    // texts, ids and sequences follow the documents and their sentences
    let kept: Vec<&(String, Vec<&str>)> = want.iter().filter(|(_, s)| !s.is_empty()).collect();
    let texts: Vec<String> = lines(&out.join("texts.jsonl"))
        .iter()
        .map(|v| v["text"].as_str().unwrap().to_string())
        .collect();
    let want_texts: Vec<String> = kept
        .iter()
        .flat_map(|(_, s)| s.iter().map(|t| t.to_string()))
        .collect();
    assert_eq!(texts, want_texts);
    let ids: Vec<String> = fs::read_to_string(out.join("ids.txt"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let want_ids: Vec<String> = kept
        .iter()
        .flat_map(|(d, s)| (0..s.len()).map(move |i| format!("{d}#{i}")))
        .collect();
    assert_eq!(ids, want_ids);
    let seqs = lines(&out.join("sequences.jsonl"));
    let seq_ids: Vec<&str> = seqs.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(
        seq_ids,
        kept.iter().map(|(d, _)| d.as_str()).collect::<Vec<_>>()
    );
    assert_eq!(seqs[0]["rows"], json!([0, 1, 2]));
    assert_eq!(seqs[0]["split"], "test");
    assert_eq!(seqs[1]["split"], "val");

    let manifest = json_file(&out.join("dataset.json"));
    assert_eq!(manifest["bank"], "bank.npy");
    assert_eq!(manifest["provenance"]["builder"], "from-text");
    assert_eq!(manifest["dtype"], "float32");
    let report = json_file(&out.join("from-text.json"));
    assert_eq!(report["counts"]["documents"], 13);
    assert_eq!(report["counts"]["skipped"], 1);
    assert_eq!(report["counts"]["skipped_ids"], json!(["empty"]));
    assert_eq!(report["counts"]["sentences"], want_texts.len());
    assert_eq!(report["settings"]["splitter"], split::SENTENCE_SPLITTER);
    assert_eq!(report["model"]["fingerprint"].as_str().unwrap().len(), 64);

    // the bank is tandem embed of the same sentences
    let embedded = dir.path().join("e.npy");
    tandem()
        .args(["embed", "--threads", "2", "--model"])
        .arg(bert())
        .arg("--input")
        .arg(out.join("texts.jsonl"))
        .arg("--out")
        .arg(&embedded)
        .assert()
        .success();
    assert_eq!(rows(&out.join("bank.npy")), rows(&embedded));

    // and the dataset is what from-sentences makes of its sentences file
    let sentences: String = ids
        .iter()
        .zip(&texts)
        .map(|(id, text)| {
            let (doc, idx) = id.rsplit_once('#').unwrap();
            format!(
                "{}\n",
                json!({"doc_id": doc, "idx": idx.parse::<u64>().unwrap(), "text": text})
            )
        })
        .collect();
    fs::write(dir.path().join("s.jsonl"), sentences).unwrap();
    let fs_out = dir.path().join("fs");
    tandem()
        .args(["data", "from-sentences", "--copy-bank", "--sentences"])
        .arg(dir.path().join("s.jsonl"))
        .arg("--vectors")
        .arg(&embedded)
        .arg("--out")
        .arg(&fs_out)
        .assert()
        .success();
    for f in ["sequences.jsonl", "ids.txt", "texts.jsonl"] {
        assert_eq!(
            fs::read(out.join(f)).unwrap(),
            fs::read(fs_out.join(f)).unwrap(),
            "{f}"
        );
    }
    assert_eq!(rows(&out.join("bank.npy")), rows(&fs_out.join("bank.npy")));

    // it is a dataset the other commands read
    tandem()
        .args(["baseline", "--k", "1,5"])
        .arg(&out)
        .assert()
        .success()
        .stdout(contains("mean of context vectors"));

    // an existing dataset is replaced only with --force
    from_text(&input, &out)
        .assert()
        .code(2)
        .stderr(contains("--force"));
    from_text(&input, &out).arg("--force").assert().success();
    assert_eq!(lines(&out.join("texts.jsonl")).len(), want_texts.len());
    assert!(
        !out.join("baseline.json").exists(),
        "a rebuild keeps no file of the previous one"
    );
}

#[test]
fn token_chunks_then_an_lvm_trains_on_them() {
    let dir = tempfile::tempdir().unwrap();
    let (input, _) = documents(dir.path());
    let out = dir.path().join("chunks");
    // 23 + 2 special tokens do not fit the fixture's 24: refused before anything is written
    from_text(&input, &out)
        .args(["--chunk-tokens", "23"])
        .assert()
        .code(2)
        .stderr(contains("--chunk-tokens 22 or less"));
    assert!(!out.exists() && !dir.path().join("chunks.partial").exists());
    from_text(&input, &out)
        .args(["--chunk-tokens", "8"])
        .assert()
        .success()
        .stdout(contains("chunks"));

    let chunker = Chunker::for_model(&bert()).unwrap();
    let mut want = Vec::new();
    for l in fs::read_to_string(&input).unwrap().lines() {
        let v: Value = serde_json::from_str(l).unwrap();
        let title = v.get("title").and_then(Value::as_str).unwrap_or("");
        let text = v["text"].as_str().unwrap();
        let text = if title.is_empty() {
            text.trim().to_string()
        } else {
            format!("{title} {text}").trim().to_string()
        };
        let chunks = chunker.chunks(&text, 8).unwrap();
        for c in &chunks {
            assert!(chunker.token_spans(c).unwrap().len() <= 8, "{c:?}");
        }
        want.extend(chunks.into_iter().map(str::to_string));
    }
    let texts: Vec<String> = lines(&out.join("texts.jsonl"))
        .iter()
        .map(|v| v["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(texts, want);
    let report = json_file(&out.join("from-text.json"));
    assert_eq!(report["settings"]["chunk_tokens"], 8);
    assert_eq!(report["counts"]["truncated"], 0);

    tandem()
        .args([
            "lvm",
            "train",
            "--max-steps",
            "5",
            "--batch",
            "4",
            "--threads",
            "2",
            "--data",
        ])
        .arg(&out)
        .arg("--out")
        .arg(dir.path().join("lvm"))
        .assert()
        .success();
}

/// All files under `dir`, relative path -> bytes.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        out.insert(
            p.file_name().unwrap().to_string_lossy().into_owned(),
            fs::read(&p).unwrap(),
        );
    }
    out
}

#[test]
fn killed_while_embedding_resumes_to_identical_files() {
    let dir = tempfile::tempdir().unwrap();
    // 1,500 documents of 7 sentences: 10,500 rows, 11 blocks of the embedding job
    let input = dir.path().join("docs.jsonl");
    let mut text = String::new();
    for d in 0..1500 {
        let s: Vec<String> = (0..7)
            .map(|i| format!("Sentence {i} of document {d} is here and it says something."))
            .collect();
        text += &format!(
            "{}\n",
            json!({"doc_id": format!("doc{d}"), "text": s.join(" ")})
        );
    }
    fs::write(&input, text).unwrap();
    let out = dir.path().join("ds");
    let args = |c: &mut Command| {
        c.args(["--batch", "4", "--threads", "1"]);
    };
    let mut c = from_text(&input, &out);
    args(&mut c);
    c.assert().success();
    let straight_dir = dir.path().join("straight");
    fs::rename(&out, &straight_dir).unwrap();
    let straight = tree(&straight_dir);

    // the same command, killed once the first block is saved
    let block = dir
        .path()
        .join("ds.partial/sentences.npy.partial/block-000000.f32");
    let mut cmd = StdCommand::cargo_bin("tandem").unwrap();
    cmd.args(["data", "from-text", "--model"])
        .arg(bert())
        .arg("--input")
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .args(["--batch", "4", "--threads", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let t0 = Instant::now();
    while !block.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "no block after 2 minutes"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before its first block"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
    child.wait().unwrap();
    assert!(
        !out.exists(),
        "killed while embedding, yet the dataset exists"
    );

    let mut c = from_text(&input, &out);
    args(&mut c);
    c.assert().success().stderr(contains("resuming"));
    let resumed = tree(&out);
    assert_eq!(
        straight.keys().collect::<Vec<_>>(),
        resumed.keys().collect::<Vec<_>>()
    );
    for (name, bytes) in &straight {
        if name != "from-text.json" {
            assert!(bytes == &resumed[name], "{name} differs after the resume");
        }
    }
    let (a, b): (Value, Value) = (
        serde_json::from_slice(&straight["from-text.json"]).unwrap(),
        serde_json::from_slice(&resumed["from-text.json"]).unwrap(),
    );
    for key in ["input", "model", "settings", "counts"] {
        assert_eq!(a[key], b[key], "{key}");
    }
    assert!(
        b["timing"]["resumed_rows"].as_u64().unwrap() >= 1024,
        "{}",
        b["timing"]
    );
    assert!(!dir.path().join("ds.partial").exists());
}

#[test]
fn bad_input_is_refused_with_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ds");
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        fs::write(&p, text).unwrap();
        p
    };
    let bad_json = write(
        "bad.jsonl",
        "{\"doc_id\": \"a\", \"text\": \"One.\"}\n{\"doc_id\": \n",
    );
    from_text(&bad_json, &out)
        .assert()
        .code(2)
        .stderr(contains("line 2").and(contains("not valid JSON")));
    let no_field = write("nofield.jsonl", "{\"doc_id\": \"a\", \"body\": \"One.\"}\n");
    from_text(&no_field, &out)
        .assert()
        .code(2)
        .stderr(contains("--field"));
    let dup = write(
        "dup.jsonl",
        "{\"doc_id\": \"a\", \"text\": \"One.\"}\n{\"doc_id\": \"a\", \"text\": \"Two.\"}\n",
    );
    from_text(&dup, &out)
        .assert()
        .code(2)
        .stderr(contains("line 2").and(contains("already appeared on line 1")));
    let ok = write("ok.jsonl", "{\"doc_id\": \"a\", \"key\": \"k1\", \"text\": \"One. Two.\"}\n{\"doc_id\": \"b\", \"text\": \"Three.\"}\n");
    from_text(&ok, &out)
        .args(["--id-field", "key"])
        .assert()
        .code(2)
        .stderr(contains("line 2").and(contains("--id-field")));
    let blank = write("blank.jsonl", "{\"doc_id\": \"a\", \"text\": \"\"}\n");
    from_text(&blank, &out)
        .assert()
        .code(2)
        .stderr(contains("none of its 1 documents"));
    assert!(!out.exists());
    // a non-dataset directory is never replaced
    let taken = dir.path().join("taken");
    fs::create_dir(&taken).unwrap();
    fs::write(taken.join("x"), "x").unwrap();
    from_text(&ok, &taken)
        .arg("--force")
        .assert()
        .code(2)
        .stderr(contains("not a tandem dataset"));
    // plain lines are documents numbered from 0
    let plain = write("plain.txt", "First doc. Second sentence.\n\nThird doc.\n");
    from_text(&plain, &out)
        .assert()
        .success()
        .stdout(contains("3 documents (1 skipped"));
    let seqs = lines(&out.join("sequences.jsonl"));
    assert_eq!(
        seqs.iter()
            .map(|s| s["id"].as_str().unwrap())
            .collect::<Vec<_>>(),
        vec!["0", "2"]
    );
    // an unfinished run of other settings is not resumed by mistake
    let work = dir.path().join("ds2.partial");
    fs::create_dir(&work).unwrap();
    fs::write(work.join("job.json"), "{}").unwrap();
    from_text(&ok, &dir.path().join("ds2"))
        .assert()
        .code(2)
        .stderr(contains("unfinished"));
    from_text(&ok, &dir.path().join("ds2"))
        .arg("--force")
        .assert()
        .success();
    assert!(!work.exists());
}

#[test]
fn splitter_on_scifact_is_close_to_the_authors_split() {
    let Some(shared) = tandem_io::shared_data(env!("CARGO_MANIFEST_DIR")) else {
        return;
    };
    let data = shared.join("scifact-abstracts");
    let corpus = tandem_text::Corpus::read(&data.join("corpus.jsonl"), "text").unwrap();
    let ids: Vec<String> = fs::read_to_string(data.join("corpus.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["doc_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let mut authors: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut author_total = 0usize;
    for v in lines(&data.join("sentences.jsonl")) {
        authors
            .entry(v["doc_id"].as_str().unwrap().to_string())
            .or_default()
            .push(v["text"].as_str().unwrap().to_string());
        author_total += 1;
    }
    let (mut ours_total, mut ours_docs, mut same) = (0usize, 0usize, 0usize);
    for (id, text) in ids.iter().zip(&corpus.texts) {
        let s = split::sentences(text);
        ours_total += s.len();
        ours_docs += usize::from(!s.is_empty());
        if authors
            .get(id)
            .is_some_and(|a| a.iter().map(String::as_str).eq(s.iter().copied()))
        {
            same += 1;
        }
    }
    let ratio = ours_total as f64 / author_total as f64;
    eprintln!(
        "scifact: {ours_docs} documents with sentences (authors {}), {ours_total} sentences (authors {author_total}, ratio {ratio:.4}), {same} of {} documents split identically ({:.1}%)",
        authors.len(),
        ids.len(),
        100.0 * same as f64 / ids.len() as f64
    );
    let docs_ratio = ours_docs as f64 / authors.len() as f64;
    assert!(
        (0.9..=1.1).contains(&docs_ratio),
        "documents {ours_docs} vs {}",
        authors.len()
    );
    assert!(
        (0.9..=1.1).contains(&ratio),
        "sentences {ours_total} vs {author_total}"
    );
}
