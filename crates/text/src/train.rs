//! Training an [`Embedder`]: the forward pass that keeps what the backward
//! pass needs, the backward pass from the gradient of the output vectors to
//! every parameter (encoder, then the heads after the pooling), dropout in
//! the encoder with masks drawn from one seed per text, a new projection
//! head, and the model saved back as a sentence-transformers directory.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tandem_nn::encoder::{Dropout, Tape, TokenBatch};
use tandem_nn::kernels::{Activation, Dense, Precision};
use tandem_nn::Params;

use crate::embedder::{Embedder, Head, HeadTape};

/// A training forward pass over a batch of texts, kept for its backward
/// pass.
pub struct Pass {
    ids: Vec<u32>,
    lens: Vec<usize>,
    len: usize,
    states: Vec<f32>,
    /// `None` when the encoder is frozen.
    tape: Option<Tape>,
    heads: HeadTape,
}

/// Pads token sequences into one batch: `(ids, lens, len)`.
pub(crate) fn pad(tokens: &[Vec<u32>]) -> (Vec<u32>, Vec<usize>, usize) {
    let len = tokens.iter().map(Vec::len).max().unwrap_or(1).max(1);
    let mut ids = Vec::with_capacity(tokens.len() * len);
    for t in tokens {
        ids.extend_from_slice(t);
        ids.extend(std::iter::repeat_n(0u32, len - t.len()));
    }
    (ids, tokens.iter().map(Vec::len).collect(), len)
}

impl Embedder {
    /// Every parameter: the encoder's, then the heads'.
    pub fn params(&self) -> &Params {
        self.encoder.params()
    }

    /// Every parameter, to change; call [`Embedder::sync`] after.
    pub fn params_mut(&mut self) -> &mut Params {
        self.encoder.params_mut()
    }

    /// How many of [`Embedder::params`]' tensors (the first ones) belong to
    /// the encoder; the heads' follow.
    pub fn encoder_tensors(&self) -> usize {
        self.encoder_len
    }

    /// Refreshes the bfloat16 copies of the weights after they changed.
    pub fn sync(&mut self) {
        self.encoder.sync();
        let p = self.encoder.params();
        for h in &mut self.heads {
            h.dense.sync(p);
        }
    }

    /// Chooses float32 or bfloat16 matrix products for the forward passes.
    pub fn set_precision(&mut self, precision: Precision) {
        self.encoder.set_precision(precision);
        let p = self.encoder.params();
        for h in &mut self.heads {
            h.dense.set_precision(p, precision);
        }
    }

    /// Adds a linear projection head to `dim` outputs (with a bias, no
    /// activation) after the existing ones, initialised as
    /// `torch.nn.Linear` is (`U(-1/sqrt(in), 1/sqrt(in))`) from `seed`.
    pub fn add_head(&mut self, dim: usize, seed: u64) {
        self.add_linear(dim, seed, true);
    }

    /// [`Embedder::add_head`], with a bias or without one (PyLate's Dense).
    pub(crate) fn add_linear(&mut self, dim: usize, seed: u64, bias: bool) {
        let inp = self.dim;
        let name = format!("{}_Dense", 2 + self.heads.len());
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let k = 1.0 / (inp as f32).sqrt();
        let mut draw = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.gen_range(-k..k)).collect() };
        let w = draw(dim * inp);
        let b = bias.then(|| draw(dim));
        let dense = Dense::add(
            self.encoder.params_mut(),
            &format!("{name}.linear"),
            w,
            b,
            dim,
            inp,
        );
        self.heads.push(Head {
            name,
            dense,
            activation: Activation::Identity,
            activation_name: "torch.nn.modules.linear.Identity".into(),
        });
        self.dim = dim;
    }

    /// Chooses the encoder's dropout in training passes given seeds
    /// ([`Embedder::forward_train`], [`Embedder::embed_tokens_seeded`]);
    /// [`Dropout::Off`] until set. Inference never drops.
    ///
    /// # Panics
    ///
    /// On a [`Dropout::Rate`] outside `[0, 1)`.
    pub fn set_dropout(&mut self, mode: Dropout) {
        self.encoder.set_dropout(mode);
    }

    /// Whether the output vectors are L2-normalised (the model's Normalize
    /// module); turning it off gives the unnormalised vectors of a Gaussian
    /// head.
    pub fn set_normalize(&mut self, on: bool) {
        self.normalize = on;
    }

    /// Whether the output vectors are L2-normalised.
    pub fn normalizes(&self) -> bool {
        self.normalize
    }

    /// The vectors of pre-tokenised texts (`[n, dim]`), one forward pass
    /// over the whole batch, without dropout.
    pub fn embed_tokens(&self, tokens: &[Vec<u32>]) -> Vec<f32> {
        self.embed_tokens_seeded(tokens, None)
    }

    /// [`Embedder::embed_tokens`] with the dropout of
    /// [`Embedder::set_dropout`] when `seeds` (one per text) are given: the
    /// vectors of [`Embedder::forward_train`] with the same seeds, without
    /// keeping activations (GradCache's first pass).
    pub fn embed_tokens_seeded(&self, tokens: &[Vec<u32>], seeds: Option<&[u64]>) -> Vec<f32> {
        let (ids, lens, len) = pad(tokens);
        let batch = TokenBatch {
            ids: &ids,
            lens: &lens,
            len,
            pad_rows: false,
        };
        let states = self.encoder.forward_seeded(batch, seeds);
        let out = self.head_pass(&states, batch, None);
        tandem_nn::kernels::recycle(states);
        out
    }

    /// The vectors of pre-tokenised texts (`[n, dim]`) and what the backward
    /// pass needs. With `seeds` (one per text) the encoder applies the
    /// dropout of [`Embedder::set_dropout`], text `i`'s masks drawn from
    /// `seeds[i]` alone (not from its place in the batch or its padding).
    /// With `train_encoder` false the encoder runs as in inference (no
    /// dropout) and only the heads get gradients.
    pub fn forward_train(
        &self,
        tokens: &[Vec<u32>],
        train_encoder: bool,
        seeds: Option<&[u64]>,
    ) -> (Vec<f32>, Pass) {
        let (ids, lens, len) = pad(tokens);
        let batch = TokenBatch {
            ids: &ids,
            lens: &lens,
            len,
            pad_rows: false,
        };
        let (states, tape) = if train_encoder {
            let (s, t) = self.encoder.forward_train(batch, seeds);
            (s, Some(t))
        } else {
            (self.encoder.forward(batch), None)
        };
        let mut heads = HeadTape::default();
        let out = self.head_pass(&states, batch, Some(&mut heads));
        let pass = Pass {
            ids,
            lens,
            len,
            states,
            tape,
            heads,
        };
        (out, pass)
    }

    /// Adds to `grads` (the layout of [`Embedder::params`]) the gradient of
    /// a loss whose gradient with respect to the vectors of `pass` is
    /// `dout` (`[n, dim]`).
    pub fn backward(&self, pass: Pass, dout: &[f32], grads: &mut Params) {
        let d = self.heads_backward(&pass.heads, dout, self.normalize, grads);
        let Some(tape) = pass.tape else { return };
        let hidden = self.encoder.hidden();
        let width = self.dir.pooling.width(hidden);
        let len = pass.len;
        let mut dstates = vec![0.0f32; pass.states.len()];
        for (b, &n) in pass.lens.iter().enumerate() {
            let rows = b * len * hidden..(b * len + n) * hidden;
            self.dir.pooling.backward(
                &pass.states[rows.clone()],
                hidden,
                &d[b * width..(b + 1) * width],
                &mut dstates[rows],
            );
        }
        let batch = TokenBatch {
            ids: &pass.ids,
            lens: &pass.lens,
            len,
            pad_rows: false,
        };
        self.encoder.backward(batch, tape, &mut dstates, grads);
    }

    /// The backward pass of the normalisation (when `normalized`) and the
    /// heads recorded in `heads`: adds the heads' gradients into `grads`
    /// and returns the gradient of their input, given `dout`, that of the
    /// output vectors.
    pub(crate) fn heads_backward(
        &self,
        heads: &HeadTape,
        dout: &[f32],
        normalized: bool,
        grads: &mut Params,
    ) -> Vec<f32> {
        let p = self.encoder.params();
        let mut d = dout.to_vec();
        if normalized {
            // y = u / |u|: du = (dy - y (y . dy)) / |u|
            let dim = self.dim;
            for (g, u) in d
                .chunks_exact_mut(dim)
                .zip(heads.unnormalised.chunks_exact(dim))
            {
                let norm = u.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
                let yd: f32 = u.iter().zip(g.iter()).map(|(a, b)| a * b).sum::<f32>() / norm;
                for (gv, uv) in g.iter_mut().zip(u) {
                    *gv = (*gv - uv / norm * yd) / norm;
                }
            }
        }
        let mut dx = Vec::new();
        for (i, h) in self.heads.iter().enumerate().rev() {
            h.activation.backward(&heads.steps[2 * i + 1], &mut d);
            h.dense
                .backward(p, &heads.steps[2 * i], &d, grads, Some(&mut dx));
            std::mem::swap(&mut d, &mut dx);
        }
        d
    }
}
