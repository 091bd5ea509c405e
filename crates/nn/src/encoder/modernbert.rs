//! ModernBERT: pre-norm encoder layers over token embeddings only, rotary
//! positions, global attention every few layers and local (sliding-window)
//! attention in between, and a gated MLP.
//!
//! ```text
//! x = De(LN(tok[id]))                              LN without bias unless norm_bias
//! per layer l:
//!   n = l == 0 ? x : LN(x)                         layer 0 has no attn_norm (Identity)
//!   q, k, v = n Wqkv (+ b)                         Wqkv [3H, H]: q | k | v, heads side by side
//!   q, k = rope(q, theta_l), rope(k, theta_l)      rotate_half layout, position = index t
//!   a = Da(softmax(q k^T / sqrt(dh) + mask)) v     padded keys masked; local layers also mask
//!                                                  |i - j| > local_attention / 2
//!   x = x + Da(a Wo (+ b))
//!   u, g = chunk2(LN(x) Wi (+ b))                  Wi [2 * inter, H]: input | gate
//!   x = x + Dm(act(u) * g) Wo (+ b)                act = hidden_activation (exact GELU)
//! x = LN(x)                                        final_norm
//! ```
//!
//! `De`, `Da` and `Dm` are dropout at `embedding_dropout`,
//! `attention_dropout` and `mlp_dropout` (training passes with seeds only;
//! transformers' defaults are 0).
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
//!
//! The backward pass runs the same steps in reverse; it keeps the input of
//! every norm, each layer's rotated `q, k, v`, attention output and `Wi`
//! output, and recomputes the norms' outputs, the gated activation, the
//! attention probabilities and the dropout masks.

use serde_json::Value;

use super::{
    attention_precision, branch, dropout, linear, stream, tensor, Dropout, Encoder, HfConfig, Norm,
    Rates, Tape, Tensors, TokenBatch,
};
use crate::kernels::{
    add_into, attention, attention_backward, geglu, geglu_backward, rope, rope_backward, scratch,
    scratch_zeroed, Activation, AttnShape, Dense, Precision, Rope, Site,
};
use crate::params::{Params, Slot};
use crate::NnError;

/// transformers' defaults (`ModernBertConfig.default_theta`, `local_attention`,
/// `global_attn_every_n_layers`).
const GLOBAL_THETA: f64 = 160_000.0;
const LOCAL_THETA: f64 = 10_000.0;
const LOCAL_ATTENTION: usize = 128;
const GLOBAL_EVERY: usize = 3;

/// The kinds of dropout site of [`ModernBert::rates`]: `embedding_dropout`,
/// `attention_dropout` (probabilities and output projection),
/// `mlp_dropout` (the gated activations).
const EMBEDDING: usize = 0;
const ATTENTION: usize = 1;
const MLP: usize = 2;

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

/// What one layer keeps for the backward pass.
struct LayerTape {
    /// The layer's input (that of `attn_norm`).
    x: Vec<f32>,
    /// `q, k, v` after the rotation.
    qkv: Vec<f32>,
    /// The attention output.
    ctx: Vec<f32>,
    /// The input of `mlp_norm`.
    r: Vec<f32>,
    /// The output of `Wi` (input | gate).
    inner: Vec<f32>,
}

/// What a ModernBERT forward pass keeps for the backward pass.
#[derive(Default)]
struct ModernBertTape {
    /// The input of the embeddings' norm.
    emb: Vec<f32>,
    layers: Vec<LayerTape>,
    /// The input of `final_norm`.
    last: Vec<f32>,
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
    params: Params,
    tok: Slot,
    emb_norm: Norm,
    layers: Vec<Layer>,
    final_norm: Norm,
    global_rope: Rope,
    local_rope: Rope,
    /// `[EMBEDDING, ATTENTION, MLP]`.
    rates: Rates<3>,
    /// That of the linear layers ([`Encoder::set_precision`]).
    precision: Precision,
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
        let mut params = Params::default();
        let p = &mut params;
        let tok = tensor(t, p, "embeddings.tok_embeddings.weight", &[vocab, hidden])?;
        let emb_norm = Norm::load_opt(t, p, "embeddings.norm", hidden, norm_bias)?;
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
                        Some(Norm::load_opt(
                            t,
                            p,
                            &format!("{l}.attn_norm"),
                            hidden,
                            norm_bias,
                        )?)
                    },
                    qkv: linear(
                        t,
                        p,
                        &format!("{l}.attn.Wqkv"),
                        3 * hidden,
                        hidden,
                        attn_bias,
                    )?,
                    out: linear(t, p, &format!("{l}.attn.Wo"), hidden, hidden, attn_bias)?,
                    mlp_norm: Norm::load_opt(t, p, &format!("{l}.mlp_norm"), hidden, norm_bias)?,
                    wi: linear(t, p, &format!("{l}.mlp.Wi"), 2 * inter, hidden, mlp_bias)?,
                    wo: linear(t, p, &format!("{l}.mlp.Wo"), hidden, inter, mlp_bias)?,
                    global,
                })
            })
            .collect::<Result<Vec<_>, NnError>>()?;
        let final_norm = Norm::load_opt(t, p, "final_norm", hidden, norm_bias)?;
        let rates = Rates::read(
            c,
            ["embedding_dropout", "attention_dropout", "mlp_dropout"],
            [0.0; 3],
        )?;
        Ok(ModernBert {
            hidden,
            heads,
            inter,
            vocab,
            max_pos,
            eps,
            act,
            window: plan.window,
            params,
            tok,
            emb_norm,
            layers,
            final_norm,
            global_rope: Rope::new(head_dim, plan.global_theta, max_pos),
            local_rope: Rope::new(head_dim, plan.local_theta, max_pos),
            rates,
            precision: Precision::F32,
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

    fn layers(&self) -> usize {
        self.layers.len()
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
                d.set_precision(&self.params, precision);
            }
        }
        self.precision = precision;
    }

    fn params(&self) -> &Params {
        &self.params
    }

    fn params_mut(&mut self) -> &mut Params {
        &mut self.params
    }

    fn sync(&mut self) {
        for l in &mut self.layers {
            for d in [&mut l.qkv, &mut l.out, &mut l.wi, &mut l.wo] {
                d.sync(&self.params);
            }
        }
    }

    fn config_dropout(&self) -> f32 {
        self.rates.config_max()
    }

    fn set_dropout(&mut self, mode: Dropout) {
        self.rates.set(mode);
    }

    fn forward_seeded(&self, batch: TokenBatch<'_>, seeds: Option<&[u64]>) -> Vec<f32> {
        self.run(batch, seeds, None)
    }

    fn forward_train(&self, batch: TokenBatch<'_>, seeds: Option<&[u64]>) -> (Vec<f32>, Tape) {
        let mut tape = ModernBertTape {
            layers: Vec::with_capacity(self.layers.len()),
            ..ModernBertTape::default()
        };
        let x = self.run(batch, seeds, Some(&mut tape));
        (x, Tape::new(tape, seeds))
    }

    fn backward(&self, batch: TokenBatch<'_>, tape: Tape, dh: &mut [f32], grads: &mut Params) {
        let (t, seeds): (ModernBertTape, _) = tape.take();
        let (h, len, p, eps) = (self.hidden, batch.len, &self.params, self.eps);
        let (shape, scale) = self.shape(batch);
        let drop = stream(seeds.as_deref(), batch);
        let at = |layer, kind| self.rates.at(drop, layer, kind);
        self.final_norm.backward(p, &t.last, dh, grads, eps);
        let (mut n, mut d1, mut d2, mut dy, mut dqkv) = (
            scratch(),
            scratch(),
            scratch(),
            scratch(),
            scratch_zeroed(3 * dh.len()),
        );
        for ((i, l), lt) in self.layers.iter().enumerate().zip(t.layers).rev() {
            // x = r + Wo(Dm(act(u) * g)), [u | g] = Wi(mlp_norm(r))
            geglu(&lt.inner, self.inter, self.act, &mut n);
            dropout(at(i, MLP), &mut n, Site::FfnInner);
            l.wo.backward(p, &n, dh, grads, Some(&mut d1));
            dropout(at(i, MLP), &mut d1, Site::FfnInner);
            geglu_backward(&lt.inner, self.inter, self.act, &d1, &mut d2);
            n.clone_from(&lt.r);
            l.mlp_norm.apply(p, &mut n, eps);
            l.wi.backward(p, &n, &d2, grads, Some(&mut d1));
            l.mlp_norm.backward(p, &lt.r, &mut d1, grads, eps);
            add_into(dh, &d1);
            // r = x + Da(Wo(attn(rope(Wqkv(attn_norm(x))))))
            let d = branch(at(i, ATTENTION), Site::AttnOut, dh, &mut dy);
            l.out.backward(p, &lt.ctx, d, grads, Some(&mut d1));
            let (r, window) = self.attn_kind(l);
            attention_backward(
                &mut dqkv,
                &d1,
                &lt.qkv,
                3 * h,
                [0, h, 2 * h],
                shape,
                batch.lens,
                scale,
                None,
                window,
                None,
                at(i, ATTENTION),
            );
            rope_backward(&mut dqkv, 3 * h, 0, 2 * self.heads, len, r);
            match &l.attn_norm {
                Some(norm) => {
                    n.clone_from(&lt.x);
                    norm.apply(p, &mut n, eps);
                    l.qkv.backward(p, &n, &dqkv, grads, Some(&mut d1));
                    norm.backward(p, &lt.x, &mut d1, grads, eps);
                }
                None => l.qkv.backward(p, &lt.x, &dqkv, grads, Some(&mut d1)),
            }
            add_into(dh, &d1);
        }
        dropout(at(0, EMBEDDING), dh, Site::Embeddings);
        self.emb_norm.backward(p, &t.emb, dh, grads, eps);
        for (r, &id) in batch.ids.iter().enumerate() {
            if batch.has_state(r) {
                super::add_row(grads.at_mut(self.tok), id as usize, dh, r, h);
            }
        }
    }
}

impl ModernBert {
    /// The attention layout of `batch` and the scores' scale.
    fn shape(&self, batch: TokenBatch<'_>) -> (AttnShape, f32) {
        let head_dim = self.hidden / self.heads;
        let shape = AttnShape {
            batch: batch.rows(),
            len: batch.len,
            heads: self.heads,
            head_dim,
            pad_rows: batch.pad_rows,
        };
        (shape, 1.0 / (head_dim as f32).sqrt())
    }

    /// The rotary tables and attention window of layer `l`.
    fn attn_kind(&self, l: &Layer) -> (&Rope, Option<usize>) {
        if l.global {
            (&self.global_rope, None)
        } else {
            (&self.local_rope, Some(self.window))
        }
    }

    /// The forward pass, with the dropout masks of `seeds` when given;
    /// fills `tape` for the backward pass when given.
    fn run(
        &self,
        batch: TokenBatch<'_>,
        seeds: Option<&[u64]>,
        mut tape: Option<&mut ModernBertTape>,
    ) -> Vec<f32> {
        let (h, len) = (self.hidden, batch.len);
        // the embeddings' masks count as layer 0's
        let drop = stream(seeds, batch);
        let at = |layer, kind| self.rates.at(drop, layer, kind);
        assert!(
            len <= self.max_pos,
            "sequence longer than max_position_embeddings"
        );
        let p = &self.params;
        let tok = p.at(self.tok);
        let mut x = scratch_zeroed(batch.ids.len() * h);
        for (row, &id) in x.chunks_exact_mut(h).zip(batch.ids) {
            row.copy_from_slice(&tok[id as usize * h..(id as usize + 1) * h]);
        }
        let on = tape.is_some();
        let keep = |v: &[f32]| if on { v.to_vec() } else { Vec::new() };
        if let Some(t) = tape.as_deref_mut() {
            t.emb = x.to_vec();
        }
        self.emb_norm.apply(p, &mut x, self.eps);
        dropout(at(0, EMBEDDING), &mut x, Site::Embeddings);
        let (shape, scale) = self.shape(batch);
        let precision = attention_precision(self.precision, drop, on);
        let mut ctx = scratch_zeroed(x.len());
        let (mut n, mut qkv, mut y, mut inner, mut gated) =
            (scratch(), scratch(), scratch(), scratch(), scratch());
        for (i, l) in self.layers.iter().enumerate() {
            let x_in = keep(&x);
            let normed = match &l.attn_norm {
                Some(norm) => {
                    n.clone_from(&x);
                    norm.apply(p, &mut n, self.eps);
                    &n
                }
                None => &x,
            };
            l.qkv.forward(p, normed, &mut qkv);
            let (r, window) = self.attn_kind(l);
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
                at(i, ATTENTION),
                precision,
            );
            l.out.forward(p, &ctx, &mut y);
            dropout(at(i, ATTENTION), &mut y, Site::AttnOut);
            add_into(&mut x, &y);
            let r = keep(&x);
            n.clone_from(&x);
            l.mlp_norm.apply(p, &mut n, self.eps);
            l.wi.forward(p, &n, &mut inner);
            geglu(&inner, self.inter, self.act, &mut gated);
            dropout(at(i, MLP), &mut gated, Site::FfnInner);
            l.wo.forward(p, &gated, &mut y);
            add_into(&mut x, &y);
            if let Some(t) = tape.as_deref_mut() {
                t.layers.push(LayerTape {
                    x: x_in,
                    qkv: qkv.to_vec(),
                    ctx: ctx.to_vec(),
                    r,
                    inner: inner.to_vec(),
                });
            }
        }
        if let Some(t) = tape {
            t.last = x.to_vec();
        }
        self.final_norm.apply(p, &mut x, self.eps);
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
