//! Comparing two runs: per-measure means over a shared query set and a paired,
//! two-sided significance test (randomization / sign-flip, or Student's t).

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde_json::{json, Value};

use crate::{evaluate, EvalError, EvalOptions, Measure, Qrels, Run};

/// The paired two-sided test used by [`compare`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigTest {
    /// Randomization (sign-flip) test: `trials` random sign assignments of the
    /// per-query differences from a ChaCha20 RNG seeded with `seed`;
    /// p = (1 + #{|mean| >= observed}) / (1 + trials).
    Randomization {
        /// Number of random sign flips.
        trials: usize,
        /// RNG seed (the same seed gives the same p-values).
        seed: u64,
    },
    /// Paired Student's t-test with n - 1 degrees of freedom.
    TTest,
}

/// Two runs compared measure by measure on the same queries.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// The measures, in the order of the vectors below.
    pub measures: Vec<Measure>,
    /// The test that produced `p_values`.
    pub test: SigTest,
    /// The queries compared: qrels queries answered by either run.
    pub queries: Vec<String>,
    /// Mean of run A per measure.
    pub mean_a: Vec<f64>,
    /// Mean of run B per measure.
    pub mean_b: Vec<f64>,
    /// Two-sided p-value of the paired test per measure.
    pub p_values: Vec<f64>,
}

impl Comparison {
    /// Significance level used to flag differences.
    pub const ALPHA: f64 = 0.05;

    /// The comparison as JSON, one object per measure.
    pub fn to_json(&self) -> Value {
        let (test, trials, seed) = match self.test {
            SigTest::Randomization { trials, seed } => ("randomization", Some(trials), Some(seed)),
            SigTest::TTest => ("t-test", None, None),
        };
        let rows: Vec<Value> = (0..self.measures.len())
            .map(|i| {
                json!({
                    "measure": self.measures[i].to_string(),
                    "mean_a": self.mean_a[i],
                    "mean_b": self.mean_b[i],
                    "diff": self.mean_b[i] - self.mean_a[i],
                    "p_value": self.p_values[i],
                    "significant": self.p_values[i] < Self::ALPHA,
                })
            })
            .collect();
        json!({ "test": test, "trials": trials, "seed": seed, "queries": self.queries.len(), "measures": rows })
    }
}

/// Compare `run_a` and `run_b` on the qrels queries present in either run (a
/// query missing from one run scores 0 there), with a paired test per measure.
pub fn compare(
    qrels: &Qrels,
    run_a: &Run,
    run_b: &Run,
    measures: &[Measure],
    test: SigTest,
) -> Result<Comparison, EvalError> {
    let all = EvalOptions { complete: true };
    let (a, b) = (
        evaluate(qrels, run_a, measures, &all)?,
        evaluate(qrels, run_b, measures, &all)?,
    );
    let queries: Vec<String> = a
        .per_query
        .keys()
        .filter(|q| run_a.scores(q).is_some() || run_b.scores(q).is_some())
        .cloned()
        .collect();
    if queries.is_empty() {
        return Err(EvalError::NoOverlap {
            qrels_queries: qrels.num_queries(),
            run_queries: run_a.num_queries() + run_b.num_queries(),
        });
    }
    let column = |r: &crate::Report, i: usize| -> Vec<f64> {
        queries.iter().map(|q| r.per_query[q][i]).collect()
    };
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (mut mean_a, mut mean_b, mut p_values) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..measures.len() {
        let (xa, xb) = (column(&a, i), column(&b, i));
        mean_a.push(mean(&xa));
        mean_b.push(mean(&xb));
        p_values.push(match test {
            SigTest::Randomization { trials, seed } => randomization_test(&xa, &xb, trials, seed),
            SigTest::TTest => paired_t_test(&xa, &xb)?,
        });
    }
    Ok(Comparison {
        measures: measures.to_vec(),
        test,
        queries,
        mean_a,
        mean_b,
        p_values,
    })
}

/// Two-sided paired randomization (sign-flip) test on `a[i] - b[i]`.
/// Returns (1 + #{trials with |sum of flipped differences| >= observed}) / (1 + trials).
pub fn randomization_test(a: &[f64], b: &[f64], trials: usize, seed: u64) -> f64 {
    let diffs: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    // Relative slack so that sign patterns equal to the observed one up to
    // rounding count as "at least as extreme".
    let observed = diffs.iter().sum::<f64>().abs() * (1.0 - 1e-12);
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let bar = (trials.saturating_mul(diffs.len()) >= 1 << 28)
        .then(|| tandem_io::progress(trials as u64, "randomize"));
    let mut extreme = 0usize;
    for t in 0..trials {
        let (mut bits, mut left, mut sum) = (0u64, 0u32, 0.0f64);
        for &d in &diffs {
            if left == 0 {
                bits = rng.next_u64();
                left = 64;
            }
            sum += if bits & 1 == 1 { d } else { -d };
            bits >>= 1;
            left -= 1;
        }
        extreme += usize::from(sum.abs() >= observed);
        if let Some(bar) = bar.as_ref().filter(|_| t % 1024 == 0) {
            bar.set_position(t as u64);
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    (extreme + 1) as f64 / (trials + 1) as f64
}

/// Two-sided paired Student's t-test on `a[i] - b[i]` (n - 1 degrees of
/// freedom). Identical inputs give p = 1; a constant non-zero difference gives p = 0.
pub fn paired_t_test(a: &[f64], b: &[f64]) -> Result<f64, EvalError> {
    let n = a.len().min(b.len());
    if n < 2 {
        return Err(EvalError::Stats(format!(
            "the paired t-test needs at least 2 queries, got {n}; use --test randomization or evaluate more queries"
        )));
    }
    let diffs: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let nf = n as f64;
    let mean = diffs.iter().sum::<f64>() / nf;
    let var = diffs.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (nf - 1.0);
    if var == 0.0 {
        return Ok(if mean == 0.0 { 1.0 } else { 0.0 });
    }
    let t = mean / (var / nf).sqrt();
    Ok(student_t_two_sided(t, nf - 1.0))
}

/// P(|T| >= |t|) for Student's t with `df` degrees of freedom.
pub fn student_t_two_sided(t: f64, df: f64) -> f64 {
    regularized_incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
}

/// The cumulative distribution function of Student's t with `df` degrees of freedom.
pub fn student_t_cdf(t: f64, df: f64) -> f64 {
    let tail = 0.5 * student_t_two_sided(t, df);
    if t > 0.0 {
        1.0 - tail
    } else {
        tail
    }
}

/// The regularized incomplete beta function I_x(a, b) for a, b > 0 and x in
/// [0, 1], by the continued fraction (modified Lentz) of Numerical Recipes.
pub fn regularized_incomplete_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let front =
        (ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln()).exp();
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_continued_fraction(a, b, x) / a
    } else {
        1.0 - front * beta_continued_fraction(b, a, 1.0 - x) / b
    }
}

fn beta_continued_fraction(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    const EPS: f64 = 1e-16;
    let guard = |v: f64| if v.abs() < TINY { TINY } else { v };
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 / guard(1.0 - qab * x / qap);
    let mut h = d;
    for m in 1..=1000 {
        let m = f64::from(m);
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 / guard(1.0 + aa * d);
        c = guard(1.0 + aa / c);
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 / guard(1.0 + aa * d);
        c = guard(1.0 + aa / c);
        let delta = d * c;
        h *= delta;
        if (delta - 1.0).abs() < EPS {
            break;
        }
    }
    h
}

/// ln Γ(x) for x > 0 (Lanczos approximation, g = 7, relative error ~1e-15).
pub fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const COEF: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x) Γ(1 - x) = π / sin(πx).
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut sum = COEF[0];
    for (i, &c) in COEF.iter().enumerate().skip(1) {
        sum += c / (x + i as f64);
    }
    let t = x + G + 0.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}
