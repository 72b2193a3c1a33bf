//! Concept training over stored embeddings.
//!
//! [`train`] fits a class-balanced, L2-regularised logistic regression to
//! positive and negative example embeddings. It picks the regularisation by
//! stratified k-fold cross-validation (the strength whose out-of-fold scores
//! have the best average precision), reports out-of-fold metrics at the
//! threshold that reaches the target precision with the most recall, and
//! refits on every example for serving. The same examples in the same order
//! give the same model, bit for bit.
//!
//! The cross-validation is [`train_family`], for any [`Family`] of models:
//! [`Linear`] is the logistic regression, optionally as an offset on a
//! prior head (regularised toward it rather than toward zero). Other
//! families are measured against it the same way
//! (`crates/pipeline/examples/head_choice.rs`).

mod logistic;
pub mod metrics;

use serde::{Deserialize, Serialize};

pub use logistic::Logistic;

/// The regularisation strengths tried, weakest last.
pub const L2_GRID: [f64; 5] = [1.0, 0.1, 0.01, 1e-3, 1e-4];

/// Fewer positives than this cannot be trained on (the default of
/// [`Options::min_positives`]).
pub const MIN_POSITIVES: usize = 5;

/// What to train on: embeddings of one length (L2-normalised), each a
/// positive or a negative example. Order the examples by a stable key
/// (the photo id) for reproducible folds.
#[derive(Debug, Default, Clone)]
pub struct Examples {
    pub positives: Vec<Vec<f32>>,
    pub negatives: Vec<Vec<f32>>,
    /// How many of `negatives` are background photos from the catalogue
    /// rather than ones a person chose (reported in the metrics).
    pub background_negatives: usize,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Options {
    /// The out-of-fold precision the threshold must reach.
    pub target_precision: f64,
    /// At most this many folds (fewer when there are fewer examples of a class).
    pub folds: usize,
    pub max_iter: usize,
    /// The fit stops when the gradient's norm falls below this.
    pub tolerance: f64,
    /// Fewer positives than this are refused (at least 2).
    pub min_positives: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            target_precision: 0.9,
            folds: 5,
            max_iter: 500,
            tolerance: 1e-5,
            min_positives: MIN_POSITIVES,
        }
    }
}

/// How a trained concept does on examples it was not fitted to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metrics {
    /// Out-of-fold precision at `threshold`.
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Out-of-fold average precision over every threshold.
    pub ap: f64,
    /// Photos scoring at least this are tagged.
    pub threshold: f32,
    /// Whether `precision` reaches the target (else `threshold` is the best F1).
    pub meets_target: bool,
    pub positives: usize,
    pub negatives: usize,
    pub background_negatives: usize,
    pub folds: usize,
    /// The regularisation strength cross-validation chose.
    pub l2: f64,
}

/// A trained concept: the scorer and its out-of-fold metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct Trained<M = Logistic> {
    pub model: M,
    pub metrics: Metrics,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LearnError {
    #[error("{positives} positives and {negatives} negatives: at least {needed} positives and 2 negatives are needed")]
    TooFewExamples {
        positives: usize,
        negatives: usize,
        needed: usize,
    },
    #[error("an embedding has {found} values where the others have {expected}")]
    Dimensions { expected: usize, found: usize },
}

/// What one fit reads: rows of `dim` features (L2-normalised embeddings,
/// so every row has norm at most 1), labels and per-row weights.
pub struct Problem<'a> {
    pub rows: Vec<&'a [f32]>,
    pub labels: Vec<bool>,
    pub weights: Vec<f64>,
    pub dim: usize,
}

/// A kind of model that cross-validation can choose the regularisation of.
pub trait Family {
    type Model;
    /// The regularisation strengths tried, in order of preference on ties.
    fn grid(&self) -> &[f64];
    fn fit(&self, problem: &Problem<'_>, l2: f64, options: &Options) -> Self::Model;
    /// 0..1, higher for more likely positive.
    fn score(&self, model: &Self::Model, x: &[f32]) -> f32;
}

/// Logistic regression over the embedding ([`Logistic`]), fitted from
/// zero, or with `prior` as an offset: the fit starts from the prior's
/// weights and is regularised toward them, so with few examples it stays
/// near the prior and with many it moves to what they say.
#[derive(Debug, Clone, Default)]
pub struct Linear {
    pub prior: Option<Logistic>,
}

impl Family for Linear {
    type Model = Logistic;

    fn grid(&self) -> &[f64] {
        &L2_GRID
    }

    fn fit(&self, problem: &Problem<'_>, l2: f64, options: &Options) -> Logistic {
        logistic::fit(
            problem,
            l2,
            self.prior.as_ref(),
            options.max_iter,
            options.tolerance,
        )
    }

    fn score(&self, model: &Logistic, x: &[f32]) -> f32 {
        model.score(x)
    }
}

/// Trains a concept on `examples` (see the crate's documentation).
pub fn train(examples: &Examples, options: &Options) -> Result<Trained, LearnError> {
    train_with_progress(examples, options, &mut |_, _| {})
}

/// [`train`], calling `progress(done, total)` after each fit: one per fold
/// and strength of the grid, then the final fit on every example.
pub fn train_with_progress(
    examples: &Examples,
    options: &Options,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Trained, LearnError> {
    train_family(&Linear::default(), examples, options, progress)
}

/// Trains a model of `family` on `examples`: the regularisation chosen by
/// stratified k-fold cross-validation, out-of-fold metrics, and the model
/// refitted on every example.
pub fn train_family<F: Family>(
    family: &F,
    examples: &Examples,
    options: &Options,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Trained<F::Model>, LearnError> {
    let (n_pos, n_neg) = (examples.positives.len(), examples.negatives.len());
    let needed = options.min_positives.max(2);
    if n_pos < needed || n_neg < 2 {
        return Err(LearnError::TooFewExamples {
            positives: n_pos,
            negatives: n_neg,
            needed,
        });
    }
    let dim = examples.positives[0].len();
    for row in examples.positives.iter().chain(&examples.negatives) {
        if row.len() != dim {
            return Err(LearnError::Dimensions {
                expected: dim,
                found: row.len(),
            });
        }
    }
    let rows: Vec<&[f32]> = examples
        .positives
        .iter()
        .chain(&examples.negatives)
        .map(Vec::as_slice)
        .collect();
    let labels: Vec<bool> = (0..rows.len()).map(|i| i < n_pos).collect();
    // Stratified folds: each class dealt round-robin, in the given order.
    let folds = options.folds.clamp(2, n_pos.min(n_neg));
    let fold_of: Vec<usize> = (0..rows.len())
        .map(|i| (if i < n_pos { i } else { i - n_pos }) % folds)
        .collect();

    let grid = family.grid();
    let total = grid.len() * folds + 1;
    let mut done = 0;
    let mut best: Option<(f64, f64, Vec<f32>)> = None;
    for &l2 in grid {
        let mut scores = vec![0.0f32; rows.len()];
        for fold in 0..folds {
            let train: Vec<usize> = (0..rows.len()).filter(|&i| fold_of[i] != fold).collect();
            let model = family.fit(&problem(&rows, &labels, &train, dim), l2, options);
            for i in (0..rows.len()).filter(|&i| fold_of[i] == fold) {
                scores[i] = family.score(&model, rows[i]);
            }
            done += 1;
            progress(done, total);
        }
        let ap = metrics::average_precision(&metrics::curve(&scores, &labels));
        // Ties go to the earlier strength (the stronger regularisation).
        if best
            .as_ref()
            .is_none_or(|(best_ap, _, _)| ap > *best_ap + 1e-9)
        {
            best = Some((ap, l2, scores));
        }
    }
    let (ap, l2, scores) = best.expect("the grid is not empty");
    let curve = metrics::curve(&scores, &labels);
    let (point, meets_target) =
        metrics::for_precision(&curve, options.target_precision).expect("there are positives");
    let all: Vec<usize> = (0..rows.len()).collect();
    let model = family.fit(&problem(&rows, &labels, &all, dim), l2, options);
    progress(total, total);
    Ok(Trained {
        model,
        metrics: Metrics {
            precision: point.precision,
            recall: point.recall,
            f1: point.f1(),
            ap,
            threshold: point.threshold,
            meets_target,
            positives: n_pos,
            negatives: n_neg,
            background_negatives: examples.background_negatives,
            folds,
            l2,
        },
    })
}

/// The rows in `subset`, weighted so that each class counts for half.
fn problem<'a>(rows: &[&'a [f32]], labels: &[bool], subset: &[usize], dim: usize) -> Problem<'a> {
    let pos = subset.iter().filter(|&&i| labels[i]).count().max(1) as f64;
    let neg = subset.iter().filter(|&&i| !labels[i]).count().max(1) as f64;
    let n = subset.len() as f64;
    Problem {
        rows: subset.iter().map(|&i| rows[i]).collect(),
        labels: subset.iter().map(|&i| labels[i]).collect(),
        weights: subset
            .iter()
            .map(|&i| {
                if labels[i] {
                    n / (2.0 * pos)
                } else {
                    n / (2.0 * neg)
                }
            })
            .collect(),
        dim,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SplitMix64, for reproducible synthetic embeddings.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> f32 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) >> 11) as f32 / (1u64 << 53) as f32 * 2.0 - 1.0
        }
    }

    fn normalised(v: Vec<f32>) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / n).collect()
    }

    /// `n` embeddings of `dim` values around `centre` (noise of `spread`).
    fn cloud(rng: &mut Rng, centre: &[f32], spread: f32, n: usize) -> Vec<Vec<f32>> {
        (0..n)
            .map(|_| normalised(centre.iter().map(|c| c + spread * rng.next()).collect()))
            .collect()
    }

    fn separable(n_pos: usize, n_neg: usize) -> Examples {
        let mut rng = Rng(7);
        let dim = 32;
        let a: Vec<f32> = (0..dim).map(|_| rng.next()).collect();
        let b: Vec<f32> = (0..dim).map(|_| rng.next()).collect();
        Examples {
            positives: cloud(&mut rng, &a, 0.3, n_pos),
            negatives: cloud(&mut rng, &b, 0.3, n_neg),
            background_negatives: 0,
        }
    }

    #[test]
    fn separable_examples_train_to_a_perfect_out_of_fold_score() {
        let examples = separable(20, 60);
        let t = train(&examples, &Options::default()).unwrap();
        let m = &t.metrics;
        assert!(m.meets_target, "{m:?}");
        assert!(m.ap > 0.99 && m.precision >= 0.9 && m.recall > 0.9, "{m:?}");
        assert_eq!((m.positives, m.negatives, m.folds), (20, 60, 5));
        // The refitted model ranks every positive above every negative.
        let worst_pos = examples
            .positives
            .iter()
            .map(|x| t.model.score(x))
            .fold(1.0, f32::min);
        let best_neg = examples
            .negatives
            .iter()
            .map(|x| t.model.score(x))
            .fold(0.0, f32::max);
        assert!(worst_pos > best_neg, "{worst_pos} <= {best_neg}");
    }

    #[test]
    fn the_same_examples_give_the_same_model() {
        let examples = separable(12, 30);
        let a = train(&examples, &Options::default()).unwrap();
        let b = train(&examples, &Options::default()).unwrap();
        assert_eq!(a, b);
    }

    /// With labels that carry no signal, a fit on 24 examples in 64
    /// dimensions separates them perfectly in-sample; only out-of-fold
    /// scores show there is nothing to learn.
    #[test]
    fn metrics_are_out_of_fold_not_in_sample() {
        let mut rng = Rng(11);
        let noise = |rng: &mut Rng| normalised((0..64).map(|_| rng.next()).collect());
        let examples = Examples {
            positives: (0..12).map(|_| noise(&mut rng)).collect(),
            negatives: (0..12).map(|_| noise(&mut rng)).collect(),
            background_negatives: 0,
        };
        let t = train(&examples, &Options::default()).unwrap();
        assert!(t.metrics.ap < 0.75, "{:?}", t.metrics);
        assert!(!t.metrics.meets_target, "{:?}", t.metrics);
    }

    /// An offset on a prior head is regularised toward the prior: held
    /// hard, it stays the prior; without a prior, it shrinks to zero.
    #[test]
    fn a_prior_is_what_the_fit_is_regularised_toward() {
        let examples = separable(12, 30);
        let prior = train(&examples, &Options::default()).unwrap().model;
        let noise = {
            let mut rng = Rng(5);
            Examples {
                positives: (0..8)
                    .map(|_| normalised((0..32).map(|_| rng.next()).collect()))
                    .collect(),
                negatives: (0..8)
                    .map(|_| normalised((0..32).map(|_| rng.next()).collect()))
                    .collect(),
                background_negatives: 0,
            }
        };
        let all: Vec<usize> = (0..16).collect();
        let rows: Vec<&[f32]> = noise
            .positives
            .iter()
            .chain(&noise.negatives)
            .map(Vec::as_slice)
            .collect();
        let labels: Vec<bool> = (0..16).map(|i| i < 8).collect();
        let p = problem(&rows, &labels, &all, 32);
        let held = logistic::fit(&p, 1e6, Some(&prior), 500, 1e-9);
        let gap = |m: &Logistic, w: &[f32]| -> f32 {
            m.weights
                .iter()
                .zip(w)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max)
        };
        assert!(gap(&held, &prior.weights) < 1e-3, "{held:?}");
        let plain = logistic::fit(&p, 1e6, None, 500, 1e-9);
        assert!(gap(&plain, &[0.0; 32]) < 1e-3, "{plain:?}");
        // Left free, the offset moves away from the prior toward the data.
        let free = logistic::fit(&p, 1e-4, Some(&prior), 500, 1e-9);
        assert!(gap(&free, &prior.weights) > 0.1, "{free:?}");
    }

    #[test]
    fn too_few_examples_and_mixed_lengths_are_refused() {
        let e = separable(4, 10);
        assert_eq!(
            train(&e, &Options::default()),
            Err(LearnError::TooFewExamples {
                positives: 4,
                negatives: 10,
                needed: 5
            })
        );
        let fewer = Options {
            min_positives: 4,
            ..Options::default()
        };
        assert!(train(&e, &fewer).is_ok());
        let mut e = separable(6, 10);
        e.negatives[3].pop();
        assert_eq!(
            train(&e, &Options::default()),
            Err(LearnError::Dimensions {
                expected: 32,
                found: 31
            })
        );
    }
}
