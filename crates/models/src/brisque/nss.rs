//! The 36 natural-scene-statistics features, as OpenCV contrib's
//! `ComputeBrisqueFeature` computes them.
//!
//! Per scale (the photo, then the photo resized to half): the MSCN image
//! (mean-subtracted, contrast-normalised coefficients, see `filters::mscn`);
//! an asymmetric generalised Gaussian (AGGD) fit of the coefficients gives 2
//! features (shape, mean of the two variances), and AGGD fits of the products
//! of each coefficient with its right, lower, lower-right and upper-right
//! neighbour give 4 each (shape, mean, left variance, right variance).
//! 2 scales × 18 = 36.
//!
//! Sums are `f64` (as `cv::sum`) over `f32` products and squares (as
//! `cv::multiply`), and each feature is rounded to `f32` as OpenCV stores them.

use std::sync::OnceLock;

use super::filters;

/// Number of features: 18 per scale, 2 scales.
pub const FEATURE_COUNT: usize = 36;

/// The 36 BRISQUE features of a grey image (row-major, `width × height`
/// bytes), in OpenCV's order. NaN where the statistics are undefined: an image
/// under 2×2, or one so flat that its coefficients have no positive or no
/// negative values.
///
/// # Panics
/// If `gray.len() != width * height`.
pub fn features(gray: &[u8], width: u32, height: u32) -> [f64; FEATURE_COUNT] {
    let (w, h) = (width as usize, height as usize);
    assert_eq!(gray.len(), w * h, "grey buffer is not {w}×{h}");
    let mut out = [f64::NAN; FEATURE_COUNT];
    if w < 2 || h < 2 {
        return out;
    }
    let full = filters::to_unit_f32(gray);
    scale_features(&full, w, h, &mut out[..18]);
    // OpenCV's second scale: `resize` to (cols / 2, rows / 2), INTER_CUBIC.
    let (w2, h2) = (w / 2, h / 2);
    let half = filters::resize_cubic(&full, w, h, w2, h2);
    scale_features(&half, w2, h2, &mut out[18..]);
    out
}

/// The 18 features of one scale.
fn scale_features(img: &[f32], w: usize, h: usize, out: &mut [f64]) {
    let mscn = filters::mscn(img, w, h);
    let mut own = Moments::default();
    // Products with the neighbour at OpenCV's `shifts` (row, col) {0,1},
    // {1,0}, {1,1}, {-1,1}. Where the neighbour falls outside the image OpenCV
    // multiplies by 0: that product counts in the total (w·h for every fit)
    // but is neither positive nor negative, so it is simply not added here.
    let mut pairs = [Moments::default(); 4];
    let rows: Vec<&[f32]> = mscn.chunks_exact(w).collect();
    for (y, row) in rows.iter().enumerate() {
        own.add(row, None);
        pairs[0].add(&row[..w - 1], Some(&row[1..]));
        if let Some(below) = rows.get(y + 1) {
            pairs[1].add(row, Some(below));
            pairs[2].add(&row[..w - 1], Some(&below[1..]));
        }
        if y > 0 {
            pairs[3].add(&row[..w - 1], Some(&rows[y - 1][1..]));
        }
    }
    let total = (w * h) as f64;
    let fit = own.aggd_fit(total);
    out[0] = round_f32(fit.shape);
    out[1] = round_f32((fit.left * fit.left + fit.right * fit.right) / 2.0);
    for (moments, o) in pairs.iter().zip(out[2..].chunks_exact_mut(4)) {
        let fit = moments.aggd_fit(total);
        let g = fit.shape;
        let constant = gamma(1.0 / g).sqrt() / gamma(3.0 / g).sqrt();
        let mean = (fit.right - fit.left) * (gamma(2.0 / g) / gamma(1.0 / g)) * constant;
        o[0] = round_f32(g);
        o[1] = round_f32(mean);
        o[2] = round_f32(fit.left * fit.left);
        o[3] = round_f32(fit.right * fit.right);
    }
}

/// OpenCV keeps the feature vector as `f32`.
fn round_f32(v: f64) -> f64 {
    v as f32 as f64
}

/// The sums an AGGD fit needs. NaN values (OpenCV's `sqrt` of a variance that
/// rounding made negative) count as neither positive nor negative and add
/// nothing, as OpenCV's `cv::max`/`cv::min` with 0 and `patchNaNs` leave them.
#[derive(Debug, Default, Clone, Copy)]
struct Moments {
    pos_count: u64,
    neg_count: u64,
    pos_sq: f64,
    neg_sq: f64,
    abs_sum: f64,
}

/// Independent accumulators, so that the sums vectorise.
const LANES: usize = 8;

#[derive(Default)]
struct Lanes {
    pos_count: [u32; LANES],
    neg_count: [u32; LANES],
    pos_sq: [f64; LANES],
    neg_sq: [f64; LANES],
    abs_sum: [f64; LANES],
}

impl Lanes {
    #[inline(always)]
    fn add(&mut self, v: [f32; LANES]) {
        for (l, &v) in v.iter().enumerate() {
            self.add_one(l, v);
        }
    }

    /// OpenCV's `max(x, 0)` and `min(x, 0)`: both are 0 for NaN (so is
    /// Rust's `f32::max`/`min`), which is how NaN drops out.
    #[inline(always)]
    fn add_one(&mut self, l: usize, v: f32) {
        let (p, n) = (v.max(0.0), v.min(0.0));
        self.pos_count[l] += (p > 0.0) as u32;
        self.neg_count[l] += (n < 0.0) as u32;
        self.pos_sq[l] += (p * p) as f64;
        self.neg_sq[l] += (n * n) as f64;
        self.abs_sum[l] += (p - n) as f64;
    }
}

impl Moments {
    /// Adds `a[i]`, or the products `a[i] · b[i]` (rounded to `f32`).
    fn add(&mut self, a: &[f32], b: Option<&[f32]>) {
        let mut acc = Lanes::default();
        match b {
            None => {
                let chunks = a.chunks_exact(LANES);
                let rest = chunks.remainder();
                for c in chunks {
                    acc.add(std::array::from_fn(|l| c[l]));
                }
                rest.iter().for_each(|&v| acc.add_one(0, v));
            }
            Some(b) => {
                debug_assert_eq!(a.len(), b.len());
                let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
                let rest = ca.remainder().iter().zip(cb.remainder());
                for (x, y) in ca.zip(cb) {
                    acc.add(std::array::from_fn(|l| x[l] * y[l]));
                }
                rest.for_each(|(&x, &y)| acc.add_one(0, x * y));
            }
        }
        self.pos_count += acc.pos_count.iter().map(|&c| c as u64).sum::<u64>();
        self.neg_count += acc.neg_count.iter().map(|&c| c as u64).sum::<u64>();
        self.pos_sq += acc.pos_sq.iter().sum::<f64>();
        self.neg_sq += acc.neg_sq.iter().sum::<f64>();
        self.abs_sum += acc.abs_sum.iter().sum::<f64>();
    }

    /// OpenCV's `AGGDfit`: left and right scale from the one-sided second
    /// moments, shape from the normalised moment ratio.
    fn aggd_fit(&self, total: f64) -> Aggd {
        let left = (self.neg_sq / self.neg_count as f64).sqrt();
        let right = (self.pos_sq / self.pos_count as f64).sqrt();
        let gammahat = left / right;
        let rhat = (self.abs_sum / total).powi(2) / ((self.neg_sq + self.pos_sq) / total);
        let rhatnorm =
            rhat * (gammahat.powi(3) + 1.0) * (gammahat + 1.0) / (gammahat.powi(2) + 1.0).powi(2);
        Aggd {
            shape: shape_from_ratio(rhatnorm),
            left,
            right,
        }
    }
}

struct Aggd {
    shape: f64,
    left: f64,
    right: f64,
}

/// The shapes OpenCV tries, `for (gam = 0.2; gam < 10; gam += 0.001)`, with
/// that loop's accumulated rounding.
fn shape_grid() -> &'static [f64] {
    static GRID: OnceLock<Vec<f64>> = OnceLock::new();
    GRID.get_or_init(|| {
        let mut grid = Vec::with_capacity(9800);
        let mut gam = 0.2f64;
        while gam < 10.0 {
            grid.push(gam);
            gam += 0.001;
        }
        grid
    })
}

/// `r(γ) = Γ(2/γ)² / (Γ(1/γ) Γ(3/γ))`, the moment ratio of a GGD of shape γ;
/// increasing, from 0 towards 3/4.
fn moment_ratio(gam: f64) -> f64 {
    let g2 = gamma(2.0 / gam);
    g2 * g2 / (gamma(1.0 / gam) * gamma(3.0 / gam))
}

/// OpenCV walks the grid and stops at the first shape where `|r(γ) − ratio|`
/// grows; since `r` increases that is the grid shape nearest the crossing
/// (the later one on a tie, as its `diff > prevdiff` test keeps going on
/// equality), found here by bisection instead of up to 9,800 steps.
fn shape_from_ratio(ratio: f64) -> f64 {
    if ratio.is_nan() {
        return f64::NAN;
    }
    let grid = shape_grid();
    // First grid index with r ≥ ratio.
    let (mut lo, mut hi) = (0, grid.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        if moment_ratio(grid[mid]) < ratio {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    match lo {
        0 => grid[0],
        n if n == grid.len() => grid[n - 1],
        c => {
            let after = moment_ratio(grid[c]) - ratio;
            let before = ratio - moment_ratio(grid[c - 1]);
            if after <= before {
                grid[c]
            } else {
                grid[c - 1]
            }
        }
    }
}

/// Γ(x) for x > 0 (Lanczos, g = 7, 9 terms; relative error ~1e-15 on the
/// range used here, 0.1..15).
fn gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const P: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    use std::f64::consts::PI;
    if x < 0.5 {
        // Reflection: Γ(x) Γ(1 − x) = π / sin(πx).
        return PI / ((PI * x).sin() * gamma(1.0 - x));
    }
    let x = x - 1.0;
    let mut a = P[0];
    for (i, &p) in P.iter().enumerate().skip(1) {
        a += p / (x + i as f64);
    }
    let t = x + G + 0.5;
    (2.0 * PI).sqrt() * t.powf(x + 0.5) * (-t).exp() * a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gamma_matches_known_values() {
        let sqrt_pi = std::f64::consts::PI.sqrt();
        let cases = [
            (0.1, 9.513_507_698_668_732),
            (0.5, sqrt_pi),
            (1.0, 1.0),
            (1.5, sqrt_pi / 2.0),
            (5.0, 24.0),
            (10.0, 362_880.0),
            (15.0, 87_178_291_200.0),
        ];
        for (x, want) in cases {
            let got = gamma(x);
            assert!(
                ((got - want) / want).abs() < 1e-13,
                "Γ({x}) = {got}, want {want}"
            );
        }
    }

    /// OpenCV's loop, literally.
    fn shape_by_walking(ratio: f64) -> f64 {
        let (mut prev_gamma, mut prev_diff) = (0.0, 1e10);
        for &gam in shape_grid() {
            let diff = (moment_ratio(gam) - ratio).abs();
            if diff > prev_diff {
                break;
            }
            prev_diff = diff;
            prev_gamma = gam;
        }
        prev_gamma
    }

    #[test]
    fn bisection_agrees_with_opencvs_walk() {
        let mut ratios = vec![0.0, 0.01, 0.062, 0.75, 0.8, 2.0 / std::f64::consts::PI];
        ratios.extend((0..300).map(|i| 0.05 + 0.7 * i as f64 / 299.0));
        ratios.extend((1..50).map(|i| moment_ratio(shape_grid()[i * 197])));
        for ratio in ratios {
            assert_eq!(
                shape_from_ratio(ratio),
                shape_by_walking(ratio),
                "ratio {ratio}"
            );
        }
    }

    #[test]
    fn a_gaussian_has_shape_two() {
        // r(2) = Γ(1)² / (Γ(1/2) Γ(3/2)) = 2/π.
        let shape = shape_from_ratio(2.0 / std::f64::consts::PI);
        assert!((shape - 2.0).abs() < 1.5e-3, "{shape}");
    }

    #[test]
    fn tiny_and_flat_images_give_nan_not_a_panic() {
        assert!(features(&[7], 1, 1).iter().all(|v| v.is_nan()));
        assert!(features(&[1, 2], 2, 1).iter().all(|v| v.is_nan()));
        assert!(features(&[9; 64], 8, 8).iter().any(|v| v.is_nan()));
    }

    #[test]
    fn products_skip_out_of_range_neighbours_and_nan() {
        let mut m = Moments::default();
        m.add(&[1.0, -2.0, f32::NAN, 0.0, 3.0], None);
        assert_eq!((m.pos_count, m.neg_count), (2, 1));
        assert_eq!((m.pos_sq, m.neg_sq, m.abs_sum), (10.0, 4.0, 6.0));
        let mut p = Moments::default();
        let a: Vec<f32> = (0..19).map(|i| i as f32 - 9.0).collect();
        p.add(&a, Some(&a));
        assert_eq!((p.pos_count, p.neg_count), (18, 0));
    }
}
