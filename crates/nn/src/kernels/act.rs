//! Elementwise activations, vectorised (AVX-512 when the CPU has it).

use crate::simd::{avx512_dispatch, exp, sigmoid, tanh};

use super::for_rows;

/// `erf(x)` to about 1e-7 absolute: the odd/even rational approximation on
/// `[-4, 4]` that Eigen and XLA use (outside it `erf` is +-1 in float32).
#[inline(always)]
fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let z = x * x;
    let mut p = -2.726_142_3e-10;
    p = p * z + 2.770_681_4e-8;
    p = p * z - 2.101_024e-6;
    p = p * z - 5.692_506_4e-5;
    p = p * z - 7.349_906_3e-4;
    p = p * z - 2.954_6e-3;
    p = p * z - 1.609_603_3e-2;
    let mut q = -1.456_607_2e-5;
    q = q * z - 2.133_740_6e-4;
    q = q * z - 1.682_827e-3;
    q = q * z - 7.373_329e-3;
    q = q * z - 1.426_474e-2;
    x * p / q
}

/// The exact GELU, `x/2 (1 + erf(x/sqrt 2))` (`gelu` in transformers).
#[inline(always)]
fn gelu_erf_one(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// The tanh GELU, `x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`
/// (`gelu_new`, `gelu_pytorch_tanh`).
#[inline(always)]
fn gelu_tanh_one(x: f32) -> f32 {
    const C: f32 = 0.797_884_6; // sqrt(2 / pi)
    0.5 * x * (1.0 + tanh(C * (x + 0.044_715 * x * x * x)))
}

/// The derivative of [`gelu_erf_one`]: `Phi(x) + x phi(x)`.
#[inline(always)]
fn gelu_erf_grad(x: f32) -> f32 {
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    0.5 * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2)) + x * INV_SQRT_2PI * exp(-0.5 * x * x)
}

/// The derivative of [`gelu_tanh_one`].
#[inline(always)]
fn gelu_tanh_grad(x: f32) -> f32 {
    const C: f32 = 0.797_884_6;
    let t = tanh(C * (x + 0.044_715 * x * x * x));
    0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * C * (1.0 + 3.0 * 0.044_715 * x * x)
}

avx512_dispatch!(
    /// `dy *= act'(u)` elementwise.
    fn grad_slice(act: Activation, u: &[f32], dy: &mut [f32]) {
        let it = dy.iter_mut().zip(u);
        match act {
            Activation::Gelu => it.for_each(|(d, &x)| *d *= gelu_erf_grad(x)),
            Activation::GeluTanh => it.for_each(|(d, &x)| *d *= gelu_tanh_grad(x)),
            // PyTorch's relu passes no gradient at 0.
            Activation::Relu => it.for_each(|(d, &x)| *d = if x > 0.0 { *d } else { 0.0 }),
            Activation::Silu => it.for_each(|(d, &x)| {
                let s = sigmoid(x);
                *d *= s * (1.0 + x * (1.0 - s));
            }),
            Activation::Tanh => it.for_each(|(d, &x)| {
                let t = tanh(x);
                *d *= 1.0 - t * t;
            }),
            Activation::Identity => {}
        }
    }
);

avx512_dispatch!(
    fn gelu_erf_slice(x: &mut [f32]) {
        for v in x.iter_mut() {
            *v = gelu_erf_one(*v);
        }
    }
);

avx512_dispatch!(
    fn gelu_tanh_slice(x: &mut [f32]) {
        for v in x.iter_mut() {
            *v = gelu_tanh_one(*v);
        }
    }
);

avx512_dispatch!(
    fn tanh_slice(x: &mut [f32]) {
        for v in x.iter_mut() {
            *v = tanh(*v);
        }
    }
);

avx512_dispatch!(
    fn silu_slice(x: &mut [f32]) {
        for v in x.iter_mut() {
            *v = *v / (1.0 + exp(-*v));
        }
    }
);

/// Splits a long buffer over threads in rows of 4096 elements.
fn chunked(x: &mut [f32], f: fn(&mut [f32])) {
    const W: usize = 4096;
    let whole = x.len() / W * W;
    let (head, tail) = x.split_at_mut(whole);
    for_rows(head, W, |_, row| f(row));
    f(tail);
}

/// Exact (erf) GELU in place.
pub fn gelu_erf(x: &mut [f32]) {
    chunked(x, gelu_erf_slice);
}

/// Tanh-approximated GELU in place.
pub fn gelu_tanh(x: &mut [f32]) {
    chunked(x, gelu_tanh_slice);
}

/// `tanh` in place.
pub fn tanh_inplace(x: &mut [f32]) {
    chunked(x, tanh_slice);
}

/// `max(x, 0)` in place.
pub fn relu(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = v.max(0.0);
    }
}

crate::named_enum!(
    /// An activation function, by the names transformers and
    /// sentence-transformers give them.
    Activation {
        /// Exact GELU (`gelu`).
        Gelu = "gelu",
        /// Tanh-approximated GELU (`gelu_new`, `gelu_pytorch_tanh`, `gelu_fast`).
        GeluTanh = "gelu_tanh",
        /// `relu`.
        Relu = "relu",
        /// `silu` / `swish`.
        Silu = "silu",
        /// `tanh` (sentence-transformers' Dense default).
        Tanh = "tanh",
        /// No activation.
        Identity = "identity",
    }
);

impl Activation {
    /// Reads an activation name as transformers (`hidden_act`) or
    /// sentence-transformers (`activation_function`, e.g.
    /// `torch.nn.modules.activation.Tanh`) write it.
    pub fn parse_hf(name: &str) -> Option<Activation> {
        let last = name.rsplit('.').next().unwrap_or(name).to_ascii_lowercase();
        Some(match last.as_str() {
            "gelu" | "gelu_python" => Activation::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" | "gelu_tanh" => Activation::GeluTanh,
            "relu" => Activation::Relu,
            "silu" | "swish" => Activation::Silu,
            "tanh" => Activation::Tanh,
            "identity" | "linear" => Activation::Identity,
            _ => return None,
        })
    }

    /// Applies the activation in place.
    pub fn apply(self, x: &mut [f32]) {
        match self {
            Activation::Gelu => gelu_erf(x),
            Activation::GeluTanh => gelu_tanh(x),
            Activation::Relu => relu(x),
            Activation::Silu => chunked(x, silu_slice),
            Activation::Tanh => tanh_inplace(x),
            Activation::Identity => {}
        }
    }
}

impl Activation {
    /// The backward pass of [`Activation::apply`]: `dy *= act'(u)`, `u` the
    /// input the activation was applied to.
    pub fn backward(self, u: &[f32], dy: &mut [f32]) {
        const W: usize = 4096;
        assert_eq!(u.len(), dy.len(), "activation input and gradient differ");
        let whole = u.len() / W * W;
        let (head, tail) = dy.split_at_mut(whole);
        for_rows(head, W, |i, d| grad_slice(self, &u[i * W..(i + 1) * W], d));
        grad_slice(self, &u[whole..], tail);
    }
}

/// Gated activation over rows of `2 * width` (`[input | gate]`, the order of
/// ModernBERT's `Wi` output): `out = act(input) * gate`, `[rows, width]`.
pub fn geglu(x: &[f32], width: usize, act: Activation, out: &mut Vec<f32>) {
    let rows = x.len() / (2 * width);
    out.clear();
    out.extend(x.chunks_exact(2 * width).flat_map(|r| r[..width].iter()));
    act.apply(out);
    for_rows(out, width, |i, row| {
        let gate = &x[i * 2 * width + width..(i + 1) * 2 * width];
        for (v, g) in row.iter_mut().zip(gate) {
            *v *= g;
        }
    });
    debug_assert_eq!(out.len(), rows * width);
}

/// The backward pass of [`geglu`] on `x` (`[rows, 2 * width]`), given
/// `dout` (`[rows, width]`): `dx` becomes `[dout * gate * act'(input) |
/// dout * act(input)]` row by row.
pub fn geglu_backward(x: &[f32], width: usize, act: Activation, dout: &[f32], dx: &mut Vec<f32>) {
    let inputs: Vec<f32> = x
        .chunks_exact(2 * width)
        .flat_map(|r| r[..width].iter().copied())
        .collect();
    let mut a = inputs.clone();
    act.apply(&mut a);
    let mut d: Vec<f32> = x
        .chunks_exact(2 * width)
        .zip(dout.chunks_exact(width))
        .flat_map(|(r, g)| r[width..].iter().zip(g).map(|(gate, g)| gate * g))
        .collect();
    act.backward(&inputs, &mut d);
    dx.clear();
    for ((d, a), g) in d
        .chunks_exact(width)
        .zip(a.chunks_exact(width))
        .zip(dout.chunks_exact(width))
    {
        dx.extend_from_slice(d);
        dx.extend(a.iter().zip(g).map(|(a, g)| a * g));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backward_matches_finite_differences() {
        let xs: Vec<f32> = (-200..200).map(|i| i as f32 / 37.0 + 0.013).collect();
        for act in [
            Activation::Gelu,
            Activation::GeluTanh,
            Activation::Relu,
            Activation::Silu,
            Activation::Tanh,
            Activation::Identity,
        ] {
            let mut d = vec![1.0; xs.len()];
            act.backward(&xs, &mut d);
            for (x, g) in xs.iter().zip(&d) {
                let f = |v: f64| {
                    let mut y = [v as f32];
                    act.apply(&mut y);
                    f64::from(y[0])
                };
                let e = 1e-3;
                let fd = (f(f64::from(*x) + e) - f(f64::from(*x) - e)) / (2.0 * e);
                assert!(
                    (fd - f64::from(*g)).abs() < 5e-3,
                    "{act:?}'({x}) {g} vs {fd}"
                );
            }
        }
        let x = [1.0, -2.0, 3.0, 4.0];
        let mut dx = Vec::new();
        geglu_backward(&x, 2, Activation::Relu, &[1.0, 10.0], &mut dx);
        // d input = dout * gate * relu'(input); d gate = dout * relu(input)
        assert_eq!(dx, vec![3.0, 0.0, 1.0, 0.0]);
    }

    /// erf by its Taylor series (exact enough in f64 for |x| < 3).
    fn erf64(x: f64) -> f64 {
        let mut sum = 0.0;
        let mut term = x;
        for n in 0..200 {
            sum += term / (2 * n + 1) as f64;
            term *= -x * x / (n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn gelus_match_their_definitions() {
        let xs: Vec<f32> = (-300..300).map(|i| i as f32 / 50.0).collect();
        let mut a = xs.clone();
        gelu_erf(&mut a);
        let mut t = xs.clone();
        gelu_tanh(&mut t);
        for ((x, a), t) in xs.iter().zip(&a).zip(&t) {
            let x = *x as f64;
            let want = 0.5 * x * (1.0 + erf64(x / 2f64.sqrt()));
            assert!((*a as f64 - want).abs() < 1e-6, "gelu({x}) {a} vs {want}");
            let c = (2.0 / std::f64::consts::PI).sqrt();
            let want = 0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh());
            assert!(
                (*t as f64 - want).abs() < 1e-6,
                "gelu_tanh({x}) {t} vs {want}"
            );
        }
    }

    #[test]
    fn names_parse_as_transformers_writes_them() {
        assert_eq!(Activation::parse_hf("gelu"), Some(Activation::Gelu));
        assert_eq!(
            Activation::parse_hf("torch.nn.modules.activation.Tanh"),
            Some(Activation::Tanh)
        );
        assert_eq!(
            Activation::parse_hf("torch.nn.modules.linear.Identity"),
            Some(Activation::Identity)
        );
        assert_eq!(Activation::parse_hf("mish"), None);
    }

    #[test]
    fn geglu_multiplies_the_activated_half_by_the_gate() {
        let x = [1.0, -2.0, 3.0, 4.0];
        let mut out = Vec::new();
        geglu(&x, 2, Activation::Relu, &mut out);
        assert_eq!(out, vec![3.0, 0.0]);
    }
}
