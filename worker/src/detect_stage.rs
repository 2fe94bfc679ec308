//! The detect stage of one batch, after the analysis: which frames the detector runs on
//! (each channel's stage, its every-Nth-frame rate and motion gate), their colour decode and
//! resize in parallel, the forward passes, and each frame's detections in its own pixels.
//!
//! A frame that cannot be decoded or run gets a dead letter; the batch's other frames still
//! get their results: when a forward pass fails, its frames are run again one by one and only
//! those that fail alone are dead-lettered (`INFERENCE_FAILED`).

use crate::catalog::Catalog;
use crate::detect_input::decode_rgb;
use crate::processing::{DetectStage, ProcessingConfig, Skip};
use crate::record::{ConsumedFrame, Rejection};
use framefleet_detect::{Detection, Detector, PreparedFrame};
use framefleet_proto::v1::DeadLetterCode;
use framefleet_proto::wire::{DetectedObject, FrameHeaders};
use rayon::prelude::*;

/// One analysed frame the stage may run on.
pub struct DetectRequest<'a> {
    pub frame: &'a ConsumedFrame,
    pub headers: &'a FrameHeaders,
    /// Whether the analysis saw motion in it (the motion gate's input).
    pub moved: bool,
}

/// What the stage did with a frame.
#[derive(Debug, Clone, PartialEq)]
pub enum StageOutcome {
    /// The frame's channel has no detect stage.
    NoStage,
    Skipped(Skip),
    /// The detector ran; what it found that the channel's stage keeps.
    Detected(Vec<DetectedObject>),
    Failed(Rejection),
}

/// Runs the stage over `requests`, on the current rayon pool. One outcome per request, in
/// order.
pub fn run(
    requests: &[DetectRequest<'_>],
    catalog: &Catalog,
    processing: &ProcessingConfig,
    detector: Option<&Detector>,
) -> Vec<StageOutcome> {
    // None: selected for the detector, decided below.
    let mut outcomes: Vec<Option<StageOutcome>> = Vec::with_capacity(requests.len());
    // (request index, the channel's stage) of the frames the detector runs on.
    let mut selected: Vec<(usize, &DetectStage)> = Vec::new();
    for (index, request) in requests.iter().enumerate() {
        let stage = processing.for_channel(&request.headers.channel_id).detect.as_ref();
        let outcome = match (stage, detector) {
            (None, _) => Some(StageOutcome::NoStage),
            (Some(_), None) => Some(StageOutcome::Failed(Rejection::new(
                DeadLetterCode::InferenceFailed,
                "the channel has a detect stage but this worker has no model (--model)",
            ))),
            (Some(stage), Some(_)) => match stage.decide(request.headers.sequence, request.moved) {
                Ok(()) => {
                    selected.push((index, stage));
                    None
                }
                Err(skip) => Some(StageOutcome::Skipped(skip)),
            },
        };
        outcomes.push(outcome);
    }
    if let (Some(detector), false) = (detector, selected.is_empty()) {
        let prepared: Vec<Prepared> = selected
            .par_iter()
            .map(|&(index, _)| prepare(&requests[index], catalog, detector))
            .collect();
        let mut runnable: Vec<(usize, &DetectStage, (usize, usize))> = Vec::new();
        let mut inputs: Vec<PreparedFrame> = Vec::new();
        for ((index, stage), prepared) in selected.into_iter().zip(prepared) {
            match prepared {
                Ok((input, size)) => {
                    runnable.push((index, stage, size));
                    inputs.push(input);
                }
                Err(rejection) => outcomes[index] = Some(StageOutcome::Failed(rejection)),
            }
        }
        let results = infer(detector, &inputs);
        for ((index, stage, size), result) in runnable.into_iter().zip(results) {
            outcomes[index] = Some(match result {
                Ok(detections) => StageOutcome::Detected(keep(stage, detections, size)),
                Err(message) => StageOutcome::Failed(Rejection::new(
                    DeadLetterCode::InferenceFailed,
                    format!("inference failed: {message}"),
                )),
            });
        }
    }
    outcomes
        .into_iter()
        .map(|outcome| {
            outcome.unwrap_or_else(|| {
                StageOutcome::Failed(Rejection::new(
                    DeadLetterCode::InferenceFailed,
                    "internal: frame was selected for the detector but got no outcome",
                ))
            })
        })
        .collect()
}

/// A frame resized for the detector with its full size, or why it cannot be.
type Prepared = Result<(PreparedFrame, (usize, usize)), Rejection>;

/// Decodes a frame to RGB and resizes it to the model's input; returns its full size too.
fn prepare(request: &DetectRequest<'_>, catalog: &Catalog, detector: &Detector) -> Prepared {
    let headers = request.headers;
    let schema = catalog
        .schema(&headers.channel_id, headers.schema_version)
        .ok_or_else(|| {
            Rejection::new(
                DeadLetterCode::UnknownSchemaVersion,
                "schema version vanished mid-batch",
            )
        })?;
    let payload = request.frame.payload.as_deref().unwrap_or_default();
    let image = decode_rgb(payload, schema).map_err(|error| Rejection::new(error.code(), error.to_string()))?;
    let prepared = detector
        .prepare(image.as_frame())
        .map_err(|error| Rejection::new(DeadLetterCode::InferenceFailed, error.to_string()))?;
    Ok((prepared, (image.width, image.height)))
}

/// Frames per forward pass: all of a batch on a GPU; one on the CPU, where the kernels run on
/// the calling thread and frames run in parallel on the compute threads instead (measured on
/// one core: 15.3 ms a frame at batch 1 against 16.3 at batch 8, whose activations no longer
/// fit the caches).
fn frames_per_pass(detector: &Detector, frames: usize) -> usize {
    if detector.device().is_cpu() { 1 } else { frames.max(1) }
}

/// Runs `inputs` through the detector; a failed pass is retried frame by frame, so only the
/// frames that fail alone fail.
fn infer(detector: &Detector, inputs: &[PreparedFrame]) -> Vec<Result<Vec<Detection>, String>> {
    let per_pass = frames_per_pass(detector, inputs.len());
    inputs
        .par_chunks(per_pass)
        .flat_map_iter(|pass| match detector.detect(pass) {
            Ok(results) => results.into_iter().map(Ok).collect::<Vec<_>>(),
            Err(error) if pass.len() == 1 => vec![Err(error.to_string())],
            Err(error) => {
                tracing::warn!(%error, frames = pass.len(), "a forward pass failed; running its frames one by one");
                pass.iter()
                    .map(|frame| match detector.detect(std::slice::from_ref(frame)) {
                        Ok(mut results) => Ok(results.pop().unwrap_or_default()),
                        Err(error) => Err(error.to_string()),
                    })
                    .collect()
            }
        })
        .collect()
}

/// The detections `stage` keeps, with boxes in the frame's pixels.
fn keep(stage: &DetectStage, detections: Vec<Detection>, (width, height): (usize, usize)) -> Vec<DetectedObject> {
    detections
        .into_iter()
        .filter(|detection| stage.min_score <= detection.score)
        .filter(|detection| stage.labels.is_empty() || stage.labels.contains(&detection.label))
        .take(stage.max_detections)
        .map(|detection| {
            let [x1, y1, x2, y2] = detection.box_norm;
            let (width, height) = (width as f32, height as f32);
            DetectedObject {
                label: detection.label,
                class_id: detection.class_id,
                score: detection.score,
                box_pixels: [x1 * width, y1 * height, x2 * width, y2 * height],
                box_norm: detection.box_norm,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compute::{BatchContext, Outcome, process_batch};
    use crate::ops::{AnalysisSettings, MotionState};
    use framefleet_detect::architecture::{Network, RawDetection};
    use framefleet_detect::manifest::{ModelManifest, ModelSource};

    /// Finds one person in every frame, and fails on a frame whose resized first pixel is 0.
    struct Flaky;

    impl Network for Flaky {
        fn detect(
            &self,
            input: &candle_core::Tensor,
        ) -> Result<Vec<Vec<RawDetection>>, framefleet_detect::DetectError> {
            let frames: Vec<u8> = input.flatten_from(1)?.get_on_dim(1, 0)?.to_vec1()?;
            if frames.contains(&0) {
                return Err(candle_core::Error::Msg("device error".to_owned()).into());
            }
            Ok(frames
                .iter()
                .map(|_| {
                    vec![RawDetection {
                        class_index: 0,
                        score: 0.9,
                        box_norm: [0.0, 0.0, 0.5, 0.5],
                    }]
                })
                .collect())
        }
    }

    fn flaky_detector() -> Detector {
        let architecture = framefleet_detect::models::by_name("ssdlite_mobilenet_v2").expect("known");
        Detector::from_network(
            ModelManifest {
                format_version: 1,
                name: "flaky".to_owned(),
                architecture: architecture.name().to_owned(),
                input_size: [300, 300],
                labels: vec!["person".to_owned()],
                weights: "model.safetensors".to_owned(),
                sha256: "00".to_owned(),
                source: ModelSource {
                    package: "test".to_owned(),
                    file: "none".to_owned(),
                    sha256: "00".to_owned(),
                },
            },
            architecture,
            Box::new(Flaky),
            candle_core::Device::Cpu,
        )
    }

    /// A batch on the CPU with `processing` and `detector`, the analysis at its defaults.
    fn cpu_context<'a>(processing: &'a ProcessingConfig, detector: &'a Detector) -> BatchContext<'a> {
        BatchContext {
            device: &candle_core::Device::Cpu,
            worker_id: "w",
            max_payload_bytes: 1 << 20,
            analysis: AnalysisSettings::default(),
            processing,
            pipeline: None,
            detector: Some(detector),
        }
    }

    /// A 4×2 frame of `cam-1` whose every byte is `value`.
    fn frame(sequence: u64, value: u8) -> ConsumedFrame {
        crate::compute::tests::frame(sequence as i64, vec![value; 4 * 2 * 3])
    }

    #[test]
    fn a_frame_that_fails_inference_is_dead_lettered_and_the_others_get_results() {
        // With the analysis, and on a detect-only channel (its frames decoded once, for the
        // detector; its results without scores).
        for analysis in [true, false] {
            let catalog = crate::compute::tests::channels();
            let processing = ProcessingConfig {
                defaults: crate::processing::ChannelProcessing {
                    analysis,
                    detect: Some(DetectStage {
                        motion_gate: false,
                        ..DetectStage::default()
                    }),
                },
                ..ProcessingConfig::default()
            };
            let detector = flaky_detector();
            let context = cpu_context(&processing, &detector);
            let frames = [frame(0, 100), frame(1, 0), frame(2, 200)];
            let outcomes = process_batch(&frames, &catalog, &context, &mut MotionState::default());
            for index in [0, 2] {
                let Outcome::Result(result) = &outcomes[index] else {
                    panic!("frame {index}: {:?}", outcomes[index]);
                };
                assert!(result.detector_ran);
                assert_eq!(result.detections.len(), 1);
                assert_eq!(result.detections[0].box_pixels, [0.0, 0.0, 2.0, 1.0]);
                assert_eq!(result.model.as_ref().map(|model| model.name.as_str()), Some("flaky"));
                assert_eq!(result.scores.is_some(), analysis, "scores only from the analysis");
            }
            assert!(
                matches!(&outcomes[1], Outcome::DeadLetter(rejection) if rejection.code == DeadLetterCode::InferenceFailed && rejection.reason.contains("device error")),
                "{:?}",
                outcomes[1]
            );
        }
    }

    #[test]
    fn a_detect_only_frame_the_detector_skips_is_still_checked_without_a_decode() {
        use crate::compute::tests::{channels, code, frame};
        let processing = ProcessingConfig {
            defaults: crate::processing::ChannelProcessing {
                analysis: false,
                detect: Some(DetectStage {
                    every_nth_frame: 2,
                    motion_gate: false,
                    ..DetectStage::default()
                }),
            },
            ..ProcessingConfig::default()
        };
        let detector = flaky_detector();
        let context = cpu_context(&processing, &detector);
        // Odd sequence numbers are not the detector's: a short raw frame and an empty one are
        // dead-lettered all the same; a good one gets a result that says nothing ran.
        let frames = [frame(1, vec![128; 5]), frame(3, Vec::new()), frame(5, vec![128; 24])];
        let outcomes = process_batch(&frames, &channels(), &context, &mut MotionState::default());
        assert_eq!(code(&outcomes[0]), DeadLetterCode::SizeMismatch);
        assert_eq!(code(&outcomes[1]), DeadLetterCode::EmptyPayload);
        let Outcome::Result(result) = &outcomes[2] else {
            panic!("{:?}", outcomes[2]);
        };
        assert!(
            !result.detector_ran && !result.gated && result.scores.is_none(),
            "{result:?}"
        );
    }

    #[test]
    fn boxes_are_scaled_to_the_frame_and_the_stage_filters() {
        let detection = |label: &str, score: f32| Detection {
            class_id: 1,
            label: label.to_owned(),
            score,
            box_norm: [0.25, 0.5, 0.75, 1.0],
        };
        let stage = DetectStage {
            min_score: 0.5,
            labels: vec!["person".to_owned()],
            max_detections: 2,
            ..DetectStage::default()
        };
        let kept = keep(
            &stage,
            vec![
                detection("person", 0.9),
                detection("car", 0.8),
                detection("person", 0.7),
                detection("person", 0.6),
                detection("person", 0.4),
            ],
            (640, 480),
        );
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0].box_pixels, [160.0, 240.0, 480.0, 480.0]);
        assert_eq!(kept[1].score, 0.7);
    }
}
