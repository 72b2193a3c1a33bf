//! BlazeFace (MediaPipe short range) post-processing: the 896 SSD anchors,
//! box decoding relative to each anchor, and weighted non-maximum suppression
//! as MediaPipe's face detection graph does it.

use serde::Serialize;

/// Input side of the short-range model, in pixels.
pub const INPUT_SIZE: f32 = 128.0;
/// Values per anchor in the `regressors` output: box (cx, cy, w, h) + 6 keypoints.
pub const REGRESSOR_WIDTH: usize = 16;

/// An anchor centre, in 0..1 of the model input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Anchor {
    pub cx: f32,
    pub cy: f32,
}

/// The short-range anchor layout: a 16×16 grid at stride 8 with 2 anchors a
/// cell, then an 8×8 grid at stride 16 with 6 anchors a cell (MediaPipe's
/// SsdAnchorsCalculator with strides [8, 16, 16, 16] and fixed anchor size,
/// where layers of equal stride share a grid). 512 + 384 = 896 anchors.
pub fn short_range_anchors() -> Vec<Anchor> {
    let mut anchors = Vec::with_capacity(896);
    for (grid, per_cell) in [(16usize, 2usize), (8, 6)] {
        for y in 0..grid {
            for x in 0..grid {
                let anchor = Anchor {
                    cx: (x as f32 + 0.5) / grid as f32,
                    cy: (y as f32 + 0.5) / grid as f32,
                };
                anchors.extend(std::iter::repeat_n(anchor, per_cell));
            }
        }
    }
    anchors
}

/// A detection in 0..1 coordinates of the model input.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Detection {
    /// x1, y1, x2, y2.
    pub bbox: [f32; 4],
    pub score: f32,
}

impl Detection {
    fn area(&self) -> f32 {
        (self.bbox[2] - self.bbox[0]).max(0.0) * (self.bbox[3] - self.bbox[1]).max(0.0)
    }

    fn iou(&self, other: &Detection) -> f32 {
        let x1 = self.bbox[0].max(other.bbox[0]);
        let y1 = self.bbox[1].max(other.bbox[1]);
        let x2 = self.bbox[2].min(other.bbox[2]);
        let y2 = self.bbox[3].min(other.bbox[3]);
        let inter = (x2 - x1).max(0.0) * (y2 - y1).max(0.0);
        let union = self.area() + other.area() - inter;
        if union <= 0.0 {
            0.0
        } else {
            inter / union
        }
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x.clamp(-100.0, 100.0)).exp())
}

/// Decodes one photo's raw outputs (`regressors` 896×16, `classificators`
/// 896×1) into detections above `score_threshold`, suppressed at `iou_threshold`.
pub fn decode(
    regressors: &[f32],
    classificators: &[f32],
    anchors: &[Anchor],
    score_threshold: f32,
    iou_threshold: f32,
) -> Vec<Detection> {
    let mut candidates: Vec<Detection> = anchors
        .iter()
        .enumerate()
        .filter_map(|(i, anchor)| {
            let score = sigmoid(*classificators.get(i)?);
            if score < score_threshold {
                return None;
            }
            let r = regressors.get(i * REGRESSOR_WIDTH..i * REGRESSOR_WIDTH + 4)?;
            // Offsets are in input pixels relative to the anchor centre.
            let cx = r[0] / INPUT_SIZE + anchor.cx;
            let cy = r[1] / INPUT_SIZE + anchor.cy;
            let (w, h) = (r[2] / INPUT_SIZE, r[3] / INPUT_SIZE);
            Some(Detection {
                bbox: [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0],
                score,
            })
        })
        .collect();
    candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
    weighted_nms(candidates, iou_threshold)
}

/// MediaPipe's "weighted" suppression: each cluster of boxes overlapping the
/// best remaining one is replaced by their score-weighted average, keeping the
/// best score. Steadier boxes than plain NMS on a dense anchor grid.
/// `sorted` must be ordered by score, best first.
pub fn weighted_nms(sorted: Vec<Detection>, iou_threshold: f32) -> Vec<Detection> {
    let mut remaining = sorted;
    let mut kept = Vec::new();
    while let Some(best) = remaining.first().copied() {
        let (cluster, rest): (Vec<Detection>, Vec<Detection>) = remaining
            .into_iter()
            .partition(|d| best.iou(d) > iou_threshold);
        // `best` overlaps itself fully, so the cluster is never empty.
        let total: f32 = cluster.iter().map(|d| d.score).sum();
        let mut bbox = [0.0f32; 4];
        for d in &cluster {
            for (acc, v) in bbox.iter_mut().zip(d.bbox) {
                *acc += v * d.score / total;
            }
        }
        kept.push(Detection {
            bbox,
            score: best.score,
        });
        remaining = rest;
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchor_layout_matches_the_model() {
        let anchors = short_range_anchors();
        assert_eq!(anchors.len(), 896);
        assert_eq!(
            anchors[0],
            Anchor {
                cx: 1.0 / 32.0,
                cy: 1.0 / 32.0
            }
        );
        assert_eq!(anchors[1], anchors[0]);
        assert_eq!(
            anchors[512],
            Anchor {
                cx: 1.0 / 16.0,
                cy: 1.0 / 16.0
            }
        );
        assert_eq!(
            anchors[895],
            Anchor {
                cx: 15.0 / 16.0,
                cy: 15.0 / 16.0
            }
        );
    }

    #[test]
    fn decodes_relative_to_the_anchor_and_suppresses_overlaps() {
        let anchors = short_range_anchors();
        let mut reg = vec![0.0; 896 * REGRESSOR_WIDTH];
        let mut cls = vec![-10.0; 896];
        // Two neighbouring anchors see the same 32-pixel face, one a weak far box.
        for (i, dx, logit) in [(100usize, 0.0f32, 3.0f32), (101, 2.0, 1.0)] {
            reg[i * 16] = dx;
            reg[i * 16 + 2] = 32.0;
            reg[i * 16 + 3] = 32.0;
            cls[i] = logit;
        }
        let dets = decode(&reg, &cls, &anchors, 0.5, 0.3);
        assert_eq!(dets.len(), 1);
        let d = dets[0];
        assert!((d.score - sigmoid(3.0)).abs() < 1e-6);
        let w = d.bbox[2] - d.bbox[0];
        assert!((w - 0.25).abs() < 1e-5, "width {w}");
        // Weighted toward the stronger box: centre shifted by less than half of 2 px.
        let cx = (d.bbox[0] + d.bbox[2]) / 2.0 - anchors[100].cx;
        assert!(cx > 0.0 && cx < 1.0 / 128.0, "{cx}");
    }

    #[test]
    fn below_threshold_gives_nothing() {
        let anchors = short_range_anchors();
        let dets = decode(&vec![0.0; 896 * 16], &[-5.0; 896], &anchors, 0.5, 0.3);
        assert!(dets.is_empty());
    }
}
