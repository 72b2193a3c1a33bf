//! The per-model preprocessing spec (read from each model's TOML): geometry
//! (short-side resize + centre crop, letterbox, stretch), filter, normalisation and
//! tensor layout, plus the transform that maps model coordinates back to the photo.

use serde::{Deserialize, Serialize};

use crate::resize::{resample, Precision, Rect};
use crate::{Decoded, RgbImage};

/// How a photo becomes one model input. In TOML:
///
/// ```toml
/// [preprocess]
/// width = 224
/// height = 224
/// filter = "bicubic"
/// layout = "nchw"
/// decode = "exact"
/// resize = { mode = "short_side_crop", short_side = 256 }
/// normalize = { kind = "mean_std", mean = [127.0, 127.0, 127.0], std = [128.0, 128.0, 128.0] }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreprocessSpec {
    /// Model input width.
    pub width: u32,
    /// Model input height.
    pub height: u32,
    pub resize: ResizeMode,
    pub filter: Filter,
    pub normalize: Normalize,
    pub layout: Layout,
    /// Defaults to `exact`, the pipeline the model was trained with.
    #[serde(default)]
    pub decode: DecodeMode,
}

/// The geometry from photo to model input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode", deny_unknown_fields)]
pub enum ResizeMode {
    /// Short side to `short_side`, long side `round(short_side * long / short)`
    /// (Python's `round`, half to even), centre crop at `floor((len - crop) / 2)`:
    /// the pipeline EfficientNet-Lite0's reference numbers were made with (checked
    /// with ONNX Runtime against its published top-5; torchvision's `int(...)` sizes
    /// and `round(...)` offsets do not reproduce them). A crop larger than the
    /// resized image is padded with black, the same formula placing the image
    /// (`ceil((crop - len) / 2)` black pixels before it).
    ShortSideCrop { short_side: u32 },
    /// Keep the aspect ratio, fit inside width×height, centre, fill the rest with `pad`.
    Letterbox { pad: [u8; 3] },
    /// Scale each axis independently to width×height.
    Stretch,
}

/// Resampling filter, computed like Pillow's `Image.resize` (which widens the kernel
/// by the scale factor when shrinking, so downscales are antialiased).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Filter {
    Nearest,
    Bilinear,
    /// Pillow's `BICUBIC` (a = -0.5, Catmull-Rom).
    Bicubic,
    Lanczos3,
}

/// Per-channel arithmetic on 0..=255 values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum Normalize {
    /// `(x - mean[c]) / std[c]`.
    MeanStd { mean: [f32; 3], std: [f32; 3] },
    /// `x * scale + offset` (e.g. 1/127.5 and -1 for [-1, 1]).
    ScaleOffset { scale: f32, offset: f32 },
}

/// Tensor memory layout of one batch slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// Channel planes: R plane, G plane, B plane.
    Nchw,
    /// Interleaved pixels: RGB, RGB, ...
    Nhwc,
}

/// Full decode, or JPEG shrink-on-load before the filter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecodeMode {
    /// Decode at full resolution: the pipeline the training reference used.
    #[default]
    Exact,
    /// Let libjpeg-turbo scale by 1/2, 1/4 or 1/8 in the DCT domain, down to no less
    /// than twice the intermediate resize size, then apply the filter. On baseline
    /// camera JPEGs decode is 1.3–2× faster (4000×2250: 44 → 32 ms; 5640×3172: 109 →
    /// 56 ms); progressive JPEGs gain little, their cost is entropy decoding. The
    /// output differs from `Exact` by a small mean (see the parity tests).
    Fast,
}

/// The model-input-sized image and how it maps back onto its source.
#[derive(Debug, Clone, PartialEq)]
pub struct Resized {
    pub image: RgbImage,
    pub transform: Transform,
}

/// Maps model-input pixel coordinates to source-image pixel coordinates.
///
/// Coordinates are continuous with pixel `i` covering `[i, i + 1)`, so a box's
/// corners map exactly; centre of pixel `i` is `i + 0.5`. The source is the image
/// given to [`PreprocessSpec::resize`]; chain [`Transform::then_scale`] with
/// [`crate::Decoded::scale_to_original`] to reach the full-resolution photo.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transform {
    pub scale_x: f32,
    pub scale_y: f32,
    pub offset_x: f32,
    pub offset_y: f32,
}

impl Transform {
    /// Model-input coordinates to source coordinates.
    pub fn to_source(&self, x: f32, y: f32) -> (f32, f32) {
        (
            x * self.scale_x + self.offset_x,
            y * self.scale_y + self.offset_y,
        )
    }

    /// Source coordinates to model-input coordinates (the inverse of [`Self::to_source`]).
    pub fn to_model(&self, x: f32, y: f32) -> (f32, f32) {
        (
            (x - self.offset_x) / self.scale_x,
            (y - self.offset_y) / self.scale_y,
        )
    }

    /// This transform followed by scaling the source axes by (sx, sy).
    pub fn then_scale(&self, sx: f32, sy: f32) -> Transform {
        Transform {
            scale_x: self.scale_x * sx,
            scale_y: self.scale_y * sy,
            offset_x: self.offset_x * sx,
            offset_y: self.offset_y * sy,
        }
    }
}

/// The geometry of one resize: the whole source is resized to `resized` (as PIL's
/// `Image.resize` would), and the part of that starting at `keep` and the size of
/// `rect` lands at `rect` in the output.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Plan {
    resized: (u32, u32),
    /// Top-left corner of the kept part, in resized pixels.
    keep: (u32, u32),
    rect: Rect,
    /// Colour of output pixels outside `rect`.
    pad: [u8; 3],
}

impl Plan {
    /// Output coordinates to those of the `src_w`×`src_h` source the plan was made for.
    fn transform(&self, src_w: u32, src_h: u32) -> Transform {
        let sx = f64::from(src_w) / f64::from(self.resized.0);
        let sy = f64::from(src_h) / f64::from(self.resized.1);
        Transform {
            scale_x: sx as f32,
            scale_y: sy as f32,
            offset_x: ((f64::from(self.keep.0) - f64::from(self.rect.x)) * sx) as f32,
            offset_y: ((f64::from(self.keep.1) - f64::from(self.rect.y)) * sy) as f32,
        }
    }

    /// The kept part, in resized pixels.
    fn window(&self) -> Rect {
        Rect {
            x: self.keep.0,
            y: self.keep.1,
            width: self.rect.width,
            height: self.rect.height,
        }
    }
}

/// Python's `round(num / den)` (float division, then half to even), exactly in
/// integer arithmetic. `den` must be positive.
fn div_round_half_even(num: u64, den: u64) -> u64 {
    let (q, r) = (num / den, num % den);
    if 2 * r > den || (2 * r == den && q % 2 == 1) {
        q + 1
    } else {
        q
    }
}

/// Short-side resize size: the short side becomes `s`, the long side
/// `round(s * long / short)` (half to even, as Python rounds).
fn short_side_size(w: u32, h: u32, s: u32) -> (u32, u32) {
    let long = |l: u32, short: u32| {
        div_round_half_even(u64::from(s) * u64::from(l), u64::from(short)).min(u64::from(u32::MAX))
            as u32
    };
    if w <= h {
        (s, long(h, w))
    } else {
        (long(w, h), s)
    }
}

/// Largest size with the aspect of w×h that fits in tw×th, rounded, at least 1.
fn fit_size(w: u32, h: u32, tw: u32, th: u32) -> (u32, u32) {
    let (w, h, tw64, th64) = (u64::from(w), u64::from(h), u64::from(tw), u64::from(th));
    if w * th64 >= h * tw64 {
        (tw, ((h * tw64 + w / 2) / w).clamp(1, th64) as u32)
    } else {
        (((w * th64 + h / 2) / h).clamp(1, tw64) as u32, th)
    }
}

/// One axis of a centre crop of `crop` out of an axis resized to `resized` pixels:
/// (first resized pixel kept, where it lands in the output, pixels kept). The crop
/// starts at `floor((resized - crop) / 2)`; when that is negative (a crop larger
/// than the resized axis) the whole axis is kept and lands
/// `ceil((crop - resized) / 2)` pixels in, with black on both sides.
fn crop_axis(resized: u32, crop: u32) -> (u32, u32, u32) {
    if crop <= resized {
        ((resized - crop) / 2, 0, crop)
    } else {
        (0, (crop - resized).div_ceil(2), resized)
    }
}

impl PreprocessSpec {
    /// Checks the values a config file could get wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.width == 0 || self.height == 0 {
            return Err(format!(
                "input size {}x{} is empty",
                self.width, self.height
            ));
        }
        if let ResizeMode::ShortSideCrop { short_side: 0 } = self.resize {
            return Err("short_side must be positive".into());
        }
        if let Normalize::MeanStd { std, .. } = &self.normalize {
            if std.iter().any(|s| *s == 0.0 || !s.is_finite()) {
                return Err(format!("std {std:?} must be finite and non-zero"));
            }
        }
        Ok(())
    }

    /// Length of one batch slot: 3 × width × height.
    pub fn tensor_len(&self) -> usize {
        3 * self.width as usize * self.height as usize
    }

    /// The size the resize works from before cropping or padding, for a source of w×h.
    fn intermediate_size(&self, w: u32, h: u32) -> (u32, u32) {
        match self.resize {
            ResizeMode::ShortSideCrop { short_side } => short_side_size(w, h, short_side),
            ResizeMode::Letterbox { .. } => fit_size(w, h, self.width, self.height),
            ResizeMode::Stretch => (self.width, self.height),
        }
    }

    /// The `min_size` to decode with for a photo of this oriented size: `None` for
    /// [`DecodeMode::Exact`]; for [`DecodeMode::Fast`] the intermediate size with
    /// the decode headroom (twice it), so the filter still shrinks by at least 2
    /// and antialiases as it would on the full image.
    pub fn decode_min_size(&self, oriented_w: u32, oriented_h: u32) -> Option<(u32, u32)> {
        match self.decode {
            DecodeMode::Exact => None,
            DecodeMode::Fast => Some(crate::decode::min_decode_size(
                self.intermediate_size(oriented_w, oriented_h),
            )),
        }
    }

    fn plan(&self, src_w: u32, src_h: u32) -> Plan {
        let resized = self.intermediate_size(src_w, src_h);
        let (rw, rh) = resized;
        match self.resize {
            ResizeMode::ShortSideCrop { .. } => {
                let (keep_x, x, width) = crop_axis(rw, self.width);
                let (keep_y, y, height) = crop_axis(rh, self.height);
                Plan {
                    resized,
                    keep: (keep_x, keep_y),
                    rect: Rect {
                        x,
                        y,
                        width,
                        height,
                    },
                    pad: [0, 0, 0],
                }
            }
            ResizeMode::Letterbox { pad } => Plan {
                resized,
                keep: (0, 0),
                rect: Rect {
                    x: (self.width - rw) / 2,
                    y: (self.height - rh) / 2,
                    width: rw,
                    height: rh,
                },
                pad,
            },
            ResizeMode::Stretch => Plan {
                resized,
                keep: (0, 0),
                rect: Rect {
                    x: 0,
                    y: 0,
                    width: rw,
                    height: rh,
                },
                pad: [0, 0, 0],
            },
        }
    }

    /// Resizes `img` to the model's width×height (u8, before normalisation).
    ///
    /// Pixel for pixel what PIL's `Image.resize` (then `crop` or `paste`) gives; only
    /// the part that survives the crop is computed. Panics if `img.data` does not
    /// match its size.
    pub fn resize(&self, img: &RgbImage) -> Resized {
        let mut out = RgbImage::filled(self.width, self.height, [0, 0, 0]);
        let transform = self.resize_into(img, &mut out);
        Resized {
            image: out,
            transform,
        }
    }

    /// [`Self::resize`] into a caller-owned image, reusing its allocation.
    pub fn resize_into(&self, img: &RgbImage, out: &mut RgbImage) -> Transform {
        self.resize_as_into(img, (img.width, img.height), out)
    }

    /// Resizes a [`Decoded`] photo, planning the geometry on its full-resolution size
    /// so that a shrunk-on-load decode crops and letterboxes exactly like a full one
    /// (planning on the shrunk size can move a letterbox edge by a row). The
    /// transform maps to full-resolution coordinates.
    pub fn resize_decoded(&self, decoded: &Decoded) -> Resized {
        let mut out = RgbImage::filled(self.width, self.height, [0, 0, 0]);
        let original = (decoded.original_width, decoded.original_height);
        let transform = self.resize_as_into(&decoded.image, original, &mut out);
        Resized {
            image: out,
            transform,
        }
    }

    /// Resizes `img` as if it were `original` pixels big (the same photo at a
    /// different resolution); the returned transform maps to `original` coordinates.
    pub fn resize_as_into(
        &self,
        img: &RgbImage,
        original: (u32, u32),
        out: &mut RgbImage,
    ) -> Transform {
        assert!(
            img.is_consistent(),
            "RgbImage data length does not match {}x{}",
            img.width,
            img.height
        );
        out.width = self.width;
        out.height = self.height;
        out.data.clear();
        let (ow, oh) = original;
        if img.width == 0 || img.height == 0 || ow == 0 || oh == 0 {
            out.data.resize(self.tensor_len(), 0);
            return Transform {
                scale_x: 0.0,
                scale_y: 0.0,
                offset_x: 0.0,
                offset_y: 0.0,
            };
        }
        let plan = self.plan(ow, oh);
        let covers = plan.rect.width == self.width && plan.rect.height == self.height;
        if covers || plan.pad == [0, 0, 0] {
            out.data.resize(self.tensor_len(), 0);
        } else {
            let pad = plan.pad;
            out.data
                .extend(pad.iter().copied().cycle().take(self.tensor_len()));
        }
        // A shrunk-on-load decode is resized to the same intermediate size as the
        // full-resolution photo would be, so the same pixels are kept.
        // `exact` reproduces Pillow's resample to the bit (the training
        // reference); `fast` already trades a few levels for speed on decode, so
        // it takes fast_image_resize's SIMD convolution too (5-9x faster).
        let precision = match self.decode {
            DecodeMode::Exact => Precision::Pillow,
            DecodeMode::Fast => Precision::Simd,
        };
        resample(
            img,
            plan.resized,
            plan.window(),
            self.filter,
            precision,
            out,
            (plan.rect.x, plan.rect.y),
        );
        plan.transform(ow, oh)
    }

    /// Normalises `resized` (width×height) into `out` (one batch slot of
    /// [`Self::tensor_len`] floats) in the spec's layout.
    ///
    /// Panics if the sizes do not match: that is a bug in the caller, not bad input.
    pub fn write_tensor(&self, resized: &RgbImage, out: &mut [f32]) {
        assert_eq!(
            (resized.width, resized.height),
            (self.width, self.height),
            "write_tensor needs the resized image"
        );
        assert_eq!(out.len(), self.tensor_len(), "tensor slot length");
        assert!(
            resized.is_consistent(),
            "RgbImage data length does not match its size"
        );
        // 256 values per channel: a table turns the arithmetic into one load.
        let lut = self.lookup_table();
        let [lr, lg, lb] = &lut;
        match self.layout {
            Layout::Nhwc => {
                for (o, p) in out.chunks_exact_mut(3).zip(resized.data.chunks_exact(3)) {
                    o[0] = lr[usize::from(p[0])];
                    o[1] = lg[usize::from(p[1])];
                    o[2] = lb[usize::from(p[2])];
                }
            }
            Layout::Nchw => {
                let plane = out.len() / 3;
                let (r, gb) = out.split_at_mut(plane);
                let (g, b) = gb.split_at_mut(plane);
                let planes = r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut());
                for (((r, g), b), p) in planes.zip(resized.data.chunks_exact(3)) {
                    *r = lr[usize::from(p[0])];
                    *g = lg[usize::from(p[1])];
                    *b = lb[usize::from(p[2])];
                }
            }
        }
    }

    fn lookup_table(&self) -> [[f32; 256]; 3] {
        let mut lut = [[0f32; 256]; 3];
        for (c, table) in lut.iter_mut().enumerate() {
            for (v, slot) in table.iter_mut().enumerate() {
                let x = v as f32;
                *slot = match &self.normalize {
                    Normalize::MeanStd { mean, std } => (x - mean[c]) / std[c],
                    Normalize::ScaleOffset { scale, offset } => x * scale + offset,
                };
            }
        }
        lut
    }
}

#[cfg(test)]
#[path = "preprocess_tests.rs"]
mod tests;
