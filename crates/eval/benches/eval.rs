//! Parsing and evaluating a 1M-line run (1,000 queries x 1,000 docs).
//! `cargo bench -p tandem-eval`

use std::fmt::Write;
use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use tandem_eval::{evaluate, EvalOptions, Measure, Qrels, Run};

fn inputs() -> (String, String) {
    let (mut run, mut qrels) = (String::new(), String::new());
    for q in 0..1000u64 {
        for d in 0..1000u64 {
            let doc = (q * 7919 + d * 104_729) % 1_000_003;
            let score = ((doc * 2_654_435_761) % 1_000_000) as f64 / 1e6;
            writeln!(run, "q{q} Q0 doc{doc} {} {score} bench", d + 1).unwrap();
            if d % 20 == 0 {
                writeln!(qrels, "q{q} 0 doc{doc} {}", (d / 20) % 4).unwrap();
            }
        }
    }
    (run, qrels)
}

fn bench(c: &mut Criterion) {
    let (run_text, qrels_text) = inputs();
    let qrels = Qrels::parse(&qrels_text, Path::new("bench.qrels")).unwrap();
    let run = Run::parse(&run_text, Path::new("bench.run")).unwrap();
    let measures =
        Measure::parse_list("ndcg@10,recall@100,recip_rank@10,map,P@10,success@10").unwrap();
    let mut g = c.benchmark_group("1M lines");
    g.sample_size(10);
    g.bench_function("parse run", |b| {
        b.iter(|| Run::parse(black_box(&run_text), Path::new("bench.run")).unwrap())
    });
    g.bench_function("evaluate 6 measures", |b| {
        b.iter(|| evaluate(&qrels, black_box(&run), &measures, &EvalOptions::default()).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
