//! Weighted, L2-regularised logistic regression, fitted by Nesterov's
//! accelerated gradient with a step the loss's smoothness fixes, so there is
//! no step size to tune and the same data always gives the same model.

/// A linear scorer: `sigmoid(w · x + b)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Logistic {
    pub weights: Vec<f32>,
    pub bias: f32,
}

impl Logistic {
    /// The raw score `w · x + b`.
    pub fn margin(&self, x: &[f32]) -> f64 {
        dot(&self.weights, x) + f64::from(self.bias)
    }

    /// The probability `sigmoid(w · x + b)`.
    pub fn score(&self, x: &[f32]) -> f32 {
        sigmoid(self.margin(x)) as f32
    }
}

pub(crate) fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

fn dot(w: &[f32], x: &[f32]) -> f64 {
    w.iter()
        .zip(x)
        .map(|(a, b)| f64::from(*a) * f64::from(*b))
        .sum()
}

use crate::Problem;

/// Minimises `Σ wᵢ·logloss(yᵢ, w·xᵢ + b) / Σ wᵢ + l2/2·‖w − w₀‖²` (the
/// bias is not penalised), where `w₀` is the prior's weights (zero without
/// one); the fit starts from the prior. The gradient is Lipschitz with constant at most
/// `max‖xᵢ‖²/4 + l2` (≤ 1/4 + l2 for normalised rows, plus 1/4 for the
/// bias), which fixes the step; iterations stop when the gradient's norm is
/// below `tolerance` or after `max_iter`.
pub(crate) fn fit(
    p: &Problem<'_>,
    l2: f64,
    prior: Option<&Logistic>,
    max_iter: usize,
    tolerance: f64,
) -> Logistic {
    let d = p.dim;
    let total: f64 = p.weights.iter().sum();
    let max_norm2 = p
        .rows
        .iter()
        .map(|r| r.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>())
        .fold(0.0, f64::max);
    // Features and the bias's constant 1 together.
    let lipschitz = (max_norm2 + 1.0) / 4.0 + l2;
    let step = 1.0 / lipschitz;
    // Parameters: d weights, then the bias.
    let mut centre = vec![0.0f64; d];
    let mut theta = vec![0.0f64; d + 1];
    if let Some(prior) = prior.filter(|h| h.weights.len() == d) {
        for (c, w) in centre.iter_mut().zip(&prior.weights) {
            *c = f64::from(*w);
        }
        theta[..d].copy_from_slice(&centre);
        theta[d] = f64::from(prior.bias);
    }
    let mut previous = theta.clone();
    let mut look = theta.clone();
    let mut grad = vec![0.0f64; d + 1];
    let mut t = 1.0f64;
    for _ in 0..max_iter {
        grad.iter_mut().for_each(|g| *g = 0.0);
        for ((row, &y), &w) in p.rows.iter().zip(&p.labels).zip(&p.weights) {
            let z: f64 = row
                .iter()
                .zip(&look[..d])
                .map(|(x, th)| f64::from(*x) * th)
                .sum::<f64>()
                + look[d];
            let residual = w * (sigmoid(z) - if y { 1.0 } else { 0.0 }) / total;
            for (g, x) in grad[..d].iter_mut().zip(row.iter()) {
                *g += residual * f64::from(*x);
            }
            grad[d] += residual;
        }
        for ((g, th), c) in grad[..d].iter_mut().zip(&look[..d]).zip(&centre) {
            *g += l2 * (th - c);
        }
        let norm = grad.iter().map(|g| g * g).sum::<f64>().sqrt();
        if norm < tolerance {
            theta.copy_from_slice(&look);
            break;
        }
        // Nesterov: a gradient step from the look-ahead point, then momentum.
        previous.copy_from_slice(&theta);
        for ((th, lk), g) in theta.iter_mut().zip(&look).zip(&grad) {
            *th = lk - step * g;
        }
        let t_next = (1.0 + (1.0 + 4.0 * t * t).sqrt()) / 2.0;
        let momentum = (t - 1.0) / t_next;
        for ((lk, th), prev) in look.iter_mut().zip(&theta).zip(&previous) {
            *lk = th + momentum * (th - prev);
        }
        t = t_next;
    }
    Logistic {
        weights: theta[..d].iter().map(|&v| v as f32).collect(),
        bias: theta[d] as f32,
    }
}
