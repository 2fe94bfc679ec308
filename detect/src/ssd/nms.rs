//! Greedy non-maximum suppression with TensorFlow's semantics (`tf.image.non_max_suppression`,
//! the `NonMaxSuppressionV3` kernel): candidates above the score threshold in descending
//! score order (ties: lower index first); a candidate is kept unless its IoU with a kept box
//! exceeds the IoU threshold; at most `max_output` are kept.

/// IoU of two `[ymin, xmin, ymax, xmax]` boxes, corners in any order; 0 when either has no
/// area (TensorFlow's `IOU` helper in `non_max_suppression_op.cc`).
pub fn iou(a: [f32; 4], b: [f32; 4]) -> f32 {
    let (a_ymin, a_ymax) = (a[0].min(a[2]), a[0].max(a[2]));
    let (a_xmin, a_xmax) = (a[1].min(a[3]), a[1].max(a[3]));
    let (b_ymin, b_ymax) = (b[0].min(b[2]), b[0].max(b[2]));
    let (b_xmin, b_xmax) = (b[1].min(b[3]), b[1].max(b[3]));
    let area_a = (a_ymax - a_ymin) * (a_xmax - a_xmin);
    let area_b = (b_ymax - b_ymin) * (b_xmax - b_xmin);
    if area_a <= 0.0 || area_b <= 0.0 {
        return 0.0;
    }
    let intersection_height = (a_ymax.min(b_ymax) - a_ymin.max(b_ymin)).max(0.0);
    let intersection_width = (a_xmax.min(b_xmax) - a_xmin.max(b_xmin)).max(0.0);
    let intersection = intersection_height * intersection_width;
    intersection / (area_a + area_b - intersection)
}

/// Indexes into `boxes`/`scores` of the kept boxes, best first.
pub fn non_max_suppression(
    boxes: &[[f32; 4]],
    scores: &[f32],
    iou_threshold: f32,
    score_threshold: f32,
    max_output: usize,
) -> Vec<usize> {
    let mut candidates: Vec<usize> = (0..scores.len().min(boxes.len()))
        .filter(|&index| scores[index] > score_threshold)
        .collect();
    candidates.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let mut kept: Vec<usize> = Vec::new();
    for candidate in candidates {
        if kept.len() >= max_output {
            break;
        }
        if kept
            .iter()
            .all(|&selected| iou(boxes[selected], boxes[candidate]) <= iou_threshold)
        {
            kept.push(candidate);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_best_of_overlapping_boxes_and_separate_ones() {
        let boxes = [
            [0.0, 0.0, 1.0, 1.0],
            [0.0, 0.0, 1.0, 0.9], // IoU 0.9 with the first
            [2.0, 2.0, 3.0, 3.0],
            [0.0, 0.0, 1.0, 0.5], // IoU 0.5 with the first: kept at threshold 0.6
        ];
        let scores = [0.8, 0.9, 0.7, 0.6];
        assert_eq!(non_max_suppression(&boxes, &scores, 0.6, 0.0, 10), vec![1, 2, 3]);
        assert_eq!(non_max_suppression(&boxes, &scores, 0.6, 0.65, 10), vec![1, 2]);
        assert_eq!(non_max_suppression(&boxes, &scores, 0.6, 0.0, 1), vec![1]);
    }

    #[test]
    fn iou_is_symmetric_and_zero_for_empty_boxes() {
        let a = [0.0, 0.0, 2.0, 2.0];
        let b = [1.0, 1.0, 3.0, 3.0];
        assert!((iou(a, b) - 1.0 / 7.0).abs() < 1e-6);
        assert_eq!(iou(a, b), iou(b, a));
        assert_eq!(iou(a, [1.0, 1.0, 1.0, 3.0]), 0.0);
        // Corners given in the other order describe the same box.
        assert_eq!(iou(a, [3.0, 3.0, 1.0, 1.0]), iou(a, b));
    }
}
