//! tandem-nn against PyTorch: towers (outputs and every parameter
//! gradient, the transformer included), the linear doc tower, InfoNCE, AdamW and the schedule, on the
//! golden files that `bench/make_golden.py` writes with PyTorch in float64
//! (see tests/data/README.md; e.g. for a tower:
//! `q = QueryTower(kind, 6, 5, True, residual)(x, mask); (q * g).sum().backward()`).

use std::collections::HashMap;
use std::path::PathBuf;

use safetensors::SafeTensors;
use tandem_nn::{
    AdamW, AdamWConfig, Batch, DocCache, DocTower, InfoNce, LossInput, LossOutput, Model,
    ModelConfig, Params, QueryCache, Schedule, TowerKind,
};

const TOL: f32 = 1e-5;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn load(name: &str) -> HashMap<String, Vec<f32>> {
    let bytes = std::fs::read(data(name)).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, v)| {
            let d = v
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            (n, d)
        })
        .collect()
}

fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= TOL,
            "{what}[{i}]: tandem {g} vs PyTorch {w}"
        );
    }
}

fn model_with(t: &HashMap<String, Vec<f32>>, cfg: ModelConfig) -> Model {
    let mut model = Model::new(cfg, 0).unwrap();
    for p in model.params_mut().iter_mut() {
        p.data = t[&p.name].clone();
    }
    model
}

#[test]
fn query_towers_match_pytorch() {
    // (kind, residual, parameter tensors)
    for (kind, residual, want) in [
        ("gru", "mean", 6),
        ("lstm", "last", 6),
        ("attention", "none", 5),
        ("mean", "mean", 2),
    ] {
        let t = load(&format!("tower_{kind}_{residual}.safetensors"));
        let cfg = ModelConfig {
            kind: kind.parse().unwrap(),
            dim: 6,
            hidden: 5,
            projection: true,
            residual: residual.parse().unwrap(),
            doc: DocTower::Identity,
            layers: ModelConfig::DEFAULT_LAYERS,
            heads: ModelConfig::DEFAULT_HEADS,
        };
        let model = model_with(&t, cfg);
        let lens = [4usize, 2, 1];
        let batch = Batch {
            x: &t["x"],
            lens: &lens,
            len: 4,
            dim: 6,
        };
        let mut qc = QueryCache::default();
        model.forward_queries(&batch, &mut qc);
        assert_close(&format!("{kind}: q"), qc.queries(), &t["q"]);
        let mut grads = model.params().zeros_like();
        model.backward_queries(&batch, &mut qc, &t["g"], &mut grads);
        let mut checked = 0;
        for g in grads.iter() {
            assert_close(
                &format!("{kind}: grad {}", g.name),
                &g.data,
                &t[&format!("grad.{}", g.name)],
            );
            checked += 1;
        }
        assert_eq!(checked, want, "{kind}: parameters compared");
    }
}

#[test]
fn transformer_tower_matches_pytorch() {
    // B=4, L=5, D=16, hidden=8, 2 heads, 2 blocks, context lengths 5, 3, 1, 4.
    let t = load("tower_transformer_mean.safetensors");
    let cfg = ModelConfig {
        kind: TowerKind::Transformer,
        dim: 16,
        hidden: 8,
        projection: true,
        residual: tandem_nn::Residual::Mean,
        doc: DocTower::Identity,
        layers: 2,
        heads: 2,
    };
    let model = model_with(&t, cfg);
    let lens = [5usize, 3, 1, 4];
    let batch = Batch {
        x: &t["x"],
        lens: &lens,
        len: 5,
        dim: 16,
    };
    let mut qc = QueryCache::default();
    model.forward_queries(&batch, &mut qc);
    assert_close("transformer: q", qc.queries(), &t["q"]);
    let mut grads = model.params().zeros_like();
    model.backward_queries(&batch, &mut qc, &t["g"], &mut grads);
    for g in grads.iter() {
        assert_close(
            &format!("transformer: grad {}", g.name),
            &g.data,
            &t[&format!("grad.{}", g.name)],
        );
    }
    // tf.in, 12 tensors per block, tf.norm, proj.
    assert_eq!(grads.len(), 2 + 2 * 12 + 2 + 2, "parameters compared");
}

#[test]
fn linear_doc_tower_matches_pytorch() {
    let t = load("doc_linear.safetensors");
    let cfg = ModelConfig {
        kind: TowerKind::Mean,
        dim: 6,
        hidden: 6,
        projection: false,
        residual: tandem_nn::Residual::None,
        doc: DocTower::Linear,
        layers: ModelConfig::DEFAULT_LAYERS,
        heads: ModelConfig::DEFAULT_HEADS,
    };
    let model = model_with(&t, cfg);
    let mut dc = DocCache::default();
    model.forward_docs(&t["b"], &mut dc);
    assert_close("doc: d", dc.docs(), &t["d"]);
    let mut grads = model.params().zeros_like();
    model.backward_docs(&t["b"], &mut dc, &t["g"], &mut grads);
    for name in ["doc.weight", "doc.bias"] {
        assert_close(
            name,
            &grads.get(name).unwrap().data,
            &t[&format!("grad.{name}")],
        );
    }
}

#[test]
fn infonce_matches_pytorch() {
    let t = load("infonce.safetensors");
    let valid: Vec<bool> = t["valid"].iter().map(|&v| v > 0.5).collect();
    let loss = InfoNce {
        tau: t["tau"][0],
        margin: t["margin"][0],
    };
    let input = LossInput {
        q: &t["q"],
        pos: &t["pos"],
        cand: &t["cand"],
        valid: &valid,
        queue: &[],
        queue_valid: &[],
        dim: 6,
    };
    let mut out = LossOutput::default();
    loss.evaluate(&input, true, &mut out);
    assert_close("loss", &[out.loss], &t["loss"]);
    assert_close("grad q", &out.dq, &t["grad.q"]);
    assert_close("grad pos", &out.dpos, &t["grad.pos"]);
    assert_close("grad cand", &out.dcand, &t["grad.cand"]);
    // The same candidates given as a detached queue give the same loss and dq.
    let mut as_queue = LossOutput::default();
    let no_cand: Vec<bool> = Vec::new();
    loss.evaluate(
        &LossInput {
            cand: &[],
            valid: &no_cand,
            queue: &t["cand"],
            queue_valid: &valid,
            ..input
        },
        false,
        &mut as_queue,
    );
    assert_close("loss via queue", &[as_queue.loss], &t["loss"]);
    assert_close("grad q via queue", &as_queue.dq, &t["grad.q"]);
}

#[test]
fn adamw_matches_pytorch() {
    let t = load("adamw.safetensors");
    let mut params = Params::default();
    params.push("p", &[7], t["p0"].clone());
    let cfg = AdamWConfig {
        weight_decay: t["weight_decay"][0],
        ..AdamWConfig::default()
    };
    let mut opt = AdamW::new(cfg, &params);
    for s in 1..=3 {
        let mut g = params.zeros_like();
        g.iter_mut().next().unwrap().data = t[&format!("g{s}")].clone();
        opt.update(&mut params, &g, t["lrs"][s - 1]);
        assert_close(
            &format!("p after step {s}"),
            &params.get("p").unwrap().data,
            &t[&format!("p{s}")],
        );
    }
    assert_close(
        "exp_avg",
        &opt.exp_avg.get("p").unwrap().data,
        &t["exp_avg"],
    );
    assert_close(
        "exp_avg_sq",
        &opt.exp_avg_sq.get("p").unwrap().data,
        &t["exp_avg_sq"],
    );
}

#[test]
fn schedule_matches_pytorch_lambdalr() {
    let text = std::fs::read_to_string(data("schedule.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cases = v["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 2);
    for c in cases {
        let s = Schedule {
            lr: c["lr"].as_f64().unwrap() as f32,
            min_lr: c["min_lr"].as_f64().unwrap() as f32,
            warmup: c["warmup"].as_u64().unwrap(),
            total: c["total"].as_u64().unwrap(),
        };
        for (step, want) in c["lrs"].as_array().unwrap().iter().enumerate() {
            let got = f64::from(s.lr_at(step as u64));
            let want = want.as_f64().unwrap();
            assert!(
                (got - want).abs() <= 1e-9 + 1e-6 * want,
                "warmup {} step {step}: {got} vs {want}",
                s.warmup
            );
        }
    }
}
