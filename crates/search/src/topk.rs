//! A bounded "best k" collector tuned for streams where most candidates lose.

#[cfg(doc)]
use crate::hit_order;
use crate::Hit;

/// A hit as one integer whose ascending order is [`hit_order`]: the score's
/// bits mapped to an integer in `f32::total_cmp` order and inverted (higher
/// scores first), then the row. Selecting and sorting integers is much
/// cheaper than calling a comparator.
#[inline(always)]
pub(crate) fn key((row, score): Hit) -> u64 {
    let b = score.to_bits();
    let ascending = if b >> 31 == 1 { !b } else { b | 1 << 31 };
    ((!ascending as u64) << 32) | row as u64
}

/// The hit of a [`key`].
#[inline(always)]
pub(crate) fn unkey(key: u64) -> Hit {
    let ascending = !((key >> 32) as u32);
    let b = if ascending >> 31 == 1 {
        ascending & !(1 << 31)
    } else {
        !ascending
    };
    (key as u32, f32::from_bits(b))
}

/// The best `k` of `hits`, best first ([`hit_order`]).
pub(crate) fn best(hits: impl IntoIterator<Item = Hit>, k: usize) -> Vec<Hit> {
    best_keys(hits.into_iter().map(key).collect(), k)
}

fn best_keys(mut keys: Vec<u64>, k: usize) -> Vec<Hit> {
    if keys.len() > k && k > 0 {
        keys.select_nth_unstable(k - 1);
    }
    keys.truncate(k);
    keys.sort_unstable();
    keys.into_iter().map(unkey).collect()
}

/// Keeps the best `k` hits of a stream, best = higher score, then lower row.
///
/// Candidates go into a buffer of up to `2k`; when it fills, the best `k` are
/// selected and the k-th score becomes the admission threshold, so most later
/// candidates are rejected by a single compare ([`TopK::threshold`]). The
/// first `k` set a threshold as soon as they are in (the lowest of them), so
/// the stream's start is not all admitted. Hits are held as [`key`]s.
/// Rows must be offered in increasing order, so that a candidate whose score
/// equals the threshold is never better than what is kept.
#[derive(Debug, Clone)]
pub(crate) struct TopK {
    k: usize,
    buf: Vec<u64>,
    threshold: f32,
}

impl TopK {
    pub(crate) fn new(k: usize) -> TopK {
        TopK {
            k,
            buf: Vec::with_capacity(2 * k),
            threshold: f32::NEG_INFINITY,
        }
    }

    /// Scores at or below this cannot enter.
    #[inline(always)]
    pub(crate) fn threshold(&self) -> f32 {
        self.threshold
    }

    /// Offer a candidate that already beat [`TopK::threshold`].
    #[inline]
    pub(crate) fn push(&mut self, row: u32, score: f32) {
        self.buf.push(key((row, score)));
        if self.buf.len() == 2 * self.k {
            self.shrink();
        } else if self.buf.len() == self.k && self.threshold == f32::NEG_INFINITY {
            self.threshold = self.lowest();
        }
    }

    fn lowest(&self) -> f32 {
        self.buf
            .iter()
            .map(|&h| unkey(h).1)
            .fold(f32::INFINITY, f32::min)
    }

    fn shrink(&mut self) {
        self.buf.select_nth_unstable(self.k - 1);
        self.buf.truncate(self.k);
        self.threshold = self.lowest();
    }

    /// The k-th best score of everything `parts` kept (`None` with fewer than k).
    pub(crate) fn kth(parts: impl IntoIterator<Item = TopK>, k: usize) -> Option<f32> {
        let mut all: Vec<u64> = parts.into_iter().flat_map(|t| t.buf).collect();
        (all.len() >= k && k > 0).then(|| unkey(*all.select_nth_unstable(k - 1).1).1)
    }

    /// The best `k` (or fewer) hits, best first.
    pub(crate) fn into_sorted(self) -> Vec<Hit> {
        best_keys(self.buf, self.k)
    }
}

/// The best `k` of several partial result lists, best first.
pub(crate) fn merge(parts: impl IntoIterator<Item = Vec<Hit>>, k: usize) -> Vec<Hit> {
    best(parts.into_iter().flatten(), k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_best_k_with_ties_to_the_lower_row() {
        let scores = [0.5f32, 0.9, 0.1, 0.9, 0.7, 0.5, 0.3, 0.9, 0.2, 0.6];
        let mut t = TopK::new(3);
        for (r, &s) in scores.iter().enumerate() {
            if s > t.threshold() {
                t.push(r as u32, s);
            }
        }
        assert_eq!(t.into_sorted(), vec![(1, 0.9), (3, 0.9), (7, 0.9)]);
        // The first k set the threshold (the lowest of them) before 2k are in.
        let mut t = TopK::new(3);
        for (r, &s) in scores.iter().enumerate().take(4) {
            if s > t.threshold() {
                t.push(r as u32, s);
            }
        }
        assert_eq!(t.threshold(), 0.1);
        assert_eq!(TopK::kth([t.clone()], 3), Some(0.5));
        assert_eq!(TopK::kth([t.clone(), t], 4), Some(0.9));
        assert_eq!(TopK::kth([TopK::new(3)], 3), None);
        let mut t = TopK::new(4);
        for (r, &s) in scores.iter().enumerate() {
            if s > t.threshold() {
                t.push(r as u32, s);
            }
        }
        assert_eq!(
            t.into_sorted(),
            vec![(1, 0.9), (3, 0.9), (7, 0.9), (4, 0.7)]
        );
    }

    #[test]
    fn keys_sort_as_hit_order() {
        let scores = [
            f32::NEG_INFINITY,
            -1e30,
            -1.0,
            -f32::MIN_POSITIVE / 2.0,
            -0.0,
            0.0,
            1e-40,
            0.5,
            1.0,
            f32::MAX,
            f32::INFINITY,
            f32::NAN,
            -f32::NAN,
        ];
        let hits: Vec<Hit> = scores
            .iter()
            .enumerate()
            .flat_map(|(i, &s)| [(i as u32, s), (7 - i as u32 % 3, s)])
            .collect();
        for a in &hits {
            assert_eq!(unkey(key(*a)).1.to_bits(), a.1.to_bits());
            for b in &hits {
                assert_eq!(key(*a).cmp(&key(*b)), crate::hit_order(a, b), "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn merge_orders_across_parts() {
        let m = merge([vec![(5, 1.0), (6, 0.5)], vec![(2, 1.0), (1, 0.2)]], 3);
        assert_eq!(m, vec![(2, 1.0), (5, 1.0), (6, 0.5)]);
    }
}
