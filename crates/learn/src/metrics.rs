//! Precision, recall and average precision from scores, and the threshold
//! that reaches a target precision.

/// One operating point: a photo scoring at least `threshold` is tagged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub threshold: f32,
    pub precision: f64,
    pub recall: f64,
}

impl Point {
    pub fn f1(&self) -> f64 {
        if self.precision + self.recall == 0.0 {
            0.0
        } else {
            2.0 * self.precision * self.recall / (self.precision + self.recall)
        }
    }
}

/// Every distinct threshold, highest first, with its precision and recall.
/// Empty when there is no positive.
pub fn curve(scores: &[f32], labels: &[bool]) -> Vec<Point> {
    let positives = labels.iter().filter(|&&y| y).count();
    if positives == 0 {
        return Vec::new();
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let mut points = Vec::new();
    let (mut tp, mut fp) = (0usize, 0usize);
    for (k, &i) in order.iter().enumerate() {
        if labels[i] {
            tp += 1;
        } else {
            fp += 1;
        }
        // A threshold takes every photo scoring at least it: close a point
        // only after the last of a run of equal scores.
        let last_of_run = order
            .get(k + 1)
            .is_none_or(|&next| scores[next] != scores[i]);
        if last_of_run {
            points.push(Point {
                threshold: scores[i],
                precision: tp as f64 / (tp + fp) as f64,
                recall: tp as f64 / positives as f64,
            });
        }
    }
    points
}

/// Average precision: Σ (Rₖ − Rₖ₋₁)·Pₖ over the curve (scikit-learn's
/// definition, no interpolation).
pub fn average_precision(points: &[Point]) -> f64 {
    let mut previous = 0.0;
    let mut ap = 0.0;
    for p in points {
        ap += (p.recall - previous) * p.precision;
        previous = p.recall;
    }
    ap
}

/// The point with the most recall whose precision reaches `target` (of
/// those, the most precise), and whether one does; if none does, the point
/// with the best F1.
pub fn for_precision(points: &[Point], target: f64) -> Option<(Point, bool)> {
    let reaching = points
        .iter()
        .filter(|p| p.precision >= target)
        .max_by(|a, b| {
            // Equal recall: the higher precision, at a higher threshold.
            a.recall
                .total_cmp(&b.recall)
                .then(a.precision.total_cmp(&b.precision))
        });
    if let Some(p) = reaching {
        return Some((*p, true));
    }
    points
        .iter()
        .max_by(|a, b| a.f1().total_cmp(&b.f1()))
        .map(|p| (*p, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curve_and_ap_match_a_hand_count() {
        // Scores high to low: P N P P N
        let scores = [0.9, 0.8, 0.7, 0.6, 0.1];
        let labels = [true, false, true, true, false];
        let c = curve(&scores, &labels);
        let pr: Vec<(f64, f64)> = c.iter().map(|p| (p.precision, p.recall)).collect();
        assert_eq!(
            pr,
            [
                (1.0, 1.0 / 3.0),
                (0.5, 1.0 / 3.0),
                (2.0 / 3.0, 2.0 / 3.0),
                (0.75, 1.0),
                (0.6, 1.0)
            ]
        );
        // 1/3·1 + 0 + 1/3·2/3 + 1/3·3/4
        let want = 1.0 / 3.0 + 2.0 / 9.0 + 0.25;
        assert!((average_precision(&c) - want).abs() < 1e-12);
        // 0.7 precision is reached at most recall by threshold 0.6 (0.75).
        let (p, met) = for_precision(&c, 0.7).unwrap();
        assert!(met);
        assert_eq!(p.threshold, 0.6);
        // 0.9 only by the top photo.
        let (p, met) = for_precision(&c, 0.9).unwrap();
        assert!(met);
        assert_eq!((p.threshold, p.recall), (0.9, 1.0 / 3.0));
    }

    #[test]
    fn of_equal_recall_the_most_precise_point_is_chosen() {
        // P P N: recall 1 at 0.8 (precision 1) and at 0.1 (precision 2/3).
        let c = curve(&[0.9, 0.8, 0.1], &[true, true, false]);
        let (p, met) = for_precision(&c, 0.5).unwrap();
        assert!(met);
        assert_eq!((p.threshold, p.precision, p.recall), (0.8, 1.0, 1.0));
    }

    #[test]
    fn tied_scores_form_one_point() {
        let c = curve(&[0.5, 0.5, 0.2], &[true, false, true]);
        assert_eq!(c.len(), 2);
        assert_eq!(
            (c[0].threshold, c[0].precision, c[0].recall),
            (0.5, 0.5, 0.5)
        );
    }

    #[test]
    fn an_unreachable_target_falls_back_to_the_best_f1() {
        let c = curve(&[0.9, 0.8, 0.7], &[false, true, true]);
        let (p, met) = for_precision(&c, 0.99).unwrap();
        assert!(!met);
        assert_eq!(p.threshold, 0.7);
    }
}
