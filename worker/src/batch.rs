//! One batch, from Kafka messages to settled outcomes: validate each frame against its
//! channel, decode and score the valid ones on the device, and decide for every message
//! whether it yields a result or a dead letter. Pure computation, no I/O: it runs on a
//! blocking thread and is unit-testable.

use crate::decode::{DecodedFrame, decode_frame};
use crate::ops;
use crate::ops::{AnalysisSettings, FrameAnalysis, FrameInput, MotionState};
use candle_core::Device;
use framefleet_proto::v1::{Channel, FrameSchema};
use framefleet_proto::wire::{FrameHeaders, FrameResult, payload_checksum};
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

/// A consumed record, copied out of librdkafka's buffers.
#[derive(Debug, Clone)]
pub struct ConsumedFrame {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl ConsumedFrame {
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_slice())
    }

    /// A header as text; `None` when absent or not UTF-8.
    pub fn header_text(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|raw| std::str::from_utf8(raw).ok())
    }

    /// Where the record came from, as `topic/partition@offset`.
    pub fn source(&self) -> String {
        format!("{}/{}@{}", self.topic, self.partition, self.offset)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Result(FrameResult),
    DeadLetter { reason: String },
}

/// What the worker knows of channels: each channel as last listed, and every schema version
/// fetched so far. Versions never change once written, so they are cached for good.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub channels: HashMap<String, Channel>,
    /// channel id → version → schema; nested so a lookup by `&str` allocates nothing.
    pub schemas: HashMap<String, BTreeMap<u32, FrameSchema>>,
}

impl Catalog {
    pub fn from_channels(channels: impl IntoIterator<Item = Channel>) -> Self {
        let mut catalog = Self::default();
        for channel in channels {
            catalog.insert_channel(channel);
        }
        catalog
    }

    /// Records a channel and, for free, its current schema version.
    pub fn insert_channel(&mut self, channel: Channel) {
        if let Some(schema) = &channel.schema {
            self.schemas
                .entry(channel.channel_id.clone())
                .or_default()
                .insert(schema.version, *schema);
        }
        self.channels.insert(channel.channel_id.clone(), channel);
    }

    pub fn schema(&self, channel_id: &str, version: u32) -> Option<&FrameSchema> {
        self.schemas.get(channel_id)?.get(&version)
    }
}

/// Where the batch runs and who runs it.
pub struct BatchContext<'a> {
    pub device: &'a Device,
    pub worker_id: &'a str,
    pub max_payload_bytes: usize,
    pub analysis: AnalysisSettings,
}

/// Validates, decodes and analyses `frames`. Returns one outcome per frame, in input order.
/// `catalog` holds the channels and schema versions the coordinator told us of; `motion` holds each
/// channel's background model and is updated in stream order.
pub fn process_batch(
    frames: &[ConsumedFrame],
    catalog: &Catalog,
    context: &BatchContext<'_>,
    motion: &mut MotionState,
) -> Vec<Outcome> {
    let started = Instant::now();
    let mut outcomes: Vec<Option<Outcome>> = vec![None; frames.len()];
    let mut decoded: Vec<(usize, FrameHeaders, DecodedFrame)> = Vec::new();

    for (index, frame) in frames.iter().enumerate() {
        match validate_and_decode(frame, catalog, context.max_payload_bytes) {
            Ok((headers, pixels)) => decoded.push((index, headers, pixels)),
            Err(reason) => outcomes[index] = Some(Outcome::DeadLetter { reason }),
        }
    }

    // Frames of the same size share one tensor, whichever channel they come from.
    let mut by_size: BTreeMap<(usize, usize), Vec<usize>> = BTreeMap::new();
    for (position, (_, _, pixels)) in decoded.iter().enumerate() {
        by_size.entry((pixels.width, pixels.height)).or_default().push(position);
    }
    let mut analysed: Vec<(usize, FrameAnalysis)> = Vec::with_capacity(decoded.len());
    for positions in by_size.values() {
        let group: Vec<FrameInput<'_>> = positions
            .iter()
            .map(|&position| FrameInput {
                channel_id: &decoded[position].1.channel_id,
                pixels: &decoded[position].2,
            })
            .collect();
        match ops::analyse_batch(&group, motion, context.device, &context.analysis) {
            Ok(analyses) => analysed.extend(positions.iter().copied().zip(analyses)),
            Err(error) => {
                for &position in positions {
                    outcomes[decoded[position].0] = Some(Outcome::DeadLetter {
                        reason: format!("processing failed: {error}"),
                    });
                }
            }
        }
    }
    let processed_time_us = framefleet_common::startup::unix_time_us();
    let batch_compute_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    for (position, analysis) in analysed {
        let (index, headers, _) = &decoded[position];
        outcomes[*index] = Some(Outcome::Result(FrameResult {
            channel_id: headers.channel_id.clone(),
            sequence: headers.sequence,
            ingestor_epoch: headers.ingestor_epoch,
            schema_version: headers.schema_version,
            capture_time_us: headers.capture_time_us,
            processed_time_us,
            worker_id: context.worker_id.to_owned(),
            source_topic: frames[*index].topic.clone(),
            source_partition: frames[*index].partition,
            source_offset: frames[*index].offset,
            batch_size: u32::try_from(frames.len()).unwrap_or(u32::MAX),
            batch_compute_us,
            scores: analysis.scores,
            motion_box: analysis.motion_box,
        }));
    }

    outcomes
        .into_iter()
        .map(|outcome| {
            outcome.unwrap_or_else(|| Outcome::DeadLetter {
                reason: "internal: frame was neither processed nor rejected".to_owned(),
            })
        })
        .collect()
}

fn validate_and_decode(
    frame: &ConsumedFrame,
    catalog: &Catalog,
    max_payload_bytes: usize,
) -> Result<(FrameHeaders, DecodedFrame), String> {
    if frame.payload.len() > max_payload_bytes {
        return Err(format!(
            "payload of {} bytes exceeds the {max_payload_bytes}-byte limit",
            frame.payload.len()
        ));
    }
    let headers = FrameHeaders::parse(|name| frame.header(name)).map_err(|error| error.to_string())?;
    // The frame's topic is not checked against the channel's: after MoveChannel the frames
    // still in the old topics are valid and must be processed.
    let channel = catalog
        .channels
        .get(&headers.channel_id)
        .ok_or_else(|| format!("unknown channel `{}`", headers.channel_id))?;
    let schema = catalog
        .schema(&headers.channel_id, headers.schema_version)
        .ok_or_else(|| {
            let current = channel.schema.as_ref().map_or(0, |schema| schema.version);
            format!(
                "schema version {} of channel `{}` is unknown (current is {current})",
                headers.schema_version, headers.channel_id
            )
        })?;
    let actual_checksum = payload_checksum(&frame.payload);
    if actual_checksum != headers.checksum {
        return Err(format!(
            "checksum mismatch: header says {:08x}, payload is {actual_checksum:08x}",
            headers.checksum
        ));
    }
    let pixels = decode_frame(&frame.payload, schema).map_err(|error| error.to_string())?;
    Ok((headers, pixels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use framefleet_proto::v1::{FrameEncoding, FrameSchema, PixelFormat};

    const TOPIC: &str = "framefleet.frames.cam-1";

    fn channels() -> Catalog {
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

    fn frame(offset: i64, payload: Vec<u8>) -> ConsumedFrame {
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
            payload,
            headers: headers
                .to_pairs()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.into_bytes()))
                .collect(),
        }
    }

    fn run(frames: &[ConsumedFrame]) -> Vec<Outcome> {
        let context = BatchContext {
            device: &Device::Cpu,
            worker_id: "w1",
            max_payload_bytes: 1024,
            analysis: AnalysisSettings::default(),
        };
        process_batch(frames, &channels(), &context, &mut MotionState::default())
    }

    fn reason(outcome: &Outcome) -> &str {
        match outcome {
            Outcome::DeadLetter { reason } => reason,
            Outcome::Result(_) => panic!("expected a dead letter, got a result"),
        }
    }

    #[test]
    fn bad_frames_are_dead_lettered_and_good_ones_still_processed() {
        let good = frame(0, vec![128; 24]);
        let wrong_size = frame(1, vec![1; 10]);
        let mut tampered = frame(2, vec![7; 24]);
        tampered.payload[0] = 8;
        let mut no_headers = frame(3, vec![1; 24]);
        no_headers.headers.clear();
        let mut stranger = frame(4, vec![1; 24]);
        for (name, value) in &mut stranger.headers {
            if name == "ff-channel" {
                *value = b"cam-unknown".to_vec();
            }
        }
        let oversized = frame(5, vec![0; 2048]);
        let also_good = frame(6, vec![64; 24]);

        let outcomes = run(&[good, wrong_size, tampered, no_headers, stranger, oversized, also_good]);
        assert_eq!(outcomes.len(), 7);
        assert!(
            matches!(&outcomes[0], Outcome::Result(result) if result.source_offset == 0 && (result.scores.mean_luma - 128.0).abs() < 0.01)
        );
        assert!(
            reason(&outcomes[1]).contains("raw frame has 10 bytes"),
            "{}",
            reason(&outcomes[1])
        );
        assert!(reason(&outcomes[2]).contains("checksum"), "{}", reason(&outcomes[2]));
        assert!(reason(&outcomes[3]).contains("missing"), "{}", reason(&outcomes[3]));
        assert!(
            reason(&outcomes[4]).contains("unknown channel"),
            "{}",
            reason(&outcomes[4])
        );
        assert!(reason(&outcomes[5]).contains("exceeds"), "{}", reason(&outcomes[5]));
        assert!(matches!(&outcomes[6], Outcome::Result(result) if result.batch_size == 7 && result.worker_id == "w1"));
    }
}
