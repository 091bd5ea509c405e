//! The miner: negatives lie in the band, never placeholders; sync and
//! pipelined mining agree bit for bit; a slow worker is replaced by a
//! synchronous search with the same answer; a failing one surfaces.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tandem_bank::Bank;
use tandem_search::{Flat, Hit, Index, Metric, SearchError};
use tandem_train::curriculum::Band;
use tandem_train::miner::{mine, mine_many, MineRequest, MineSettings, MineStats, Pipeline};

const D: usize = 16;
const ROWS: usize = 3000;

fn bank() -> Bank {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut v: Vec<f32> = (0..ROWS * D).map(|_| rng.gen_range(-1.0..1.0)).collect();
    for r in v.chunks_exact_mut(D) {
        let n = r.iter().map(|x| x * x).sum::<f32>().sqrt();
        r.iter_mut().for_each(|x| *x /= n);
    }
    Bank::from_f32(v, D)
}

fn settings() -> MineSettings {
    MineSettings {
        pool: 200,
        dup_threshold: 0.9,
        seed: 3,
    }
}

fn requests(n: u64) -> Vec<MineRequest> {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    (0..n)
        .map(|micro| MineRequest {
            micro,
            band: Band {
                count: 6,
                lo: 0.3,
                hi: 0.85,
            },
            positives: (0..8).map(|_| rng.gen_range(0..ROWS as u32)).collect(),
            contexts: (0..8)
                .map(|_| (0..3).map(|_| rng.gen_range(0..ROWS as u32)).collect())
                .collect(),
            queries: None,
            flush: true,
        })
        .collect()
}

fn cos(bank: &Bank, a: u32, b: u32) -> f32 {
    let (x, y) = (bank.row_f32(a as usize), bank.row_f32(b as usize));
    x.iter().zip(y.iter()).map(|(p, q)| p * q).sum()
}

#[test]
fn negatives_lie_in_the_band_and_respect_exclusions() {
    let bank = bank();
    let index = Flat::new(&bank, Metric::Cosine).unwrap();
    let mut filled = 0;
    for req in requests(5) {
        let m = mine(&index, &bank, &settings(), &req).unwrap();
        assert_eq!(m.negatives.len(), 8);
        for (i, negs) in m.negatives.iter().enumerate() {
            assert!(negs.len() <= 6);
            filled += negs.len();
            let p = req.positives[i];
            for &n in negs {
                let c = cos(&bank, p, n);
                assert!(
                    (0.3 - 1e-5..=0.85 + 1e-5).contains(&c),
                    "cosine {c} outside the band"
                );
                assert!(c < 0.9, "near-duplicate {n} of {p}");
                assert_ne!(n, p, "the positive as its own negative");
                assert!(!req.contexts[i].contains(&n), "a context row as a negative");
            }
            let mut sorted = negs.clone();
            sorted.dedup();
            assert_eq!(sorted.len(), negs.len(), "duplicate negatives");
        }
        // The same request gives the same negatives.
        assert_eq!(
            m.negatives,
            mine(&index, &bank, &settings(), &req).unwrap().negatives
        );
    }
    assert!(filled > 5 * 8 * 3, "the band was nearly empty: {filled}");
}

#[test]
fn pipelined_mining_equals_sync_mining() {
    let bank = bank();
    let index = Flat::new(&bank, Metric::Cosine).unwrap();
    let reqs = requests(12);
    let want: Vec<_> = reqs
        .iter()
        .map(|r| mine(&index, &bank, &settings(), r).unwrap().negatives)
        .collect();
    assert_eq!(pipelined(&index, &bank, &reqs, 2, 3), want);
}

/// The negatives of `reqs` mined by a pipelined worker (channels of
/// `depth`) kept `ahead` requests ahead, none by the fallback.
fn pipelined(
    index: &Flat<'_>,
    bank: &Bank,
    reqs: &[MineRequest],
    depth: usize,
    ahead: usize,
) -> Vec<Vec<Vec<u32>>> {
    std::thread::scope(|s| {
        let mut p = Pipeline::start(s, index, bank, settings(), depth, Duration::from_secs(30));
        let mut stats = MineStats::default();
        let mut out = Vec::new();
        let mut it = reqs.iter().cloned();
        for r in it.by_ref().take(ahead) {
            p.submit(r).unwrap();
        }
        for _ in 0..reqs.len() {
            out.push(
                p.next(index, bank, &settings(), &mut stats)
                    .unwrap()
                    .negatives,
            );
            if let Some(r) = it.next() {
                p.submit(r).unwrap();
            }
        }
        assert_eq!(stats.fallbacks, 0);
        out
    })
}

/// An index whose first search is slow.
struct SlowFirst<'a> {
    inner: Flat<'a>,
    calls: AtomicUsize,
}

impl Index for SlowFirst<'_> {
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn dim(&self) -> usize {
        self.inner.dim()
    }
    fn metric(&self) -> Metric {
        self.inner.metric()
    }
    fn search(&self, q: &[f32], k: usize, ex: &[Vec<u32>]) -> Result<Vec<Vec<Hit>>, SearchError> {
        if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            std::thread::sleep(Duration::from_millis(400));
        }
        self.inner.search(q, k, ex)
    }
}

#[test]
fn a_slow_worker_is_replaced_by_the_same_synchronous_search() {
    let bank = bank();
    let flat = Flat::new(&bank, Metric::Cosine).unwrap();
    let reqs = requests(4);
    let want: Vec<_> = reqs
        .iter()
        .map(|r| mine(&flat, &bank, &settings(), r).unwrap().negatives)
        .collect();
    let slow = SlowFirst {
        inner: Flat::new(&bank, Metric::Cosine).unwrap(),
        calls: AtomicUsize::new(0),
    };
    let (got, stats) = std::thread::scope(|s| {
        let mut p = Pipeline::start(s, &slow, &bank, settings(), 2, Duration::from_millis(50));
        let mut stats = MineStats::default();
        // One request ahead, so that submitting never waits on the slow
        // first search.
        p.submit(reqs[0].clone()).unwrap();
        let mut got = Vec::new();
        for i in 0..reqs.len() {
            got.push(
                p.next(&flat, &bank, &settings(), &mut stats)
                    .unwrap()
                    .negatives,
            );
            if let Some(r) = reqs.get(i + 1) {
                p.submit(r.clone()).unwrap();
            }
        }
        (got, stats)
    });
    assert!(stats.fallbacks >= 1, "the slow worker was waited for");
    assert_eq!(got, want, "the fallback changed the negatives");
}

/// An index that fails: with an error, or by panicking.
struct Failing {
    panics: bool,
}

impl Index for Failing {
    fn len(&self) -> usize {
        ROWS
    }
    fn dim(&self) -> usize {
        D
    }
    fn metric(&self) -> Metric {
        Metric::Cosine
    }
    fn search(&self, _: &[f32], _: usize, _: &[Vec<u32>]) -> Result<Vec<Vec<Hit>>, SearchError> {
        if self.panics {
            panic!("index exploded")
        }
        Err(SearchError::ZeroK)
    }
}

#[test]
fn a_failing_worker_surfaces_its_error_instead_of_placeholders() {
    let bank = bank();
    for (panics, want) in [(false, "k must be at least 1"), (true, "index exploded")] {
        let index = &Failing { panics };
        let err = std::thread::scope(|s| {
            let mut p = Pipeline::start(s, index, &bank, settings(), 2, Duration::from_secs(30));
            p.submit(requests(1).remove(0)).unwrap();
            p.next(index, &bank, &settings(), &mut MineStats::default())
                .unwrap_err()
                .to_string()
        });
        assert!(err.contains("mining failed") && err.contains(want), "{err}");
    }
}

/// Micro-batches mined together in one search (groups cut by `flush`, as
/// the pipelined worker mines them; the positive or the query as the
/// anchor) get the negatives each gets alone.
#[test]
fn grouped_mining_equals_mining_each_alone() {
    let bank = bank();
    let index = Flat::new(&bank, Metric::Cosine).unwrap();
    let mut reqs = requests(10);
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for r in reqs.iter_mut().skip(5) {
        // the band against a query vector for half of them
        r.queries = Some((0..8 * D).map(|_| rng.gen_range(-1.0..1.0)).collect());
    }
    let want: Vec<_> = reqs
        .iter()
        .map(|r| mine(&index, &bank, &settings(), r).unwrap().negatives)
        .collect();
    let all = mine_many(&index, &bank, &settings(), &reqs).unwrap();
    assert_eq!(
        all.iter().map(|m| m.negatives.clone()).collect::<Vec<_>>(),
        want
    );
    assert_eq!(
        all.iter().map(|m| m.micro).collect::<Vec<_>>(),
        (0..10).collect::<Vec<_>>()
    );
    // the pipelined worker, groups of 4, 4 and 2, kept 8 ahead
    for (i, r) in reqs.iter_mut().enumerate() {
        r.flush = i % 4 == 3 || i == 9;
    }
    assert_eq!(pipelined(&index, &bank, &reqs, 8, 8), want);
}
