//! The tensors of a `model.safetensors`, widened to float32 and taken by
//! name with their shapes checked.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use crate::NnError;

/// Named float tensors. Names are looked up under a prefix found once from
/// an anchor (`bert.`, `roberta.`, `model.` or none), so that a
/// `BertModel` and a `BertForMaskedLM` checkpoint both load.
#[derive(Debug)]
pub struct Tensors {
    path: PathBuf,
    map: HashMap<String, (Vec<usize>, Vec<f32>)>,
    prefix: String,
}

/// A LayerNorm's `gamma` / `beta` under the names transformers gives them
/// on loading (`weight` / `bias`): original BERT checkpoints, and what
/// transformers 5.0 to 5.3 write for BERT.
fn legacy_name(name: String) -> String {
    for (old, new) in [
        ("LayerNorm.gamma", "LayerNorm.weight"),
        ("LayerNorm.beta", "LayerNorm.bias"),
    ] {
        if let Some(stem) = name.strip_suffix(old) {
            return format!("{stem}{new}");
        }
    }
    name
}

impl Tensors {
    /// Reads a safetensors file; float32, float16 and bfloat16 tensors are
    /// kept (as float32), others (integer buffers such as `position_ids`)
    /// are skipped. LayerNorm `gamma` / `beta` are renamed `weight` /
    /// `bias`, as transformers does.
    pub fn read(path: &Path) -> Result<Tensors, NnError> {
        let bytes = std::fs::read(path).map_err(|e| {
            NnError::weights(
                path,
                format!("cannot read ({e})"),
                "check the path and its permissions",
            )
        })?;
        Tensors::parse(path, &bytes)
    }

    /// Parses the bytes of a safetensors file (`path` names it in errors).
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Tensors, NnError> {
        let st = SafeTensors::deserialize(bytes).map_err(|e| {
            NnError::weights(
                path,
                format!("not a valid safetensors file ({e})"),
                "restore the file from the model's source",
            )
        })?;
        let mut map = HashMap::new();
        for (name, view) in st.tensors() {
            let data = view.data();
            let values: Vec<f32> = match view.dtype() {
                Dtype::F32 => data
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
                Dtype::F16 => data
                    .chunks_exact(2)
                    .map(|b| half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32())
                    .collect(),
                Dtype::BF16 => data
                    .chunks_exact(2)
                    .map(|b| half::bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32())
                    .collect(),
                _ => continue,
            };
            map.insert(legacy_name(name), (view.shape().to_vec(), values));
        }
        Ok(Tensors {
            path: path.to_path_buf(),
            map,
            prefix: String::new(),
        })
    }

    /// The file the tensors came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Finds the prefix under which `anchor` (a name every checkpoint of the
    /// architecture has) is stored, and looks every later name up under it.
    pub fn find_prefix(&mut self, anchors: &[&str], arch: &str) -> Result<(), NnError> {
        let mut best: Option<&str> = None;
        for name in self.map.keys() {
            for anchor in anchors {
                if let Some(p) = name.strip_suffix(anchor) {
                    if (p.is_empty() || p.ends_with('.')) && best.is_none_or(|b| p.len() < b.len())
                    {
                        best = Some(p);
                    }
                }
            }
        }
        match best {
            Some(p) => {
                self.prefix = p.to_string();
                Ok(())
            }
            None => Err(NnError::weights(
                &self.path,
                format!(
                    "no tensor named {} (config.json says {arch})",
                    anchors.join(" or ")
                ),
                "use the model.safetensors that belongs with this config.json",
            )),
        }
    }

    /// The full names of the tensors not taken yet.
    pub fn names(&self) -> Vec<String> {
        self.map.keys().cloned().collect()
    }

    /// Takes the tensor of the full name `name` (no prefix), whatever its
    /// shape: `(shape, values)`.
    pub fn take_raw(&mut self, name: &str) -> Option<(Vec<usize>, Vec<f32>)> {
        self.map.remove(name)
    }

    /// Whether a tensor `name` (under the prefix) exists.
    pub fn has(&self, name: &str) -> bool {
        self.map.contains_key(&format!("{}{name}", self.prefix))
    }

    /// Takes the tensor `name` (under the prefix), checking its shape.
    pub fn take(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>, NnError> {
        let full = format!("{}{name}", self.prefix);
        match self.map.remove(&full) {
            Some((s, v)) if s == shape => Ok(v),
            Some((s, _)) => Err(NnError::weights(
                &self.path,
                format!("tensor {full} has shape {s:?}, the config implies {shape:?}"),
                "use the model.safetensors that belongs with this config.json",
            )),
            None => Err(NnError::weights(
                &self.path,
                format!("tensor {full} is missing"),
                "use the model.safetensors that belongs with this config.json",
            )),
        }
    }

    /// Takes `name` if it exists (checking its shape).
    pub fn take_opt(&mut self, name: &str, shape: &[usize]) -> Result<Option<Vec<f32>>, NnError> {
        if self.has(name) {
            self.take(name, shape).map(Some)
        } else {
            Ok(None)
        }
    }
}
