//! The analyzer: decode a photo once, prepare each backbone's input exactly
//! as that model was trained, run the backbones a batch at a time, and let
//! the heads turn their outputs into one `PhotoAnalysis` per photo.
//!
//! - `prepare` is CPU work per photo (run it on a pool): one decode, each
//!   selected backbone's input tensor, and BRISQUE on the pixels.
//! - `run_backbone` runs one ONNX model over a batch of prepared photos and
//!   returns each photo's raw outputs by role (`logits`, `features`, ...).
//! - `finish` applies a set of [`Head`]s to one photo's raw outputs.
//!
//! The analyzer owns the backbones, which are fixed once loaded; the heads
//! it builds from the repository ([`Analyzer::builtin_heads`]) are a
//! starting set. The engine crate keeps the set that is in force, swaps it
//! while serving and puts a dynamic batcher in front of each backbone.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use domain::analysis::PhotoAnalysis;
use imaging::{DecodeMode, Limits, PreprocessSpec, RgbImage, Transform};

use crate::backend::{Backend, Tensor};
use crate::brisque::Brisque;
use crate::captioner::TemplateCaptioner;
use crate::concepts::ConceptMap;
use crate::decode_plan::{chosen_models, config_err, preprocess, DecodePlan};
use crate::error::{ModelError, Result};
use crate::heads::{
    finish_concepts, CaptionsHead, ConceptsHead, EmbeddingHead, FacesHead, Head, HeadInput,
    QualityHead,
};
use crate::onnx_runtime::OrtBackend;
use crate::repository::{Batching, ModelEntry, ModelKind, Repository};
use crate::stock::{RollupCalibration, StockVocabulary};

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

/// A loaded backbone: which model it is and its batching knobs (from its
/// `model.toml`, with the load-time instance override applied).
#[derive(Debug, Clone)]
pub struct BackboneInfo {
    /// Its index, as `run_backbone` and [`Selection`] take it.
    pub index: usize,
    pub model: String,
    pub kind: ModelKind,
    pub batching: Batching,
}

/// What to prepare and run for a call, resolved once per request from the
/// heads it needs (see [`Analyzer::select`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Backbone indices, ascending.
    pub backbones: Vec<usize>,
    /// Compute BRISQUE on the pixels.
    pub quality: bool,
}

/// One photo's raw outputs of one backbone, by role (`logits`, ...).
#[derive(Debug, Clone, Default)]
pub struct BackboneOutput {
    tensors: BTreeMap<String, Vec<f32>>,
}

impl BackboneOutput {
    pub fn get(&self, role: &str) -> Option<&[f32]> {
        self.tensors.get(role).map(Vec::as_slice)
    }
}

/// An ONNX model with an image input, run in batches.
struct Backbone {
    name: String,
    kind: ModelKind,
    backend: Box<dyn Backend>,
    batching: Batching,
    /// One item's input shape, from the config (layout-aware).
    input_shape: Vec<usize>,
    spec: PreprocessSpec,
    /// Role → graph output name.
    outputs: BTreeMap<String, String>,
    /// A short hash of the weights: what an embedding is stored under.
    version: String,
}

/// BRISQUE: a model over pixels, computed while preparing.
struct Quality {
    name: String,
    brisque: Brisque,
    max_side: u32,
}

/// Loaded models, ready to analyze photos. Shareable across threads.
pub struct Analyzer {
    /// How large photos are decoded: for every loaded model at once.
    plan: DecodePlan,
    backbones: Vec<Backbone>,
    /// Names of `backbones`, in order (what [`HeadInput`] looks up).
    backbone_names: Vec<String>,
    quality: Option<Quality>,
    /// Every loaded model with its kind, in load order.
    models: Vec<(String, ModelKind)>,
    heads: Vec<Arc<dyn Head>>,
}

/// One photo decoded and turned into the selected backbones' inputs.
pub struct Prepared {
    /// Indexed by backbone; `None` for one not selected.
    inputs: Vec<Option<(Vec<f32>, Transform)>>,
    pub(crate) brisque: Option<f64>,
    /// Full-resolution size, oriented.
    pub(crate) original: (u32, u32),
    /// What the decode read past.
    pub(crate) warnings: Vec<imaging::DecodeWarning>,
}

impl Prepared {
    /// The tensor `backbone` is fed for this photo, if it was selected.
    pub fn input(&self, backbone: usize) -> Option<&[f32]> {
        self.inputs
            .get(backbone)?
            .as_ref()
            .map(|(t, _)| t.as_slice())
    }

    pub(crate) fn transform(&self, backbone: usize) -> Option<&Transform> {
        self.inputs.get(backbone)?.as_ref().map(|(_, t)| t)
    }
}

fn batching(entry: &ModelEntry, opts: &LoadOptions) -> Batching {
    let mut batching = entry.config.batching.clone();
    if let Some(n) = opts.instances {
        batching.instances = n.max(1);
    }
    batching
}

/// The first 12 hex digits of the sha256 of the model's ONNX file, as
/// recorded in its `model.toml` (`unrecorded` when it is not).
fn weights_version(entry: &ModelEntry) -> String {
    let file = entry.config.onnx.as_ref().map(|o| o.file.as_str());
    file.and_then(|f| entry.config.files.get(f))
        .map_or_else(|| "unrecorded".into(), |h| h.chars().take(12).collect())
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
        let chosen = chosen_models(repo, opts)?;
        let mut analyzer = Analyzer {
            plan: DecodePlan::for_models(repo, opts)?,
            backbones: Vec::new(),
            backbone_names: Vec::new(),
            quality: None,
            models: Vec::new(),
            heads: Vec::new(),
        };
        // The classifier's concepts, for the captioner loaded after it.
        let mut classifier: Option<(String, Arc<ConceptMap>)> = None;
        let mut captioners = Vec::new();
        for entry in chosen {
            let c = &entry.config;
            analyzer.models.push((c.name.clone(), c.kind));
            match c.kind {
                ModelKind::Classifier | ModelKind::FaceDetector => {
                    let onnx = c
                        .onnx
                        .as_ref()
                        .ok_or_else(|| config_err(entry, "no [onnx] section"))?;
                    let spec = preprocess(entry, opts)?;
                    if c.kind == ModelKind::Classifier {
                        let concepts = c
                            .classifier
                            .as_ref()
                            .ok_or_else(|| config_err(entry, "no [classifier] section"))?;
                        let map = Arc::new(
                            ConceptMap::load(entry.path(&concepts.concepts))
                                .map_err(|e| config_err(entry, &e.to_string()))?
                                .with_floors(RollupCalibration::builtin().floors(&c.name)),
                        );
                        analyzer.heads.push(Arc::new(ConceptsHead {
                            model: c.name.clone(),
                            map: map.clone(),
                        }));
                        if onnx.outputs.contains_key("features") {
                            analyzer.heads.push(Arc::new(EmbeddingHead {
                                model: c.name.clone(),
                            }));
                            let stock = StockVocabulary::builtin();
                            match stock.heads(&c.name, &weights_version(entry)) {
                                Ok(heads) => analyzer.heads.extend(
                                    heads.into_iter().map(|h| Arc::new(h) as Arc<dyn Head>),
                                ),
                                // Another classifier: it has no vocabulary.
                                Err(_) if stock.model != c.name => {}
                                Err(why) => eprintln!("darkroom: no stock keywords: {why}"),
                            }
                        }
                        classifier.get_or_insert((c.name.clone(), map));
                    } else {
                        let config = c
                            .face_detector
                            .clone()
                            .ok_or_else(|| config_err(entry, "no [face_detector] section"))?;
                        analyzer.heads.push(Arc::new(FacesHead::new(
                            c.name.clone(),
                            &spec,
                            config,
                        )));
                    }
                    analyzer.backbone_names.push(c.name.clone());
                    analyzer.backbones.push(Backbone {
                        name: c.name.clone(),
                        kind: c.kind,
                        backend: backend(entry)?,
                        batching: batching(entry, opts),
                        input_shape: onnx.input_shape.clone(),
                        spec,
                        outputs: onnx.outputs.clone(),
                        version: weights_version(entry),
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
                    analyzer.heads.push(Arc::new(QualityHead {
                        model: c.name.clone(),
                    }));
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
                    captioners.push((c.name.clone(), spec.max_captions));
                }
                // Refused by chosen_models: not a photo model.
                ModelKind::TextEncoder => {}
            }
        }
        // Captions are composed from a classifier's concepts: without one
        // loaded, the captioner has nothing to say.
        if let Some((model, map)) = &classifier {
            for (name, max_captions) in captioners {
                analyzer.heads.push(Arc::new(CaptionsHead {
                    model: name,
                    classifier: model.clone(),
                    map: map.clone(),
                    captioner: Box::new(TemplateCaptioner::default()),
                    max_captions,
                }));
            }
        }
        Ok(analyzer)
    }

    /// Every loaded model's name with its kind.
    pub fn models(&self) -> Vec<(&str, ModelKind)> {
        self.models.iter().map(|(n, k)| (n.as_str(), *k)).collect()
    }

    /// The heads made from the loaded models, in the order they apply:
    /// concepts and the embedding, faces, quality, captions.
    pub fn builtin_heads(&self) -> Vec<Arc<dyn Head>> {
        self.heads.clone()
    }

    /// The batched backbones loaded, in index order.
    pub fn backbones(&self) -> Vec<BackboneInfo> {
        self.backbones
            .iter()
            .enumerate()
            .map(|(index, b)| BackboneInfo {
                index,
                model: b.name.clone(),
                kind: b.kind,
                batching: b.batching.clone(),
            })
            .collect()
    }

    /// The version of a loaded backbone's weights (a short hash).
    pub fn model_version(&self, model: &str) -> Option<&str> {
        let b = self.backbones.iter().find(|b| b.name == model)?;
        Some(&b.version)
    }

    /// The backbone whose pooled features are the embedding, if one is loaded.
    pub fn embedding_model(&self) -> Option<&str> {
        self.backbones
            .iter()
            .find(|b| b.kind == ModelKind::Classifier && b.outputs.contains_key("features"))
            .map(|b| b.name.as_str())
    }

    /// The preprocessing `model`'s inputs get, as loaded (decode override
    /// applied); `None` for a model without image input or not loaded.
    pub fn input_spec(&self, model: &str) -> Option<&PreprocessSpec> {
        self.backbones
            .iter()
            .find(|b| b.name == model)
            .map(|b| &b.spec)
    }

    /// What must be prepared and run for the models `reads` names (heads'
    /// [`Head::reads`]); names of no loaded backbone or quality model are
    /// ignored.
    pub fn select<'a>(&self, reads: impl IntoIterator<Item = &'a str>) -> Selection {
        let reads: BTreeSet<&str> = reads.into_iter().collect();
        Selection {
            backbones: (0..self.backbones.len())
                .filter(|&i| reads.contains(self.backbones[i].name.as_str()))
                .collect(),
            quality: self
                .quality
                .as_ref()
                .is_some_and(|q| reads.contains(q.name.as_str())),
        }
    }

    /// Everything loaded: every backbone and the quality model.
    pub fn select_all(&self) -> Selection {
        Selection {
            backbones: (0..self.backbones.len()).collect(),
            quality: self.quality.is_some(),
        }
    }

    /// How photos are decoded for these models (thumbnails of a model's
    /// input use it too).
    pub fn decode_plan(&self) -> &DecodePlan {
        &self.plan
    }

    /// Decodes a photo once and prepares the selected models' inputs. CPU-bound.
    pub fn prepare(
        &self,
        bytes: &[u8],
        limits: &Limits,
        selection: &Selection,
    ) -> std::result::Result<Prepared, imaging::ImagingError> {
        let decoded = imaging::decode_to_fit(bytes, limits, |(w, h)| self.plan.min_size(w, h))?;
        let inputs = (0..self.backbones.len())
            .map(|i| {
                if !selection.backbones.contains(&i) {
                    return None;
                }
                let spec = &self.backbones[i].spec;
                // Planned on the full-resolution size, so the transform maps
                // to the original photo even when the decode was shrunk on load.
                let resized = spec.resize_decoded(&decoded);
                let mut input = vec![0.0f32; spec.tensor_len()];
                spec.write_tensor(&resized.image, &mut input);
                Some((input, resized.transform))
            })
            .collect();
        let brisque = match (selection.quality, &self.quality) {
            // A photo too small or too flat for the statistics gives NaN: no score.
            (true, Some(q)) => Some(quality_score(&q.brisque, &decoded.image, q.max_side))
                .filter(|s| s.is_finite()),
            _ => None,
        };
        Ok(Prepared {
            inputs,
            brisque,
            original: (decoded.original_width, decoded.original_height),
            warnings: decoded.warnings,
        })
    }

    /// Runs one backbone over a batch of prepared photos: one raw output per
    /// photo, in order. Blocks for the inference; run it off the runtime.
    /// Every photo must have been prepared with this backbone selected.
    pub fn run_backbone(&self, index: usize, photos: &[&Prepared]) -> Result<Vec<BackboneOutput>> {
        let b = self
            .backbones
            .get(index)
            .ok_or_else(|| ModelError::BadOutput {
                model: format!("backbone {index}"),
                reason: "not loaded".into(),
            })?;
        let mut data = Vec::new();
        for photo in photos {
            let (input, _) = photo
                .inputs
                .get(index)
                .and_then(Option::as_ref)
                .ok_or_else(|| ModelError::BadOutput {
                    model: b.name.clone(),
                    reason: "a photo was prepared without this model's input".into(),
                })?;
            data.extend_from_slice(input);
        }
        let mut shape = vec![photos.len()];
        shape.extend_from_slice(&b.input_shape);
        let outputs = b.backend.infer(Tensor::new(shape, data))?;
        let mut per_photo: Vec<BackboneOutput> =
            photos.iter().map(|_| BackboneOutput::default()).collect();
        for (role, graph_name) in &b.outputs {
            let tensor = outputs
                .get(graph_name)
                .ok_or_else(|| ModelError::BadOutput {
                    model: b.name.clone(),
                    reason: format!("no output named `{graph_name}`"),
                })?;
            if tensor.batch() != photos.len() {
                return Err(ModelError::BadOutput {
                    model: b.name.clone(),
                    reason: format!(
                        "`{graph_name}` has batch {} for {} inputs",
                        tensor.batch(),
                        photos.len()
                    ),
                });
            }
            for (i, out) in per_photo.iter_mut().enumerate() {
                out.tensors.insert(role.clone(), tensor.item(i).to_vec());
            }
        }
        Ok(per_photo)
    }

    /// Turns one photo's raw outputs into its analysis with `heads`, in
    /// order. `outputs` pairs a backbone index with its output. Cheap.
    pub fn finish(
        &self,
        photo_id: String,
        prepared: &Prepared,
        outputs: Vec<(usize, BackboneOutput)>,
        heads: &[Arc<dyn Head>],
        opts: &AnalyzeOptions,
    ) -> PhotoAnalysis {
        let mut indexed: Vec<Option<BackboneOutput>> =
            self.backbones.iter().map(|_| None).collect();
        for (i, output) in outputs {
            if let Some(slot) = indexed.get_mut(i) {
                *slot = Some(output);
            }
        }
        let input = HeadInput::new(&self.backbone_names, prepared, &indexed);
        let mut result = PhotoAnalysis::empty(photo_id, [prepared.original.0, prepared.original.1]);
        result.decode_warnings = prepared
            .warnings
            .iter()
            .map(|w| domain::DecodeWarning {
                code: w.code.to_string(),
                message: w.message.clone(),
            })
            .collect();
        for head in heads {
            head.apply(&input, opts, &mut result);
        }
        finish_concepts(&mut result.concepts, opts.top_k);
        result
    }

    /// Prepares and analyses photos in one batch on the calling thread with
    /// the built-in heads: every loaded model. For tests and benchmarks of
    /// the models themselves; the service and the CLI go through the engine
    /// crate, which batches across requests.
    pub fn infer(
        &self,
        photos: &[(String, &[u8])],
        limits: &Limits,
        opts: &AnalyzeOptions,
    ) -> Result<Vec<std::result::Result<PhotoAnalysis, imaging::ImagingError>>> {
        let selection = self.select_all();
        let prepared: Vec<_> = photos
            .iter()
            .map(|(_, bytes)| self.prepare(bytes, limits, &selection))
            .collect();
        let ok: Vec<&Prepared> = prepared.iter().filter_map(|p| p.as_ref().ok()).collect();
        let mut outputs: Vec<Vec<(usize, BackboneOutput)>> =
            ok.iter().map(|_| Vec::new()).collect();
        if !ok.is_empty() {
            for &i in &selection.backbones {
                for (photo, output) in outputs.iter_mut().zip(self.run_backbone(i, &ok)?) {
                    photo.push((i, output));
                }
            }
        }
        let mut outputs = outputs.into_iter();
        Ok(photos
            .iter()
            .zip(prepared)
            .map(|((id, _), p)| {
                let p = p?;
                let out = outputs.next().expect("one output list per prepared photo");
                Ok(self.finish(id.clone(), &p, out, &self.heads, opts))
            })
            .collect())
    }
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
