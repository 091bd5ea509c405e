//! Real data: the SciFact sentences in ../shared/data (skipped when absent).

use std::path::PathBuf;

use tandem_data::{
    baseline, from_sentences, Dataset, QueryKind, SentencesOptions, Split, DEFAULT_CONTEXT,
};
use tandem_io::Overwrite;

fn scifact() -> Option<PathBuf> {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/scifact-abstracts");
    if dir.join("sentences.jsonl").is_file() {
        Some(dir)
    } else {
        eprintln!(
            "skipped: {} is absent (the shared data folder beside the repository)",
            dir.display()
        );
        None
    }
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
