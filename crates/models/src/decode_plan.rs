//! How large a photo is decoded: planned once for the models loaded
//! together, so that each model sees the same pixels whichever of them a
//! request runs, and a `model:NAME` thumbnail is exactly what inference
//! feeds NAME, in both decode modes.
//!
//! `exact` models need the full decode; `fast` ones let libjpeg-turbo
//! shrink a JPEG on load to no less than twice their input. The plan takes
//! the largest decode any loaded model needs, BRISQUE's downscale included.

use imaging::PreprocessSpec;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::analyzer::LoadOptions;
use crate::error::{ModelError, Result};
use crate::repository::{ModelEntry, ModelKind, Repository};

/// The decode sizes of a set of models.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecodePlan {
    /// Each image model's preprocessing, decode override applied.
    specs: Vec<PreprocessSpec>,
    /// BRISQUE's longest side, when it is loaded.
    quality_max_side: Option<u32>,
}

impl DecodePlan {
    /// The plan for the models `opts` loads from `repo`, read from their
    /// configs alone (no runtime: the command line renders training
    /// thumbnails with it).
    pub fn for_models(repo: &Repository, opts: &LoadOptions) -> Result<DecodePlan> {
        let mut plan = DecodePlan {
            specs: Vec::new(),
            quality_max_side: None,
        };
        for entry in chosen_models(repo, opts)? {
            match entry.config.kind {
                ModelKind::Classifier | ModelKind::FaceDetector => {
                    plan.specs.push(preprocess(entry, opts)?)
                }
                ModelKind::Quality => {
                    let spec = entry
                        .config
                        .brisque
                        .as_ref()
                        .ok_or_else(|| config_err(entry, "no [brisque] section"))?;
                    plan.quality_max_side = Some(spec.max_side);
                }
                ModelKind::Captioner | ModelKind::TextEncoder => {}
            }
        }
        Ok(plan)
    }

    /// The smallest decode of a `width` × `height` photo that serves every
    /// model of the plan: `None` (full decode) as soon as one wants exact
    /// pixels or BRISQUE wants more than the photo has.
    pub fn min_size(&self, width: u32, height: u32) -> Option<(u32, u32)> {
        let mut need = (0u32, 0u32);
        for spec in &self.specs {
            let (w, h) = spec.decode_min_size(width, height)?;
            need = (need.0.max(w), need.1.max(h));
        }
        if let Some(max_side) = self.quality_max_side {
            // BRISQUE runs on a downscale of at most max_side on the long side.
            let scale = max_side as f32 / width.max(height) as f32;
            if scale >= 1.0 {
                return None;
            }
            need = (
                need.0.max((width as f32 * scale) as u32),
                need.1.max((height as f32 * scale) as u32),
            );
        }
        Some(need)
    }

    /// A short hash of the plan, for the cache keys of what it renders.
    pub fn key(&self) -> String {
        let json = serde_json::to_vec(self).expect("a plan serialises");
        hex::encode(&Sha256::digest(&json)[..8])
    }
}

pub(crate) fn config_err(entry: &ModelEntry, reason: &str) -> ModelError {
    ModelError::Config {
        path: entry.dir.clone(),
        reason: reason.to_string(),
    }
}

/// The models `opts` names (one of each kind when it names none), each once.
pub(crate) fn chosen_models<'a>(
    repo: &'a Repository,
    opts: &LoadOptions,
) -> Result<Vec<&'a ModelEntry>> {
    let mut chosen: Vec<&ModelEntry> = if opts.models.is_empty() {
        [
            ModelKind::Classifier,
            ModelKind::FaceDetector,
            ModelKind::Quality,
            ModelKind::Captioner,
        ]
        .into_iter()
        .filter_map(|k| repo.first_of(k))
        .collect()
    } else {
        opts.models
            .iter()
            .map(|n| repo.get(n))
            .collect::<Result<_>>()?
    };
    if let Some(text) = chosen
        .iter()
        .find(|e| e.config.kind == ModelKind::TextEncoder)
    {
        return Err(config_err(
            text,
            "is a text encoder (search queries), not a photo model: leave it out of engine.models",
        ));
    }
    let mut seen = std::collections::HashSet::new();
    chosen.retain(|e| seen.insert(e.config.name.clone()));
    Ok(chosen)
}

/// A model's preprocessing, with the load-time decode override applied.
pub(crate) fn preprocess(entry: &ModelEntry, opts: &LoadOptions) -> Result<PreprocessSpec> {
    let mut spec = entry
        .config
        .preprocess
        .clone()
        .ok_or_else(|| config_err(entry, "no [preprocess] section"))?;
    if let Some(mode) = opts.decode {
        spec.decode = mode;
    }
    Ok(spec)
}
