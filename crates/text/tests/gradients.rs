//! Every architecture's backward pass against PyTorch's gradients of the
//! same small random models (`tests/fixtures/<name>/grads.safetensors`,
//! written by `bench/make_grad_goldens.py`):
//!
//! ```python
//! model = AutoModel.from_pretrained(dir, attn_implementation="eager").double().eval()
//! upstream = torch.randn(input_ids.shape + (hidden,), generator=torch.Generator().manual_seed(0))
//! loss = sum(model(ids_i[None]).last_hidden_state[0] * upstream[i, :len_i] for each text i)
//! loss.backward()   # grad.{name} for every parameter
//! ```
//!
//! tandem runs the padded batch in float32 and must match every parameter's
//! gradient within 1e-4 (relative L2 error; absolute for the key biases,
//! whose gradient is zero).
//!
//! Then the whole model by finite differences, with and without dropout
//! (fixed seeds make a pass with dropout a deterministic function), and
//! GradCache, padding and rate 0 against the plain pass.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tandem_nn::encoder::{Tensors, TokenBatch};
use tandem_text::{Dropout, EmbedOptions, Embedder};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// `||a - b|| / max(||b||, 1)` in float64: relative, except for gradients
/// that are zero in exact arithmetic (the key biases: softmax ignores a
/// shift of a whole row of scores), where rounding is all there is.
fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        num += (f64::from(*x) - f64::from(*y)).powi(2);
        den += f64::from(*y).powi(2);
    }
    (num / den.max(1.0)).sqrt()
}

fn check(name: &str) {
    let dir = fixture(name);
    let golden: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("golden.json")).unwrap()).unwrap();
    let batch = &golden["batch"];
    let lens: Vec<usize> = batch["lengths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let ids: Vec<u32> = batch["input_ids"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap().iter())
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let len = ids.len() / lens.len();
    let tb = TokenBatch {
        ids: &ids,
        lens: &lens,
        len,
        pad_rows: false,
    };
    let e = Embedder::load(&dir, EmbedOptions::default()).unwrap();
    let enc = e.encoder();
    let h = enc.hidden();
    let mut g = Tensors::read(&dir.join("grads.safetensors")).unwrap();
    let upstream = g.take("upstream", &[lens.len(), len, h]).unwrap();

    let (out, tape) = enc.forward_train(tb, None);
    assert_eq!(out, enc.forward(tb), "{name}: training forward differs");
    let mut dh = upstream.clone();
    for (r, row) in dh.chunks_exact_mut(h).enumerate() {
        if r % len >= lens[r / len] {
            row.fill(0.0);
        }
    }
    let mut grads = enc.params().zeros_like();
    enc.backward(tb, tape, &mut dh, &mut grads);

    let mut worst = (0.0, String::new());
    // the goldens cover the encoder; the model's heads follow its tensors
    for p in grads.iter().take(e.encoder_tensors()) {
        let alias = match p.name.as_str() {
            "encoder.embed_tokens.weight" => "shared.weight",
            n => n,
        };
        let want = g
            .take(&format!("grad.{alias}"), &p.shape)
            .unwrap_or_else(|e| panic!("{name}: no golden gradient for {}: {e}", p.name));
        let err = rel_l2(&p.data, &want);
        assert!(
            err <= 1e-4,
            "{name}: gradient of {} is off by {err:.2e} (relative L2)",
            p.name
        );
        if err > worst.0 {
            worst = (err, p.name.clone());
        }
    }
    eprintln!(
        "{name}: {} gradients, worst {:.2e} ({})",
        grads.len(),
        worst.0,
        worst.1
    );
}

#[test]
fn bert_gradients_match_pytorch() {
    check("bert");
}

#[test]
fn roberta_gradients_match_pytorch() {
    check("roberta");
}

#[test]
fn xlm_roberta_gradients_match_pytorch() {
    check("xlm-roberta");
}

#[test]
fn mpnet_gradients_match_pytorch() {
    check("mpnet");
}

#[test]
fn t5_gradients_match_pytorch() {
    check("t5");
}

#[test]
fn t5_gated_gradients_match_pytorch() {
    check("t5-gated");
}

#[test]
fn modernbert_gradients_match_pytorch() {
    check("modernbert");
}

/// The token ids of `texts`.
fn tokens(e: &Embedder, texts: &[&str]) -> Vec<Vec<u32>> {
    let owned: Vec<String> = texts.iter().map(|s| s.to_string()).collect();
    e.tokenize(&owned)
        .unwrap()
        .into_iter()
        .map(|t| t.0)
        .collect()
}

/// `r`, the upstream gradient of the finite-difference checks.
fn upstream(n: usize) -> Vec<f32> {
    (0..n).map(|i| ((i * 7) % 5) as f32 - 2.0).collect()
}

/// The gradient of `sum(vectors * r)` of a training pass with `seeds`.
fn model_grads(e: &Embedder, tokens: &[Vec<u32>], seeds: Option<&[u64]>) -> tandem_nn::Params {
    let (out, pass) = e.forward_train(tokens, true, seeds);
    assert_eq!(
        out,
        e.embed_tokens_seeded(tokens, seeds),
        "training forward differs"
    );
    let mut grads = e.params().zeros_like();
    e.backward(pass, &upstream(out.len()), &mut grads);
    grads
}

/// Checks `grads` (of `sum(vectors * r)` with `seeds`) by central
/// differences of step `eps` on a few entries of every tensor.
fn check_by_differences(
    e: &mut Embedder,
    tokens: &[Vec<u32>],
    seeds: Option<&[u64]>,
    grads: &tandem_nn::Params,
    eps: f32,
    what: &str,
) {
    let loss = |e: &Embedder| -> f64 {
        let out = e.embed_tokens_seeded(tokens, seeds);
        out.iter()
            .zip(&upstream(out.len()))
            .map(|(a, b)| f64::from(*a) * f64::from(*b))
            .sum()
    };
    let names: Vec<String> = e.params().iter().map(|p| p.name.clone()).collect();
    for (ti, name) in names.iter().enumerate() {
        let n = e.params().iter().nth(ti).unwrap().data.len();
        let g = &grads.iter().nth(ti).unwrap().data;
        // the entry with the largest gradient, and two more
        let big = (0..n)
            .max_by(|&a, &b| g[a].abs().total_cmp(&g[b].abs()))
            .unwrap();
        for i in [big, n / 3, n - 1] {
            let shifted = |e: &mut Embedder, delta: f32| {
                e.params_mut().iter_mut().nth(ti).unwrap().data[i] += delta;
                e.sync();
            };
            shifted(e, eps);
            let up = loss(e);
            shifted(e, -2.0 * eps);
            let down = loss(e);
            shifted(e, eps);
            let fd = (up - down) / f64::from(2.0 * eps);
            let got = f64::from(g[i]);
            assert!(
                (fd - got).abs() <= 2e-2 * fd.abs().max(1.0),
                "{what}: {name}[{i}] {got} vs {fd}"
            );
        }
    }
}

const FD_TEXTS: [&str; 3] = ["retrieval", "Protein folding is determined.", "a b c d"];

/// The whole model (encoder, pooling, a Dense module with tanh, a new
/// projection head, normalisation) by central differences of
/// `sum(vectors * r)` on a few entries of every tensor.
#[test]
fn model_backward_matches_finite_differences() {
    let dir = fixture("bert");
    for (head, normalize) in [(None, true), (Some(8), false), (Some(8), true)] {
        let mut e = Embedder::load(&dir, EmbedOptions::default()).unwrap();
        if let Some(dim) = head {
            e.add_head(dim, 7);
        }
        e.set_normalize(normalize);
        let tokens = tokens(&e, &FD_TEXTS);
        let grads = model_grads(&e, &tokens, None);
        // a frozen encoder gets no gradient; the heads the same as before
        let (out, pass) = e.forward_train(&tokens, false, None);
        let mut frozen = e.params().zeros_like();
        e.backward(pass, &upstream(out.len()), &mut frozen);
        let enc = e.encoder_tensors();
        for (i, (a, b)) in frozen.iter().zip(grads.iter()).enumerate() {
            if i < enc {
                assert!(a.data.iter().all(|v| *v == 0.0), "{} moved", a.name);
            } else {
                assert_eq!(a.data, b.data, "{}", a.name);
            }
        }
        let what = format!("head {head:?} normalize {normalize}");
        check_by_differences(&mut e, &tokens, None, &grads, 1e-2, &what);
    }
}

/// The same with dropout at every site of every architecture: with fixed
/// seeds the masks are fixed, the model a deterministic function of its
/// parameters, and the backward pass (which recomputes the masks) its
/// gradient. (Steps of 1e-3: T5's ReLU has kinks within 1e-2 of some
/// entries.)
#[test]
fn model_backward_with_dropout_matches_finite_differences() {
    let seeds = [11, 12, 13];
    for name in ["bert", "mpnet", "t5", "t5-gated", "modernbert"] {
        let mut e = Embedder::load(&fixture(name), EmbedOptions::default()).unwrap();
        e.set_dropout(Dropout::Rate(0.2));
        let tokens = tokens(&e, &FD_TEXTS);
        let grads = model_grads(&e, &tokens, Some(&seeds));
        // the masks are on: the vectors are not those without dropout
        let (on, off) = (
            e.embed_tokens_seeded(&tokens, Some(&seeds)),
            e.embed_tokens(&tokens),
        );
        assert!(rel_l2(&on, &off) > 1e-2, "{name}: dropout changed nothing");
        check_by_differences(&mut e, &tokens, Some(&seeds), &grads, 1e-3, name);
    }
}

/// Dropout at rate 0 (and ModernBERT's config rates, 0) is no dropout, to
/// the bit, forward and backward; BERT's config rates (0.1 everywhere) are
/// one rate of 0.1.
#[test]
fn dropout_at_rate_zero_is_no_dropout() {
    let seeds = [5, 6, 7];
    for (name, config) in [
        ("bert", 0.1),
        ("mpnet", 0.1),
        ("t5", 0.1),
        ("modernbert", 0.0),
    ] {
        let mut e = Embedder::load(&fixture(name), EmbedOptions::default()).unwrap();
        assert_eq!(e.encoder().config_dropout(), config, "{name}");
        let tokens = tokens(&e, &FD_TEXTS);
        let plain = model_grads(&e, &tokens, None);
        let out = e.embed_tokens(&tokens);
        let mut modes = vec![Dropout::Rate(0.0), Dropout::Off];
        if config == 0.0 {
            modes.push(Dropout::Config);
        }
        for mode in modes {
            e.set_dropout(mode);
            let got = model_grads(&e, &tokens, Some(&seeds));
            assert_eq!(
                e.embed_tokens_seeded(&tokens, Some(&seeds)),
                out,
                "{name} {mode:?}"
            );
            for (a, b) in got.iter().zip(plain.iter()) {
                assert_eq!(a.data, b.data, "{name} {mode:?}: {}", a.name);
            }
        }
        if config > 0.0 {
            e.set_dropout(Dropout::Config);
            let by_config = e.embed_tokens_seeded(&tokens, Some(&seeds));
            e.set_dropout(Dropout::Rate(config));
            assert_eq!(
                e.embed_tokens_seeded(&tokens, Some(&seeds)),
                by_config,
                "{name}"
            );
            assert_ne!(by_config, out, "{name}");
        }
    }
}

/// A text's masks come from its seed alone: alone, or in a batch at
/// another place and padded to a longer text, it gets the same vector (up
/// to the rounding that padding causes without dropout).
#[test]
fn dropout_masks_do_not_depend_on_padding_or_place() {
    for name in ["bert", "mpnet", "t5", "modernbert"] {
        let mut e = Embedder::load(&fixture(name), EmbedOptions::default()).unwrap();
        e.set_dropout(Dropout::Rate(0.3));
        let dim = e.dim();
        let batch = tokens(
            &e,
            &[
                "Randomised controlled trials remain the gold standard for evaluating clinical interventions.",
                "cafe",
                "Protein folding is determined by the amino acid sequence.",
            ],
        );
        let seeds = [40, 41, 42];
        let all = e.embed_tokens_seeded(&batch, Some(&seeds));
        let text = &all[2 * dim..];
        let alone = e.embed_tokens_seeded(&batch[2..], Some(&seeds[2..]));
        let d = rel_l2(text, &alone);
        assert!(d < 1e-5, "{name}: padded and alone differ by {d}");
        let (pass_out, _) = e.forward_train(&batch[1..], true, Some(&seeds[1..]));
        let d = rel_l2(&pass_out[dim..], &alone);
        assert!(d < 1e-5, "{name}: training pass differs by {d}");
        // another seed, other masks
        let other = e.embed_tokens_seeded(&batch[2..], Some(&[43]));
        assert!(rel_l2(&other, &alone) > 1e-2, "{name}: the seed is ignored");
    }
}

/// GradCache's gradient equals the gradient of the whole batch at once,
/// with dropout too: its first pass draws the masks of its second.
#[test]
fn gradcache_gives_the_uncached_gradient() {
    use tandem_nn::contrastive::{Isotropy, Mnrl, Similarity};
    use tandem_text::{Joined, MainLoss, Objective, TextBatch, TowerGrads, Towers, DOCUMENT};
    let mut e = Towers::shared(Embedder::load(&fixture("bert"), EmbedOptions::default()).unwrap());
    let texts = |v: &[&str]| tokens(e.query(), v);
    let queries = texts(&["protein folding", "mean pooling", "cafe", "numbers 42"]);
    let docs = texts(&[
        "Protein folding is determined by the amino acid sequence.",
        "Mean pooling averages the token vectors of a sentence.",
        "Café Müller naïve",
        "In 2019, 42.5% of 1,000 patients improved",
        "an unrelated hard negative about retrieval",
        "another negative",
    ]);
    let (b, m) = (queries.len(), docs.len());
    let mut hidden = vec![false; b * m];
    hidden[5] = true; // query 0 does not see document 5
    let batch = TextBatch {
        queries,
        docs,
        positive: vec![0, 1, 2, 3],
        hidden,
        ..TextBatch::default()
    };
    let objective = |cache: Option<usize>, similarity| Objective {
        loss: MainLoss::Contrastive(Mnrl {
            scale: 20.0,
            symmetric: true,
            similarity,
        }),
        similarity,
        isotropy: vec![
            (Isotropy::Covariance, 0.1),
            (
                Isotropy::SigReg {
                    projections: 8,
                    seed: 3,
                },
                0.05,
            ),
        ],
        cache_batch: cache,
        train_encoder: true,
    };
    let step = |j: &mut Joined, cache: Option<usize>, similarity, seed| {
        let mut g = j.params().zeros_like();
        let stats = j.with_grads(&mut g, |t, grads| {
            objective(cache, similarity).step(t, &batch, 0.5, seed, grads)
        });
        (stats, g)
    };

    // separate towers that start as copies of the model: their two
    // gradients sum to the shared model's (its weights serve both sides)
    let mut shared = Joined::new(Towers::shared(
        Embedder::load(&fixture("bert"), EmbedOptions::default()).unwrap(),
    ));
    let mut apart =
        Joined::new(Towers::load_separate(&fixture("bert"), EmbedOptions::default()).unwrap());
    let n = shared.params().len();
    assert_eq!(apart.params().len(), 2 * n);
    for cache in [None, Some(3)] {
        let (s1, g1) = step(&mut shared, cache, Similarity::Dot, 1);
        let (s2, g2) = step(&mut apart, cache, Similarity::Dot, 1);
        assert!((s1.loss - s2.loss).abs() < 1e-6, "{s1:?} vs {s2:?}");
        let (q, d): (Vec<_>, Vec<_>) = g2.iter().enumerate().partition(|(i, _)| *i < n);
        for ((a, (_, gq)), (_, gd)) in g1.iter().zip(q).zip(d) {
            assert_eq!(gd.name, format!("{DOCUMENT}{}", a.name));
            let sum: Vec<f32> = gq.data.iter().zip(&gd.data).map(|(x, y)| x + y).collect();
            let err = rel_l2(&sum, &a.data);
            assert!(
                err < 1e-5,
                "{cache:?}: {}: towers' sum off by {err:.2e}",
                a.name
            );
        }
        // both towers learn, and differently
        assert!(g2.iter().skip(n).any(|p| p.data.iter().any(|v| *v != 0.0)));
        assert_ne!(
            g2.iter().next().unwrap().data,
            g2.iter().nth(n).unwrap().data
        );
    }
    // the joined tensors go back where they were
    let before = apart.params().clone();
    apart.with(|t| assert_eq!(t.query().params().len(), n));
    assert_eq!(apart.params(), &before);

    let run = |t: &Towers, cache: Option<usize>, similarity, seed| {
        let mut g = t.query().params().zeros_like();
        let stats = objective(cache, similarity).step(
            t,
            &batch,
            0.5,
            seed,
            &mut TowerGrads::shared(&mut g),
        );
        (stats, g)
    };
    let mut without = Vec::new();
    for dropout in [Dropout::Off, Dropout::Rate(0.2)] {
        e.each_mut().for_each(|m| m.set_dropout(dropout));
        for similarity in [Similarity::Dot, Similarity::NegL2] {
            let (full, gf) = run(&e, None, similarity, 1);
            let (cached, gc) = run(&e, Some(3), similarity, 1);
            assert!(
                (full.loss - cached.loss).abs() < 1e-6 * full.loss.abs().max(1.0),
                "{dropout:?}: {} vs {}",
                full.loss,
                cached.loss
            );
            assert!(full.loss.is_finite() && full.candidates == 5.75, "{full:?}");
            for (a, c) in gf.iter().zip(gc.iter()) {
                let err = rel_l2(&c.data, &a.data);
                assert!(
                    err < 1e-5,
                    "{dropout:?}: {}: cached gradient off by {err:.2e}",
                    a.name
                );
            }
            if dropout == Dropout::Off {
                without.push(full.loss);
                continue;
            }
            // the masks are on, drawn from the step's seed: the same seed
            // (a resumed run) draws them again, another draws others
            assert_ne!(full.loss, without.remove(0), "{similarity:?}: no dropout");
            let (again, ga) = run(&e, Some(3), similarity, 1);
            assert_eq!(again, cached);
            assert!(ga.iter().zip(gc.iter()).all(|(a, c)| a.data == c.data));
            // (the main loss: SIGReg's directions change with the seed too)
            let (other, _) = run(&e, Some(3), similarity, 2);
            assert_ne!(
                other.main, cached.main,
                "{similarity:?}: the seed is ignored"
            );
        }
    }
}

/// A saved model loads back and embeds the same; the head and the
/// normalisation travel.
#[test]
fn saved_model_loads_back_and_embeds_the_same() {
    let tmp = tempfile::tempdir().unwrap();
    let texts: Vec<String> = ["retrieval", "Protein folding is determined."]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for (name, head, normalize) in [
        ("bert", Some(8), false),
        ("t5", None, true),
        ("modernbert", Some(4), true),
    ] {
        let mut e = Embedder::load(&fixture(name), EmbedOptions::default()).unwrap();
        if let Some(d) = head {
            e.add_head(d, 1);
        }
        e.set_normalize(normalize);
        // change every weight so that a stale copy would show
        for p in e.params_mut().iter_mut() {
            p.data.iter_mut().for_each(|v| *v *= 1.01);
        }
        e.sync();
        let out = tmp.path().join(name);
        e.save(&out, "# card\n", "euclidean").unwrap();
        let back = Embedder::load(&out, EmbedOptions::default()).unwrap();
        assert_eq!(back.dim(), e.dim(), "{name}");
        let (a, b) = (
            e.embed(&texts, "", |_| {}).unwrap(),
            back.embed(&texts, "", |_| {}).unwrap(),
        );
        assert_eq!(
            a.vectors, b.vectors,
            "{name}: the saved model embeds differently"
        );
        assert_eq!(back.dir().prompts, e.dir().prompts, "{name}");
        assert!(out.join("README.md").is_file());
        let err = e.save(&out, "", "cosine").unwrap_err().to_string();
        assert!(err.contains("already exists"), "{err}");
    }
}

/// Separate towers are saved as sentence-transformers' Router writes
/// them, load back as two towers and embed the same; a model with two
/// towers is refused where one is needed, and each tower loads alone.
#[test]
fn separate_towers_save_as_a_router_and_load_back() {
    use tandem_text::{Joined, Tower, Towers};
    let tmp = tempfile::tempdir().unwrap();
    let texts: Vec<String> = ["retrieval", "Protein folding is determined."]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for name in ["bert", "modernbert"] {
        let mut towers = Towers::load_separate(&fixture(name), EmbedOptions::default()).unwrap();
        for (i, e) in towers.each_mut().enumerate() {
            e.add_head(6, i as u64);
        }
        // the towers drift apart as training would move them
        let mut j = Joined::new(towers);
        let half = j.params().len() / 2;
        for (i, p) in j.params_mut().iter_mut().enumerate() {
            let f = if i < half { 1.01 } else { 0.98 };
            p.data.iter_mut().for_each(|v| *v *= f);
        }
        j.sync();
        let towers = j.into_towers();
        let out = tmp.path().join(name);
        towers.save(&out, "# card\n", "cosine").unwrap();
        assert!(out.join("router_config.json").is_file());
        assert!(out.join("query_0_Transformer/model.safetensors").is_file());
        assert!(out.join("document_2_Dense/model.safetensors").is_file());
        let back = Towers::load(&out, EmbedOptions::default()).unwrap();
        assert!(back.separate(), "{name}");
        for tower in [Tower::Query, Tower::Document] {
            let (a, b) = (
                towers.tower(tower).embed(&texts, "", |_| {}).unwrap(),
                back.tower(tower).embed(&texts, "", |_| {}).unwrap(),
            );
            assert_eq!(a.vectors, b.vectors, "{name} {tower:?}");
            let alone = Embedder::load_tower(&out, EmbedOptions::default(), tower).unwrap();
            assert_eq!(alone.embed(&texts, "", |_| {}).unwrap().vectors, a.vectors);
        }
        let q = back.query().embed(&texts, "", |_| {}).unwrap().vectors;
        let d = back.document().embed(&texts, "", |_| {}).unwrap().vectors;
        assert_ne!(q, d, "{name}: the towers are the same");
        assert_ne!(back.fingerprint(), towers.query().fingerprint());
        let err = Embedder::load(&out, EmbedOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("modules.json") && err.contains("--tower"),
            "{err}"
        );
    }
}

/// The ModernBERT ColBERT fixture in a folder of its own, its query
/// expansion tokens attended to or not.
fn colbert_variant(tmp: &Path, attend: bool) -> PathBuf {
    let src = fixture("colbert-modernbert");
    let dst = tmp.join(format!("colbert-attend-{attend}"));
    for entry in walk(&src) {
        let rel = entry.strip_prefix(&src).unwrap();
        std::fs::create_dir_all(dst.join(rel).parent().unwrap()).unwrap();
        std::fs::copy(&entry, dst.join(rel)).unwrap();
    }
    let st = dst.join("config_sentence_transformers.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&st).unwrap()).unwrap();
    v["attend_to_expansion_tokens"] = Value::Bool(attend);
    std::fs::write(&st, v.to_string()).unwrap();
    dst
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

/// A ColBERT batch: queries, their positives, one hard negative, query 0
/// not shown document 4; teacher scores for distillation.
fn colbert_batch(cb: &tandem_text::ColBert) -> tandem_text::TextBatch {
    use tandem_text::Side;
    let tok = |v: &[&str], side| -> Vec<Vec<u32>> {
        let owned: Vec<String> = v.iter().map(|s| s.to_string()).collect();
        cb.tokenize_texts(&owned, side)
            .unwrap()
            .into_iter()
            .map(|t| t.0)
            .collect()
    };
    let queries = tok(&["protein folding", "mean pooling", "cafe"], Side::Query);
    let docs = tok(
        &[
            "Protein folding is determined by the amino acid sequence.",
            "Mean pooling averages the token vectors, of a sentence!",
            "Café Müller naïve",
            "an unrelated hard negative about retrieval",
            "another negative",
        ],
        Side::Document,
    );
    let (b, m) = (queries.len(), docs.len());
    let mut hidden = vec![false; b * m];
    hidden[4] = true;
    tandem_text::TextBatch {
        queries,
        docs,
        positive: vec![0, 1, 2],
        hidden,
        groups: vec![vec![0, 3], vec![1, 4], vec![2, 3]],
        teacher: vec![vec![2.0, 0.5], vec![1.0, 1.5], vec![0.3, -0.2]],
    }
}

/// ColBERT training: the gradient of MaxSim losses (contrastive and
/// min-max-normalised KL) through the Dense head and the encoder, with
/// query expansion tokens attended to or not (then only they attend to
/// the text, and their own gradients flow back through it), matches
/// central differences; GradCache gives the uncached gradient, with
/// dropout; a frozen encoder gets none.
#[test]
fn colbert_gradients_match_finite_differences_and_gradcache() {
    use tandem_nn::contrastive::{Distill, Mnrl, Similarity};
    use tandem_text::{ColBert, MainLoss, Objective};
    let tmp = tempfile::tempdir().unwrap();
    let losses = [
        MainLoss::Contrastive(Mnrl {
            scale: 1.0,
            symmetric: false,
            similarity: Similarity::Dot,
        }),
        MainLoss::Distill(Distill::Kl {
            temperature: 1.0,
            normalize: true,
        }),
    ];
    for attend in [false, true] {
        let mut cb = ColBert::load(
            &colbert_variant(tmp.path(), attend),
            EmbedOptions::default(),
        )
        .unwrap();
        let batch = colbert_batch(&cb);
        for loss in losses {
            let objective = |cache, train_encoder| Objective {
                loss,
                similarity: Similarity::Dot,
                isotropy: Vec::new(),
                cache_batch: cache,
                train_encoder,
            };
            let step = |cb: &ColBert, cache, train| {
                let mut g = cb.embedder().params().zeros_like();
                let s = objective(cache, train).step_colbert(cb, &batch, 0.5, 9, &mut g);
                (s.loss, g)
            };
            let what = format!("attend {attend}, {loss:?}");
            let (l0, grads) = step(&cb, None, true);
            // the frozen encoder: the head's gradient only
            let (_, frozen) = step(&cb, None, false);
            let enc = cb.embedder().encoder_tensors();
            for (i, (a, b)) in frozen.iter().zip(grads.iter()).enumerate() {
                if i < enc {
                    assert!(a.data.iter().all(|v| *v == 0.0), "{what}: {} moved", a.name);
                } else {
                    assert!(rel_l2(&a.data, &b.data) < 1e-5, "{what}: {}", a.name);
                }
            }
            // GradCache in mini-batches of 2 texts
            let (l1, cached) = step(&cb, Some(2), true);
            assert!((l0 - l1).abs() < 1e-6, "{what}: loss {l0} vs {l1}");
            for (a, b) in cached.iter().zip(grads.iter()) {
                let err = rel_l2(&a.data, &b.data);
                assert!(err < 1e-5, "{what}: cached {} off by {err:.2e}", a.name);
            }
            // central differences on a few entries of every tensor
            let names: Vec<String> = grads.iter().map(|p| p.name.clone()).collect();
            let eps = 3e-4f32;
            for (ti, name) in names.iter().enumerate() {
                let g = &grads.iter().nth(ti).unwrap().data;
                let n = g.len();
                let big = (0..n)
                    .max_by(|&a, &b| g[a].abs().total_cmp(&g[b].abs()))
                    .unwrap();
                for i in [big, n / 2] {
                    let shifted = |cb: &mut ColBert, delta: f32| {
                        cb.embedder_mut()
                            .params_mut()
                            .iter_mut()
                            .nth(ti)
                            .unwrap()
                            .data[i] += delta;
                        cb.embedder_mut().sync();
                    };
                    shifted(&mut cb, eps);
                    let up = step(&cb, None, true).0;
                    shifted(&mut cb, -2.0 * eps);
                    let down = step(&cb, None, true).0;
                    shifted(&mut cb, eps);
                    // the loss is reported unscaled: its gradient is 0.5 x
                    let fd = 0.5 * (up - down) / f64::from(2.0 * eps);
                    let got = f64::from(g[i]);
                    assert!(
                        (fd - got).abs() <= 2e-2 * fd.abs().max(1e-1),
                        "{what}: {name}[{i}] {got} vs {fd}"
                    );
                }
            }
        }
        // with dropout, GradCache's second pass draws the first pass's masks
        cb.embedder_mut().set_dropout(Dropout::Rate(0.2));
        let objective = |cache| Objective {
            loss: losses[0],
            similarity: Similarity::Dot,
            isotropy: Vec::new(),
            cache_batch: cache,
            train_encoder: true,
        };
        let mut g0 = cb.embedder().params().zeros_like();
        let mut g1 = g0.clone();
        let s0 = objective(None).step_colbert(&cb, &batch, 1.0, 4, &mut g0);
        let s1 = objective(Some(3)).step_colbert(&cb, &batch, 1.0, 4, &mut g1);
        assert!((s0.loss - s1.loss).abs() < 1e-6);
        for (a, b) in g1.iter().zip(g0.iter()) {
            assert!(rel_l2(&a.data, &b.data) < 1e-5, "dropout: {}", a.name);
        }
    }
}

/// A ColBERT saved by tandem is a PyLate directory (PyLate's Dense from
/// `1_Dense`, the ColBERT settings kept) that loads back and encodes the
/// same.
#[test]
fn colbert_saves_as_pylate_and_loads_back() {
    use tandem_text::{ColBert, Side};
    let tmp = tempfile::tempdir().unwrap();
    let mut cb =
        ColBert::load(&colbert_variant(tmp.path(), false), EmbedOptions::default()).unwrap();
    for p in cb.embedder_mut().params_mut().iter_mut() {
        p.data.iter_mut().for_each(|v| *v *= 1.01);
    }
    cb.embedder_mut().sync();
    let out = tmp.path().join("saved");
    cb.save(&out, "# card\n").unwrap();
    let back = ColBert::load(&out, EmbedOptions::default()).unwrap();
    assert_eq!(back.config(), cb.config());
    let texts: Vec<String> = ["retrieval, again", "Protein folding is determined."]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for side in [Side::Query, Side::Document] {
        let (a, b) = (
            cb.encode(&texts, side, |_| {}).unwrap(),
            back.encode(&texts, side, |_| {}).unwrap(),
        );
        assert_eq!(a.vectors, b.vectors, "{side:?}");
        assert_eq!(a.offsets, b.offsets, "{side:?}");
    }
    let modules: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("modules.json")).unwrap()).unwrap();
    assert_eq!(modules[1]["type"], "pylate.models.Dense.Dense");
    assert_eq!(modules[1]["path"], "1_Dense");
    assert_eq!(
        modules.as_array().unwrap().len(),
        2,
        "no Pooling, no Normalize"
    );
    let dense: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("1_Dense/config.json")).unwrap())
            .unwrap();
    assert_eq!(dense["use_residual"], false);
    assert_eq!(dense["bias"], false);
    let err = cb.save(&out, "").unwrap_err().to_string();
    assert!(err.contains("already exists"), "{err}");
}

/// `ColBert::build` makes a PyLate ColBERT from a dense model: the prefix
/// tokens added after the vocabulary, a Dense without bias, PyLate's
/// settings; it loads, encodes, and tokenises as PyLate's build of
/// all-MiniLM-L6-v2 does; a ColBERT is not built twice.
#[test]
fn colbert_builds_from_a_dense_model() {
    use tandem_text::{ColBert, ColbertConfig, Side};
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("built");
    ColBert::build(&fixture("bert"), &out, 8, 3).unwrap();
    let cb = ColBert::load(&out, EmbedOptions::default()).unwrap();
    assert_eq!(cb.dim(), 8);
    // PyLate's settings; the fixture has 64 positions, fewer than 180
    let want = ColbertConfig {
        document_length: 64,
        ..ColbertConfig::pylate()
    };
    assert_eq!(cb.config(), &want);
    let dense: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("1_Dense/config.json")).unwrap())
            .unwrap();
    assert_eq!(dense["bias"], false);
    let base = Embedder::load(&fixture("bert"), EmbedOptions::default()).unwrap();
    let vocab = base.encoder().vocab_size() as u32;
    let texts = vec!["protein folding".to_string()];
    let q = &cb.tokenize(&texts, Side::Query).unwrap()[0];
    assert_eq!(q.ids[1], vocab, "[Q] is the first new token");
    assert_eq!(q.ids.len(), 32, "expanded to PyLate's query length");
    let d = &cb.tokenize(&texts, Side::Document).unwrap()[0];
    assert_eq!(d.ids[1], vocab + 1, "[D] is the second");
    let mv = cb.encode(&texts, Side::Query, |_| {}).unwrap();
    assert_eq!(mv.offsets, vec![0, 32]);
    // a ColBERT already: refused, and nothing written
    let again = tmp.path().join("again");
    let err = ColBert::build(&out, &again, 8, 3).unwrap_err().to_string();
    assert!(
        err.contains("[Q] ") && err.contains("ColBERT already"),
        "{err}"
    );
    assert!(!again.exists());
    let err = ColBert::build(&fixture("bert"), &out, 8, 3)
        .unwrap_err()
        .to_string();
    assert!(err.contains("already exists"), "{err}");
    // all-MiniLM-L6-v2 (when present): the token ids of PyLate's build of it
    let Some(minilm) = tandem_io::real_model(env!("CARGO_MANIFEST_DIR"), "all-MiniLM-L6-v2") else {
        eprintln!("all-MiniLM-L6-v2 absent: the PyLate token ids are not checked");
        return;
    };
    let out = tmp.path().join("minilm");
    ColBert::build(&minilm, &out, 128, 0).unwrap();
    let cb = ColBert::load(&out, EmbedOptions::default()).unwrap();
    let golden: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("colbert-minilm/golden.json")).unwrap(),
    )
    .unwrap();
    for (key, ids, side) in [
        ("queries", "query_ids", Side::Query),
        ("documents", "document_ids", Side::Document),
    ] {
        let texts: Vec<String> = golden[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect();
        for (i, t) in cb.tokenize(&texts, side).unwrap().iter().enumerate() {
            let want: Vec<u32> = golden[ids][i]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            let got: Vec<u32> = t
                .ids
                .iter()
                .copied()
                .filter(|id| want.contains(id))
                .collect();
            assert_eq!(got, want, "{key} {i}");
        }
    }
}
