//! Hand-derived gradients against central finite differences, for every
//! tower kind, residual, the linear doc tower and InfoNCE.

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

fn check(kind: TowerKind, residual: Residual, doc: DocTower, projection: bool) {
    let cfg = ModelConfig {
        kind,
        dim: D,
        hidden: if projection { H } else { D },
        projection,
        residual,
        doc,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut model = Model::new(cfg, 11).unwrap();
    // Perturb the doc tower away from the identity so its gradient is generic.
    for p in model.params_mut().iter_mut() {
        if p.name.starts_with("doc.") {
            p.data
                .iter_mut()
                .for_each(|v| *v += rng.gen_range(-0.2..0.2));
        }
    }
    let problem = Problem::new(&mut rng);
    let mut grads = model.params().zeros_like();
    problem.eval(&model, Some(&mut grads));
    let eps = 1e-2f32;
    let mut worst = 0.0f32;
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
            let err = (numeric - analytic).abs() / numeric.abs().max(1.0);
            worst = worst.max(err);
            assert!(
                err < 5e-3,
                "{kind}/{residual}/{doc}: d/d {name}[{k}] analytic {analytic} numeric {numeric}"
            );
        }
    }
    eprintln!("{kind}/{residual}/{doc}: worst relative error {worst:.2e}");
}

#[test]
fn gru_gradients() {
    check(TowerKind::Gru, Residual::Mean, DocTower::Identity, true);
    check(TowerKind::Gru, Residual::None, DocTower::Linear, true);
}

#[test]
fn lstm_gradients() {
    check(TowerKind::Lstm, Residual::Last, DocTower::Identity, true);
    check(TowerKind::Lstm, Residual::None, DocTower::Identity, false);
}

#[test]
fn attention_gradients() {
    check(
        TowerKind::Attention,
        Residual::None,
        DocTower::Identity,
        true,
    );
    check(
        TowerKind::Attention,
        Residual::Mean,
        DocTower::Linear,
        false,
    );
}

#[test]
fn mean_gradients() {
    check(TowerKind::Mean, Residual::Mean, DocTower::Identity, true);
    check(TowerKind::Mean, Residual::None, DocTower::Linear, false);
}

#[test]
fn padding_does_not_change_a_row() {
    // A row's query depends only on its real steps: changing pad values or
    // the other rows leaves it unchanged.
    for kind in TowerKind::ALL.iter().copied() {
        let cfg = ModelConfig {
            kind,
            dim: D,
            hidden: H,
            projection: true,
            residual: Residual::Mean,
            doc: DocTower::Identity,
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
                kind,
                dim: D,
                hidden: D,
                projection,
                residual: Residual::Mean,
                doc,
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
