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
    /// Every mode, in the order of sentence-transformers' config keys.
    pub const ALL: [Mode; 6] = [
        Mode::Cls,
        Mode::Max,
        Mode::Mean,
        Mode::MeanSqrtLen,
        Mode::WeightedMean,
        Mode::LastToken,
    ];

    /// The `pooling_mode_*` key of sentence-transformers' Pooling config.
    pub fn config_key(self) -> &'static str {
        Mode::KEYS
            .iter()
            .find(|(m, _)| *m == self)
            .map(|(_, k)| *k)
            .expect("every mode has a key")
    }

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

impl Pooling {
    /// The backward pass of [`Pooling::pool`] over the same `states` (the
    /// real tokens of one text): adds the gradient of the token states,
    /// given `dout` that of the pooled vector, into `dstates`. Max pooling
    /// sends each column's gradient to its first largest token.
    pub fn backward(&self, states: &[f32], hidden: usize, dout: &[f32], dstates: &mut [f32]) {
        let n = states.len() / hidden;
        for (mode, d) in self.modes.iter().zip(dout.chunks_exact(hidden)) {
            let mut add = |row: usize, w: f32| {
                for (g, v) in dstates[row * hidden..(row + 1) * hidden].iter_mut().zip(d) {
                    *g += w * v;
                }
            };
            match mode {
                Mode::Cls => add(0, 1.0),
                Mode::LastToken => add(n - 1, 1.0),
                Mode::Max => {
                    for (c, g) in d.iter().enumerate() {
                        let mut best = 0;
                        for r in 1..n {
                            if states[r * hidden + c] > states[best * hidden + c] {
                                best = r;
                            }
                        }
                        dstates[best * hidden + c] += g;
                    }
                }
                Mode::Mean | Mode::MeanSqrtLen | Mode::WeightedMean => {
                    let weight = |i: usize| {
                        if *mode == Mode::WeightedMean {
                            (i + 1) as f32
                        } else {
                            1.0
                        }
                    };
                    let total: f32 = (0..n).map(weight).sum();
                    let div = if *mode == Mode::MeanSqrtLen {
                        total.sqrt()
                    } else {
                        total
                    };
                    for i in 0..n {
                        add(i, weight(i) / div);
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
    fn backward_matches_finite_differences() {
        let (n, h) = (5, 3);
        let states: Vec<f32> = (0..n * h)
            .map(|i| ((i * 7) % 11) as f32 / 4.0 - 1.0)
            .collect();
        let all = Pooling {
            modes: vec![
                Mode::Cls,
                Mode::Max,
                Mode::Mean,
                Mode::MeanSqrtLen,
                Mode::WeightedMean,
                Mode::LastToken,
            ],
        };
        let r: Vec<f32> = (0..6 * h)
            .map(|i| ((i * 5) % 7) as f32 / 3.0 - 1.0)
            .collect();
        let loss = |s: &[f32]| -> f64 {
            let mut out = vec![0.0; 6 * h];
            all.pool(s, h, &mut out);
            out.iter().zip(&r).map(|(a, b)| f64::from(a * b)).sum()
        };
        let mut d = vec![0.0; n * h];
        all.backward(&states, h, &r, &mut d);
        for i in 0..n * h {
            let (mut up, mut down) = (states.clone(), states.clone());
            up[i] += 1e-3;
            down[i] -= 1e-3;
            let fd = (loss(&up) - loss(&down)) / 2e-3;
            assert!(
                (fd - f64::from(d[i])).abs() < 1e-3,
                "d[{i}] {} vs {fd}",
                d[i]
            );
        }
    }

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
