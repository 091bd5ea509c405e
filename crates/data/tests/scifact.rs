//! Real data: the SciFact sentences in ../shared/data (skipped when absent).

use std::path::PathBuf;

use tandem_data::{
    baseline, from_sentences, Dataset, QueryKind, SentencesOptions, Split, Texts, DEFAULT_CONTEXT,
};
use tandem_io::Overwrite;

/// `shared/data/scifact-abstracts`, or `None` (after a note) when the shared
/// data folder is absent.
fn scifact() -> Option<PathBuf> {
    tandem_io::shared_data(env!("CARGO_MANIFEST_DIR")).map(|d| d.join("scifact-abstracts"))
}

/// The `text` field of the first line of the sentences file.
fn first_text(sentences: &std::path::Path) -> String {
    let all = std::fs::read_to_string(sentences).unwrap();
    let first: serde_json::Value = serde_json::from_str(all.lines().next().unwrap()).unwrap();
    first["text"].as_str().unwrap().to_string()
}

#[test]
fn the_sentences_file_is_a_texts_file() {
    let Some(src) = scifact() else { return };
    let sentences = src.join("sentences.jsonl");
    let texts = Texts::open(&sentences, 22_520).unwrap();
    let first = first_text(&sentences);
    assert!(first.starts_with("ID elements are short interspersed elements"));
    assert_eq!(texts.get(0).unwrap(), first);
    assert!(!texts.get(22_519).unwrap().is_empty());
    let e = Texts::open(&sentences, 22_521).unwrap_err().to_string();
    assert!(
        e.contains("holds 22520 lines, but the bank has 22521 rows"),
        "{e}"
    );
}

/// The reference table of shared/data/README.md (numpy/PyTorch).
const REFERENCE: [(QueryKind, [f64; 7]); 2] = [
    (
        QueryKind::Last,
        [0.1627, 0.3829, 0.4698, 0.6473, 0.6972, 0.8119, 0.2558],
    ),
    (
        QueryKind::Mean,
        [0.1631, 0.4506, 0.5614, 0.7490, 0.8114, 0.8992, 0.2833],
    ),
];

#[test]
fn scifact_counts_and_baselines_match_the_reference() {
    let Some(src) = scifact() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("scifact");
    let manifest = from_sentences(&SentencesOptions {
        sentences: &src.join("sentences.jsonl"),
        vectors: &src.join("sentences.minilm.f16.npy"),
        out: &out,
        context: DEFAULT_CONTEXT,
        copy_bank: false,
        overwrite: Overwrite::Refuse,
        command: "test".to_string(),
    })
    .unwrap();
    assert_eq!(manifest.splits.train.examples, 16_314);
    assert_eq!(manifest.splits.test.examples, 2_084);
    assert_eq!(manifest.rows, 22_520);
    // The bank is referenced (not copied), by the absolute path given.
    assert_eq!(
        manifest.bank,
        src.join("sentences.minilm.f16.npy").to_string_lossy()
    );

    let ds = Dataset::open(&out).unwrap();
    let texts = ds
        .texts()
        .unwrap()
        .expect("from_sentences writes texts.jsonl");
    assert_eq!(
        texts.get(0).unwrap(),
        first_text(&src.join("sentences.jsonl"))
    );
    let report = baseline(&ds, Split::Test, &[1, 5, 10, 50, 100, 500]).unwrap();
    assert_eq!(report.examples, 2_084);
    for (kind, expected) in REFERENCE {
        let got = &report
            .results
            .iter()
            .find(|r| r.query == kind)
            .unwrap()
            .values;
        for (g, e) in got.iter().zip(expected) {
            assert!(
                (g - e).abs() <= 0.001,
                "{kind:?}: got {got:?}, reference {expected:?}"
            );
        }
    }
}
