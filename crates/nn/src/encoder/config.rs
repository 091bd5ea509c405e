//! Reading a Hugging Face `config.json`.

use serde_json::Value;

use crate::NnError;

/// A parsed `config.json`, read key by key with errors that name the key.
#[derive(Debug, Clone)]
pub struct HfConfig {
    v: Value,
}

impl HfConfig {
    /// Parses the text of a `config.json`.
    pub fn parse(text: &str) -> Result<HfConfig, NnError> {
        let v: Value = serde_json::from_str(text).map_err(|e| {
            NnError::config(
                format!("config.json is not valid JSON ({e})"),
                "restore the file from the model's source",
            )
        })?;
        if !v.is_object() {
            return Err(NnError::config(
                "config.json is not a JSON object",
                "restore the file from the model's source",
            ));
        }
        Ok(HfConfig { v })
    }

    /// The raw value of `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.v.get(key).filter(|v| !v.is_null())
    }

    /// `model_type`, normalised (`xlm_roberta` and `XLMRoberta` both read
    /// `xlm-roberta`); a config without one is refused.
    pub fn model_type(&self) -> Result<String, NnError> {
        match self.get("model_type").and_then(Value::as_str) {
            Some(t) => Ok(t.to_ascii_lowercase().replace('_', "-")),
            None => Err(NnError::config(
                "config.json has no \"model_type\"",
                "add the model_type of the architecture (e.g. \"bert\")",
            )),
        }
    }

    /// A required non-negative integer.
    pub fn usize(&self, key: &str) -> Result<usize, NnError> {
        self.opt_usize(key)?.ok_or_else(|| {
            NnError::config(
                format!("config.json has no {key:?}"),
                "restore the file from the model's source",
            )
        })
    }

    /// An optional non-negative integer.
    pub fn opt_usize(&self, key: &str) -> Result<Option<usize>, NnError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_u64().map(|n| Some(n as usize)).ok_or_else(|| {
                NnError::config(
                    format!("config.json: {key:?} is {v}, not a non-negative integer"),
                    "restore the file from the model's source",
                )
            }),
        }
    }

    /// An optional number.
    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>, NnError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| {
                NnError::config(
                    format!("config.json: {key:?} is {v}, not a number"),
                    "restore the file from the model's source",
                )
            }),
        }
    }

    /// An optional string.
    pub fn opt_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }

    /// An optional boolean.
    pub fn opt_bool(&self, key: &str) -> Option<bool> {
        self.get(key).and_then(Value::as_bool)
    }
}
