//! A linear layer `y = x W^T + b` whose weights live in a [`Params`], in
//! float32 or bfloat16, with its backward pass.

use rand_chacha::ChaCha8Rng;

use super::bf16::{linear_bf16, PackedBf16};
use crate::linalg::{matmul, matmul_strided, threads, Mat};
use crate::params::{Params, Slot};

crate::named_enum!(
    /// The precision of the matrix products.
    Precision {
        /// float32 throughout.
        F32 = "f32",
        /// bfloat16 inputs and weights, float32 accumulation and everything
        /// else in float32 (the encoders also run the attention's products
        /// so in inference passes).
        Bf16 = "bf16",
    }
);

/// One `torch.nn.Linear` of a [`Dense`]: its weight, its bias, its outputs.
#[derive(Debug, Clone, Copy)]
struct Part {
    w: Slot,
    b: Option<Slot>,
    out: usize,
}

/// One `torch.nn.Linear` (`weight [out, inp]` row-major, optional `bias`),
/// or several over the same input with their outputs side by side (query,
/// key and value as one layer), the tensors held in a [`Params`] under
/// their PyTorch names. In bfloat16 the layer keeps a packed copy of the
/// weights, which [`Dense::sync`] refreshes after they change.
#[derive(Debug, Clone)]
pub struct Dense {
    parts: Vec<Part>,
    inp: usize,
    out: usize,
    /// The bfloat16 weights of every part, stacked, and the stacked bias.
    packed: Option<(PackedBf16, Option<Vec<f32>>)>,
}

impl Dense {
    /// Adds `{name}.weight` (`[out, inp]`) and, when given, `{name}.bias`
    /// to `p`.
    pub fn add(
        p: &mut Params,
        name: &str,
        w: Vec<f32>,
        b: Option<Vec<f32>>,
        out: usize,
        inp: usize,
    ) -> Dense {
        assert_eq!(w.len(), out * inp, "weight of {} for {out}x{inp}", w.len());
        let w = p.push(&format!("{name}.weight"), &[out, inp], w);
        let b = b.map(|b| {
            assert_eq!(b.len(), out, "bias of {} for {out} outputs", b.len());
            p.push(&format!("{name}.bias"), &[out], b)
        });
        Dense::from_slots(w, b, out, inp)
    }

    /// Adds `{name}.weight` and `{name}.bias` with PyTorch's default
    /// initialisation, `U(-1/sqrt(inp), 1/sqrt(inp))` for both.
    pub(crate) fn init(
        p: &mut Params,
        name: &str,
        inp: usize,
        out: usize,
        rng: &mut ChaCha8Rng,
    ) -> Dense {
        let k = 1.0 / (inp as f32).sqrt();
        let w = p.uniform(&format!("{name}.weight"), &[out, inp], k, rng);
        let b = p.uniform(&format!("{name}.bias"), &[out], k, rng);
        Dense::from_slots(w, Some(b), out, inp)
    }

    /// A layer over tensors already in the [`Params`].
    pub(crate) fn from_slots(w: Slot, b: Option<Slot>, out: usize, inp: usize) -> Dense {
        Dense {
            parts: vec![Part { w, b, out }],
            inp,
            out,
            packed: None,
        }
    }

    /// Sets the biases to zero (PyTorch's `MultiheadAttention` output
    /// projection starts so).
    pub(crate) fn zero_bias(&self, p: &mut Params) {
        for part in &self.parts {
            if let Some(b) = part.b {
                p.at_mut(b).fill(0.0);
            }
        }
    }

    /// Stacks layers with the same input along the outputs (e.g. query, key
    /// and value into one product); each keeps its own tensors.
    pub fn stack(layers: Vec<Dense>) -> Dense {
        let inp = layers[0].inp;
        assert!(layers.iter().all(|d| d.inp == inp), "stacked inputs differ");
        let out = layers.iter().map(|d| d.out).sum();
        Dense {
            parts: layers.into_iter().flat_map(|d| d.parts).collect(),
            inp,
            out,
            packed: None,
        }
    }

    /// The input width.
    pub fn inp(&self) -> usize {
        self.inp
    }

    /// The output width.
    pub fn out(&self) -> usize {
        self.out
    }

    /// Chooses the precision of [`Dense::forward`] (packs the bfloat16
    /// weights of `p`).
    pub fn set_precision(&mut self, p: &Params, precision: Precision) {
        self.packed = match precision {
            Precision::F32 => None,
            Precision::Bf16 => Some(self.pack(p)),
        };
    }

    /// Refreshes the bfloat16 copy after the weights in `p` changed.
    pub fn sync(&mut self, p: &Params) {
        if self.packed.is_some() {
            self.packed = Some(self.pack(p));
        }
    }

    fn pack(&self, p: &Params) -> (PackedBf16, Option<Vec<f32>>) {
        let w: Vec<f32> = self
            .parts
            .iter()
            .flat_map(|part| p.at(part.w).iter().copied())
            .collect();
        let has_bias = self.parts.iter().any(|part| part.b.is_some());
        let b = has_bias.then(|| {
            self.parts
                .iter()
                .flat_map(|part| match part.b {
                    Some(b) => p.at(b).to_vec(),
                    None => vec![0.0; part.out],
                })
                .collect()
        });
        (PackedBf16::pack(&w, self.out, self.inp), b)
    }

    /// The parts with the column where their outputs start.
    fn columns(&self) -> impl Iterator<Item = (usize, &Part)> {
        self.parts.iter().scan(0, |at, part| {
            let c = *at;
            *at += part.out;
            Some((c, part))
        })
    }

    /// `y = x W^T + b` over the rows of `x` (`[n, inp]`); `y` becomes
    /// `[n, out]`.
    pub fn forward(&self, p: &Params, x: &[f32], y: &mut Vec<f32>) {
        let n = x.len() / self.inp;
        debug_assert_eq!(x.len(), n * self.inp);
        y.resize(n * self.out, 0.0);
        if let Some((packed, b)) = &self.packed {
            linear_bf16(y, x, n, packed, b.as_deref());
            return;
        }
        for (c, part) in self.columns() {
            matmul_strided(
                &mut y[c..],
                self.out,
                Mat::new(x, n, self.inp),
                Mat::new(p.at(part.w), part.out, self.inp).t(),
                0.0,
                threads(),
            );
            if let Some(b) = part.b {
                let b = p.at(b);
                for row in y.chunks_exact_mut(self.out) {
                    for (v, b) in row[c..c + part.out].iter_mut().zip(b) {
                        *v += b;
                    }
                }
            }
        }
    }

    /// The backward pass of [`Dense::forward`] on `x`, given `dy` (`[n,
    /// out]`): adds the weight and bias gradients into `grads` (a `Params`
    /// of the same layout as `p`) and, when asked, writes the input gradient
    /// `dy W` (`[n, inp]`) into `dx`. Always float32.
    pub fn backward(
        &self,
        p: &Params,
        x: &[f32],
        dy: &[f32],
        grads: &mut Params,
        dx: Option<&mut Vec<f32>>,
    ) {
        let n = dy.len() / self.out;
        debug_assert_eq!(x.len(), n * self.inp);
        for (c, part) in self.columns() {
            let dyp = Mat::strided(&dy[c..], n, part.out, self.out);
            matmul(grads.at_mut(part.w), dyp.t(), Mat::new(x, n, self.inp), 1.0);
            if let Some(b) = part.b {
                let db = grads.at_mut(b);
                for row in dy.chunks_exact(self.out) {
                    for (g, v) in db.iter_mut().zip(&row[c..c + part.out]) {
                        *g += v;
                    }
                }
            }
        }
        if let Some(dx) = dx {
            dx.resize(n * self.inp, 0.0);
            for (i, (c, part)) in self.columns().enumerate() {
                matmul(
                    dx,
                    Mat::strided(&dy[c..], n, part.out, self.out),
                    Mat::new(p.at(part.w), part.out, self.inp),
                    if i == 0 { 0.0 } else { 1.0 },
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// The loss `sum(y * r)` of a stacked layer, for finite differences.
    fn loss(d: &Dense, p: &Params, x: &[f32], r: &[f32]) -> f64 {
        let mut y = Vec::new();
        d.forward(p, x, &mut y);
        y.iter().zip(r).map(|(a, b)| f64::from(a * b)).sum()
    }

    #[test]
    fn stacked_backward_matches_finite_differences() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut p = Params::default();
        let a = Dense::init(&mut p, "a", 5, 3, &mut rng);
        let w = p.uniform("b.weight", &[4, 5], 0.5, &mut rng);
        let d = Dense::stack(vec![a, Dense::from_slots(w, None, 4, 5)]);
        let n = 6;
        let x: Vec<f32> = (0..n * 5)
            .map(|i| ((i * 37) % 11) as f32 / 5.0 - 1.0)
            .collect();
        let r: Vec<f32> = (0..n * 7)
            .map(|i| ((i * 13) % 7) as f32 / 3.0 - 1.0)
            .collect();
        let mut grads = p.zeros_like();
        let mut dx = Vec::new();
        d.backward(&p, &x, &r, &mut grads, Some(&mut dx));
        let eps = 1e-2;
        for (pi, param) in p.iter().enumerate() {
            for i in 0..param.data.len() {
                let mut q = p.clone();
                q.iter_mut().nth(pi).unwrap().data[i] += eps;
                let up = loss(&d, &q, &x, &r);
                q.iter_mut().nth(pi).unwrap().data[i] -= 2.0 * eps;
                let down = loss(&d, &q, &x, &r);
                let fd = (up - down) / (2.0 * f64::from(eps));
                let g = f64::from(grads.iter().nth(pi).unwrap().data[i]);
                assert!((fd - g).abs() < 1e-3, "{} [{i}]: {g} vs {fd}", param.name);
            }
        }
        for i in 0..x.len() {
            let mut xp = x.clone();
            xp[i] += eps;
            let up = loss(&d, &p, &xp, &r);
            xp[i] -= 2.0 * eps;
            let down = loss(&d, &p, &xp, &r);
            let fd = (up - down) / (2.0 * f64::from(eps));
            assert!((fd - f64::from(dx[i])).abs() < 1e-3, "dx[{i}]");
        }
    }

    #[test]
    fn bf16_forward_follows_the_weights_after_sync() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let mut p = Params::default();
        let mut d = Dense::init(&mut p, "a", 8, 4, &mut rng);
        d.set_precision(&p, Precision::Bf16);
        let x = vec![0.5; 16];
        let (mut before, mut after) = (Vec::new(), Vec::new());
        d.forward(&p, &x, &mut before);
        p.iter_mut()
            .for_each(|t| t.data.iter_mut().for_each(|v| *v *= 2.0));
        d.forward(&p, &x, &mut after);
        assert_eq!(before, after, "the packed copy is used until sync");
        d.sync(&p);
        d.forward(&p, &x, &mut after);
        for (a, b) in after.iter().zip(&before) {
            assert!((a - 2.0 * b).abs() < 1e-2 * b.abs().max(1.0), "{a} vs {b}");
        }
    }
}
