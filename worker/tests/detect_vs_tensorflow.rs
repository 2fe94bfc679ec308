//! The detector against an independent implementation: TensorFlow running the same frozen
//! graph (`loadtest/python/detect_reference.py`, the package's own `api.py` pipeline) on the
//! JPEG frames in `tests/fixtures/detection`, whose detections are committed beside them.
//! Here the frames go through the worker's own decode (libjpeg-turbo to RGB), the detector's
//! resize and the candle network. Every reference box scoring ≥ 0.3 must be found at IoU ≥ 0.9
//! with a score within 0.02, and framefleet must add no box above 0.3 that TensorFlow lacks.

use framefleet_detect::Detector;
use framefleet_detect::agreement::{Agreement, REFERENCE_TOLERANCE, scored_boxes};
use framefleet_worker::detect_reference::ReferenceSet;
use std::path::Path;

#[test]
fn detections_match_tensorflow_on_real_frames() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/detection");
    let reference = ReferenceSet::read(&fixtures).expect("reference.json (loadtest/python/detect_reference.py)");
    assert!(
        reference.frames.len() >= 40,
        "30 frames of vtest.avi and 10 of another clip"
    );
    let detector = Detector::load(
        &framefleet_test_support::detector_model_dir(),
        &candle_core::Device::Cpu,
    )
    .expect("the converted model loads");
    let mut agreement = Agreement::default();
    // Batches of 8, as a worker runs them: frames of a batch must not influence each other.
    for chunk in reference.frames.chunks(8) {
        let prepared: Vec<_> = chunk
            .iter()
            .map(|frame| {
                let image = reference.decode(frame).expect("fixture decodes");
                detector.prepare(image.as_frame()).expect("prepare")
            })
            .collect();
        let results = detector.detect(&prepared).expect("inference");
        for (frame, detections) in chunk.iter().zip(&results) {
            let theirs: Vec<(f32, [f32; 4])> = frame.detections.iter().map(|d| d.scored_box()).collect();
            agreement.add(&frame.file, &theirs, &scored_boxes(detections), REFERENCE_TOLERANCE);
        }
    }
    eprintln!(
        "{} reference boxes >= {} compared; worst IoU {:?}, largest |dscore| {}",
        agreement.compared, REFERENCE_TOLERANCE.min_score, agreement.min_iou, agreement.max_score_difference
    );
    assert!(
        agreement.compared >= 60,
        "the reference has {} boxes: too few to mean anything",
        agreement.compared
    );
    assert!(
        agreement.problems.is_empty(),
        "{} differences from TensorFlow {} over {} reference boxes:\n{}",
        agreement.problems.len(),
        reference.tensorflow,
        agreement.compared,
        agreement.problems.join("\n")
    );
}
