//! A PLAID-style index over a [`MultiBank`] (Santhanam et al. 2022,
//! "PLAID: An Efficient Engine for Late Interaction Retrieval"), with an
//! exact MaxSim re-ranking of the final candidates.
//!
//! Built from the bank's token vectors:
//!
//! - k-means centroids (spherical: the means are L2-normalised at the end)
//!   over a seeded sample of the tokens, `2^floor(log2(16 sqrt(tokens)))`
//!   of them by default, as PLAID and fast-plaid choose;
//! - each token's nearest centroid (its code) and its residual, the vector
//!   minus that centroid, quantised to 2 or 4 bits a dimension. The bucket
//!   cutoffs and the values they decode to are quantiles of a held-out
//!   sample of residuals, as ColBERTv2's codec takes them, but taken per
//!   dimension (ColBERTv2 uses one set for every dimension);
//! - an inverted list per centroid of the documents holding a token of it.
//!
//! A query (several token vectors) is answered in PLAID's stages: the
//! documents listed under each query token's `ncells` best centroids are the
//! candidates; centroid interaction (MaxSim with every document token
//! replaced by its centroid's score) ranks them, first counting only the
//! centroids some query token scores at least `centroid_threshold` with
//! (keep `ndocs`), then every centroid (keep `ndocs / 2`, where PLAID
//! keeps a quarter); the residuals,
//! decompressed, score those by approximate MaxSim (keep `rerank`); and the
//! bank's own vectors score the last `rerank` documents by exact MaxSim,
//! which orders the `k` returned. Every stage breaks ties by the lower
//! document, and every parallel loop works on fixed blocks reduced in a
//! fixed order, so the index and the results are the same for any thread
//! count.
//!
//! On disk an index is a folder of `.npy` arrays (memory-mapped when
//! opened) and `plaid.json` ([`PlaidSidecar`]), which records the bank it
//! was built over; opening it over another bank is refused.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tandem_bank::{write_array, ArrayRef, BankError, MappedArray, MultiBank};
use tandem_io::Overwrite;

use crate::flat::{bank_name, row_norms, scores};
use crate::hnsw::fnv1a;
use crate::maxsim::{check_queries, score_blocks, score_docs};
use crate::topk::TopK;
use crate::{BankFingerprint, Hit, SearchError};

/// Format tag written into every sidecar.
const FORMAT: &str = "tandem-plaid/1";
/// The sidecar's name inside an index folder.
pub const PLAID_SIDECAR: &str = "plaid.json";
/// Token rows scored against the centroids at once (one parallel task).
const CHUNK: usize = 256;
/// At most this many sampled tokens per centroid train k-means (fast-plaid's
/// `max_points_per_centroid`).
const POINTS_PER_CENTROID: usize = 256;
/// Residuals sampled for the bucket cutoffs and weights.
const HELDOUT: usize = 1 << 16;

/// The arrays of an index folder, by file name.
const CENTROIDS: &str = "centroids.npy";
const CODES: &str = "codes.npy";
const RESIDUALS: &str = "residuals.npy";
const CUTOFFS: &str = "bucket_cutoffs.npy";
const WEIGHTS: &str = "bucket_weights.npy";
const IVF: &str = "ivf.npy";
const IVF_OFFSETS: &str = "ivf_offsets.npy";

/// How an index is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaidParams {
    /// Bits per residual dimension: 2 or 4.
    pub nbits: u32,
    /// Number of centroids; `None`: [`default_centroids`].
    pub centroids: Option<usize>,
    /// Lloyd iterations of k-means.
    pub kmeans_iters: usize,
    /// Seed of the k-means sample, its starting centroids and the held-out
    /// residuals.
    pub seed: u64,
}

impl Default for PlaidParams {
    fn default() -> Self {
        PlaidParams {
            nbits: 4,
            centroids: None,
            kmeans_iters: 4,
            seed: 42,
        }
    }
}

/// PLAID's number of centroids for `tokens` token vectors:
/// `2^floor(log2(16 sqrt(tokens)))`, at most `tokens`, at least 1.
pub fn default_centroids(tokens: usize) -> usize {
    if tokens <= 1 {
        return 1;
    }
    let bits = (16.0 * (tokens as f64).sqrt()).log2().floor() as u32;
    (1usize << bits).min(tokens)
}

/// How a query searches an index.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PlaidSearch {
    /// Centroids probed per query token (PLAID's `ncells`, nprobe).
    pub ncells: usize,
    /// Centroids no query token scores this much with are left out of the
    /// first centroid interaction.
    pub centroid_threshold: f32,
    /// Candidates kept by the pruned centroid interaction; half of them by
    /// the full one.
    pub ndocs: usize,
    /// Candidates the decompressed residuals keep for the exact MaxSim.
    pub rerank: usize,
}

impl PlaidSearch {
    /// The settings for `k` hits: `ncells` 4 / 8 / 16, threshold 0.45 /
    /// 0.4 / 0.35 and `ndocs` 1024 / 4096 / max(8192, 8k) for k up to 10 /
    /// 100 / more, and the exact re-ranking of `3k` documents. They are
    /// wider than ColBERT's (1 / 2 / 4 cells, 256 / 1024 / 4096 documents),
    /// which lose a tenth of the exact top 100 on SciFact with a zero-shot
    /// MiniLM ColBERT; these keep 99% (BENCHMARKS.md).
    pub fn for_k(k: usize) -> PlaidSearch {
        let (ncells, centroid_threshold, ndocs) = if k <= 10 {
            (4, 0.45, 1024)
        } else if k <= 100 {
            (8, 0.4, 4096)
        } else {
            (16, 0.35, (8 * k).max(8192))
        };
        PlaidSearch {
            ncells,
            centroid_threshold,
            ndocs,
            rerank: 3 * k,
        }
    }
}

/// The JSON file in an index folder (`plaid.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlaidSidecar {
    /// Always `"tandem-plaid/1"`.
    pub format: String,
    /// The bank's path when it was built, for people reading the file.
    pub bank: String,
    /// The token matrix's fingerprint.
    pub bank_fingerprint: BankFingerprint,
    /// Documents of the bank.
    pub documents: usize,
    /// FNV-1a 64 of the bank's offsets, as 16 hex digits.
    pub offsets_hash: String,
    pub dim: usize,
    pub nbits: u32,
    pub centroids: usize,
    pub kmeans_iters: usize,
    /// Token vectors the k-means ran on.
    pub kmeans_sample: usize,
    pub seed: u64,
    pub build_seconds: f64,
    /// Size in bytes of every array file, checked when the index is opened.
    pub files: BTreeMap<String, u64>,
}

/// Whether `path` is a PLAID index folder (it holds a `plaid.json`).
pub fn is_plaid_index(path: &Path) -> bool {
    path.join(PLAID_SIDECAR).is_file()
}

/// An element type of the index's arrays.
trait Elem: bytemuck::Pod + Send + Sync {
    fn view(m: &MappedArray) -> Result<&[Self], BankError>;
    fn array(v: &[Self]) -> ArrayRef<'_>;
}

impl Elem for f32 {
    fn view(m: &MappedArray) -> Result<&[f32], BankError> {
        m.f32()
    }
    fn array(v: &[f32]) -> ArrayRef<'_> {
        ArrayRef::F32(v)
    }
}

impl Elem for i32 {
    fn view(m: &MappedArray) -> Result<&[i32], BankError> {
        m.i32()
    }
    fn array(v: &[i32]) -> ArrayRef<'_> {
        ArrayRef::I32(v)
    }
}

impl Elem for i64 {
    fn view(m: &MappedArray) -> Result<&[i64], BankError> {
        m.i64()
    }
    fn array(v: &[i64]) -> ArrayRef<'_> {
        ArrayRef::I64(v)
    }
}

/// An array of the index: built in memory, or mapped from its file.
#[derive(Debug)]
enum Data<T> {
    Owned(Vec<T>),
    Mapped(MappedArray),
}

impl<T: Elem> Data<T> {
    fn get(&self) -> &[T] {
        match self {
            Data::Owned(v) => v,
            Data::Mapped(m) => T::view(m).expect("the dtype was checked when the index was opened"),
        }
    }
}

/// A PLAID index over a multi-vector bank, which it searches with.
#[derive(Debug)]
pub struct Plaid<'a> {
    bank: &'a MultiBank,
    sidecar: PlaidSidecar,
    /// Where it was read from or last saved to.
    path: Option<PathBuf>,
    /// `(centroids, dim)`, L2-normalised.
    centroids: Data<f32>,
    /// `(tokens,)`: each token's centroid.
    codes: Data<i32>,
    /// `(tokens, words)`: each token's residual, `nbits` a dimension, packed
    /// little-endian from the low bits of the first byte, in int32 words.
    residuals: Data<i32>,
    /// `(dim, 2^nbits - 1)`: a residual value falls in the bucket of the
    /// cutoffs below it.
    cutoffs: Data<f32>,
    /// `(dim, 2^nbits)`: the value each bucket decodes to.
    weights: Data<f32>,
    /// The documents of each centroid, ascending, one list after another.
    ivf: Data<i32>,
    /// `(centroids + 1,)`: centroid `c`'s documents are
    /// `ivf[ivf_offsets[c]..ivf_offsets[c + 1]]`.
    ivf_offsets: Data<i64>,
    /// The residual values of every byte of a packed row: for byte `j` and
    /// value `v`, the `8 / nbits` dimensions it holds at
    /// `[(j * 256 + v) * per_byte..][..per_byte]`.
    decode: Vec<f32>,
}

/// [`Plaid::decode`]: the weights of the dimensions of each byte value.
fn decode_table(weights: &[f32], dim: usize, nbits: u32) -> Vec<f32> {
    let (nb, per) = (1usize << nbits, 8 / nbits as usize);
    let bytes = (dim * nbits as usize).div_ceil(8);
    let mut t = vec![0f32; bytes * 256 * per];
    for j in 0..bytes {
        for v in 0..256usize {
            for i in 0..per {
                let d = j * per + i;
                let b = (v >> (i * nbits as usize)) & (nb - 1);
                if d < dim {
                    t[(j * 256 + v) * per + i] = weights[d * nb + b];
                }
            }
        }
    }
    t
}

/// 32-bit words per token of packed residuals.
fn words(dim: usize, nbits: u32) -> usize {
    (dim * nbits as usize).div_ceil(32)
}

/// The FNV-1a 64 of a bank's offsets, as 16 hex digits.
fn offsets_hash(bank: &MultiBank) -> String {
    let mut h = fnv1a::START;
    for &o in bank.offsets() {
        h = fnv1a::eat(h, &(o as u64).to_le_bytes());
    }
    format!("{h:016x}")
}

/// The float32 token rows `rows` of the bank, one after another, into `out`.
fn gather(bank: &MultiBank, rows: &[usize], out: &mut Vec<f32>) {
    let dim = bank.dim();
    out.clear();
    out.resize(rows.len() * dim, 0.0);
    // runs of consecutive rows are converted at once
    let mut i = 0;
    while i < rows.len() {
        let mut j = i + 1;
        while j < rows.len() && rows[j] == rows[j - 1] + 1 {
            j += 1;
        }
        bank.tokens()
            .rows_f32_into(rows[i], rows[j - 1] + 1, &mut out[i * dim..j * dim]);
        i = j;
    }
}

/// The index of the best score of each row of `tile` (`cols` wide), ties to
/// the lower column; `bias` (one per column) is added first when given.
fn argmax_rows(tile: &[f32], cols: usize, bias: Option<&[f32]>) -> Vec<u32> {
    tile.chunks_exact(cols)
        .map(|row| {
            let mut best = (0u32, f32::NEG_INFINITY);
            for (c, &s) in row.iter().enumerate() {
                let s = bias.map_or(s, |b| s + b[c]);
                if s > best.1 {
                    best = (c as u32, s);
                }
            }
            best.0
        })
        .collect()
}

/// The nearest centroid of every row in `rows` (Euclidean when `bias` holds
/// `-|c|^2 / 2` per centroid, inner product without), in parallel over
/// fixed chunks of [`CHUNK`] rows.
fn assign(
    bank: &MultiBank,
    rows: &[usize],
    centroids: &[f32],
    bias: Option<&[f32]>,
    progress: &indicatif::ProgressBar,
) -> Vec<u32> {
    let dim = bank.dim();
    let k = centroids.len() / dim;
    let parts: Vec<Vec<u32>> = rows
        .par_chunks(CHUNK)
        .map_init(
            || (Vec::new(), Vec::new()),
            |(x, tile), chunk| {
                gather(bank, chunk, x);
                tile.clear();
                tile.resize(chunk.len() * k, 0.0);
                scores(x, centroids, dim, tile);
                progress.inc(chunk.len() as u64);
                argmax_rows(tile, k, bias)
            },
        )
        .collect();
    parts.concat()
}

/// The `q` quantile of sorted values, interpolated linearly between the
/// two nearest (torch.quantile's default).
fn quantile(sorted: &[f32], q: f64) -> f32 {
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    let t = (pos - lo as f64) as f32;
    sorted[lo] + (sorted[hi] - sorted[lo]) * t
}

impl<'a> Plaid<'a> {
    /// Builds an index over `bank` (progress bars on stderr). Refused: a bank
    /// without token vectors or holding NaN or Inf, `nbits` other than 2 or
    /// 4, a number of centroids of 0 or above the number of tokens.
    pub fn build(bank: &'a MultiBank, params: &PlaidParams) -> Result<Plaid<'a>, SearchError> {
        let start = Instant::now();
        let tokens = bank.tokens();
        let (n, dim) = (tokens.rows(), bank.dim());
        let name = bank_name(tokens);
        if params.nbits != 2 && params.nbits != 4 {
            return Err(SearchError::index(
                &name,
                format!(
                    "{} bits a residual dimension: PLAID stores residuals in 2 or 4 bits",
                    params.nbits
                ),
                "pass --nbits 2 or --nbits 4",
            ));
        }
        if n == 0 {
            return Err(SearchError::index(
                &name,
                "the bank holds no token vectors",
                "embed a corpus whose documents have text",
            ));
        }
        if bank.docs() > i32::MAX as usize {
            return Err(SearchError::TooManyRows {
                bank: name,
                rows: bank.docs(),
            });
        }
        let k = params.centroids.unwrap_or_else(|| default_centroids(n));
        if k == 0 || k > n {
            return Err(SearchError::index(
                &name,
                format!("{k} centroids for {n} token vectors"),
                format!(
                    "pass --centroids between 1 and {n}, or leave it out for PLAID's default ({})",
                    default_centroids(n)
                ),
            ));
        }
        if params.kmeans_iters == 0 {
            return Err(SearchError::index(
                &name,
                "0 k-means iterations",
                "pass --kmeans-iters 1 or more (4 is PLAID's)",
            ));
        }
        row_norms(tokens)?;
        let mut rng = ChaCha8Rng::seed_from_u64(params.seed);

        // k-means over a sample of the tokens
        let s = n.min(k.saturating_mul(POINTS_PER_CENTROID));
        let sample: Vec<usize> = if s == n {
            (0..n).collect()
        } else {
            let mut v = rand::seq::index::sample(&mut rng, n, s).into_vec();
            v.sort_unstable();
            v
        };
        let mut init: Vec<usize> = rand::seq::index::sample(&mut rng, s, k)
            .into_iter()
            .map(|i| sample[i])
            .collect();
        init.sort_unstable();
        let mut centroids = Vec::new();
        gather(bank, &init, &mut centroids);
        let bar = tandem_io::progress((s * params.kmeans_iters) as u64, "kmeans");
        for _ in 0..params.kmeans_iters {
            let bias: Vec<f32> = centroids
                .chunks_exact(dim)
                .map(|c| -0.5 * c.iter().map(|v| v * v).sum::<f32>())
                .collect();
            let labels = assign(bank, &sample, &centroids, Some(&bias), &bar);
            // the members of each centroid, in row order, then each mean
            // summed in that order: the same bits for any thread count
            let (starts, members) = group(&labels, k);
            let means: Vec<Option<Vec<f32>>> = (0..k)
                .into_par_iter()
                .map_init(Vec::new, |x, c| {
                    let own = &members[starts[c]..starts[c + 1]];
                    if own.is_empty() {
                        return None;
                    }
                    let rows: Vec<usize> = own.iter().map(|&i| sample[i as usize]).collect();
                    gather(bank, &rows, x);
                    let mut sum = vec![0f64; dim];
                    for row in x.chunks_exact(dim) {
                        for (s, &v) in sum.iter_mut().zip(row) {
                            *s += v as f64;
                        }
                    }
                    Some(sum.iter().map(|&s| (s / own.len() as f64) as f32).collect())
                })
                .collect();
            for (c, m) in means.into_iter().enumerate() {
                // an empty cluster keeps its centroid
                if let Some(m) = m {
                    centroids[c * dim..(c + 1) * dim].copy_from_slice(&m);
                }
            }
        }
        bar.finish_and_clear();
        for c in centroids.chunks_exact_mut(dim) {
            let norm = c.iter().map(|v| v * v).sum::<f32>().sqrt();
            if norm > 0.0 {
                c.iter_mut().for_each(|v| *v /= norm);
            }
        }

        // every token's code: its nearest centroid by inner product
        let bar = tandem_io::progress(n as u64, "codes");
        let all: Vec<usize> = (0..n).collect();
        let codes = assign(bank, &all, &centroids, None, &bar);
        bar.finish_and_clear();

        // bucket cutoffs and weights per dimension, from held-out residuals
        let held: Vec<usize> = if n <= HELDOUT {
            all
        } else {
            let mut v = rand::seq::index::sample(&mut rng, n, HELDOUT).into_vec();
            v.sort_unstable();
            v
        };
        let mut x = Vec::new();
        gather(bank, &held, &mut x);
        let nb = 1usize << params.nbits;
        let (cutoffs, weights): (Vec<Vec<f32>>, Vec<Vec<f32>>) = (0..dim)
            .into_par_iter()
            .map(|d| {
                let mut col: Vec<f32> = held
                    .iter()
                    .enumerate()
                    .map(|(i, &r)| x[i * dim + d] - centroids[codes[r] as usize * dim + d])
                    .collect();
                col.sort_unstable_by(f32::total_cmp);
                let cut = (1..nb)
                    .map(|i| quantile(&col, i as f64 / nb as f64))
                    .collect();
                let w = (0..nb)
                    .map(|i| quantile(&col, (i as f64 + 0.5) / nb as f64))
                    .collect();
                (cut, w)
            })
            .unzip();
        let cutoffs = cutoffs.concat();
        let weights = weights.concat();
        let decode = decode_table(&weights, dim, params.nbits);

        // every token's residual, packed
        let wpt = words(dim, params.nbits);
        let bar = tandem_io::progress(n as u64, "residuals");
        let residuals: Vec<i32> = (0..n.div_ceil(CHUNK))
            .into_par_iter()
            .map_init(Vec::new, |x, b| {
                let (r0, r1) = (b * CHUNK, ((b + 1) * CHUNK).min(n));
                x.resize((r1 - r0) * dim, 0.0);
                tokens.rows_f32_into(r0, r1, x);
                let mut out = vec![0i32; (r1 - r0) * wpt];
                for (i, row) in x.chunks_exact(dim).enumerate() {
                    let c = &centroids[codes[r0 + i] as usize * dim..][..dim];
                    let packed: &mut [u8] =
                        bytemuck::cast_slice_mut(&mut out[i * wpt..(i + 1) * wpt]);
                    for d in 0..dim {
                        let r = row[d] - c[d];
                        let cut = &cutoffs[d * (nb - 1)..(d + 1) * (nb - 1)];
                        let bucket = cut.iter().filter(|&&t| t < r).count() as u8;
                        let bit = d * params.nbits as usize;
                        packed[bit / 8] |= bucket << (bit % 8);
                    }
                }
                bar.inc((r1 - r0) as u64);
                out
            })
            .collect::<Vec<Vec<i32>>>()
            .concat();
        bar.finish_and_clear();

        // the inverted lists: the documents of each centroid, ascending
        let doc_codes = |d: usize| -> Vec<u32> {
            let mut c = codes[bank.doc_rows(d)].to_vec();
            c.sort_unstable();
            c.dedup();
            c
        };
        let per_doc: Vec<Vec<u32>> = (0..bank.docs()).into_par_iter().map(doc_codes).collect();
        let mut counts = vec![0usize; k + 1];
        for cs in &per_doc {
            for &c in cs {
                counts[c as usize + 1] += 1;
            }
        }
        for c in 0..k {
            counts[c + 1] += counts[c];
        }
        let mut fill = counts.clone();
        let mut ivf = vec![0i32; counts[k]];
        for (d, cs) in per_doc.iter().enumerate() {
            for &c in cs {
                ivf[fill[c as usize]] = d as i32;
                fill[c as usize] += 1;
            }
        }
        let sidecar = PlaidSidecar {
            format: FORMAT.to_string(),
            bank: name,
            bank_fingerprint: BankFingerprint::of(tokens),
            documents: bank.docs(),
            offsets_hash: offsets_hash(bank),
            dim,
            nbits: params.nbits,
            centroids: k,
            kmeans_iters: params.kmeans_iters,
            kmeans_sample: s,
            seed: params.seed,
            build_seconds: start.elapsed().as_secs_f64(),
            files: BTreeMap::new(),
        };
        Ok(Plaid {
            bank,
            sidecar,
            path: None,
            centroids: Data::Owned(centroids),
            codes: Data::Owned(codes.into_iter().map(|c| c as i32).collect()),
            residuals: Data::Owned(residuals),
            cutoffs: Data::Owned(cutoffs),
            weights: Data::Owned(weights),
            ivf: Data::Owned(ivf),
            ivf_offsets: Data::Owned(counts.into_iter().map(|c| c as i64).collect()),
            decode,
        })
    }

    /// The sidecar describing this index (`files` is empty until saved).
    pub fn sidecar(&self) -> &PlaidSidecar {
        &self.sidecar
    }

    /// Checks that [`Plaid::save`] can write the folder `dir`: its parent
    /// exists and, when `dir` exists, `overwrite` allows it and it is a
    /// PLAID index (or empty). Call it before [`Plaid::build`] to fail
    /// before minutes of building.
    pub fn check_save_path(dir: &Path, overwrite: Overwrite) -> Result<(), SearchError> {
        if dir.exists() {
            if overwrite == Overwrite::Refuse {
                return Err(tandem_io::WriteError::Exists(dir.to_path_buf()).into());
            }
            let empty = std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none());
            if !(dir.is_dir() && (empty || is_plaid_index(dir))) {
                return Err(SearchError::index(
                    dir,
                    format!("exists and is not a PLAID index folder (no {PLAID_SIDECAR} in it), so --force will not replace it"),
                    "choose another --out, or remove it yourself",
                ));
            }
        }
        crate::check_out_folder(dir)
    }

    /// Writes the index into the folder `dir`: every array into a temporary
    /// folder beside it, the sidecar last, then renamed into place (an index
    /// folder `dir` replaced when `overwrite` allows), so a failed save
    /// leaves no index behind.
    pub fn save(&mut self, dir: &Path, overwrite: Overwrite) -> Result<(), SearchError> {
        Self::check_save_path(dir, overwrite)?;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "plaid".into());
        let tmp = dir.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |e| SearchError::Io { path, source: e }
        };
        let (k, n, dim) = (
            self.sidecar.centroids,
            self.bank.tokens().rows(),
            self.sidecar.dim,
        );
        let wpt = words(dim, self.sidecar.nbits);
        let nb = 1usize << self.sidecar.nbits;
        let mut files = BTreeMap::new();
        let result = (|| -> Result<(), SearchError> {
            if tmp.exists() {
                std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
            }
            std::fs::create_dir(&tmp).map_err(io(&tmp))?;
            let mut put =
                |file: &str, shape: &[usize], data: ArrayRef<'_>| -> Result<(), SearchError> {
                    let p = tmp.join(file);
                    write_array(&p, shape, data, Overwrite::Refuse).map_err(|e| {
                        SearchError::index(
                            &p,
                            e.to_string(),
                            "check the disk and write the index again",
                        )
                    })?;
                    files.insert(
                        file.to_string(),
                        std::fs::metadata(&p).map_err(io(&p))?.len(),
                    );
                    Ok(())
                };
            put(CENTROIDS, &[k, dim], f32::array(self.centroids.get()))?;
            put(CODES, &[n], i32::array(self.codes.get()))?;
            put(RESIDUALS, &[n, wpt], i32::array(self.residuals.get()))?;
            put(CUTOFFS, &[dim, nb - 1], f32::array(self.cutoffs.get()))?;
            put(WEIGHTS, &[dim, nb], f32::array(self.weights.get()))?;
            put(IVF, &[self.ivf.get().len()], i32::array(self.ivf.get()))?;
            put(IVF_OFFSETS, &[k + 1], i64::array(self.ivf_offsets.get()))?;
            self.sidecar.files = files.clone();
            let json = serde_json::to_vec_pretty(&self.sidecar).expect("sidecar serialises");
            tandem_io::write_bytes_atomic(&tmp.join(PLAID_SIDECAR), Overwrite::Refuse, &json)?;
            if dir.exists() {
                std::fs::remove_dir_all(dir).map_err(io(dir))?;
            }
            std::fs::rename(&tmp, dir).map_err(io(dir))?;
            Ok(())
        })();
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        result?;
        self.path = Some(dir.to_path_buf());
        Ok(())
    }

    /// Opens the index folder `dir` (its arrays memory-mapped) to search
    /// `bank`, after checking that it was built over that bank and that its
    /// files are whole and consistent.
    pub fn open(dir: &Path, bank: &'a MultiBank) -> Result<Plaid<'a>, SearchError> {
        let bank_path = bank_name(bank.tokens());
        let rebuild = format!(
            "rebuild it: tandem index build --bank {bank_path} --out {} --force",
            dir.display()
        );
        if !dir.exists() {
            return Err(SearchError::index(
                dir,
                "index not found",
                format!(
                    "build it: tandem index build --bank {bank_path} --out {}",
                    dir.display()
                ),
            ));
        }
        if !is_plaid_index(dir) {
            return Err(SearchError::index(
                dir,
                format!(
                    "not a PLAID index (no {PLAID_SIDECAR} in it{}), and a multi-vector bank is searched with one",
                    if dir.is_file() { "; a file is an HNSW index, for a dense bank" } else { "" }
                ),
                format!(
                    "build one over this bank: tandem index build --bank {bank_path} --out DIR, and pass --index DIR"
                ),
            ));
        }
        let side = dir.join(PLAID_SIDECAR);
        let text = std::fs::read(&side).map_err(|e| {
            SearchError::index(
                &side,
                format!("cannot read the index sidecar ({e})"),
                &rebuild,
            )
        })?;
        let sidecar: PlaidSidecar = serde_json::from_slice(&text).map_err(|e| {
            SearchError::index(
                &side,
                format!("not a tandem PLAID index sidecar ({e})"),
                &rebuild,
            )
        })?;
        if sidecar.format != FORMAT {
            return Err(SearchError::index(
                &side,
                format!("format {:?}, expected {FORMAT:?}", sidecar.format),
                &rebuild,
            ));
        }
        let mut diff = sidecar
            .bank_fingerprint
            .differences(&BankFingerprint::of(bank.tokens()));
        if sidecar.documents != bank.docs() {
            diff.push(format!(
                "{} vs {} documents",
                sidecar.documents,
                bank.docs()
            ));
        }
        if sidecar.offsets_hash != offsets_hash(bank) {
            diff.push("document offsets".to_string());
        }
        if !diff.is_empty() {
            return Err(SearchError::index(
                dir,
                format!(
                    "built over the bank {}, which does not match {bank_path} ({})",
                    sidecar.bank,
                    diff.join(", ")
                ),
                &rebuild,
            ));
        }
        let (k, n, dim, nbits) = (
            sidecar.centroids,
            bank.tokens().rows(),
            sidecar.dim,
            sidecar.nbits,
        );
        if (nbits != 2 && nbits != 4) || k == 0 || k > n.max(1) {
            return Err(SearchError::index(
                &side,
                format!("nbits {nbits} with {k} centroids is not an index tandem builds"),
                &rebuild,
            ));
        }
        let nb = 1usize << nbits;
        let bad =
            |file: &str, problem: String| SearchError::index(dir.join(file), problem, &rebuild);
        let map = |file: &str, shape: Option<&[usize]>| -> Result<MappedArray, SearchError> {
            let p = dir.join(file);
            let recorded = sidecar.files.get(file).copied();
            let bytes = std::fs::metadata(&p)
                .map(|m| m.len())
                .map_err(|e| bad(file, format!("cannot read it ({e})")))?;
            if recorded != Some(bytes) {
                return Err(bad(
                    file,
                    format!(
                        "{bytes} bytes, but the sidecar records {}",
                        recorded.map_or_else(|| "no such file".to_string(), |b| b.to_string())
                    ),
                ));
            }
            let m = MappedArray::open(&p)
                .map_err(|e| SearchError::index(&p, e.to_string(), &rebuild))?;
            if let Some(want) = shape {
                if m.shape() != want {
                    return Err(bad(
                        file,
                        format!("shape {:?}, expected {want:?}", m.shape()),
                    ));
                }
            }
            Ok(m)
        };
        let typed =
            |file: &str, m: &MappedArray, check: &dyn Fn(&MappedArray) -> Result<(), BankError>| {
                check(m).map_err(|e| SearchError::index(dir.join(file), e.to_string(), &rebuild))
            };
        let centroids = map(CENTROIDS, Some(&[k, dim]))?;
        typed(CENTROIDS, &centroids, &|m| m.f32().map(|_| ()))?;
        let codes = map(CODES, Some(&[n]))?;
        typed(CODES, &codes, &|m| m.i32().map(|_| ()))?;
        if let Some(t) = codes
            .i32()
            .expect("checked")
            .iter()
            .position(|&c| c < 0 || c as usize >= k)
        {
            return Err(bad(CODES, format!("token {t} has a code outside 0..{k}")));
        }
        let residuals = map(RESIDUALS, Some(&[n, words(dim, nbits)]))?;
        typed(RESIDUALS, &residuals, &|m| m.i32().map(|_| ()))?;
        let cutoffs = map(CUTOFFS, Some(&[dim, nb - 1]))?;
        typed(CUTOFFS, &cutoffs, &|m| m.f32().map(|_| ()))?;
        let weights = map(WEIGHTS, Some(&[dim, nb]))?;
        typed(WEIGHTS, &weights, &|m| m.f32().map(|_| ()))?;
        let ivf_offsets = map(IVF_OFFSETS, Some(&[k + 1]))?;
        typed(IVF_OFFSETS, &ivf_offsets, &|m| m.i64().map(|_| ()))?;
        let ivf = map(IVF, None)?;
        typed(IVF, &ivf, &|m| m.i32().map(|_| ()))?;
        let (io, lists) = (
            ivf_offsets.i64().expect("checked"),
            ivf.i32().expect("checked"),
        );
        if io[0] != 0 || io[k] != lists.len() as i64 || io.windows(2).any(|w| w[1] < w[0]) {
            return Err(bad(
                IVF_OFFSETS,
                format!(
                    "the offsets do not run from 0 to the {} entries of {IVF} without going back",
                    lists.len()
                ),
            ));
        }
        let docs = bank.docs();
        if let Some(i) = lists.iter().position(|&d| d < 0 || d as usize >= docs) {
            return Err(bad(
                IVF,
                format!("entry {i} names a document outside 0..{docs}"),
            ));
        }
        let decode = decode_table(weights.f32().expect("checked"), dim, nbits);
        Ok(Plaid {
            decode,
            bank,
            sidecar,
            path: Some(dir.to_path_buf()),
            centroids: Data::Mapped(centroids),
            codes: Data::Mapped(codes),
            residuals: Data::Mapped(residuals),
            cutoffs: Data::Mapped(cutoffs),
            weights: Data::Mapped(weights),
            ivf: Data::Mapped(ivf),
            ivf_offsets: Data::Mapped(ivf_offsets),
        })
    }

    /// How the index is named in messages.
    fn name(&self) -> PathBuf {
        self.path
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("PLAID index over {}", self.sidecar.bank)))
    }

    /// The token vector `row` as the index stores it: its centroid plus its
    /// decompressed residual, into `out` (`dim` values).
    pub fn decompress(&self, row: usize, out: &mut [f32]) {
        let dim = self.sidecar.dim;
        let per = 8 / self.sidecar.nbits as usize;
        let wpt = words(dim, self.sidecar.nbits);
        let code = self.codes.get()[row] as usize;
        let c = &self.centroids.get()[code * dim..(code + 1) * dim];
        let packed: &[u8] = bytemuck::cast_slice(&self.residuals.get()[row * wpt..(row + 1) * wpt]);
        for (j, (o, c)) in out[..dim].chunks_mut(per).zip(c.chunks(per)).enumerate() {
            let w = &self.decode[(j * 256 + packed[j] as usize) * per..][..o.len()];
            for ((o, &c), &w) in o.iter_mut().zip(c).zip(w) {
                *o = c + w;
            }
        }
    }

    /// The best `k` documents of each query, best first: `(document,
    /// MaxSim)`, the scores exact. Query `i` is the token rows
    /// `q_offsets[i]..q_offsets[i + 1]` of `queries` (`[tokens, dim]`).
    /// A query gets fewer than `k` when its cells hold fewer documents.
    /// `progress(1)` is called after each query.
    pub fn search(
        &self,
        queries: &[f32],
        q_offsets: &[usize],
        k: usize,
        params: &PlaidSearch,
        progress: impl Fn(usize) + Sync,
    ) -> Result<Vec<Vec<Hit>>, SearchError> {
        let dim = self.sidecar.dim;
        let nq = check_queries(dim, queries, q_offsets)?;
        for (v, flag) in [
            (params.ncells, "--ncells"),
            (params.ndocs, "--ndocs"),
            (params.rerank, "--rerank"),
        ] {
            if v == 0 {
                return Err(SearchError::index(
                    self.name(),
                    format!("{flag} 0 finds no documents"),
                    format!("pass {flag} 1 or more"),
                ));
            }
        }
        if !params.centroid_threshold.is_finite() {
            return Err(SearchError::index(
                self.name(),
                "the centroid threshold is not a number",
                "pass --centroid-threshold between -1 and 1 (0.45 is ColBERT's for k = 100)",
            ));
        }
        if let Some(row) = queries
            .chunks_exact(dim)
            .position(|q| q.iter().any(|x| !x.is_finite()))
        {
            return Err(SearchError::NonFiniteQuery { row });
        }
        if k == 0 || nq == 0 {
            return Ok(vec![Vec::new(); nq]);
        }
        Ok((0..nq)
            .into_par_iter()
            .map(|i| {
                let q = &queries[q_offsets[i] * dim..q_offsets[i + 1] * dim];
                let hits = self.search_one(q, k, params);
                progress(1);
                hits
            })
            .collect())
    }

    /// One query's best `k` (the stages of the module's notes).
    fn search_one(&self, q: &[f32], k: usize, p: &PlaidSearch) -> Vec<Hit> {
        let dim = self.sidecar.dim;
        let nt = q.len() / dim;
        let kc = self.sidecar.centroids;
        let (codes, ivf, io) = (self.codes.get(), self.ivf.get(), self.ivf_offsets.get());
        let docs = self.bank.docs();
        if nt == 0 {
            // every document scores 0: the lowest ones
            return (0..k.min(docs) as u32).map(|d| (d, 0.0)).collect();
        }
        // query token x centroid scores, and the table by centroid
        let mut cs = vec![0f32; nt * kc];
        scores(q, self.centroids.get(), dim, &mut cs);
        let mut table = vec![0f32; kc * nt];
        for (i, row) in cs.chunks_exact(kc).enumerate() {
            for (c, &s) in row.iter().enumerate() {
                table[c * nt + i] = s;
            }
        }
        // candidates: the documents of each token's best cells
        let mut cand: Vec<u32> = Vec::new();
        for row in cs.chunks_exact(kc) {
            let mut top = TopK::new(p.ncells.min(kc));
            for (c, &s) in row.iter().enumerate() {
                if s > top.threshold() {
                    top.push(c as u32, s);
                }
            }
            for (c, _) in top.into_sorted() {
                let c = c as usize;
                cand.extend(
                    ivf[io[c] as usize..io[c + 1] as usize]
                        .iter()
                        .map(|&d| d as u32),
                );
            }
        }
        cand.sort_unstable();
        cand.dedup();
        // centroid interaction: each document token replaced by its
        // centroid's scores; pruned, then full
        let keep: Vec<bool> = table
            .chunks_exact(nt)
            .map(|s| s.iter().copied().fold(f32::NEG_INFINITY, f32::max) >= p.centroid_threshold)
            .collect();
        let mut maxes = vec![0f32; nt];
        let mut interaction = |cands: &[u32], prune: bool, keep_n: usize| -> Vec<u32> {
            if cands.len() <= keep_n {
                return cands.to_vec();
            }
            let mut top = TopK::new(keep_n);
            for &d in cands {
                maxes.fill(f32::NEG_INFINITY);
                for &c in &codes[self.bank.doc_rows(d as usize)] {
                    let c = c as usize;
                    if prune && !keep[c] {
                        continue;
                    }
                    for (m, &s) in maxes.iter_mut().zip(&table[c * nt..(c + 1) * nt]) {
                        *m = m.max(s);
                    }
                }
                let s: f32 = maxes
                    .iter()
                    .map(|&m| if m == f32::NEG_INFINITY { 0.0 } else { m })
                    .sum();
                if s > top.threshold() {
                    top.push(d, s);
                }
            }
            sorted_docs(top.into_sorted())
        };
        let rerank = p.rerank.max(k);
        let stage1 = interaction(&cand, true, p.ndocs.max(rerank));
        let stage2 = interaction(&stage1, false, (p.ndocs / 2).max(rerank));
        // the decompressed residuals' MaxSim
        let stage3 = if stage2.len() <= rerank {
            stage2
        } else {
            let approx = score_blocks(
                q,
                dim,
                &stage2,
                |d| self.bank.doc_rows(d as usize).len(),
                |d, out| {
                    for (j, r) in self.bank.doc_rows(d as usize).enumerate() {
                        self.decompress(r, &mut out[j * dim..(j + 1) * dim]);
                    }
                },
            );
            let mut top = TopK::new(rerank);
            for (&d, &s) in stage2.iter().zip(&approx) {
                if s > top.threshold() {
                    top.push(d, s);
                }
            }
            sorted_docs(top.into_sorted())
        };
        // exact MaxSim over the bank's own vectors
        let exact = score_docs(self.bank, q, &stage3);
        let mut top = TopK::new(k);
        for (&d, &s) in stage3.iter().zip(&exact) {
            if s > top.threshold() {
                top.push(d, s);
            }
        }
        top.into_sorted()
    }
}

/// The documents of `hits`, ascending (the order [`TopK`] takes them in).
fn sorted_docs(hits: Vec<Hit>) -> Vec<u32> {
    let mut d: Vec<u32> = hits.into_iter().map(|h| h.0).collect();
    d.sort_unstable();
    d
}

/// Rows grouped by label: `starts` (`k + 1`) and the rows of label `c` at
/// `members[starts[c]..starts[c + 1]]`, ascending.
fn group(labels: &[u32], k: usize) -> (Vec<usize>, Vec<u32>) {
    let mut starts = vec![0usize; k + 1];
    for &l in labels {
        starts[l as usize + 1] += 1;
    }
    for c in 0..k {
        starts[c + 1] += starts[c];
    }
    let mut fill = starts.clone();
    let mut members = vec![0u32; labels.len()];
    for (i, &l) in labels.iter().enumerate() {
        members[fill[l as usize]] = i as u32;
        fill[l as usize] += 1;
    }
    (starts, members)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MaxSim;
    use rand::Rng;
    use tandem_bank::{f16, offsets_path, write_npy, write_offsets, Vectors};

    const DIM: usize = 32;

    /// Unit vectors near `center` (noise `spread`).
    fn near(rng: &mut ChaCha8Rng, center: &[f32], spread: f32) -> Vec<f32> {
        let mut v: Vec<f32> = center
            .iter()
            .map(|c| c + spread * (rng.gen::<f32>() - 0.5))
            .collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= n);
        v
    }

    /// A clustered multi-vector bank written as float16 under `dir/name`,
    /// made like text: a vocabulary of 600 words (unit vectors) in 20 topics
    /// of 30; `docs` documents of 4 to 24 tokens, each a word of the
    /// document's topic (four times in five) or any word, plus noise; and
    /// `queries` queries of 8 tokens, words of a random document plus more
    /// noise, as (tokens, offsets).
    fn clustered(
        dir: &Path,
        name: &str,
        docs: usize,
        queries: usize,
        seed: u64,
    ) -> (MultiBank, Vec<f32>, Vec<usize>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let words: Vec<Vec<f32>> = (0..600).map(|_| near(&mut rng, &[0.0; DIM], 2.0)).collect();
        let mut doc_words = Vec::new();
        let (mut x, mut offsets) = (Vec::new(), vec![0]);
        for _ in 0..docs {
            let topic = rng.gen_range(0..20);
            let mut own = Vec::new();
            for _ in 0..rng.gen_range(4..=24) {
                let w = if rng.gen_bool(0.8) {
                    topic * 30 + rng.gen_range(0..30)
                } else {
                    rng.gen_range(0..600)
                };
                x.extend(near(&mut rng, &words[w], 0.3));
                own.push(w);
            }
            doc_words.push(own);
            offsets.push(x.len() / DIM);
        }
        let p = dir.join(name);
        let h: Vec<f16> = x.iter().map(|&v| f16::from_f32(v)).collect();
        write_npy(&p, x.len() / DIM, DIM, Vectors::F16(&h), Overwrite::Allow).unwrap();
        write_offsets(&offsets_path(&p), &offsets, Overwrite::Allow).unwrap();
        let (mut q, mut qo) = (Vec::new(), vec![0]);
        for _ in 0..queries {
            let own = &doc_words[rng.gen_range(0..docs)];
            for _ in 0..8 {
                let w = own[rng.gen_range(0..own.len())];
                q.extend(near(&mut rng, &words[w], 0.5));
            }
            qo.push(q.len() / DIM);
        }
        (MultiBank::open(&p, None).unwrap(), q, qo)
    }

    /// Every array of an index: the floats, the int32s, the int64s.
    fn arrays(p: &Plaid<'_>) -> (Vec<f32>, Vec<i32>, Vec<i64>) {
        (
            [p.centroids.get(), p.cutoffs.get(), p.weights.get()].concat(),
            [p.codes.get(), p.residuals.get(), p.ivf.get()].concat(),
            p.ivf_offsets.get().to_vec(),
        )
    }

    #[test]
    fn default_centroids_follow_plaid() {
        assert_eq!(default_centroids(815_632), 8192);
        assert_eq!(default_centroids(10_000), 1024);
        assert_eq!(default_centroids(100), 100);
        assert_eq!(default_centroids(1), 1);
    }

    #[test]
    fn residuals_decode_within_their_bucket() {
        let dir = tempfile::tempdir().unwrap();
        let (bank, _, _) = clustered(dir.path(), "b.npy", 150, 0, 1);
        let n = bank.tokens().rows();
        let mut mean_err = Vec::new();
        for nbits in [2u32, 4] {
            let p = Plaid::build(
                &bank,
                &PlaidParams {
                    nbits,
                    centroids: Some(64),
                    ..PlaidParams::default()
                },
            )
            .unwrap();
            let nb = 1usize << nbits;
            let (cut, cents, codes) = (p.cutoffs.get(), p.centroids.get(), p.codes.get());
            let mut out = vec![0f32; DIM];
            let (mut err2, mut res2) = (0f64, 0f64);
            for r in 0..n {
                p.decompress(r, &mut out);
                let x = bank.tokens().row_f32(r);
                let c = &cents[codes[r] as usize * DIM..][..DIM];
                for d in 0..DIM {
                    let (res, err) = (x[d] - c[d], x[d] - out[d]);
                    res2 += (res * res) as f64;
                    err2 += (err * err) as f64;
                    // the decoded value lies in the residual's bucket
                    let cuts = &cut[d * (nb - 1)..(d + 1) * (nb - 1)];
                    let b = cuts.iter().filter(|&&t| t < res).count();
                    let lo = if b == 0 {
                        f32::NEG_INFINITY
                    } else {
                        cuts[b - 1]
                    };
                    let hi = if b == nb - 1 { f32::INFINITY } else { cuts[b] };
                    let dec = out[d] - c[d];
                    assert!(
                        lo - 1e-6 <= dec && dec <= hi + 1e-6,
                        "dim {d}: {dec} outside ({lo}, {hi}]"
                    );
                    if b > 0 && b < nb - 1 {
                        assert!(
                            err.abs() <= hi - lo + 1e-6,
                            "dim {d}: error {err} > bucket width {}",
                            hi - lo
                        );
                    }
                }
            }
            // the residual halves (2 bits) or better the error of the centroid alone
            assert!(
                err2 < 0.5 * res2,
                "{nbits} bits: squared error {err2} vs residuals {res2}"
            );
            mean_err.push(err2 / (n * DIM) as f64);
        }
        assert!(
            mean_err[1] < 0.5 * mean_err[0],
            "4 bits no better than 2: {mean_err:?}"
        );
    }

    #[test]
    fn recall_against_exact_maxsim_at_k_10() {
        let dir = tempfile::tempdir().unwrap();
        let (bank, q, qo) = clustered(dir.path(), "b.npy", 1500, 60, 2);
        let p = Plaid::build(&bank, &PlaidParams::default()).unwrap();
        assert_eq!(
            p.sidecar().centroids,
            default_centroids(bank.tokens().rows())
        );
        let k = 10;
        let exact = MaxSim::new(&bank).search(&q, &qo, k, |_| {}).unwrap();
        let got = p
            .search(&q, &qo, k, &PlaidSearch::for_k(k), |_| {})
            .unwrap();
        let mut found = 0;
        for (e, g) in exact.iter().zip(&got) {
            found += e.iter().filter(|h| g.iter().any(|x| x.0 == h.0)).count();
            // the scores are exact MaxSim
            for &(d, s) in g {
                if let Some(&(_, es)) = e.iter().find(|h| h.0 == d) {
                    assert!(
                        (s - es).abs() <= 1e-5 * es.abs().max(1.0),
                        "doc {d}: {s} vs {es}"
                    );
                }
            }
        }
        let recall = found as f64 / (k * exact.len()) as f64;
        assert!(recall >= 0.99, "recall@{k} {recall}");
        // pruning harder than the data allows loses documents: the test can fail
        let starved = PlaidSearch {
            ncells: 1,
            centroid_threshold: 0.99,
            ndocs: 10,
            rerank: 10,
        };
        let poor = p.search(&q, &qo, k, &starved, |_| {}).unwrap();
        let found_poor: usize = exact
            .iter()
            .zip(&poor)
            .map(|(e, g)| e.iter().filter(|h| g.iter().any(|x| x.0 == h.0)).count())
            .sum();
        assert!(found_poor < found, "{found_poor} vs {found}");
    }

    #[test]
    fn the_same_for_any_thread_count() {
        let dir = tempfile::tempdir().unwrap();
        let (bank, q, qo) = clustered(dir.path(), "b.npy", 300, 20, 3);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let p = Plaid::build(&bank, &PlaidParams::default()).unwrap();
                let hits = p
                    .search(&q, &qo, 7, &PlaidSearch::for_k(7), |_| {})
                    .unwrap();
                (arrays(&p), hits)
            })
        };
        let (one, three) = (run(1), run(3));
        assert!(
            one == three,
            "the index or the results depend on the thread count"
        );
        // another seed, other centroids
        let other = Plaid::build(
            &bank,
            &PlaidParams {
                seed: 7,
                ..PlaidParams::default()
            },
        )
        .unwrap();
        assert_ne!(arrays(&other).0, one.0 .0);
    }

    #[test]
    fn saved_and_opened_it_answers_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let (bank, q, qo) = clustered(dir.path(), "b.npy", 300, 20, 4);
        let mut p = Plaid::build(
            &bank,
            &PlaidParams {
                nbits: 4,
                ..PlaidParams::default()
            },
        )
        .unwrap();
        let out = dir.path().join("idx");
        p.save(&out, Overwrite::Refuse).unwrap();
        let opened = Plaid::open(&out, &bank).unwrap();
        assert!(matches!(opened.codes, Data::Mapped(_)));
        assert!(arrays(&p) == arrays(&opened));
        let s = PlaidSearch::for_k(5);
        assert_eq!(
            p.search(&q, &qo, 5, &s, |_| {}).unwrap(),
            opened.search(&q, &qo, 5, &s, |_| {}).unwrap()
        );
        assert_eq!(opened.sidecar().files.len(), 7);
        // saving over it needs leave; a folder that is not an index is never replaced
        let e = p.save(&out, Overwrite::Refuse).unwrap_err().to_string();
        assert!(e.contains("exists"), "{e}");
        p.save(&out, Overwrite::Allow).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
        let e = p
            .save(dir.path(), Overwrite::Allow)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a PLAID index folder"), "{e}");
        assert!(dir.path().join("notes.txt").is_file());
    }

    #[test]
    fn another_bank_or_a_damaged_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (bank, _, _) = clustered(dir.path(), "a.npy", 200, 0, 5);
        let (other, _, _) = clustered(dir.path(), "b.npy", 200, 0, 6);
        let out = dir.path().join("idx");
        Plaid::build(&bank, &PlaidParams::default())
            .unwrap()
            .save(&out, Overwrite::Refuse)
            .unwrap();
        let e = Plaid::open(&out, &other).unwrap_err().to_string();
        assert!(
            e.contains("idx")
                && e.contains("does not match")
                && e.contains("a.npy")
                && e.contains("tandem index build --bank")
                && e.contains("b.npy"),
            "{e}"
        );
        // the same tokens cut into other documents
        let p = dir.path().join("c.npy");
        std::fs::copy(dir.path().join("a.npy"), &p).unwrap();
        let mut off = bank.offsets().to_vec();
        off.remove(1);
        write_offsets(&offsets_path(&p), &off, Overwrite::Allow).unwrap();
        let cut = MultiBank::open(&p, None).unwrap();
        let e = Plaid::open(&out, &cut).unwrap_err().to_string();
        assert!(e.contains("documents") && e.contains("offsets"), "{e}");
        // a damaged array
        let codes = out.join(CODES);
        let mut bytes = std::fs::read(&codes).unwrap();
        bytes.truncate(bytes.len() - 4);
        std::fs::write(&codes, &bytes).unwrap();
        let e = Plaid::open(&out, &bank).unwrap_err().to_string();
        assert!(e.contains("codes.npy") && e.contains("--force"), "{e}");
        // not an index at all
        let e = Plaid::open(&dir.path().join("a.npy"), &bank)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a PLAID index") && e.contains("HNSW"), "{e}");
    }

    #[test]
    fn bad_settings_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (bank, q, qo) = clustered(dir.path(), "b.npy", 20, 2, 8);
        let n = bank.tokens().rows();
        let e = Plaid::build(
            &bank,
            &PlaidParams {
                nbits: 3,
                ..PlaidParams::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("--nbits 2"), "{e}");
        let e = Plaid::build(
            &bank,
            &PlaidParams {
                centroids: Some(n + 1),
                ..PlaidParams::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains(&format!("between 1 and {n}")), "{e}");
        let p = Plaid::build(&bank, &PlaidParams::default()).unwrap();
        let s = PlaidSearch {
            ncells: 0,
            ..PlaidSearch::for_k(3)
        };
        let e = p.search(&q, &qo, 3, &s, |_| {}).unwrap_err().to_string();
        assert!(e.contains("--ncells 1"), "{e}");
    }
}
