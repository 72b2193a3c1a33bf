//! Heads: the small pieces that turn a backbone's raw outputs into meaning.
//!
//! The backbones (the ONNX models: the classifier, the face detector) run
//! in batches; BRISQUE runs on the pixels while a photo is prepared. Then
//! every head of the request's head set reads what it needs and writes its
//! part of the [`PhotoAnalysis`]: ImageNet concepts, the embedding, faces
//! and model releases, quality, captions — and, added while serving,
//! trained concepts ([`LinearConceptHead`]) over the stored embedding.
//!
//! A head is immutable once made; the engine's registry swaps whole sets,
//! so a request finishes with the set it started with.

use std::cell::OnceCell;
use std::sync::Arc;

use domain::analysis::{Embedding, Face, PhotoAnalysis};
use imaging::{PreprocessSpec, Transform};

use crate::analyzer::{AnalyzeOptions, Prepared};
use crate::brisque::quality_from_score;
use crate::captioner::{CaptionConcept, CaptionInput, Captioner};
use crate::concepts::{softmax, ConceptMap, ConceptOptions};
use crate::faces::{self, Anchor};
use crate::repository::FaceDetectorSpec;

/// What a head reads for one photo: the outputs of the backbones that ran
/// (by model name and output role), the prepared photo's facts, and what
/// several heads derive from them (class probabilities, the normalised
/// embedding), computed once per photo however many heads read them.
pub struct HeadInput<'a> {
    backbones: &'a [String],
    prepared: &'a Prepared,
    /// Indexed like `backbones`: `None` for a backbone that did not run.
    outputs: &'a [Option<crate::analyzer::BackboneOutput>],
    /// Softmax of each backbone's `logits`, on first use.
    probs: Vec<OnceCell<Option<Vec<f32>>>>,
    /// Each backbone's `features`, L2-normalised, on first use.
    embeddings: Vec<OnceCell<Option<Embedding>>>,
}

impl<'a> HeadInput<'a> {
    pub(crate) fn new(
        backbones: &'a [String],
        prepared: &'a Prepared,
        outputs: &'a [Option<crate::analyzer::BackboneOutput>],
    ) -> HeadInput<'a> {
        HeadInput {
            backbones,
            prepared,
            outputs,
            probs: backbones.iter().map(|_| OnceCell::new()).collect(),
            embeddings: backbones.iter().map(|_| OnceCell::new()).collect(),
        }
    }

    fn index(&self, model: &str) -> Option<usize> {
        self.backbones.iter().position(|b| b == model)
    }

    /// One output of `model` for this photo (`logits`, `features`, ...).
    pub fn output(&self, model: &str, role: &str) -> Option<&[f32]> {
        self.outputs.get(self.index(model)?)?.as_ref()?.get(role)
    }

    /// `model`'s class probabilities (the softmax of its `logits`).
    pub fn probs(&self, model: &str) -> Option<&[f32]> {
        let i = self.index(model)?;
        self.probs[i]
            .get_or_init(|| self.output(model, "logits").map(softmax))
            .as_deref()
    }

    /// `model`'s pooled `features`, L2-normalised: the embedding.
    pub fn embedding(&self, model: &str) -> Option<&Embedding> {
        let i = self.index(model)?;
        self.embeddings[i]
            .get_or_init(|| self.output(model, "features").map(Embedding::normalized))
            .as_ref()
    }

    /// How `model`'s input was cut from the photo (to map boxes back).
    pub fn transform(&self, model: &str) -> Option<&Transform> {
        self.prepared.transform(self.index(model)?)
    }

    /// The photo's BRISQUE score, if it was computed (and finite).
    pub fn brisque(&self) -> Option<f64> {
        self.prepared.brisque
    }

    /// Width and height after EXIF orientation.
    pub fn original_size(&self) -> (u32, u32) {
        self.prepared.original
    }
}

/// A head: reads backbone outputs, writes its part of a photo's analysis.
pub trait Head: Send + Sync {
    /// Unique within a head set; installing a head under a taken name
    /// replaces the old one.
    fn name(&self) -> &str;
    /// What kind of head it is, for listings (`concepts`, `faces`, ...).
    fn kind(&self) -> &'static str;
    /// The model a request names (`models=...`) to get this head's output.
    fn model(&self) -> &str;
    /// The models whose outputs it reads: they run whenever it does.
    fn reads(&self) -> Vec<&str> {
        vec![self.model()]
    }
    /// Whether it reports `concept` among the concepts (a trained concept
    /// may not take a built-in one's name).
    fn reports_concept(&self, _concept: &str) -> bool {
        false
    }
    /// A built-in keyword reported only at or above a threshold: `(keyword,
    /// threshold)`, its accept threshold in the review rules.
    fn keyword_threshold(&self) -> Option<(&str, f32)> {
        None
    }
    /// Writes this head's part of `out`. Cheap: runs once per photo.
    fn apply(&self, input: &HeadInput<'_>, opts: &AnalyzeOptions, out: &mut PhotoAnalysis);
}

/// The classifier's own classes and the broad concepts they roll up to,
/// and `confidence` (the top-1 class probability).
pub struct ConceptsHead {
    pub model: String,
    pub map: Arc<ConceptMap>,
}

impl Head for ConceptsHead {
    fn name(&self) -> &str {
        "concepts"
    }

    fn kind(&self) -> &'static str {
        "concepts"
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn reports_concept(&self, concept: &str) -> bool {
        self.map.reports(concept)
    }

    fn apply(&self, input: &HeadInput<'_>, opts: &AnalyzeOptions, out: &mut PhotoAnalysis) {
        let Some(probs) = input.probs(&self.model) else {
            return;
        };
        out.confidence = probs.iter().copied().fold(0.0, f32::max);
        out.concepts.extend(self.map.score(
            probs,
            &ConceptOptions {
                top_k: opts.top_k,
                min_confidence: opts.min_confidence,
                include_broad: true,
            },
        ));
    }
}

/// The backbone's pooled features, L2-normalised: asked for per request
/// (`include=embedding`), always by the pipeline, which stores it.
pub struct EmbeddingHead {
    pub model: String,
}

impl Head for EmbeddingHead {
    fn name(&self) -> &str {
        "embedding"
    }

    fn kind(&self) -> &'static str {
        "embedding"
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn apply(&self, input: &HeadInput<'_>, opts: &AnalyzeOptions, out: &mut PhotoAnalysis) {
        if !opts.embedding {
            return;
        }
        out.embedding = input.embedding(&self.model).cloned();
    }
}

/// Face boxes in the photo's pixels, and whether a model release is needed.
pub struct FacesHead {
    pub model: String,
    /// The detector's input size, to map its 0..1 boxes to input pixels.
    pub input_size: (u32, u32),
    pub config: FaceDetectorSpec,
    pub anchors: Vec<Anchor>,
}

impl FacesHead {
    pub fn new(model: String, spec: &PreprocessSpec, config: FaceDetectorSpec) -> FacesHead {
        FacesHead {
            model,
            input_size: (spec.width, spec.height),
            config,
            anchors: faces::short_range_anchors(),
        }
    }
}

impl Head for FacesHead {
    fn name(&self) -> &str {
        "faces"
    }

    fn kind(&self) -> &'static str {
        "faces"
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn apply(&self, input: &HeadInput<'_>, opts: &AnalyzeOptions, out: &mut PhotoAnalysis) {
        let (Some(regressors), Some(classificators), Some(transform)) = (
            input.output(&self.model, "regressors"),
            input.output(&self.model, "classificators"),
            input.transform(&self.model),
        ) else {
            return;
        };
        let release = opts
            .release_threshold
            .unwrap_or(self.config.release_threshold);
        let detections = faces::decode(
            regressors,
            classificators,
            &self.anchors,
            self.config.score_threshold,
            self.config.iou_threshold,
        );
        // Input 0..1 → model pixels → original photo pixels.
        let (ow, oh) = input.original_size();
        let (ow, oh) = (ow as f32, oh as f32);
        let (iw, ih) = (self.input_size.0 as f32, self.input_size.1 as f32);
        out.faces = detections
            .iter()
            .map(|d| {
                let (x1, y1) = transform.to_source(d.bbox[0] * iw, d.bbox[1] * ih);
                let (x2, y2) = transform.to_source(d.bbox[2] * iw, d.bbox[3] * ih);
                let px = |v: f32, max: f32| v.clamp(0.0, max).round() as u32;
                Face {
                    bbox: [px(x1, ow), px(y1, oh), px(x2, ow), px(y2, oh)],
                    score: d.score,
                }
            })
            .collect();
        out.model_release_required = out.faces.iter().any(|face| face.score >= release);
    }
}

/// Technical quality from the BRISQUE score computed while preparing.
pub struct QualityHead {
    pub model: String,
}

impl Head for QualityHead {
    fn name(&self) -> &str {
        "quality"
    }

    fn kind(&self) -> &'static str {
        "quality"
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn apply(&self, input: &HeadInput<'_>, _: &AnalyzeOptions, out: &mut PhotoAnalysis) {
        out.quality = input.brisque().map(quality_from_score);
        out.brisque = input.brisque().map(|s| s as f32);
    }
}

/// Captions composed from the classifier's most probable classes.
pub struct CaptionsHead {
    /// The captioner model's name (what `models=` selects).
    pub model: String,
    /// The classifier it reads.
    pub classifier: String,
    pub map: Arc<ConceptMap>,
    pub captioner: Box<dyn Captioner>,
    pub max_captions: usize,
}

impl Head for CaptionsHead {
    fn name(&self) -> &str {
        "captions"
    }

    fn kind(&self) -> &'static str {
        "captions"
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn reads(&self) -> Vec<&str> {
        vec![&self.classifier]
    }

    fn apply(&self, input: &HeadInput<'_>, _: &AnalyzeOptions, out: &mut PhotoAnalysis) {
        let Some(probs) = input.probs(&self.classifier) else {
            return;
        };
        let classes = self.map.score(
            probs,
            &ConceptOptions {
                top_k: 5,
                min_confidence: 0.0,
                include_broad: false,
            },
        );
        let concepts: Vec<CaptionConcept> = classes
            .into_iter()
            .map(|(name, confidence)| CaptionConcept {
                groups: self.map.groups_of(&name),
                name,
                confidence,
            })
            .collect();
        out.captions = self.captioner.caption(
            &CaptionInput {
                concepts: &concepts,
            },
            self.max_captions,
        );
    }
}

/// A concept trained from example photos: logistic regression over the
/// L2-normalised embedding, `score = sigmoid(w · e + b)`, reported as
/// `[name, score]` beside the built-in concepts.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearConceptHead {
    /// The concept as it appears in `concepts`.
    pub concept: String,
    /// The backbone whose `features` it reads.
    pub model: String,
    pub weights: Vec<f32>,
    pub bias: f32,
    /// Built in (the stock vocabulary): reported only at or above this
    /// threshold. A concept trained by users has none: it is reported like
    /// the classifier's concepts, from `min_confidence` up.
    pub floor: Option<f32>,
    /// The registry key: `concept:<name>` (trained) or `stock:<name>`.
    key: String,
}

impl LinearConceptHead {
    pub fn new(concept: &str, model: &str, weights: Vec<f32>, bias: f32) -> LinearConceptHead {
        LinearConceptHead {
            key: format!("concept:{concept}"),
            concept: concept.to_string(),
            model: model.to_string(),
            weights,
            bias,
            floor: None,
        }
    }

    /// A stock-vocabulary keyword, reported only at or above `threshold`.
    pub fn stock(
        concept: &str,
        model: &str,
        weights: Vec<f32>,
        bias: f32,
        threshold: f32,
    ) -> LinearConceptHead {
        LinearConceptHead {
            key: format!("stock:{concept}"),
            floor: Some(threshold),
            ..LinearConceptHead::new(concept, model, weights, bias)
        }
    }

    /// The score of one embedding (already L2-normalised).
    pub fn score(&self, embedding: &[f32]) -> f32 {
        let z: f32 = self
            .weights
            .iter()
            .zip(embedding)
            .map(|(w, x)| w * x)
            .sum::<f32>()
            + self.bias;
        1.0 / (1.0 + (-z).exp())
    }
}

impl Head for LinearConceptHead {
    fn name(&self) -> &str {
        &self.key
    }

    fn kind(&self) -> &'static str {
        if self.floor.is_some() {
            "stock_concept"
        } else {
            "trained_concept"
        }
    }

    fn reports_concept(&self, concept: &str) -> bool {
        self.floor.is_some() && self.concept == concept
    }

    fn keyword_threshold(&self) -> Option<(&str, f32)> {
        self.floor.map(|f| (self.concept.as_str(), f))
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn apply(&self, input: &HeadInput<'_>, opts: &AnalyzeOptions, out: &mut PhotoAnalysis) {
        let Some(embedding) = input.embedding(&self.model) else {
            return;
        };
        if embedding.dims() != self.weights.len() {
            return;
        }
        let score = self.score(&embedding.0);
        if score >= self.floor.unwrap_or(opts.min_confidence) {
            out.concepts.push((self.concept.clone(), score));
        }
    }
}

/// After every head: concepts best first (a name given twice keeps its
/// best score), at most `top_k`. The sort is stable, so the order a head
/// gave equal scores is kept.
pub fn finish_concepts(concepts: &mut Vec<(String, f32)>, top_k: usize) {
    concepts.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut seen = std::collections::HashSet::new();
    concepts.retain(|(name, _)| seen.insert(name.clone()));
    concepts.truncate(top_k);
}
