//! Named float32 parameters (PyTorch names and shapes), their gradients, and
//! their safetensors form.

use std::collections::HashMap;
use std::path::Path;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

use crate::NnError;

/// One parameter tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    /// The PyTorch state_dict name, e.g. `gru.weight_ih_l0`.
    pub name: String,
    /// The PyTorch shape.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<f32>,
}

/// An ordered set of parameters; gradients and optimizer moments are other
/// `Params` of the same layout.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Params {
    items: Vec<Param>,
}

/// Where a parameter lives in its [`Params`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot(pub(crate) usize);

impl Params {
    /// Adds a parameter drawn from `U(-bound, bound)` (PyTorch's default
    /// initialisations are all of this form).
    pub(crate) fn uniform(
        &mut self,
        name: &str,
        shape: &[usize],
        bound: f32,
        rng: &mut ChaCha8Rng,
    ) -> Slot {
        let n = shape.iter().product();
        let data = (0..n)
            .map(|_| rng.gen_range(-bound..bound))
            .collect::<Vec<f32>>();
        self.push(name, shape, data)
    }

    /// Adds a tensor with the given shape and values.
    pub fn push(&mut self, name: &str, shape: &[usize], data: Vec<f32>) -> Slot {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        self.items.push(Param {
            name: name.to_string(),
            shape: shape.to_vec(),
            data,
        });
        Slot(self.items.len() - 1)
    }

    /// A zero-filled set with the same names and shapes.
    pub fn zeros_like(&self) -> Params {
        Params {
            items: self
                .items
                .iter()
                .map(|p| Param {
                    name: p.name.clone(),
                    shape: p.shape.clone(),
                    data: vec![0.0; p.data.len()],
                })
                .collect(),
        }
    }

    /// Sets every value to zero.
    pub fn zero(&mut self) {
        for p in &mut self.items {
            p.data.fill(0.0);
        }
    }

    /// The parameters, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Param> {
        self.items.iter()
    }

    /// The parameters, in order, mutably.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Param> {
        self.items.iter_mut()
    }

    /// The number of tensors.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there are no tensors.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The total number of values.
    pub fn numel(&self) -> usize {
        self.items.iter().map(|p| p.data.len()).sum()
    }

    /// The parameter called `name`.
    pub fn get(&self, name: &str) -> Option<&Param> {
        self.items.iter().find(|p| p.name == name)
    }

    pub(crate) fn at(&self, slot: Slot) -> &[f32] {
        &self.items[slot.0].data
    }

    pub(crate) fn at_mut(&mut self, slot: Slot) -> &mut [f32] {
        &mut self.items[slot.0].data
    }

    /// Two different tensors, mutably.
    pub(crate) fn pair_mut(&mut self, a: Slot, b: Slot) -> (&mut [f32], &mut [f32]) {
        assert_ne!(a.0, b.0, "the same tensor twice");
        if a.0 < b.0 {
            let (lo, hi) = self.items.split_at_mut(b.0);
            (&mut lo[a.0].data, &mut hi[0].data)
        } else {
            let (lo, hi) = self.items.split_at_mut(a.0);
            (&mut hi[0].data, &mut lo[b.0].data)
        }
    }

    /// Appends every parameter of `other` with `prefix` before its name.
    pub fn extend_prefixed(&mut self, prefix: &str, other: &Params) {
        for p in &other.items {
            self.items.push(Param {
                name: format!("{prefix}{}", p.name),
                ..p.clone()
            });
        }
    }

    /// The parameters whose name starts with `prefix`, the prefix removed.
    pub fn strip_prefix(&self, prefix: &str) -> Params {
        Params {
            items: self
                .items
                .iter()
                .filter_map(|p| {
                    p.name.strip_prefix(prefix).map(|n| Param {
                        name: n.to_string(),
                        ..p.clone()
                    })
                })
                .collect(),
        }
    }

    /// Moves the tensors from `at` on into a new set (their values are
    /// not copied), leaving the first `at`; `prefix` is removed from the
    /// names of the moved tensors that start with it.
    ///
    /// # Panics
    ///
    /// When `at` is past the end.
    pub fn split_off(&mut self, at: usize, prefix: &str) -> Params {
        let mut items = self.items.split_off(at);
        for p in &mut items {
            if let Some(rest) = p.name.strip_prefix(prefix) {
                p.name = rest.to_string();
            }
        }
        Params { items }
    }

    /// Moves the tensors of `other` to the end of this set (their values
    /// are not copied), `prefix` put before their names.
    pub fn append(&mut self, prefix: &str, other: Params) {
        self.items.extend(other.items.into_iter().map(|p| Param {
            name: format!("{prefix}{}", p.name),
            ..p
        }));
    }

    /// The L2 norm over every value (f64 accumulation).
    pub fn norm(&self) -> f64 {
        self.items
            .iter()
            .flat_map(|p| p.data.iter())
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            .sqrt()
    }

    /// Multiplies every value by `s`.
    pub fn scale(&mut self, s: f32) {
        for p in &mut self.items {
            p.data.iter_mut().for_each(|v| *v *= s);
        }
    }

    /// The safetensors bytes of these tensors (float32, names as given),
    /// with `metadata` in the header.
    pub fn to_safetensors(&self, metadata: &HashMap<String, String>) -> Vec<u8> {
        let views = self.items.iter().map(|p| {
            let view = TensorView::new(Dtype::F32, p.shape.clone(), bytemuck_f32(&p.data))
                .expect("shape and data agree by construction");
            (p.name.clone(), view)
        });
        let meta = (!metadata.is_empty()).then(|| metadata.clone());
        safetensors::serialize(views, &meta).expect("float32 tensors always serialise")
    }

    /// Replaces every value with the tensor of the same name in the
    /// safetensors `bytes` read from `path` (names and shapes must match
    /// exactly; extra tensors in the file are an error too).
    pub fn load_safetensors(&mut self, path: &Path, bytes: &[u8]) -> Result<(), NnError> {
        let st = SafeTensors::deserialize(bytes).map_err(|e| {
            NnError::weights(
                path,
                format!("not a readable safetensors file ({e})"),
                "point at a model.safetensors written by tandem or by torch's safetensors.torch.save_file",
            )
        })?;
        let mut names: Vec<String> = st.names().into_iter().cloned().collect();
        names.sort();
        let mut want: Vec<&str> = self.items.iter().map(|p| p.name.as_str()).collect();
        want.sort();
        if names != want {
            return Err(NnError::weights(
                path,
                format!(
                    "holds tensors [{}] but the model has [{}]",
                    names.join(", "),
                    want.join(", ")
                ),
                "load it with the model config it was trained with (kind, hidden, projection, doc tower)",
            ));
        }
        for p in &mut self.items {
            let t = st.tensor(&p.name).expect("name listed above");
            if t.dtype() != Dtype::F32 || t.shape() != p.shape.as_slice() {
                return Err(NnError::weights(
                    path,
                    format!(
                        "tensor {} is {:?} {:?}, the model needs F32 {:?}",
                        p.name,
                        t.dtype(),
                        t.shape(),
                        p.shape
                    ),
                    "load it with the model config it was trained with",
                ));
            }
            for (v, b) in p.data.iter_mut().zip(t.data().chunks_exact(4)) {
                *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
            if p.data.iter().any(|v| !v.is_finite()) {
                return Err(NnError::weights(
                    path,
                    format!("tensor {} holds NaN or infinite values", p.name),
                    "use an earlier checkpoint; this one diverged",
                ));
            }
        }
        Ok(())
    }
}

/// The bytes of `data` (safetensors is little-endian, as is every target
/// tandem builds for).
fn bytemuck_f32(data: &[f32]) -> &[u8] {
    bytemuck::cast_slice(data)
}

/// A stable hash of the values (for "bitwise identical" checks and logs).
pub fn fingerprint(params: &Params) -> u64 {
    // FNV-1a over names, shapes and bit patterns.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for p in params.iter() {
        eat(p.name.as_bytes());
        for &d in &p.shape {
            eat(&(d as u64).to_le_bytes());
        }
        eat(bytemuck_f32(&p.data));
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn split_off_and_append_move_tensors_and_their_names() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let mut p = Params::default();
        p.uniform("a", &[2], 0.5, &mut rng);
        p.uniform("b", &[3], 0.5, &mut rng);
        let mut q = Params::default();
        q.uniform("a", &[4], 0.5, &mut rng);
        let whole = {
            let mut w = p.clone();
            w.extend_prefixed("doc.", &q);
            w
        };
        let data = q.iter().next().unwrap().data.as_ptr();
        p.append("doc.", q.clone());
        assert_eq!(p, whole);
        let back = p.split_off(2, "doc.");
        assert_eq!(back, q);
        assert_eq!(p.len(), 2);
        // moved, not copied
        let mut r = Params::default();
        let moved = q;
        r.append("x.", moved);
        assert_eq!(r.iter().next().unwrap().data.as_ptr(), data);
    }

    #[test]
    fn safetensors_round_trip_and_mismatch_errors() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut p = Params::default();
        p.uniform("a.weight", &[3, 2], 0.5, &mut rng);
        p.uniform("a.bias", &[3], 0.5, &mut rng);
        let bytes = p.to_safetensors(&HashMap::new());
        let mut q = p.zeros_like();
        q.load_safetensors(Path::new("m.safetensors"), &bytes)
            .unwrap();
        assert_eq!(p, q);
        assert_eq!(fingerprint(&p), fingerprint(&q));

        let mut other = Params::default();
        other.uniform("a.weight", &[2, 3], 0.5, &mut rng);
        other.uniform("a.bias", &[3], 0.5, &mut rng);
        let err = other
            .load_safetensors(Path::new("m.safetensors"), &bytes)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("m.safetensors") && err.contains("a.weight"),
            "{err}"
        );

        let mut fewer = Params::default();
        fewer.uniform("a.weight", &[3, 2], 0.5, &mut rng);
        let err = fewer
            .load_safetensors(Path::new("m.safetensors"), &bytes)
            .unwrap_err()
            .to_string();
        assert!(err.contains("holds tensors"), "{err}");
        let err = fewer
            .load_safetensors(Path::new("m.safetensors"), b"junk")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a readable safetensors"), "{err}");
    }

    #[test]
    fn uniform_init_stays_in_bounds_and_is_seeded() {
        let draw = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut p = Params::default();
            p.uniform("w", &[100], 0.25, &mut rng);
            p
        };
        let a = draw(7);
        assert!(a.at(Slot(0)).iter().all(|v| v.abs() <= 0.25));
        assert_eq!(a, draw(7));
        assert_ne!(a, draw(8));
    }
}
