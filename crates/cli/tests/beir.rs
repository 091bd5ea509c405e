//! `tandem beir` with the real all-MiniLM-L6-v2 on BEIR SciFact gives the
//! figures sentence-transformers gives (`../shared/data/README.md`):
//!
//! ```python
//! model = SentenceTransformer("all-MiniLM-L6-v2")          # max_seq_length 256
//! docs = [(d["title"] + " " + d["text"]).strip() for d in corpus]
//! scores = util.cos_sim(model.encode(queries), model.encode(docs))
//! # top 1000 per query, pytrec_eval: ndcg_cut_10 0.6451, recall_100 0.9250
//! ```

use assert_cmd::Command;
use serde_json::Value;

#[test]
fn minilm_on_scifact_matches_sentence_transformers() {
    let Some(data) = tandem_io::shared_data(env!("CARGO_MANIFEST_DIR")) else {
        return;
    };
    let Some(model) = tandem_io::real_model(env!("CARGO_MANIFEST_DIR"), "all-MiniLM-L6-v2") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::cargo_bin("tandem")
        .unwrap()
        .args(["beir", "--json", "--threads", "2", "--model"])
        .arg(&model)
        .arg("--data")
        .arg(data.join("scifact-beir"))
        .arg("--cache")
        .arg(tmp.path().join("cache"))
        .arg("--out")
        .arg(tmp.path().join("scifact.run"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let m = &v["metrics"];
    let (ndcg, recall) = (
        m["ndcg@10"].as_f64().unwrap(),
        m["recall@100"].as_f64().unwrap(),
    );
    eprintln!(
        "nDCG@10 {ndcg:.4}, Recall@100 {recall:.4}, MAP@100 {}, MRR@10 {}",
        m["map@100"], m["recip_rank@10"]
    );
    assert!((ndcg - 0.6451).abs() <= 0.002, "nDCG@10 {ndcg} vs 0.6451");
    assert!(
        (recall - 0.9250).abs() <= 0.002,
        "Recall@100 {recall} vs 0.9250"
    );
    assert_eq!(v["queries"], 300);
    assert_eq!(v["documents"], 5183);
    // the run holds 1000 hits for each of the 300 queries
    let run = std::fs::read_to_string(tmp.path().join("scifact.run")).unwrap();
    assert_eq!(run.lines().count(), 300 * 1000);
}
