//! A bounded "best k" collector tuned for streams where most candidates lose.

use crate::{hit_order, Hit};

/// Keeps the best `k` hits of a stream, best = higher score, then lower row.
///
/// Candidates go into a buffer of up to `2k`; when it fills, the best `k` are
/// selected and the k-th score becomes the admission threshold, so most later
/// candidates are rejected by a single compare ([`TopK::threshold`]).
/// Rows must be offered in increasing order, so that a candidate whose score
/// equals the threshold is never better than what is kept.
#[derive(Debug, Clone)]
pub(crate) struct TopK {
    k: usize,
    buf: Vec<Hit>,
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
        self.buf.push((row, score));
        if self.buf.len() == 2 * self.k {
            self.shrink();
        }
    }

    fn shrink(&mut self) {
        self.buf.select_nth_unstable_by(self.k - 1, hit_order);
        self.buf.truncate(self.k);
        self.threshold = self.buf.iter().map(|h| h.1).fold(f32::INFINITY, f32::min);
    }

    /// The best `k` (or fewer) hits, best first.
    pub(crate) fn into_sorted(mut self) -> Vec<Hit> {
        self.buf.sort_unstable_by(hit_order);
        self.buf.truncate(self.k);
        self.buf
    }
}

/// The best `k` of several partial result lists, best first.
pub(crate) fn merge(parts: impl IntoIterator<Item = Vec<Hit>>, k: usize) -> Vec<Hit> {
    let mut all: Vec<Hit> = parts.into_iter().flatten().collect();
    all.sort_unstable_by(hit_order);
    all.truncate(k);
    all
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
    fn merge_orders_across_parts() {
        let m = merge([vec![(5, 1.0), (6, 0.5)], vec![(2, 1.0), (1, 0.2)]], 3);
        assert_eq!(m, vec![(2, 1.0), (5, 1.0), (6, 0.5)]);
    }
}
