//! Every architecture against transformers and sentence-transformers, on
//! small random-initialised models built from a config.
//!
//! The fixtures in `tests/fixtures/<name>/` and their `golden.*` files are
//! written by `bench/make_text_fixtures.py`. For each fixture:
//!
//! ```python
//! torch.manual_seed(0)
//! model = AutoModel.from_config(config, attn_implementation="eager")  # T5EncoderModel for T5
//! model.save_pretrained(dir, safe_serialization=True)       # + tokenizer, ST modules
//! st = SentenceTransformer(dir, device="cpu")
//! batch = st.tokenizer(texts, padding=True, truncation="longest_first",
//!                      max_length=st.max_seq_length, return_tensors="pt")
//! with torch.no_grad():
//!     hidden_i = model(input_ids=ids_i[None]).last_hidden_state[0]   # each text alone
//!     hidden_batch = model(**batch).last_hidden_state               # padded batch
//!     embedding = st.encode(texts, batch_size=len(texts))
//!     embedding_query = st.encode(texts, prompt_name="query")       # when prompts exist
//! ```

use std::path::{Path, PathBuf};

use serde_json::Value;
use tandem_nn::encoder::{Tensors, TokenBatch};
use tandem_text::{EmbedOptions, Embedder, Mode, Pooling, Precision};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The cosine of two vectors, in float64.
fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot = |x: &[f32], y: &[f32]| -> f64 {
        x.iter()
            .zip(y)
            .map(|(p, q)| f64::from(*p) * f64::from(*q))
            .sum()
    };
    dot(a, b) / (dot(a, a) * dot(b, b)).sqrt()
}

/// Largest |a - b| relative to the largest |b| (at least 1).
fn rel_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    let scale = b.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    a.iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

struct Golden {
    json: Value,
    tensors: Tensors,
}

impl Golden {
    fn load(dir: &Path) -> Golden {
        let json = serde_json::from_str(&std::fs::read_to_string(dir.join("golden.json")).unwrap())
            .unwrap();
        let tensors = Tensors::read(&dir.join("golden.safetensors")).unwrap();
        Golden { json, tensors }
    }

    fn tensor(&mut self, name: &str) -> Vec<f32> {
        let shape: Vec<usize> = self.json["tensors"][name]
            .as_array()
            .unwrap_or_else(|| panic!("golden has no {name}"))
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        self.tensors.take(name, &shape).unwrap()
    }

    fn texts(&self) -> Vec<String> {
        self.json["texts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect()
    }

    /// The unpadded token ids of each text, as the Python tokenizer gave them.
    fn ids(&self, batch: &Value) -> Vec<Vec<u32>> {
        let lens = batch["lengths"].as_array().unwrap();
        batch["input_ids"]
            .as_array()
            .unwrap()
            .iter()
            .zip(lens)
            .map(|(row, n)| {
                row.as_array().unwrap()[..n.as_u64().unwrap() as usize]
                    .iter()
                    .map(|v| v.as_u64().unwrap() as u32)
                    .collect()
            })
            .collect()
    }
}

/// Tokens, hidden states (alone and padded), and the sentence embeddings of
/// one fixture against its golden file.
fn check(name: &str) {
    let dir = fixture(name);
    let mut g = Golden::load(&dir);
    let e = Embedder::load(&dir, EmbedOptions::default()).unwrap();
    let texts = g.texts();
    let want_ids = g.ids(&g.json["batch"]);
    let got: Vec<Vec<u32>> = e
        .tokenize(&texts)
        .unwrap()
        .into_iter()
        .map(|(ids, _)| ids)
        .collect();
    assert_eq!(
        got, want_ids,
        "{name}: token ids differ from transformers' tokenizer"
    );

    let h = e.encoder().hidden();
    for (i, ids) in want_ids.iter().enumerate() {
        let out = e.encoder().forward(TokenBatch {
            ids,
            lens: &[ids.len()],
            len: ids.len(),
            pad_rows: false,
        });
        let d = rel_diff(&out, &g.tensor(&format!("hidden.{i}")));
        assert!(d < 1e-5, "{name}: hidden states of text {i} differ by {d}");
    }
    let len = want_ids.iter().map(Vec::len).max().unwrap();
    let lens: Vec<usize> = want_ids.iter().map(Vec::len).collect();
    let padded: Vec<u32> = want_ids
        .iter()
        .flat_map(|ids| {
            ids.iter()
                .copied()
                .chain(std::iter::repeat_n(0, len - ids.len()))
        })
        .collect();
    let out = e.encoder().forward(TokenBatch {
        ids: &padded,
        lens: &lens,
        len,
        pad_rows: false,
    });
    let want = g.tensor("hidden_batch");
    for (b, &n) in lens.iter().enumerate() {
        let at = b * len * h..(b * len + n) * h;
        let d = rel_diff(&out[at.clone()], &want[at]);
        assert!(d < 1e-5, "{name}: padded batch, text {b} differs by {d}");
    }
    // bfloat16 (the linear layers and, in inference, the attention's
    // products): every token state of the padded batch near float32's.
    let opts = EmbedOptions {
        precision: Precision::Bf16,
        ..EmbedOptions::default()
    };
    let e16 = Embedder::load(&dir, opts).unwrap();
    let out16 = e16.encoder().forward(TokenBatch {
        ids: &padded,
        lens: &lens,
        len,
        pad_rows: false,
    });
    for (b, &n) in lens.iter().enumerate() {
        for t in b * len..b * len + n {
            let at = t * h..(t + 1) * h;
            let c = cosine(&out16[at.clone()], &want[at]);
            assert!(
                c > 0.999,
                "{name}: bfloat16, text {b} token {t}: cosine {c}"
            );
        }
    }

    let emb = e.embed(&texts, "", |_| {}).unwrap();
    let d = rel_diff(&emb.vectors, &g.tensor("embedding"));
    assert!(d < 1e-5, "{name}: sentence embeddings differ by {d}");
    assert_eq!(emb.empty, 1, "{name}: the empty text is counted");
    assert!(emb.truncated >= 2, "{name}: the long texts are truncated");
    if let Some(prompt) = g.json["query"]["prompt"].as_str() {
        let prompt = prompt.to_string();
        assert_eq!(
            e.dir().prompts.get("query"),
            Some(&prompt),
            "{name}: the query prompt is read"
        );
        let q = e.embed(&texts, &prompt, |_| {}).unwrap();
        let d = rel_diff(&q.vectors, &g.tensor("embedding_query"));
        assert!(d < 1e-5, "{name}: prompted embeddings differ by {d}");
    }
}

#[test]
fn bert_matches_transformers() {
    check("bert");
}

#[test]
fn bert_pooling_modes_match_sentence_transformers() {
    let dir = fixture("bert");
    let mut g = Golden::load(&dir);
    let e = Embedder::load(&dir, EmbedOptions::default()).unwrap();
    let ids = g.ids(&g.json["batch"]);
    let h = e.encoder().hidden();
    for mode in [
        Mode::Cls,
        Mode::Max,
        Mode::Mean,
        Mode::MeanSqrtLen,
        Mode::WeightedMean,
        Mode::LastToken,
    ] {
        let want = g.tensor(&format!("embedding_{}", mode.name()));
        let pooling = Pooling { modes: vec![mode] };
        for (i, ids) in ids.iter().enumerate() {
            let states = e.encoder().forward(TokenBatch {
                ids,
                lens: &[ids.len()],
                len: ids.len(),
                pad_rows: false,
            });
            let mut out = vec![0.0; h];
            pooling.pool(&states, h, &mut out);
            let d = rel_diff(&out, &want[i * h..(i + 1) * h]);
            assert!(
                d < 1e-5,
                "{} pooling of text {i} differs by {d}",
                mode.name()
            );
        }
    }
}

#[test]
fn roberta_matches_transformers() {
    check("roberta");
}

#[test]
fn xlm_roberta_matches_transformers() {
    check("xlm-roberta");
}

#[test]
fn mpnet_matches_transformers() {
    check("mpnet");
}

#[test]
fn t5_matches_transformers() {
    check("t5");
}

#[test]
fn t5_gated_matches_transformers() {
    check("t5-gated");
}

#[test]
fn modernbert_matches_transformers() {
    check("modernbert");
}

/// The error of loading a fixture of `refused/`.
fn refusal(name: &str) -> String {
    let e = Embedder::load(&fixture("refused").join(name), EmbedOptions::default()).unwrap_err();
    e.to_string()
}

#[test]
fn pytorch_bin_only_is_refused_with_the_conversion() {
    let e = refusal("pytorch-bin-only");
    assert!(
        e.contains("pytorch_model.bin") && e.contains("safe_serialization=True"),
        "{e}"
    );
}

#[test]
fn unsupported_architecture_lists_the_supported_ones() {
    let e = refusal("unsupported");
    assert!(e.contains("\"gpt2\" is not supported"), "{e}");
    for arch in [
        "bert",
        "roberta",
        "xlm-roberta",
        "mpnet",
        "t5",
        "modernbert",
    ] {
        assert!(e.contains(arch), "{arch} missing from: {e}");
    }
    assert!(e.contains("config.json"), "names the file: {e}");
}

#[test]
fn tokenizer_beyond_the_vocabulary_is_refused() {
    let e = refusal("vocab-mismatch");
    assert!(
        e.contains("tokenizer.json") && e.contains("vocab_size is 400"),
        "{e}"
    );
}

#[test]
fn missing_and_inconsistent_directories_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let e = Embedder::load(&tmp.path().join("nope"), EmbedOptions::default()).unwrap_err();
    assert!(e.to_string().contains("not a directory"), "{e}");
    let e = Embedder::load(tmp.path(), EmbedOptions::default()).unwrap_err();
    assert!(
        e.to_string().contains("config.json") && e.to_string().contains("missing"),
        "{e}"
    );
    // a config whose sizes disagree with the tensors
    let dir = tmp.path().join("bert");
    copy_dir(&fixture("bert"), &dir);
    let cfg = std::fs::read_to_string(dir.join("config.json")).unwrap();
    std::fs::write(
        dir.join("config.json"),
        cfg.replace("\"intermediate_size\": 64", "\"intermediate_size\": 48"),
    )
    .unwrap();
    let e = Embedder::load(&dir, EmbedOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("model.safetensors") && e.contains("[64, 32]") && e.contains("[48, 32]"),
        "{e}"
    );
    // an unreadable tokenizer
    std::fs::write(dir.join("config.json"), cfg).unwrap();
    std::fs::write(dir.join("tokenizer.json"), "{\"not\": \"a tokenizer\"}").unwrap();
    let e = Embedder::load(&dir, EmbedOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("tokenizer.json"), "{e}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[test]
fn every_encoder_counts_its_layers_as_its_config_says() {
    for name in [
        "bert",
        "roberta",
        "xlm-roberta",
        "mpnet",
        "t5",
        "modernbert",
    ] {
        let dir = fixture(name);
        let cfg: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap())
                .unwrap();
        let want = cfg["num_hidden_layers"]
            .as_u64()
            .or(cfg["num_layers"].as_u64())
            .unwrap() as usize;
        let e = Embedder::load(&dir, EmbedOptions::default()).unwrap();
        assert_eq!(e.encoder().layers(), want, "{name}");
    }
}

/// A model with separate query and document towers as
/// sentence-transformers writes it (`Router.for_query_document`: each
/// route its own transformer, pooling and Dense, then Normalize): tandem
/// embeds queries and documents as `encode_query` / `encode_document` do.
#[test]
fn router_towers_embed_as_sentence_transformers_routes_do() {
    use tandem_text::{Tower, Towers};
    let dir = fixture("router");
    let mut g = Golden::load(&dir);
    let texts = g.texts();
    let towers = Towers::load(&dir, EmbedOptions::default()).unwrap();
    assert!(towers.separate());
    assert_eq!(towers.dim(), 16);
    for tower in [Tower::Query, Tower::Document] {
        let want = g.tensor(tower.route());
        let got = towers
            .tower(tower)
            .embed(&texts, "", |_| {})
            .unwrap()
            .vectors;
        let err = rel_diff(&got, &want);
        assert!(err < 1e-5, "{tower:?}: off by {err:.2e}");
    }
    assert_ne!(
        towers.query().embed(&texts, "", |_| {}).unwrap().vectors,
        towers.document().embed(&texts, "", |_| {}).unwrap().vectors
    );
}

/// A damaged Router directory gets one error naming `router_config.json`
/// and what is wrong with it.
#[test]
fn damaged_router_config_is_refused_clearly() {
    use tandem_text::Towers;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("router");
    copy_dir(&fixture("router"), &dir);
    let good = std::fs::read_to_string(dir.join("router_config.json")).unwrap();
    for (from, to, says) in [
        ("\"document\": [", "\"passage\": [", "no route \"document\""),
        (
            "pooling.Pooling\"",
            "pooling.WeightedLayerPooling\"",
            "is not supported",
        ),
        (
            "\"query_0_Transformer\",\n",
            "\"../query_0_Transformer\",\n",
            "leaves the model directory",
        ),
    ] {
        assert!(good.contains(from), "{from}");
        std::fs::write(dir.join("router_config.json"), good.replacen(from, to, 1)).unwrap();
        let e = Towers::load(&dir, EmbedOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("router_config.json") && e.contains(says),
            "{says}: {e}"
        );
    }
    std::fs::remove_file(dir.join("router_config.json")).unwrap();
    let e = Towers::load(&dir, EmbedOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("router_config.json"), "{e}");
}
