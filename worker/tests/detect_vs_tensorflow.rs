//! The detector against an independent implementation: TensorFlow running the same frozen
//! graph (`loadtest/python/detect_reference.py`, the package's own `api.py` pipeline) on the
//! JPEG frames in `tests/fixtures/detection`, whose detections are committed beside them.
//! Here the frames go through the worker's own decode (libjpeg-turbo to RGB), the detector's
//! resize and the candle network. Every reference box scoring ≥ 0.3 must be found at IoU ≥ 0.9
//! with a score within 0.02, and framefleet must add no box above 0.3 that TensorFlow lacks.

use framefleet_detect::{Detection, Detector};
use framefleet_proto::v1::{FrameEncoding, FrameSchema, PixelFormat};
use framefleet_worker::detect_input::decode_rgb;
use std::path::Path;

const MIN_SCORE: f32 = 0.3;
const MIN_IOU: f32 = 0.9;
const MAX_SCORE_DIFFERENCE: f32 = 0.02;

#[derive(serde::Deserialize)]
struct Reference {
    tensorflow: String,
    frames: Vec<ReferenceFrame>,
}

#[derive(serde::Deserialize)]
struct ReferenceFrame {
    file: String,
    width: u32,
    height: u32,
    detections: Vec<ReferenceDetection>,
}

#[derive(serde::Deserialize)]
struct ReferenceDetection {
    score: f32,
    /// `[ymin, xmin, ymax, xmax]`, normalised (TensorFlow's order).
    #[serde(rename = "box")]
    box_yx: [f32; 4],
}

/// IoU of two `[x1, y1, x2, y2]` boxes.
fn iou(a: [f32; 4], b: [f32; 4]) -> f32 {
    let width = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let height = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let intersection = width * height;
    let area = |r: [f32; 4]| (r[2] - r[0]) * (r[3] - r[1]);
    intersection / (area(a) + area(b) - intersection)
}

/// The worst agreement seen over matched boxes: (smallest IoU, largest score difference).
#[derive(Debug, Default)]
struct Agreement {
    min_iou: Option<f32>,
    max_score_difference: f32,
}

fn compare(
    frame: &str,
    reference: &[ReferenceDetection],
    ours: &[Detection],
    agreement: &mut Agreement,
) -> Vec<String> {
    let mut problems = Vec::new();
    let theirs: Vec<(f32, [f32; 4])> = reference
        .iter()
        .map(|d| (d.score, [d.box_yx[1], d.box_yx[0], d.box_yx[3], d.box_yx[2]]))
        .collect();
    for (score, boxed) in theirs.iter().filter(|(score, _)| *score >= MIN_SCORE) {
        let best = ours
            .iter()
            .map(|d| (iou(d.box_norm, *boxed), d.score))
            .max_by(|a, b| a.0.total_cmp(&b.0));
        match best {
            Some((overlap, found)) if overlap >= MIN_IOU && (found - score).abs() <= MAX_SCORE_DIFFERENCE => {
                agreement.min_iou = Some(agreement.min_iou.map_or(overlap, |min| min.min(overlap)));
                agreement.max_score_difference = agreement.max_score_difference.max((found - score).abs());
            }
            Some((overlap, found)) => problems.push(format!(
                "{frame}: TF box {boxed:?} score {score:.4}: best match IoU {overlap:.3}, score {found:.4}"
            )),
            None => problems.push(format!("{frame}: TF box {boxed:?} score {score:.4} not found")),
        }
    }
    for detection in ours.iter().filter(|d| d.score > MIN_SCORE) {
        // Ours above 0.3 must be one of theirs (theirs may sit just under 0.3: matched at any
        // score the reference kept, and the score check above bounds the difference).
        let matched = theirs.iter().any(|(score, boxed)| {
            iou(detection.box_norm, *boxed) >= MIN_IOU && (score - detection.score).abs() <= MAX_SCORE_DIFFERENCE
        });
        if !matched {
            problems.push(format!(
                "{frame}: framefleet adds {:?} score {:.4}, TensorFlow has no such box",
                detection.box_norm, detection.score
            ));
        }
    }
    problems
}

#[test]
fn detections_match_tensorflow_on_real_frames() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/detection");
    let reference: Reference = serde_json::from_slice(
        &std::fs::read(fixtures.join("reference.json")).expect("reference.json (loadtest/python/detect_reference.py)"),
    )
    .expect("reference.json parses");
    assert!(
        reference.frames.len() >= 40,
        "30 frames of vtest.avi and 10 of another clip"
    );
    let detector = Detector::load(
        &framefleet_test_support::detector_model_dir(),
        &candle_core::Device::Cpu,
    )
    .expect("the converted model loads");
    let mut problems = Vec::new();
    let mut compared = 0;
    let mut agreement = Agreement::default();
    // Batches of 8, as a worker runs them: frames of a batch must not influence each other.
    for chunk in reference.frames.chunks(8) {
        let prepared: Vec<_> = chunk
            .iter()
            .map(|frame| {
                let payload = std::fs::read(fixtures.join(&frame.file)).expect("fixture frame");
                let schema = FrameSchema {
                    version: 1,
                    width: frame.width,
                    height: frame.height,
                    channels: 3,
                    pixel_format: PixelFormat::Rgb24.into(),
                    encoding: FrameEncoding::Jpeg.into(),
                    fps: 25.0,
                };
                let image = decode_rgb(&payload, &schema).expect("fixture decodes");
                detector.prepare(image.as_frame()).expect("prepare")
            })
            .collect();
        let results = detector.detect(&prepared).expect("inference");
        for (frame, detections) in chunk.iter().zip(&results) {
            compared += frame.detections.iter().filter(|d| d.score >= MIN_SCORE).count();
            problems.extend(compare(&frame.file, &frame.detections, detections, &mut agreement));
        }
    }
    eprintln!("{compared} reference boxes ≥ {MIN_SCORE} matched; worst agreement {agreement:?}");
    assert!(
        compared >= 60,
        "the reference has {compared} boxes ≥ {MIN_SCORE}: too few to mean anything"
    );
    assert!(
        problems.is_empty(),
        "{} differences from TensorFlow {} over {compared} reference boxes:\n{}",
        problems.len(),
        reference.tensorflow,
        problems.join("\n")
    );
}
