//! Inverted dropout with stateless masks: whether an element is kept is a
//! pure function of (the text's seed, layer, site, token position, feature
//! index), a counter-based hash compared against the keep probability.
//!
//! ```text
//! key(seed, layer, site, pos) = mix64(mix64(seed) ^ (layer << 48 | site << 32 | pos) * GOLDEN)
//! bits(key, i)                = mix32(mix32(i ^ lo32(key)) ^ hi32(key))
//! kept                        = bits >= round(p * 2^32);  kept values scaled by 1 / (1 - p)
//! ```
//!
//! `mix64` is SplitMix64's finaliser, `mix32` the `lowbias32` finaliser of
//! Wellons' hash prospector; both are bijections, so within one text no two
//! (layer, site, position) share a key and no two features of a row share
//! their bits. Nothing is stored and nothing depends on where the text sits
//! in a batch or how far it is padded: the backward pass recomputes the
//! masks of its forward pass, a second forward pass with the same seeds
//! (GradCache's) draws the same masks, and so does a resumed run whose
//! seeds come from the step.

use super::for_rows;
use crate::simd::avx512_dispatch;

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's output function.
#[inline(always)]
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `lowbias32` (bias about 0.17 of a perfect 32-bit hash's).
#[inline(always)]
fn mix32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x21F0_AAAD);
    x ^= x >> 15;
    x = x.wrapping_mul(0x735A_2D97);
    x ^ (x >> 15)
}

/// A seed derived from `seed` for the item `index` of a stream (texts of a
/// batch, say): distinct indices give unrelated seeds.
pub fn split_seed(seed: u64, index: u64) -> u64 {
    mix64(mix64(seed ^ GOLDEN).wrapping_add(index.wrapping_mul(GOLDEN)))
}

/// Where in an encoder a mask applies (with the layer, see [`mask_key`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Site {
    /// The embeddings' output.
    Embeddings,
    /// The attention probabilities of a head.
    Probs {
        /// The head.
        head: usize,
    },
    /// The attention block's output projection.
    AttnOut,
    /// The feed-forward's hidden activations (T5, ModernBERT).
    FfnInner,
    /// The feed-forward's output projection.
    FfnOut,
    /// The output of the final norm (T5).
    Final,
}

impl Site {
    fn code(self) -> u64 {
        match self {
            Site::Embeddings => 0,
            Site::AttnOut => 1,
            Site::FfnInner => 2,
            Site::FfnOut => 3,
            Site::Final => 4,
            Site::Probs { head } => 8 + head as u64,
        }
    }
}

/// The key of the mask row of a text (`seed`) at `site` of `layer`, token
/// position `pos`; distinct (layer, site, position) of one seed give
/// distinct keys.
pub fn mask_key(seed: u64, layer: usize, site: Site, pos: usize) -> u64 {
    let (layer, code, pos) = (layer as u64, site.code(), pos as u64);
    debug_assert!(layer < 1 << 16 && code < 1 << 16 && pos < 1 << 32);
    mix64(mix64(seed) ^ (layer << 48 | code << 32 | pos).wrapping_mul(GOLDEN))
}

/// The 32 random bits of element `feature` of the mask row `key`.
#[inline(always)]
pub fn mask_bits(key: u64, feature: u32) -> u32 {
    mix32(mix32(feature ^ key as u32) ^ (key >> 32) as u32)
}

/// A dropout probability as the masks use it; `Rate::OFF` drops nothing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Elements whose bits are below this are dropped: `round(p * 2^32)`.
    threshold: u32,
    /// `1 / (1 - p)`.
    scale: f32,
}

impl Rate {
    /// No dropout.
    pub const OFF: Rate = Rate {
        threshold: 0,
        scale: 1.0,
    };

    /// Dropout with probability `p`.
    ///
    /// # Panics
    ///
    /// Unless `0 <= p < 1`.
    pub fn new(p: f32) -> Rate {
        assert!(
            (0.0..1.0).contains(&p),
            "a dropout probability is in [0, 1), not {p}"
        );
        let threshold = (f64::from(p) * 4_294_967_296.0)
            .round()
            .min(u32::MAX as f64) as u32;
        if threshold == 0 {
            return Rate::OFF;
        }
        Rate {
            threshold,
            scale: 1.0 / (1.0 - p),
        }
    }

    /// Whether this drops nothing.
    pub fn is_off(self) -> bool {
        self.threshold == 0
    }

    /// Whether the element with `bits` ([`mask_bits`]) is kept.
    pub fn keeps(self, bits: u32) -> bool {
        bits >= self.threshold
    }
}

avx512_dispatch!(
    /// `row[i] *= keep_i / (1 - p)` with the mask row `key`.
    fn mask_row(row: &mut [f32], key: u64, threshold: u32, scale: f32) {
        for (i, v) in row.iter_mut().enumerate() {
            let keep = mask_bits(key, i as u32) >= threshold;
            *v = if keep { *v * scale } else { 0.0 };
        }
    }
);

/// The dropout of one training pass over a right-padded batch: sequence
/// `b` (of `lens[b]` real tokens, padded to `len`) draws its masks from
/// `seeds[b]`.
#[derive(Debug, Clone, Copy)]
pub struct Stream<'a> {
    seeds: &'a [u64],
    lens: &'a [usize],
    len: usize,
}

impl<'a> Stream<'a> {
    /// The stream of a batch.
    ///
    /// # Panics
    ///
    /// Unless there is one seed per sequence.
    pub fn new(seeds: &'a [u64], lens: &'a [usize], len: usize) -> Stream<'a> {
        assert_eq!(seeds.len(), lens.len(), "one dropout seed per sequence");
        Stream { seeds, lens, len }
    }

    /// The masks of `layer` at `rate`; `None` when the rate drops nothing.
    pub fn at(self, layer: usize, rate: Rate) -> Option<Masks<'a>> {
        (!rate.is_off()).then_some(Masks {
            stream: self,
            layer,
            rate,
        })
    }
}

/// The masks of one layer at one rate ([`Stream::at`]).
#[derive(Debug, Clone, Copy)]
pub struct Masks<'a> {
    stream: Stream<'a>,
    layer: usize,
    rate: Rate,
}

impl Masks<'_> {
    /// Applies the masks of `site` to `x` (`[B * len, width]`, rows of
    /// padding left as they are). Dropout is its own backward pass: the
    /// same call turns the gradient of the output into that of the input.
    pub fn apply(&self, x: &mut [f32], site: Site) {
        let Stream { seeds, lens, len } = self.stream;
        if x.is_empty() {
            return;
        }
        let width = x.len() / (seeds.len() * len);
        for_rows(x, width, |r, row| {
            let (b, pos) = (r / len, r % len);
            if pos < lens[b] {
                self.row(row, b, pos, site);
            }
        });
    }

    /// Applies the mask row of `site` at position `pos` of sequence `b` to
    /// `row`.
    pub fn row(&self, row: &mut [f32], b: usize, pos: usize, site: Site) {
        let key = mask_key(self.stream.seeds[b], self.layer, site, pos);
        mask_row(row, key, self.rate.threshold, self.rate.scale);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dropped_fraction_is_the_rate() {
        for p in [0.1f32, 0.5] {
            let rate = Rate::new(p);
            let (rows, width) = (2000usize, 384usize);
            let mut dropped = 0usize;
            let mut per_feature = vec![0usize; width];
            for r in 0..rows {
                let key = mask_key(r as u64 / 7, r % 3, Site::FfnOut, r % 7);
                for (i, n) in per_feature.iter_mut().enumerate() {
                    if !rate.keeps(mask_bits(key, i as u32)) {
                        dropped += 1;
                        *n += 1;
                    }
                }
            }
            let total = (rows * width) as f64;
            let frac = dropped as f64 / total;
            // 768k draws: the standard error is under 6e-4
            let sd = (f64::from(p) * (1.0 - f64::from(p)) / total).sqrt();
            assert!(
                (frac - f64::from(p)).abs() < 5.0 * sd,
                "rate {p}: dropped {frac}"
            );
            // no feature is favoured (2000 draws each)
            let sd1 = (f64::from(p) * (1.0 - f64::from(p)) / rows as f64).sqrt();
            for (i, &n) in per_feature.iter().enumerate() {
                let f = n as f64 / rows as f64;
                assert!((f - f64::from(p)).abs() < 6.0 * sd1, "feature {i}: {f}");
            }
        }
    }

    #[test]
    fn masks_of_different_coordinates_are_independent() {
        let rate = Rate::new(0.5);
        let width = 4096;
        let mask = |key: u64| -> Vec<bool> {
            (0..width as u32)
                .map(|i| rate.keeps(mask_bits(key, i)))
                .collect()
        };
        let base = mask(mask_key(1, 2, Site::AttnOut, 3));
        for other in [
            mask_key(2, 2, Site::AttnOut, 3),
            mask_key(1, 3, Site::AttnOut, 3),
            mask_key(1, 2, Site::FfnOut, 3),
            mask_key(1, 2, Site::Probs { head: 0 }, 3),
            mask_key(1, 2, Site::AttnOut, 4),
        ] {
            let m = mask(other);
            // independent halves agree on about half the elements
            let agree = base.iter().zip(&m).filter(|(a, b)| a == b).count() as f64;
            assert!(
                (agree / width as f64 - 0.5).abs() < 0.05,
                "agree {agree} of {width}"
            );
        }
        assert_eq!(base, mask(mask_key(1, 2, Site::AttnOut, 3)));
    }

    #[test]
    fn kept_values_are_scaled_and_rate_zero_drops_nothing() {
        assert!(Rate::new(0.0).is_off());
        assert_eq!(Rate::new(0.0), Rate::OFF);
        let rate = Rate::new(0.25);
        let lens = [3, 1];
        let seeds = [5, 6];
        let masks = Stream::new(&seeds, &lens, 3).at(1, rate).unwrap();
        assert!(Stream::new(&seeds, &lens, 3).at(1, Rate::OFF).is_none());
        let x: Vec<f32> = (0..6 * 40).map(|i| 1.0 + i as f32).collect();
        let mut y = x.clone();
        masks.apply(&mut y, Site::FfnOut);
        for (r, (a, b)) in x.chunks(40).zip(y.chunks(40)).enumerate() {
            let (s, pos) = (r / 3, r % 3);
            if pos >= lens[s] {
                assert_eq!(a, b, "padding rows are left alone");
                continue;
            }
            let key = mask_key(seeds[s], 1, Site::FfnOut, pos);
            for (i, (u, v)) in a.iter().zip(b).enumerate() {
                let want = if rate.keeps(mask_bits(key, i as u32)) {
                    u / 0.75
                } else {
                    0.0
                };
                assert!((v - want).abs() <= 1e-6 * want.abs(), "row {r} {i}");
            }
        }
        // the vectorised row is the scalar definition
        let mut row = x[..40].to_vec();
        masks.row(&mut row, 0, 0, Site::FfnOut);
        assert_eq!(row, y[..40]);
    }

    #[test]
    #[should_panic(expected = "[0, 1)")]
    fn a_rate_of_one_is_refused() {
        Rate::new(1.0);
    }

    #[test]
    fn split_seeds_differ() {
        let s: Vec<u64> = (0..1000).map(|i| split_seed(42, i)).collect();
        let mut u = s.clone();
        u.sort_unstable();
        u.dedup();
        assert_eq!(u.len(), s.len());
        assert_ne!(split_seed(42, 0), split_seed(43, 0));
    }
}
