//! ModernBERT: pre-norm encoder layers over token embeddings only, rotary
//! positions, global attention every few layers and local (sliding-window)
//! attention in between, and a gated MLP.
//!
//! ```text
//! x = LN(tok[id])                                  LN without bias unless norm_bias
//! per layer l:
//!   n = l == 0 ? x : LN(x)                         layer 0 has no attn_norm (Identity)
//!   q, k, v = n Wqkv (+ b)                         Wqkv [3H, H]: q | k | v, heads side by side
//!   q, k = rope(q, theta_l), rope(k, theta_l)      rotate_half layout, position = index t
//!   a = softmax(q k^T / sqrt(dh) + mask) v         padded keys masked; local layers also mask
//!                                                  |i - j| > local_attention / 2
//!   x = x + a Wo (+ b)
//!   u, g = chunk2(LN(x) Wi (+ b))                  Wi [2 * inter, H]: input | gate
//!   x = x + (act(u) * g) Wo (+ b)                  act = hidden_activation (exact GELU)
//! x = LN(x)                                        final_norm
//! ```
//!
//! Layer `l` is global (`full_attention`, `theta_l` = the global theta) or
//! local (`sliding_attention`, the local theta). transformers 5 writes the
//! plan as `layer_types` and `rope_parameters`; older configs (transformers
//! 4.48 to 4.5x, which wrote every published checkpoint) give
//! `global_attn_every_n_layers` (layer `l` is global iff `l % n == 0`),
//! `global_rope_theta` and `local_rope_theta`. Both are read; the new keys
//! win where a config has both, as in transformers 5.
//!
//! Padding: transformers 5 runs ModernBERT on the padded batch with an
//! additive mask (no unpadding), positions counting from 0 in every row; with
//! right padding the real tokens of a row get the same positions, keys and
//! windows as alone, so their states do not depend on the padding.

use serde_json::Value;

use super::{linear, Encoder, HfConfig, Tensors, TokenBatch};
use crate::kernels::{
    attention, geglu, layer_norm, rope, scratch, scratch_zeroed, Activation, AttnShape, Dense,
    Precision, Rope,
};
use crate::NnError;

/// transformers' defaults (`ModernBertConfig.default_theta`, `local_attention`,
/// `global_attn_every_n_layers`).
const GLOBAL_THETA: f64 = 160_000.0;
const LOCAL_THETA: f64 = 10_000.0;
const LOCAL_ATTENTION: usize = 128;
const GLOBAL_EVERY: usize = 3;

/// A layer norm's weight and optional bias (`norm_bias`).
struct Norm {
    w: Vec<f32>,
    b: Option<Vec<f32>>,
}

impl Norm {
    fn load(t: &mut Tensors, name: &str, width: usize, bias: bool) -> Result<Norm, NnError> {
        Ok(Norm {
            w: t.take(&format!("{name}.weight"), &[width])?,
            b: if bias {
                Some(t.take(&format!("{name}.bias"), &[width])?)
            } else {
                None
            },
        })
    }

    fn apply(&self, x: &mut [f32], eps: f32) {
        layer_norm(x, &self.w, self.b.as_deref(), eps);
    }
}

/// Which layers attend globally, their rotary thetas and the local window.
#[derive(Debug, Clone, PartialEq)]
struct Plan {
    /// Per layer: `true` for global (`full_attention`), `false` for local
    /// (`sliding_attention`).
    global: Vec<bool>,
    /// Rotary theta of the global layers.
    global_theta: f64,
    /// Rotary theta of the local layers.
    local_theta: f64,
    /// Local layers see keys with `|i - j| <= window` (`local_attention / 2`,
    /// inclusive: transformers' `sliding_window`).
    window: usize,
}

impl Plan {
    fn read(c: &HfConfig, layers: usize) -> Result<Plan, NnError> {
        let global = match c.get("layer_types") {
            Some(v) => {
                let list = v.as_array().ok_or_else(|| {
                    NnError::config(
                        format!("config.json: \"layer_types\" is {v}, not a list"),
                        "write one \"full_attention\" or \"sliding_attention\" per layer",
                    )
                })?;
                if list.len() != layers {
                    return Err(NnError::config(
                        format!(
                            "config.json: \"layer_types\" names {} layers, \"num_hidden_layers\" is {layers}",
                            list.len()
                        ),
                        "write one \"full_attention\" or \"sliding_attention\" per layer",
                    ));
                }
                list.iter()
                    .map(|t| match t.as_str() {
                        Some("full_attention") => Ok(true),
                        Some("sliding_attention") => Ok(false),
                        _ => Err(NnError::config(
                            format!("config.json: \"layer_types\" holds {t}"),
                            "use \"full_attention\" or \"sliding_attention\" for each layer",
                        )),
                    })
                    .collect::<Result<Vec<_>, _>>()?
            }
            None => {
                let every = c
                    .opt_usize("global_attn_every_n_layers")?
                    .unwrap_or(GLOBAL_EVERY);
                if every == 0 {
                    return Err(NnError::config(
                        "config.json: \"global_attn_every_n_layers\" is 0",
                        "restore config.json from the model's source (1 makes every layer global)",
                    ));
                }
                (0..layers).map(|i| i % every == 0).collect()
            }
        };
        let params = c.get("rope_parameters");
        if let Some(p) = params {
            if !p.is_object() {
                return Err(NnError::config(
                    format!("config.json: \"rope_parameters\" is {p}, not an object"),
                    "restore config.json from the model's source",
                ));
            }
        }
        check_rope_type(params, "rope_parameters")?;
        check_rope_type(c.get("rope_scaling"), "rope_scaling")?;
        let theta = |kind: &str, old_key: &str, default: f64| -> Result<f64, NnError> {
            let p = params.and_then(|p| p.get(kind)).filter(|p| !p.is_null());
            check_rope_type(p, &format!("rope_parameters.{kind}"))?;
            let v = match p.and_then(|p| p.get("rope_theta")).filter(|v| !v.is_null()) {
                Some(v) => v.as_f64().ok_or_else(|| {
                    NnError::config(
                        format!("config.json: \"rope_parameters.{kind}.rope_theta\" is {v}, not a number"),
                        "restore config.json from the model's source",
                    )
                })?,
                None => c.opt_f64(old_key)?.unwrap_or(default),
            };
            if v.is_finite() && v > 1.0 {
                Ok(v)
            } else {
                Err(NnError::config(
                    format!("config.json: the rope theta of {kind} layers is {v}"),
                    "restore config.json from the model's source (thetas are > 1)",
                ))
            }
        };
        let global_theta = theta("full_attention", "global_rope_theta", GLOBAL_THETA)?;
        let local_theta = theta("sliding_attention", "local_rope_theta", LOCAL_THETA)?;
        let window = match c.opt_usize("local_attention")? {
            Some(n) => n / 2,
            None => c
                .opt_usize("sliding_window")?
                .unwrap_or(LOCAL_ATTENTION / 2),
        };
        Ok(Plan {
            global,
            global_theta,
            local_theta,
            window,
        })
    }
}

/// Refuses rotary scaling other than the plain (`default`) kind.
fn check_rope_type(p: Option<&Value>, key: &str) -> Result<(), NnError> {
    let ty = p.and_then(|p| p.get("rope_type").or_else(|| p.get("type")));
    match ty.and_then(Value::as_str) {
        None | Some("default") => Ok(()),
        Some(other) => Err(NnError::config(
            format!("config.json: {key} asks for rope_type {other:?}"),
            "use a model with plain rotary embeddings (rope_type \"default\")",
        )),
    }
}

struct Layer {
    /// `None` in layer 0 (`attn_norm` is Identity there).
    attn_norm: Option<Norm>,
    qkv: Dense,
    out: Dense,
    mlp_norm: Norm,
    wi: Dense,
    wo: Dense,
    global: bool,
}

pub(super) struct ModernBert {
    hidden: usize,
    heads: usize,
    inter: usize,
    vocab: usize,
    max_pos: usize,
    eps: f32,
    act: Activation,
    window: usize,
    tok: Vec<f32>,
    emb_norm: Norm,
    layers: Vec<Layer>,
    final_norm: Norm,
    global_rope: Rope,
    local_rope: Rope,
}

impl ModernBert {
    pub(super) fn load(c: &HfConfig, t: &mut Tensors) -> Result<Box<dyn Encoder>, NnError> {
        Ok(Box::new(ModernBert::build(c, t)?))
    }

    fn build(c: &HfConfig, t: &mut Tensors) -> Result<ModernBert, NnError> {
        let hidden = c.usize("hidden_size")?;
        let heads = c.usize("num_attention_heads")?;
        let n_layers = c.usize("num_hidden_layers")?;
        let inter = c.usize("intermediate_size")?;
        let vocab = c.usize("vocab_size")?;
        let max_pos = c.usize("max_position_embeddings")?;
        let eps = c.opt_f64("norm_eps")?.unwrap_or(1e-5) as f32;
        let norm_bias = c.opt_bool("norm_bias").unwrap_or(false);
        let attn_bias = c.opt_bool("attention_bias").unwrap_or(false);
        let mlp_bias = c.opt_bool("mlp_bias").unwrap_or(false);
        super::check_heads(hidden, heads)?;
        let head_dim = hidden / heads;
        if head_dim % 2 != 0 {
            return Err(NnError::config(
                format!("heads of {head_dim} (hidden_size / num_attention_heads) are odd"),
                "restore config.json from the model's source (rotary heads have an even width)",
            ));
        }
        let act = super::activation(c, "hidden_activation", "gelu")?;
        let plan = Plan::read(c, n_layers)?;
        t.find_prefix(&["embeddings.tok_embeddings.weight"], "modernbert")?;
        let tok = t.take("embeddings.tok_embeddings.weight", &[vocab, hidden])?;
        let emb_norm = Norm::load(t, "embeddings.norm", hidden, norm_bias)?;
        let layers = plan
            .global
            .iter()
            .enumerate()
            .map(|(i, &global)| {
                let l = format!("layers.{i}");
                Ok(Layer {
                    attn_norm: if i == 0 {
                        None
                    } else {
                        Some(Norm::load(t, &format!("{l}.attn_norm"), hidden, norm_bias)?)
                    },
                    qkv: linear(t, &format!("{l}.attn.Wqkv"), 3 * hidden, hidden, attn_bias)?,
                    out: linear(t, &format!("{l}.attn.Wo"), hidden, hidden, attn_bias)?,
                    mlp_norm: Norm::load(t, &format!("{l}.mlp_norm"), hidden, norm_bias)?,
                    wi: linear(t, &format!("{l}.mlp.Wi"), 2 * inter, hidden, mlp_bias)?,
                    wo: linear(t, &format!("{l}.mlp.Wo"), hidden, inter, mlp_bias)?,
                    global,
                })
            })
            .collect::<Result<Vec<_>, NnError>>()?;
        let final_norm = Norm::load(t, "final_norm", hidden, norm_bias)?;
        Ok(ModernBert {
            hidden,
            heads,
            inter,
            vocab,
            max_pos,
            eps,
            act,
            window: plan.window,
            tok,
            emb_norm,
            layers,
            final_norm,
            global_rope: Rope::new(head_dim, plan.global_theta, max_pos),
            local_rope: Rope::new(head_dim, plan.local_theta, max_pos),
        })
    }
}

impl Encoder for ModernBert {
    fn model_type(&self) -> &str {
        "modernbert"
    }

    fn hidden(&self) -> usize {
        self.hidden
    }

    fn vocab_size(&self) -> usize {
        self.vocab
    }

    fn max_len(&self) -> Option<usize> {
        Some(self.max_pos)
    }

    fn set_precision(&mut self, precision: Precision) {
        for l in &mut self.layers {
            for d in [&mut l.qkv, &mut l.out, &mut l.wi, &mut l.wo] {
                d.set_precision(precision);
            }
        }
    }

    fn forward(&self, batch: TokenBatch<'_>) -> Vec<f32> {
        let (h, len) = (self.hidden, batch.len);
        assert!(
            len <= self.max_pos,
            "sequence longer than max_position_embeddings"
        );
        let mut x = scratch_zeroed(batch.ids.len() * h);
        for (row, &id) in x.chunks_exact_mut(h).zip(batch.ids) {
            row.copy_from_slice(&self.tok[id as usize * h..(id as usize + 1) * h]);
        }
        self.emb_norm.apply(&mut x, self.eps);
        let shape = AttnShape {
            batch: batch.rows(),
            len,
            heads: self.heads,
            head_dim: h / self.heads,
        };
        let scale = 1.0 / ((h / self.heads) as f32).sqrt();
        let mut ctx = scratch_zeroed(x.len());
        let (mut n, mut qkv, mut y, mut inner, mut gated) =
            (scratch(), scratch(), scratch(), scratch(), scratch());
        for l in &self.layers {
            let normed = match &l.attn_norm {
                Some(norm) => {
                    n.clone_from(&x);
                    norm.apply(&mut n, self.eps);
                    &n
                }
                None => &x,
            };
            l.qkv.forward(normed, &mut qkv);
            let (r, window) = if l.global {
                (&self.global_rope, None)
            } else {
                (&self.local_rope, Some(self.window))
            };
            // q and k lie side by side in columns 0..2H: 2 * heads rotary heads.
            rope(&mut qkv, 3 * h, 0, 2 * self.heads, len, r);
            attention(
                &mut ctx,
                &qkv,
                3 * h,
                [0, h, 2 * h],
                shape,
                batch.lens,
                scale,
                None,
                window,
            );
            l.out.forward(&ctx, &mut y);
            super::add_into(&mut x, &y);
            n.clone_from(&x);
            l.mlp_norm.apply(&mut n, self.eps);
            l.wi.forward(&n, &mut inner);
            geglu(&inner, self.inter, self.act, &mut gated);
            l.wo.forward(&gated, &mut y);
            super::add_into(&mut x, &y);
        }
        self.final_norm.apply(&mut x, self.eps);
        x.into_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(json: &str) -> Result<Plan, NnError> {
        let c = HfConfig::parse(json).unwrap();
        Plan::read(&c, c.usize("num_hidden_layers").unwrap())
    }

    #[test]
    fn old_and_new_config_forms_give_the_same_plan() {
        // transformers 4.48-4.5x (answerdotai/ModernBERT-base's config.json).
        let old = plan(
            r#"{"model_type": "modernbert", "num_hidden_layers": 7,
                "global_attn_every_n_layers": 3, "global_rope_theta": 160000.0,
                "local_rope_theta": 10000.0, "local_attention": 128}"#,
        )
        .unwrap();
        // transformers 5.
        let new = plan(
            r#"{"model_type": "modernbert", "num_hidden_layers": 7, "local_attention": 128,
                "layer_types": ["full_attention", "sliding_attention", "sliding_attention",
                                "full_attention", "sliding_attention", "sliding_attention",
                                "full_attention"],
                "rope_parameters": {
                    "full_attention": {"rope_theta": 160000.0, "rope_type": "default"},
                    "sliding_attention": {"rope_theta": 10000.0, "rope_type": "default"}}}"#,
        )
        .unwrap();
        let want = Plan {
            global: vec![true, false, false, true, false, false, true],
            global_theta: 160_000.0,
            local_theta: 10_000.0,
            window: 64,
        };
        assert_eq!(old, want);
        assert_eq!(new, want);
        // Neither form: transformers' defaults, which are the same plan.
        let bare = plan(r#"{"model_type": "modernbert", "num_hidden_layers": 7}"#).unwrap();
        assert_eq!(bare, want);
    }

    #[test]
    fn new_keys_win_and_bad_plans_are_refused() {
        let both = plan(
            r#"{"num_hidden_layers": 3, "global_attn_every_n_layers": 2, "local_attention": 8,
                "global_rope_theta": 1.0e6, "layer_types":
                ["full_attention", "full_attention", "sliding_attention"],
                "rope_parameters": {"full_attention": {"rope_theta": 5.0e5},
                                    "sliding_attention": {"rope_theta": 1.0e4}}}"#,
        )
        .unwrap();
        assert_eq!(both.global, vec![true, true, false]);
        assert_eq!(
            (both.global_theta, both.local_theta, both.window),
            (5.0e5, 1.0e4, 4)
        );
        let short = plan(r#"{"num_hidden_layers": 3, "layer_types": ["full_attention"]}"#);
        assert!(short.unwrap_err().to_string().contains("layer_types"));
        let every0 = plan(r#"{"num_hidden_layers": 3, "global_attn_every_n_layers": 0}"#);
        assert!(every0
            .unwrap_err()
            .to_string()
            .contains("global_attn_every_n_layers"));
        let yarn = plan(
            r#"{"num_hidden_layers": 1, "rope_parameters":
                {"full_attention": {"rope_theta": 1.0e4, "rope_type": "yarn"}}}"#,
        );
        assert!(yarn.unwrap_err().to_string().contains("yarn"));
    }
}
