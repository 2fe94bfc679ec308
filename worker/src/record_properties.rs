//! Property test of the record path: from an arbitrary Kafka record (key, value, headers) to
//! an outcome. Whatever another client writes into a frames topic, the worker must not panic,
//! must give every record exactly one outcome, and every dead letter must carry a code and
//! fit in a record. Inputs are built around valid frames and then damaged, so that every
//! check of the contract is reached, not only the first one.

use crate::catalog::Catalog;
use crate::compute::{BatchContext, Outcome, process_batch};
use crate::ops::{AnalysisSettings, MotionState};
use crate::record::ConsumedFrame;
use crate::sink::DeadLetter;
use candle_core::Device;
use framefleet_proto::v1::{Channel, DeadLetterCode, FrameEncoding, FrameSchema, PixelFormat};
use framefleet_proto::wire::{self, FrameHeaders};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

const RAW_CHANNEL: &str = "cam-raw";
const JPEG_CHANNEL: &str = "cam-jpeg";
const MAX_PAYLOAD_BYTES: usize = 4096;

fn catalog() -> Catalog {
    let channel = |id: &str, encoding: FrameEncoding, width, height| Channel {
        channel_id: id.to_owned(),
        topic: format!("framefleet.frames.{id}"),
        schema: Some(FrameSchema {
            version: 1,
            width,
            height,
            channels: 3,
            pixel_format: PixelFormat::Rgb24.into(),
            encoding: encoding.into(),
            fps: 10.0,
        }),
        ..Channel::default()
    };
    Catalog::from_channels([
        channel(RAW_CHANNEL, FrameEncoding::Raw, 4, 2),
        channel(JPEG_CHANNEL, FrameEncoding::Jpeg, 16, 8),
    ])
}

fn jpeg_16x8() -> Vec<u8> {
    let pixels: Vec<u8> = (0..16 * 8 * 3).map(|index| (index * 7 % 256) as u8).collect();
    let image = turbojpeg::Image {
        pixels: pixels.as_slice(),
        width: 16,
        pitch: 16 * 3,
        height: 8,
        format: turbojpeg::PixelFormat::RGB,
    };
    turbojpeg::compress(image, 90, turbojpeg::Subsamp::Sub2x2)
        .expect("encode")
        .to_vec()
}

/// How a generated record departs from a valid frame.
#[derive(Debug, Clone)]
enum Damage {
    None,
    DropHeader(usize),
    RepeatHeaderWith(usize, Vec<u8>),
    NullHeader(usize),
    ReplaceHeader(usize, Vec<u8>),
    ExtraHeader(String, Option<Vec<u8>>),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        2 => Just(Damage::None),
        1 => (0..7_usize).prop_map(Damage::DropHeader),
        1 => (0..7_usize, prop::collection::vec(any::<u8>(), 0..12)).prop_map(|(index, value)| Damage::RepeatHeaderWith(index, value)),
        1 => (0..7_usize).prop_map(Damage::NullHeader),
        1 => (0..7_usize, prop::collection::vec(any::<u8>(), 0..24)).prop_map(|(index, value)| Damage::ReplaceHeader(index, value)),
        1 => ("[a-z-]{0,12}", prop::option::of(prop::collection::vec(any::<u8>(), 0..24))).prop_map(|(name, value)| Damage::ExtraHeader(name, value)),
    ]
}

/// What the record's value is.
#[derive(Debug, Clone)]
enum Value {
    Null,
    Valid,
    /// The valid payload cut at this fraction (per mille) of its length.
    Cut(u16),
    /// The valid payload with one byte changed.
    Flipped(usize, u8),
    Random(Vec<u8>),
    /// Larger than the worker's limit.
    Oversized,
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        1 => Just(Value::Null),
        4 => Just(Value::Valid),
        2 => (0..1000_u16).prop_map(Value::Cut),
        2 => (any::<usize>(), 1..=255_u8).prop_map(|(at, xor)| Value::Flipped(at, xor)),
        1 => prop::collection::vec(any::<u8>(), 0..300).prop_map(Value::Random),
        1 => Just(Value::Oversized),
    ]
}

#[derive(Debug, Clone)]
struct RecordInput {
    jpeg: bool,
    channel: Option<String>,
    key: Option<Option<Vec<u8>>>,
    value: Value,
    checksum_of_value: bool,
    damage: Vec<Damage>,
}

fn record_input() -> impl Strategy<Value = RecordInput> {
    (
        any::<bool>(),
        prop::option::weighted(0.2, "[a-z0-9._-]{0,10}"),
        prop::option::weighted(0.3, prop::option::of(prop::collection::vec(any::<u8>(), 0..16))),
        value(),
        prop::bool::weighted(0.8),
        prop::collection::vec(damage(), 0..3),
    )
        .prop_map(|(jpeg, channel, key, value, checksum_of_value, damage)| RecordInput {
            jpeg,
            channel,
            key,
            value,
            checksum_of_value,
            damage,
        })
}

fn build(input: &RecordInput, offset: i64, jpeg: &[u8]) -> ConsumedFrame {
    let channel_id = input
        .channel
        .clone()
        .unwrap_or_else(|| if input.jpeg { JPEG_CHANNEL } else { RAW_CHANNEL }.to_owned());
    let valid: Vec<u8> = if input.jpeg { jpeg.to_vec() } else { vec![90; 24] };
    let payload = match &input.value {
        Value::Null => None,
        Value::Valid => Some(valid),
        Value::Cut(per_mille) => Some(valid[..valid.len() * usize::from(*per_mille) / 1000].to_vec()),
        Value::Flipped(at, xor) => {
            let mut flipped = valid;
            let at = at % flipped.len();
            flipped[at] ^= xor;
            Some(flipped)
        }
        Value::Random(bytes) => Some(bytes.clone()),
        Value::Oversized => Some(vec![1; MAX_PAYLOAD_BYTES + 1]),
    };
    let headers = FrameHeaders {
        channel_id: channel_id.clone(),
        schema_version: 1,
        sequence: offset as u64,
        ingestor_epoch: 1,
        capture_time_us: 7,
        checksum: if input.checksum_of_value {
            wire::payload_checksum(payload.as_deref().unwrap_or_default())
        } else {
            0x0bad_f00d
        },
        traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned()),
    };
    let mut pairs: Vec<(String, Option<Vec<u8>>)> = headers
        .to_pairs()
        .into_iter()
        .map(|(name, value)| (name.to_owned(), Some(value.into_bytes())))
        .collect();
    for damage in &input.damage {
        let len = pairs.len();
        match damage {
            Damage::None => {}
            Damage::DropHeader(index) => {
                pairs.remove(index % len);
            }
            Damage::RepeatHeaderWith(index, value) => {
                let name = pairs[index % len].0.clone();
                pairs.push((name, Some(value.clone())));
            }
            Damage::NullHeader(index) => pairs[index % len].1 = None,
            Damage::ReplaceHeader(index, value) => pairs[index % len].1 = Some(value.clone()),
            Damage::ExtraHeader(name, value) => pairs.push((name.clone(), value.clone())),
        }
        if pairs.is_empty() {
            break;
        }
    }
    ConsumedFrame {
        topic: "framefleet.frames.any".to_owned(),
        partition: 0,
        offset,
        key: match &input.key {
            None => Some(channel_id.into_bytes()),
            Some(key) => key.clone(),
        },
        payload,
        headers: pairs,
        timestamp_ms: Some(1_700_000_000_000),
        consumed_time_us: 1_700_000_000_100_000,
    }
}

#[test]
fn every_record_gets_a_result_or_a_coded_dead_letter_that_fits() {
    const CASES: u32 = 4000;
    let jpeg = jpeg_16x8();
    let catalog = catalog();
    let context = BatchContext {
        device: &Device::Cpu,
        worker_id: "w",
        max_payload_bytes: MAX_PAYLOAD_BYTES,
        analysis: AnalysisSettings::default(),
        processing: &crate::processing::ProcessingConfig::default(),
        pipeline: None,
        detector: None,
    };
    let mut runner = TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    });
    // The runner takes a `Fn`, so the tallies live in cells.
    let records = std::cell::Cell::new(0_usize);
    let results = std::cell::Cell::new(0_usize);
    let codes = std::cell::RefCell::new(std::collections::BTreeMap::<&'static str, usize>::new());
    runner
        .run(&prop::collection::vec(record_input(), 1..6), |inputs| {
            let frames: Vec<ConsumedFrame> = inputs
                .iter()
                .enumerate()
                .map(|(offset, input)| build(input, offset as i64, &jpeg))
                .collect();
            let outcomes = process_batch(&frames, &catalog, &context, &mut MotionState::default());
            prop_assert_eq!(outcomes.len(), frames.len());
            for (frame, outcome) in frames.iter().zip(&outcomes) {
                records.set(records.get() + 1);
                match outcome {
                    Outcome::Result(result) => {
                        results.set(results.get() + 1);
                        prop_assert_eq!(
                            frame.header_text(wire::HEADER_CHANNEL),
                            Some(result.channel_id.as_str())
                        );
                        prop_assert!(result.scores.is_some_and(|scores| scores.mean_luma.is_finite()));
                    }
                    Outcome::DeadLetter(rejection) => {
                        prop_assert_ne!(rejection.code, DeadLetterCode::Unspecified);
                        *codes.borrow_mut().entry(rejection.code.as_str_name()).or_default() += 1;
                        let budget = 2048;
                        let dead_letter = DeadLetter::new(frame, rejection, budget);
                        prop_assert!(dead_letter.size_bytes() <= budget, "{} bytes", dead_letter.size_bytes());
                    }
                }
            }
            Ok(())
        })
        .expect("property");
    let (records, results, codes) = (records.get(), results.get(), codes.into_inner());
    eprintln!("record path: {CASES} batches, {records} records, {results} results, dead letters by code: {codes:?}");
    // The generator reaches both ends of the path.
    assert!(results > 0, "no generated record was valid");
    for code in [
        DeadLetterCode::NullValue,
        DeadLetterCode::PayloadTooLarge,
        DeadLetterCode::MissingHeader,
        DeadLetterCode::AmbiguousHeader,
        DeadLetterCode::KeyMismatch,
        DeadLetterCode::UnknownChannel,
        DeadLetterCode::ChecksumMismatch,
        DeadLetterCode::CorruptImage,
        DeadLetterCode::TruncatedImage,
        DeadLetterCode::SizeMismatch,
    ] {
        assert!(
            codes.contains_key(code.as_str_name()),
            "never reached {code:?}: {codes:?}"
        );
    }
}
