//! A linear layer `y = x W^T + b` in float32 or bfloat16.

use super::bf16::{linear_bf16, PackedBf16};
use crate::linalg::{add_bias, matmul, Mat};

crate::named_enum!(
    /// The precision of the matrix products.
    Precision {
        /// float32 throughout.
        F32 = "f32",
        /// bfloat16 inputs and weights, float32 accumulation and everything
        /// else in float32.
        Bf16 = "bf16",
    }
);

/// A `torch.nn.Linear`: `weight [out, inp]` (row-major), optional `bias`.
#[derive(Debug)]
pub struct Dense {
    w: Vec<f32>,
    b: Option<Vec<f32>>,
    packed: Option<PackedBf16>,
    inp: usize,
    out: usize,
}

impl Dense {
    /// A layer from PyTorch's `weight [out, inp]` and `bias [out]`.
    pub fn new(w: Vec<f32>, b: Option<Vec<f32>>, out: usize, inp: usize) -> Dense {
        assert_eq!(w.len(), out * inp, "weight of {} for {out}x{inp}", w.len());
        if let Some(b) = &b {
            assert_eq!(b.len(), out, "bias of {} for {out} outputs", b.len());
        }
        Dense {
            w,
            b,
            packed: None,
            inp,
            out,
        }
    }

    /// Stacks layers with the same input along the outputs (e.g. query, key
    /// and value into one product).
    pub fn stack(parts: Vec<Dense>) -> Dense {
        let inp = parts[0].inp;
        assert!(parts.iter().all(|d| d.inp == inp), "stacked inputs differ");
        let out = parts.iter().map(|d| d.out).sum();
        let has_bias = parts.iter().any(|d| d.b.is_some());
        let mut w = Vec::with_capacity(out * inp);
        let mut b = Vec::with_capacity(out);
        for d in parts {
            w.extend_from_slice(&d.w);
            match d.b {
                Some(bias) => b.extend_from_slice(&bias),
                None => b.extend(std::iter::repeat_n(0.0, d.out)),
            }
        }
        Dense::new(w, has_bias.then_some(b), out, inp)
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
    /// weights once).
    pub fn set_precision(&mut self, precision: Precision) {
        self.packed = match precision {
            Precision::F32 => None,
            Precision::Bf16 => Some(PackedBf16::pack(&self.w, self.out, self.inp)),
        };
    }

    /// `y = x W^T + b` over the rows of `x` (`[n, inp]`); `y` becomes
    /// `[n, out]`.
    pub fn forward(&self, x: &[f32], y: &mut Vec<f32>) {
        let n = x.len() / self.inp;
        debug_assert_eq!(x.len(), n * self.inp);
        y.resize(n * self.out, 0.0);
        match &self.packed {
            Some(p) => linear_bf16(y, x, n, p, self.b.as_deref()),
            None => {
                matmul(
                    y,
                    Mat::new(x, n, self.inp),
                    Mat::new(&self.w, self.out, self.inp).t(),
                    0.0,
                );
                if let Some(b) = &self.b {
                    add_bias(y, b);
                }
            }
        }
    }
}
