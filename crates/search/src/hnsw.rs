//! Approximate search with usearch's HNSW graph.
//!
//! An index file is always accompanied by a JSON sidecar (`<index>.json`,
//! [`HnswSidecar`]) that records the bank it was built from (path, shape,
//! dtype, file size and a hash of sampled rows), the metric and the build
//! parameters. Loading refuses an index whose sidecar does not match the bank
//! it is asked to serve, because its row numbers would point at other vectors.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tandem_bank::{Bank, Vectors};
use tandem_io::Overwrite;
use usearch::{IndexOptions, MetricKind, ScalarKind};

use crate::exact::dot;
use crate::flat::{bank_name, row_norms};
use crate::{check_request, hit_order, sorted_exclusions, Hit, Index, Metric, SearchError};

/// Format tag written into every sidecar.
const FORMAT: &str = "tandem-hnsw/1";
/// Rows added per parallel task (and per progress-bar tick) while building.
const ADD_CHUNK: usize = 1024;
/// Largest finite float16.
const F16_MAX: f32 = 65504.0;
/// The relative spread of row lengths an i8 graph accepts for the inner product.
const I8_NORM_SPREAD: f32 = 1e-3;
/// Rows hashed into a [`BankFingerprint`].
const SAMPLED_ROWS: usize = 257;

/// HNSW graph parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HnswParams {
    /// Neighbours per node (`M`).
    pub connectivity: usize,
    /// Candidate list size while inserting (`ef_construction`).
    pub expansion_add: usize,
    /// Candidate list size while searching (`ef`); raised to `k` when smaller.
    pub expansion_search: usize,
    /// Element type stored in the graph; `None` = the bank's dtype.
    pub scalar: Option<Scalar>,
}

/// Element type of the vectors stored in an HNSW graph: what the graph walk
/// measures with. The hits' scores never come from it: every candidate the
/// walk gathers is rescored exactly (float32, from the bank), so a smaller
/// type costs only recall, and halves (16 bits) the graph's memory and the
/// bytes each distance reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Scalar {
    /// 32-bit floats (`"f32"`).
    F32,
    /// 16-bit floats (`"f16"`); values must lie within +-65504.
    F16,
    /// bfloat16 (`"bf16"`): float32's range, 8 significant bits; distances
    /// with AVX512-BF16 (`vdpbf16ps`) where the CPU has it.
    BF16,
    /// 8-bit integers (`"i8"`): usearch scales each row to length 127 and
    /// rounds it, so the walk measures angles; with the inner product the
    /// rows must have one length (checked). Distances with AVX512-VNNI
    /// where the CPU has it.
    I8,
}

impl Scalar {
    /// The name used on the command line and in sidecars.
    pub fn name(self) -> &'static str {
        match self {
            Scalar::F32 => "f32",
            Scalar::F16 => "f16",
            Scalar::BF16 => "bf16",
            Scalar::I8 => "i8",
        }
    }

    fn kind(self) -> ScalarKind {
        match self {
            Scalar::F32 => ScalarKind::F32,
            Scalar::F16 => ScalarKind::F16,
            Scalar::BF16 => ScalarKind::BF16,
            Scalar::I8 => ScalarKind::I8,
        }
    }
}

impl std::fmt::Display for Scalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Scalar {
    type Err = SearchError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" => Ok(Scalar::F32),
            "f16" | "float16" => Ok(Scalar::F16),
            "bf16" | "bfloat16" => Ok(Scalar::BF16),
            "i8" | "int8" => Ok(Scalar::I8),
            _ => Err(SearchError::UnknownScalar(s.to_string())),
        }
    }
}

impl Default for HnswParams {
    fn default() -> Self {
        HnswParams {
            connectivity: 32,
            expansion_add: 200,
            expansion_search: 256,
            scalar: None,
        }
    }
}

/// FNV-1a 64, the hash of fingerprints.
pub(crate) mod fnv1a {
    /// The hash of nothing.
    pub(crate) const START: u64 = 0xcbf2_9ce4_8422_2325;

    /// `hash` extended by `bytes`.
    pub(crate) fn eat(mut hash: u64, bytes: &[u8]) -> u64 {
        for &b in bytes {
            hash = (hash ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
        hash
    }
}

/// What identifies a bank cheaply: shape, dtype, file size and a hash of
/// [`SAMPLED_ROWS`] evenly spaced rows (first and last included).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BankFingerprint {
    pub rows: usize,
    pub dim: usize,
    pub dtype: String,
    /// Size of the bank file in bytes, when the bank was read from a file.
    pub file_bytes: Option<u64>,
    /// FNV-1a 64 of the sampled rows' stored bytes, as 16 hex digits.
    pub sample_hash: String,
}

impl BankFingerprint {
    /// The fingerprint of `bank`. Reads at most [`SAMPLED_ROWS`] rows.
    pub fn of(bank: &Bank) -> BankFingerprint {
        let (rows, dim) = (bank.rows(), bank.dim());
        let mut hash = fnv1a::START;
        let mut eat = |bytes: &[u8]| hash = fnv1a::eat(hash, bytes);
        eat(&(rows as u64).to_le_bytes());
        eat(&(dim as u64).to_le_bytes());
        let samples = rows.min(SAMPLED_ROWS);
        for i in 0..samples {
            let r = if samples == 1 {
                0
            } else {
                i * (rows - 1) / (samples - 1)
            };
            let range = r * dim..(r + 1) * dim;
            match bank.vectors() {
                Vectors::F32(v) => eat(bytemuck::cast_slice(&v[range])),
                Vectors::F16(v) => eat(bytemuck::cast_slice(&v[range])),
            }
        }
        BankFingerprint {
            rows,
            dim,
            dtype: bank.dtype().name().to_string(),
            file_bytes: bank
                .path()
                .and_then(|p| std::fs::metadata(p).ok())
                .map(|m| m.len()),
            sample_hash: format!("{hash:016x}"),
        }
    }

    /// What differs between `self` (recorded) and `now` (the bank at hand), in words.
    /// What differs between this fingerprint and `now` (empty: the same bank).
    pub fn differences(&self, now: &BankFingerprint) -> Vec<String> {
        let mut d = Vec::new();
        if self.rows != now.rows || self.dim != now.dim {
            d.push(format!(
                "shape ({}, {}) vs ({}, {})",
                self.rows, self.dim, now.rows, now.dim
            ));
        }
        if self.dtype != now.dtype {
            d.push(format!("dtype {} vs {}", self.dtype, now.dtype));
        }
        if let (Some(a), Some(b)) = (self.file_bytes, now.file_bytes) {
            if a != b {
                d.push(format!("file size {a} vs {b} bytes"));
            }
        }
        if self.sample_hash != now.sample_hash {
            d.push("contents of sampled rows".to_string());
        }
        d
    }
}

/// The JSON file written next to an index (`<index>.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HnswSidecar {
    /// Always `"tandem-hnsw/1"`.
    pub format: String,
    /// The bank's path when it was built, for people reading the file.
    pub bank: String,
    pub bank_fingerprint: BankFingerprint,
    /// `"ip"` or `"cosine"`.
    pub metric: String,
    pub connectivity: usize,
    pub expansion_add: usize,
    /// Element type stored in the graph: `"f32"`, `"f16"`, `"bf16"` or `"i8"`.
    pub scalar: String,
    /// Size of the index file, checked when it is opened.
    pub index_bytes: u64,
    pub build_seconds: f64,
}

/// An HNSW index over a bank. Keys are bank row numbers. A search walks the
/// graph for `max(ef, k)` candidates, then scores each of them exactly from
/// the bank (the float32 score [`crate::Flat`] gives) and returns the best
/// `k`: the graph's element type limits which rows are found, never their
/// scores or order.
pub struct Hnsw<'a> {
    /// Declared before `_memory`: dropped first, as it may view that memory.
    index: usearch::Index,
    /// The serialised graph `index` views, unless the index views its file.
    _memory: Option<HugePages>,
    bank: &'a Bank,
    metric: Metric,
    rows: usize,
    dim: usize,
    /// Thread contexts reserved in usearch (see [`search_contexts`]).
    contexts: usize,
    sidecar: HnswSidecar,
}

impl std::fmt::Debug for Hnsw<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hnsw")
            .field("sidecar", &self.sidecar)
            .finish_non_exhaustive()
    }
}

fn usearch_err(e: impl std::fmt::Display) -> SearchError {
    SearchError::Usearch(e.to_string())
}

/// The sidecar path of an index file: the index path with `.json` appended.
pub fn sidecar_path(index: &Path) -> PathBuf {
    let mut s = index.as_os_str().to_owned();
    s.push(".json");
    PathBuf::from(s)
}

fn utf8(path: &Path) -> Result<&str, SearchError> {
    path.to_str().ok_or_else(|| {
        SearchError::index(
            path,
            "the path is not valid UTF-8, which usearch requires",
            "use a UTF-8 path",
        )
    })
}

/// Anonymous memory the kernel is asked (`MADV_HUGEPAGE`) to back with 2 MiB
/// pages. A graph walk reads rows and neighbour lists scattered over hundreds
/// of megabytes: with 4 KiB pages nearly every read also misses the TLB, so
/// [`Hnsw`] serialises its graph into this memory and searches a view of it.
struct HugePages {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

// SAFETY: `HugePages` owns its mapping like a `Box<[u8]>`; shared access only reads.
unsafe impl Send for HugePages {}
// SAFETY: as above.
unsafe impl Sync for HugePages {}

impl HugePages {
    /// `len` (> 0) zeroed bytes. Where the kernel declines huge pages the
    /// memory is still usable, with ordinary pages.
    fn new(len: usize) -> std::io::Result<HugePages> {
        // SAFETY: a fresh private anonymous mapping; no existing memory is touched.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: advice on the mapping just made, before any page is touched;
        // a refusal (no THP support) only leaves ordinary pages.
        unsafe { libc::madvise(ptr, len, libc::MADV_HUGEPAGE) };
        let ptr = std::ptr::NonNull::new(ptr.cast()).expect("mmap succeeded");
        Ok(HugePages { ptr, len })
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `len` bytes mapped readable (and zero-initialised) by `new`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for HugePages {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`, which nothing uses any more.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// An index viewing `memory`, which holds a serialised usearch index.
fn view_of(memory: &HugePages) -> Result<usearch::Index, SearchError> {
    let meta = usearch::Index::metadata_from_buffer(memory.bytes()).map_err(usearch_err)?;
    let index = usearch::Index::new(&meta.into()).map_err(usearch_err)?;
    // SAFETY: `Hnsw` keeps `memory` alive, unmoved and unmodified for as long
    // as it holds `index` (the field order drops `index` first).
    unsafe { index.view_from_buffer(memory.bytes()) }.map_err(usearch_err)?;
    Ok(index)
}

impl<'a> Hnsw<'a> {
    /// Builds an index over every row of `bank` (rows are added in parallel
    /// on the rayon pool, with a progress bar). The graph stores
    /// `params.scalar`, by default the bank's dtype. NaN/Inf rows are an
    /// error, and so are values beyond +-65504 when storing float16, and
    /// rows of different lengths when storing int8 for the inner product.
    pub fn build(bank: &'a Bank, metric: Metric, params: HnswParams) -> Result<Self, SearchError> {
        let start = Instant::now();
        if params.connectivity < 2 {
            return Err(SearchError::index(
                bank_name(bank),
                format!(
                    "HNSW connectivity M = {} is too small to build a graph",
                    params.connectivity
                ),
                "use M >= 2 (--m; 16 to 64 is typical)",
            ));
        }
        if params.expansion_add == 0 {
            return Err(SearchError::index(
                bank_name(bank),
                "HNSW ef_construction is 0",
                "use ef_construction >= 1 (--ef-construction; 100 to 400 is typical)",
            ));
        }
        let norms = row_norms(bank)?;
        let (rows, dim) = (bank.rows(), bank.dim());
        let scalar = params.scalar.unwrap_or(match bank.vectors() {
            Vectors::F32(_) => Scalar::F32,
            Vectors::F16(_) => Scalar::F16,
        });
        if scalar == Scalar::I8 && metric == Metric::InnerProduct {
            if let Some(row) = norms
                .iter()
                .position(|n| (n - norms[0]).abs() > I8_NORM_SPREAD * norms[0])
            {
                return Err(SearchError::index(
                    bank_name(bank),
                    format!(
                        "an i8 graph measures angles, but with the inner product rows of different lengths rank otherwise (row 0 has length {}, row {row} {})",
                        norms[0], norms[row]
                    ),
                    "build with --scalar bf16, or with --metric cosine",
                ));
            }
        }
        let options = IndexOptions {
            dimensions: dim,
            metric: match metric {
                Metric::InnerProduct => MetricKind::IP,
                Metric::Cosine => MetricKind::Cos,
            },
            quantization: scalar.kind(),
            connectivity: params.connectivity,
            expansion_add: params.expansion_add,
            expansion_search: params.expansion_search,
            multi: false,
        };
        let index = usearch::Index::new(&options).map_err(usearch_err)?;
        let contexts = search_contexts();
        index
            .reserve_capacity_and_threads(rows, contexts)
            .map_err(usearch_err)?;
        let bar = tandem_io::progress(rows as u64, "hnsw build");
        (0..rows.div_ceil(ADD_CHUNK))
            .into_par_iter()
            .try_for_each(|c| {
                let (r0, r1) = (c * ADD_CHUNK, ((c + 1) * ADD_CHUNK).min(rows));
                for r in r0..r1 {
                    let range = r * dim..(r + 1) * dim;
                    match bank.vectors() {
                        Vectors::F32(v)
                            if scalar == Scalar::F16
                                && v[range.clone()].iter().any(|x| x.abs() > F16_MAX) =>
                        {
                            return Err(SearchError::F16Range {
                                bank: bank_name(bank),
                                row: r,
                            });
                        }
                        Vectors::F32(v) => index.add(r as u64, &v[range]),
                        Vectors::F16(v) => index.add(
                            r as u64,
                            usearch::f16::from_i16s(bytemuck::cast_slice(&v[range])),
                        ),
                    }
                    .map_err(usearch_err)?;
                }
                bar.inc((r1 - r0) as u64);
                Ok::<(), SearchError>(())
            })?;
        bar.finish_and_clear();
        // The search runs on a copy in huge pages; the built graph is freed.
        let mut memory = HugePages::new(index.serialized_length())
            .map_err(|e| SearchError::Usearch(format!("cannot map memory for the graph ({e})")))?;
        index
            .save_to_buffer(memory.bytes_mut())
            .map_err(usearch_err)?;
        drop(index);
        let index = view_of(&memory)?;
        index.change_expansion_search(params.expansion_search);
        index
            .reserve_capacity_and_threads(rows, contexts)
            .map_err(usearch_err)?;
        let sidecar = HnswSidecar {
            format: FORMAT.to_string(),
            bank: bank_name(bank),
            bank_fingerprint: BankFingerprint::of(bank),
            metric: metric.name().to_string(),
            connectivity: params.connectivity,
            expansion_add: params.expansion_add,
            scalar: scalar.name().to_string(),
            index_bytes: 0,
            build_seconds: start.elapsed().as_secs_f64(),
        };
        Ok(Hnsw {
            index,
            _memory: Some(memory),
            bank,
            metric,
            rows,
            dim,
            contexts,
            sidecar,
        })
    }

    /// Checks that [`Hnsw::save`] can write to `path`: its folder exists and,
    /// with `Overwrite::Refuse`, neither the index nor its sidecar exists.
    /// Call it before [`Hnsw::build`] to fail before minutes of building.
    pub fn check_save_path(path: &Path, overwrite: Overwrite) -> Result<(), SearchError> {
        let side = sidecar_path(path);
        for p in [path, side.as_path()] {
            if overwrite == Overwrite::Refuse && p.exists() {
                return Err(tandem_io::WriteError::Exists(p.to_path_buf()).into());
            }
        }
        crate::check_out_folder(path)
    }

    /// Writes the index to `path` and its sidecar to `<path>.json`. The index
    /// goes to a temporary file that is renamed into place; the sidecar is
    /// written last, so a half-written pair never passes [`Hnsw::load`].
    pub fn save(&mut self, path: &Path, overwrite: Overwrite) -> Result<(), SearchError> {
        Self::check_save_path(path, overwrite)?;
        let side = sidecar_path(path);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
        let io = |e| SearchError::Io {
            path: path.to_path_buf(),
            source: e,
        };
        let result = (|| -> Result<(), SearchError> {
            self.index.save(utf8(&tmp)?).map_err(usearch_err)?;
            File::open(&tmp).and_then(|f| f.sync_all()).map_err(io)?;
            std::fs::rename(&tmp, path).map_err(io)?;
            Ok(())
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result?;
        self.sidecar.index_bytes = std::fs::metadata(path).map_err(io)?.len();
        let json = serde_json::to_vec_pretty(&self.sidecar).expect("sidecar serialises");
        tandem_io::write_bytes_atomic(&side, Overwrite::Allow, &json)?;
        Ok(())
    }

    /// Loads the index at `path` into memory (huge pages where the kernel
    /// gives them: a graph walk reads rows scattered over the whole graph,
    /// and 4 KiB pages would cost a TLB miss on nearly every read), after
    /// checking that its sidecar matches `bank`.
    pub fn load(path: &Path, bank: &'a Bank) -> Result<Self, SearchError> {
        Self::open(path, bank, false)
    }

    /// Memory-maps the index at `path` (no copy), after checking that its
    /// sidecar matches `bank`.
    pub fn view(path: &Path, bank: &'a Bank) -> Result<Self, SearchError> {
        Self::open(path, bank, true)
    }

    fn open(path: &Path, bank: &'a Bank, view: bool) -> Result<Self, SearchError> {
        let side = sidecar_path(path);
        let rebuild = format!(
            "rebuild it: tandem index build --bank {} --out {} --force",
            bank_name(bank),
            path.display()
        );
        if !path.exists() {
            return Err(SearchError::index(
                path,
                "index file not found",
                format!(
                    "build it: tandem index build --bank {} --out {}",
                    bank_name(bank),
                    path.display()
                ),
            ));
        }
        let text = std::fs::read(&side).map_err(|e| {
            SearchError::index(
                &side,
                format!("cannot read the index sidecar ({e})"),
                &rebuild,
            )
        })?;
        let sidecar: HnswSidecar = serde_json::from_slice(&text).map_err(|e| {
            SearchError::index(&side, format!("not a tandem index sidecar ({e})"), &rebuild)
        })?;
        if sidecar.format != FORMAT {
            return Err(SearchError::index(
                &side,
                format!("format {:?}, expected {FORMAT:?}", sidecar.format),
                &rebuild,
            ));
        }
        let now = BankFingerprint::of(bank);
        let diff = sidecar.bank_fingerprint.differences(&now);
        if !diff.is_empty() {
            return Err(SearchError::index(
                path,
                format!(
                    "built from bank {} which does not match {} ({})",
                    sidecar.bank,
                    bank_name(bank),
                    diff.join(", ")
                ),
                &rebuild,
            ));
        }
        let bytes = std::fs::metadata(path)
            .map_err(|e| SearchError::Io {
                path: path.to_path_buf(),
                source: e,
            })?
            .len();
        if bytes != sidecar.index_bytes {
            return Err(SearchError::index(
                path,
                format!(
                    "index file has {bytes} bytes but its sidecar records {}",
                    sidecar.index_bytes
                ),
                &rebuild,
            ));
        }
        let metric: Metric = sidecar
            .metric
            .parse()
            .map_err(|e: SearchError| SearchError::index(&side, e.to_string(), &rebuild))?;
        let scalar: Scalar = sidecar
            .scalar
            .parse()
            .map_err(|e: SearchError| SearchError::index(&side, e.to_string(), &rebuild))?;
        let cannot_open =
            |e: String| SearchError::index(path, format!("usearch cannot open it ({e})"), &rebuild);
        let (index, memory) = if view {
            let index = usearch::Index::restore_view(utf8(path)?)
                .map_err(|e| cannot_open(e.to_string()))?;
            (index, None)
        } else {
            // Read into huge pages (see `HugePages`) and searched there.
            let mut memory =
                HugePages::new(bytes as usize).map_err(|e| cannot_open(e.to_string()))?;
            File::open(path)
                .and_then(|mut f| std::io::Read::read_exact(&mut f, memory.bytes_mut()))
                .map_err(|e| SearchError::Io {
                    path: path.to_path_buf(),
                    source: e,
                })?;
            let index = view_of(&memory).map_err(|e| cannot_open(e.to_string()))?;
            (index, Some(memory))
        };
        let stored = index.scalar_kind();
        if stored != scalar.kind() {
            let stored = [Scalar::F32, Scalar::F16, Scalar::BF16, Scalar::I8]
                .into_iter()
                .find(|s| s.kind() == stored)
                .map_or_else(|| format!("{stored:?}"), |s| s.name().to_string());
            return Err(SearchError::index(
                path,
                format!(
                    "the graph stores {stored} but its sidecar {} says {scalar}: the two files do not belong together",
                    side.display()
                ),
                &rebuild,
            ));
        }
        if index.size() != now.rows || index.dimensions() != now.dim {
            return Err(SearchError::index(
                path,
                format!(
                    "holds {} vectors of dimension {}, the bank ({}, {})",
                    index.size(),
                    index.dimensions(),
                    now.rows,
                    now.dim
                ),
                &rebuild,
            ));
        }
        // Search contexts for the worker threads (a viewed index too).
        let contexts = search_contexts();
        index
            .reserve_capacity_and_threads(now.rows, contexts)
            .map_err(usearch_err)?;
        Ok(Hnsw {
            index,
            _memory: memory,
            bank,
            metric,
            rows: now.rows,
            dim: now.dim,
            contexts,
            sidecar,
        })
    }

    /// Sets the search candidate list size (`ef`).
    pub fn set_expansion_search(&self, ef: usize) {
        self.index.change_expansion_search(ef);
    }

    /// The graph parameters (the search expansion as currently set).
    pub fn params(&self) -> HnswParams {
        HnswParams {
            connectivity: self.sidecar.connectivity,
            expansion_add: self.sidecar.expansion_add,
            expansion_search: self.index.expansion_search(),
            scalar: self.sidecar.scalar.parse().ok(),
        }
    }

    /// The SIMD kernels usearch picked for this index's metric (e.g. "sapphire", "skylake", "serial").
    pub fn hardware_acceleration(&self) -> String {
        self.index.hardware_acceleration()
    }

    /// The best `k` of the rows `keys` for query `q` by the exact score
    /// (the float32 dot product of [`crate::Flat`]; for cosine, of the
    /// normalised query, times the row's inverse norm), best first, ties to
    /// the lower row. `scratch` holds a float16 bank's row as float32.
    fn rescore(&self, q: &[f32], keys: &[u64], k: usize, scratch: &mut Vec<f32>) -> Vec<Hit> {
        let q: std::borrow::Cow<[f32]> = match self.metric {
            Metric::InnerProduct => q.into(),
            Metric::Cosine => {
                let n = norm(q);
                if n > 0.0 {
                    q.iter().map(|v| v / n).collect::<Vec<f32>>().into()
                } else {
                    q.into()
                }
            }
        };
        let dim = self.dim;
        scratch.resize(dim, 0.0);
        let mut hits: Vec<Hit> = keys
            .iter()
            .map(|&key| {
                let r = key as usize;
                let x: &[f32] = match self.bank.vectors() {
                    Vectors::F32(v) => &v[r * dim..(r + 1) * dim],
                    Vectors::F16(_) => {
                        self.bank.rows_f32_into(r, r + 1, scratch);
                        scratch
                    }
                };
                let s = dot(&q, x);
                let s = match self.metric {
                    Metric::InnerProduct => s,
                    Metric::Cosine => {
                        let n = norm(x);
                        if n > 0.0 {
                            s * (1.0 / n)
                        } else {
                            0.0
                        }
                    }
                };
                (key as u32, s)
            })
            .collect();
        hits.sort_unstable_by(hit_order);
        hits.truncate(k);
        hits
    }

    /// The sidecar describing this index (`index_bytes` is 0 until saved).
    pub fn sidecar(&self) -> &HnswSidecar {
        &self.sidecar
    }
}

/// The Euclidean norm as [`crate::Flat`] computes it (a float32 sum).
fn norm(x: &[f32]) -> f32 {
    x.iter().map(|v| v * v).sum::<f32>().sqrt()
}

/// Thread contexts reserved in usearch: one per worker of the current rayon
/// pool or per core, whichever is more, plus the caller. One
/// [`Index::search`] call never runs more searches at once than this.
fn search_contexts() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    rayon::current_num_threads().max(cores) + 1
}

impl Index for Hnsw<'_> {
    fn len(&self) -> usize {
        self.rows
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn metric(&self) -> Metric {
        self.metric
    }

    fn search(
        &self,
        queries: &[f32],
        k: usize,
        exclude: &[Vec<u32>],
    ) -> Result<Vec<Vec<Hit>>, SearchError> {
        check_request(self.rows, self.dim, queries, k, exclude)?;
        let exclude = sorted_exclusions(exclude);
        // The whole candidate list of the walk (usearch widens it to `count`).
        let count = self.index.expansion_search().max(k).min(self.rows);
        let one = |i: usize, q: &[f32], scratch: &mut Vec<f32>| -> Result<Vec<Hit>, SearchError> {
            let matches = match exclude.get(i).filter(|e| !e.is_empty()) {
                None => self.index.search(q, count),
                Some(ex) => self
                    .index
                    .filtered_search(q, count, |key| ex.binary_search(&(key as u32)).is_err()),
            }
            .map_err(usearch_err)?;
            Ok(self.rescore(q, &matches.keys, k, scratch))
        };
        // At most `contexts - 1` searches at once (usearch refuses a search
        // when every reserved context is busy): that many workers, each taking
        // the next query until none is left, so that a worker the machine
        // slows down is never left holding a fixed share of the queries.
        let nq = queries.len() / self.dim;
        let next = AtomicUsize::new(0);
        let done: Vec<Vec<(usize, Vec<Hit>)>> = (0..(self.contexts - 1).min(nq))
            .into_par_iter()
            .map(|_| {
                let (mut scratch, mut done) = (Vec::new(), Vec::new());
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= nq {
                        return Ok(done);
                    }
                    let q = &queries[i * self.dim..(i + 1) * self.dim];
                    match one(i, q, &mut scratch) {
                        Ok(hits) => done.push((i, hits)),
                        Err(e) => {
                            next.store(nq, Ordering::Relaxed);
                            return Err(e);
                        }
                    }
                }
            })
            .collect::<Result<_, _>>()?;
        let mut hits = vec![Vec::new(); nq];
        for (i, h) in done.into_iter().flatten() {
            hits[i] = h;
        }
        Ok(hits)
    }
}
