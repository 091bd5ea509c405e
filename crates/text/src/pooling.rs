//! sentence-transformers' `Pooling`: token states to one vector per text.

use std::path::Path;

use serde_json::Value;

use crate::TextError;

/// One pooling mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The first token's state (`[CLS]`, `<s>`).
    Cls,
    /// The element-wise maximum over real tokens.
    Max,
    /// The mean over real tokens.
    Mean,
    /// The sum over real tokens divided by the square root of their count.
    MeanSqrtLen,
    /// The mean weighted by position (1, 2, ...).
    WeightedMean,
    /// The last real token's state.
    LastToken,
}

impl Mode {
    /// The `pooling_mode_*` key of this mode, in sentence-transformers'
    /// concatenation order.
    const KEYS: [(Mode, &'static str); 6] = [
        (Mode::Cls, "pooling_mode_cls_token"),
        (Mode::Max, "pooling_mode_max_tokens"),
        (Mode::Mean, "pooling_mode_mean_tokens"),
        (Mode::MeanSqrtLen, "pooling_mode_mean_sqrt_len_tokens"),
        (Mode::WeightedMean, "pooling_mode_weightedmean_tokens"),
        (Mode::LastToken, "pooling_mode_lasttoken"),
    ];

    /// The name sentence-transformers gives the mode.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Cls => "cls",
            Mode::Max => "max",
            Mode::Mean => "mean",
            Mode::MeanSqrtLen => "mean_sqrt_len_tokens",
            Mode::WeightedMean => "weightedmean",
            Mode::LastToken => "lasttoken",
        }
    }
}

/// The modes in use; more than one are concatenated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pooling {
    /// The modes, in output order.
    pub modes: Vec<Mode>,
}

impl Pooling {
    /// Mean pooling (what sentence-transformers uses for a plain
    /// transformer).
    pub fn mean() -> Pooling {
        Pooling {
            modes: vec![Mode::Mean],
        }
    }

    /// Reads `1_Pooling/config.json` (`path` names it in errors).
    pub fn from_config(v: &Value, path: &Path) -> Result<Pooling, TextError> {
        let flag = |k: &str| v.get(k).and_then(Value::as_bool).unwrap_or(false);
        let mut modes: Vec<Mode> = Mode::KEYS
            .iter()
            .filter(|(_, k)| flag(k))
            .map(|&(m, _)| m)
            .collect();
        if modes.is_empty() {
            // sentence-transformers >= 3 may write `pooling_mode` by name
            if let Some(name) = v.get("pooling_mode").and_then(Value::as_str) {
                let m = [
                    ("cls", Mode::Cls),
                    ("max", Mode::Max),
                    ("mean", Mode::Mean),
                    ("mean_sqrt_len_tokens", Mode::MeanSqrtLen),
                    ("weightedmean", Mode::WeightedMean),
                    ("lasttoken", Mode::LastToken),
                ]
                .iter()
                .find(|(n, _)| *n == name)
                .map(|&(_, m)| m);
                modes.extend(m);
            }
        }
        if modes.is_empty() {
            return Err(TextError::file(
                path,
                "no pooling mode is set",
                "set one of pooling_mode_mean_tokens, pooling_mode_cls_token, pooling_mode_max_tokens, pooling_mode_lasttoken to true",
            ));
        }
        if v.get("include_prompt").and_then(Value::as_bool) == Some(false) {
            return Err(TextError::file(
                path,
                "include_prompt false (prompt tokens left out of the pooling) is not supported yet",
                "set include_prompt to true, or embed without a prompt",
            ));
        }
        Ok(Pooling { modes })
    }

    /// The output width for token states of width `hidden`.
    pub fn width(&self, hidden: usize) -> usize {
        self.modes.len() * hidden
    }

    /// Pools the `n` real token states (`[n, hidden]`, first of the padded
    /// rows) into `out` (`[width]`).
    pub fn pool(&self, states: &[f32], hidden: usize, out: &mut [f32]) {
        let n = states.len() / hidden;
        for (mode, out) in self.modes.iter().zip(out.chunks_exact_mut(hidden)) {
            let rows = states.chunks_exact(hidden);
            match mode {
                Mode::Cls => out.copy_from_slice(&states[..hidden]),
                Mode::LastToken => out.copy_from_slice(&states[(n - 1) * hidden..n * hidden]),
                Mode::Max => {
                    out.fill(f32::NEG_INFINITY);
                    for r in rows {
                        for (o, v) in out.iter_mut().zip(r) {
                            *o = o.max(*v);
                        }
                    }
                }
                Mode::Mean | Mode::MeanSqrtLen | Mode::WeightedMean => {
                    out.fill(0.0);
                    let mut total = 0.0f32;
                    for (i, r) in rows.enumerate() {
                        let w = if *mode == Mode::WeightedMean {
                            (i + 1) as f32
                        } else {
                            1.0
                        };
                        total += w;
                        for (o, v) in out.iter_mut().zip(r) {
                            *o += w * v;
                        }
                    }
                    let div = if *mode == Mode::MeanSqrtLen {
                        total.sqrt()
                    } else {
                        total
                    };
                    for o in out.iter_mut() {
                        *o /= div;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_pool_the_real_tokens() {
        let states = [1.0, 2.0, 3.0, -4.0, 5.0, 0.0];
        let mut out = vec![0.0; 2];
        let one = |m: Mode| Pooling { modes: vec![m] };
        one(Mode::Mean).pool(&states, 2, &mut out);
        assert_eq!(out, vec![3.0, -2.0 / 3.0]);
        one(Mode::Max).pool(&states, 2, &mut out);
        assert_eq!(out, vec![5.0, 2.0]);
        one(Mode::Cls).pool(&states, 2, &mut out);
        assert_eq!(out, vec![1.0, 2.0]);
        one(Mode::LastToken).pool(&states, 2, &mut out);
        assert_eq!(out, vec![5.0, 0.0]);
        one(Mode::WeightedMean).pool(&states, 2, &mut out);
        assert_eq!(out, vec![(1.0 + 6.0 + 15.0) / 6.0, (2.0 - 8.0) / 6.0]);
        let mut two = vec![0.0; 4];
        Pooling {
            modes: vec![Mode::Cls, Mode::Max],
        }
        .pool(&states, 2, &mut two);
        assert_eq!(two, vec![1.0, 2.0, 5.0, 2.0]);
    }

    #[test]
    fn config_without_a_mode_is_refused() {
        let v = serde_json::json!({"word_embedding_dimension": 4});
        let e = Pooling::from_config(&v, Path::new("1_Pooling/config.json")).unwrap_err();
        assert!(e.to_string().contains("no pooling mode"), "{e}");
    }
}
