//! Pillow's `Image.resize` convolution, reproduced to the bit, for part of a resize.
//!
//! Pillow resamples in two passes, horizontal first, each with fixed-point weights
//! (22 fractional bits) and rounding to 8 bits in between. Libraries that use other
//! precisions (fast_image_resize keeps 15-bit weights for u8) land on the other side
//! of a rounding now and then; the vertical pass, whose Catmull-Rom lobes overshoot,
//! can turn two such intermediate off-by-ones into a final difference of 2. So the
//! weights, the window bounds and the integer arithmetic here are Pillow's
//! (`precompute_coeffs`, `normalize_coeffs_8bpc`, `ImagingResample{Horizontal,
//! Vertical}_8bpc` in libImaging/Resample.c), and the output equals PIL's.
//!
//! Only the part of the resized image that is kept (a centre crop) is computed: the
//! horizontal pass only for the kept columns and for the source rows the kept rows'
//! vertical windows read, each source row once; the vertical pass adds each
//! horizontally resampled row into the output rows whose windows hold it, so no
//! intermediate image is stored. Nearest-neighbour sampling (not a convolution) and
//! absurdly tall, thin sources go to fast_image_resize.

use std::cell::RefCell;

use fast_image_resize::images::{CroppedImageMut, Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

use crate::{Filter, RgbImage};

/// A rectangle in whole pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rect {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

/// Pillow's fixed point for 8-bit images: 8 bits of result, 2 of headroom for
/// negative lobes and sums above 1.
const PRECISION_BITS: u32 = 32 - 8 - 2;
/// Added before the shift, so that the shift rounds half up.
const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// Pillow's `clip8`: the accumulated value shifted back to 0..=255.
#[inline(always)]
fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// A resampling kernel and its support (radius, in output pixels when upscaling).
type Kernel = (fn(f64) -> f64, f64);

impl Filter {
    /// The kernel as Pillow defines it.
    fn kernel(self) -> Option<Kernel> {
        match self {
            Filter::Nearest => None,
            Filter::Bilinear => Some((bilinear, 1.0)),
            Filter::Bicubic => Some((bicubic, 2.0)),
            Filter::Lanczos3 => Some((lanczos3, 3.0)),
        }
    }
}

fn bilinear(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        1.0 - x
    } else {
        0.0
    }
}

/// Pillow's BICUBIC: the a = -0.5 cubic (Catmull-Rom).
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x
    }
}

fn lanczos3(x: f64) -> f64 {
    if (-3.0..3.0).contains(&x) {
        sinc(x) * sinc(x / 3.0)
    } else {
        0.0
    }
}

/// Fixed-point weights for some consecutive outputs of a resize of one axis.
#[derive(Default)]
struct Coefficients {
    /// Per output pixel: first source pixel and number of source pixels.
    bounds: Vec<(usize, usize)>,
    /// `ksize` weights per output pixel; the first `bounds[i].1` are used.
    weights: Vec<i32>,
    ksize: usize,
    /// One window's weights as doubles, before normalisation.
    scratch: Vec<f64>,
}

impl Coefficients {
    /// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for the whole axis
    /// (`in_size` → `out_size`, box 0..in_size), kept for outputs
    /// `first..first + count` only. The floating-point expressions keep Pillow's
    /// order of operations so that the weights are the same doubles.
    fn compute(&mut self, in_size: u32, out_size: u32, first: u32, count: u32, kernel: Kernel) {
        let (filter, filter_support) = kernel;
        let scale = f64::from(in_size) / f64::from(out_size);
        let filterscale = scale.max(1.0);
        let support = filter_support * filterscale;
        // Pillow's (int)ceil(support) * 2 + 1, capped by the source: a window never
        // holds more than the whole axis.
        let ksize = (support.ceil() as usize * 2 + 1).min(in_size as usize);
        self.ksize = ksize;
        self.bounds.clear();
        self.weights.clear();
        self.weights.resize(ksize * count as usize, 0);
        self.scratch.clear();
        self.scratch.resize(ksize, 0.0);
        let k = &mut self.scratch;
        for (i, xx) in (first..first + count).enumerate() {
            let center = (f64::from(xx) + 0.5) * scale;
            let ss = 1.0 / filterscale;
            // C's (int) truncates toward zero, as `as` does.
            let xmin = ((center - support + 0.5) as i64).max(0);
            let xmax = ((center + support + 0.5) as i64).min(i64::from(in_size)) - xmin;
            let n = xmax.clamp(0, ksize as i64) as usize;
            let mut ww = 0.0;
            for (x, w) in k[..n].iter_mut().enumerate() {
                *w = filter(((x as i64 + xmin) as f64 - center + 0.5) * ss);
                ww += *w;
            }
            let out = &mut self.weights[i * ksize..][..n];
            for (o, w) in out.iter_mut().zip(&k[..n]) {
                let w = if ww != 0.0 { w / ww } else { *w };
                let fixed = w * f64::from(1u32 << PRECISION_BITS);
                *o = if w < 0.0 {
                    (-0.5 + fixed) as i32
                } else {
                    (0.5 + fixed) as i32
                };
            }
            self.bounds.push((xmin as usize, n));
        }
    }

    fn get(&self, i: usize) -> (usize, &[i32]) {
        let (start, n) = self.bounds[i];
        (start, &self.weights[i * self.ksize..][..n])
    }
}

/// Per-thread buffers: workers resize thousands of photos on the same threads, so
/// nothing is allocated in the steady state.
#[derive(Default)]
struct Scratch {
    horizontal: Horizontal,
    vertical: Coefficients,
    /// One horizontally resampled source row.
    row: Vec<u8>,
    /// The vertical pass's sums, one per output value.
    sums: Vec<i32>,
    resizer: Option<Resizer>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// How closely a resize follows Pillow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Precision {
    /// Pillow's own weights and integer arithmetic: the same bytes as PIL.
    Pillow,
    /// fast_image_resize's SIMD convolution (15-bit weights, vertical pass
    /// first): within a level or two of PIL, several times faster.
    Simd,
}

/// Resizes `src` to `resized` (width, height) as PIL's `Image.resize` would, and
/// writes the part `window` of that resized image into `dst` with its top-left
/// corner at `at` (pixels of `dst` outside it are untouched).
///
/// The geometry must be valid: `window` inside `resized`, the window at `at` inside
/// `dst`, both images consistent. Callers in this crate guarantee it by construction.
pub(crate) fn resample(
    src: &RgbImage,
    resized: (u32, u32),
    window: Rect,
    filter: Filter,
    precision: Precision,
    dst: &mut RgbImage,
    at: (u32, u32),
) {
    if window.width == 0 || window.height == 0 || src.width == 0 || src.height == 0 {
        return;
    }
    let kernel = match precision {
        Precision::Pillow => filter.kernel(),
        Precision::Simd => None,
    };
    let Some(kernel) = kernel else {
        single_call(src, resized, window, filter, dst, at);
        return;
    };
    let widen_first = SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        let Scratch {
            horizontal,
            vertical,
            row,
            sums,
            ..
        } = &mut *scratch;
        // Pillow skips a pass whose axis keeps its size; its weights would be the
        // identity anyway.
        let need_horizontal = resized.0 != src.width;
        let need_vertical = resized.1 != src.height;
        if need_horizontal {
            horizontal.compute(src.width, resized.0, window.x, window.width, kernel);
        }
        let w3 = window.width as usize * 3;
        let src_row = |y: usize| &src.data[y * src.width as usize * 3..][..src.width as usize * 3];
        // Source row `y`, horizontally resampled (or cropped) into `out`.
        let mut resample_row = |y: usize, out: &mut [u8]| {
            let line = src_row(y);
            if need_horizontal {
                horizontal.run(line, out);
            } else {
                out.copy_from_slice(&line[window.x as usize * 3..][..w3]);
            }
        };
        let dst_w3 = dst.width as usize * 3;
        let dst_row = |i: usize| -> std::ops::Range<usize> {
            let start = (at.1 as usize + i) * dst_w3 + at.0 as usize * 3;
            start..start + w3
        };

        if !need_vertical {
            for i in 0..window.height as usize {
                let range = dst_row(i);
                resample_row(window.y as usize + i, &mut dst.data[range]);
            }
            return true;
        }

        vertical.compute(src.height, resized.1, window.y, window.height, kernel);
        let rows = window.height as usize;
        let first_row = vertical.bounds[0].0;
        let (last_start, last_n) = vertical.bounds[rows - 1];
        // Widening a very tall, thin photo first would mean resampling every one of
        // its rows to the output width: 224 × 2,000,000 pixels for a 1 × 2,000,000
        // strip, where either end is a few million. Such shapes never reach a model
        // unstretched, so they take fast_image_resize's single call (vertical pass
        // first; within a level or two of PIL's) instead.
        let horizontal_work = u64::from(window.width) * (last_start + last_n - first_row) as u64;
        let ends = u64::from(src.width) * u64::from(src.height)
            + u64::from(window.width) * u64::from(window.height);
        if horizontal_work > ends {
            return false;
        }
        row.clear();
        row.resize(w3, 0);
        sums.clear();
        sums.resize(rows * w3, HALF);
        // Output rows [lo, hi) are those whose windows may hold source row y; the
        // windows only move forward, so both ends do too.
        let (mut lo, mut hi) = (0, 0);
        for y in first_row..last_start + last_n {
            while lo < rows && vertical.bounds[lo].0 + vertical.bounds[lo].1 <= y {
                lo += 1;
            }
            while hi < rows && vertical.bounds[hi].0 <= y {
                hi += 1;
            }
            if lo == hi {
                continue;
            }
            resample_row(y, row);
            for i in lo..hi {
                let (start, weights) = vertical.get(i);
                let Some(&k) = weights.get(y - start) else {
                    continue;
                };
                let acc = &mut sums[i * w3..][..w3];
                for (a, &p) in acc.iter_mut().zip(row.iter()) {
                    *a += i32::from(p) * k;
                }
            }
        }
        for i in 0..rows {
            let range = dst_row(i);
            for (o, &s) in dst.data[range].iter_mut().zip(&sums[i * w3..][..w3]) {
                *o = clip8(s);
            }
        }
        true
    });
    if !widen_first {
        single_call(src, resized, window, filter, dst, at);
    }
}

/// The horizontal pass, laid out for SIMD without `unsafe` or CPU-specific code:
/// each source row is split into channel planes, each 23-bit weight `k` into
/// `hi = k >> 11` and `lo = k & 0x7ff` (both i16), and a weighted sum is
/// `(Σ p·hi << 11) + Σ p·lo`: i16 dot products that the compiler vectorises
/// (`pmaddwd`) even on baseline x86-64. Integer sums are exact in any order, so the
/// result is Pillow's.
#[derive(Default)]
struct Horizontal {
    coefficients: Coefficients,
    /// Weights per output pixel, padded with zeros to `stride` (a multiple of 16,
    /// so the vectorised loop has no scalar tail).
    hi: Vec<i16>,
    lo: Vec<i16>,
    stride: usize,
    /// Per output pixel: its window's start, relative to `first`.
    starts: Vec<usize>,
    /// The source columns any window reads: `first..first + columns`.
    first: usize,
    columns: usize,
    /// One row's channel planes, each `columns + stride` long (zeros past the row,
    /// so a padded window never reads past the end).
    planes: [Vec<u8>; 3],
}

/// Bits of a weight kept in `lo`.
const LO_BITS: u32 = 11;
/// Taps summed in i32 before widening: 255 · 2^11 · 4096 < 2^31.
const TAPS_PER_SUM: usize = 4096;

impl Horizontal {
    fn compute(&mut self, in_size: u32, out_size: u32, first: u32, count: u32, kernel: Kernel) {
        let c = &mut self.coefficients;
        c.compute(in_size, out_size, first, count, kernel);
        let widest = c.bounds.iter().map(|b| b.1).max().unwrap_or(0);
        self.stride = widest.next_multiple_of(8);
        self.first = c.bounds.iter().map(|b| b.0).min().unwrap_or(0);
        let end = c.bounds.iter().map(|b| b.0 + b.1).max().unwrap_or(0);
        self.columns = end - self.first;
        self.starts.clear();
        self.hi.clear();
        self.lo.clear();
        self.hi.resize(self.stride * c.bounds.len(), 0);
        self.lo.resize(self.stride * c.bounds.len(), 0);
        for i in 0..c.bounds.len() {
            let (start, weights) = c.get(i);
            self.starts.push(start - self.first);
            let hi = &mut self.hi[i * self.stride..][..weights.len()];
            let lo = &mut self.lo[i * self.stride..][..weights.len()];
            for ((h, l), &k) in hi.iter_mut().zip(lo.iter_mut()).zip(weights) {
                // |k| < 2^23 (normalised weights are below 2 in magnitude).
                *h = (k >> LO_BITS) as i16;
                *l = (k & ((1 << LO_BITS) - 1)) as i16;
            }
        }
        for plane in &mut self.planes {
            plane.clear();
            plane.resize(self.columns + self.stride, 0);
        }
    }

    /// Pillow's horizontal 8-bit pass over one RGB source row into `out`.
    fn run(&mut self, line: &[u8], out: &mut [u8]) {
        let n = self.columns;
        let line = &line[self.first * 3..][..n * 3];
        let [r, g, b] = &mut self.planes;
        let (r, g, b) = (&mut r[..n], &mut g[..n], &mut b[..n]);
        for i in 0..n {
            r[i] = line[3 * i];
            g[i] = line[3 * i + 1];
            b[i] = line[3 * i + 2];
        }
        let stride = self.stride;
        let [r, g, b] = &self.planes;
        let weights = self
            .hi
            .chunks_exact(stride)
            .zip(self.lo.chunks_exact(stride));
        for ((px, (hi, lo)), &start) in out.chunks_exact_mut(3).zip(weights).zip(&self.starts) {
            let planes = [
                &r[start..][..stride],
                &g[start..][..stride],
                &b[start..][..stride],
            ];
            let mut sums = [i64::from(HALF); 3];
            for at in (0..stride).step_by(TAPS_PER_SUM) {
                let len = TAPS_PER_SUM.min(stride - at);
                let part = dot6(
                    planes.map(|p| &p[at..][..len]),
                    &hi[at..][..len],
                    &lo[at..][..len],
                );
                for (c, sum) in sums.iter_mut().enumerate() {
                    *sum += (i64::from(part[c]) << LO_BITS) + i64::from(part[c + 3]);
                }
            }
            for (o, sum) in px.iter_mut().zip(sums) {
                *o = (sum >> PRECISION_BITS).clamp(0, 255) as u8;
            }
        }
    }
}

/// For each plane `p`: Σ p·hi and Σ p·lo, as [r·hi, g·hi, b·hi, r·lo, g·lo, b·lo].
/// Slices of equal length, at most [`TAPS_PER_SUM`].
#[inline(always)]
fn dot6([r, g, b]: [&[u8]; 3], hi: &[i16], lo: &[i16]) -> [i32; 6] {
    let n = hi.len();
    let (r, g, b, lo) = (&r[..n], &g[..n], &b[..n], &lo[..n]);
    let mut s = [0i32; 6];
    for i in 0..n {
        let (kh, kl) = (i32::from(hi[i]), i32::from(lo[i]));
        let (pr, pg, pb) = (i32::from(r[i]), i32::from(g[i]), i32::from(b[i]));
        s[0] += pr * kh;
        s[1] += pg * kh;
        s[2] += pb * kh;
        s[3] += pr * kl;
        s[4] += pg * kl;
        s[5] += pb * kl;
    }
    s
}

/// The same window by one fast_image_resize call: nearest-neighbour sampling, which
/// is not a convolution, and the shapes [`resample`] will not widen first.
fn single_call(
    src: &RgbImage,
    resized: (u32, u32),
    window: Rect,
    filter: Filter,
    dst: &mut RgbImage,
    at: (u32, u32),
) {
    let sx = f64::from(src.width) / f64::from(resized.0);
    let sy = f64::from(src.height) / f64::from(resized.1);
    let (left, top) = (f64::from(window.x) * sx, f64::from(window.y) * sy);
    let width = (f64::from(window.width) * sx).min(f64::from(src.width) - left);
    let height = (f64::from(window.height) * sy).min(f64::from(src.height) - top);
    let src_view = ImageRef::new(src.width, src.height, &src.data, PixelType::U8x3)
        .expect("source buffer matches its dimensions");
    let (dst_w, dst_h) = (dst.width, dst.height);
    let mut dst_img = Image::from_slice_u8(dst_w, dst_h, &mut dst.data, PixelType::U8x3)
        .expect("destination buffer matches its dimensions");
    let mut dst_view = CroppedImageMut::new(&mut dst_img, at.0, at.1, window.width, window.height)
        .expect("destination rectangle inside the destination");
    let algorithm = match filter {
        Filter::Nearest => ResizeAlg::Nearest,
        Filter::Bilinear => ResizeAlg::Convolution(FilterType::Bilinear),
        Filter::Bicubic => ResizeAlg::Convolution(FilterType::CatmullRom),
        Filter::Lanczos3 => ResizeAlg::Convolution(FilterType::Lanczos3),
    };
    let options = ResizeOptions::new()
        .resize_alg(algorithm)
        .crop(left, top, width, height);
    SCRATCH.with(|scratch| {
        scratch
            .borrow_mut()
            .resizer
            .get_or_insert_with(Resizer::new)
            .resize(&src_view, &mut dst_view, &options)
            .expect("resize of a valid region");
    });
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

    fn whole(w: u32, h: u32) -> Rect {
        Rect {
            x: 0,
            y: 0,
            width: w,
            height: h,
        }
    }

    #[test]
    fn weights_are_pillows() {
        // 451 → 385 with BICUBIC, output column 124: Pillow's precompute_coeffs gives
        // xmin 144 and these normalised weights (printed by a Python transcription of
        // Resample.c whose output equals PIL's pixel for pixel).
        let expected = [
            -0.04529711207799932f64,
            0.6995229936768824,
            0.40612096485931454,
            -0.06034684645819755,
        ];
        let mut c = Coefficients::default();
        c.compute(451, 385, 124, 1, (bicubic, 2.0));
        let (start, weights) = c.get(0);
        assert_eq!(start, 144);
        let fixed: Vec<i32> = expected
            .iter()
            .map(|w| {
                let f = w * f64::from(1u32 << PRECISION_BITS);
                if *w < 0.0 {
                    (f - 0.5) as i32
                } else {
                    (f + 0.5) as i32
                }
            })
            .collect();
        assert_eq!(weights, &fixed[..]);
    }

    #[test]
    fn a_window_equals_the_full_resize_cropped() {
        // Resizing only a window must give exactly the pixels of the full resize:
        // the weights belong to the whole axis, not to the window.
        let src = gradient(301, 199);
        for filter in [Filter::Bilinear, Filter::Bicubic, Filter::Lanczos3] {
            let mut full = RgbImage::filled(150, 99, [0, 0, 0]);
            resample(
                &src,
                (150, 99),
                whole(150, 99),
                filter,
                Precision::Pillow,
                &mut full,
                (0, 0),
            );
            let window = Rect {
                x: 20,
                y: 10,
                width: 100,
                height: 80,
            };
            let mut part = RgbImage::filled(100, 80, [0, 0, 0]);
            resample(
                &src,
                (150, 99),
                window,
                filter,
                Precision::Pillow,
                &mut part,
                (0, 0),
            );
            for y in 0..80 {
                for x in 0..100 {
                    assert_eq!(
                        part.pixel(x, y),
                        full.pixel(x + 20, y + 10),
                        "{filter:?} ({x}, {y})"
                    );
                }
            }
        }
    }

    #[test]
    fn an_axis_that_keeps_its_size_is_copied() {
        let src = gradient(64, 48);
        let mut out = RgbImage::filled(64, 24, [0, 0, 0]);
        resample(
            &src,
            (64, 24),
            whole(64, 24),
            Filter::Bicubic,
            Precision::Pillow,
            &mut out,
            (0, 0),
        );
        let mut rows = RgbImage::filled(1, 24, [0, 0, 0]);
        // Column 7 of the output is column 7 of the source, resized vertically.
        let column = RgbImage {
            width: 1,
            height: 48,
            data: (0..48).flat_map(|y| src.pixel(7, y)).collect(),
        };
        resample(
            &column,
            (1, 24),
            whole(1, 24),
            Filter::Bicubic,
            Precision::Pillow,
            &mut rows,
            (0, 0),
        );
        for y in 0..24 {
            assert_eq!(out.pixel(7, y), rows.pixel(0, y));
        }
        let mut same = RgbImage::filled(64, 48, [0, 0, 0]);
        resample(
            &src,
            (64, 48),
            whole(64, 48),
            Filter::Lanczos3,
            Precision::Pillow,
            &mut same,
            (0, 0),
        );
        assert_eq!(same, src);
    }

    #[test]
    fn windows_wider_than_one_i32_sum_stay_exact() {
        // 20000 → 2 with BICUBIC: windows of ~20000 taps, past the 4096 taps one
        // i32 partial sum can hold at full white.
        let src = RgbImage::filled(20_000, 1, [255, 128, 0]);
        let mut out = RgbImage::filled(2, 1, [9, 9, 9]);
        resample(
            &src,
            (2, 1),
            whole(2, 1),
            Filter::Bicubic,
            Precision::Pillow,
            &mut out,
            (0, 0),
        );
        assert_eq!(out.pixel(0, 0), [255, 128, 0]);
        assert_eq!(out.pixel(1, 0), [255, 128, 0]);
    }

    #[test]
    fn tall_thin_stretch_keeps_no_big_intermediate() {
        // Pillow would widen all 2,000,000 rows to 224 pixels first (1.3 GB, and
        // seconds of work); this shape takes the vertical-first single call.
        let src = RgbImage::filled(1, 2_000_000, [5, 6, 7]);
        let mut dst = RgbImage::filled(224, 224, [0, 0, 0]);
        resample(
            &src,
            (224, 224),
            whole(224, 224),
            Filter::Bicubic,
            Precision::Pillow,
            &mut dst,
            (0, 0),
        );
        assert_eq!(dst.pixel(100, 100), [5, 6, 7]);
        SCRATCH.with(|s| {
            let s = s.borrow();
            assert!(s.sums.capacity() <= 224 * 224 * 3 && s.row.capacity() < 1 << 20);
        });
    }

    #[test]
    fn writes_only_inside_the_rectangle() {
        let src = gradient(40, 30);
        let mut dst = RgbImage::filled(20, 20, [7, 8, 9]);
        resample(
            &src,
            (20, 15),
            whole(20, 15),
            Filter::Bilinear,
            Precision::Pillow,
            &mut dst,
            (0, 3),
        );
        assert_eq!(dst.pixel(5, 0), [7, 8, 9]);
        assert_eq!(dst.pixel(5, 2), [7, 8, 9]);
        assert_ne!(dst.pixel(5, 10), [7, 8, 9]);
        assert_eq!(dst.pixel(5, 18), [7, 8, 9]);
        assert_eq!(dst.pixel(5, 19), [7, 8, 9]);
    }
}
