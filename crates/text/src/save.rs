//! An [`Embedder`] written back as a sentence-transformers directory that
//! `SentenceTransformer(path)` loads: the transformer's config and
//! tokenizer files, its weights, Pooling, the Dense heads, Normalize,
//! `modules.json`, the sentence-transformers configs and a model card.

use std::collections::HashMap;
use std::path::Path;

use serde_json::{json, Value};
use tandem_nn::encoder::Tensors;
use tandem_nn::Params;

use crate::dir::Tower;
use crate::embedder::Embedder;
use crate::towers::Towers;
use crate::{ColBert, ColbertConfig, TextError};

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

/// Writes a model directory at `out` (which must not exist) with `write`:
/// into `out.partial`, renamed when complete.
fn save_dir(
    out: &Path,
    write: impl FnOnce(&Path) -> Result<(), TextError>,
) -> Result<(), TextError> {
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
    write(&tmp)?;
    std::fs::rename(&tmp, out).map_err(|e| io(out, e))
}

/// A module of `modules.json` or of a Router's route: its folder and its
/// sentence-transformers type.
type Module = (String, &'static str);

const TRANSFORMER: &str = "sentence_transformers.models.Transformer";
const POOLING: &str = "sentence_transformers.models.Pooling";
const DENSE: &str = "sentence_transformers.models.Dense";
const NORMALIZE: &str = "sentence_transformers.models.Normalize";
const ROUTER: &str = "sentence_transformers.models.Router";
const PYLATE_DENSE: &str = "pylate.models.Dense.Dense";

/// Writes `modules.json`: `modules` in order.
fn write_module_list(dir: &Path, modules: &[Module]) -> Result<(), TextError> {
    let list: Vec<Value> = modules
        .iter()
        .enumerate()
        .map(|(i, (path, ty))| json!({"idx": i, "name": i.to_string(), "path": path, "type": ty}))
        .collect();
    write_json(&dir.join("modules.json"), &Value::Array(list))
}

/// Writes `modules.json` (`modules`, then Normalize when `normalize`),
/// the sentence-transformers config of `model` and the model card.
fn write_top(
    dir: &Path,
    model: &Embedder,
    mut modules: Vec<Module>,
    normalize: bool,
    card: &str,
    similarity: &str,
) -> Result<(), TextError> {
    if normalize {
        let folder = format!("{}_Normalize", modules.len());
        std::fs::create_dir_all(dir.join(&folder)).map_err(|e| io(&dir.join(&folder), e))?;
        modules.push((folder, NORMALIZE));
    }
    write_module_list(dir, &modules)?;
    let sim = if normalize { "cosine" } else { similarity };
    write_json(
        &dir.join("config_sentence_transformers.json"),
        &json!({
            "__version__": {"tandem": env!("CARGO_PKG_VERSION")},
            "prompts": model.dir.prompts,
            "default_prompt_name": model.dir.default_prompt_name,
            "similarity_fn_name": sim,
        }),
    )?;
    write(&dir.join("README.md"), card.as_bytes())
}

impl Embedder {
    /// Writes the model to the directory `out` (created; it must not exist:
    /// the files are written to `out.partial` and renamed when complete),
    /// with `card` as its README.md. The similarity is `cosine` when the
    /// vectors are normalised, else `similarity` (`dot` or `euclidean`).
    pub fn save(&self, out: &Path, card: &str, similarity: &str) -> Result<(), TextError> {
        save_dir(out, |dir| {
            let modules = self.write_modules(dir, "")?;
            write_top(dir, self, modules, self.normalize, card, similarity)
        })
    }

    /// Writes the transformer (in `dir` itself when `prefix` is empty, as
    /// sentence-transformers puts it, else in `{prefix}0_Transformer`),
    /// then the Pooling and Dense modules in `{prefix}{index}_{type}`
    /// folders; returns them in order.
    fn write_modules(&self, dir: &Path, prefix: &str) -> Result<Vec<Module>, TextError> {
        let mut modules = vec![self.write_transformer(dir, prefix)?];
        let hidden = self.encoder.hidden();
        let mut pooling = json!({"word_embedding_dimension": hidden});
        for mode in crate::Mode::ALL {
            pooling[mode.config_key()] = json!(self.dir.pooling.modes.contains(&mode));
        }
        pooling["include_prompt"] = json!(true);
        let folder = format!("{prefix}1_Pooling");
        write_json(&dir.join(&folder).join("config.json"), &pooling)?;
        modules.push((folder, POOLING));
        modules.extend(self.write_heads(dir, prefix, 2, DENSE)?);
        Ok(modules)
    }

    /// Writes the transformer: its config and tokenizer files, its weights
    /// and `sentence_bert_config.json` (in `dir` itself when `prefix` is
    /// empty, else in `{prefix}0_Transformer`).
    fn write_transformer(&self, dir: &Path, prefix: &str) -> Result<Module, TextError> {
        let src = &self.dir.transformer;
        let entries = std::fs::read_dir(src).map_err(|e| {
            TextError::file(src, format!("cannot list ({e})"), "check its permissions")
        })?;
        let tf = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}0_Transformer")
        };
        let tdir = dir.join(&tf);
        std::fs::create_dir_all(&tdir).map_err(|e| io(&tdir, e))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.path().is_file() && travels(&name) {
                std::fs::copy(entry.path(), tdir.join(&name))
                    .map_err(|e| io(&tdir.join(&name), e))?;
            }
        }
        write(
            &tdir.join("model.safetensors"),
            &self.encoder_safetensors()?,
        )?;
        write_json(
            &tdir.join("sentence_bert_config.json"),
            &json!({"max_seq_length": self.max_len(), "do_lower_case": self.dir.lower_case}),
        )?;
        Ok((tf, TRANSFORMER))
    }

    /// Writes the Dense heads as modules of type `ty`, the first in
    /// `{prefix}{first}_Dense`.
    fn write_heads(
        &self,
        dir: &Path,
        prefix: &str,
        first: usize,
        ty: &'static str,
    ) -> Result<Vec<Module>, TextError> {
        let p = self.params();
        let mut modules = Vec::new();
        for (k, h) in self.heads.iter().enumerate() {
            let folder = format!("{prefix}{}_Dense", first + k);
            let w = p
                .get(&format!("{}.linear.weight", h.name))
                .expect("every head has a weight");
            let b = p.get(&format!("{}.linear.bias", h.name));
            let mut config = json!({
                "in_features": w.shape[1],
                "out_features": w.shape[0],
                "bias": b.is_some(),
                "activation_function": h.activation_name,
            });
            if ty == PYLATE_DENSE {
                config["use_residual"] = json!(false);
            }
            write_json(&dir.join(&folder).join("config.json"), &config)?;
            write(
                &dir.join(&folder).join("model.safetensors"),
                &self.head_safetensors(h),
            )?;
            modules.push((folder, ty));
        }
        Ok(modules)
    }

    /// A Dense head's weights as sentence-transformers and PyLate save
    /// them (`linear.weight`, `linear.bias`).
    fn head_safetensors(&self, h: &crate::embedder::Head) -> Vec<u8> {
        let p = self.params();
        let mut t = Params::default();
        let w = p
            .get(&format!("{}.linear.weight", h.name))
            .expect("every head has a weight");
        t.push("linear.weight", &w.shape, w.data.clone());
        if let Some(b) = p.get(&format!("{}.linear.bias", h.name)) {
            t.push("linear.bias", &b.shape, b.data.clone());
        }
        t.to_safetensors(&HashMap::new())
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

impl Towers {
    /// Writes the model to the directory `out` as [`Embedder::save`] does.
    /// Separate towers are written as sentence-transformers writes a
    /// `Router.for_query_document` model: `router_config.json` with the
    /// `query` and `document` routes, each tower's modules in
    /// `query_*` / `document_*` folders, then Normalize after the Router.
    pub fn save(&self, out: &Path, card: &str, similarity: &str) -> Result<(), TextError> {
        if !self.separate() {
            return self.query().save(out, card, similarity);
        }
        save_dir(out, |dir| {
            let mut types = serde_json::Map::new();
            let mut structure = serde_json::Map::new();
            for tower in [Tower::Query, Tower::Document] {
                let route = tower.route();
                let modules = self.tower(tower).write_modules(dir, &format!("{route}_"))?;
                for (path, ty) in &modules {
                    types.insert(path.clone(), json!(ty));
                }
                let ids: Vec<&String> = modules.iter().map(|m| &m.0).collect();
                structure.insert(route.to_string(), json!(ids));
            }
            write_json(
                &dir.join("router_config.json"),
                &json!({
                    "types": types,
                    "structure": structure,
                    "parameters": {"default_route": "document", "allow_empty_key": true},
                }),
            )?;
            let q = self.query();
            write_top(
                dir,
                q,
                vec![(String::new(), ROUTER)],
                q.normalize,
                card,
                similarity,
            )
        })
    }
}

impl ColBert {
    /// Writes the model to the directory `out` as PyLate saves a ColBERT
    /// (created; it must not exist: written to `out.partial` and renamed
    /// when complete): the transformer at the top, its Dense modules as
    /// PyLate's `Dense` from `1_Dense`, and the ColBERT settings in force in
    /// `config_sentence_transformers.json` (the original's other keys
    /// kept), with `card` as its README.md. A model loaded from
    /// sentence-transformers v6's layout is written in that layout.
    pub fn save(&self, out: &Path, card: &str) -> Result<(), TextError> {
        let e = self.embedder();
        let src = e.dir.path.join("config_sentence_transformers.json");
        let mut st: Value = std::fs::read_to_string(&src)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .filter(Value::is_object)
            .unwrap_or_else(|| json!({}));
        let c = self.config();
        if c.layout == crate::ColbertLayout::SentenceTransformers {
            return self.save_st6(out, card);
        }
        st["model_type"] = json!("ColBERT");
        st["__version__"] = json!({"tandem": env!("CARGO_PKG_VERSION")});
        st["similarity_fn_name"] = json!("MaxSim");
        st["query_prefix"] = json!(c.query_prefix);
        st["document_prefix"] = json!(c.document_prefix);
        st["query_length"] = json!(c.query_length);
        st["document_length"] = json!(c.document_length);
        st["attend_to_expansion_tokens"] = json!(c.attend_to_expansion_tokens);
        st["skiplist_words"] = json!(c.skiplist_words);
        st["do_query_expansion"] = json!(c.do_query_expansion);
        save_dir(out, |dir| {
            let mut modules = vec![e.write_transformer(dir, "")?];
            modules.extend(e.write_heads(dir, "", 1, PYLATE_DENSE)?);
            write_module_list(dir, &modules)?;
            write_json(&dir.join("config_sentence_transformers.json"), &st)?;
            write(&dir.join("README.md"), card.as_bytes())
        })
    }
}

/// Whether a file of a model directory holds weights (written anew by a
/// save, never copied: a copy would be the old weights).
fn holds_weights(name: &str) -> bool {
    name.contains(".safetensors")
        || name.starts_with("pytorch_model")
        || [
            ".bin", ".onnx", ".pt", ".pth", ".h5", ".msgpack", ".ckpt", ".ot",
        ]
        .iter()
        .any(|x| name.ends_with(x))
}

/// Copies the files of the folder `from` into `to` (created), but the
/// weights and the model card.
fn copy_settings(from: &Path, to: &Path) -> Result<(), TextError> {
    std::fs::create_dir_all(to).map_err(|e| io(to, e))?;
    let entries = std::fs::read_dir(from).map_err(|e| {
        TextError::file(from, format!("cannot list ({e})"), "check its permissions")
    })?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.path().is_file() && !holds_weights(&name) && name != "README.md" {
            std::fs::copy(entry.path(), to.join(&name)).map_err(|e| io(&to.join(&name), e))?;
        }
    }
    Ok(())
}

impl ColBert {
    /// Writes a ColBERT loaded from sentence-transformers v6's layout in
    /// that layout (its prefixes are prompt text, which PyLate's layout
    /// would turn into inserted tokens): every module's settings as they
    /// were, the transformer's and the Dense modules' weights new, `card`
    /// as README.md.
    fn save_st6(&self, out: &Path, card: &str) -> Result<(), TextError> {
        let e = self.embedder();
        let src = &e.dir.path;
        let modules = crate::dir::read_json(&src.join("modules.json"))?;
        let folders: Vec<&str> = modules
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["path"].as_str())
            .filter(|p| !p.is_empty())
            .collect();
        let transformer = e.dir.transformer.strip_prefix(src).unwrap_or(Path::new(""));
        save_dir(out, |dir| {
            copy_settings(src, dir)?;
            for f in &folders {
                copy_settings(&src.join(f), &dir.join(f))?;
            }
            write(
                &dir.join(transformer).join("model.safetensors"),
                &e.encoder_safetensors()?,
            )?;
            for h in &e.heads {
                write(
                    &dir.join(&h.name).join("model.safetensors"),
                    &e.head_safetensors(h),
                )?;
            }
            write(&dir.join("README.md"), card.as_bytes())
        })
    }

    /// Builds a ColBERT from the dense model `base` as PyLate's
    /// `models.ColBERT(base)` does, into the directory `out` (created; it
    /// must not exist): the base's transformer (its Pooling and Dense
    /// modules dropped), the prefix tokens `[Q] ` and `[D] ` added to the
    /// tokenizer and to the word embeddings (their rows the mean of the
    /// others; PyLate draws them at random around it), a Dense to `dim`
    /// outputs without bias initialised as `torch.nn.Linear` from `seed`, and
    /// PyLate's default settings (the query and document lengths at most
    /// the model's positions). Train it with `tandem train`.
    pub fn build(base: &Path, out: &Path, dim: usize, seed: u64) -> Result<(), TextError> {
        let mut e = Embedder::load(base, crate::EmbedOptions::default())?;
        let config_path = e.dir.transformer.join("config.json");
        let tok_path = e.dir.tokenizer.clone();
        let weights = e.dir.weights.clone();
        let mut config = crate::dir::read_json(&config_path)?;
        let mut tokenizer = crate::dir::read_json(&tok_path)?;
        let vocab = config["vocab_size"].as_u64().ok_or_else(|| {
            TextError::file(
                &config_path,
                "no vocab_size",
                "restore config.json from the model's source",
            )
        })? as usize;
        // PyLate's settings, the lengths within the model's positions
        let mut c = ColbertConfig::pylate();
        let positions = e.encoder().max_len().unwrap_or(usize::MAX);
        c.query_length = c.query_length.min(positions);
        c.document_length = c.document_length.min(positions);
        let prefixes = [c.query_prefix.clone(), c.document_prefix.clone()];
        // the tokenizer's added tokens, the prefixes next (ids from the vocabulary's end)
        let added = tokenizer["added_tokens"].as_array_mut().ok_or_else(|| {
            TextError::file(
                &tok_path,
                "no added_tokens list",
                "use the tokenizer.json of a Hugging Face fast tokenizer",
            )
        })?;
        for (i, p) in prefixes.iter().enumerate() {
            if added.iter().any(|t| t["content"] == p.as_str()) {
                return Err(TextError::file(
                    &tok_path,
                    format!("already has the token {p:?}: the model looks like a ColBERT already"),
                    "train it as it is (tandem train --task dense --model DIR)",
                ));
            }
            added.push(
                json!({"id": vocab + i, "content": p, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": true, "special": false}),
            );
        }
        config["vocab_size"] = json!(vocab + prefixes.len());
        // the word embeddings: two more rows, each the mean of the others
        let hidden = e.encoder.hidden();
        let enc = e.encoder_tensors();
        let table = e
            .params_mut()
            .iter_mut()
            .take(enc)
            .find(|p| p.shape == [vocab, hidden])
            .ok_or_else(|| {
                TextError::file(
                    &weights,
                    format!("no word embedding table of {vocab} x {hidden}"),
                    "use a BERT-, RoBERTa-, MPNet- or ModernBERT-style model",
                )
            })?;
        let mut mean = vec![0.0f64; hidden];
        for row in table.data.chunks_exact(hidden) {
            for (m, v) in mean.iter_mut().zip(row) {
                *m += f64::from(*v);
            }
        }
        let mean: Vec<f32> = mean.iter().map(|m| (m / vocab as f64) as f32).collect();
        for _ in &prefixes {
            table.data.extend_from_slice(&mean);
        }
        table.shape[0] = vocab + prefixes.len();
        // no pooling, the base's heads (and their tensors) dropped, PyLate's Dense
        e.heads.clear();
        drop(e.params_mut().split_off(enc, ""));
        e.dim = hidden;
        e.add_linear(dim, seed, false);
        let mut st = json!({
            "model_type": "ColBERT",
            "__version__": {"tandem": env!("CARGO_PKG_VERSION")},
            "prompts": {"query": "", "document": ""},
            "default_prompt_name": null,
            "similarity_fn_name": "MaxSim",
        });
        for (k, v) in [
            ("query_prefix", json!(c.query_prefix)),
            ("document_prefix", json!(c.document_prefix)),
            ("query_length", json!(c.query_length)),
            ("document_length", json!(c.document_length)),
            (
                "attend_to_expansion_tokens",
                json!(c.attend_to_expansion_tokens),
            ),
            ("skiplist_words", json!(c.skiplist_words)),
            ("do_query_expansion", json!(c.do_query_expansion)),
        ] {
            st[k] = v;
        }
        let card = format!(
            "---\nlibrary_name: PyLate\ntags:\n- ColBERT\n- PyLate\n- tandem\n---\n\n# ColBERT from `{}`\n\nBuilt by tandem {} (`tandem colbert build`): a {dim}-d projection (seed {seed}), untrained.\n",
            base.display(),
            env!("CARGO_PKG_VERSION")
        );
        save_dir(out, |dir| {
            let mut modules = vec![e.write_transformer(dir, "")?];
            write_json(&dir.join("config.json"), &config)?;
            write_json(&dir.join("tokenizer.json"), &tokenizer)?;
            modules.extend(e.write_heads(dir, "", 1, PYLATE_DENSE)?);
            write_module_list(dir, &modules)?;
            write_json(&dir.join("config_sentence_transformers.json"), &st)?;
            write(&dir.join("README.md"), card.as_bytes())
        })
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
