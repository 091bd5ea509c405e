//! Training steps per second of the two-tower model, the workload of
//! `bench/train_speed.sh`: GRU query tower (hidden 768, projection,
//! residual mean), identity doc tower, batch 32, context 8, dimension 768,
//! InfoNCE over the in-batch positives plus 512 random bank rows, AdamW,
//! warmup + cosine. Prints one JSON line.
//!
//! `cargo run --release -p tandem-nn --example bench_step -- --steps 100 --threads 2`

use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tandem_nn::{
    clip_coef, grad_norm, AdamW, AdamWConfig, Batch, DocCache, DocTower, InfoNce, LossInput,
    LossOutput, Model, ModelConfig, QueryCache, Residual, Schedule, TowerKind,
};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("a number"))
        .unwrap_or(default)
}

fn main() {
    let steps = arg("--steps", 100);
    let threads = arg("--threads", 2);
    let kind: TowerKind = std::env::args()
        .skip_while(|a| a != "--kind")
        .nth(1)
        .map(|k| k.parse().expect("a tower kind"))
        .unwrap_or(TowerKind::Gru);
    let (b, l, d, negs, rows) = (32, 8, 768, 512, 20_000);
    tandem_nn::linalg::set_threads(threads);
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .expect("first pool");
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut bank: Vec<f32> = (0..rows * d).map(|_| rng.gen_range(-1.0..1.0)).collect();
    for r in bank.chunks_exact_mut(d) {
        let n = r.iter().map(|v| v * v).sum::<f32>().sqrt();
        r.iter_mut().for_each(|v| *v /= n);
    }
    let cfg = ModelConfig {
        kind,
        dim: d,
        hidden: d,
        projection: true,
        residual: Residual::Mean,
        doc: DocTower::Identity,
        layers: ModelConfig::DEFAULT_LAYERS,
        heads: ModelConfig::DEFAULT_HEADS,
    };
    let mut model = Model::new(cfg, 0).unwrap();
    let mut opt = AdamW::new(AdamWConfig::default(), model.params());
    let sched = Schedule {
        lr: 5e-5,
        min_lr: 1e-6,
        warmup: 10,
        total: (steps + 5) as u64,
    };
    let loss = InfoNce {
        tau: 0.05,
        margin: 0.03,
    };
    let mut grads = model.params().zeros_like();
    let (mut qc, mut dc) = (QueryCache::default(), DocCache::default());
    let mut out = LossOutput::default();
    let lens = vec![l; b];
    let (mut x, mut pos, mut cand) = (
        vec![0.0; b * l * d],
        vec![0.0; b * d],
        vec![0.0; (b + negs) * d],
    );
    let valid: Vec<bool> = (0..b * (b + negs))
        .map(|k| k % (b + negs) != k / (b + negs))
        .collect();
    let gather = |dst: &mut [f32], rng: &mut ChaCha8Rng| {
        for row in dst.chunks_exact_mut(d) {
            let r = rng.gen_range(0..rows);
            row.copy_from_slice(&bank[r * d..(r + 1) * d]);
        }
    };
    let mut run = |n: usize, step0: usize| {
        for s in step0..step0 + n {
            gather(&mut x, &mut rng);
            gather(&mut pos, &mut rng);
            cand[..b * d].copy_from_slice(&pos);
            gather(&mut cand[b * d..], &mut rng);
            let batch = Batch {
                x: &x,
                lens: &lens,
                len: l,
                dim: d,
            };
            model.forward_queries(&batch, &mut qc);
            model.forward_docs(&cand, &mut dc);
            let input = LossInput {
                q: qc.queries(),
                pos: &pos,
                cand: dc.docs(),
                valid: &valid,
                queue: &[],
                queue_valid: &[],
                dim: d,
            };
            loss.evaluate(&input, false, &mut out);
            grads.zero();
            model.backward_queries(&batch, &mut qc, &out.dq, &mut grads);
            let coef = clip_coef(grad_norm(&grads), 1.0);
            opt.update_scaled(model.params_mut(), &grads, sched.lr_at(s as u64), coef);
        }
    };
    run(5, 0);
    let t = Instant::now();
    run(steps, 5);
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{{\"impl\":\"tandem\",\"kind\":\"{kind}\",\"steps\":{steps},\"threads\":{threads},\"steps_per_s\":{:.2},\"loss\":{:.4}}}",
        steps as f64 / secs,
        out.loss
    );
}
