//! Throughput of `Bank::scan` (norm statistics + NaN/Inf rows) and of
//! opening a memory-mapped `.npy`. Run: `cargo bench -p tandem-bank --bench scan`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tandem_bank::{f16, write_npy, Bank, OpenOptions, Overwrite, Vectors};

const ROWS: usize = 200_000;
const DIM: usize = 384;

fn data() -> Vec<f32> {
    (0..ROWS * DIM)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
        .collect()
}

fn scan(c: &mut Criterion) {
    let v = data();
    let h: Vec<f16> = v.iter().map(|&x| f16::from_f32(x)).collect();
    let mut g = c.benchmark_group("scan");
    g.sample_size(10);
    let f32_bank = Bank::from_f32(v, DIM);
    g.throughput(Throughput::Bytes((ROWS * DIM * 4) as u64));
    g.bench_function("f32 200k x 384", |b| b.iter(|| f32_bank.scan()));
    let f16_bank = Bank::from_f16(h, DIM);
    g.throughput(Throughput::Bytes((ROWS * DIM * 2) as u64));
    g.bench_function("f16 200k x 384", |b| b.iter(|| f16_bank.scan()));
    // Small enough to stay in cache: compute speed rather than memory speed.
    let small = Bank::from_f32(data()[..2000 * DIM].to_vec(), DIM);
    g.throughput(Throughput::Bytes((2000 * DIM * 4) as u64));
    g.bench_function("f32 2k x 384 (cached)", |b| b.iter(|| small.scan()));
    g.finish();
}

fn open(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bank.npy");
    let v = data();
    write_npy(&p, ROWS, DIM, Vectors::F32(&v), Overwrite::Refuse).unwrap();
    c.bench_function("open mapped npy (307 MB)", |b| {
        b.iter(|| Bank::open(&p, &OpenOptions::default()).unwrap())
    });
}

criterion_group!(benches, scan, open);
criterion_main!(benches);
