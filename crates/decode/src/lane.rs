//! Lanes: named decision policies (thresholds and blend schedule), chosen
//! per request. Three profiles ship; custom lanes come from the config file.

use serde::{Deserialize, Serialize};

use crate::DecodeError;

/// How the blend weight of the bank candidate is chosen between the
/// thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "alpha")]
pub enum Blend {
    /// `a` rises linearly from 0 at the novel threshold to 1 at the snap
    /// threshold.
    Linear,
    /// A fixed weight of the candidate.
    Fixed(f32),
}

/// A named policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lane {
    /// The lane's name (chosen per request).
    pub name: String,
    /// SNAP when the cosine is at or above this.
    pub snap: f32,
    /// NOVEL when the cosine is at or below this.
    pub novel: f32,
    /// The blend schedule in between.
    #[serde(default = "linear")]
    pub blend: Blend,
}

fn linear() -> Blend {
    Blend::Linear
}

/// The shipped profiles: `conservative`, `neutral`, `creative`.
pub fn profiles() -> Vec<Lane> {
    [
        ("conservative", 0.94, 0.88),
        ("neutral", 0.92, 0.85),
        ("creative", 0.90, 0.80),
    ]
    .into_iter()
    .map(|(name, snap, novel)| Lane {
        name: name.to_string(),
        snap,
        novel,
        blend: Blend::Linear,
    })
    .collect()
}

impl Lane {
    /// Checks the thresholds and the blend weight.
    pub fn check(&self) -> Result<(), DecodeError> {
        let bad = |problem: String, fix: &str| {
            Err(DecodeError::Lane {
                lane: self.name.clone(),
                problem,
                fix: fix.to_string(),
            })
        };
        if self.name.trim().is_empty() {
            return bad(
                "the lane has no name".into(),
                "give it a name, e.g. name = \"legal\"",
            );
        }
        if !(-1.0..=1.0).contains(&self.novel) || !(-1.0..=1.0).contains(&self.snap) {
            return bad(
                format!(
                    "thresholds snap {} and novel {} must be cosines in [-1, 1]",
                    self.snap, self.novel
                ),
                "use e.g. snap = 0.92, novel = 0.85",
            );
        }
        if self.novel >= self.snap {
            return bad(
                format!("novel {} is not below snap {}", self.novel, self.snap),
                "set novel < snap (BLEND lies between them)",
            );
        }
        if let Blend::Fixed(a) = self.blend {
            if !(0.0..=1.0).contains(&a) {
                return bad(
                    format!("blend weight {a} is outside [0, 1]"),
                    "use a weight between 0 and 1",
                );
            }
        }
        Ok(())
    }

    /// The weight of the candidate at cosine `c` (between the thresholds).
    pub fn alpha(&self, c: f32) -> f32 {
        match self.blend {
            Blend::Fixed(a) => a,
            Blend::Linear => ((c - self.novel) / (self.snap - self.novel)).clamp(0.0, 1.0),
        }
    }
}

/// The shipped profiles plus custom lanes; a custom lane replaces a profile
/// of the same name.
#[derive(Debug, Clone, PartialEq)]
pub struct Lanes {
    lanes: Vec<Lane>,
}

impl Lanes {
    /// The profiles with `custom` added (checked).
    pub fn new(custom: Vec<Lane>) -> Result<Lanes, DecodeError> {
        let mut lanes = profiles();
        for lane in custom {
            lane.check()?;
            match lanes.iter_mut().find(|l| l.name == lane.name) {
                Some(l) => *l = lane,
                None => lanes.push(lane),
            }
        }
        Ok(Lanes { lanes })
    }

    /// The lane called `name`.
    pub fn get(&self, name: &str) -> Result<&Lane, DecodeError> {
        self.lanes
            .iter()
            .find(|l| l.name == name)
            .ok_or_else(|| DecodeError::Lane {
                lane: name.to_string(),
                problem: "no such lane".into(),
                fix: format!(
                    "choose one of {} or define it in a --lanes FILE",
                    self.lanes
                        .iter()
                        .map(|l| l.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })
    }

    /// Every lane, profiles first.
    pub fn all(&self) -> &[Lane] {
        &self.lanes
    }
}
