//! Applying a trained model: query vectors of a split, the doc tower over a
//! whole bank, and a split's ranking as a TREC run with its qrels.

use std::io::Write;
use std::path::Path;

use rayon::prelude::*;
use tandem_bank::Bank;
use tandem_data::baseline::context_exclusions;
use tandem_data::{Dataset, Example};
use tandem_nn::{Batch, DocCache, Model, QueryCache};
use tandem_search::{Flat, Index, Metric};

use crate::checkpoint;
use crate::TrainError;

/// Examples encoded at a time.
const CHUNK: usize = 1024;

/// Builds the left-padded context batch of `examples` into `x`/`lens`.
pub fn fill_batch(
    bank: &Bank,
    examples: &[&Example<'_>],
    len: usize,
    x: &mut Vec<f32>,
    lens: &mut Vec<usize>,
) {
    let d = bank.dim();
    x.clear();
    x.resize(examples.len() * len * d, 0.0);
    lens.clear();
    for (i, ex) in examples.iter().enumerate() {
        let ctx = &ex.context[ex.context.len().saturating_sub(len)..];
        lens.push(ctx.len());
        for (k, &r) in ctx.iter().enumerate() {
            let t = len - ctx.len() + k;
            bank.rows_f32_into(
                r as usize,
                r as usize + 1,
                &mut x[(i * len + t) * d..(i * len + t + 1) * d],
            );
        }
    }
}

/// Ranking depth of an evaluation with Recall@`ks` and MRR@10.
pub fn eval_depth(ks: &[usize], rows: usize) -> usize {
    ks.iter()
        .copied()
        .chain([tandem_data::baseline::MRR_CUTOFF])
        .max()
        .unwrap_or(10)
        .min(rows)
}

/// Encodes contexts into query vectors, reusing its buffers.
#[derive(Default)]
pub struct QueryEncoder {
    cache: QueryCache,
    x: Vec<f32>,
    lens: Vec<usize>,
}

impl QueryEncoder {
    /// Writes the query of each of `examples` into `out` (`[n, D]`).
    pub fn encode(
        &mut self,
        model: &Model,
        ds: &Dataset,
        examples: &[Example<'_>],
        out: &mut [f32],
    ) {
        let bank = ds.bank();
        let len = ds.context_len();
        let refs: Vec<&Example<'_>> = examples.iter().collect();
        fill_batch(bank, &refs, len, &mut self.x, &mut self.lens);
        let batch = Batch {
            x: &self.x,
            lens: &self.lens,
            len,
            dim: bank.dim(),
        };
        model.forward_queries(&batch, &mut self.cache);
        out.copy_from_slice(self.cache.queries());
    }
}

/// The query vectors (`[examples, D]`) of `examples`.
pub fn encode_examples(model: &Model, ds: &Dataset, examples: &[Example<'_>]) -> Vec<f32> {
    let d = ds.bank().dim();
    let bar = tandem_io::progress(examples.len() as u64, "encode");
    let mut out = vec![0.0; examples.len() * d];
    let mut encoder = QueryEncoder::default();
    for (chunk, o) in examples.chunks(CHUNK).zip(out.chunks_mut(CHUNK * d)) {
        encoder.encode(model, ds, chunk, o);
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    out
}

/// An exact inner-product index over the doc vectors of `bank`: the bank
/// itself for an identity doc tower, else the doc tower's output, kept in
/// `encoded`.
pub fn doc_index<'a>(
    model: &Model,
    bank: &'a Bank,
    encoded: &'a mut Option<Bank>,
) -> Result<Flat<'a>, TrainError> {
    let target: &'a Bank = if model.doc_is_learned() {
        encoded.insert(encode_bank(model, bank))
    } else {
        bank
    };
    Flat::new(target, Metric::InnerProduct).map_err(|e| TrainError::Invalid {
        path: bank.path().map(Path::to_path_buf).unwrap_or_default(),
        problem: e.to_string(),
        fix: "check the bank with `tandem bank info`".into(),
    })
}

/// The doc tower applied to every row of `bank`, `[rows, D]` float32.
pub fn doc_vectors(model: &Model, bank: &Bank) -> Vec<f32> {
    let rows = bank.rows();
    let chunks: Vec<Vec<f32>> = (0..rows.div_ceil(CHUNK))
        .into_par_iter()
        .map(|c| {
            let (a, b) = (c * CHUNK, ((c + 1) * CHUNK).min(rows));
            let mut cache = DocCache::default();
            model.forward_docs(&bank.rows_f32(a, b), &mut cache);
            cache.docs().to_vec()
        })
        .collect();
    chunks.concat()
}

/// The doc tower applied to every row of `bank` (an in-memory f32 bank).
pub fn encode_bank(model: &Model, bank: &Bank) -> Bank {
    Bank::from_f32(doc_vectors(model, bank), bank.dim())
}

/// Query ids of a split's examples: `<sequence id>/<position of the target>`.
pub fn query_ids(ds: &Dataset, examples: &[Example<'_>]) -> Vec<String> {
    let seqs = ds.sequences();
    examples
        .iter()
        .map(|ex| {
            let rows = &seqs[ex.seq].rows;
            let end = ex.context.as_ptr() as usize - rows.as_ptr() as usize;
            let pos = end / std::mem::size_of::<u32>() + ex.context.len();
            format!("{}/{pos}", seqs[ex.seq].id)
        })
        .collect()
}

/// Writes the ranking of `examples` by `model` (top max(ks) rows per example,
/// context rows excluded) as a TREC run, and its qrels (the target row of
/// each example, relevance 1), both atomically.
pub fn write_ranking(
    model: &Model,
    ds: &Dataset,
    examples: &[Example<'_>],
    run: &Path,
    qrels: &Path,
    ks: &[usize],
) -> Result<(), TrainError> {
    write_ranking_with(model, ds, examples, run, qrels, ks, None)
}

/// [`write_ranking`] with `bank_index`, an exact inner-product index over
/// the bank already built, used when the doc tower is the identity.
pub fn write_ranking_with(
    model: &Model,
    ds: &Dataset,
    examples: &[Example<'_>],
    run: &Path,
    qrels: &Path,
    ks: &[usize],
    bank_index: Option<&Flat<'_>>,
) -> Result<(), TrainError> {
    let queries = encode_examples(model, ds, examples);
    let bank = ds.bank();
    let mut encoded = None;
    let built;
    let index = match bank_index {
        Some(index) if !model.doc_is_learned() => index,
        _ => {
            built = doc_index(model, bank, &mut encoded)?;
            &built
        }
    };
    let depth = eval_depth(ks, bank.rows());
    let hits = index
        .search(&queries, depth, &context_exclusions(examples))
        .map_err(|e| TrainError::Invalid {
            path: ds.dir().to_path_buf(),
            problem: e.to_string(),
            fix: "check the bank with `tandem bank info`".into(),
        })?;
    let qids = query_ids(ds, examples);
    tandem_io::write_atomic(run, tandem_io::Overwrite::Allow, |w| {
        for (qid, hits) in qids.iter().zip(&hits) {
            let ids: Vec<(String, f32)> = hits
                .iter()
                .map(|&(r, s)| (bank.doc_id(r as usize).into_owned(), s))
                .collect();
            tandem_eval::trec::write_run_lines(
                w,
                qid,
                ids.iter().map(|(i, s)| (i.as_str(), s)),
                "tandem",
            )?;
        }
        Ok(())
    })?;
    tandem_io::write_atomic(qrels, tandem_io::Overwrite::Allow, |w| {
        for (qid, ex) in qids.iter().zip(examples) {
            writeln!(w, "{qid} 0 {} 1", bank.doc_id(ex.target as usize))?;
        }
        Ok(())
    })?;
    Ok(())
}

/// The checkpoint `path` names (a checkpoint directory, or a run directory:
/// its best checkpoint, else its newest complete one), verified against its
/// MANIFEST.
pub fn checkpoint_of(path: &Path) -> Result<checkpoint::Loaded, TrainError> {
    if path.join(checkpoint::MANIFEST).exists() || path.join("model.safetensors").exists() {
        return checkpoint::load_dir(path);
    }
    if let Some(step) = checkpoint::best_step(path)? {
        return checkpoint::load_dir(
            &checkpoint::checkpoints_dir(path).join(checkpoint::step_dir_name(step)),
        );
    }
    checkpoint::newest_complete(path)?.ok_or_else(|| TrainError::Checkpoint {
        path: path.to_path_buf(),
        problem: "no checkpoint here".into(),
        fix: "pass a checkpoint directory (run/checkpoints/step-N) or a run directory".into(),
    })
}

/// The model of a verified checkpoint (its shape from the header of
/// `model.safetensors`).
pub fn model_of(ck: &checkpoint::Loaded) -> Result<Model, TrainError> {
    let path = ck.dir.join("model.safetensors");
    let bytes = ck.file("model.safetensors")?;
    let bad = |problem: String| TrainError::Checkpoint {
        path: path.clone(),
        problem,
        fix: "point at a checkpoint written by tandem train".into(),
    };
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| bad(format!("not a safetensors file ({e})")))?;
    let cfg: tandem_nn::ModelConfig = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("config"))
        .and_then(|c| serde_json::from_str(c).ok())
        .ok_or_else(|| bad("no model config in the header".into()))?;
    let mut model = Model::new(cfg, 0).map_err(|e| bad(e.to_string()))?;
    model
        .params_mut()
        .load_safetensors(&path, bytes)
        .map_err(|e| bad(e.to_string()))?;
    Ok(model)
}

/// Checks that checkpoint `ck` was trained for `task` on the bank of `ds`
/// (its task in `config.toml`, the bank's fingerprint in `state.json`), so
/// that `flag` is not given a model of another kind or of another bank.
pub fn check_checkpoint_for(
    ck: &checkpoint::Loaded,
    ds: &Dataset,
    task: crate::TaskKind,
    flag: &str,
) -> Result<(), TrainError> {
    let bad = |problem: String, fix: String| TrainError::Checkpoint {
        path: ck.dir.clone(),
        problem,
        fix,
    };
    let cfg_path = ck.dir.join("config.toml");
    let text = String::from_utf8_lossy(ck.file("config.toml")?).into_owned();
    let cfg = crate::TrainConfig::from_toml(&cfg_path, &text)?;
    if cfg.task != task {
        let want = match task {
            crate::TaskKind::Lvm => "a run of `tandem lvm train`",
            crate::TaskKind::Retriever => "a run of `tandem train`",
            crate::TaskKind::Dense => "a run of `tandem train --task dense`",
        };
        return Err(bad(
            format!(
                "{flag} needs a model with task {task}, this one was trained with task {}",
                cfg.task
            ),
            format!("pass {flag} {want}"),
        ));
    }
    #[derive(serde::Deserialize)]
    struct Data {
        bank: tandem_search::BankFingerprint,
    }
    #[derive(serde::Deserialize)]
    struct State {
        data: Data,
    }
    let state: State = serde_json::from_slice(ck.file("state.json")?).map_err(|e| {
        bad(
            format!("state.json does not record its dataset ({e})"),
            "pass a checkpoint written by this version of tandem".into(),
        )
    })?;
    let here = tandem_search::BankFingerprint::of(ds.bank());
    if state.data.bank != here {
        return Err(bad(
            format!(
                "{flag} was trained on another bank ({} x {}) than the one of {} ({} x {}, or the same shape with other vectors)",
                state.data.bank.rows,
                state.data.bank.dim,
                ds.dir().display(),
                here.rows,
                here.dim
            ),
            format!("pass {flag} a model trained on this dataset, or --data the dataset it was trained on"),
        ));
    }
    Ok(())
}
