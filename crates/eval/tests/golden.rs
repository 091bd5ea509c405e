//! Golden tests: expected values come from pytrec_eval (pytrec-eval-terrier
//! 0.5.11, which bundles trec_eval 9.0.8). Re-run the Python quoted above each
//! table (in `crates/eval/tests/data`, with numpy and pytrec-eval-terrier
//! installed) to regenerate both the fixture files and the numbers.

use std::path::{Path, PathBuf};

use tandem_eval::{evaluate, EvalOptions, Measure, Qrels, Run};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

// The synthetic fixture: ties between different doc ids (q1, q5, q6), -0.0
// tying 0.0 (q1), graded relevance -2..3, a query judged only non-relevant
// (q2), a run query absent from the qrels (q9), a qrels query absent from the
// run (q4), fewer retrieved than k (q1, q3), unsorted lines whose rank column
// contradicts the scores (q1, q3), and 1,200 retrieved docs (q6: no depth cap).
// recip_rank@3 is pytrec_eval's recip_rank on the run cut to its top 3 in
// trec_eval order.
//
// import pytrec_eval
//
// qrels_lines = """q1 0 d1 3
// q1 0 d2 0
// q1 0 d3 1
// q1 0 d4 2
// q1 0 d5 -1
// q1 0 d7 1
// q1 0 d9 2
// q2 0 d1 0
// q2 0 d2 -2
// q3 0 a 1
// q3 0 b 2
// q3 0 zz 3
// q4 0 x 1
// q5 0 e03 1
// q5 0 e07 2
// q5 0 e11 3
// q5 0 e14 1
// """
// run_lines = """q1 Q0 d9 1 0.2 t
// q1 Q0 d1 2 0.5 t
// q1 Q0 d8 3 0.5 t
// q1 Q0 d3 4 0.9 t
// q1 Q0 d5 5 0.7 t
// q1 Q0 d2 6 0.0 t
// q1 Q0 d4 7 -0.0 t
// q1 Q0 d6 8 0.5 t
// q2 Q0 d1 1 3.5 t
// q2 Q0 d2 2 1.5 t
// q9 Q0 d1 1 1.0 t
// q3 Q0 a 3 10 t
// q3 Q0 c 1 -2e3 t
// q3 Q0 zz 2 1e-3 t
// """
// run_lines += "".join(f"q5 Q0 e{i:02d} {i + 1} 1.25 t\n" for i in range(15))
// # q6: 1200 retrieved (no depth limit), many ties.
// run_lines += "".join(f"q6 Q0 d{i:04d} {i + 1} {(i * 37) % 101 / 101!r} t\n" for i in range(1200))
// qrels_lines += "".join(f"q6 0 d{i:04d} {(i // 50) % 4}\n" for i in range(0, 1300, 50))
// open("golden.qrels", "w").write(qrels_lines)
// open("golden.run", "w").write(run_lines)
//
// qrels, run = {}, {}
// for l in qrels_lines.split("\n"):
//     if l:
//         q, _, d, g = l.split()
//         qrels.setdefault(q, {})[d] = int(g)
// for l in run_lines.split("\n"):
//     if l:
//         q, _, d, _, s, _ = l.split()
//         run.setdefault(q, {})[d] = float(s)
//
// def top(k):  # trec_eval order (score desc, doc id desc), cut at k
//     return {q: dict(sorted(ds.items(), key=lambda x: (x[1], x[0]), reverse=True)[:k]) for q, ds in run.items()}
//
// names = ["P@1", "P@5", "P@10", "P@100", "recall@5", "recall@10", "recall@100", "recall@1000", "success@1",
//          "success@5", "success@10", "recip_rank", "recip_rank@3", "ndcg", "ndcg@3", "ndcg@5", "ndcg@10",
//          "ndcg@100", "ndcg@1000", "map", "map@5", "map@100", "map@1000"]
// keys = ["P_1", "P_5", "P_10", "P_100", "recall_5", "recall_10", "recall_100", "recall_1000", "success_1",
//         "success_5", "success_10", "recip_rank", None, "ndcg", "ndcg_cut_3", "ndcg_cut_5", "ndcg_cut_10",
//         "ndcg_cut_100", "ndcg_cut_1000", "map", "map_cut_5", "map_cut_100", "map_cut_1000"]
// full = pytrec_eval.RelevanceEvaluator(qrels, {"P.1,5,10,100", "recall.5,10,100,1000", "success.1,5,10", "recip_rank", "ndcg", "ndcg_cut.3,5,10,100,1000", "map", "map_cut.5,100,1000"}).evaluate(run)
// rr3 = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top(3))
// print("const MEASURES: &str = \"%s\";" % ",".join(names))
// print("const PER_QUERY: &[(&str, [f64; %d])] = &[" % len(names))
// for q in sorted(full):
//     vals = [full[q][k] if k else rr3[q]["recip_rank"] for k in keys]
//     print('    ("%s", [%s]),' % (q, ", ".join(repr(v) for v in vals)))
// print("];")
const MEASURES: &str = "P@1,P@5,P@10,P@100,recall@5,recall@10,recall@100,recall@1000,success@1,success@5,success@10,recip_rank,recip_rank@3,ndcg,ndcg@3,ndcg@5,ndcg@10,ndcg@100,ndcg@1000,map,map@5,map@100,map@1000";
const PER_QUERY: &[(&str, [f64; 23])] = &[
    (
        "q1",
        [
            1.0,
            0.4,
            0.4,
            0.04,
            0.4,
            0.8,
            0.8,
            0.8,
            1.0,
            1.0,
            1.0,
            1.0,
            1.0,
            0.5822360662971313,
            0.19004688335796713,
            0.35539072545504324,
            0.5822360662971313,
            0.5822360662971313,
            0.5822360662971313,
            0.49428571428571433,
            0.27999999999999997,
            0.49428571428571433,
            0.49428571428571433,
        ],
    ),
    (
        "q2",
        [
            0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
            0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
        ],
    ),
    (
        "q3",
        [
            1.0,
            0.4,
            0.2,
            0.02,
            0.6666666666666666,
            0.6666666666666666,
            0.6666666666666666,
            0.6666666666666666,
            1.0,
            1.0,
            1.0,
            1.0,
            1.0,
            0.6074915180456525,
            0.6074915180456525,
            0.6074915180456525,
            0.6074915180456525,
            0.6074915180456525,
            0.6074915180456525,
            0.6666666666666666,
            0.6666666666666666,
            0.6666666666666666,
            0.6666666666666666,
        ],
    ),
    (
        "q5",
        [
            1.0,
            0.4,
            0.3,
            0.04,
            0.5,
            0.75,
            1.0,
            1.0,
            1.0,
            1.0,
            1.0,
            1.0,
            1.0,
            0.614959153314217,
            0.21000199575396408,
            0.4414085228168173,
            0.5629155755646877,
            0.614959153314217,
            0.614959153314217,
            0.5520833333333334,
            0.375,
            0.5520833333333334,
            0.5520833333333334,
        ],
    ),
    (
        "q6",
        [
            0.0,
            0.0,
            0.0,
            0.02,
            0.0,
            0.0,
            0.10526315789473684,
            0.8421052631578947,
            0.0,
            0.0,
            0.0,
            0.04,
            0.0,
            0.28741913224569243,
            0.0,
            0.0,
            0.0,
            0.06150339618619241,
            0.26151357392118735,
            0.018783298060509185,
            0.0,
            0.003920145190562613,
            0.017120180382349682,
        ],
    ),
];

fn assert_close(got: f64, want: f64, what: &str) {
    assert!(
        (got - want).abs() <= 1e-12,
        "{what}: got {got}, pytrec_eval {want}"
    );
}

fn golden_inputs() -> (Qrels, Run) {
    let qrels = Qrels::read(&data("golden.qrels")).unwrap();
    let run = Run::read(&data("golden.run")).unwrap();
    (qrels, run)
}

#[test]
fn synthetic_fixture_matches_pytrec_eval() {
    let (qrels, run) = golden_inputs();
    let measures = Measure::parse_list(MEASURES).unwrap();
    let report = evaluate(&qrels, &run, &measures, &EvalOptions::default()).unwrap();
    let qids: Vec<&str> = PER_QUERY.iter().map(|(q, _)| *q).collect();
    assert_eq!(
        report
            .per_query
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        qids
    );
    for (qid, want) in PER_QUERY {
        for ((m, got), want) in measures.iter().zip(&report.per_query[*qid]).zip(want) {
            assert_close(*got, *want, &format!("{qid} {m}"));
        }
    }
    for (i, m) in measures.iter().enumerate() {
        let want = PER_QUERY.iter().map(|(_, v)| v[i]).sum::<f64>() / PER_QUERY.len() as f64;
        assert_close(report.mean[i], want, &format!("mean {m}"));
    }
}

#[test]
fn complete_counts_unanswered_qrels_queries_as_zero() {
    // trec_eval -c: q4 (judged, not in the run) joins the mean with 0 everywhere.
    let (qrels, run) = golden_inputs();
    let measures = Measure::parse_list(MEASURES).unwrap();
    let report = evaluate(&qrels, &run, &measures, &EvalOptions { complete: true }).unwrap();
    assert_eq!(report.num_queries(), PER_QUERY.len() + 1);
    assert!(report.per_query["q4"].iter().all(|&v| v == 0.0));
    for (i, m) in measures.iter().enumerate() {
        let want = PER_QUERY.iter().map(|(_, v)| v[i]).sum::<f64>() / (PER_QUERY.len() + 1) as f64;
        assert_close(report.mean[i], want, &format!("complete mean {m}"));
    }
}

// The real-data fixture `msmarco-dl-5k.minilm.top100.run`: exact inner-product
// top 100 of the MiniLM f16 embeddings of msmarco-dl-5k (scores with six
// decimals, so some scores tie). 43 of the 50 queries are judged.
//
// import json, numpy as np, pytrec_eval
// D = "/work/shared/data/msmarco-dl-5k/"
// docs = [json.loads(l)["_id"] for l in open(D + "corpus.jsonl")]
// qids = [json.loads(l)["_id"] for l in open(D + "queries.jsonl")]
// C = np.load(D + "corpus.minilm.f16.npy").astype(np.float32)
// Q = np.load(D + "queries.minilm.f16.npy").astype(np.float32)
// S = Q @ C.T
// with open("msmarco-dl-5k.minilm.top100.run", "w") as f:
//     for qi, q in enumerate(qids):
//         top = np.argsort(-S[qi], kind="stable")[:100]
//         for r, di in enumerate(top):
//             f.write(f"{q} Q0 {docs[di]} {r + 1} {S[qi, di]:.6f} minilm\n")
// run, qrels = {}, {}
// for l in open("msmarco-dl-5k.minilm.top100.run"):
//     q, _, d, _, s, _ = l.split()
//     run.setdefault(q, {})[d] = float(s)
// for l in open(D + "qrels/test.tsv"):
//     q, d, g = l.split()
//     qrels.setdefault(q, {})[d] = int(g)
// res = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100", "map", "recip_rank", "P.10"}).evaluate(run)
// for k in ["ndcg_cut_10", "recall_100", "map", "recip_rank", "P_10"]:
//     print(k, repr(sum(r[k] for r in res.values()) / len(res)), len(res))
//
// Output:
// ndcg_cut_10 0.797664255828088 43
// recall_100 0.8032022164231083 43
// map 0.7933926292008499 43
// recip_rank 1.0 43
// P_10 0.9767441860465116 43
#[test]
fn msmarco_dl_5k_matches_pytrec_eval() {
    let qrels_path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/msmarco-dl-5k/qrels/test.tsv");
    if !qrels_path.exists() {
        eprintln!("skipping msmarco_dl_5k_matches_pytrec_eval: {} is absent (the shared data folder sits beside the repository)", qrels_path.display());
        return;
    }
    let qrels = Qrels::read(&qrels_path).unwrap();
    let run = Run::read(&data("msmarco-dl-5k.minilm.top100.run")).unwrap();
    assert_eq!(run.num_queries(), 50);
    let measures = Measure::parse_list("ndcg_cut_10,recall_100,map,recip_rank,P_10").unwrap();
    let report = evaluate(&qrels, &run, &measures, &EvalOptions::default()).unwrap();
    assert_eq!(report.num_queries(), 43);
    let want = [
        0.797664255828088,
        0.8032022164231083,
        0.7933926292008499,
        1.0,
        0.9767441860465116,
    ];
    for ((m, got), want) in measures.iter().zip(&report.mean).zip(want) {
        assert_close(*got, want, &format!("msmarco-dl-5k {m}"));
    }
}
