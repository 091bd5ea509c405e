//! Scoring a query tower and the baselines: Recall@k (Hit@k for an LVM)
//! and MRR@10 of the target row, and the mean cosine to the target vector.

use tandem_data::{Dataset, Example, QueryKind};
use tandem_nn::Model;
use tandem_search::{Flat, Index, Metric};

use crate::config::TrainConfig;
use crate::encode::{self, eval_depth};
use crate::harness::Scores;
use crate::TrainError;

/// The exact inner-product index over the bank itself, built the first
/// time it is asked for and kept in `slot` for the rest of the run (it
/// rounds the bank to int8 once instead of at every validation).
pub(super) fn bank_index<'s, 'a>(
    ds: &'a Dataset,
    slot: &'s mut Option<Flat<'a>>,
) -> Result<&'s Flat<'a>, TrainError> {
    if slot.is_none() {
        let flat =
            Flat::new(ds.bank(), Metric::InnerProduct).map_err(|e| data_err(ds, e.to_string()))?;
        *slot = Some(flat);
    }
    Ok(slot.as_ref().expect("just built"))
}

/// Scores `model` on `examples` with the validation metrics. An identity
/// doc tower ranks the bank itself, with the run's [`bank_index`].
pub(super) fn evaluate_model<'a>(
    cfg: &TrainConfig,
    model: &Model,
    ds: &'a Dataset,
    examples: &[Example<'_>],
    label: &str,
    slot: &mut Option<Flat<'a>>,
) -> Result<Scores, TrainError> {
    let mut encoded = None;
    let learned;
    let index: &Flat<'_> = if model.doc_is_learned() {
        learned = encode::doc_index(model, ds.bank(), &mut encoded)?;
        &learned
    } else {
        bank_index(ds, slot)?
    };
    let mut encoder = encode::QueryEncoder::default();
    let values = score(ds, examples, index, &cfg.ks, label, |batch, out| {
        encoder.encode(model, ds, batch, out)
    })?;
    Ok(named(cfg, values))
}

/// Scores the last-vector and mean-of-context baselines on `examples` (the
/// same examples the model is scored on), with the run's [`bank_index`].
pub(super) fn baselines<'a>(
    cfg: &TrainConfig,
    ds: &'a Dataset,
    examples: &[Example<'_>],
    slot: &mut Option<Flat<'a>>,
) -> Result<Vec<(String, Scores)>, TrainError> {
    let bank = ds.bank();
    let index = bank_index(ds, slot)?;
    let mut out = Vec::new();
    for kind in QueryKind::ALL {
        let values = score(ds, examples, index, &cfg.ks, kind.name(), |batch, q| {
            for (ex, row) in batch.iter().zip(q.chunks_exact_mut(bank.dim())) {
                kind.query_into(ds, ex.context, row);
            }
        })?;
        out.push((kind.name().to_string(), named(cfg, values)));
    }
    Ok(out)
}

/// Scores the queries `queries_for` writes: Recall@`ks` and MRR@10 of the
/// target row (context rows excluded), then the mean cosine of each query to
/// its target vector, in `TrainConfig::metric_names` order.
fn score<F>(
    ds: &Dataset,
    examples: &[Example<'_>],
    index: &dyn Index,
    ks: &[usize],
    label: &str,
    mut queries_for: F,
) -> Result<Vec<f64>, TrainError>
where
    F: FnMut(&[Example<'_>], &mut [f32]),
{
    let bank = ds.bank();
    let measures = tandem_data::baseline::measures(ks);
    let depth = eval_depth(ks, bank.rows());
    let mut cosine = 0.0f64;
    let mut values = tandem_data::baseline::score_queries(
        examples,
        index,
        &measures,
        depth,
        label,
        |batch, out| {
            queries_for(batch, out);
            for (ex, q) in batch.iter().zip(out.chunks_exact(bank.dim())) {
                let t = bank.row_f32(ex.target as usize);
                let (dot, qq, tt) =
                    q.iter()
                        .zip(t.iter())
                        .fold((0.0f64, 0.0f64, 0.0f64), |(d, a, b), (&x, &y)| {
                            (
                                d + f64::from(x) * f64::from(y),
                                a + f64::from(x * x),
                                b + f64::from(y * y),
                            )
                        });
                cosine += dot / (qq.sqrt() * tt.sqrt()).max(1e-12);
            }
            Ok(())
        },
    )
    .map_err(|e| data_err(ds, e.to_string()))?;
    values.push(cosine / examples.len().max(1) as f64);
    Ok(values)
}

/// `values` with the names of the config's validation metrics.
fn named(cfg: &TrainConfig, values: Vec<f64>) -> Scores {
    cfg.metric_names().into_iter().zip(values).collect()
}

fn data_err(ds: &Dataset, problem: String) -> TrainError {
    TrainError::Invalid {
        path: ds.dir().to_path_buf(),
        problem,
        fix: "check the dataset with `tandem baseline`".into(),
    }
}
