//! `Flat` is exact whatever its scan: on adversarial banks (near-ties,
//! duplicate rows, huge and tiny norms, float16, odd shapes, exclusions, both
//! metrics) the int8 scan (`Precision::Auto` where the CPU has AVX512-VNNI)
//! and the float32 scan (`Precision::F32`) return the same hits, bit for bit,
//! and those are the top-k of the canonical float32 score computed here by
//! brute force, which agrees with a float64 brute force up to float32 rounding.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tandem_bank::{f16, Bank};
use tandem_search::{Flat, Hit, Index, Metric, Precision};

/// The canonical float32 dot product: 16 running sums, then a fixed tree.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        acc[i % 16] += x * y;
    }
    for w in [8, 4, 2, 1] {
        for l in 0..w {
            acc[l] += acc[l + w];
        }
    }
    acc[0]
}

fn norm32(v: &[f32]) -> f32 {
    v.iter().map(|v| v * v).sum::<f32>().sqrt()
}

/// Every (row, canonical score) of one query, then the top k (score, lower row).
fn brute_force(
    x: &[f32],
    q: &[f32],
    dim: usize,
    metric: Metric,
    k: usize,
    excl: &[u32],
) -> Vec<Hit> {
    let q: Vec<f32> = match metric {
        Metric::Cosine if norm32(q) > 0.0 => q.iter().map(|v| v / norm32(q)).collect(),
        _ => q.to_vec(),
    };
    let mut all: Vec<Hit> = x
        .chunks_exact(dim)
        .enumerate()
        .filter(|(r, _)| !excl.contains(&(*r as u32)))
        .map(|(r, row)| {
            let s = dot(&q, row);
            let s = match metric {
                Metric::InnerProduct => s,
                Metric::Cosine => {
                    let n = norm32(row);
                    s * if n > 0.0 { 1.0 / n } else { 0.0 }
                }
            };
            (r as u32, s)
        })
        .collect();
    all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    all.truncate(k);
    all
}

/// The float64 scores of `hits` against the float64 top-k, rank by rank,
/// within float32 rounding of the terms.
fn check_f64(hits: &[Hit], x: &[f32], q: &[f32], dim: usize, metric: Metric, excl: &[u32]) {
    let f = |v: &[f32]| v.iter().map(|&a| a as f64).collect::<Vec<_>>();
    let qn = norm32(q) as f64;
    let q = f(q);
    // Cosine divides by the float32 norms, as Flat defines it (a norm that
    // underflows to 0 scores 0).
    let score = |row: &[f64], rn: f64| {
        let d: f64 = row.iter().zip(&q).map(|(a, b)| a * b).sum();
        let abs: f64 = row.iter().zip(&q).map(|(a, b)| (a * b).abs()).sum();
        match metric {
            Metric::InnerProduct => (d, abs),
            Metric::Cosine if rn == 0.0 || qn == 0.0 => (0.0, 0.0),
            Metric::Cosine => (d / (rn * qn), abs / (rn * qn)),
        }
    };
    let mut all: Vec<(u32, f64, f64)> = x
        .chunks_exact(dim)
        .enumerate()
        .filter(|(r, _)| !excl.contains(&(*r as u32)))
        .map(|(r, row)| {
            let (s, a) = score(&f(row), norm32(row) as f64);
            (r as u32, s, a)
        })
        .collect();
    let by_row: Vec<(f64, f64)> = {
        let mut v = vec![(0.0, 0.0); x.len() / dim];
        for &(r, s, a) in &all {
            v[r as usize] = (s, a);
        }
        v
    };
    all.sort_by(|a, b| b.1.total_cmp(&a.1));
    let u = (dim + 4) as f64 * f32::EPSILON as f64;
    for (i, &(row, s)) in hits.iter().enumerate() {
        let (truth, mag) = by_row[row as usize];
        let tol = 2.0 * u * mag.max(all[i].2) + 1e-38;
        assert!((s as f64 - truth).abs() <= tol, "row {row}: {s} vs {truth}");
        assert!(
            (truth - all[i].1).abs() <= tol,
            "rank {i}: row {row} ({truth}) vs float64 rank {i} row {} ({})",
            all[i].0,
            all[i].1
        );
    }
}

/// Searches with both precisions and checks everything in the module docs.
/// Returns the kernel `Precision::Auto` chose.
fn check(
    x: &[f32],
    dim: usize,
    half: bool,
    queries: &[f32],
    k: usize,
    exclude: &[Vec<u32>],
) -> &'static str {
    let bank = if half {
        Bank::from_f16(x.iter().map(|&v| f16::from_f32(v)).collect(), dim)
    } else {
        Bank::from_f32(x.to_vec(), dim)
    };
    let x = bank.to_f32_vec();
    for metric in [Metric::InnerProduct, Metric::Cosine] {
        let fast = Flat::with_precision(&bank, metric, Precision::Auto).unwrap();
        let slow = Flat::with_precision(&bank, metric, Precision::F32).unwrap();
        assert_eq!(slow.kernel(), "f32");
        let a = fast.search(queries, k, exclude).unwrap();
        let b = slow.search(queries, k, exclude).unwrap();
        for (i, (a, b)) in a.iter().zip(&b).enumerate() {
            let q = &queries[i * dim..(i + 1) * dim];
            let excl = exclude.get(i).map_or(&[][..], |v| v.as_slice());
            let want = brute_force(&x, q, dim, metric, k, excl);
            let bits = |h: &[Hit]| h.iter().map(|h| (h.0, h.1.to_bits())).collect::<Vec<_>>();
            assert_eq!(
                bits(a),
                bits(&want),
                "{} scan, {metric}, query {i}",
                fast.kernel()
            );
            assert_eq!(bits(b), bits(&want), "f32 scan, {metric}, query {i}");
            check_f64(a, &x, q, dim, metric, excl);
        }
    }
    Flat::new(&bank, Metric::InnerProduct).unwrap().kernel()
}

/// The kernel `Precision::Auto` must choose for a bank in the int8 scan's range.
fn fast() -> &'static str {
    if int8_here() {
        "int8-vnni"
    } else {
        "f32"
    }
}

fn gaussian(n: usize, rng: &mut ChaCha8Rng) -> Vec<f32> {
    (0..n)
        .map(|_| rng.gen_range(-1.0f32..1.0) + rng.gen_range(-1.0f32..1.0))
        .collect()
}

/// Whether this machine runs the int8 scan (it must on a CPU with AVX512-VNNI).
fn int8_here() -> bool {
    let bank = Bank::from_f32(vec![1.0; 64], 16);
    let kernel = Flat::new(&bank, Metric::InnerProduct).unwrap().kernel();
    #[cfg(target_arch = "x86_64")]
    assert_eq!(
        kernel == "int8-vnni",
        is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vnni")
    );
    kernel == "int8-vnni"
}

#[test]
fn random_banks_of_odd_shapes_several_blocks() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    // 1,100 rows: three bank blocks, a partial group; dim 13: padded words;
    // 300 queries: two query blocks and a partial group of 8.
    let (rows, dim, nq) = (1_100, 13, 300);
    let x = gaussian(rows * dim, &mut rng);
    let q = gaussian(nq * dim, &mut rng);
    let exclude: Vec<Vec<u32>> = (0..nq)
        .map(|i| (0..i % 5).map(|_| rng.gen_range(0..rows as u32)).collect())
        .collect();
    for k in [1, 10, 100] {
        assert_eq!(check(&x, dim, false, &q, k, &exclude), fast());
    }
    assert_eq!(check(&x, dim, true, &q, 50, &[]), fast());
    check(&x, dim, false, &q[..dim], rows, &[]);
}

#[test]
fn near_ties_and_duplicate_rows() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let dim = 64;
    let base = gaussian(dim, &mut rng);
    let mut x = Vec::new();
    for r in 0..700 {
        match r % 4 {
            // exact duplicates of the base row
            0 => x.extend_from_slice(&base),
            // the base row one ulp off in one coordinate
            1 => x.extend(
                base.iter()
                    .enumerate()
                    .map(|(i, &v)| if i == r % dim { v.next_up() } else { v }),
            ),
            // a scaled copy: scores within a few ulps of the base's
            2 => x.extend(base.iter().map(|&v| v * (1.0 + f32::EPSILON))),
            _ => x.extend(gaussian(dim, &mut rng)),
        }
    }
    let mut q = base.clone();
    q.extend(gaussian(3 * dim, &mut rng));
    for k in [1, 5, 200, 500] {
        let excl = [vec![0, 4], vec![], vec![1], vec![]];
        assert_eq!(check(&x, dim, false, &q, k, &excl), fast());
    }
    check(&x, dim, true, &q, 300, &[]);
}

#[test]
fn huge_and_tiny_norms() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let dim = 48;
    // Row norms from 1e-9 to 1e9: every int8 scale stays in range.
    let mut x = gaussian(600 * dim, &mut rng);
    for (r, row) in x.chunks_exact_mut(dim).enumerate() {
        let s = 10f32.powi((r % 19) as i32 - 9);
        row.iter_mut().for_each(|v| *v *= s);
    }
    // A row near the smallest int8 scale (2^-40 * 127 ~ 1.2e-10) and a zero row.
    x[..dim].iter_mut().for_each(|v| *v *= 0.3);
    x[dim..2 * dim].iter_mut().for_each(|v| *v = 0.0);
    let mut q = gaussian(4 * dim, &mut rng);
    q[dim..2 * dim].iter_mut().for_each(|v| *v *= 1e6);
    q[2 * dim..3 * dim].iter_mut().for_each(|v| *v *= 1e-6);
    q[3 * dim..].iter_mut().for_each(|v| *v = 0.0);
    for k in [1, 30, 600] {
        assert_eq!(check(&x, dim, false, &q, k, &[]), fast());
    }
    // Rows 1e-30: bank scales out of int8 range, scanned in float32.
    let tiny: Vec<f32> = x.iter().map(|v| v * 1e-25).collect();
    let bank = Bank::from_f32(tiny.clone(), dim);
    assert_eq!(
        Flat::new(&bank, Metric::InnerProduct).unwrap().kernel(),
        "f32"
    );
    check(&tiny, dim, false, &q, 20, &[]);
    // Queries out of range: that request is scanned in float32.
    let big: Vec<f32> = q.iter().map(|v| v * 1e20).collect();
    check(&x, dim, false, &big, 20, &[]);
    // float16: values up to 65504 and subnormals.
    let h: Vec<f32> = x.iter().map(|v| v.clamp(-6e4, 6e4)).collect();
    check(&h, dim, true, &q, 40, &[]);
}

#[test]
fn k_and_exclusions_at_the_limits() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let (rows, dim) = (40, 8);
    let x = gaussian(rows * dim, &mut rng);
    let q = gaussian(2 * dim, &mut rng);
    let bank = Bank::from_f32(x.clone(), dim);
    let flat = Flat::new(&bank, Metric::InnerProduct).unwrap();
    let e = flat.search(&q, rows + 1, &[]).unwrap_err().to_string();
    assert!(e.contains("--k 40"), "{e}");
    // k = rows with most rows excluded: what is left, in order.
    let all: Vec<u32> = (0..rows as u32).filter(|r| r % 3 != 0).collect();
    check(&x, dim, false, &q, rows, &[all.clone(), vec![]]);
    let hits = flat.search(&q, rows, &[all, vec![]]).unwrap();
    assert_eq!(hits[0].len(), rows.div_ceil(3));
}

#[test]
fn the_fast_scan_runs_where_the_cpu_has_it_and_thread_counts_agree() {
    let fast = int8_here();
    eprintln!("int8 scan on this machine: {fast}");
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let (rows, dim, nq) = (3_000, 96, 40);
    let x = gaussian(rows * dim, &mut rng);
    let q = gaussian(nq * dim, &mut rng);
    let bank = Bank::from_f32(x, dim);
    let run = |threads: usize, precision: Precision| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let flat = Flat::with_precision(&bank, Metric::Cosine, precision).unwrap();
            flat.search(&q, 25, &[]).unwrap()
        })
    };
    let one = run(1, Precision::Auto);
    for threads in [2, 3, 7] {
        assert_eq!(run(threads, Precision::Auto), one);
        assert_eq!(run(threads, Precision::F32), one);
    }
}

#[test]
fn thousands_of_rows_tied_at_the_k_th_score() {
    // 20,000 copies of one row among a few others: every copy ties at the
    // k-th score, so the scans rescore them as they go (their candidates
    // would otherwise hold every copy); the lowest rows win.
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let dim = 16;
    let base = gaussian(dim, &mut rng);
    let mut x: Vec<f32> = gaussian(7 * dim, &mut rng);
    for _ in 0..20_000 {
        x.extend_from_slice(&base);
    }
    x.extend(gaussian(5 * dim, &mut rng));
    let mut q = base.clone();
    q.extend(gaussian(dim, &mut rng));
    // One thread: two runs of ~10,000 rows each, past the candidates' cap.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let kernel = pool.install(|| check(&x, dim, false, &q, 12, &[vec![8, 9], vec![]]));
    assert_eq!(kernel, fast());
    // Without exclusions the int8 scan takes the rows that reach the floor
    // sixteen at a time (with exclusions, one by one): the same hits.
    let kernel = pool.install(|| check(&x, dim, false, &q[..dim], 12, &[]));
    assert_eq!(kernel, fast());
}
