//! The Single Shot Detector's fixed parts, as the TensorFlow Object Detection API builds them
//! (`object_detection/anchor_generators/multiple_grid_anchor_generator.py`,
//! `box_coders/faster_rcnn_box_coder.py`, `core/post_processing.py`): anchor boxes on each
//! feature map's grid, decoding of the predicted offsets, and per-class non-maximum
//! suppression. Boxes here are `[ymin, xmin, ymax, xmax]`, normalised to 0–1, the API's order.

pub mod anchors;
pub mod nms;

/// The box coder's scale factors `[y, x, h, w]` (the API's `FasterRcnnBoxCoder`, set to
/// 10, 10, 5, 5 in every SSD configuration of its model zoo).
pub const BOX_CODER_SCALES: [f32; 4] = [10.0, 10.0, 5.0, 5.0];

/// Decodes one predicted offset `[ty, tx, th, tw]` against its anchor `[ymin, xmin, ymax,
/// xmax]` (`FasterRcnnBoxCoder._decode`): the centre moves by `t/scale` anchor sizes, the size
/// scales by `exp(t/scale)`.
pub fn decode_box(encoded: [f32; 4], anchor: [f32; 4]) -> [f32; 4] {
    let anchor_height = anchor[2] - anchor[0];
    let anchor_width = anchor[3] - anchor[1];
    let anchor_center_y = anchor[0] + anchor_height / 2.0;
    let anchor_center_x = anchor[1] + anchor_width / 2.0;
    let [scale_y, scale_x, scale_h, scale_w] = BOX_CODER_SCALES;
    let height = (encoded[2] / scale_h).exp() * anchor_height;
    let width = (encoded[3] / scale_w).exp() * anchor_width;
    let center_y = encoded[0] / scale_y * anchor_height + anchor_center_y;
    let center_x = encoded[1] / scale_x * anchor_width + anchor_center_x;
    [
        center_y - height / 2.0,
        center_x - width / 2.0,
        center_y + height / 2.0,
        center_x + width / 2.0,
    ]
}

/// The logistic function, the API's `sigmoid` score converter.
pub fn sigmoid(logit: f32) -> f32 {
    1.0 / (1.0 + (-logit).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_offsets_give_the_anchor_back() {
        let anchor = [0.1, 0.2, 0.5, 0.4];
        let decoded = decode_box([0.0; 4], anchor);
        for (decoded, expected) in decoded.iter().zip(anchor) {
            assert!((decoded - expected).abs() < 1e-6, "{decoded} vs {expected}");
        }
    }

    #[test]
    fn offsets_move_and_scale_in_anchor_units() {
        // ty = 10 moves the centre down by one anchor height; th = 5 ln 2 doubles the height.
        let decoded = decode_box([10.0, 0.0, 5.0 * 2f32.ln(), 0.0], [0.0, 0.0, 0.2, 0.2]);
        let expected = [0.1, 0.0, 0.5, 0.2];
        for (decoded, expected) in decoded.iter().zip(expected) {
            assert!((decoded - expected).abs() < 1e-6, "{decoded:?}");
        }
        assert_eq!(sigmoid(0.0), 0.5);
    }
}
