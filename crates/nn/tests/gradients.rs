//! Hand-derived gradients against central finite differences, for every
//! tower kind, residual, the linear doc tower and InfoNCE.
//!
//! (The transformer's gradient with respect to its input is checked in
//! `crates/nn/src/transformer.rs`, which can reach it.)

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tandem_nn::{
    Batch, DocCache, DocTower, InfoNce, LossInput, LossOutput, Model, ModelConfig, Params,
    QueryCache, Residual, TowerKind,
};

const B: usize = 3;
const L: usize = 4;
const D: usize = 6;
const H: usize = 5;
const LENS: [usize; B] = [4, 2, 1];
/// The transformer's width (it must be even and divisible by its heads).
const TF_H: usize = 4;

/// The model of the gradient checks: hidden `H` with a projection, `D`
/// without one; transformers have 2 blocks of 2 heads.
fn config(kind: TowerKind, residual: Residual, doc: DocTower, projection: bool) -> ModelConfig {
    ModelConfig {
        kind,
        dim: D,
        hidden: if projection { H } else { D },
        projection,
        residual,
        doc,
        layers: 2,
        heads: 2,
    }
}

fn rand_vec(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect()
}

/// A left-padded batch with zeros at pad steps.
fn batch_data(rng: &mut ChaCha8Rng) -> Vec<f32> {
    let mut x = rand_vec(rng, B * L * D);
    for (i, &n) in LENS.iter().enumerate() {
        for t in 0..L - n {
            x[(i * L + t) * D..(i * L + t + 1) * D].fill(0.0);
        }
    }
    x
}

/// The whole two-tower loss of a fixed batch: InfoNCE of the queries
/// against doc-encoded positives and candidates.
struct Problem {
    x: Vec<f32>,
    pos: Vec<f32>,
    cand: Vec<f32>,
    valid: Vec<bool>,
    queue: Vec<f32>,
    queue_valid: Vec<bool>,
    loss: InfoNce,
}

impl Problem {
    fn new(rng: &mut ChaCha8Rng) -> Problem {
        let n = 5;
        Problem {
            x: batch_data(rng),
            pos: rand_vec(rng, B * D),
            cand: rand_vec(rng, n * D),
            valid: (0..B * n).map(|k| k % 4 != 1).collect(),
            queue: rand_vec(rng, 2 * D),
            queue_valid: vec![true, false, true, true, false, true],
            loss: InfoNce {
                tau: 0.5,
                margin: 0.1,
            },
        }
    }

    fn batch(&self) -> Batch<'_> {
        Batch {
            x: &self.x,
            lens: &LENS,
            len: L,
            dim: D,
        }
    }

    /// Loss and gradients of every parameter.
    fn eval(&self, model: &Model, grads: Option<&mut Params>) -> f32 {
        let mut qc = QueryCache::default();
        model.forward_queries(&self.batch(), &mut qc);
        let (mut pc, mut cc) = (DocCache::default(), DocCache::default());
        model.forward_docs(&self.pos, &mut pc);
        model.forward_docs(&self.cand, &mut cc);
        let mut out = LossOutput::default();
        let input = LossInput {
            q: qc.queries(),
            pos: pc.docs(),
            cand: cc.docs(),
            valid: &self.valid,
            queue: &self.queue,
            queue_valid: &self.queue_valid,
            dim: D,
        };
        self.loss.evaluate(&input, true, &mut out);
        if let Some(g) = grads {
            model.backward_queries(&self.batch(), &mut qc, &out.dq, g);
            model.backward_docs(&self.pos, &mut pc, &out.dpos, g);
            model.backward_docs(&self.cand, &mut cc, &out.dcand, g);
        }
        out.loss
    }
}

fn check(cfg: ModelConfig) {
    let ModelConfig {
        kind,
        residual,
        doc,
        ..
    } = cfg;
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut model = Model::new(cfg, 11).unwrap();
    // Perturb the doc tower away from the identity, and the transformer's
    // zero biases and unit norms, so that their gradients are generic.
    for p in model.params_mut().iter_mut() {
        if p.name.starts_with("doc.") || p.name.starts_with("tf.") {
            p.data
                .iter_mut()
                .for_each(|v| *v += rng.gen_range(-0.2..0.2));
        }
    }
    let problem = Problem::new(&mut rng);
    let mut grads = model.params().zeros_like();
    let at = problem.eval(&model, Some(&mut grads));
    let eps = 3e-4f32;
    let err = |numeric: f32, analytic: f32| (numeric - analytic).abs() / numeric.abs().max(1.0);
    let (mut worst, mut kinks, mut total) = (0.0f32, 0, 0);
    let names: Vec<(String, usize)> = model
        .params()
        .iter()
        .map(|p| (p.name.clone(), p.data.len()))
        .collect();
    for (pi, (name, len)) in names.iter().enumerate() {
        for k in 0..*len {
            let orig = model.params().iter().nth(pi).unwrap().data[k];
            let set =
                |m: &mut Model, v: f32| m.params_mut().iter_mut().nth(pi).unwrap().data[k] = v;
            set(&mut model, orig + eps);
            let up = problem.eval(&model, None);
            set(&mut model, orig - eps);
            let down = problem.eval(&model, None);
            set(&mut model, orig);
            let numeric = (up - down) / (2.0 * eps);
            let analytic = grads.get(name).unwrap().data[k];
            total += 1;
            let e = err(numeric, analytic);
            if e < 5e-3 {
                worst = worst.max(e);
                continue;
            }
            // A transformer ReLU that switches within [orig - eps, orig +
            // eps] breaks the central difference: the one-sided differences
            // then disagree, and the side without the switch must still
            // agree with the analytic gradient (to first order in eps).
            // The other towers are smooth.
            let (right, left) = ((up - at) / eps, (at - down) / eps);
            let kink = kind == TowerKind::Transformer
                && err(right, left) >= 5e-3
                && err(right, analytic).min(err(left, analytic)) < 1e-2;
            assert!(
                kink,
                "{kind}/{residual}/{doc}: d/d {name}[{k}] analytic {analytic} numeric {numeric} \
                 (one-sided {left}, {right})"
            );
            kinks += 1;
        }
    }
    // One unit near 0 is crossed by every parameter upstream of it: a few
    // such units make a few percent of the differences.
    assert!(
        kinks * 10 <= total,
        "{kind}/{residual}/{doc}: {kinks} of {total} differences crossed a kink"
    );
    eprintln!(
        "{kind}/{residual}/{doc}: worst relative error {worst:.2e} ({kinks} of {total} across a ReLU kink)"
    );
}

#[test]
fn gru_gradients() {
    check(config(
        TowerKind::Gru,
        Residual::Mean,
        DocTower::Identity,
        true,
    ));
    check(config(
        TowerKind::Gru,
        Residual::None,
        DocTower::Linear,
        true,
    ));
}

#[test]
fn lstm_gradients() {
    check(config(
        TowerKind::Lstm,
        Residual::Last,
        DocTower::Identity,
        true,
    ));
    check(config(
        TowerKind::Lstm,
        Residual::None,
        DocTower::Identity,
        false,
    ));
}

#[test]
fn attention_gradients() {
    check(config(
        TowerKind::Attention,
        Residual::None,
        DocTower::Identity,
        true,
    ));
    check(config(
        TowerKind::Attention,
        Residual::Mean,
        DocTower::Linear,
        false,
    ));
}

#[test]
fn mean_gradients() {
    check(config(
        TowerKind::Mean,
        Residual::Mean,
        DocTower::Identity,
        true,
    ));
    check(config(
        TowerKind::Mean,
        Residual::None,
        DocTower::Linear,
        false,
    ));
}

#[test]
fn transformer_gradients() {
    check(ModelConfig {
        hidden: TF_H,
        ..config(
            TowerKind::Transformer,
            Residual::Mean,
            DocTower::Identity,
            true,
        )
    });
    // hidden = D = 6 without projection, one head of width 6 and 3 blocks.
    check(ModelConfig {
        layers: 3,
        heads: 1,
        ..config(
            TowerKind::Transformer,
            Residual::None,
            DocTower::Linear,
            false,
        )
    });
}

#[test]
fn padding_does_not_change_a_row() {
    // A row's query depends only on its real steps: changing pad values or
    // the other rows leaves it unchanged.
    for kind in TowerKind::ALL.iter().copied() {
        let cfg = ModelConfig {
            hidden: if kind == TowerKind::Transformer {
                TF_H
            } else {
                H
            },
            ..config(kind, Residual::Mean, DocTower::Identity, true)
        };
        let model = Model::new(cfg, 5).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let x = batch_data(&mut rng);
        let mut y = x.clone();
        // pad steps of row 1 and 2, and all of row 0
        y[..L * D].iter_mut().for_each(|v| *v += 0.5);
        y[L * D..(L + 1) * D].fill(3.0);
        y[(2 * L) * D..(2 * L + 1) * D].fill(-2.0);
        let run = |x: &[f32]| {
            let mut c = QueryCache::default();
            model.forward_queries(
                &Batch {
                    x,
                    lens: &LENS,
                    len: L,
                    dim: D,
                },
                &mut c,
            );
            c.queries().to_vec()
        };
        let (a, b) = (run(&x), run(&y));
        assert_ne!(a[..D], b[..D], "{kind}: row 0 changed input");
        assert_eq!(a[D..], b[D..], "{kind}: pad values leaked into rows 1-2");
        let norm: f32 = a[..D].iter().map(|v| v * v).sum();
        assert!(
            (norm - 1.0).abs() < 1e-5,
            "{kind}: queries are unit vectors"
        );
    }
}

#[test]
fn param_count_matches_the_built_model() {
    for kind in TowerKind::ALL.iter().copied() {
        for (projection, doc) in [
            (true, DocTower::Identity),
            (true, DocTower::Linear),
            (false, DocTower::Linear),
        ] {
            let cfg = ModelConfig {
                hidden: D,
                ..config(kind, Residual::Mean, doc, projection)
            };
            let model = Model::new(cfg, 1).unwrap();
            assert_eq!(
                cfg.param_count(),
                model.params().numel(),
                "{kind} {projection} {doc}"
            );
        }
    }
}

#[test]
fn regression_gradients_match_finite_differences() {
    use tandem_nn::Regression;
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let q = rand_vec(&mut rng, B * D);
    let t = rand_vec(&mut rng, B * D);
    let reg = Regression {
        mse: 0.7,
        cosine: 1.3,
    };
    let loss = |q: &[f32]| {
        let (m, c) = reg.evaluate(q, &t, D, &mut [0.0; B * D]);
        reg.mse * m + reg.cosine * c
    };
    let mut dq = vec![0.0; B * D];
    reg.evaluate(&q, &t, D, &mut dq);
    for k in 0..B * D {
        let (mut up, mut down) = (q.clone(), q.clone());
        up[k] += 1e-2;
        down[k] -= 1e-2;
        let numeric = (loss(&up) - loss(&down)) / 2e-2;
        assert!(
            (numeric - dq[k]).abs() < 2e-3,
            "dq[{k}] {} vs {numeric}",
            dq[k]
        );
    }
}
