//! The real all-MiniLM-L6-v2 against sentence-transformers.
//!
//! `../shared/data/reference/minilm-parity.f32.npy` holds the 256 texts of
//! `minilm-parity.jsonl` embedded by sentence-transformers:
//!
//! ```python
//! model = SentenceTransformer("all-MiniLM-L6-v2", device="cpu")  # max_seq_length 256
//! emb = model.encode(texts, batch_size=32, normalize_embeddings=False)  # Normalize module
//! np.save("minilm-parity.f32.npy", emb.astype(np.float32))
//! ```

use tandem_text::{EmbedOptions, Embedder, Precision};

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64) * (*y as f64))
        .sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn parity(precision: Precision) -> Option<(f64, f64)> {
    let data = tandem_io::shared_data(env!("CARGO_MANIFEST_DIR"))?;
    let model = tandem_io::real_model(env!("CARGO_MANIFEST_DIR"), "all-MiniLM-L6-v2")?;
    let texts: Vec<String> = std::fs::read_to_string(data.join("reference/minilm-parity.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["text"].as_str().unwrap().to_string()
        })
        .collect();
    let want = tandem_bank::Bank::open(
        &data.join("reference/minilm-parity.f32.npy"),
        &tandem_bank::OpenOptions::default(),
    )
    .unwrap()
    .to_f32_vec();
    let opts = EmbedOptions {
        precision,
        ..EmbedOptions::default()
    };
    let e = Embedder::load(&model, opts).unwrap();
    assert_eq!((e.dim(), e.max_len(), e.model_type()), (384, 256, "bert"));
    let got = e.embed(&texts, "", |_| {}).unwrap();
    assert_eq!(got.vectors.len(), want.len());
    let mut worst = 1.0f64;
    let mut max_abs = 0.0f64;
    for (a, b) in got.vectors.chunks_exact(384).zip(want.chunks_exact(384)) {
        worst = worst.min(cosine(a, b));
        for (x, y) in a.iter().zip(b) {
            max_abs = max_abs.max((x - y).abs() as f64);
        }
    }
    Some((worst, max_abs))
}

#[test]
fn float32_embeddings_match_sentence_transformers() {
    let Some((worst, max_abs)) = parity(Precision::F32) else {
        return;
    };
    eprintln!("f32: worst cosine {worst:.7}, max |diff| {max_abs:.2e}");
    assert!(worst >= 0.99999, "worst cosine {worst}");
    assert!(max_abs <= 1e-4, "max abs diff {max_abs}");
}

#[test]
fn bfloat16_embeddings_stay_close() {
    let Some((worst, _)) = parity(Precision::Bf16) else {
        return;
    };
    eprintln!("bf16: worst cosine {worst:.7}");
    assert!(worst >= 0.999, "worst cosine {worst}");
}
