//! SSD anchor boxes (the Object Detection API's `ssd_anchor_generator` with its
//! `MultipleGridAnchorGenerator`; Liu et al., "SSD: Single Shot MultiBox Detector", 2016,
//! §2.2 for the scales).
//!
//! Layer k of K gets scale `s_k = min + (max − min)·k/(K−1)`; each of its aspect ratios `a`
//! gives a box `s_k/√a` high and `s_k·√a` wide, plus one box of scale `√(s_k·s_{k+1})` at
//! ratio 1 (`s_K = 1`). The first layer, with `reduce_boxes_in_lowest_layer`, has three boxes
//! instead: (0.1, 1), (min, 2), (min, 0.5). Anchors are centred on each cell, ordered by grid
//! row, column, then box — the order of the box predictors' outputs.

/// An SSD anchor configuration for a square input.
#[derive(Debug, Clone, PartialEq)]
pub struct AnchorConfig {
    pub min_scale: f32,
    pub max_scale: f32,
    pub aspect_ratios: Vec<f32>,
    /// Grid size of each feature map, coarsest last.
    pub grid_sizes: Vec<usize>,
}

impl AnchorConfig {
    /// `(scale, aspect ratio)` of the boxes on every cell of layer `layer`.
    pub fn boxes_per_cell(&self, layer: usize) -> Vec<(f32, f32)> {
        let layers = self.grid_sizes.len();
        let scale = |k: usize| -> f32 {
            if k >= layers {
                1.0
            } else if layers == 1 {
                self.min_scale
            } else {
                self.min_scale + (self.max_scale - self.min_scale) * k as f32 / (layers - 1) as f32
            }
        };
        if layer == 0 {
            return vec![(0.1, 1.0), (self.min_scale, 2.0), (self.min_scale, 0.5)];
        }
        let mut boxes: Vec<(f32, f32)> = self.aspect_ratios.iter().map(|&ratio| (scale(layer), ratio)).collect();
        boxes.push(((scale(layer) * scale(layer + 1)).sqrt(), 1.0));
        boxes
    }

    /// Every anchor, `[ymin, xmin, ymax, xmax]` normalised to the input, in output order.
    /// Computed in f32 in the API's order of operations.
    pub fn anchors(&self) -> Vec<[f32; 4]> {
        let mut anchors = Vec::new();
        for (layer, &grid) in self.grid_sizes.iter().enumerate() {
            let stride = 1.0 / grid as f32;
            let offset = 0.5 * stride;
            let sizes: Vec<(f32, f32)> = self
                .boxes_per_cell(layer)
                .into_iter()
                .map(|(scale, ratio)| {
                    let root = ratio.sqrt();
                    (scale / root, scale * root)
                })
                .collect();
            for row in 0..grid {
                let center_y = row as f32 * stride + offset;
                for column in 0..grid {
                    let center_x = column as f32 * stride + offset;
                    for &(height, width) in &sizes {
                        anchors.push([
                            center_y - 0.5 * height,
                            center_x - 0.5 * width,
                            center_y + 0.5 * height,
                            center_x + 0.5 * width,
                        ]);
                    }
                }
            }
        }
        anchors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ssdlite() -> AnchorConfig {
        crate::models::ssdlite_mobilenet_v2::SsdliteMobilenetV2::anchor_config()
    }

    #[test]
    fn counts_and_scales_match_the_frozen_graph() {
        let config = ssdlite();
        assert_eq!(config.anchors().len(), 1917, "3·19² + 6·(10² + 5² + 3² + 2² + 1²)");
        // The graph's constants for layer 1: scale 0.35 five times, then √(0.35·0.5).
        let layer1 = config.boxes_per_cell(1);
        assert_eq!(layer1.len(), 6);
        assert!((layer1[0].0 - 0.35).abs() < 1e-6);
        assert!((layer1[5].0 - 0.41833).abs() < 1e-5, "{layer1:?}");
        // The coarsest layer's extra box interpolates to scale 1.
        let last = config.boxes_per_cell(5);
        assert!((last[5].0 - (0.95f32).sqrt()).abs() < 1e-6);
    }

    #[test]
    fn first_anchor_is_the_small_square_in_the_top_left_cell() {
        let first = ssdlite().anchors()[0];
        let center = 0.5 / 19.0;
        let expected = [center - 0.05, center - 0.05, center + 0.05, center + 0.05];
        for (value, expected) in first.iter().zip(expected) {
            assert!((value - expected).abs() < 1e-6, "{first:?}");
        }
    }
}
