//! An [`Embedder`] written back as a sentence-transformers directory that
//! `SentenceTransformer(path)` loads: the transformer's config and
//! tokenizer files, its weights, Pooling, the Dense heads, Normalize,
//! `modules.json`, the sentence-transformers configs and a model card.

use std::collections::HashMap;
use std::path::Path;

use serde_json::{json, Value};
use tandem_nn::encoder::Tensors;
use tandem_nn::Params;

use crate::embedder::Embedder;
use crate::TextError;

/// Files of the transformer's folder that travel with the weights (its
/// config and every tokenizer file transformers may read).
fn travels(name: &str) -> bool {
    matches!(
        name,
        "config.json"
            | "tokenizer.json"
            | "tokenizer_config.json"
            | "special_tokens_map.json"
            | "added_tokens.json"
            | "vocab.txt"
            | "vocab.json"
            | "merges.txt"
    ) || name.ends_with(".model")
}

fn io(path: &Path, e: std::io::Error) -> TextError {
    TextError::file(
        path,
        format!("cannot write ({e})"),
        "check the free space and permissions of the output folder",
    )
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), TextError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
    }
    std::fs::write(path, bytes).map_err(|e| io(path, e))
}

fn write_json(path: &Path, v: &Value) -> Result<(), TextError> {
    let text = serde_json::to_string_pretty(v).expect("JSON values serialise");
    write(path, text.as_bytes())
}

impl Embedder {
    /// Writes the model to the directory `out` (created; it must not exist:
    /// the files are written to `out.partial` and renamed when complete),
    /// with `card` as its README.md. The similarity is `cosine` when the
    /// vectors are normalised, else `similarity` (`dot` or `euclidean`).
    pub fn save(&self, out: &Path, card: &str, similarity: &str) -> Result<(), TextError> {
        if out.exists() {
            return Err(TextError::file(
                out,
                "already exists",
                "remove it or choose another output folder",
            ));
        }
        let tmp = out.with_extension("partial");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
        }
        std::fs::create_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
        self.write_all(&tmp, card, similarity)?;
        std::fs::rename(&tmp, out).map_err(|e| io(out, e))
    }

    fn write_all(&self, dir: &Path, card: &str, similarity: &str) -> Result<(), TextError> {
        let src = &self.dir.transformer;
        let entries = std::fs::read_dir(src).map_err(|e| {
            TextError::file(src, format!("cannot list ({e})"), "check its permissions")
        })?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.path().is_file() && travels(&name) {
                std::fs::copy(entry.path(), dir.join(&name))
                    .map_err(|e| io(&dir.join(&name), e))?;
            }
        }
        write(&dir.join("model.safetensors"), &self.encoder_safetensors()?)?;

        let mut modules = vec![
            json!({"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}),
            json!({"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}),
        ];
        let hidden = self.encoder.hidden();
        let mut pooling = json!({"word_embedding_dimension": hidden});
        for mode in crate::Mode::ALL {
            pooling[mode.config_key()] = json!(self.dir.pooling.modes.contains(&mode));
        }
        pooling["include_prompt"] = json!(true);
        write_json(&dir.join("1_Pooling/config.json"), &pooling)?;
        let p = self.params();
        for (k, h) in self.heads.iter().enumerate() {
            let folder = format!("{}_Dense", 2 + k);
            let w = p
                .get(&format!("{}.linear.weight", h.name))
                .expect("every head has a weight");
            let b = p.get(&format!("{}.linear.bias", h.name));
            write_json(
                &dir.join(&folder).join("config.json"),
                &json!({
                    "in_features": w.shape[1],
                    "out_features": w.shape[0],
                    "bias": b.is_some(),
                    "activation_function": h.activation_name,
                }),
            )?;
            let mut t = Params::default();
            t.push("linear.weight", &w.shape, w.data.clone());
            if let Some(b) = b {
                t.push("linear.bias", &b.shape, b.data.clone());
            }
            write(
                &dir.join(&folder).join("model.safetensors"),
                &t.to_safetensors(&HashMap::new()),
            )?;
            modules.push(
                json!({"idx": 2 + k, "name": (2 + k).to_string(), "path": folder,
                "type": "sentence_transformers.models.Dense"}),
            );
        }
        if self.normalize {
            let k = 2 + self.heads.len();
            let folder = format!("{k}_Normalize");
            std::fs::create_dir_all(dir.join(&folder)).map_err(|e| io(&dir.join(&folder), e))?;
            modules.push(json!({"idx": k, "name": k.to_string(), "path": folder,
                "type": "sentence_transformers.models.Normalize"}));
        }
        write_json(&dir.join("modules.json"), &Value::Array(modules))?;
        write_json(
            &dir.join("sentence_bert_config.json"),
            &json!({"max_seq_length": self.max_len(), "do_lower_case": self.dir.lower_case}),
        )?;
        let sim = if self.normalize { "cosine" } else { similarity };
        write_json(
            &dir.join("config_sentence_transformers.json"),
            &json!({
                "__version__": {"tandem": env!("CARGO_PKG_VERSION")},
                "prompts": self.dir.prompts,
                "default_prompt_name": self.dir.default_prompt_name,
                "similarity_fn_name": sim,
            }),
        )?;
        write(&dir.join("README.md"), card.as_bytes())
    }

    /// The transformer's tensors as transformers names them (no
    /// `bert.`-style prefix), with the tensors tandem does not train (a
    /// BERT pooler) carried over from the original weights.
    fn encoder_safetensors(&self) -> Result<Vec<u8>, TextError> {
        let p = self.params();
        let mut t = Params::default();
        let mut ours = std::collections::HashSet::new();
        for param in p.iter().take(self.encoder_tensors()) {
            t.push(&param.name, &param.shape, param.data.clone());
            ours.insert(param.name.clone());
        }
        let mut original =
            Tensors::read(&self.dir.weights).map_err(|e| TextError::nn(&self.dir.weights, e))?;
        let names = original.names();
        let first = &p.iter().next().expect("an encoder has tensors").name;
        let prefix = names
            .iter()
            .filter_map(|n| n.strip_suffix(first.as_str()))
            .min_by_key(|p| p.len())
            .unwrap_or("")
            .to_string();
        let mut extra: Vec<&String> = names
            .iter()
            .filter(|n| {
                n.strip_prefix(&prefix)
                    .is_some_and(|rest| !ours.contains(rest))
            })
            .collect();
        extra.sort();
        for name in extra {
            let (shape, data) = original.take_raw(name).expect("listed by Tensors::names");
            let rest = &name[prefix.len()..];
            // a tied copy of a trained table (T5's encoder.embed_tokens)
            if rest.ends_with("embed_tokens.weight") && ours.contains("shared.weight") {
                continue;
            }
            t.push(rest, &shape, data);
        }
        let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
        Ok(t.to_safetensors(&meta))
    }
}

#[cfg(test)]
mod tests {
    use super::travels;

    #[test]
    fn tokenizer_files_travel_and_weights_do_not() {
        for f in ["config.json", "tokenizer.json", "vocab.txt", "spiece.model"] {
            assert!(travels(f), "{f}");
        }
        for f in [
            "model.safetensors",
            "pytorch_model.bin",
            "README.md",
            "modules.json",
        ] {
            assert!(!travels(f), "{f}");
        }
    }
}
