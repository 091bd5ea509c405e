//! Scoring a query tower and the baselines: Recall@k (Hit@k for an LVM)
//! and MRR@10 of the target row, and the mean cosine to the target vector.

use tandem_data::{Dataset, Example, QueryKind};
use tandem_nn::Model;
use tandem_search::{Flat, Index, Metric};

use crate::config::TrainConfig;
use crate::encode::{self, eval_depth};
use crate::harness::Scores;
use crate::TrainError;

/// Scores `model` on `examples` with the validation metrics.
pub(super) fn evaluate_model(
    cfg: &TrainConfig,
    model: &Model,
    ds: &Dataset,
    examples: &[Example<'_>],
    label: &str,
) -> Result<Scores, TrainError> {
    let mut encoded = None;
    let index = encode::doc_index(model, ds.bank(), &mut encoded)?;
    let mut encoder = encode::QueryEncoder::default();
    let values = score(ds, examples, &index, &cfg.ks, label, |batch, out| {
        encoder.encode(model, ds, batch, out)
    })?;
    Ok(named(cfg, values))
}

/// Scores the last-vector and mean-of-context baselines on `examples` (the
/// same examples the model is scored on).
pub(super) fn baselines(
    cfg: &TrainConfig,
    ds: &Dataset,
    examples: &[Example<'_>],
) -> Result<Vec<(String, Scores)>, TrainError> {
    let bank = ds.bank();
    let index = Flat::new(bank, Metric::InnerProduct).map_err(|e| data_err(ds, e.to_string()))?;
    let mut out = Vec::new();
    for kind in QueryKind::ALL {
        let values = score(ds, examples, &index, &cfg.ks, kind.name(), |batch, q| {
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
