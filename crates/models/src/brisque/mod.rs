//! BRISQUE: a no-reference *technical* quality score, a port of OpenCV contrib's
//! `cv::quality::QualityBRISQUE` using its LIVE-trained model files.
//!
//! BRISQUE (Mittal, Moorthy & Bovik, "No-Reference Image Quality Assessment in
//! the Spatial Domain", 2012) measures how far a photo's local luminance
//! statistics are from those of undistorted natural images, so it rates
//! **technical** quality: blur, noise, compression artefacts. It knows nothing
//! of composition, subject or taste; a sharp, clean photo of nothing scores
//! well and a moving, slightly soft portrait can score badly. Do not present
//! it as an aesthetic score.
//!
//! The score runs from 0 (best) to about 100 (worst) and can fall slightly
//! outside (OpenCV clamps it to 0..100; [`Brisque::score_rgb`] does not, so
//! that very clean photos still rank). [`quality_from_score`] turns it into a
//! 0..1 quality, 1 best.
//!
//! Parity: every step (grey conversion, `f32` arithmetic, 7×7 Gaussian with
//! replicated borders and OpenCV's fused multiply-adds, bicubic half-size
//! second scale, AGGD fits, range scaling, RBF SVR) follows OpenCV 5.0 on
//! x86-64; on the test photos and their blurred and noisy variants the scores
//! agree with `cv2.quality.QualityBRISQUE_compute` within 0.01 (the tests
//! allow ±2; `scripts/brisque_reference.py` makes the references). The one
//! known source of difference is OpenCV handing the half-size resize to IPP.
//!
//! Cost is linear in pixels: about 8 ms for a 512×512 photo and 26 ms for
//! 1024×768 on one core (release build, x86-64 baseline target); loading the
//! model takes about 10 ms. Callers downscale to at most ~1024 px on the long
//! side first. The score depends on scale (downscaling hides blur and noise),
//! so compare scores of photos prepared the same way.

mod filestorage;
mod filters;
mod model;
mod nss;

use std::path::{Path, PathBuf};

pub use filters::gray_from_rgb;
pub use nss::{features, FEATURE_COUNT};

/// Why the model files could not be loaded. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum BrisqueError {
    #[error("cannot read BRISQUE file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}: not OpenCV FileStorage YAML: {reason}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{}: missing `{key}`", path.display())]
    Missing { path: PathBuf, key: String },
    #[error("{}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
}

/// A loaded BRISQUE model: the feature ranges and the SVR. Cheap to share
/// (`&self` everywhere, no interior mutability), so one instance can serve
/// every worker thread.
#[derive(Debug, Clone)]
pub struct Brisque {
    range: model::FeatureRange,
    svr: model::Svr,
}

impl Brisque {
    /// Loads OpenCV's `brisque_model_live.yml` and `brisque_range_live.yml`
    /// (Debian `opencv-data`, `/usr/share/opencv4/quality/`).
    pub fn load(model_yml: &Path, range_yml: &Path) -> Result<Self, BrisqueError> {
        let svr = model::load_svr(model_yml)?;
        if svr.var_count() != FEATURE_COUNT {
            return Err(BrisqueError::Invalid {
                path: model_yml.to_path_buf(),
                reason: format!(
                    "`var_count` is {}, BRISQUE has {FEATURE_COUNT} features",
                    svr.var_count()
                ),
            });
        }
        let range = model::load_range(range_yml)?;
        Ok(Self { range, svr })
    }

    /// Raw BRISQUE score of an RGB photo (`width × height × 3` bytes, row-major):
    /// 0 best, ~100 worst, not clamped. NaN when the photo is too small (under
    /// 2×2) or so flat that the statistics are undefined.
    ///
    /// # Panics
    /// If `rgb.len() != width * height * 3`.
    pub fn score_rgb(&self, rgb: &[u8], width: u32, height: u32) -> f64 {
        let expected = width as usize * height as usize * 3;
        assert_eq!(rgb.len(), expected, "RGB buffer is not {width}×{height}×3");
        self.score_gray(&gray_from_rgb(rgb), width, height)
    }

    /// Raw BRISQUE score of a grey photo (`width × height` bytes); see
    /// [`Brisque::score_rgb`].
    ///
    /// # Panics
    /// If `gray.len() != width * height`.
    pub fn score_gray(&self, gray: &[u8], width: u32, height: u32) -> f64 {
        self.score_features(&features(gray, width, height))
    }

    /// The score of a feature vector from [`features`].
    pub fn score_features(&self, features: &[f64; FEATURE_COUNT]) -> f64 {
        if features.iter().any(|f| !f.is_finite()) {
            return f64::NAN;
        }
        self.svr.predict(&self.range.scale(features))
    }
}

/// Maps a raw BRISQUE score to a quality in 0..1, 1 best:
/// `clamp(1 − score / 100, 0, 1)`. A score of 0 or below gives 1, 100 or above
/// gives 0; NaN (no statistics, e.g. a flat image) gives 0, the worst, since
/// such a photo has no usable detail.
pub fn quality_from_score(score: f64) -> f32 {
    if score.is_nan() {
        return 0.0;
    }
    (1.0 - score / 100.0).clamp(0.0, 1.0) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quality_is_one_minus_score_over_100_clamped() {
        assert_eq!(quality_from_score(0.0), 1.0);
        assert_eq!(quality_from_score(-3.0), 1.0);
        assert_eq!(quality_from_score(25.0), 0.75);
        assert_eq!(quality_from_score(100.0), 0.0);
        assert_eq!(quality_from_score(140.0), 0.0);
        assert_eq!(quality_from_score(f64::NAN), 0.0);
    }
}
