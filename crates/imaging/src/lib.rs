//! Photo decoding and model preprocessing for Darkroom: bytes in, upright RGB8 and
//! model-ready tensors out, matching the PIL pipelines the models were trained with.
//!
//! Sync and allocation-conscious: it runs on the thumbnail workers' blocking threads.
//!
//! - [`probe`] reads a header (format, size, EXIF orientation) and enforces [`Limits`]
//!   without decoding pixels.
//! - [`decode`] turns JPEG (libjpeg-turbo, with DCT-domain shrink-on-load), PNG and
//!   WebP into upright RGB8 like PIL's `convert("RGB")` + `ImageOps.exif_transpose`.
//! - [`PreprocessSpec`] (part of each model's TOML config) resizes like PIL and writes
//!   the normalised tensor; [`Transform`] maps model coordinates back to the photo.
//! - [`thumbnail`] renders thumbnails ([`ThumbnailSpec`]) and model inputs as
//!   images, through the same decode.

mod complete;
mod decode;
mod error;
mod orient;
mod preprocess;
mod probe;
mod resize;
pub mod thumbnail;

pub use complete::check_complete;
pub use decode::{
    decode, decode_to_fit, estimate_decode, DecodeEstimate, DecodeRequest, DecodeWarning, Decoded,
};
pub use error::ImagingError;
pub use orient::apply_orientation;
pub use preprocess::{
    DecodeMode, Filter, Layout, Normalize, PreprocessSpec, ResizeMode, Resized, Transform,
};
pub use probe::{orientation_from_exif, probe, Format, Header, Limits};
pub use thumbnail::{
    encode, render, render_model_input, Fit, OutputFormat, Thumbnail, ThumbnailSpec,
};

/// The file extensions Darkroom reads as photos (any case): JPEG, MPO (a
/// JPEG with more pictures after it), PNG and WebP.
pub const PHOTO_EXTENSIONS: [&str; 5] = ["jpg", "jpeg", "mpo", "png", "webp"];

/// Whether `path` has one of [`PHOTO_EXTENSIONS`].
pub fn has_photo_extension(path: &std::path::Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| PHOTO_EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// Packed 8-bit RGB pixels, row-major, no padding: `data.len() == width * height * 3`.
#[derive(Clone, PartialEq, Eq)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

impl RgbImage {
    /// A `width`×`height` image filled with one colour.
    pub fn filled(width: u32, height: u32, rgb: [u8; 3]) -> Self {
        let n = width as usize * height as usize;
        let data = if rgb == [0, 0, 0] {
            vec![0; n * 3]
        } else {
            rgb.iter().copied().cycle().take(n * 3).collect()
        };
        RgbImage {
            width,
            height,
            data,
        }
    }

    /// The pixel at (x, y). Panics when out of bounds.
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        assert!(x < self.width && y < self.height, "pixel out of bounds");
        let i = (y as usize * self.width as usize + x as usize) * 3;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }

    /// True when `data` holds exactly `width * height` pixels.
    pub fn is_consistent(&self) -> bool {
        self.data.len() as u64 == u64::from(self.width) * u64::from(self.height) * 3
    }
}

// Printing megabytes of pixels helps nobody; show the shape.
impl std::fmt::Debug for RgbImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RgbImage")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("data_len", &self.data.len())
            .finish()
    }
}
