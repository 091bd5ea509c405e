//! A seeded synthetic next-vector world in which the next vector depends on
//! the whole context, not only on the last vector.
//!
//! The generative process (also in `docs/dataset-format.md`):
//!
//! 1. Document lengths are drawn uniformly from `min_len..=max_len` until they
//!    fill `rows` bank rows (the last document is cut to fit). The first
//!    `docs` documents are listed as sequences (default: those that end within
//!    the first 90% of the rows); the rows of the other documents are
//!    distractors: in the bank, in no sequence.
//! 2. `K = max(1, documents / 64)` topic centres `c_k` are drawn uniformly on
//!    the unit sphere, and one signed permutation `A` (a fixed rotation,
//!    `A h = s ⊙ h[π]`).
//! 3. Each document `d` picks a centre `k` uniformly and gets the topic
//!    `t = unit(c_k + β·u)` (`u` uniform on the sphere, `β = 0.5`).
//! 4. Its hidden state starts with two independent unit vectors `h_0, h_1`
//!    and then follows the second-order recurrence
//!    `h_i = unit(A h_{i-2} + η·g_i)` (`g_i ~ N(0, I/D)`, `η = 0.3`).
//! 5. It emits `v_i = unit(τ·t + h_i + σ·e_i)` (`e_i` uniform on the sphere,
//!    `τ = 0.8`, `σ` = `noise`), stored as float16.
//!
//! What a raw context vector shares with the next one is the document topic
//! (a random `h` is nearly orthogonal to everything else), so the mean of the
//! context, which averages the states and the noise away, is a better query
//! than the last vector alone; a learned model can beat both, because
//! `A v_{i-2}` predicts the next state, which neither baseline uses.
//!
//! Every document draws from its own ChaCha8 stream (`seed`, stream `d + 1`),
//! so the output is byte-identical for a seed whatever the thread count.

use std::path::Path;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use rayon::prelude::*;
use serde_json::json;
use tandem_bank::{f16, Vectors};
use tandem_io::Overwrite;

use crate::format::{
    check_output_dir, write_dataset, BankSource, DatasetParts, Manifest, Provenance, Sequence,
    Split,
};
use crate::DataError;

/// Weight τ of the document topic in every emitted vector.
pub const TOPIC_WEIGHT: f64 = 0.8;
/// Spread β of document topics around their centre.
pub const TOPIC_SPREAD: f64 = 0.5;
/// Innovation η of the hidden state at each step.
pub const STATE_NOISE: f64 = 0.3;
/// Documents per topic centre.
pub const DOCS_PER_TOPIC: usize = 64;
/// Fraction of the rows listed as sequences when `docs` is not given.
pub const LISTED_FRACTION: f64 = 0.9;

/// Named configurations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// 20,000 x 64: seconds; for demos and tests.
    Small,
    /// 771,000 x 768 (about 1.2 GB as float16): the project-scale bank.
    Project,
}

impl Preset {
    /// The configuration of this preset (seed 42, noise 0.1, documents of 4-16 rows).
    pub fn config(self) -> SynthConfig {
        let (rows, dim) = match self {
            Preset::Small => (20_000, 64),
            Preset::Project => (771_000, 768),
        };
        SynthConfig {
            rows,
            dim,
            docs: None,
            min_len: 4,
            max_len: 16,
            noise: 0.1,
            seed: 42,
            context: crate::DEFAULT_CONTEXT,
        }
    }
}

/// Parameters of the synthetic world.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthConfig {
    /// Bank rows (sequence rows plus distractors).
    pub rows: usize,
    /// Vector dimension.
    pub dim: usize,
    /// Documents listed as sequences; `None`: those within the first 90% of rows.
    pub docs: Option<usize>,
    /// Shortest document (rows), at least 2.
    pub min_len: usize,
    /// Longest document (rows).
    pub max_len: usize,
    /// Emission noise σ (relative to the unit state).
    pub noise: f64,
    /// Random seed.
    pub seed: u64,
    /// Context length L recorded in the dataset.
    pub context: usize,
}

impl SynthConfig {
    /// The command line that regenerates this world (without `--out`).
    pub fn command(&self) -> String {
        let docs = self
            .docs
            .map(|d| format!(" --docs {d}"))
            .unwrap_or_default();
        format!(
            "tandem synth --rows {} --dim {}{docs} --min-len {} --max-len {} --noise {} --seed {} --context {}",
            self.rows, self.dim, self.min_len, self.max_len, self.noise, self.seed, self.context
        )
    }

    fn check(&self) -> Result<(), String> {
        if self.rows == 0 || self.rows > u32::MAX as usize {
            return Err(format!(
                "--rows {} is out of range; use 1 to {}",
                self.rows,
                u32::MAX
            ));
        }
        if self.dim < 2 {
            return Err(format!("--dim {} is too small; use 2 or more", self.dim));
        }
        if self.min_len < 2 || self.min_len > self.max_len {
            return Err(format!(
                "--min-len {} / --max-len {}: need 2 <= min-len <= max-len",
                self.min_len, self.max_len
            ));
        }
        if !self.noise.is_finite() || self.noise < 0.0 {
            return Err(format!(
                "--noise {} must be a finite number >= 0",
                self.noise
            ));
        }
        if self.context == 0 {
            return Err("--context 0: use 1 or more".to_string());
        }
        Ok(())
    }
}

/// A generated world, in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct World {
    /// `(rows, dim)` bank, row-major.
    pub bank: Vec<f16>,
    /// Dimension.
    pub dim: usize,
    /// The listed documents.
    pub sequences: Vec<Sequence>,
    /// One id per bank row: `d000012:3` (row 3 of listed document 12) or
    /// `x000950:0` (a distractor document's row).
    pub ids: Vec<String>,
    /// The rotation `A` of the state recurrence, for checking a learned
    /// model against the process that generated the data.
    pub rotation: Rotation,
}

fn unit(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

fn gaussian(rng: &mut ChaCha8Rng, out: &mut [f32]) {
    out.iter_mut().for_each(|x| *x = rng.sample(StandardNormal));
}

fn random_unit(rng: &mut ChaCha8Rng, out: &mut [f32]) {
    gaussian(rng, out);
    unit(out);
}

/// The fixed signed permutation `A h = s ⊙ h[π]` of a world.
#[derive(Debug, Clone, PartialEq)]
pub struct Rotation {
    /// π: output coordinate j reads input coordinate `perm[j]`.
    pub perm: Vec<usize>,
    /// s: the sign applied to output coordinate j (+1 or -1).
    pub sign: Vec<f32>,
}

impl Rotation {
    /// `A h`, coordinate `j`.
    pub fn at(&self, h: &[f32], j: usize) -> f32 {
        self.sign[j] * h[self.perm[j]]
    }
}

/// Fill `rows` (len = n * dim) with the emitted vectors of one document.
fn emit_document(cfg: &SynthConfig, doc: usize, centres: &[f32], rot: &Rotation, out: &mut [f16]) {
    let dim = cfg.dim;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    rng.set_stream(doc as u64 + 1);
    let k = rng.gen_range(0..centres.len() / dim);
    let (spread, weight, noise) = (TOPIC_SPREAD as f32, TOPIC_WEIGHT as f32, cfg.noise as f32);
    let mut topic = vec![0f32; dim];
    random_unit(&mut rng, &mut topic);
    for (t, c) in topic.iter_mut().zip(&centres[k * dim..(k + 1) * dim]) {
        *t = c + spread * *t;
    }
    unit(&mut topic);
    let n = out.len() / dim;
    let mut states: Vec<Vec<f32>> = Vec::with_capacity(n);
    let mut g = vec![0f32; dim];
    let scale = STATE_NOISE as f32 / (dim as f32).sqrt();
    for i in 0..n {
        let mut h = vec![0f32; dim];
        if i < 2 {
            random_unit(&mut rng, &mut h);
        } else {
            gaussian(&mut rng, &mut g);
            let prev = &states[i - 2];
            for (j, x) in h.iter_mut().enumerate() {
                *x = rot.at(prev, j) + scale * g[j];
            }
            unit(&mut h);
        }
        random_unit(&mut rng, &mut g);
        let mut v: Vec<f32> = (0..dim)
            .map(|j| weight * topic[j] + h[j] + noise * g[j])
            .collect();
        unit(&mut v);
        for (o, x) in out[i * dim..(i + 1) * dim].iter_mut().zip(&v) {
            *o = f16::from_f32(*x);
        }
        states.push(h);
    }
}

/// Generate the world of `cfg` (see the module docs), in parallel.
pub fn generate(cfg: &SynthConfig) -> Result<World, DataError> {
    cfg.check()
        .map_err(|p| DataError::invalid(Path::new("tandem synth"), p, "fix the option"))?;
    let dim = cfg.dim;
    let mut master = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut lengths = Vec::new();
    let mut total = 0;
    while total < cfg.rows {
        let len = master
            .gen_range(cfg.min_len..=cfg.max_len)
            .min(cfg.rows - total);
        lengths.push(len);
        total += len;
    }
    let listed = match cfg.docs {
        Some(d) if d > lengths.len() || d == 0 => {
            return Err(DataError::invalid(
                Path::new("tandem synth"),
                format!(
                    "--docs {d}, but --rows {} holds {} documents of {}-{} rows",
                    cfg.rows,
                    lengths.len(),
                    cfg.min_len,
                    cfg.max_len
                ),
                "raise --rows or pass --docs between 1 and that number",
            ))
        }
        Some(d) => d,
        None => {
            let limit = (cfg.rows as f64 * LISTED_FRACTION) as usize;
            let mut end = 0;
            lengths
                .iter()
                .take_while(|&&l| {
                    end += l;
                    end <= limit
                })
                .count()
        }
    };
    if listed == 0 {
        return Err(DataError::invalid(
            Path::new("tandem synth"),
            format!(
                "--rows {} is too small for one document of {}-{} rows",
                cfg.rows, cfg.min_len, cfg.max_len
            ),
            "raise --rows",
        ));
    }
    let topics = (lengths.len() / DOCS_PER_TOPIC).max(1);
    let mut centres = vec![0f32; topics * dim];
    centres
        .chunks_exact_mut(dim)
        .for_each(|c| random_unit(&mut master, c));
    let mut perm: Vec<usize> = (0..dim).collect();
    perm.shuffle(&mut master);
    let sign = (0..dim)
        .map(|_| if master.gen::<bool>() { 1.0 } else { -1.0 })
        .collect();
    let rot = Rotation { perm, sign };

    let mut bank = vec![f16::ZERO; cfg.rows * dim];
    let mut slices = Vec::with_capacity(lengths.len());
    let mut rest: &mut [f16] = &mut bank;
    for (doc, &len) in lengths.iter().enumerate() {
        let (head, tail) = rest.split_at_mut(len * dim);
        slices.push((doc, head));
        rest = tail;
    }
    let bar = tandem_io::progress(cfg.rows as u64, "generating");
    slices.into_par_iter().for_each(|(doc, out)| {
        emit_document(cfg, doc, &centres, &rot, out);
        bar.inc((out.len() / dim) as u64);
    });
    bar.finish_and_clear();

    let mut sequences = Vec::with_capacity(listed);
    let mut ids = Vec::with_capacity(cfg.rows);
    let mut row = 0u32;
    for (doc, &len) in lengths.iter().enumerate() {
        let tag = if doc < listed { 'd' } else { 'x' };
        ids.extend((0..len).map(|i| format!("{tag}{doc:06}:{i}")));
        if doc < listed {
            sequences.push(Sequence {
                id: format!("d{doc:06}"),
                split: Split::of_ordinal(doc),
                rows: (row..row + len as u32).collect(),
            });
        }
        row += len as u32;
    }
    Ok(World {
        bank,
        dim,
        sequences,
        ids,
        rotation: rot,
    })
}

/// Generate the world of `cfg` and write it as a dataset at `out`.
pub fn write_synth(
    cfg: &SynthConfig,
    out: &Path,
    overwrite: Overwrite,
) -> Result<Manifest, DataError> {
    check_output_dir(out, overwrite)?;
    let world = generate(cfg)?;
    let provenance = Provenance {
        builder: "synth".to_string(),
        command: cfg.command(),
        tool: crate::TOOL.to_string(),
        seed: Some(cfg.seed),
        sources: Vec::new(),
        params: json!({
            "rows": cfg.rows, "dim": cfg.dim, "docs": cfg.docs, "min_len": cfg.min_len, "max_len": cfg.max_len,
            "noise": cfg.noise, "topic_weight": TOPIC_WEIGHT, "topic_spread": TOPIC_SPREAD,
            "state_noise": STATE_NOISE, "docs_per_topic": DOCS_PER_TOPIC, "listed_fraction": LISTED_FRACTION,
            "process": "h_i = unit(A h_{i-2} + state_noise*g_i); v_i = unit(topic_weight*t_doc + h_i + noise*e_i)",
        }),
    };
    let parts = DatasetParts {
        bank: BankSource::Write {
            vectors: Vectors::F16(&world.bank),
            dim: world.dim,
        },
        rows: cfg.rows,
        dim: cfg.dim,
        dtype: "float16",
        ids: Some(&world.ids),
        texts: None,
        sequences: &world.sequences,
        context: cfg.context,
        provenance,
    };
    write_dataset(out, overwrite, parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> SynthConfig {
        SynthConfig {
            rows: 600,
            dim: 16,
            docs: None,
            min_len: 3,
            max_len: 9,
            noise: 0.1,
            seed: 7,
            context: 4,
        }
    }

    #[test]
    fn same_seed_same_world_other_seed_other_world() {
        let a = generate(&tiny()).unwrap();
        let b = generate(&tiny()).unwrap();
        assert_eq!(a, b);
        let c = generate(&SynthConfig { seed: 8, ..tiny() }).unwrap();
        assert_ne!(a.bank, c.bank);
    }

    #[test]
    fn layout_fills_the_bank_and_lists_ninety_percent() {
        let w = generate(&tiny()).unwrap();
        assert_eq!(w.bank.len(), 600 * 16);
        assert_eq!(w.ids.len(), 600);
        let listed: usize = w.sequences.iter().map(|s| s.rows.len()).sum();
        assert!(listed <= 540 && listed > 540 - 9, "{listed}");
        assert!(w.sequences.iter().all(|s| (3..=9).contains(&s.rows.len())));
        assert!(w.ids[599].starts_with('x'));
        for row in w.bank.chunks_exact(16) {
            let n: f32 = row.iter().map(|x| x.to_f32().powi(2)).sum();
            assert!((n - 1.0).abs() < 1e-2, "{n}");
        }
        let w = generate(&SynthConfig {
            docs: Some(3),
            ..tiny()
        })
        .unwrap();
        assert_eq!(w.sequences.len(), 3);
    }

    #[test]
    fn the_state_follows_the_rotation() {
        // v_i shares the topic with every vector of its document (tau^2 / (1 +
        // tau^2) of its direction) and its state with A v_{i-2}, but nothing
        // with A v_{i-1}.
        let dim = 256;
        let cfg = SynthConfig {
            rows: 3000,
            dim,
            noise: 0.0,
            ..tiny()
        };
        let w = generate(&cfg).unwrap();
        let row = |r: u32| -> Vec<f32> {
            w.bank[r as usize * dim..(r as usize + 1) * dim]
                .iter()
                .map(|x| x.to_f32())
                .collect()
        };
        let rotated = |v: &[f32]| -> Vec<f32> { (0..dim).map(|j| w.rotation.at(v, j)).collect() };
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
        let (mut last, mut two_back, mut wrong, mut n) = (0.0, 0.0, 0.0, 0.0);
        for s in &w.sequences {
            for i in 2..s.rows.len() {
                let (a, b, v) = (row(s.rows[i - 2]), row(s.rows[i - 1]), row(s.rows[i]));
                last += dot(&v, &b);
                two_back += dot(&v, &rotated(&a));
                wrong += dot(&v, &rotated(&b));
                n += 1.0;
            }
        }
        let (last, two_back, wrong) = (last / n, two_back / n, wrong / n);
        let tau2 = (TOPIC_WEIGHT * TOPIC_WEIGHT) as f32;
        assert!((last - tau2 / (1.0 + tau2)).abs() < 0.05, "{last}");
        assert!(two_back > 0.5, "{two_back}");
        assert!(wrong.abs() < 0.1, "{wrong}");
    }

    #[test]
    fn bad_configs_are_refused() {
        for cfg in [
            SynthConfig {
                min_len: 1,
                ..tiny()
            },
            SynthConfig {
                min_len: 10,
                ..tiny()
            },
            SynthConfig { dim: 1, ..tiny() },
            SynthConfig {
                noise: f64::NAN,
                ..tiny()
            },
            SynthConfig {
                docs: Some(10_000),
                ..tiny()
            },
            SynthConfig { rows: 2, ..tiny() },
        ] {
            assert!(generate(&cfg).is_err(), "{cfg:?}");
        }
    }
}
