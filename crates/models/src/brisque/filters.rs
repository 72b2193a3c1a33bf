//! The image operations BRISQUE's features are built on, reproducing the
//! arithmetic of the OpenCV calls in `qualitybrisque.cpp` (OpenCV 4.6–5.0 on
//! x86-64 with AVX2): `cvtColor(COLOR_BGR2GRAY)`, `convertTo(CV_32F, 1/255)`,
//! `GaussianBlur(7×7, σ = 7/6, BORDER_REPLICATE)` and
//! `resize(INTER_CUBIC)`.
//!
//! Why bother with rounding: in flat regions (sky, clipped highlights) `I − μ`
//! and `G∗I² − μ²` are a few ulps from zero, and their sign decides whether a
//! pixel counts as positive, negative or neither in the AGGD fits; on
//! astronaut.png that is 8% of the pixels. Matching OpenCV's operation order
//! and fused multiply-adds makes the first-scale MSCN image bit-identical to
//! OpenCV's; plain arithmetic moved the score by 0.07.

/// ITU-R 601 luma in OpenCV's fixed point (`COLOR_RGB2GRAY` on 8-bit data):
/// `(9798 R + 19235 G + 3735 B + 2^14) >> 15`, bit-exact with `cv::cvtColor`
/// over all 2^24 colours.
pub fn gray_from_rgb(rgb: &[u8]) -> Vec<u8> {
    rgb.chunks_exact(3)
        .map(|p| {
            let y = 9798 * p[0] as u32 + 19235 * p[1] as u32 + 3735 * p[2] as u32 + (1 << 14);
            (y >> 15) as u8
        })
        .collect()
}

/// `convertTo(CV_32F, 1/255)`: each byte times the scale rounded to `f32`.
pub(crate) fn to_unit_f32(gray: &[u8]) -> Vec<f32> {
    let scale = (1.0f64 / 255.0) as f32;
    gray.iter().map(|&v| v as f32 * scale).collect()
}

/// `a · b + c` rounded once, as the FMA3 instructions of OpenCV's AVX2 filter
/// loops (`_mm256_fmadd_ps`). The product of two `f32` is exact in `f64`; the
/// sum is rounded twice (to f64, then f32), which differs from one rounding
/// only in rare ties. Written out rather than `f32::mul_add`, which is a slow
/// libm call when the build does not assume an FMA unit.
#[inline(always)]
fn fma(a: f32, b: f32, c: f32) -> f32 {
    (a as f64 * b as f64 + c as f64) as f32
}

/// `getGaussianKernel(7, 7/6, CV_32F)`: weights and their sum in f64 (OpenCV
/// computes them in soft-float), normalised, then rounded to `f32`.
fn gaussian_kernel7() -> [f32; 7] {
    let sigma = 7.0f64 / 6.0;
    let scale2x = -0.5 / (sigma * sigma);
    let weights: [f64; 7] = std::array::from_fn(|i| {
        let x = i as f64 - 3.0;
        (scale2x * x * x).exp()
    });
    let sum: f64 = weights.iter().sum();
    weights.map(|w| (w / sum) as f32)
}

/// MSCN coefficients `(I − μ) / (sqrt(G∗I² − μ²) + 1/255)` with `μ = G∗I` and
/// `G` the 7×7 Gaussian with replicated borders. Where rounding makes the
/// variance negative the result is NaN, as in OpenCV; the AGGD sums skip NaN.
pub(crate) fn mscn(img: &[f32], w: usize, h: usize) -> Vec<f32> {
    debug_assert_eq!(img.len(), w * h);
    let k = gaussian_kernel7();
    // Horizontal pass over I and I² (OpenCV's `RowFilter` on a border-padded row).
    let mut hm = vec![0f32; w * h];
    let mut hs = vec![0f32; w * h];
    let mut pad = vec![0f32; w + 6];
    let mut pad_sq = vec![0f32; w + 6];
    for y in 0..h {
        let row = &img[y * w..(y + 1) * w];
        for (i, (p, q)) in pad.iter_mut().zip(pad_sq.iter_mut()).enumerate() {
            let v = row[i.saturating_sub(3).min(w - 1)];
            *p = v;
            *q = v * v;
        }
        row_filter(&pad, &k, &mut hm[y * w..(y + 1) * w]);
        row_filter(&pad_sq, &k, &mut hs[y * w..(y + 1) * w]);
    }
    // Vertical pass, finishing each row of coefficients.
    let c = (1.0f64 / 255.0) as f32;
    let mut out = vec![0f32; w * h];
    let mut mu = vec![0f32; w];
    let mut ex2 = vec![0f32; w];
    for y in 0..h {
        let rows: [&[f32]; 7] = std::array::from_fn(|t| {
            let r = (y + t).saturating_sub(3).min(h - 1);
            &hm[r * w..(r + 1) * w]
        });
        column_filter(&rows, &k, &mut mu);
        let rows: [&[f32]; 7] = std::array::from_fn(|t| {
            let r = (y + t).saturating_sub(3).min(h - 1);
            &hs[r * w..(r + 1) * w]
        });
        column_filter(&rows, &k, &mut ex2);
        let src = &img[y * w..(y + 1) * w];
        let dst = &mut out[y * w..(y + 1) * w];
        for (((d, &s), &m), &e) in dst.iter_mut().zip(src).zip(&mu).zip(&ex2) {
            *d = (s - m) / ((e - m * m).sqrt() + c);
        }
    }
    out
}

/// One row of OpenCV's `RowFilter<float, float, RowVec_32f>`: taps left to
/// right, FMA in the AVX2 loop over whole blocks of 8 outputs, and, in the
/// scalar tail, separate multiply and add.
fn row_filter(pad: &[f32], k: &[f32; 7], out: &mut [f32]) {
    let w = out.len();
    let simd_end = w / 8 * 8;
    for (o, &p) in out.iter_mut().zip(pad) {
        *o = p * k[0];
    }
    for (t, &kt) in k.iter().enumerate().skip(1) {
        let (src_head, src_tail) = pad[t..t + w].split_at(simd_end);
        let (head, tail) = out.split_at_mut(simd_end);
        for (o, &p) in head.iter_mut().zip(src_head) {
            *o = fma(p, kt, *o);
        }
        for (o, &p) in tail.iter_mut().zip(src_tail) {
            *o += p * kt;
        }
    }
}

/// One row of OpenCV's `SymmColumnVec_32f`: the centre tap, then the sums of
/// the rows at distance 1, 2 and 3; FMA in its AVX2 loop over whole blocks of
/// 16, separate multiply and add after that.
fn column_filter(rows: &[&[f32]; 7], k: &[f32; 7], out: &mut [f32]) {
    let w = out.len();
    let simd_end = w / 16 * 16;
    for (o, &c) in out.iter_mut().zip(rows[3]) {
        *o = c * k[3];
    }
    for d in 1..=3 {
        let kd = k[3 - d];
        let (above, below) = (rows[3 - d], rows[3 + d]);
        let (head, tail) = out.split_at_mut(simd_end);
        for ((o, &a), &b) in head.iter_mut().zip(above).zip(below) {
            *o = fma(a + b, kd, *o);
        }
        for ((o, &a), &b) in tail
            .iter_mut()
            .zip(&above[simd_end..])
            .zip(&below[simd_end..])
        {
            *o += (a + b) * kd;
        }
    }
}

/// `cv::resize(.., INTER_CUBIC)` for one-channel `f32`: Keys' cubic with
/// A = −0.75, OpenCV's pixel-centre mapping `(d + 0.5) · scale − 0.5`, taps
/// outside the image clamped to the edge; horizontal pass, then vertical.
///
/// OpenCV builds with IPP route this call to IPP's resize, which differs from
/// OpenCV's own code by up to ~1e-5 (pixel values 0..1); the resulting feature
/// differences move the score by under 0.01.
pub(crate) fn resize_cubic(src: &[f32], w: usize, h: usize, dw: usize, dh: usize) -> Vec<f32> {
    debug_assert_eq!(src.len(), w * h);
    if dw == w && dh == h {
        return src.to_vec();
    }
    let xtaps = cubic_taps(w, dw);
    let ytaps = cubic_taps(h, dh);
    // Each source row resized horizontally once.
    let mut rows = vec![0f32; h * dw];
    for (s, d) in src.chunks_exact(w).zip(rows.chunks_exact_mut(dw)) {
        for (d, (i, c)) in d.iter_mut().zip(&xtaps) {
            *d = s[i[0]] * c[0] + s[i[1]] * c[1] + s[i[2]] * c[2] + s[i[3]] * c[3];
        }
    }
    let mut out = vec![0f32; dw * dh];
    for (d, (i, c)) in out.chunks_exact_mut(dw).zip(&ytaps) {
        let r: [&[f32]; 4] = std::array::from_fn(|t| &rows[i[t] * dw..(i[t] + 1) * dw]);
        for ((((d, &a), &b), &e), &f) in d.iter_mut().zip(r[0]).zip(r[1]).zip(r[2]).zip(r[3]) {
            *d = c[0] * a + c[1] * b + c[2] * e + c[3] * f;
        }
    }
    out
}

/// Source indices and weights of each output position along one axis.
type Taps = ([usize; 4], [f32; 4]);

fn cubic_taps(src_len: usize, dst_len: usize) -> Vec<Taps> {
    // OpenCV: inv_scale = dst / src and scale = 1 / inv_scale, in f64; the
    // source position is rounded to f32.
    let scale = 1.0 / (dst_len as f64 / src_len as f64);
    let last = src_len as isize - 1;
    (0..dst_len)
        .map(|d| {
            let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
            let s = f.floor();
            let weights = cubic_weights(f - s);
            let s = s as isize;
            let idx = std::array::from_fn(|t| (s + t as isize - 1).clamp(0, last) as usize);
            (idx, weights)
        })
        .collect()
}

/// OpenCV's `interpolateCubic`.
fn cubic_weights(x: f32) -> [f32; 4] {
    const A: f32 = -0.75;
    let c0 = ((A * (x + 1.0) - 5.0 * A) * (x + 1.0) + 8.0 * A) * (x + 1.0) - 4.0 * A;
    let c1 = ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let c2 = ((A + 2.0) * (1.0 - x) - (A + 3.0)) * (1.0 - x) * (1.0 - x) + 1.0;
    [c0, c1, c2, 1.0 - c0 - c1 - c2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gray_matches_opencv_fixed_point() {
        // cv2.cvtColor(.., COLOR_RGB2GRAY) of white, black, red, green, blue.
        let rgb = [255, 255, 255, 0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255];
        assert_eq!(gray_from_rgb(&rgb), [255, 0, 76, 150, 29]);
    }

    #[test]
    fn gaussian_kernel_is_opencvs() {
        // Bit patterns of cv2.getGaussianKernel(7, 7/6, cv2.CV_32F).
        let want = [
            1_011_730_765u32,
            1_033_990_286,
            1_047_723_454,
            1_051_684_198,
            1_047_723_454,
            1_033_990_286,
            1_011_730_765,
        ];
        assert_eq!(gaussian_kernel7().map(f32::to_bits), want);
    }

    #[test]
    fn mscn_of_a_step_is_antisymmetric_and_flat_parts_are_zero_or_nan() {
        let (w, h) = (32, 4);
        let img: Vec<f32> = (0..w * h)
            .map(|i| if i % w < 16 { 0.25 } else { 0.75 })
            .collect();
        let m = mscn(&img, w, h);
        assert!(
            m[15] < -0.5 && (m[15] + m[16]).abs() < 1e-5,
            "{:?}",
            &m[12..20]
        );
        assert!(
            m[0] == 0.0 || m[0].is_nan() || m[0].abs() < 1e-3,
            "{}",
            m[0]
        );
    }

    #[test]
    fn half_size_cubic_uses_keys_weights() {
        // An exact 2× reduction samples between pixels 2d and 2d+1 with weights
        // (−0.09375, 0.59375, 0.59375, −0.09375).
        let src: Vec<f32> = (0..8).map(|v| v as f32).collect();
        let out = resize_cubic(&src, 8, 1, 4, 1);
        assert!((out[1] - 2.5).abs() < 1e-6, "{out:?}");
        // At the left edge pixel 0 is replicated: 0.59375·1 − 0.09375·2.
        assert!((out[0] - 0.40625).abs() < 1e-6, "{out:?}");
    }

    #[test]
    fn same_size_resize_is_a_copy() {
        let src = [0.1f32, 0.2, 0.3, 0.4];
        assert_eq!(resize_cubic(&src, 2, 2, 2, 2), src);
    }
}
