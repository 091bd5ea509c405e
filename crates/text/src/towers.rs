//! A model's query and document towers: one model for both (the usual
//! sentence-transformers model), or two with weights of their own (a
//! sentence-transformers `Router` with `query` and `document` routes, as
//! `Router.for_query_document` builds), and the two trained as one
//! parameter set ([`Joined`]).

use std::path::Path;

use sha2::{Digest, Sha256};
use tandem_nn::Params;

use crate::dir::{ModelDir, Tower};
use crate::{EmbedOptions, Embedder, TextError};

/// The prefix of the document tower's tensors in a [`Joined`] parameter
/// set (and in a checkpoint's weights).
pub const DOCUMENT: &str = "document.";

/// The query and document towers of a model.
#[derive(Debug)]
pub struct Towers {
    query: Embedder,
    /// The document tower, when it is not the query tower.
    document: Option<Embedder>,
}

impl Towers {
    /// Loads the model in `path`: both towers of a model that has two,
    /// else its one tower for both.
    pub fn load(path: &Path, opts: EmbedOptions) -> Result<Towers, TextError> {
        if ModelDir::has_towers(path)? {
            Towers::load_separate(path, opts)
        } else {
            Ok(Towers::shared(Embedder::load(path, opts)?))
        }
    }

    /// Loads two towers from the model in `path`: its own two when it has
    /// them, else two copies of its one tower (to train them apart).
    pub fn load_separate(path: &Path, opts: EmbedOptions) -> Result<Towers, TextError> {
        let query = Embedder::load_tower(path, opts, Tower::Query)?;
        let document = Embedder::load_tower(path, opts, Tower::Document)?;
        if query.dim() != document.dim() {
            return Err(TextError::file(
                &path.join("router_config.json"),
                format!(
                    "the query tower gives {}-d vectors and the document tower {}-d",
                    query.dim(),
                    document.dim()
                ),
                "give both routes Dense modules to the same width",
            ));
        }
        Ok(Towers {
            query,
            document: Some(document),
        })
    }

    /// One tower for queries and documents.
    pub fn shared(model: Embedder) -> Towers {
        Towers {
            query: model,
            document: None,
        }
    }

    /// The tower that embeds queries.
    pub fn query(&self) -> &Embedder {
        &self.query
    }

    /// The tower that embeds documents (the query tower when shared).
    pub fn document(&self) -> &Embedder {
        self.document.as_ref().unwrap_or(&self.query)
    }

    /// The tower `tower`.
    pub fn tower(&self, tower: Tower) -> &Embedder {
        match tower {
            Tower::Query => self.query(),
            Tower::Document => self.document(),
        }
    }

    /// Whether the towers have weights of their own.
    pub fn separate(&self) -> bool {
        self.document.is_some()
    }

    /// Each distinct tower (one or two), to change its settings.
    pub fn each_mut(&mut self) -> impl Iterator<Item = &mut Embedder> {
        std::iter::once(&mut self.query).chain(self.document.as_mut())
    }

    /// The width of the output vectors.
    pub fn dim(&self) -> usize {
        self.query.dim()
    }

    /// The fingerprint of the model's files (both towers').
    pub fn fingerprint(&self) -> String {
        match &self.document {
            None => self.query.fingerprint().to_string(),
            Some(d) => {
                let mut h = Sha256::new();
                h.update(self.query.fingerprint().as_bytes());
                h.update(d.fingerprint().as_bytes());
                h.finalize().iter().map(|b| format!("{b:02x}")).collect()
            }
        }
    }

    /// The prompts to put before queries and documents (see
    /// [`Embedder::prompts`]; a model's prompts serve both towers).
    pub fn prompts(&self, query: Option<&str>, document: Option<&str>) -> (String, String) {
        self.query.prompts(query, document)
    }

    /// Every parameter as one set: the query tower's, then the document
    /// tower's named `document.*` (copied; the layout of [`Joined`]).
    pub fn joined_params(&self) -> Params {
        let mut p = self.query.params().clone();
        if let Some(d) = &self.document {
            p.extend_prefixed(DOCUMENT, d.params());
        }
        p
    }
}

/// Towers trained as one parameter set, as the training harness wants
/// it: the query tower's tensors, then the document tower's named
/// `document.*`. Between passes the query tower holds all of them; the
/// document tower gets its own back (moved, not copied) for the time of
/// [`Joined::with`].
#[derive(Debug)]
pub struct Joined {
    towers: Towers,
    /// How many tensors are the query tower's.
    split: usize,
}

/// Puts the document tower's tensors back at the end of the query
/// tower's, even when the pass unwinds.
struct Rejoin<'a>(&'a mut Towers);

impl Drop for Rejoin<'_> {
    fn drop(&mut self) {
        if let Some(d) = &mut self.0.document {
            let t = std::mem::take(d.params_mut());
            self.0.query.params_mut().append(DOCUMENT, t);
        }
    }
}

/// Gradients in the layout of each tower's parameters.
#[derive(Debug)]
pub struct TowerGrads<'a> {
    query: &'a mut Params,
    document: Option<&'a mut Params>,
}

impl<'a> TowerGrads<'a> {
    /// The gradients of a model whose one tower embeds queries and
    /// documents.
    pub fn shared(grads: &'a mut Params) -> TowerGrads<'a> {
        TowerGrads {
            query: grads,
            document: None,
        }
    }

    /// The gradients of tower `tower`.
    pub fn of(&mut self, tower: Tower) -> &mut Params {
        match (tower, &mut self.document) {
            (Tower::Document, Some(d)) => d,
            _ => self.query,
        }
    }
}

impl Joined {
    /// Joins the towers' tensors into one set.
    pub fn new(towers: Towers) -> Joined {
        let split = towers.query.params().len();
        let mut towers = towers;
        drop(Rejoin(&mut towers));
        Joined { towers, split }
    }

    /// Every parameter: the query tower's, then the document tower's.
    pub fn params(&self) -> &Params {
        self.towers.query.params()
    }

    /// Every parameter, to change; call [`Joined::sync`] after.
    pub fn params_mut(&mut self) -> &mut Params {
        self.towers.query.params_mut()
    }

    /// Whether the towers have weights of their own.
    pub fn separate(&self) -> bool {
        self.towers.separate()
    }

    /// The query tower (whose settings the document tower shares).
    pub fn query(&self) -> &Embedder {
        &self.towers.query
    }

    /// Whether tensor `i` of [`Joined::params`] belongs to a head after the
    /// pooling (not to an encoder).
    pub fn is_head(&self, i: usize) -> bool {
        if i < self.split {
            i >= self.towers.query.encoder_tensors()
        } else {
            let d = self.towers.document().encoder_tensors();
            i - self.split >= d
        }
    }

    /// Runs `f` with both towers whole.
    pub fn with<R>(&mut self, f: impl FnOnce(&Towers) -> R) -> R {
        self.with_mut(|t| f(t))
    }

    fn with_mut<R>(&mut self, f: impl FnOnce(&mut Towers) -> R) -> R {
        if let Some(d) = &mut self.towers.document {
            *d.params_mut() = self
                .towers
                .query
                .params_mut()
                .split_off(self.split, DOCUMENT);
        }
        let guard = Rejoin(&mut self.towers);
        f(guard.0)
    }

    /// Runs `f` with both towers whole and `grads` (the layout of
    /// [`Joined::params`]) cut the same way.
    pub fn with_grads<R>(
        &mut self,
        grads: &mut Params,
        f: impl FnOnce(&Towers, &mut TowerGrads<'_>) -> R,
    ) -> R {
        let split = self.split;
        self.with(|t| {
            if t.separate() {
                let mut d = grads.split_off(split, DOCUMENT);
                let r = f(
                    t,
                    &mut TowerGrads {
                        query: grads,
                        document: Some(&mut d),
                    },
                );
                grads.append(DOCUMENT, d);
                r
            } else {
                f(t, &mut TowerGrads::shared(grads))
            }
        })
    }

    /// Refreshes the towers' bfloat16 copies of the weights after they
    /// changed.
    pub fn sync(&mut self) {
        self.with_mut(|t| t.each_mut().for_each(Embedder::sync));
    }

    /// The towers, apart again.
    pub fn into_towers(mut self) -> Towers {
        if let Some(d) = &mut self.towers.document {
            *d.params_mut() = self
                .towers
                .query
                .params_mut()
                .split_off(self.split, DOCUMENT);
        }
        self.towers
    }
}
