//! The result Darkroom gives for one photo, in the API's JSON shape.

use serde::{Deserialize, Serialize};

use crate::captioner::Caption;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct PhotoAnalysis {
    pub photo_id: String,
    /// `[name, confidence]` pairs, best first: ImageNet classes and the broad
    /// concepts they roll up to.
    pub concepts: Vec<(String, f32)>,
    /// The classifier's top-1 class probability: how sure it is of anything.
    pub confidence: f32,
    /// Technical quality, 0..1, 1 best (from BRISQUE).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quality: Option<f32>,
    /// The raw BRISQUE score, 0 best to about 100 worst.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub brisque: Option<f32>,
    pub faces: Vec<Face>,
    pub model_release_required: bool,
    pub captions: Vec<Caption>,
    /// Base64 of the L2-normalised float32 (little-endian) embedding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedding: Option<String>,
    /// Width and height of the photo as analysed (after EXIF orientation).
    pub size: [u32; 2],
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Face {
    /// x1, y1, x2, y2 in pixels of the original (oriented) photo.
    #[serde(rename = "box")]
    pub bbox: [u32; 4],
    pub score: f32,
}
