//! Property tests: invariants every trec_eval-style evaluation must keep.

use std::path::Path;

use proptest::prelude::*;
use tandem_eval::trec::write_run_lines;
use tandem_eval::{evaluate, EvalOptions, Measure, Qrels, Run};

/// (qid, docid, grade) judgments and (qid, docid, score) run lines, over
/// small id and score alphabets so that ties and overlaps are frequent.
type Case = (Vec<(u8, u8, i64)>, Vec<(u8, u8, f64)>);

fn case() -> impl Strategy<Value = Case> {
    let qrels = prop::collection::vec((0u8..4, 0u8..20, -1i64..4), 1..40);
    let run = prop::collection::btree_map(
        (0u8..5, 0u8..20),
        (0u8..6).prop_map(|s| f64::from(s) / 4.0 - 0.5),
        1..60,
    )
    .prop_map(|m| m.into_iter().map(|((q, d), s)| (q, d, s)).collect());
    (qrels, run)
}

fn build(case: &Case, scale: f64) -> (Qrels, Run) {
    let mut qrels = Qrels::new();
    for &(q, d, g) in &case.0 {
        qrels.insert(&format!("q{q}"), &format!("d{d}"), g);
    }
    let mut run = Run::new();
    for &(q, d, s) in &case.1 {
        run.insert(&format!("q{q}"), &format!("d{d}"), s * scale)
            .unwrap();
    }
    (qrels, run)
}

fn measures() -> Vec<Measure> {
    Measure::parse_list("P@1,P@5,recall@3,recall@100,success@1,success@5,recip_rank,recip_rank@3,ndcg,ndcg@3,ndcg@100,map,map@3,map@100")
        .unwrap()
}

fn eval(qrels: &Qrels, run: &Run, complete: bool) -> Option<tandem_eval::Report> {
    evaluate(qrels, run, &measures(), &EvalOptions { complete }).ok()
}

proptest! {
    #[test]
    fn values_lie_in_unit_interval(case in case(), complete in any::<bool>()) {
        let (qrels, run) = build(&case, 1.0);
        if let Some(r) = eval(&qrels, &run, complete) {
            for v in r.per_query.values().flatten().chain(&r.mean) {
                prop_assert!((0.0..=1.0).contains(v) && v.is_sign_positive(), "{v}");
            }
        }
    }

    #[test]
    fn line_order_and_score_scale_do_not_matter(case in case(), seed in any::<u64>()) {
        let (qrels, run) = build(&case, 1.0);
        let mut shuffled = case.clone();
        // A deterministic permutation of the run lines.
        shuffled.1.sort_by_key(|&(q, d, _)| (u64::from(q) << 8 | u64::from(d)).wrapping_mul(seed | 1).rotate_left(17));
        let (_, run2) = build(&shuffled, 1.0);
        let (_, run3) = build(&case, 2.0);
        prop_assert_eq!(eval(&qrels, &run, false), eval(&qrels, &run2, false));
        prop_assert_eq!(eval(&qrels, &run, true), eval(&qrels, &run3, true));
    }

    #[test]
    fn cutoffs_behave(case in case()) {
        let (qrels, run) = build(&case, 1.0);
        let Some(r) = eval(&qrels, &run, false) else { return Ok(()) };
        for (qid, v) in &r.per_query {
            let [p1, p5, r3, r100, s1, s5, rr, rr3, ndcg, _ndcg3, ndcg100, map, map3, map100] = v[..] else {
                unreachable!()
            };
            // At most 20 docs are retrieved, so a cutoff of 100 changes nothing.
            prop_assert_eq!(ndcg100, ndcg);
            prop_assert_eq!(map100, map);
            prop_assert!(r3 <= r100 && map3 <= map && rr3 <= rr);
            prop_assert!(s5 >= p5 && s5 >= s1);
            prop_assert_eq!(s1, p1, "one doc: success@1 == P@1");
            prop_assert_eq!(rr > 0.0, r100 > 0.0, "{}: some relevant doc retrieved", qid);
            prop_assert_eq!(s5 > 0.0, p5 > 0.0);
            prop_assert_eq!(rr3 > 0.0, r3 > 0.0);
            if qrels.num_relevant(qid) == 0 {
                prop_assert!(v.iter().all(|&x| x == 0.0), "{}: no relevant doc, all zero", qid);
            }
        }
    }

    #[test]
    fn written_run_reads_back_identically(case in case()) {
        let (_, run) = build(&case, 1.0);
        let mut text = Vec::new();
        for qid in run.query_ids() {
            write_run_lines(&mut text, qid, run.ranked(qid), "prop").unwrap();
        }
        let back = Run::parse(std::str::from_utf8(&text).unwrap(), Path::new("mem")).unwrap();
        prop_assert_eq!(back, run);
    }
}
