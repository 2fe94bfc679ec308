//! How closely two detectors agree on one image: every box of the reference scoring at least
//! `min_score` must be found by the candidate at IoU ≥ `min_iou` with a score within
//! `max_score_difference`, and the candidate may add no box above `min_score` that the
//! reference lacks. Used by the test against TensorFlow and by the device check (CUDA against
//! the CPU).

use crate::detector::Detection;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    pub min_score: f32,
    pub min_iou: f32,
    pub max_score_difference: f32,
}

/// The tolerance of the issue that brought the detector in: IoU ≥ 0.9, |Δscore| ≤ 0.02, for
/// every box scoring ≥ 0.3.
pub const REFERENCE_TOLERANCE: Tolerance = Tolerance {
    min_score: 0.3,
    min_iou: 0.9,
    max_score_difference: 0.02,
};

/// Agreement over many images: the worst matched pair and every problem found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Agreement {
    /// Reference boxes at or above the score that were compared.
    pub compared: usize,
    pub min_iou: Option<f32>,
    pub max_score_difference: f32,
    pub problems: Vec<String>,
}

/// IoU of two `[x1, y1, x2, y2]` boxes (0 when they have no area).
pub fn iou(a: [f32; 4], b: [f32; 4]) -> f32 {
    let width = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let height = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let intersection = width * height;
    let area = |r: [f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - intersection;
    if union <= 0.0 { 0.0 } else { intersection / union }
}

impl Agreement {
    /// Compares one image's detections, `(score, [x1, y1, x2, y2])` each.
    pub fn add(
        &mut self,
        image: &str,
        reference: &[(f32, [f32; 4])],
        candidate: &[(f32, [f32; 4])],
        tolerance: Tolerance,
    ) {
        for &(score, boxed) in reference.iter().filter(|(score, _)| *score >= tolerance.min_score) {
            self.compared += 1;
            let best = candidate
                .iter()
                .map(|&(found, other)| (iou(other, boxed), found))
                .max_by(|a, b| a.0.total_cmp(&b.0));
            match best {
                Some((overlap, found))
                    if overlap >= tolerance.min_iou && (found - score).abs() <= tolerance.max_score_difference =>
                {
                    self.min_iou = Some(self.min_iou.map_or(overlap, |min| min.min(overlap)));
                    self.max_score_difference = self.max_score_difference.max((found - score).abs());
                }
                Some((overlap, found)) => self.problems.push(format!(
                    "{image}: reference box {boxed:?} score {score:.4}: best match IoU {overlap:.3}, score {found:.4}"
                )),
                None => self
                    .problems
                    .push(format!("{image}: reference box {boxed:?} score {score:.4} not found")),
            }
        }
        for &(score, boxed) in candidate.iter().filter(|(score, _)| *score > tolerance.min_score) {
            // The reference may hold it just under the score: any of its boxes may match.
            let matched = reference.iter().any(|&(theirs, other)| {
                iou(boxed, other) >= tolerance.min_iou && (theirs - score).abs() <= tolerance.max_score_difference
            });
            if !matched {
                self.problems.push(format!(
                    "{image}: candidate adds {boxed:?} score {score:.4}, the reference has no such box"
                ));
            }
        }
    }
}

/// `(score, box)` pairs of detections, for [`Agreement::add`].
pub fn scored_boxes(detections: &[Detection]) -> Vec<(f32, [f32; 4])> {
    detections.iter().map(|d| (d.score, d.box_norm)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_missing_and_extra_boxes() {
        let reference = [(0.9, [0.0, 0.0, 0.5, 0.5]), (0.2, [0.6, 0.6, 0.9, 0.9])];
        let mut agreement = Agreement::default();
        agreement.add("same", &reference, &reference, REFERENCE_TOLERANCE);
        assert!(agreement.problems.is_empty());
        assert_eq!(agreement.compared, 1, "only boxes ≥ 0.3 are compared");
        agreement.add("missing", &reference, &[], REFERENCE_TOLERANCE);
        agreement.add("extra", &[], &[(0.5, [0.0, 0.0, 1.0, 1.0])], REFERENCE_TOLERANCE);
        agreement.add(
            "shifted",
            &reference,
            &[(0.9, [0.1, 0.1, 0.6, 0.6])],
            REFERENCE_TOLERANCE,
        );
        assert_eq!(agreement.problems.len(), 4, "{:?}", agreement.problems);
        assert!((iou([0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 3.0, 3.0]) - 1.0 / 7.0).abs() < 1e-6);
    }
}
