//! GFLOP/s of the bfloat16 linear layer (`kernels::bf16::linear_bf16`,
//! rounding of `x` included) against the float32 `linalg::matmul` on the
//! linear layers of MiniLM-L6 at batch 32 x 128 tokens (n = 4096 rows), on
//! 1 and 2 threads.
//!
//! `cargo run --release -p tandem-nn --example bf16_gemm -- --rows 4096`

use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tandem_nn::kernels::bf16::{bf16_kernel, linear_bf16, PackedBf16};
use tandem_nn::linalg::{matmul, set_threads, Mat};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("a number"))
        .unwrap_or(default)
}

/// The fastest call of each of `a` and `b`, called in turn for a second
/// (at least 10 times each): the machine may be shared, and alternating
/// gives both the same conditions.
fn seconds(mut a: impl FnMut(), mut b: impl FnMut()) -> (f64, f64) {
    let time = |f: &mut dyn FnMut()| {
        let t = Instant::now();
        f();
        t.elapsed().as_secs_f64()
    };
    time(&mut a);
    time(&mut b);
    let start = Instant::now();
    let (mut ta, mut tb) = (f64::INFINITY, f64::INFINITY);
    let mut calls = 0;
    while calls < 10 || start.elapsed().as_secs_f64() < 1.0 {
        ta = ta.min(time(&mut a));
        tb = tb.min(time(&mut b));
        calls += 1;
    }
    (ta, tb)
}

fn main() {
    let n = arg("--rows", 4096);
    let max_threads = arg("--threads", 2);
    rayon::ThreadPoolBuilder::new()
        .num_threads(max_threads)
        .build_global()
        .expect("first pool");
    println!("bf16 kernel: {}, rows: {n}", bf16_kernel());
    println!(
        "{:>7} {:>5} {:>5} {:>10} {:>10} {:>6} {:>8}",
        "threads", "inp", "out", "f32 GF/s", "bf16 GF/s", "ratio", "pack ms"
    );
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    for threads in 1..=max_threads {
        set_threads(threads);
        for (inp, out) in [(384, 384), (384, 1536), (1536, 384)] {
            let x: Vec<f32> = (0..n * inp).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let w: Vec<f32> = (0..out * inp).map(|_| rng.gen_range(-0.1..0.1)).collect();
            let start = Instant::now();
            let packed = PackedBf16::pack(&w, out, inp);
            let pack_ms = start.elapsed().as_secs_f64() * 1e3;
            let mut y = vec![0.0f32; n * out];
            let mut yb = vec![0.0f32; n * out];
            let (f32_s, bf16_s) = seconds(
                || {
                    matmul(
                        &mut y,
                        Mat::new(&x, n, inp),
                        Mat::new(&w, out, inp).t(),
                        0.0,
                    )
                },
                || linear_bf16(&mut yb, &x, n, &packed, None),
            );
            let flops = 2.0 * (n * inp * out) as f64;
            println!(
                "{threads:>7} {inp:>5} {out:>5} {:>10.1} {:>10.1} {:>6.2} {pack_ms:>8.2}",
                flops / f32_s * 1e-9,
                flops / bf16_s * 1e-9,
                f32_s / bf16_s
            );
        }
    }
}
