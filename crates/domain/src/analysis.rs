//! The result Darkroom gives for one photo, in the API's JSON shape, and the
//! embedding kept for every analysed photo.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct PhotoAnalysis {
    pub photo_id: String,
    /// `[name, confidence]` pairs, best first: ImageNet classes, the broad
    /// concepts they roll up to, and trained concepts.
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub embedding: Option<Embedding>,
    /// Width and height of the photo as analysed (after EXIF orientation).
    pub size: [u32; 2],
    /// Flaws the decoder read past, as Pillow reads past them (stray bytes
    /// before a JPEG marker, a broken ICC segment, corrupt entropy data):
    /// the photo was analysed, but its file does not quite follow its format.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub decode_warnings: Vec<DecodeWarning>,
}

/// A flaw the decoder read past: a stable `code` and what it found.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DecodeWarning {
    /// `jpeg_stray_bytes`, `jpeg_bad_icc_profile` or `jpeg_corrupt_data`.
    pub code: String,
    pub message: String,
}

impl PhotoAnalysis {
    /// An analysis that says nothing yet, for heads to fill in.
    pub fn empty(photo_id: String, size: [u32; 2]) -> PhotoAnalysis {
        PhotoAnalysis {
            photo_id,
            concepts: Vec::new(),
            confidence: 0.0,
            quality: None,
            brisque: None,
            faces: Vec::new(),
            model_release_required: false,
            captions: Vec::new(),
            embedding: None,
            size,
            decode_warnings: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Face {
    /// x1, y1, x2, y2 in pixels of the original (oriented) photo.
    #[serde(rename = "box")]
    pub bbox: [u32; 4],
    pub score: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Caption {
    pub caption: String,
    /// The caption's probability: the product of its word probabilities.
    pub probability: f32,
    /// Content words with their natural-log probability under the captioner.
    pub words_probability: Vec<(String, f32)>,
}

/// A photo's embedding: L2-normalised float32. In JSON it is base64 of the
/// little-endian bytes; in the metadata store, those bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedding(pub Vec<f32>);

impl Embedding {
    /// L2-normalises `features` (a zero vector stays zero).
    pub fn normalized(features: &[f32]) -> Embedding {
        let norm = features
            .iter()
            .map(|v| v * v)
            .sum::<f32>()
            .sqrt()
            .max(f32::MIN_POSITIVE);
        Embedding(features.iter().map(|v| v / norm).collect())
    }

    pub fn dims(&self) -> usize {
        self.0.len()
    }

    /// Little-endian float32 bytes, 4 per dimension.
    pub fn to_le_bytes(&self) -> Vec<u8> {
        self.0.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    pub fn from_le_bytes(bytes: &[u8]) -> Result<Embedding, String> {
        if !bytes.len().is_multiple_of(4) {
            return Err(format!(
                "{} bytes is not a whole number of float32",
                bytes.len()
            ));
        }
        Ok(Embedding(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ))
    }

    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.to_le_bytes())
    }

    pub fn from_base64(text: &str) -> Result<Embedding, String> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| format!("embedding is not base64: {e}"))?;
        Embedding::from_le_bytes(&bytes)
    }
}

impl Serialize for Embedding {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_base64())
    }
}

impl<'de> Deserialize<'de> for Embedding {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Embedding::from_base64(&text).map_err(serde::de::Error::custom)
    }
}

/// An embedding as kept in the metadata store, with the model that made it:
/// vectors from different models (or versions) are not comparable.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEmbedding {
    /// The model's name, e.g. `efficientnet-lite0`.
    pub model: String,
    /// The model's version: a short hash of its weights file.
    pub version: String,
    pub vector: Embedding,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embeddings_round_trip_through_bytes_and_base64() {
        let e = Embedding::normalized(&[3.0, 4.0]);
        assert_eq!(e.0, vec![0.6, 0.8]);
        assert_eq!(Embedding::from_le_bytes(&e.to_le_bytes()).unwrap(), e);
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(json, format!("\"{}\"", e.to_base64()));
        assert_eq!(serde_json::from_str::<Embedding>(&json).unwrap(), e);
        assert!(Embedding::from_le_bytes(&[0, 1, 2]).is_err());
        assert_eq!(Embedding::normalized(&[0.0, 0.0]).0, vec![0.0, 0.0]);
    }
}
