//! The harness with a toy task: the contract on its own, without a dataset.

use std::collections::HashMap;
use std::path::Path;

use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tandem_nn::Params;

use super::*;

/// One weight pulled towards a target drawn per micro-batch; its state
/// counts the micro-batches seen, which only an exact resume keeps right.
struct Toy {
    params: Params,
    seen: u64,
}

#[derive(Serialize, Deserialize)]
struct ToyState {
    seen: u64,
}

const DRAW: Stream = Stream {
    id: 1,
    name: "draw",
    index: "micro-batch",
};

impl Toy {
    fn new() -> Toy {
        let mut params = Params::default();
        params.push("w", &[1], vec![0.5]);
        Toy { params, seen: 0 }
    }

    fn w(&self) -> f32 {
        self.params.iter().next().expect("one weight").data[0]
    }
}

impl Task for Toy {
    type State = ToyState;

    fn describe(&self) -> String {
        "toy".into()
    }

    fn title(&self) -> String {
        "toy".into()
    }

    fn outputs(&self) -> &'static [&'static str] {
        &[]
    }

    fn streams(&self) -> &'static [Stream] {
        &[DRAW]
    }

    fn steps_per_epoch(&self) -> u64 {
        5
    }

    fn estimate(&self, estimate: &mut Estimate) {
        estimate.add("targets", 4);
    }

    fn shrink_keys(&self) -> &'static [&'static str] {
        &["batch"]
    }

    fn params(&self) -> &Params {
        &self.params
    }

    fn params_mut(&mut self) -> &mut Params {
        &mut self.params
    }

    fn weights_metadata(&self) -> HashMap<String, String> {
        HashMap::new()
    }

    fn with_workers<R>(&mut self, train: impl FnOnce(&mut Self) -> R) -> R {
        train(self)
    }

    fn micro_step(&mut self, at: &Micro<'_>, grads: &mut Params) -> Result<f64, TrainError> {
        let target: f32 = DRAW.rng(7, at.global).gen_range(-1.0..1.0);
        let err = self.w() - target;
        let g = grads.iter_mut().next().expect("one weight");
        g.data[0] += 2.0 * err * at.grad_scale();
        self.seen += 1;
        Ok(f64::from(err * err))
    }

    fn log(&mut self, line: &mut TrainLine<'_>) {
        line.set("seen", self.seen);
    }

    fn validates(&self) -> bool {
        true
    }

    fn validate(&mut self) -> Result<Scores, TrainError> {
        Ok(vec![("recall@10".into(), f64::from(-self.w().abs()))])
    }

    fn baselines(&mut self) -> Result<Vec<(String, Scores)>, TrainError> {
        Ok(vec![("zero".into(), vec![("recall@10".into(), 0.0)])])
    }

    fn snapshot(&self) -> Snapshot<ToyState> {
        Snapshot {
            state: ToyState { seen: self.seen },
            files: vec![("seen.txt".into(), self.seen.to_string().into_bytes())],
        }
    }

    fn restore(
        &mut self,
        state: ToyState,
        checkpoint: &checkpoint::Loaded,
    ) -> Result<(), TrainError> {
        assert_eq!(
            checkpoint.file("seen.txt")?,
            state.seen.to_string().as_bytes()
        );
        self.seen = state.seen;
        Ok(())
    }

    fn finish(&mut self) -> Result<Tested, TrainError> {
        Ok(Tested {
            scores: vec![("recall@10".into(), f64::from(-self.w().abs()))],
            baselines: Vec::new(),
        })
    }
}

/// The lines of `metrics.jsonl` without what measures time, and without the
/// loss averaged over a window (the first window after a resume starts at
/// the resume).
fn metrics(run: &Path) -> Vec<Value> {
    fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            for k in ["steps_per_s", "elapsed_s", "rss_bytes", "loss"] {
                v.as_object_mut().unwrap().remove(k);
            }
            v
        })
        .collect()
}

#[test]
fn a_resumed_toy_run_is_the_straight_run() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = |out: &str| TrainConfig {
        out: dir.path().join(out),
        epochs: 4,
        accum: 2,
        lr: 0.1,
        warmup: 3,
        ckpt_every: 3,
        keep_last: 100,
        threads: 1,
        ..TrainConfig::default()
    };
    let run = |cfg: &TrainConfig| {
        Harness::new(cfg)
            .unwrap()
            .train(Toy::new(), Resume::Auto)
            .unwrap()
    };
    let straight = cfg("straight");
    let want = run(&straight);
    assert_eq!((want.steps, want.stop.clone()), (20, Stop::Finished));
    let m = metrics(&straight.out);
    let last = m.iter().rfind(|v| v["kind"] == "train").unwrap();
    assert_eq!(last["seen"], 40, "{last}");
    assert!(m
        .iter()
        .any(|v| v["kind"] == "baseline" && v["query"] == "zero"));
    assert_eq!(m.iter().filter(|v| v["kind"] == "val").count(), 4);

    // The same run, as if killed after the checkpoint of step 9.
    let resumed = cfg("resumed");
    run(&resumed);
    let ck = checkpoint::checkpoints_dir(&resumed.out);
    for entry in fs::read_dir(&ck).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("step-") && name > checkpoint::step_dir_name(9) {
            fs::remove_dir_all(&path).unwrap();
        }
    }
    let got = run(&resumed);
    assert_eq!(got.resumed_from, Some(9));
    assert_eq!(got.fingerprint, want.fingerprint);
    assert_eq!(got.best, want.best);
    assert_eq!(metrics(&resumed.out), metrics(&straight.out));
}

/// The best validation score read back from `state.json` is the same
/// bits: read a last digit off, a resumed run's next validation of the
/// same weights would "improve" on it and move `best` (serde_json's
/// default float parser rounds 0.10622406719139141 down an ulp; the
/// workspace asks for its exact one).
#[test]
fn scores_survive_state_json_bitwise() {
    for v in [
        0.10622406719139141f64,
        0.6423730438522011,
        1.0 / 3.0,
        0.7086,
    ] {
        let best = Best {
            metric: "ndcg@10".into(),
            value: v,
            step: 20,
        };
        let text = serde_json::to_string(&best).unwrap();
        let back: Best = serde_json::from_str(&text).unwrap();
        assert_eq!(back.value.to_bits(), v.to_bits(), "{text}");
    }
}
