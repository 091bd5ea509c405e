//! Teacher-forced evaluation over a small bank whose answers are known: a
//! perfect proposal snaps and hits; a proposal between two rows blends; a
//! failing retriever makes every example a NOVEL fallback scored as the LVM
//! alone; the sweep visits the pairs with novel < snap.

use std::time::Duration;

use tandem_bank::Bank;
use tandem_decode::{
    BankRetriever, Blend, Candidate, Case, Decision, DecodeSettings, Decoder, Evaluation, Lane,
    Retriever, Summary,
};

/// Eight orthonormal rows of dimension 8.
fn bank() -> Bank {
    let mut v = vec![0.0; 64];
    (0..8).for_each(|i| v[i * 8 + i] = 1.0);
    Bank::from_f32(v, 8)
}

fn decoder() -> Decoder {
    Decoder::new(DecodeSettings {
        k: 4,
        window: 0,
        budget: Duration::from_secs(10),
    })
}

fn lane(snap: f32, novel: f32) -> Lane {
    Lane {
        name: "t".into(),
        snap,
        novel,
        blend: Blend::Linear,
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
        Err("down".into())
    }
}

#[test]
fn known_answers() {
    let bank = bank();
    // Case 0: context 0,1 -> target 2, proposal exactly row 2.
    // Case 1: context 3 -> target 4, proposal halfway between rows 4 and 5
    //         (cosine 0.707 to each; row 4 wins the tie on the lower row).
    // Case 2: context 6 -> target 7, proposal row 0 (a miss).
    let cases = vec![
        Case {
            context: vec![0, 1],
            target: 2,
        },
        Case {
            context: vec![3],
            target: 4,
        },
        Case {
            context: vec![6],
            target: 7,
        },
    ];
    let h = std::f32::consts::FRAC_1_SQRT_2;
    let mut proposals = vec![0.0; 24];
    proposals[2] = 1.0;
    proposals[8 + 4] = h;
    proposals[8 + 5] = h;
    proposals[16] = 1.0;
    let retriever = BankRetriever::new(&bank).unwrap();
    let ev = Evaluation::new(
        &bank,
        cases.clone(),
        &proposals,
        &decoder(),
        &retriever,
        1,
        &|| {},
    )
    .unwrap();
    let out = ev.outcomes(&lane(0.9, 0.5)).unwrap();
    assert_eq!(out[0].decision, Decision::Snap);
    assert_eq!(out[0].row, Some(2));
    assert!((out[0].cos_true - 1.0).abs() < 1e-6 && out[0].hit);
    // Between the thresholds: a BLEND toward row 4 with alpha (0.707-0.5)/0.4.
    assert_eq!(out[1].decision, Decision::Blend);
    assert_eq!(out[1].row, Some(4));
    let a = (h - 0.5) / 0.4;
    assert!((out[1].alpha.unwrap() - a).abs() < 1e-5);
    assert!(out[1].cos_true > h, "the blend leans to the true row");
    assert!(out[1].hit, "Hit@1: row 4 is the nearest to the blend");
    // Row 0 is not the context of case 2, so it snaps there and misses.
    assert_eq!(out[2].decision, Decision::Snap);
    assert!(!out[2].hit && out[2].cos_true.abs() < 1e-6);
    let s = Summary::of(&out);
    assert_eq!((s.snap.n, s.blend.n, s.novel.n), (2, 1, 0));
    assert!((s.all.hit - 2.0 / 3.0).abs() < 1e-9);
    // The LVM alone: case 0 hits; case 1's tie is broken towards row 4.
    assert!((s.lvm.cos_true - (1.0 + f64::from(h) + 0.0) / 3.0).abs() < 1e-6);
    // A NOVEL step is scored as the proposal itself.
    let strict = ev.outcomes(&lane(1.0, 0.99)).unwrap();
    assert_eq!(strict[1].decision, Decision::Novel);
    assert_eq!(
        (strict[1].cos_true, strict[1].hit),
        (strict[1].lvm_cos_true, strict[1].lvm_hit)
    );
    // The sweep: novel < snap pairs only, in order.
    let sweep = ev
        .sweep(&[0.6, 0.9], &[0.5, 0.7], Blend::Linear, &|| {})
        .unwrap();
    let pairs: Vec<(f32, f32)> = sweep.iter().map(|r| (r.snap, r.novel)).collect();
    assert_eq!(pairs, vec![(0.6, 0.5), (0.9, 0.5), (0.9, 0.7)]);
    assert_eq!(sweep[1].summary, s);
    // A failing retriever: every case a NOVEL fallback, scored as the LVM.
    let down = Evaluation::new(&bank, cases, &proposals, &decoder(), &Failing, 1, &|| {}).unwrap();
    let out = down.outcomes(&lane(0.9, 0.5)).unwrap();
    assert!(out.iter().all(|o| o.decision == Decision::Novel
        && o.fallback.as_deref() == Some("retrieval failed: down")));
    let f = Summary::of(&out);
    assert_eq!(f.fallbacks, 3);
    assert_eq!(f.all, f.lvm);
}
