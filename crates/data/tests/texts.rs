//! `texts.jsonl`: written by `from_sentences`, read through `Dataset::texts`,
//! replaced or dropped when a dataset is rebuilt.

use std::fs;
use std::path::Path;

use tandem_bank::Vectors;
use tandem_data::{
    from_sentences, write_dataset, BankSource, Dataset, DatasetParts, Provenance, SentencesOptions,
    Sequence, Split, TEXTS_FILE,
};
use tandem_io::Overwrite;

/// A sentences file of `texts` (documents of three sentences) and its
/// vectors, in `dir`.
fn sentences(dir: &Path, texts: &[&str]) -> (std::path::PathBuf, std::path::PathBuf) {
    let lines: String = texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let line =
                serde_json::json!({"doc_id": format!("d{}", i / 3), "idx": i % 3, "text": t});
            format!("{line}\n")
        })
        .collect();
    let s = dir.join("sentences.jsonl");
    fs::write(&s, lines).unwrap();
    let v = dir.join("vectors.npy");
    let data: Vec<f32> = (0..texts.len() * 2).map(|x| x as f32).collect();
    tandem_bank::write_npy(&v, texts.len(), 2, Vectors::F32(&data), Overwrite::Allow).unwrap();
    (s, v)
}

fn build(s: &Path, v: &Path, out: &Path, overwrite: Overwrite) {
    from_sentences(&SentencesOptions {
        sentences: s,
        vectors: v,
        out,
        context: 2,
        copy_bank: false,
        overwrite,
        command: "test".to_string(),
    })
    .unwrap();
}

#[test]
fn from_sentences_writes_the_text_of_every_row() {
    let tmp = tempfile::tempdir().unwrap();
    let texts = [
        "One.",
        "Two \"quoted\".",
        "Tr\u{e8}s",
        "Line\nbreak",
        "",
        "Six.",
    ];
    let (s, v) = sentences(tmp.path(), &texts);
    let out = tmp.path().join("ds");
    build(&s, &v, &out, Overwrite::Refuse);

    let written = fs::read_to_string(out.join(TEXTS_FILE)).unwrap();
    let lines: Vec<&str> = written.lines().collect();
    assert_eq!(lines.len(), texts.len());
    for (line, text) in lines.iter().zip(texts) {
        assert_eq!(*line, serde_json::json!({ "text": text }).to_string());
    }

    let ds = Dataset::open(&out).unwrap();
    let t = ds
        .texts()
        .unwrap()
        .expect("from_sentences writes texts.jsonl");
    assert_eq!(t.rows(), texts.len());
    assert_eq!(t.path(), out.join(TEXTS_FILE));
    for (row, text) in texts.iter().enumerate().rev() {
        assert_eq!(t.get(row).unwrap(), *text);
    }
}

#[test]
fn rebuilds_replace_or_drop_the_texts() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ds");
    let (s, v) = sentences(tmp.path(), &["a", "b", "c"]);
    build(&s, &v, &out, Overwrite::Refuse);
    let (s, v) = sentences(tmp.path(), &["x", "y", "z"]);
    build(&s, &v, &out, Overwrite::Allow);
    let t = Dataset::open(&out).unwrap().texts().unwrap().unwrap();
    assert_eq!(t.get(2).unwrap(), "z");

    // A dataset built without texts over one with texts keeps no stale file.
    let seqs = vec![Sequence {
        id: "a".into(),
        split: Split::Train,
        rows: vec![0, 1, 2],
    }];
    let parts = |texts| DatasetParts {
        bank: BankSource::Reference(&v),
        rows: 3,
        dim: 2,
        dtype: "float32",
        ids: None,
        texts,
        sequences: &seqs,
        context: 2,
        provenance: Provenance {
            builder: "t".into(),
            command: "t".into(),
            tool: "t".into(),
            seed: None,
            sources: vec![],
            params: serde_json::Value::Null,
        },
    };
    write_dataset(&out, Overwrite::Allow, parts(None)).unwrap();
    assert!(!out.join(TEXTS_FILE).exists());
    assert!(Dataset::open(&out).unwrap().texts().unwrap().is_none());

    // Texts that do not match the bank are refused before anything is replaced.
    let two = vec!["p".to_string(), "q".to_string()];
    let e = write_dataset(&out, Overwrite::Allow, parts(Some(&two)))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(TEXTS_FILE) && e.contains("holds 2 lines, but the bank has 3 rows"),
        "{e}"
    );
    assert!(!out.join(TEXTS_FILE).exists());
    let left: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "staging left behind: {left:?}");
}

#[test]
fn a_bad_texts_file_in_a_dataset_names_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (s, v) = sentences(tmp.path(), &["a", "b", "c"]);
    let out = tmp.path().join("ds");
    build(&s, &v, &out, Overwrite::Refuse);
    fs::write(out.join(TEXTS_FILE), "{\"text\":\"a\"}\n{\"text\":[]}\n").unwrap();
    let ds = Dataset::open(&out).unwrap();
    let e = ds.texts().unwrap_err().to_string();
    assert!(
        e.contains(&out.join(TEXTS_FILE).display().to_string())
            && e.contains("holds 2 lines, but the bank has 3 rows"),
        "{e}"
    );
    fs::write(
        out.join(TEXTS_FILE),
        "{\"text\":\"a\"}\n{\"text\":[]}\n{\"text\":\"c\"}\n",
    )
    .unwrap();
    let t = ds.texts().unwrap().unwrap();
    let e = t.get(1).unwrap_err().to_string();
    assert!(
        e.contains(&format!("{TEXTS_FILE}:2: not a text line")),
        "{e}"
    );
    assert_eq!(t.get(2).unwrap(), "c");
}
