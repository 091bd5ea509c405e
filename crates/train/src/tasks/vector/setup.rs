//! What a vector run is built from: the model's shape, the mining index, the
//! dataset's fingerprint and the memory estimate; and bank rows gathered.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tandem_bank::Bank;
use tandem_data::Dataset;
use tandem_nn::ModelConfig;
use tandem_search::{Flat, Hnsw, Index, Metric, Precision};

use crate::config::{Anchor, TrainConfig};
use crate::encode::eval_depth;
use crate::memory::Estimate;
use crate::TrainError;

/// The model shape a config asks for over `bank`.
pub(super) fn model_config(cfg: &TrainConfig, bank: &Bank) -> ModelConfig {
    ModelConfig {
        kind: cfg.kind,
        dim: bank.dim(),
        hidden: if cfg.hidden == 0 {
            bank.dim()
        } else {
            cfg.hidden
        },
        projection: cfg.projection,
        residual: cfg.residual,
        doc: cfg.doc,
        layers: cfg.layers,
        heads: cfg.heads,
    }
}

/// The rows `rows` of `bank` as float32, into `out`.
pub(super) fn gather(bank: &Bank, rows: &[u32], out: &mut Vec<f32>) {
    let d = bank.dim();
    out.clear();
    out.resize(rows.len() * d, 0.0);
    for (o, &r) in out.chunks_exact_mut(d).zip(rows) {
        bank.rows_f32_into(r as usize, r as usize + 1, o);
    }
}

/// The memory queue's vectors in `queue.safetensors`.
pub(super) fn safetensors_vectors(bytes: &[u8]) -> Option<Vec<f32>> {
    let st = safetensors::SafeTensors::deserialize(bytes).ok()?;
    let t = st.tensor("queue").ok()?;
    Some(
        t.data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    )
}

/// The task's rows of the pre-flight memory estimate (the harness adds the
/// parameters, gradients and moments).
pub(super) fn estimate(
    cfg: &TrainConfig,
    model: &ModelConfig,
    bank: &Bank,
    val: usize,
    train: usize,
    e: &mut Estimate,
) {
    let d = bank.dim() as u64;
    let b = cfg.batch as u64;
    let len = 8u64;
    let h = model.hidden as u64;
    let q = cfg.queue as u64;
    let bank_bytes = bank.rows() as u64 * d * if bank.dtype_name() == "f16" { 2 } else { 4 };
    e.add(
        format!(
            "bank {} x {} {} ({})",
            bank.rows(),
            d,
            bank.dtype_name(),
            if bank.is_mapped() {
                "memory-mapped, paged in on use"
            } else {
                "in memory"
            }
        ),
        bank_bytes,
    );
    e.add(format!("memory queue ({q} x {d} f32)"), q * d * 4 + q * 4);
    if cfg.mine_index.as_os_str().is_empty() {
        let precision = exact_mining(cfg);
        let bytes = Flat::index_bytes(bank.rows(), bank.dim(), precision);
        let what = if bytes > bank.rows() as u64 * 8 {
            "an int8 copy of the bank for the exact scan"
        } else {
            "row norms"
        };
        e.add(format!("mining index ({what})"), bytes);
    }
    if mines_cached(cfg) {
        let bands = crate::mine_cache::bands(&cfg.curriculum).len();
        e.add(
            format!(
                "mining cache (the rows in the band of {train} examples, at most {} each x {bands} band{})",
                cfg.mine_pool,
                if bands == 1 { "" } else { "s" }
            ),
            crate::mine_cache::max_bytes(train, bands, cfg.mine_pool),
        );
    }
    let max_mined = cfg
        .curriculum
        .phases()
        .iter()
        .filter_map(|p| p.band)
        .map(|b| b.count)
        .max()
        .unwrap_or(0) as u64;
    let cands = b + b * max_mined + cfg.random_negatives as u64;
    // Floats kept per context step: a recurrent tower's gates and states; a
    // transformer's ~14 hidden-wide activations per block plus scratch, and
    // its attention weights (heads x L per step and block).
    let per_step = match model.kind {
        tandem_nn::TowerKind::Transformer => {
            let layers = model.layers as u64;
            layers * (14 * h + model.heads as u64 * len) + 11 * h
        }
        _ => 6 * h,
    };
    e.add(
        format!("batch activations (B {b}, L <= {len}, {cands} candidates + {q} queued)"),
        4 * (b * len * (d + per_step) + 2 * cands * d + b * (cands + q) * 2) + b * (cands + q),
    );
    e.add(
        "exact search tiles (mining, validation)",
        2 * 256 * 512 * 4 + 2 * 512 * d * 4,
    );
    let eval_index = Flat::index_bytes(bank.rows(), bank.dim(), Precision::Auto);
    if eval_index > bank.rows() as u64 * 8 {
        e.add(
            if model.doc == tandem_nn::DocTower::Linear {
                "evaluation index (an int8 copy of the doc-encoded bank, while validating)"
            } else {
                "evaluation index (an int8 copy of the bank, kept for the run)"
            },
            eval_index,
        );
    }
    let depth = eval_depth(&cfg.ks, bank.rows()) as u64;
    e.add(
        "evaluation rankings (2,048 queries at a time, trec_eval bookkeeping)",
        (val.min(2048) as u64) * depth * 96,
    );
    if model.doc == tandem_nn::DocTower::Linear {
        e.add(
            "doc-encoded bank for evaluation (f32)",
            bank.rows() as u64 * d * 4,
        );
    }
}

trait DtypeName {
    fn dtype_name(&self) -> &'static str;
}

impl DtypeName for Bank {
    fn dtype_name(&self) -> &'static str {
        match self.vectors() {
            tandem_bank::Vectors::F16(_) => "f16",
            tandem_bank::Vectors::F32(_) => "f32",
        }
    }
}

/// Whether the run keeps a [`HitCache`](crate::mine_cache::HitCache): its
/// curriculum mines, against the positive.
pub(super) fn mines_cached(cfg: &TrainConfig) -> bool {
    cfg.curriculum.mines() && cfg.band_anchor == Anchor::Positive
}

/// The exact mining index's scan: the fastest (an int8 copy of the bank
/// where the CPU scans in int8) when the curriculum mines, float32 (no
/// copy) when the index only checks the bank.
fn exact_mining(cfg: &TrainConfig) -> Precision {
    if cfg.curriculum.mines() {
        Precision::Auto
    } else {
        Precision::F32
    }
}

/// The index the miner searches: exact cosine search, or the HNSW index
/// `mine_index` names (checked to be a cosine index over this bank).
pub(super) fn mining_index<'a>(
    cfg: &TrainConfig,
    bank: &'a Bank,
) -> Result<Box<dyn Index + 'a>, TrainError> {
    if cfg.mine_index.as_os_str().is_empty() {
        let flat = Flat::with_precision(bank, Metric::Cosine, exact_mining(cfg)).map_err(|e| {
            TrainError::Invalid {
                path: bank.path().map(Path::to_path_buf).unwrap_or_default(),
                problem: e.to_string(),
                fix: "check the bank with `tandem bank info`".into(),
            }
        })?;
        return Ok(Box::new(flat));
    }
    let path = &cfg.mine_index;
    let sidecar = PathBuf::from(format!("{}.json", path.display()));
    if !sidecar.is_file() {
        return Err(TrainError::Invalid {
            path: path.clone(),
            problem: format!("not a tandem HNSW index (no {} beside it)", sidecar.display()),
            fix: "build one into a new file: tandem index build --bank <the dataset's bank> --out bank.usearch --metric cosine".into(),
        });
    }
    let hnsw = Hnsw::view(path, bank).map_err(|e| TrainError::Message(e.to_string()))?;
    if hnsw.metric() != Metric::Cosine {
        return Err(TrainError::Invalid {
            path: path.clone(),
            problem: format!(
                "the index measures {}, but the mined band is a cosine",
                hnsw.metric().name()
            ),
            fix: "build it with `tandem index build --metric cosine`".into(),
        });
    }
    Ok(Box::new(hnsw))
}

/// What identifies the dataset a run trains on: its manifest, its
/// sequences file's size and a fingerprint of its bank.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct DataFingerprint {
    manifest_fnv: String,
    sequences_bytes: u64,
    bank: tandem_search::BankFingerprint,
}

impl DataFingerprint {
    /// What differs from `other`: the bank's fields, `dataset.json`,
    /// `sequences.jsonl`.
    pub(super) fn differences(&self, other: &DataFingerprint) -> Vec<String> {
        let mut what = self.bank.differences(&other.bank);
        if self.manifest_fnv != other.manifest_fnv {
            what.push("dataset.json".into());
        }
        if self.sequences_bytes != other.sequences_bytes {
            what.push("sequences.jsonl".into());
        }
        what
    }
}

/// The fingerprint of `ds`.
pub(super) fn data_fingerprint(ds: &Dataset) -> Result<DataFingerprint, TrainError> {
    let manifest = ds.dir().join(tandem_data::MANIFEST_FILE);
    let bytes = fs::read(&manifest).map_err(|e| TrainError::io(&manifest, e))?;
    let seqs = ds.dir().join("sequences.jsonl");
    let sequences_bytes = fs::metadata(&seqs)
        .map_err(|e| TrainError::io(&seqs, e))?
        .len();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in &bytes {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    Ok(DataFingerprint {
        manifest_fnv: format!("{h:016x}"),
        sequences_bytes,
        bank: tandem_search::BankFingerprint::of(ds.bank()),
    })
}
