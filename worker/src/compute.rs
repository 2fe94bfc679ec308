//! One batch, from consumed records to outcomes: validate and stage every record on the
//! compute pool in parallel, analyse the staged frames (each channel's in stream order), and
//! decide for every record whether it yields a result or a dead letter. Pure computation,
//! no I/O: it runs on a blocking thread and is unit-testable.

use crate::catalog::Catalog;
use crate::detect_stage::{self, DetectRequest, StageOutcome};
use crate::ops::{self, AnalysisSettings, FrameInput, MotionState, StagedFrame};
use crate::processing::{ProcessingConfig, Skip};
use crate::record::{ConsumedFrame, Rejection, validate_and_stage};
use candle_core::Device;
use framefleet_detect::Detector;
use framefleet_proto::v1::DeadLetterCode;
use framefleet_proto::wire::{FrameHeaders, FrameResult, ModelRef};
use rayon::prelude::*;
use std::time::Instant;

/// A record checked (and staged for analysis when its channel runs one), or why it cannot be.
type Staged = Result<(FrameHeaders, Option<StagedFrame>), Rejection>;

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Boxed: a result is several hundred bytes, a dead letter a few dozen.
    Result(Box<FrameResult>),
    DeadLetter(Rejection),
}

/// Where the batch runs and who runs it.
pub struct BatchContext<'a> {
    pub device: &'a Device,
    pub worker_id: &'a str,
    pub max_payload_bytes: usize,
    pub analysis: AnalysisSettings,
    /// Each channel's stages after the analysis.
    pub processing: &'a ProcessingConfig,
    /// The pipeline version these stages are, named in every result; `None` for a worker
    /// serving no pipeline.
    pub pipeline: Option<&'a crate::stages::ServedVersion>,
    /// The model of the detect stages, when the worker has one.
    pub detector: Option<&'a Detector>,
}

/// Validates, decodes and analyses `frames` on the current rayon pool. Returns one outcome
/// per frame, in input order. `catalog` holds the channels and schema versions the
/// coordinator told us of; `motion` holds each channel's background model and is updated in
/// stream order.
pub fn process_batch(
    frames: &[ConsumedFrame],
    catalog: &Catalog,
    context: &BatchContext<'_>,
    motion: &mut MotionState,
) -> Vec<Outcome> {
    let started = Instant::now();
    let staged: Vec<(Staged, u64)> = frames
        .par_iter()
        .map(|frame| {
            let started = Instant::now();
            let staged = validate_and_stage(
                frame,
                catalog,
                context.max_payload_bytes,
                context.analysis.max_side,
                |channel| context.processing.for_channel(channel).analysis,
            );
            (staged, u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX))
        })
        .collect();
    let mut outcomes: Vec<Option<Outcome>> = vec![None; frames.len()];
    // Every valid frame: its index, headers and, when its channel runs the analysis, the
    // staged luma.
    let mut analysable: Vec<(usize, &FrameHeaders, Option<&StagedFrame>)> = Vec::with_capacity(frames.len());
    for (index, (staged, _)) in staged.iter().enumerate() {
        match staged {
            Ok((headers, frame)) => analysable.push((index, headers, frame.as_ref())),
            Err(rejection) => outcomes[index] = Some(Outcome::DeadLetter(rejection.clone())),
        }
    }
    let inputs: Vec<FrameInput<'_>> = analysable
        .iter()
        .filter_map(|(_, headers, frame)| {
            frame.map(|frame| FrameInput {
                channel_id: &headers.channel_id,
                frame,
            })
        })
        .collect();
    let analyses = if inputs.is_empty() {
        Ok(Vec::new())
    } else {
        ops::analyse_batch(&inputs, motion, context.device, &context.analysis)
    };
    let analyses = analyses.map(|analyses| {
        // Each valid frame's analysis, None where its channel runs none.
        let mut analysed = analyses.into_iter();
        let analyses: Vec<_> = analysable
            .iter()
            .map(|(_, _, frame)| frame.and_then(|_| analysed.next()))
            .collect();
        let requests: Vec<DetectRequest<'_>> = analysable
            .iter()
            .zip(&analyses)
            .map(|((index, headers, _), analysis)| DetectRequest {
                frame: &frames[*index],
                headers,
                moved: analysis.as_ref().is_some_and(|analysis| analysis.motion_box.is_some()),
            })
            .collect();
        let detected = detect_stage::run(&requests, catalog, context.processing, context.detector);
        (analyses, detected)
    });
    let model = context.detector.map(|detector| ModelRef {
        name: detector.manifest().name.clone(),
        sha256: detector.manifest().sha256.clone(),
    });
    let processed_time_us = framefleet_common::startup::unix_time_us();
    let batch_compute_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    match analyses {
        Ok((analyses, detected)) => {
            for (((index, headers, _), analysis), detection) in analysable.iter().zip(analyses).zip(detected) {
                let frame = &frames[*index];
                let (detections, detector_ran, gated, has_stage) = match detection {
                    StageOutcome::Failed(rejection) => {
                        outcomes[*index] = Some(Outcome::DeadLetter(rejection));
                        continue;
                    }
                    StageOutcome::NoStage => (Vec::new(), false, false, false),
                    StageOutcome::Skipped(skip) => (Vec::new(), false, skip == Skip::Gated, true),
                    StageOutcome::Detected(detections) => (detections, true, false, true),
                };
                outcomes[*index] = Some(Outcome::Result(Box::new(FrameResult {
                    channel_id: headers.channel_id.clone(),
                    sequence: headers.sequence,
                    ingestor_epoch: headers.ingestor_epoch,
                    schema_version: headers.schema_version,
                    capture_time_us: headers.capture_time_us,
                    processed_time_us,
                    produced_time_us: frame.timestamp_ms.map(|ms| ms.saturating_mul(1000)),
                    consumed_time_us: frame.consumed_time_us,
                    decode_us: staged[*index].1,
                    worker_id: context.worker_id.to_owned(),
                    source_topic: frame.topic.clone(),
                    source_partition: frame.partition,
                    source_offset: frame.offset,
                    batch_size: u32::try_from(frames.len()).unwrap_or(u32::MAX),
                    batch_compute_us,
                    scores: analysis.as_ref().map(|analysis| analysis.scores),
                    motion_box: analysis.and_then(|analysis| analysis.motion_box),
                    detections,
                    model: if has_stage { model.clone() } else { None },
                    detector_ran,
                    gated,
                    pipeline: context.pipeline.map(|served| served.name.clone()),
                    pipeline_version: context.pipeline.map(|served| served.version),
                })));
            }
        }
        Err(error) => {
            for (index, _, _) in &analysable {
                outcomes[*index] = Some(Outcome::DeadLetter(Rejection::new(
                    DeadLetterCode::ProcessingFailed,
                    format!("processing failed: {error}"),
                )));
            }
        }
    }

    outcomes
        .into_iter()
        .map(|outcome| {
            outcome.unwrap_or_else(|| {
                Outcome::DeadLetter(Rejection::new(
                    DeadLetterCode::ProcessingFailed,
                    "internal: frame was neither processed nor rejected",
                ))
            })
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::catalog::Catalog;
    use crate::ops::MotionState;
    use framefleet_proto::v1::{Channel, FrameEncoding, FrameSchema, PixelFormat};
    use framefleet_proto::wire::{FrameHeaders, payload_checksum};

    const TOPIC: &str = "framefleet.frames.cam-1";

    /// A catalog of one channel, `cam-1`: 4×2 raw RGB frames.
    pub(crate) fn channels() -> Catalog {
        let channel = Channel {
            channel_id: "cam-1".to_owned(),
            topic: TOPIC.to_owned(),
            schema: Some(FrameSchema {
                version: 1,
                width: 4,
                height: 2,
                channels: 3,
                pixel_format: PixelFormat::Rgb24.into(),
                encoding: FrameEncoding::Raw.into(),
                fps: 10.0,
            }),
            ..Channel::default()
        };
        Catalog::from_channels([channel])
    }

    /// A well-formed record of `cam-1` at `offset` (its sequence number too).
    pub(crate) fn frame(offset: i64, payload: Vec<u8>) -> ConsumedFrame {
        let headers = FrameHeaders {
            channel_id: "cam-1".to_owned(),
            schema_version: 1,
            sequence: offset as u64,
            ingestor_epoch: 1,
            capture_time_us: 5,
            checksum: payload_checksum(&payload),
            traceparent: None,
        };
        ConsumedFrame {
            topic: TOPIC.to_owned(),
            partition: 0,
            offset,
            key: Some(b"cam-1".to_vec()),
            payload: Some(payload),
            headers: headers
                .to_pairs()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), Some(v.into_bytes())))
                .collect(),
            timestamp_ms: Some(1_700_000_000_000),
            consumed_time_us: 1_700_000_000_050_000,
        }
    }

    fn run(frames: &[ConsumedFrame]) -> Vec<Outcome> {
        let context = BatchContext {
            device: &Device::Cpu,
            worker_id: "w1",
            max_payload_bytes: 1024,
            analysis: AnalysisSettings::default(),
            processing: &ProcessingConfig::default(),
            pipeline: None,
            detector: None,
        };
        process_batch(frames, &channels(), &context, &mut MotionState::default())
    }

    /// The dead-letter code of `outcome` (panics on a result).
    pub(crate) fn code(outcome: &Outcome) -> DeadLetterCode {
        match outcome {
            Outcome::DeadLetter(rejection) => rejection.code,
            Outcome::Result(_) => panic!("expected a dead letter, got a result"),
        }
    }

    fn with_header(mut frame: ConsumedFrame, name: &str, value: Option<&[u8]>) -> ConsumedFrame {
        frame.headers.push((name.to_owned(), value.map(<[u8]>::to_vec)));
        frame
    }

    #[test]
    fn bad_frames_are_dead_lettered_with_their_code_and_good_ones_still_processed() {
        use framefleet_proto::wire::{HEADER_CHANNEL, HEADER_SEQUENCE};
        let good = frame(0, vec![128; 24]);
        let mut tampered = frame(2, vec![7; 24]);
        if let Some(payload) = tampered.payload.as_mut() {
            payload[0] = 8;
        }
        let mut no_headers = frame(3, vec![1; 24]);
        no_headers.headers.clear();
        let mut stranger = frame(4, vec![1; 24]);
        for (name, value) in &mut stranger.headers {
            if name == HEADER_CHANNEL {
                *value = Some(b"cam-unknown".to_vec());
            }
        }
        stranger.key = Some(b"cam-unknown".to_vec());
        let mut tombstone = frame(7, Vec::new());
        tombstone.payload = None;
        let mut wrong_key = frame(10, vec![1; 24]);
        wrong_key.key = Some(b"cam-2".to_vec());
        let mut no_key = frame(11, vec![32; 24]);
        no_key.key = None;
        let cases: Vec<(ConsumedFrame, Option<DeadLetterCode>)> = vec![
            (good, None),
            (frame(1, vec![1; 10]), Some(DeadLetterCode::SizeMismatch)),
            (tampered, Some(DeadLetterCode::ChecksumMismatch)),
            (no_headers, Some(DeadLetterCode::MissingHeader)),
            (stranger, Some(DeadLetterCode::UnknownChannel)),
            (frame(5, vec![0; 2048]), Some(DeadLetterCode::PayloadTooLarge)),
            (frame(6, Vec::new()), Some(DeadLetterCode::EmptyPayload)),
            (tombstone, Some(DeadLetterCode::NullValue)),
            (
                with_header(frame(8, vec![1; 24]), HEADER_SEQUENCE, Some(b"99")),
                Some(DeadLetterCode::AmbiguousHeader),
            ),
            (
                with_header(frame(9, vec![1; 24]), HEADER_CHANNEL, None),
                Some(DeadLetterCode::AmbiguousHeader),
            ),
            (wrong_key, Some(DeadLetterCode::KeyMismatch)),
            (no_key, None),
            // The same header twice with the same value says one thing.
            (
                with_header(frame(12, vec![64; 24]), HEADER_CHANNEL, Some(b"cam-1")),
                None,
            ),
        ];
        let frames: Vec<ConsumedFrame> = cases.iter().map(|(frame, _)| frame.clone()).collect();
        let outcomes = run(&frames);
        assert_eq!(outcomes.len(), cases.len());
        for ((frame, expected), outcome) in cases.iter().zip(&outcomes) {
            match expected {
                Some(expected) => assert_eq!(code(outcome), *expected, "offset {}: {outcome:?}", frame.offset),
                None => assert!(
                    matches!(outcome, Outcome::Result(result) if result.source_offset == frame.offset && result.batch_size == cases.len() as u32 && result.worker_id == "w1"),
                    "offset {}: {outcome:?}",
                    frame.offset
                ),
            }
        }
        assert!(
            matches!(&outcomes[0], Outcome::Result(result) if result.scores.is_some_and(|scores| (scores.mean_luma - 128.0).abs() < 0.01)),
            "{:?}",
            outcomes[0]
        );
        // Each result carries its stage times.
        if let Outcome::Result(result) = &outcomes[0] {
            assert_eq!(result.produced_time_us, Some(1_700_000_000_000_000));
            assert_eq!(result.consumed_time_us, 1_700_000_000_050_000);
            assert!(result.decode_us <= result.batch_compute_us, "{result:?}");
        }
    }
}
