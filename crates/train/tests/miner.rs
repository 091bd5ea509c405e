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
use tandem_train::mine_cache::{HitCache, FILE};
use tandem_train::miner::{
    mine, mine_many, mine_with, MineRequest, MineSettings, MineStats, Pipeline,
};

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
            examples: (0..8).map(|i| (micro * 8 + i) as u32).collect(),
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
    assert_eq!(pipelined(&index, &bank, &reqs, None, 2, 3), want);
}

/// The negatives of `reqs` mined by a pipelined worker (channels of
/// `depth`, drawing from `cache` if any) kept `ahead` requests ahead, none
/// by the fallback.
fn pipelined(
    index: &(dyn Index + Sync),
    bank: &Bank,
    reqs: &[MineRequest],
    cache: Option<&HitCache>,
    depth: usize,
    ahead: usize,
) -> Vec<Vec<Vec<u32>>> {
    std::thread::scope(|s| {
        let mut p = Pipeline::start(
            s,
            index,
            bank,
            settings(),
            cache,
            depth,
            Duration::from_secs(30),
        );
        let mut stats = MineStats::default();
        let mut out = Vec::new();
        let mut it = reqs.iter().cloned();
        for r in it.by_ref().take(ahead) {
            p.submit(r).unwrap();
        }
        for _ in 0..reqs.len() {
            out.push(
                p.next(index, bank, &settings(), cache, &mut stats)
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
        let mut p = Pipeline::start(
            s,
            &slow,
            &bank,
            settings(),
            None,
            2,
            Duration::from_millis(50),
        );
        let mut stats = MineStats::default();
        // One request ahead, so that submitting never waits on the slow
        // first search.
        p.submit(reqs[0].clone()).unwrap();
        let mut got = Vec::new();
        for i in 0..reqs.len() {
            got.push(
                p.next(&flat, &bank, &settings(), None, &mut stats)
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
            let mut p = Pipeline::start(
                s,
                index,
                &bank,
                settings(),
                None,
                2,
                Duration::from_secs(30),
            );
            p.submit(requests(1).remove(0)).unwrap();
            p.next(index, &bank, &settings(), None, &mut MineStats::default())
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
    assert_eq!(pipelined(&index, &bank, &reqs, None, 8, 8), want);
}

/// An index that counts the queries it is asked.
struct Counting<'a> {
    inner: &'a Flat<'a>,
    queries: AtomicUsize,
}

impl Index for Counting<'_> {
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
        self.queries.fetch_add(q.len() / D, Ordering::SeqCst);
        self.inner.search(q, k, ex)
    }
}

const EXAMPLES: usize = 48;

/// The requests of a run over `EXAMPLES` fixed examples (a positive and a
/// context each), batches of 8 in a new order every epoch, the band of
/// epoch `e` `bands[e]`, groups of 4 micro-batches.
fn epoch_requests(bands: &[Band]) -> Vec<MineRequest> {
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let examples: Vec<(u32, Vec<u32>)> = (0..EXAMPLES)
        .map(|_| {
            let p = rng.gen_range(0..ROWS as u32);
            (p, (0..3).map(|_| rng.gen_range(0..ROWS as u32)).collect())
        })
        .collect();
    let per_epoch = EXAMPLES / 8;
    let mut reqs = Vec::new();
    for (epoch, band) in bands.iter().enumerate() {
        let mut order: Vec<u32> = (0..EXAMPLES as u32).collect();
        rand::seq::SliceRandom::shuffle(&mut order[..], &mut rng);
        for m in 0..per_epoch {
            let micro = (epoch * per_epoch + m) as u64;
            let ex: Vec<u32> = order[m * 8..(m + 1) * 8].to_vec();
            reqs.push(MineRequest {
                micro,
                band: *band,
                positives: ex.iter().map(|&e| examples[e as usize].0).collect(),
                contexts: ex.iter().map(|&e| examples[e as usize].1.clone()).collect(),
                examples: ex,
                queries: None,
                flush: micro % 4 == 3 || micro + 1 == (bands.len() * per_epoch) as u64,
            });
        }
    }
    reqs
}

/// Positive-anchored mining from a run-wide cache gives, epoch after
/// epoch, the negatives of mining every micro-batch again, searching each
/// example once (synchronously, pipelined, and from the cache's file).
#[test]
fn cached_mining_equals_mining_again_every_epoch() {
    let bank = bank();
    let flat = Flat::new(&bank, Metric::Cosine).unwrap();
    let wide = Band {
        count: 6,
        lo: 0.3,
        hi: 0.85,
    };
    let narrow = Band {
        count: 3,
        lo: 0.45,
        hi: 0.7,
    };
    let bands = [wide, wide, narrow, wide];
    let reqs = epoch_requests(&bands);
    let want: Vec<_> = reqs
        .iter()
        .map(|r| mine(&flat, &bank, &settings(), r).unwrap().negatives)
        .collect();
    // Epochs 1 and 3 see the examples of epoch 0 again, in other batches.
    assert_ne!(want[..6], want[6..12]);
    let dir = tempfile::tempdir().unwrap();
    let s = settings();
    let fresh = || {
        HitCache::new(
            dir.path(),
            EXAMPLES,
            vec![wide, narrow],
            s.pool,
            s.dup_threshold,
        )
    };

    let counting = Counting {
        inner: &flat,
        queries: AtomicUsize::new(0),
    };
    let cache = fresh();
    let got: Vec<_> = reqs
        .iter()
        .map(|r| {
            mine_with(&counting, &bank, &s, std::slice::from_ref(r), Some(&cache)).unwrap()[0]
                .negatives
                .clone()
        })
        .collect();
    assert_eq!(got, want, "sync mining from the cache");
    assert_eq!(counting.queries.load(Ordering::SeqCst), EXAMPLES);
    assert_eq!(cache.size().0, EXAMPLES);

    let counting = Counting {
        inner: &flat,
        queries: AtomicUsize::new(0),
    };
    let cache = fresh();
    assert_eq!(
        pipelined(&counting, &bank, &reqs, Some(&cache), 8, 8),
        want,
        "pipelined mining from the cache, groups of 4"
    );
    assert_eq!(counting.queries.load(Ordering::SeqCst), EXAMPLES);

    // A resumed run takes the cache back from its file and searches nothing.
    let mark = cache.mark().unwrap();
    let loaded = HitCache::load(
        dir.path(),
        &mark,
        EXAMPLES,
        vec![wide, narrow],
        s.pool,
        s.dup_threshold,
    )
    .unwrap();
    let counting = Counting {
        inner: &flat,
        queries: AtomicUsize::new(0),
    };
    let got: Vec<_> = mine_with(&counting, &bank, &s, &reqs, Some(&loaded))
        .unwrap()
        .into_iter()
        .map(|m| m.negatives)
        .collect();
    assert_eq!(got, want, "mining from the reloaded cache");
    assert_eq!(counting.queries.load(Ordering::SeqCst), 0);

    // Query-anchored requests and bands the cache lacks are searched as before.
    let mut other = reqs[..4].to_vec();
    other[0].band.hi = 0.8;
    other[1].queries = Some(vec![0.5; 8 * D]);
    let want: Vec<_> = other
        .iter()
        .map(|r| mine(&flat, &bank, &s, r).unwrap().negatives)
        .collect();
    let got: Vec<_> = mine_with(&counting, &bank, &s, &other, Some(&loaded))
        .unwrap()
        .into_iter()
        .map(|m| m.negatives)
        .collect();
    assert_eq!(got, want);
    assert_eq!(counting.queries.load(Ordering::SeqCst), 16);
}

/// The cache file holds exactly what a checkpoint marked: rows mined past
/// the mark are cut off when the run resumes, a fresh run starts the file
/// over, and a damaged file or one mined with other settings is refused.
#[test]
fn the_cache_file_holds_what_the_checkpoint_marked() {
    let dir = tempfile::tempdir().unwrap();
    let band = Band {
        count: 2,
        lo: 0.1,
        hi: 0.9,
    };
    let new = || HitCache::new(dir.path(), 10, vec![band], 50, 0.95);
    let load = |mark| HitCache::load(dir.path(), mark, 10, vec![band], 50, 0.95);
    let c = new();
    c.insert(3, &[vec![7, 1, 9]]);
    c.insert(5, &[vec![]]);
    let mark = c.mark().unwrap();
    c.insert(8, &[vec![2]]);
    c.insert(3, &[vec![4]]); // already cached: unchanged
    let later = c.mark().unwrap();
    assert!(later.bytes > mark.bytes);
    drop(c);

    let back = load(&mark).unwrap();
    assert_eq!(
        back.lookup(&[3, 5, 8], 0),
        vec![Some(vec![7, 1, 9]), Some(vec![]), None]
    );
    assert_eq!(back.size().0, 2);
    // Mining on from the mark replaces what lay past it.
    back.insert(9, &[vec![6, 6]]);
    let again = back.mark().unwrap();
    assert_eq!(
        std::fs::metadata(dir.path().join(FILE)).unwrap().len(),
        again.bytes
    );
    assert!(load(&later).is_err(), "the old tail is gone");
    let back = load(&again).unwrap();
    assert_eq!(
        back.lookup(&[3, 8, 9], 0),
        vec![Some(vec![7, 1, 9]), None, Some(vec![6, 6])]
    );

    // Other settings, a flipped byte, a short file.
    let other = HitCache::load(dir.path(), &again, 10, vec![band], 60, 0.95).unwrap_err();
    assert!(other.contains("other settings"), "{other}");
    let path = dir.path().join(FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    assert!(load(&again).unwrap_err().contains("SHA-256"));
    bytes.truncate(8);
    std::fs::write(&path, &bytes).unwrap();
    assert!(load(&again).unwrap_err().contains("holds 8 bytes"));

    // A fresh run's first mark starts the file over.
    let c = new();
    let mark = c.mark().unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), mark.bytes);
    assert_eq!(load(&mark).unwrap().size().0, 0);
}
