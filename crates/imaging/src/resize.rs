//! PIL-compatible resampling of a source region into a destination rectangle, on top of
//! fast_image_resize, with per-thread reusable buffers.
//!
//! fast_image_resize computes the same weights as Pillow (kernel widened by the scale
//! when shrinking, window clipped to the image and renormalised), but for u8 pixels it
//! runs the vertical pass first, while Pillow runs the horizontal pass first. Both
//! round to 8 bits between the passes, so the order shows in the output (most near
//! clipped edges, where Catmull-Rom overshoots). Two single-axis calls in Pillow's
//! order keep the result within one level of PIL's.

use std::cell::RefCell;

use fast_image_resize::images::{CroppedImageMut, Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

use crate::{Filter, RgbImage};

/// A rectangle of the source image, in (fractional) source pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Region {
    pub left: f64,
    pub top: f64,
    pub width: f64,
    pub height: f64,
}

/// A rectangle of the destination image, in whole pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rect {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

/// Per-thread state: the Resizer keeps its convolution buffers between calls, and
/// `temp` holds the horizontal pass's output; workers resize thousands of photos
/// on the same threads, so nothing is allocated in the steady state.
struct Scratch {
    resizer: Resizer,
    temp: Vec<u8>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch {
        resizer: Resizer::new(),
        temp: Vec::new(),
    });
}

impl Filter {
    fn filter_type(self) -> Option<(FilterType, f64)> {
        match self {
            Filter::Nearest => None,
            Filter::Bilinear => Some((FilterType::Bilinear, 1.0)),
            // Pillow's BICUBIC is the a = -0.5 cubic, i.e. Catmull-Rom.
            Filter::Bicubic => Some((FilterType::CatmullRom, 2.0)),
            Filter::Lanczos3 => Some((FilterType::Lanczos3, 3.0)),
        }
    }
}

/// Resamples `region` of `src` into `rect` of `dst` (pixels outside `rect` untouched).
///
/// The geometry must be valid: `region` inside `src`, `rect` inside `dst`, both
/// images consistent. Callers in this crate guarantee it by construction.
pub(crate) fn resample(
    src: &RgbImage,
    region: Region,
    filter: Filter,
    dst: &mut RgbImage,
    rect: Rect,
) {
    if rect.width == 0 || rect.height == 0 || src.width == 0 || src.height == 0 {
        return;
    }
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        let Scratch { resizer, temp } = &mut *scratch;
        let src_view = ImageRef::new(src.width, src.height, &src.data, PixelType::U8x3)
            .expect("source buffer matches its dimensions");
        let (dst_w, dst_h) = (dst.width, dst.height);
        let mut dst_img = Image::from_slice_u8(dst_w, dst_h, &mut dst.data, PixelType::U8x3)
            .expect("destination buffer matches its dimensions");
        let mut dst_view =
            CroppedImageMut::new(&mut dst_img, rect.x, rect.y, rect.width, rect.height)
                .expect("destination rectangle inside the destination");

        let Some((filter_type, support)) = filter.filter_type() else {
            let options = ResizeOptions::new().resize_alg(ResizeAlg::Nearest).crop(
                region.left,
                region.top,
                region.width,
                region.height,
            );
            resizer
                .resize(&src_view, &mut dst_view, &options)
                .expect("nearest resize of a valid region");
            return;
        };
        let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(filter_type));
        let need_horizontal = f64::from(rect.width) != region.width || region.left.fract() != 0.0;
        let need_vertical = f64::from(rect.height) != region.height || region.top.fract() != 0.0;
        if !(need_horizontal && need_vertical) {
            let options = options.crop(region.left, region.top, region.width, region.height);
            resizer
                .resize(&src_view, &mut dst_view, &options)
                .expect("single-pass resize of a valid region");
            return;
        }

        // Pass 1, horizontal: only the source rows the vertical kernel will read.
        let (y0, y1) = rows_read(src.height, region.top, region.height, rect.height, support);
        let rows = y1 - y0;
        // Stretching a very tall, thin photo would make this intermediate far bigger
        // than either end (224 columns × every source row). Such shapes are rare and
        // never reach a model unstretched, so they take the single call, whose
        // intermediate is destination rows × source columns.
        let temp_pixels = u64::from(rect.width) * u64::from(rows);
        let ends = u64::from(src.width) * u64::from(src.height)
            + u64::from(rect.width) * u64::from(rect.height);
        if temp_pixels > ends {
            let options = options.crop(region.left, region.top, region.width, region.height);
            resizer
                .resize(&src_view, &mut dst_view, &options)
                .expect("single-pass resize of a valid region");
            return;
        }
        temp.clear();
        temp.resize(rect.width as usize * rows as usize * 3, 0);
        let mut temp_img = Image::from_slice_u8(rect.width, rows, temp, PixelType::U8x3)
            .expect("temp buffer sized for the horizontal pass");
        let pass1 = options.crop(region.left, f64::from(y0), region.width, f64::from(rows));
        resizer
            .resize(&src_view, &mut temp_img, &pass1)
            .expect("horizontal pass of a valid region");

        // Pass 2, vertical: same window positions, shifted by the rows skipped.
        let pass2 = options.crop(
            0.0,
            region.top - f64::from(y0),
            f64::from(rect.width),
            region.height,
        );
        resizer
            .resize(&temp_img, &mut dst_view, &pass2)
            .expect("vertical pass of a valid region");
    });
}

/// The source rows [y0, y1) that a vertical pass from `top`..`top+height` onto
/// `out` rows touches, computed like fast_image_resize's coefficient windows and
/// widened by one row each side so rounding can never cut a window short.
fn rows_read(in_size: u32, top: f64, height: f64, out: u32, support: f64) -> (u32, u32) {
    let scale = height / f64::from(out);
    let radius = support * scale.max(1.0);
    let first = top + 0.5 * scale;
    let last = top + (f64::from(out) - 0.5) * scale;
    let y0 = ((first - radius).floor() - 1.0).max(0.0) as u32;
    let y1 = ((last + radius).ceil() + 1.0).min(f64::from(in_size)) as u32;
    (y0.min(in_size.saturating_sub(1)), y1.max(y0 + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: u32, h: u32) -> RgbImage {
        let data = (0..h)
            .flat_map(|y| {
                (0..w).flat_map(move |x| {
                    [
                        (x * 255 / w) as u8,
                        (y * 255 / h) as u8,
                        ((x ^ y) & 0xff) as u8,
                    ]
                })
            })
            .collect();
        RgbImage {
            width: w,
            height: h,
            data,
        }
    }

    #[test]
    fn two_pass_equals_full_resize_then_crop() {
        // Resizing only a region must give the same pixels as resizing everything
        // and cropping afterwards: the windows are clipped to the image, not the region.
        let src = gradient(301, 199);
        let full = Rect {
            x: 0,
            y: 0,
            width: 150,
            height: 99,
        };
        let mut big = RgbImage::filled(150, 99, [0, 0, 0]);
        let whole = Region {
            left: 0.0,
            top: 0.0,
            width: 301.0,
            height: 199.0,
        };
        resample(&src, whole, Filter::Bicubic, &mut big, full);
        let (sx, sy) = (301.0 / 150.0, 199.0 / 99.0);
        let region = Region {
            left: 20.0 * sx,
            top: 10.0 * sy,
            width: 100.0 * sx,
            height: 80.0 * sy,
        };
        let mut part = RgbImage::filled(100, 80, [0, 0, 0]);
        resample(
            &src,
            region,
            Filter::Bicubic,
            &mut part,
            Rect {
                x: 0,
                y: 0,
                width: 100,
                height: 80,
            },
        );
        let mut max = 0;
        for y in 0..80 {
            for x in 0..100 {
                let a = big.pixel(x + 20, y + 10);
                let b = part.pixel(x, y);
                for c in 0..3 {
                    max = max.max(a[c].abs_diff(b[c]));
                }
            }
        }
        assert!(max <= 1, "max diff {max}");
    }

    #[test]
    fn tall_thin_stretch_avoids_a_huge_intermediate() {
        // Two-pass would need 224 × 2,000,000 pixels of temp (1.3 GB).
        let src = RgbImage::filled(1, 2_000_000, [5, 6, 7]);
        let mut dst = RgbImage::filled(224, 224, [0, 0, 0]);
        let whole = Region {
            left: 0.0,
            top: 0.0,
            width: 1.0,
            height: 2_000_000.0,
        };
        let rect = Rect {
            x: 0,
            y: 0,
            width: 224,
            height: 224,
        };
        resample(&src, whole, Filter::Bicubic, &mut dst, rect);
        assert_eq!(dst.pixel(100, 100), [5, 6, 7]);
        SCRATCH.with(|s| assert!(s.borrow().temp.capacity() < 1 << 20));
    }

    #[test]
    fn rows_read_stay_inside_the_image() {
        assert_eq!(rows_read(100, 0.0, 100.0, 50, 2.0), (0, 100));
        let (y0, y1) = rows_read(1000, 400.0, 100.0, 50, 2.0);
        assert!(y0 <= 400 - 4 && (500 + 4..=1000).contains(&y1));
        assert_eq!(rows_read(1, 0.0, 1.0, 300, 3.0), (0, 1));
    }

    #[test]
    fn writes_only_inside_the_rectangle() {
        let src = gradient(40, 30);
        let mut dst = RgbImage::filled(20, 20, [7, 8, 9]);
        let region = Region {
            left: 0.0,
            top: 0.0,
            width: 40.0,
            height: 30.0,
        };
        resample(
            &src,
            region,
            Filter::Bilinear,
            &mut dst,
            Rect {
                x: 0,
                y: 3,
                width: 20,
                height: 15,
            },
        );
        assert_eq!(dst.pixel(5, 0), [7, 8, 9]);
        assert_eq!(dst.pixel(5, 19), [7, 8, 9]);
        assert_ne!(dst.pixel(5, 10), [7, 8, 9]);
    }
}
