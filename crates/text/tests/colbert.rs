//! ColBERT models against PyLate (`bench/make_colbert_fixtures.py`) and
//! against sentence-transformers v6's `MultiVectorEncoder`
//! (`bench/make_st6_colbert_fixture.py`): the token ids, every token vector
//! within cosine 0.9999 of theirs, and the same MaxSim ranking of the
//! documents for every query.

use std::path::{Path, PathBuf};

use tandem_nn::encoder::Tensors;
use tandem_text::{ColBert, ColbertLayout, EmbedOptions, Side};

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
        // the token ids of each text that keep a vector
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
            let kept: Vec<u32> = t
                .ids
                .iter()
                .copied()
                .filter(|&id| cb.keeps(id, side))
                .collect();
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

/// The ColBERT PyLate builds from all-MiniLM-L6-v2 with its defaults
/// (query expansion not attended to), rebuilt in `dir` from the real
/// MiniLM and the committed overlay: every file of PyLate's directory but
/// the weights, and the two word-embedding rows it adds for `[Q] ` / `[D] `
/// (its other tensors are MiniLM's, bit for bit:
/// `bench/make_colbert_fixtures.py` checks it).
fn minilm_colbert(dir: &Path) -> Option<PathBuf> {
    let base = tandem_io::real_model(env!("CARGO_MANIFEST_DIR"), "all-MiniLM-L6-v2")?;
    let overlay = fixtures().join("colbert-minilm/overlay");
    let out = dir.join("colbert-minilm-l6-v2");
    for rel in [
        "config.json",
        "config_sentence_transformers.json",
        "modules.json",
        "sentence_bert_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "1_Dense/config.json",
        "1_Dense/model.safetensors",
    ] {
        std::fs::create_dir_all(out.join(rel).parent().unwrap()).unwrap();
        std::fs::copy(overlay.join(rel), out.join(rel)).unwrap();
    }
    let mut added = Tensors::read(&overlay.join("added_rows.safetensors")).unwrap();
    let (rows_shape, rows) = added.take_raw("rows").unwrap();
    let mut minilm = Tensors::read(&base.join("model.safetensors")).unwrap();
    let mut names = minilm.names();
    names.sort();
    let mut params = tandem_nn::Params::default();
    for name in names {
        let (mut shape, mut data) = minilm.take_raw(&name).unwrap();
        if name == "embeddings.word_embeddings.weight" {
            assert_eq!(shape[1], rows_shape[1]);
            shape[0] += rows_shape[0];
            data.extend_from_slice(&rows);
        }
        params.push(&name, &shape, data);
    }
    std::fs::write(
        out.join("model.safetensors"),
        params.to_safetensors(&Default::default()),
    )
    .unwrap();
    Some(out)
}

#[test]
fn minilm_colbert_matches_pylate() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(model) = minilm_colbert(tmp.path()) else {
        return;
    };
    parity(&model, &fixtures().join("colbert-minilm"));
}

#[test]
fn a_dense_model_is_not_a_colbert() {
    let e = ColBert::load(&fixtures().join("bert"), EmbedOptions::default()).unwrap_err();
    let s = e.to_string();
    assert!(s.contains("not a ColBERT"), "{s}");
}

/// A ColBERT saved by sentence-transformers 6 (`MultiVectorEncoder`) from
/// the tiny BERT: `[Q] ` / `[D] ` prompts as text, fixed query expansion
/// not attended to, the punctuation skiplist on documents.
#[test]
fn st6_bert_colbert_matches_sentence_transformers() {
    let dir = fixtures().join("colbert-st6-bert");
    assert!(ColBert::is_colbert(&dir).unwrap());
    let cb = ColBert::load(&dir, EmbedOptions::default()).unwrap();
    assert_eq!(cb.config().layout, ColbertLayout::SentenceTransformers);
    parity(&dir, &dir);
}

/// The same from the tiny ModernBERT: `query: ` / `document: ` prompts,
/// expansion strategy `min` attended to, the skiplist on queries too.
#[test]
fn st6_modernbert_colbert_matches_sentence_transformers() {
    let dir = fixtures().join("colbert-st6-modernbert");
    let cb = ColBert::load(&dir, EmbedOptions::default()).unwrap();
    let c = cb.config();
    assert_eq!(
        (c.query_length, c.expansion_length, c.skiplist_queries),
        (20, 12, true)
    );
    parity(&dir, &dir);
}

/// A copy of the sentence-transformers fixture with `edit` applied to the
/// JSON file `rel`.
fn damaged_st6(tmp: &Path, rel: &str, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let src = fixtures().join("colbert-st6-bert");
    let out = tmp.join("model");
    for entry in walk(&src) {
        let to = out.join(entry.strip_prefix(&src).unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&entry, &to).unwrap();
    }
    let path = out.join(rel);
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&path, v.to_string()).unwrap();
    out
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Settings of sentence-transformers' layout that tandem cannot honour are
/// refused, each with the file and the setting named.
#[test]
fn st6_colbert_refuses_what_it_cannot_run() {
    type Edit = fn(&mut serde_json::Value);
    let cases: [(&str, Edit, &str, &str); 7] = [
        (
            "sentence_bert_config.json",
            |v| v["query_expansion"]["strategy"] = "longest".into(),
            "sentence_bert_config.json",
            "query_expansion.strategy",
        ),
        (
            "sentence_bert_config.json",
            |v| v["query_length"] = 8.into(),
            "sentence_bert_config.json",
            "query_length 8 is below query_expansion.length 16",
        ),
        (
            "sentence_bert_config.json",
            |v| v["query_expansion"]["token"] = "[NOPE]".into(),
            "sentence_bert_config.json",
            "query_expansion.token \"[NOPE]\" is not a token",
        ),
        (
            "2_MultiVectorMask/config.json",
            |v| v["keep_only_token_ids"] = serde_json::json!([5]),
            "2_MultiVectorMask",
            "keep_only_token_ids",
        ),
        (
            "2_MultiVectorMask/config.json",
            |v| v["skiplist_tasks"] = "image".into(),
            "2_MultiVectorMask",
            "skiplist_tasks names the task \"image\"",
        ),
        (
            "modules.json",
            |v| {
                v.as_array_mut().unwrap().push(serde_json::json!({
                    "idx": 4, "name": "4", "path": "4_TokenPooling",
                    "type": "sentence_transformers.multi_vector_encoder.modules.token_pooling.HierarchicalTokenPooling"
                }))
            },
            "modules.json",
            "token pooling",
        ),
        (
            "modules.json",
            |v| {
                v.as_array_mut().unwrap().pop();
            },
            "modules.json",
            "no Normalize module",
        ),
    ];
    for (rel, edit, file, what) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let dir = damaged_st6(tmp.path(), rel, edit);
        let e = ColBert::load(&dir, EmbedOptions::default()).unwrap_err();
        let s = e.to_string();
        assert!(s.contains(file) && s.contains(what), "{rel}: {s}");
    }
}

/// The directory the refusals start from loads (so each refusal is its
/// edit's).
#[test]
fn st6_undamaged_copy_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = damaged_st6(tmp.path(), "modules.json", |_| {});
    ColBert::load(&dir, EmbedOptions::default()).unwrap();
}

/// A model loaded from sentence-transformers v6's layout is saved in that
/// layout (PyLate's would insert its prompt-text prefixes as tokens): the
/// settings of every module as they were, the new weights, and it loads
/// back to the same token vectors.
#[test]
fn st6_colbert_saves_in_its_own_layout_and_loads_back() {
    for name in ["colbert-st6-bert", "colbert-st6-modernbert"] {
        let src = fixtures().join(name);
        let mut cb = ColBert::load(&src, EmbedOptions::default()).unwrap();
        // weights unlike the directory's, in the encoder and the Dense
        let e = cb.embedder_mut();
        for p in e.params_mut().iter_mut() {
            for (i, x) in p.data.iter_mut().enumerate() {
                *x += 1e-3 * ((i % 7) as f32 - 3.0);
            }
        }
        e.sync();
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("saved");
        cb.save(&out, "card").unwrap();
        for f in [
            "modules.json",
            "sentence_bert_config.json",
            "config_sentence_transformers.json",
            "1_Dense/config.json",
            "2_MultiVectorMask/config.json",
            "tokenizer.json",
        ] {
            assert_eq!(
                std::fs::read(src.join(f)).unwrap(),
                std::fs::read(out.join(f)).unwrap(),
                "{name}: {f}"
            );
        }
        assert!(
            !out.join("golden.safetensors").exists(),
            "weights are not copied"
        );
        let back = ColBert::load(&out, EmbedOptions::default()).unwrap();
        assert_eq!(back.config().layout, ColbertLayout::SentenceTransformers);
        let (a, b) = (cb.embedder().params(), back.embedder().params());
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b.iter()) {
            assert!(x.data == y.data, "{name}: {} differs", x.name);
        }
        let texts = vec!["a query about cells".to_string(), "dna".to_string()];
        for side in [Side::Query, Side::Document] {
            let (v, w) = (
                cb.encode(&texts, side, |_| {}).unwrap(),
                back.encode(&texts, side, |_| {}).unwrap(),
            );
            assert_eq!(v.offsets, w.offsets);
            assert!(v.vectors == w.vectors, "{name}: {side:?} vectors differ");
        }
    }
}

/// Mining with a ColBERT ranks by MaxSim: `candidates` embeds the texts in
/// batches (out of input order), and its hits and positive scores are a
/// brute-force float64 MaxSim over the documents' float16 token vectors,
/// the positives left out.
#[test]
fn colbert_mining_ranks_by_maxsim_without_the_positives() {
    use tandem_text::mine::{candidates, Ranker};
    let dir = fixtures().join("colbert-modernbert");
    let opts = EmbedOptions {
        batch: 3,
        ..EmbedOptions::default()
    };
    let cb = ColBert::load(&dir, opts).unwrap();
    let words = [
        "cells", "protein", "the", "binding", "of", "tumour", "growth", "in", "mice", "dna",
    ];
    let text = |i: usize, n: usize| -> String {
        (0..n)
            .map(|j| words[(i * 7 + j * 3) % words.len()])
            .collect::<Vec<_>>()
            .join(" ")
    };
    let docs: Vec<String> = (0..11).map(|i| text(i, 2 + (i * 5) % 9)).collect();
    let queries: Vec<String> = (0..4).map(|i| text(i + 20, 2 + i)).collect();
    let positives: Vec<Vec<u32>> = vec![vec![0], vec![3, 5], vec![], vec![10]];
    let toks = |texts: &[String], side| -> Vec<Vec<u32>> {
        cb.tokenize_texts(texts, side)
            .unwrap()
            .into_iter()
            .map(|t| t.0)
            .collect()
    };
    let (q_tokens, d_tokens) = (toks(&queries, Side::Query), toks(&docs, Side::Document));
    let (d, q) = (
        cb.encode(&docs, Side::Document, |_| {}).unwrap(),
        cb.encode(&queries, Side::Query, |_| {}).unwrap(),
    );
    let dim = cb.dim();
    let rows = |m: &tandem_text::MultiVectors, half: bool| -> Vec<Vec<f32>> {
        m.offsets
            .windows(2)
            .map(|w| {
                m.vectors[w[0] * dim..w[1] * dim]
                    .iter()
                    .map(|&x| {
                        if half {
                            half::f16::from_f32(x).to_f32()
                        } else {
                            x
                        }
                    })
                    .collect()
            })
            .collect()
    };
    let want = maxsim(&rows(&q, false), &rows(&d, true), dim);
    let got = candidates(
        &Ranker::Colbert(Box::new(cb)),
        &q_tokens,
        &d_tokens,
        &positives,
        4,
        |_| {},
    )
    .unwrap();
    for (qi, ps) in positives.iter().enumerate() {
        let order: Vec<usize> = ranking(&want[qi])
            .into_iter()
            .filter(|d| !ps.contains(&(*d as u32)))
            .take(4)
            .collect();
        let hits = &got.hits[qi];
        assert_eq!(hits.len(), 4, "query {qi}");
        for (rank, (&(doc, score), &w)) in hits.iter().zip(&order).enumerate() {
            assert!(
                (f64::from(score) - want[qi][w]).abs() < 1e-3,
                "query {qi} rank {rank}: {score} vs {}",
                want[qi][w]
            );
            // the same document, unless two are tied within the tolerance
            if doc as usize != w {
                assert!((want[qi][doc as usize] - want[qi][w]).abs() < 1e-3);
            }
        }
        for (&p, &s) in ps.iter().zip(&got.positive_scores[qi]) {
            assert!((f64::from(s) - want[qi][p as usize]).abs() < 1e-3);
        }
        assert_eq!(got.positive_scores[qi].len(), ps.len());
    }
}
