//! Thumbnails: bytes in, a resized and re-encoded photo out, by the same decode
//! (shrink-on-load, EXIF orientation, limits) that feeds the models.
//!
//! [`render`] makes display thumbnails to a [`ThumbnailSpec`] (box, fit, filter,
//! format); [`render_model_input`] writes exactly the image a model's
//! [`PreprocessSpec`] gives inference, as a lossless PNG, so a training set made from
//! it sees the very pixels inference sees. Outputs are 8-bit RGB, upright, with no
//! metadata.

use std::io::Cursor;

use image::codecs::png::{CompressionType, FilterType as PngFilter, PngEncoder};
use image::codecs::webp::WebPEncoder;
use image::{ExtendedColorType, ImageEncoder};
use serde::{Deserialize, Serialize};
use turbojpeg::{Compressor, PixelFormat, Subsamp};

use crate::decode::min_decode_size;
use crate::resize::{resample, Precision, Rect};
use crate::{decode_to_fit, probe, Filter, ImagingError, Limits, PreprocessSpec, RgbImage};

/// How the photo is placed in the requested box.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Fit {
    /// Fill the box, keeping the aspect ratio; the overflow is cropped, centred.
    #[default]
    Cover,
    /// Fit inside the box, keeping the aspect ratio; no padding, so the output is
    /// smaller than the box on one side unless the aspects match.
    Contain,
    /// Stretch to exactly the box.
    Fill,
}

impl Fit {
    /// The name used in serde, flags and cache keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Fit::Cover => "cover",
            Fit::Contain => "contain",
            Fit::Fill => "fill",
        }
    }
}

/// The encoding of a thumbnail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OutputFormat {
    /// Baseline JPEG from libjpeg-turbo, Huffman tables optimised; 4:2:0 chroma
    /// below quality 90, 4:4:4 from 90 up.
    #[default]
    Jpeg,
    /// Lossless PNG.
    Png,
    /// Lossless WebP (the `image` crate encodes no lossy WebP), so `quality` does
    /// not apply and files are several times larger than a JPEG's.
    Webp,
}

impl OutputFormat {
    /// The MIME type, for `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            OutputFormat::Jpeg => "image/jpeg",
            OutputFormat::Png => "image/png",
            OutputFormat::Webp => "image/webp",
        }
    }

    /// File extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            OutputFormat::Jpeg => "jpg",
            OutputFormat::Png => "png",
            OutputFormat::Webp => "webp",
        }
    }

    /// A format from its name, extension or MIME type, any case: `jpeg`, `jpg`,
    /// `image/jpeg`, `png`, `image/png`, `webp`, `image/webp`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "jpeg" | "jpg" | "image/jpeg" => Some(OutputFormat::Jpeg),
            "png" | "image/png" => Some(OutputFormat::Png),
            "webp" | "image/webp" => Some(OutputFormat::Webp),
            _ => None,
        }
    }

    /// The longest side the format can store.
    fn max_side(self) -> u32 {
        match self {
            OutputFormat::Jpeg => 65_535,
            OutputFormat::Png => i32::MAX as u32,
            OutputFormat::Webp => 16_383,
        }
    }
}

/// What thumbnail to make. In JSON: `{"width": 256, "height": 256, "fit": "cover",
/// "filter": "lanczos3", "format": "jpeg", "quality": 85, "enlarge": false}`; all
/// but one of the sides may be left out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThumbnailSpec {
    /// Box width; 0 derives it from `height` and the photo's aspect ratio.
    #[serde(default)]
    pub width: u32,
    /// Box height; 0 derives it from `width` and the photo's aspect ratio.
    /// Both 0 is invalid.
    #[serde(default)]
    pub height: u32,
    #[serde(default)]
    pub fit: Fit,
    /// Resampling filter (fast_image_resize's SIMD convolution).
    #[serde(default = "default_filter")]
    pub filter: Filter,
    #[serde(default)]
    pub format: OutputFormat,
    /// JPEG quality, 1..=100; checked for every format, used by JPEG only.
    #[serde(default = "default_quality")]
    pub quality: u8,
    /// Allow upscaling. When false (the default) a box that would need it shrinks,
    /// keeping its aspect ratio, until it does not: a 200×100 photo in a 256×256
    /// cover box gives a 100×100 centre crop, in a contain box 200×100.
    #[serde(default)]
    pub enlarge: bool,
}

fn default_filter() -> Filter {
    Filter::Lanczos3
}

fn default_quality() -> u8 {
    85
}

impl ThumbnailSpec {
    /// A `width`×`height` box with every other field at its default (cover,
    /// Lanczos3, JPEG quality 85, no enlarging).
    pub fn new(width: u32, height: u32) -> Self {
        ThumbnailSpec {
            width,
            height,
            fit: Fit::default(),
            filter: default_filter(),
            format: OutputFormat::default(),
            quality: default_quality(),
            enlarge: false,
        }
    }

    /// Checks what can be checked without the photo: a side given, quality in
    /// 1..=100, sides the format can store, and the box within `max_output_pixels`
    /// (a derived side counts as 1 here; [`render`] checks the real size).
    pub fn validate(&self, max_output_pixels: u64) -> Result<(), ImagingError> {
        let invalid = |reason: String| Err(ImagingError::InvalidThumbnail { reason });
        if self.width == 0 && self.height == 0 {
            return invalid("width and height are both 0; give at least one".into());
        }
        if !(1..=100).contains(&self.quality) {
            return invalid(format!("quality {} is outside 1..=100", self.quality));
        }
        check_sides(
            u64::from(self.width),
            u64::from(self.height),
            self.format,
            max_output_pixels,
        )
    }

    /// A stable, canonical, filename-safe name for this spec's output, e.g.
    /// `w256-h256-cover-lanczos3-q85.jpg`; `q` only for JPEG (it changes nothing
    /// else), `-enlarge` only when enlarging is on. Specs that can give different
    /// pixels never share a key.
    pub fn cache_key(&self) -> String {
        let quality = match self.format {
            OutputFormat::Jpeg => format!("-q{}", self.quality),
            OutputFormat::Png | OutputFormat::Webp => String::new(),
        };
        format!(
            "w{}-h{}-{}-{}{quality}{}.{}",
            self.width,
            self.height,
            self.fit.as_str(),
            filter_name(self.filter),
            if self.enlarge { "-enlarge" } else { "" },
            self.format.extension()
        )
    }
}

fn filter_name(filter: Filter) -> &'static str {
    match filter {
        Filter::Nearest => "nearest",
        Filter::Bilinear => "bilinear",
        Filter::Bicubic => "bicubic",
        Filter::Lanczos3 => "lanczos3",
    }
}

/// An encoded thumbnail.
#[derive(Clone, PartialEq, Eq)]
pub struct Thumbnail {
    pub bytes: Vec<u8>,
    pub format: OutputFormat,
    pub width: u32,
    pub height: u32,
}

// Kilobytes of encoded bytes help nobody in a log line; show the shape.
impl std::fmt::Debug for Thumbnail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Thumbnail")
            .field("format", &self.format)
            .field("width", &self.width)
            .field("height", &self.height)
            .field("bytes_len", &self.bytes.len())
            .finish()
    }
}

/// Decodes with shrink-on-load (JPEG DCT scaling to no less than the output needs),
/// orients, resizes with `spec.filter` (fast_image_resize's SIMD convolution) and
/// encodes.
///
/// `limits` bounds the input as for analysis, and the output too: a thumbnail of
/// more than `limits.max_pixels` pixels is [`ImagingError::OutputTooLarge`].
pub fn render(
    bytes: &[u8],
    limits: &Limits,
    spec: &ThumbnailSpec,
) -> Result<Thumbnail, ImagingError> {
    spec.validate(limits.max_pixels)?;
    // The header alone gives the geometry, so a refused size costs no decode.
    let (ow, oh) = probe(bytes, limits)?.oriented_size();
    let plan = plan(spec, ow, oh, limits.max_pixels)?;
    let decoded = decode_to_fit(bytes, limits, |_| Some(min_decode_size(plan.resized)))?;
    let window = plan.window;
    let mut out = RgbImage::filled(window.width, window.height, [0, 0, 0]);
    resample(
        &decoded.image,
        plan.resized,
        window,
        spec.filter,
        Precision::Simd,
        &mut out,
        (0, 0),
    );
    Ok(Thumbnail {
        bytes: encode(&out, spec.format, spec.quality)?,
        format: spec.format,
        width: out.width,
        height: out.height,
    })
}

/// Exactly the image a model's preprocessing gives inference (before
/// normalisation), as a lossless PNG: the same `decode_to_fit` and
/// [`PreprocessSpec::resize_decoded`] calls that `models::Analyzer::prepare`
/// makes. `decode_size` is the decode plan of the models inference runs
/// beside this one (`models::DecodePlan::min_size`): in fast mode the
/// shrink-on-load, and so the pixels, depend on it.
pub fn render_model_input(
    bytes: &[u8],
    limits: &Limits,
    spec: &PreprocessSpec,
    decode_size: impl FnOnce((u32, u32)) -> Option<(u32, u32)>,
) -> Result<Thumbnail, ImagingError> {
    spec.validate()
        .map_err(|reason| ImagingError::InvalidThumbnail { reason })?;
    let decoded = decode_to_fit(bytes, limits, decode_size)?;
    let image = spec.resize_decoded(&decoded).image;
    Ok(Thumbnail {
        bytes: encode(&image, OutputFormat::Png, default_quality())?,
        format: OutputFormat::Png,
        width: image.width,
        height: image.height,
    })
}

/// Encodes 8-bit RGB pixels, writing no metadata. `quality` (1..=100) is used by
/// JPEG only.
pub fn encode(
    image: &RgbImage,
    format: OutputFormat,
    quality: u8,
) -> Result<Vec<u8>, ImagingError> {
    if !image.is_consistent() {
        return Err(ImagingError::Internal {
            reason: format!(
                "RgbImage data length does not match {}x{}",
                image.width, image.height
            ),
        });
    }
    let (w, h) = (image.width, image.height);
    if w == 0 || h == 0 {
        return Err(ImagingError::InvalidThumbnail {
            reason: format!("cannot encode an empty {w}x{h} image"),
        });
    }
    check_sides(u64::from(w), u64::from(h), format, u64::MAX)?;
    let internal = |e: &dyn std::fmt::Display| ImagingError::Internal {
        reason: format!("{format:?} encoder: {e}"),
    };
    match format {
        OutputFormat::Jpeg => {
            if !(1..=100).contains(&quality) {
                return Err(ImagingError::InvalidThumbnail {
                    reason: format!("quality {quality} is outside 1..=100"),
                });
            }
            let tj = |e: turbojpeg::Error| internal(&e);
            let mut c = Compressor::new().map_err(tj)?;
            c.set_quality(i32::from(quality)).map_err(tj)?;
            // Full-resolution chroma only where the quality asked for is high
            // enough to show it (as libvips and mozjpeg's defaults do).
            let subsamp = if quality >= 90 {
                Subsamp::None
            } else {
                Subsamp::Sub2x2
            };
            c.set_subsamp(subsamp).map_err(tj)?;
            // Optimised Huffman tables: a few percent smaller for a few percent
            // more encode time, which is small next to the decode.
            c.set_optimize(true).map_err(tj)?;
            let pixels = turbojpeg::Image {
                pixels: image.data.as_slice(),
                width: w as usize,
                pitch: w as usize * 3,
                height: h as usize,
                format: PixelFormat::RGB,
            };
            c.compress_to_vec(pixels).map_err(tj)
        }
        OutputFormat::Png | OutputFormat::Webp => {
            let mut out = Cursor::new(Vec::new());
            let written = if format == OutputFormat::Png {
                PngEncoder::new_with_quality(
                    &mut out,
                    CompressionType::Default,
                    PngFilter::Adaptive,
                )
                .write_image(&image.data, w, h, ExtendedColorType::Rgb8)
            } else {
                WebPEncoder::new_lossless(&mut out).write_image(
                    &image.data,
                    w,
                    h,
                    ExtendedColorType::Rgb8,
                )
            };
            written.map_err(|e| internal(&e))?;
            Ok(out.into_inner())
        }
    }
}

/// Sides the format can store, and at most `max_pixels` pixels.
fn check_sides(w: u64, h: u64, format: OutputFormat, max_pixels: u64) -> Result<(), ImagingError> {
    let max_side = u64::from(format.max_side());
    if w > max_side || h > max_side {
        return Err(ImagingError::InvalidThumbnail {
            reason: format!(
                "{w}x{h}: {} stores at most {max_side} pixels a side",
                format.extension()
            ),
        });
    }
    if w.max(1).saturating_mul(h.max(1)) > max_pixels {
        return Err(ImagingError::OutputTooLarge {
            width: w.min(u64::from(u32::MAX)) as u32,
            height: h.min(u64::from(u32::MAX)) as u32,
            limit: max_pixels,
        });
    }
    Ok(())
}

/// A thumbnail's geometry: the whole (oriented) photo resized to `resized`, of
/// which `window` is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Plan {
    resized: (u32, u32),
    window: Rect,
}

/// `round(num / den)`, half to even (as the models' short-side resize rounds).
fn div_round(num: u64, den: u64) -> u64 {
    let (q, r) = (num / den, num % den);
    if 2 * r > den || (2 * r == den && q % 2 == 1) {
        q + 1
    } else {
        q
    }
}

/// Plans `spec` for a photo of `ow`×`oh` (oriented, non-zero) pixels, refusing an
/// output of more than `max_pixels` or past the format's sides.
fn plan(spec: &ThumbnailSpec, ow: u32, oh: u32, max_pixels: u64) -> Result<Plan, ImagingError> {
    let (ow, oh) = (u64::from(ow), u64::from(oh));
    let too_large = |w: u64, h: u64| ImagingError::OutputTooLarge {
        width: w.min(u64::from(u32::MAX)) as u32,
        height: h.min(u64::from(u32::MAX)) as u32,
        limit: max_pixels,
    };
    let (mut bw, mut bh) = match (u64::from(spec.width), u64::from(spec.height)) {
        (w, 0) => (w, div_round(w * oh, ow).max(1)),
        (0, h) => (div_round(h * ow, oh).max(1), h),
        box_size => box_size,
    };
    // Every side from here on fits in u32, so products of two fit in u64.
    if bw > u64::from(u32::MAX) || bh > u64::from(u32::MAX) {
        return Err(too_large(bw, bh));
    }
    // The photo's aspect at least as wide as the box's: the box's height binds a
    // cover, its width a contain.
    let wider = |bw: u64, bh: u64| ow * bh >= oh * bw;
    if !spec.enlarge && spec.fit != Fit::Contain {
        // Shrink the box by the upscale a cover (or fill) would need, if any.
        if bw * oh >= bh * ow {
            if bw > ow {
                bh = div_round(bh * ow, bw).max(1);
                bw = ow;
            }
        } else if bh > oh {
            bw = div_round(bw * oh, bh).max(1);
            bh = oh;
        }
    }
    let (resized, window) = match spec.fit {
        Fit::Cover => {
            let resized = if wider(bw, bh) {
                (div_round(ow * bh, oh).max(bw), bh)
            } else {
                (bw, div_round(oh * bw, ow).max(bh))
            };
            let at = ((resized.0 - bw) / 2, (resized.1 - bh) / 2);
            (resized, (at, (bw, bh)))
        }
        Fit::Contain => {
            let mut size = if wider(bw, bh) {
                (bw, div_round(oh * bw, ow).clamp(1, bh))
            } else {
                (div_round(ow * bh, oh).clamp(1, bw), bh)
            };
            if !spec.enlarge && (size.0 > ow || size.1 > oh) {
                size = (ow, oh);
            }
            (size, ((0, 0), size))
        }
        Fit::Fill => ((bw, bh), ((0, 0), (bw, bh))),
    };
    let ((x, y), (w, h)) = window;
    check_sides(w, h, spec.format, max_pixels)?;
    // A cover of an extreme panorama can need an intermediate past u32 even when
    // the output is small; it is never materialised, but sizes are u32.
    if resized.0 > u64::from(u32::MAX) || resized.1 > u64::from(u32::MAX) {
        return Err(ImagingError::InvalidThumbnail {
            reason: format!(
                "a {w}x{h} {} of a {ow}x{oh} photo is too far from its aspect ratio",
                spec.fit.as_str()
            ),
        });
    }
    let u = |v: u64| v as u32;
    Ok(Plan {
        resized: (u(resized.0), u(resized.1)),
        window: Rect {
            x: u(x),
            y: u(y),
            width: u(w),
            height: u(h),
        },
    })
}

#[cfg(test)]
#[path = "thumbnail_tests.rs"]
mod tests;
