//! `tandem embed` with a ColBERT: a multi-vector bank (float16 token
//! matrix, offsets, ids), sharded and merged to the same bytes, and the
//! errors for a bank of the other kind.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use tandem_bank::MultiBank;

fn tandem() -> Command {
    Command::cargo_bin("tandem").unwrap()
}

fn model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../text/tests/fixtures/colbert-modernbert")
}

fn corpus(dir: &Path) -> PathBuf {
    let p = dir.join("corpus.jsonl");
    let lines: Vec<String> = (0..1500)
        .map(|i| {
            format!(
                "{{\"_id\": \"d{i}\", \"title\": \"\", \"text\": \"protein {i} folds, fast!\"}}"
            )
        })
        .collect();
    std::fs::write(&p, lines.join("\n") + "\n").unwrap();
    p
}

#[test]
fn embeds_a_multi_vector_bank_and_merges_its_shards() {
    let dir = tempfile::tempdir().unwrap();
    let input = corpus(dir.path());
    let whole = dir.path().join("whole.npy");
    tandem()
        .args(["embed", "--model"])
        .arg(model())
        .arg("--input")
        .arg(&input)
        .arg("--out")
        .arg(&whole)
        .assert()
        .success();
    let bank = MultiBank::open(&whole, Some(&dir.path().join("whole.ids.txt"))).unwrap();
    assert_eq!(bank.docs(), 1500);
    assert_eq!(bank.dim(), 16);
    assert_eq!(bank.tokens().dtype(), tandem_bank::Dtype::F16);
    assert_eq!(bank.ids().unwrap()[3], "d3");
    let mut parts = Vec::new();
    for i in 0..2 {
        let p = dir.path().join(format!("part{i}.npy"));
        tandem()
            .args(["embed", "--model"])
            .arg(model())
            .arg("--input")
            .arg(&input)
            .arg("--out")
            .arg(&p)
            .args(["--shard", &format!("{i}/2")])
            .assert()
            .success();
        parts.push(p);
    }
    let merged = dir.path().join("merged.npy");
    tandem()
        .args(["bank", "merge"])
        .args(&parts)
        .arg("--out")
        .arg(&merged)
        .assert()
        .success();
    for ext in ["npy", "offsets.npy", "ids.txt"] {
        assert_eq!(
            std::fs::read(whole.with_extension(ext)).unwrap(),
            std::fs::read(merged.with_extension(ext)).unwrap(),
            "{ext}"
        );
    }
    // a dense model refuses --colbert; a dense bank is not a multi-vector one
    let dense = Path::new(env!("CARGO_MANIFEST_DIR")).join("../text/tests/fixtures/bert");
    let out = tandem()
        .args(["embed", "--colbert", "--model"])
        .arg(&dense)
        .arg("--input")
        .arg(&input)
        .arg("--out")
        .arg(dir.path().join("dense.npy"))
        .assert()
        .failure();
    let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(err.contains("not a ColBERT"), "{err}");
}
