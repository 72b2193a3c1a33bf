//! The analyzer: decode a photo once, prepare each model's input exactly as
//! that model was trained, run the models a batch at a time, and turn their
//! outputs into one `PhotoAnalysis` per photo.
//!
//! `prepare` is CPU work per photo (run it on a pool). The ONNX models are
//! [`Stage`]s: `run_stage` runs one model over a batch of prepared photos and
//! returns each photo's raw output, and `finish` turns one photo's raw outputs
//! into its `PhotoAnalysis`. `infer` does both for one batch (the CLI); the
//! service puts a dynamic batcher in front of each stage instead, so photos
//! from different requests share a batch.

use base64::Engine;
use imaging::{DecodeMode, Limits, PreprocessSpec, RgbImage, Transform};

use crate::analysis::{Face, PhotoAnalysis};
use crate::backend::{Backend, Tensor};
use crate::brisque::{quality_from_score, Brisque};
use crate::captioner::{CaptionConcept, CaptionInput, Captioner, TemplateCaptioner};
use crate::concepts::{softmax, ConceptMap, ConceptOptions};
use crate::error::{ModelError, Result};
use crate::faces::{self, Anchor};
use crate::onnx_runtime::OrtBackend;
use crate::repository::{Batching, FaceDetectorSpec, ModelEntry, ModelKind, Repository};

/// How models are loaded.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Model names to load; empty means one of each kind.
    pub models: Vec<String>,
    /// ONNX Runtime intra-op threads per session.
    pub intra_threads: usize,
    /// Override every model's decode mode (`exact` matches training).
    pub decode: Option<DecodeMode>,
    /// Sessions per ONNX model; `None` takes each model's `[batching] instances`.
    pub instances: Option<usize>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            models: Vec::new(),
            intra_threads: 1,
            decode: None,
            instances: None,
        }
    }
}

/// Per-request knobs.
#[derive(Debug, Clone)]
pub struct AnalyzeOptions {
    pub top_k: usize,
    pub min_confidence: f32,
    pub embedding: bool,
    /// Overrides the face model's `release_threshold`.
    pub release_threshold: Option<f32>,
}

impl Default for AnalyzeOptions {
    fn default() -> Self {
        AnalyzeOptions {
            top_k: 10,
            min_confidence: 0.1,
            embedding: false,
            release_threshold: None,
        }
    }
}

/// An ONNX model that runs in batches: the unit the service's batchers serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    Classifier,
    Faces,
}

/// A loaded stage: which model serves it and its batching knobs (from its
/// `model.toml`, with the load-time instance override applied).
#[derive(Debug, Clone)]
pub struct StageInfo {
    pub stage: Stage,
    pub model: String,
    pub batching: Batching,
}

/// One photo's raw output of one stage.
#[derive(Debug, Clone)]
pub enum StageOutput {
    Classifier {
        logits: Vec<f32>,
        /// Pooled features (the embedding before normalisation), if the model has them.
        features: Option<Vec<f32>>,
    },
    Faces {
        regressors: Vec<f32>,
        classificators: Vec<f32>,
    },
}

struct Classifier {
    name: String,
    backend: Box<dyn Backend>,
    batching: Batching,
    /// One item's input shape, from the config (layout-aware).
    input_shape: Vec<usize>,
    spec: PreprocessSpec,
    concepts: ConceptMap,
    logits: String,
    features: Option<String>,
}

struct FaceDetector {
    name: String,
    backend: Box<dyn Backend>,
    batching: Batching,
    input_shape: Vec<usize>,
    spec: PreprocessSpec,
    config: FaceDetectorSpec,
    regressors: String,
    classificators: String,
    anchors: Vec<Anchor>,
}

struct Quality {
    name: String,
    brisque: Brisque,
    max_side: u32,
}

struct TextCaptioner {
    name: String,
    captioner: Box<dyn Captioner>,
    max_captions: usize,
}

/// Loaded models, ready to analyze photos. Shareable across threads.
pub struct Analyzer {
    classifier: Option<Classifier>,
    faces: Option<FaceDetector>,
    quality: Option<Quality>,
    captioner: Option<TextCaptioner>,
}

/// One photo decoded and turned into every model's input.
pub struct Prepared {
    classifier_input: Option<Vec<f32>>,
    face_input: Option<(Vec<f32>, Transform)>,
    brisque: Option<f64>,
    /// Full-resolution size, oriented.
    original: (u32, u32),
}

fn config_err(entry: &ModelEntry, reason: &str) -> ModelError {
    ModelError::Config {
        path: entry.dir.clone(),
        reason: reason.to_string(),
    }
}

fn input_shape(entry: &ModelEntry) -> Vec<usize> {
    entry
        .config
        .onnx
        .as_ref()
        .map(|o| o.input_shape.clone())
        .unwrap_or_default()
}

fn output_name(entry: &ModelEntry, role: &str) -> Option<String> {
    entry.config.onnx.as_ref()?.outputs.get(role).cloned()
}

fn batching(entry: &ModelEntry, opts: &LoadOptions) -> Batching {
    let mut batching = entry.config.batching.clone();
    if let Some(n) = opts.instances {
        batching.instances = n.max(1);
    }
    batching
}

fn preprocess(entry: &ModelEntry, opts: &LoadOptions) -> Result<PreprocessSpec> {
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

impl Analyzer {
    /// Loads the chosen models with ONNX Runtime (initialised beforehand with
    /// `onnx_runtime::init_runtime`).
    pub fn load(repo: &Repository, opts: &LoadOptions) -> Result<Analyzer> {
        Analyzer::load_with(repo, opts, &mut |entry| {
            let instances = batching(entry, opts).instances;
            Ok(Box::new(OrtBackend::load(
                entry,
                opts.intra_threads,
                instances,
            )?))
        })
    }

    /// Loads with a caller-supplied backend per ONNX model (tests use fakes).
    pub fn load_with(
        repo: &Repository,
        opts: &LoadOptions,
        backend: &mut dyn FnMut(&ModelEntry) -> Result<Box<dyn Backend>>,
    ) -> Result<Analyzer> {
        let chosen: Vec<&ModelEntry> = if opts.models.is_empty() {
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
        let mut analyzer = Analyzer {
            classifier: None,
            faces: None,
            quality: None,
            captioner: None,
        };
        for entry in chosen {
            let c = &entry.config;
            match c.kind {
                ModelKind::Classifier => {
                    let spec = c
                        .classifier
                        .as_ref()
                        .ok_or_else(|| config_err(entry, "no [classifier] section"))?;
                    analyzer.classifier = Some(Classifier {
                        name: c.name.clone(),
                        backend: backend(entry)?,
                        batching: batching(entry, opts),
                        input_shape: input_shape(entry),
                        spec: preprocess(entry, opts)?,
                        concepts: ConceptMap::load(entry.path(&spec.concepts))
                            .map_err(|e| config_err(entry, &e.to_string()))?,
                        logits: output_name(entry, "logits").unwrap_or_default(),
                        features: output_name(entry, "features"),
                    });
                }
                ModelKind::FaceDetector => {
                    analyzer.faces = Some(FaceDetector {
                        name: c.name.clone(),
                        backend: backend(entry)?,
                        batching: batching(entry, opts),
                        input_shape: input_shape(entry),
                        spec: preprocess(entry, opts)?,
                        config: c
                            .face_detector
                            .clone()
                            .ok_or_else(|| config_err(entry, "no [face_detector] section"))?,
                        regressors: output_name(entry, "regressors").unwrap_or_default(),
                        classificators: output_name(entry, "classificators").unwrap_or_default(),
                        anchors: faces::short_range_anchors(),
                    });
                }
                ModelKind::Quality => {
                    let spec = c
                        .brisque
                        .as_ref()
                        .ok_or_else(|| config_err(entry, "no [brisque] section"))?;
                    let brisque = Brisque::load(&entry.path(&spec.model), &entry.path(&spec.range))
                        .map_err(|e| config_err(entry, &e.to_string()))?;
                    analyzer.quality = Some(Quality {
                        name: c.name.clone(),
                        brisque,
                        max_side: spec.max_side,
                    });
                }
                ModelKind::Captioner => {
                    let spec = c
                        .captioner
                        .as_ref()
                        .ok_or_else(|| config_err(entry, "no [captioner] section"))?;
                    if spec.implementation != "template" {
                        return Err(config_err(
                            entry,
                            "only the `template` captioner is built in",
                        ));
                    }
                    analyzer.captioner = Some(TextCaptioner {
                        name: c.name.clone(),
                        captioner: Box::new(TemplateCaptioner::default()),
                        max_captions: spec.max_captions,
                    });
                }
            }
        }
        Ok(analyzer)
    }

    /// The smallest decode that still serves every loaded model: `None` (full
    /// decode) as soon as one model wants exact pixels.
    fn decode_min_size(&self, width: u32, height: u32) -> Option<(u32, u32)> {
        let specs = self
            .classifier
            .iter()
            .map(|c| &c.spec)
            .chain(self.faces.iter().map(|f| &f.spec));
        let mut need = (0u32, 0u32);
        for spec in specs {
            let (w, h) = spec.decode_min_size(width, height)?;
            need = (need.0.max(w), need.1.max(h));
        }
        if let Some(q) = &self.quality {
            // BRISQUE runs on a downscale of at most max_side on the long side.
            let scale = q.max_side as f32 / width.max(height) as f32;
            if scale < 1.0 {
                need = (
                    need.0.max((width as f32 * scale) as u32),
                    need.1.max((height as f32 * scale) as u32),
                );
            } else {
                return None;
            }
        }
        Some(need)
    }

    /// Decodes a photo once and prepares every loaded model's input. CPU-bound.
    pub fn prepare(
        &self,
        bytes: &[u8],
        limits: &Limits,
    ) -> std::result::Result<Prepared, imaging::ImagingError> {
        let decoded = imaging::decode_to_fit(bytes, limits, |(w, h)| self.decode_min_size(w, h))?;
        let image = &decoded.image;
        let tensor = |spec: &PreprocessSpec| {
            // Planned on the full-resolution size, so the transform maps to the
            // original photo even when the decode was shrunk on load.
            let resized = spec.resize_decoded(&decoded);
            let mut input = vec![0.0f32; spec.tensor_len()];
            spec.write_tensor(&resized.image, &mut input);
            (input, resized.transform)
        };
        Ok(Prepared {
            classifier_input: self.classifier.as_ref().map(|c| tensor(&c.spec).0),
            face_input: self.faces.as_ref().map(|f| tensor(&f.spec)),
            // A photo too small or too flat for the statistics gives NaN: no score.
            brisque: self
                .quality
                .as_ref()
                .map(|q| quality_score(&q.brisque, image, q.max_side))
                .filter(|s| s.is_finite()),
            original: (decoded.original_width, decoded.original_height),
        })
    }

    /// Every loaded model's name with its kind.
    pub fn models(&self) -> Vec<(&str, ModelKind)> {
        let mut models = Vec::new();
        if let Some(c) = &self.classifier {
            models.push((c.name.as_str(), ModelKind::Classifier));
        }
        if let Some(f) = &self.faces {
            models.push((f.name.as_str(), ModelKind::FaceDetector));
        }
        if let Some(q) = &self.quality {
            models.push((q.name.as_str(), ModelKind::Quality));
        }
        if let Some(c) = &self.captioner {
            models.push((c.name.as_str(), ModelKind::Captioner));
        }
        models
    }

    /// The preprocessing `model`'s inputs get, as loaded (decode override
    /// applied); `None` for a model without image input or not loaded.
    pub fn input_spec(&self, model: &str) -> Option<&PreprocessSpec> {
        let classifier = self.classifier.iter().map(|c| (&c.name, &c.spec));
        let faces = self.faces.iter().map(|f| (&f.name, &f.spec));
        classifier
            .chain(faces)
            .find(|(name, _)| *name == model)
            .map(|(_, spec)| spec)
    }

    /// The batched stages loaded, in the order `infer` runs them.
    pub fn stages(&self) -> Vec<StageInfo> {
        let classifier = self.classifier.iter().map(|c| StageInfo {
            stage: Stage::Classifier,
            model: c.name.clone(),
            batching: c.batching.clone(),
        });
        let faces = self.faces.iter().map(|f| StageInfo {
            stage: Stage::Faces,
            model: f.name.clone(),
            batching: f.batching.clone(),
        });
        classifier.chain(faces).collect()
    }

    /// Runs one stage's model over a batch of prepared photos: one raw output
    /// per photo, in order. Blocks for the inference; run it off the runtime.
    pub fn run_stage(&self, stage: Stage, photos: &[&Prepared]) -> Result<Vec<StageOutput>> {
        let not_loaded = || ModelError::BadOutput {
            model: format!("{stage:?}"),
            reason: "stage not loaded".into(),
        };
        match stage {
            Stage::Classifier => {
                let c = self.classifier.as_ref().ok_or_else(not_loaded)?;
                let inputs = photos.iter().map(|p| {
                    p.classifier_input
                        .as_deref()
                        .expect("prepared by the analyzer that loaded the classifier")
                });
                let outputs = c.backend.infer(stack(inputs, &c.input_shape))?;
                let logits = output(&outputs, &c.logits, &c.name, photos.len())?;
                let features = match &c.features {
                    Some(name) => Some(output(&outputs, name, &c.name, photos.len())?),
                    None => None,
                };
                Ok((0..photos.len())
                    .map(|i| StageOutput::Classifier {
                        logits: logits.item(i).to_vec(),
                        features: features.map(|f| f.item(i).to_vec()),
                    })
                    .collect())
            }
            Stage::Faces => {
                let f = self.faces.as_ref().ok_or_else(not_loaded)?;
                let inputs = photos.iter().map(|p| {
                    p.face_input
                        .as_ref()
                        .map(|(t, _)| t.as_slice())
                        .expect("prepared by the analyzer that loaded the face detector")
                });
                let outputs = f.backend.infer(stack(inputs, &f.input_shape))?;
                let regressors = output(&outputs, &f.regressors, &f.name, photos.len())?;
                let classificators = output(&outputs, &f.classificators, &f.name, photos.len())?;
                Ok((0..photos.len())
                    .map(|i| StageOutput::Faces {
                        regressors: regressors.item(i).to_vec(),
                        classificators: classificators.item(i).to_vec(),
                    })
                    .collect())
            }
        }
    }

    /// Runs a batch of prepared photos through every model (the CLI's path).
    pub fn infer(
        &self,
        photos: &[(String, Prepared)],
        opts: &AnalyzeOptions,
    ) -> Result<Vec<PhotoAnalysis>> {
        let prepared: Vec<&Prepared> = photos.iter().map(|(_, p)| p).collect();
        let mut per_photo: Vec<Vec<StageOutput>> = photos.iter().map(|_| Vec::new()).collect();
        if !photos.is_empty() {
            for info in self.stages() {
                let outputs = self.run_stage(info.stage, &prepared)?;
                for (photo, output) in per_photo.iter_mut().zip(outputs) {
                    photo.push(output);
                }
            }
        }
        Ok(photos
            .iter()
            .zip(per_photo)
            .map(|((id, p), outputs)| self.finish(id.clone(), p, &outputs, opts))
            .collect())
    }

    /// Turns one photo's raw stage outputs into its analysis. Cheap.
    pub fn finish(
        &self,
        photo_id: String,
        prepared: &Prepared,
        outputs: &[StageOutput],
        opts: &AnalyzeOptions,
    ) -> PhotoAnalysis {
        let mut result = PhotoAnalysis {
            photo_id,
            concepts: Vec::new(),
            confidence: 0.0,
            quality: prepared.brisque.map(quality_from_score),
            brisque: prepared.brisque.map(|s| s as f32),
            faces: Vec::new(),
            model_release_required: false,
            captions: Vec::new(),
            embedding: None,
            size: [prepared.original.0, prepared.original.1],
        };
        for output in outputs {
            match output {
                StageOutput::Classifier { logits, features } => {
                    if let Some(c) = &self.classifier {
                        self.classify(c, logits, features.as_deref(), opts, &mut result);
                    }
                }
                StageOutput::Faces {
                    regressors,
                    classificators,
                } => {
                    if let Some(f) = &self.faces {
                        detect_faces(f, prepared, regressors, classificators, opts, &mut result);
                    }
                }
            }
        }
        result
    }

    fn classify(
        &self,
        c: &Classifier,
        logits: &[f32],
        features: Option<&[f32]>,
        opts: &AnalyzeOptions,
        result: &mut PhotoAnalysis,
    ) {
        let concept_opts = ConceptOptions {
            top_k: opts.top_k,
            min_confidence: opts.min_confidence,
            include_broad: true,
        };
        let probs = softmax(logits);
        result.confidence = probs.iter().copied().fold(0.0, f32::max);
        result.concepts = c.concepts.score(&probs, &concept_opts);
        if let Some(cap) = &self.captioner {
            let classes = c.concepts.score(
                &probs,
                &ConceptOptions {
                    top_k: 5,
                    min_confidence: 0.0,
                    include_broad: false,
                },
            );
            let concepts: Vec<CaptionConcept> = classes
                .into_iter()
                .map(|(name, confidence)| CaptionConcept {
                    groups: c.concepts.groups_of(&name),
                    name,
                    confidence,
                })
                .collect();
            result.captions = cap.captioner.caption(
                &CaptionInput {
                    concepts: &concepts,
                },
                cap.max_captions,
            );
        }
        if let (Some(features), true) = (features, opts.embedding) {
            result.embedding = Some(encode_embedding(features));
        }
    }
}

fn detect_faces(
    f: &FaceDetector,
    prepared: &Prepared,
    regressors: &[f32],
    classificators: &[f32],
    opts: &AnalyzeOptions,
    result: &mut PhotoAnalysis,
) {
    let Some((_, transform)) = &prepared.face_input else {
        return;
    };
    let release = opts.release_threshold.unwrap_or(f.config.release_threshold);
    let detections = faces::decode(
        regressors,
        classificators,
        &f.anchors,
        f.config.score_threshold,
        f.config.iou_threshold,
    );
    // Input 0..1 → model pixels → original photo pixels.
    let (ow, oh) = (prepared.original.0 as f32, prepared.original.1 as f32);
    result.faces = detections
        .iter()
        .map(|d| {
            let (x1, y1) = transform.to_source(
                d.bbox[0] * f.spec.width as f32,
                d.bbox[1] * f.spec.height as f32,
            );
            let (x2, y2) = transform.to_source(
                d.bbox[2] * f.spec.width as f32,
                d.bbox[3] * f.spec.height as f32,
            );
            let px = |v: f32, max: f32| v.clamp(0.0, max).round() as u32;
            Face {
                bbox: [px(x1, ow), px(y1, oh), px(x2, ow), px(y2, oh)],
                score: d.score,
            }
        })
        .collect();
    result.model_release_required = result.faces.iter().any(|face| face.score >= release);
}

/// BRISQUE of a photo after an antialiased downscale to at most `max_side`
/// pixels on the long side.
pub fn quality_score(brisque: &Brisque, image: &RgbImage, max_side: u32) -> f64 {
    let long = image.width.max(image.height);
    if long <= max_side {
        return brisque.score_rgb(&image.data, image.width, image.height);
    }
    let scale = max_side as f32 / long as f32;
    let (w, h) = (
        ((image.width as f32 * scale).round() as u32).max(1),
        ((image.height as f32 * scale).round() as u32).max(1),
    );
    let spec = PreprocessSpec {
        width: w,
        height: h,
        resize: imaging::ResizeMode::Stretch,
        filter: imaging::Filter::Bilinear,
        normalize: imaging::Normalize::ScaleOffset {
            scale: 1.0,
            offset: 0.0,
        },
        layout: imaging::Layout::Nchw,
        decode: DecodeMode::Fast,
    };
    let small = spec.resize(image).image;
    brisque.score_rgb(&small.data, small.width, small.height)
}

/// Concatenates per-photo inputs into one batch tensor of `[n, item_shape..]`.
fn stack<'a>(items: impl Iterator<Item = &'a [f32]>, item_shape: &[usize]) -> Tensor {
    let mut data = Vec::new();
    let mut n = 0;
    for item in items {
        data.extend_from_slice(item);
        n += 1;
    }
    let mut shape = vec![n];
    shape.extend_from_slice(item_shape);
    Tensor::new(shape, data)
}

fn output<'a>(
    outputs: &'a crate::backend::Outputs,
    name: &str,
    model: &str,
    batch: usize,
) -> Result<&'a Tensor> {
    let tensor = outputs.get(name).ok_or_else(|| ModelError::BadOutput {
        model: model.to_string(),
        reason: format!("no output named `{name}`"),
    })?;
    if tensor.batch() != batch {
        return Err(ModelError::BadOutput {
            model: model.to_string(),
            reason: format!("`{name}` has batch {} for {batch} inputs", tensor.batch()),
        });
    }
    Ok(tensor)
}

/// L2-normalises and encodes as base64 of little-endian float32.
pub fn encode_embedding(features: &[f32]) -> String {
    let norm = features
        .iter()
        .map(|v| v * v)
        .sum::<f32>()
        .sqrt()
        .max(f32::MIN_POSITIVE);
    let bytes: Vec<u8> = features
        .iter()
        .flat_map(|v| (v / norm).to_le_bytes())
        .collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
