//! Significance tests: the Student t CDF and the regularized incomplete beta
//! against scipy 1.17.1, the paired t-test against `scipy.stats.ttest_rel`,
//! and the randomization test against an exact enumeration of all sign flips.

use tandem_eval::stats::{
    ln_gamma, paired_t_test, randomization_test, regularized_incomplete_beta, student_t_cdf,
};
use tandem_eval::{compare, Measure, Qrels, Run, SigTest};

// Expected values printed by:
//
// from scipy import special, stats
// for t, df in [(0.0, 1), (1.0, 1), (-2.5, 3), (2.0, 10), (0.7, 42), (-4.2, 7), (12.0, 5), (3.3, 200)]:
//     print(f"({t!r}, {df}.0, {float(stats.t.cdf(t, df))!r}),")
// for a, b, x in [(0.5, 0.5, 0.3), (2.0, 3.0, 0.4), (10.0, 0.5, 0.9), (21.0, 0.5, 0.05), (1.5, 7.25, 0.999), (50.0, 50.0, 0.5)]:
//     print(f"({a!r}, {b!r}, {x!r}, {float(special.betainc(a, b, x))!r}),")
// a = [0.5, 0.2, 0.9, 0.0, 1.0, 0.3, 0.45, 0.8]
// b = [0.4, 0.25, 0.7, 0.1, 0.9, 0.3, 0.2, 0.6]
// print(repr(float(stats.ttest_rel(a, b).pvalue)))
const T_CDF: &[(f64, f64, f64)] = &[
    (0.0, 1.0, 0.5),
    (1.0, 1.0, 0.75),
    (-2.5, 3.0, 0.04385332350403278),
    (2.0, 10.0, 0.9633059826146299),
    (0.7, 42.0, 0.7561066260252778),
    (-4.2, 7.0, 0.0020177799626099795),
    (12.0, 5.0, 0.9999645525374142),
    (3.3, 200.0, 0.9994276386674356),
];
const BETA: &[(f64, f64, f64, f64)] = &[
    (0.5, 0.5, 0.3, 0.36901011956554536),
    (2.0, 3.0, 0.4, 0.5247999999999999),
    (10.0, 0.5, 0.9, 0.15164090963470994),
    (21.0, 0.5, 0.05, 5.980270606236215e-29),
    (1.5, 7.25, 0.999, 1.0),
    (50.0, 50.0, 0.5, 0.5000000000000007),
];
const A: [f64; 8] = [0.5, 0.2, 0.9, 0.0, 1.0, 0.3, 0.45, 0.8];
const B: [f64; 8] = [0.4, 0.25, 0.7, 0.1, 0.9, 0.3, 0.2, 0.6];
const TTEST_REL_P: f64 = 0.0933354058675722;

fn assert_rel(got: f64, want: f64, what: &str) {
    let err = (got - want).abs() / want.abs().max(1e-300);
    assert!(
        err < 1e-10 || (got - want).abs() < 1e-14,
        "{what}: got {got}, scipy {want}"
    );
}

#[test]
fn student_t_cdf_matches_scipy() {
    for &(t, df, want) in T_CDF {
        assert_rel(student_t_cdf(t, df), want, &format!("t.cdf({t}, {df})"));
    }
}

#[test]
fn incomplete_beta_matches_scipy() {
    for &(a, b, x, want) in BETA {
        assert_rel(
            regularized_incomplete_beta(a, b, x),
            want,
            &format!("betainc({a}, {b}, {x})"),
        );
    }
    assert_eq!(regularized_incomplete_beta(2.0, 3.0, 0.0), 0.0);
    assert_eq!(regularized_incomplete_beta(2.0, 3.0, 1.0), 1.0);
}

#[test]
fn ln_gamma_of_integers_and_halves() {
    let mut fact = 1.0f64;
    for n in 1..30 {
        assert_rel(ln_gamma(n as f64), fact.ln(), &format!("ln_gamma({n})"));
        fact *= n as f64;
    }
    assert_rel(
        ln_gamma(0.5),
        std::f64::consts::PI.sqrt().ln(),
        "ln_gamma(0.5)",
    );
    assert_rel(ln_gamma(0.1), 2.252712651734206, "ln_gamma(0.1)");
}

#[test]
fn paired_t_test_matches_scipy() {
    assert_rel(paired_t_test(&A, &B).unwrap(), TTEST_REL_P, "ttest_rel");
    assert_rel(
        paired_t_test(&B, &A).unwrap(),
        TTEST_REL_P,
        "ttest_rel swapped",
    );
    assert_eq!(paired_t_test(&A, &A).unwrap(), 1.0);
    let shifted: Vec<f64> = A.iter().map(|x| x + 0.25).collect();
    // A constant difference (up to rounding) is as significant as it gets.
    assert!(paired_t_test(&shifted, &A).unwrap() < 1e-50);
    assert_eq!(paired_t_test(&[1.0, 0.75], &[0.5, 0.25]).unwrap(), 0.0);
    let e = paired_t_test(&A[..1], &B[..1]).unwrap_err().to_string();
    assert!(e.contains("at least 2 queries"), "{e}");
}

#[test]
fn randomization_test_approaches_exact_enumeration() {
    // Exact two-sided sign-flip p-value over all 2^8 patterns.
    let d: Vec<f64> = A.iter().zip(&B).map(|(a, b)| a - b).collect();
    let observed: f64 = d.iter().sum::<f64>().abs();
    let extreme = (0u32..256)
        .filter(|mask| {
            let s: f64 = d
                .iter()
                .enumerate()
                .map(|(i, x)| if mask >> i & 1 == 1 { *x } else { -x })
                .sum();
            s.abs() >= observed * (1.0 - 1e-12)
        })
        .count();
    let exact = extreme as f64 / 256.0;
    let p = randomization_test(&A, &B, 100_000, 7);
    assert!(
        (p - exact).abs() < 0.005,
        "randomization {p} vs exact {exact}"
    );
    // Seeded: the same seed gives the same p; identical runs give p = 1.
    assert_eq!(
        randomization_test(&A, &B, 1000, 42),
        randomization_test(&A, &B, 1000, 42)
    );
    assert_eq!(randomization_test(&A, &A, 1000, 42), 1.0);
}

#[test]
fn compare_uses_queries_of_either_run() {
    let mut qrels = Qrels::new();
    for q in ["q1", "q2", "q3", "q4"] {
        qrels.insert(q, "rel", 1);
    }
    let (mut a, mut b) = (Run::new(), Run::new());
    a.insert("q1", "rel", 1.0).unwrap();
    a.insert("q2", "x", 1.0).unwrap();
    a.insert("q2", "rel", 0.5).unwrap();
    b.insert("q1", "rel", 1.0).unwrap();
    b.insert("q3", "rel", 1.0).unwrap();
    b.insert("q9", "rel", 1.0).unwrap();
    let ms = [Measure::RecipRank(None)];
    let c = compare(&qrels, &a, &b, &ms, SigTest::TTest).unwrap();
    // q4 is in neither run, q9 not in the qrels.
    assert_eq!(c.queries, ["q1", "q2", "q3"]);
    assert_eq!(c.mean_a, [0.5]);
    assert_eq!(c.mean_b, [2.0 / 3.0]);
    let json = c.to_json();
    assert_eq!(json["test"], "t-test");
    assert_eq!(json["measures"][0]["measure"], "recip_rank");
    let r = compare(
        &qrels,
        &a,
        &b,
        &ms,
        SigTest::Randomization {
            trials: 500,
            seed: 1,
        },
    )
    .unwrap();
    assert_eq!(r.mean_a, c.mean_a);
    assert!(r.p_values[0] > 0.0 && r.p_values[0] <= 1.0);
}
