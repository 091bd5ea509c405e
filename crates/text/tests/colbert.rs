//! ColBERT models against PyLate (`bench/make_colbert_fixtures.py`): the
//! token ids, every token vector within cosine 0.9999 of PyLate's, and the
//! same MaxSim ranking of the documents for every query.

use std::path::{Path, PathBuf};

use tandem_nn::encoder::Tensors;
use tandem_text::{ColBert, EmbedOptions, Side};

fn fixtures() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"))
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let n = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (n(a) * n(b)).max(1e-30)
}

/// MaxSim of every query against every document: `[queries][documents]`.
fn maxsim(queries: &[Vec<f32>], docs: &[Vec<f32>], dim: usize) -> Vec<Vec<f64>> {
    queries
        .iter()
        .map(|q| {
            docs.iter()
                .map(|d| {
                    q.chunks_exact(dim)
                        .map(|qt| {
                            d.chunks_exact(dim)
                                .map(|dt| qt.iter().zip(dt).map(|(a, b)| f64::from(a * b)).sum())
                                .fold(f64::NEG_INFINITY, f64::max)
                        })
                        .sum()
                })
                .collect()
        })
        .collect()
}

fn ranking(scores: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    order
}

/// Checks `model` against the golden in `golden`.
fn parity(model: &Path, golden: &Path) {
    let cb = ColBert::load(model, EmbedOptions::default()).unwrap();
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(golden.join("golden.json")).unwrap())
            .unwrap();
    let mut tensors = Tensors::read(&golden.join("golden.safetensors")).unwrap();
    let dim = cb.dim();
    let mut sides = Vec::new();
    for (side, key, name) in [
        (Side::Query, "queries", "query"),
        (Side::Document, "documents", "document"),
    ] {
        let texts: Vec<String> = meta[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect();
        // the token ids of each text (a document's before the skiplist)
        let tokens = cb.tokenize(&texts, side).unwrap();
        let mv = cb.encode(&texts, side, |_| {}).unwrap();
        let mut per_text = Vec::new();
        for (i, t) in tokens.iter().enumerate() {
            let want_ids: Vec<u32> = meta[format!("{name}_ids")][i]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            let kept: Vec<u32> = match side {
                Side::Query => t.ids.clone(),
                Side::Document => t
                    .ids
                    .iter()
                    .copied()
                    .filter(|id| want_ids.contains(id))
                    .collect(),
            };
            assert_eq!(kept, want_ids, "{name} {i}: token ids");
            let (_, want) = tensors.take_raw(&format!("{name}.{i}")).unwrap();
            let got = &mv.vectors[mv.offsets[i] * dim..mv.offsets[i + 1] * dim];
            assert_eq!(
                got.len(),
                want.len(),
                "{name} {i}: {} tokens, PyLate has {}",
                got.len() / dim,
                want.len() / dim
            );
            for (j, (g, w)) in got
                .chunks_exact(dim)
                .zip(want.chunks_exact(dim))
                .enumerate()
            {
                let c = cosine(g, w);
                assert!(c > 0.9999, "{name} {i} token {j}: cosine {c}");
            }
            per_text.push(got.to_vec());
        }
        sides.push(per_text);
    }
    let (q, d) = (&sides[0], &sides[1]);
    let ours = maxsim(q, d, dim);
    let mut tensors = Tensors::read(&golden.join("golden.safetensors")).unwrap();
    let theirs_q: Vec<Vec<f32>> = (0..q.len())
        .map(|i| tensors.take_raw(&format!("query.{i}")).unwrap().1)
        .collect();
    let theirs_d: Vec<Vec<f32>> = (0..d.len())
        .map(|i| tensors.take_raw(&format!("document.{i}")).unwrap().1)
        .collect();
    let theirs = maxsim(&theirs_q, &theirs_d, dim);
    for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        assert_eq!(ranking(a), ranking(b), "query {i}: MaxSim rankings differ");
    }
}

#[test]
fn modernbert_colbert_matches_pylate() {
    let dir = fixtures().join("colbert-modernbert");
    parity(&dir, &dir);
}

/// The ColBERT PyLate builds from all-MiniLM-L6-v2 (its tokenizer gains
/// `[Q] ` / `[D] `, so its weights are not the MiniLM files'): only where
/// `bench/make_colbert_fixtures.py` has written it into `target/models`
/// (CI has no Python; the ModernBERT fixture above runs everywhere).
#[test]
fn minilm_colbert_matches_pylate() {
    let name = "colbert-minilm-l6-v2";
    let model = match std::env::var_os("TANDEM_MODELS") {
        Some(dir) => PathBuf::from(dir).join(name),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../target/models")
            .join(name),
    };
    if !model.is_dir() {
        eprintln!(
            "skipping: {} not built (bench/make_colbert_fixtures.py)",
            model.display()
        );
        return;
    }
    parity(&model, &fixtures().join("colbert-minilm"));
}

#[test]
fn a_dense_model_is_not_a_colbert() {
    let e = ColBert::load(&fixtures().join("bert"), EmbedOptions::default()).unwrap_err();
    let s = e.to_string();
    assert!(s.contains("not a ColBERT"), "{s}");
}
