//! The decision rule at and around its thresholds, the blend schedules, the
//! snap window, the fallbacks of a failing and of a slow retriever, lanes
//! and telemetry.

use std::time::Duration;

use tandem_decode::{Blend, Candidate, Decision, DecodeSettings, Decoder, Lane, Lanes, Retriever};

/// Unit vector in the plane of e0, e1 at cosine `c` to e0.
fn at_cos(c: f32) -> Vec<f32> {
    vec![c, (1.0 - c * c).max(0.0).sqrt(), 0.0]
}

/// A bank of fixed rows; candidates are its rows by cosine to `v`.
struct Bank(Vec<Vec<f32>>);

impl Retriever for Bank {
    fn candidates(
        &self,
        _: &[Vec<f32>],
        v: &[f32],
        exclude: &[u32],
        k: usize,
    ) -> Result<Vec<Candidate>, String> {
        let mut c: Vec<Candidate> = self
            .0
            .iter()
            .enumerate()
            .filter(|(r, _)| !exclude.contains(&(*r as u32)))
            .map(|(r, x)| Candidate {
                row: r as u32,
                vector: x.clone(),
            })
            .collect();
        let dot = |x: &[f32]| x.iter().zip(v).map(|(a, b)| a * b).sum::<f32>();
        c.sort_by(|a, b| dot(&b.vector).total_cmp(&dot(&a.vector)));
        c.truncate(k);
        Ok(c)
    }
}

struct Failing;

impl Retriever for Failing {
    fn candidates(
        &self,
        _: &[Vec<f32>],
        _: &[f32],
        _: &[u32],
        _: usize,
    ) -> Result<Vec<Candidate>, String> {
        Err("index file vanished".into())
    }
}

struct Slow(Bank);

impl Retriever for Slow {
    fn candidates(
        &self,
        _: &[Vec<f32>],
        v: &[f32],
        exclude: &[u32],
        k: usize,
    ) -> Result<Vec<Candidate>, String> {
        std::thread::sleep(Duration::from_millis(30));
        self.0.candidates(&[], v, exclude, k)
    }
}

fn settings() -> DecodeSettings {
    DecodeSettings {
        k: 5,
        window: 2,
        budget: Duration::from_millis(20),
    }
}

fn neutral() -> Lane {
    Lanes::new(Vec::new())
        .unwrap()
        .get("neutral")
        .unwrap()
        .clone()
}

#[test]
fn thresholds_decide_snap_blend_novel() {
    let lane = neutral();
    assert_eq!((lane.snap, lane.novel), (0.92, 0.85));
    let bank = Bank(vec![vec![1.0, 0.0, 0.0]]);
    for (c, want) in [
        (0.99, Decision::Snap),
        (0.93, Decision::Snap),
        (0.90, Decision::Blend),
        (0.86, Decision::Blend),
        (0.84, Decision::Novel),
        (0.10, Decision::Novel),
    ] {
        let mut d = Decoder::new(settings());
        let v = at_cos(c);
        let step = d.step(&lane, &[], &v, &bank);
        assert_eq!(step.decision, want, "cosine {c}");
        assert!((step.cosine.unwrap() - c).abs() < 1e-5);
        let emitted_norm: f32 = step.vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((emitted_norm - 1.0).abs() < 1e-5);
        match want {
            Decision::Snap => assert_eq!(step.vector, vec![1.0, 0.0, 0.0]),
            Decision::Novel => assert!((step.vector[0] - c).abs() < 1e-5),
            Decision::Blend => {
                // Linear schedule: a = (c - 0.85) / (0.92 - 0.85); the blend
                // lies between the proposal and the candidate.
                let a = step.alpha.unwrap();
                assert!((a - (c - 0.85) / 0.07).abs() < 1e-4, "alpha {a}");
                assert!(step.vector[0] > c && step.vector[0] < 1.0);
                assert_eq!(step.row, Some(0));
            }
        }
    }
}

#[test]
fn a_fixed_blend_weight_is_used_as_given() {
    let lane = Lane {
        name: "legal".into(),
        snap: 0.94,
        novel: 0.80,
        blend: Blend::Fixed(0.5),
    };
    lane.check().unwrap();
    let bank = Bank(vec![vec![1.0, 0.0, 0.0]]);
    let step = Decoder::new(settings()).step(&lane, &[], &at_cos(0.9), &bank);
    assert_eq!(step.decision, Decision::Blend);
    assert_eq!(step.alpha, Some(0.5));
    // The same cosine snaps in a creative lane (0.90) but not in legal (0.94).
    let creative = Lanes::new(Vec::new())
        .unwrap()
        .get("creative")
        .unwrap()
        .clone();
    let step = Decoder::new(settings()).step(&creative, &[], &at_cos(0.905), &bank);
    assert_eq!(step.decision, Decision::Snap);
}

#[test]
fn the_window_keeps_a_row_from_snapping_again() {
    let lane = neutral();
    let bank = Bank(vec![vec![1.0, 0.0, 0.0], at_cos(0.95)]);
    let mut d = Decoder::new(settings());
    let v = vec![1.0, 0.0, 0.0];
    assert_eq!(d.step(&lane, &[], &v, &bank).row, Some(0));
    // Row 0 is in the window: the next best row is offered.
    let second = d.step(&lane, &[], &v, &bank);
    assert_eq!((second.decision, second.row), (Decision::Snap, Some(1)));
    // Both in the window (W = 2): nothing left, NOVEL with the reason.
    let third = d.step(&lane, &[], &v, &bank);
    assert_eq!(third.decision, Decision::Novel);
    assert!(third.fallback.unwrap().contains("no candidate"));
    // The window holds the last W = 2 snaps (rows 0 and 1) until others
    // replace them: a NOVEL step does not free them.
    assert_eq!(d.step(&lane, &[], &v, &bank).decision, Decision::Novel);
}

#[test]
fn failing_and_slow_retrieval_go_novel_with_the_reason() {
    let lane = neutral();
    let mut d = Decoder::new(settings());
    let v = at_cos(0.99);
    let step = d.step(&lane, &[], &v, &Failing);
    assert_eq!(step.decision, Decision::Novel);
    assert!(step
        .fallback
        .as_deref()
        .unwrap()
        .contains("index file vanished"));
    assert!(
        (step.vector[0] - 0.99).abs() < 1e-5,
        "the proposal is emitted"
    );
    let slow = Slow(Bank(vec![vec![1.0, 0.0, 0.0]]));
    let step = d.step(&lane, &[], &v, &slow);
    assert_eq!(step.decision, Decision::Novel);
    assert!(step.fallback.as_deref().unwrap().contains("budget"));
    let t = &d.telemetry().lanes["neutral"];
    assert_eq!((t.steps, t.novel, t.fallbacks), (2, 2, 2));
    assert_eq!(t.mean_cosine, None);
}

#[test]
fn telemetry_counts_per_lane() {
    let lanes = Lanes::new(vec![Lane {
        name: "legal".into(),
        snap: 0.94,
        novel: 0.88,
        blend: Blend::Linear,
    }])
    .unwrap();
    let bank = Bank(vec![vec![1.0, 0.0, 0.0]]);
    let mut d = Decoder::new(DecodeSettings {
        window: 0,
        ..settings()
    });
    for (lane, c) in [
        ("legal", 0.93),
        ("legal", 0.99),
        ("neutral", 0.93),
        ("neutral", 0.5),
    ] {
        d.step(lanes.get(lane).unwrap(), &[], &at_cos(c), &bank);
    }
    let t = d.telemetry();
    let legal = &t.lanes["legal"];
    assert_eq!((legal.snap, legal.blend, legal.novel), (1, 1, 0));
    assert!((legal.mean_cosine.unwrap() - 0.96).abs() < 1e-5);
    let neutral = &t.lanes["neutral"];
    assert_eq!((neutral.snap, neutral.novel), (1, 1));
    assert_eq!(neutral.percent(Decision::Snap), 50.0);
    let table = t.table();
    assert!(
        table.contains("| legal | 2 | 50.0 | 50.0 | 0.0 | 0.9600 | 0 |"),
        "{table}"
    );
}

#[test]
fn lanes_are_checked_and_named_in_errors() {
    let bad = Lane {
        name: "x".into(),
        snap: 0.8,
        novel: 0.9,
        blend: Blend::Linear,
    };
    let err = Lanes::new(vec![bad]).unwrap_err().to_string();
    assert!(
        err.contains("\"x\"") && err.contains("novel") && err.contains("fix"),
        "{err}"
    );
    let err = Lanes::new(Vec::new())
        .unwrap()
        .get("legal")
        .unwrap_err()
        .to_string();
    assert!(err.contains("conservative, neutral, creative"), "{err}");
    let fixed = Lane {
        name: "y".into(),
        snap: 0.9,
        novel: 0.8,
        blend: Blend::Fixed(1.5),
    };
    assert!(fixed.check().unwrap_err().to_string().contains("1.5"));
}
