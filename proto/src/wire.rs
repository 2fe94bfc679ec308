//! The Kafka record formats.
//!
//! A frame is one record: key = channel id (so a channel's frames stay ordered in one
//! partition), value = the payload alone (raw pixels or a JPEG/PNG image), metadata in
//! headers. Header values are UTF-8 text so that any Kafka client (kcat, a Python consumer)
//! can read a frame without framefleet code. No Base64 and no JSON around pixels.
//!
//! Results are small JSON documents, one per processed frame, on the results topic.

use crate::v1::DeadLetterCode;
use serde::{Deserialize, Serialize};

pub const HEADER_CHANNEL: &str = "ff-channel";
pub const HEADER_SCHEMA_VERSION: &str = "ff-schema-version";
pub const HEADER_SEQUENCE: &str = "ff-seq";
pub const HEADER_INGESTOR_EPOCH: &str = "ff-epoch";
pub const HEADER_CAPTURE_TIME_US: &str = "ff-capture-us";
/// CRC-32C of the payload, 8 lowercase hex digits.
pub const HEADER_CHECKSUM: &str = "ff-crc32c";
/// W3C trace context, so one frame's capture → process → result is one trace.
pub const HEADER_TRACEPARENT: &str = "traceparent";

/// Why a dead letter was written: the [`DeadLetterCode`]'s proto name, stable and
/// machine-readable (filter and count on this one).
pub const HEADER_DEAD_LETTER_CODE: &str = "ff-dead-letter-code";
/// Why a dead letter was written, in words for people.
pub const HEADER_DEAD_LETTER_REASON: &str = "ff-dead-letter-reason";
/// Where a dead letter's record came from, as `topic/partition@offset`.
pub const HEADER_SOURCE: &str = "ff-source";
/// On a dead letter written by a worker serving a pipeline: the pipeline and its version, as
/// `name@version` (the dead-letter topic is shared; an audit of one pipeline counts its own).
pub const HEADER_PIPELINE: &str = "ff-pipeline";
/// Present when a dead letter carries no payload because the original would not fit in a
/// record: the original payload's size in bytes.
pub const HEADER_PAYLOAD_DROPPED_BYTES: &str = "ff-payload-dropped-bytes";
/// Present when a dead letter carries no key because the original would not fit in a
/// record: the original key's size in bytes.
pub const HEADER_KEY_DROPPED_BYTES: &str = "ff-key-dropped-bytes";
/// Present when a dead letter carries none of the original headers because they would not
/// fit in a record: their total size in bytes.
pub const HEADER_HEADERS_DROPPED_BYTES: &str = "ff-headers-dropped-bytes";

/// The headers [`FrameHeaders`] reads; each may appear at most once (or repeated with the
/// same value), since a frame whose metadata says two things is not trusted either way.
const FRAME_HEADER_NAMES: [&str; 7] = [
    HEADER_CHANNEL,
    HEADER_SCHEMA_VERSION,
    HEADER_SEQUENCE,
    HEADER_INGESTOR_EPOCH,
    HEADER_CAPTURE_TIME_US,
    HEADER_CHECKSUM,
    HEADER_TRACEPARENT,
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeaderError {
    #[error("frame header `{0}` is missing")]
    Missing(&'static str),
    #[error("frame header `{name}` is not valid: {detail}")]
    Invalid { name: &'static str, detail: String },
    #[error("frame header `{0}` appears more than once with different values")]
    Ambiguous(&'static str),
}

impl HeaderError {
    /// The dead-letter code of a frame whose headers fail this way.
    pub fn code(&self) -> DeadLetterCode {
        match self {
            Self::Missing(_) => DeadLetterCode::MissingHeader,
            Self::Invalid { .. } => DeadLetterCode::InvalidHeader,
            Self::Ambiguous(_) => DeadLetterCode::AmbiguousHeader,
        }
    }
}

/// Metadata that travels with every frame record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameHeaders {
    pub channel_id: String,
    pub schema_version: u32,
    /// Per-channel frame number, starting at 0 for each ingestor epoch.
    pub sequence: u64,
    /// Distinguishes restarts of the same channel's ingestor: (epoch, sequence) is unique.
    pub ingestor_epoch: u64,
    pub capture_time_us: i64,
    pub checksum: u32,
    pub traceparent: Option<String>,
}

impl FrameHeaders {
    /// Header name/value pairs in the order they are written.
    pub fn to_pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = vec![
            (HEADER_CHANNEL, self.channel_id.clone()),
            (HEADER_SCHEMA_VERSION, self.schema_version.to_string()),
            (HEADER_SEQUENCE, self.sequence.to_string()),
            (HEADER_INGESTOR_EPOCH, self.ingestor_epoch.to_string()),
            (HEADER_CAPTURE_TIME_US, self.capture_time_us.to_string()),
            (HEADER_CHECKSUM, format_checksum(self.checksum)),
        ];
        if let Some(traceparent) = &self.traceparent {
            pairs.push((HEADER_TRACEPARENT, traceparent.clone()));
        }
        pairs
    }

    /// Parses a record's headers, given in record order as (name, value) with `None` for a
    /// null value. Everything here comes from outside the process, so nothing is trusted:
    /// a framefleet header repeated with different values is [`HeaderError::Ambiguous`]
    /// (never "the first one wins"), a null one is invalid. Other headers are ignored.
    pub fn parse<'a>(headers: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>) -> Result<Self, HeaderError> {
        let mut values: [Option<Option<&'a [u8]>>; FRAME_HEADER_NAMES.len()] = [None; FRAME_HEADER_NAMES.len()];
        for (name, value) in headers {
            let Some(slot) = FRAME_HEADER_NAMES.iter().position(|known| *known == name) else {
                continue;
            };
            match values[slot] {
                Some(seen) if seen != value => return Err(HeaderError::Ambiguous(FRAME_HEADER_NAMES[slot])),
                _ => values[slot] = Some(value),
            }
        }
        let lookup = |name: &'static str| -> Option<Option<&'a [u8]>> {
            FRAME_HEADER_NAMES
                .iter()
                .position(|known| *known == name)
                .and_then(|slot| values[slot])
        };
        let text = |name: &'static str| -> Result<&'a str, HeaderError> {
            let raw = lookup(name)
                .ok_or(HeaderError::Missing(name))?
                .ok_or_else(|| HeaderError::Invalid {
                    name,
                    detail: "null".to_owned(),
                })?;
            std::str::from_utf8(raw).map_err(|_| HeaderError::Invalid {
                name,
                detail: "not UTF-8".to_owned(),
            })
        };
        fn number<T: std::str::FromStr>(name: &'static str, value: &str) -> Result<T, HeaderError> {
            value.parse().map_err(|_| HeaderError::Invalid {
                name,
                detail: format!("`{value}` is not a number"),
            })
        }
        let channel_id = text(HEADER_CHANNEL)?.to_owned();
        if channel_id.is_empty() {
            return Err(HeaderError::Invalid {
                name: HEADER_CHANNEL,
                detail: "empty".to_owned(),
            });
        }
        let checksum_text = text(HEADER_CHECKSUM)?;
        let checksum = parse_checksum(checksum_text).ok_or_else(|| HeaderError::Invalid {
            name: HEADER_CHECKSUM,
            detail: format!("`{checksum_text}` is not 8 hex digits"),
        })?;
        Ok(Self {
            channel_id,
            schema_version: number(HEADER_SCHEMA_VERSION, text(HEADER_SCHEMA_VERSION)?)?,
            sequence: number(HEADER_SEQUENCE, text(HEADER_SEQUENCE)?)?,
            ingestor_epoch: number(HEADER_INGESTOR_EPOCH, text(HEADER_INGESTOR_EPOCH)?)?,
            capture_time_us: number(HEADER_CAPTURE_TIME_US, text(HEADER_CAPTURE_TIME_US)?)?,
            checksum,
            // Optional and only passed on, so an unusable one is dropped rather than fatal.
            traceparent: lookup(HEADER_TRACEPARENT)
                .flatten()
                .and_then(|raw| std::str::from_utf8(raw).ok())
                .map(str::to_owned),
        })
    }
}

pub fn payload_checksum(payload: &[u8]) -> u32 {
    crc32c::crc32c(payload)
}

pub fn format_checksum(checksum: u32) -> String {
    format!("{checksum:08x}")
}

pub fn parse_checksum(text: &str) -> Option<u32> {
    if text.len() != 8 {
        return None;
    }
    u32::from_str_radix(text, 16).ok()
}

/// One per processed frame, JSON-encoded on the results topic (key = channel id). The times
/// break a frame's latency down by stage: capture → produced → consumed → processed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameResult {
    pub channel_id: String,
    pub sequence: u64,
    pub ingestor_epoch: u64,
    pub schema_version: u32,
    pub capture_time_us: i64,
    /// When the worker finished computing this frame.
    pub processed_time_us: i64,
    /// The record's Kafka timestamp (the producer's create time: when the ingestor handed the
    /// frame to Kafka), unix µs; absent when the record has none.
    #[serde(default)]
    pub produced_time_us: Option<i64>,
    /// When the worker took the record from its consumer, unix µs.
    #[serde(default)]
    pub consumed_time_us: i64,
    /// Checks, decode and downscale of this frame alone, µs (the rest of `batch_compute_us`
    /// is the batch's analysis and its other frames).
    #[serde(default)]
    pub decode_us: u64,
    pub worker_id: String,
    /// Where the frame came from, so a result can be traced back to its record.
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
    pub batch_size: u32,
    /// Decode and analysis time of the frame's batch on the worker, in microseconds.
    pub batch_compute_us: u64,
    /// The analysis' statistics; absent when the frame's channel runs no analysis (a
    /// detect-only channel), and in results of other consumers (the load test's hand-written
    /// detection baseline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scores: Option<FrameScores>,
    /// The box around everything that moved against the channel's background model, in
    /// frame pixels; absent when nothing moved.
    pub motion_box: Option<MotionBox>,
    /// The objects the detector found at or above the channel's score threshold, best first;
    /// empty when it found none or did not run (see `detector_ran`, `gated`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub detections: Vec<DetectedObject>,
    /// The model of the channel's detect stage; absent when the channel has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelRef>,
    /// Whether the detector ran on this frame. With a `model` and neither this nor `gated`,
    /// the stage's every-Nth-frame setting skipped the frame.
    #[serde(default)]
    pub detector_ran: bool,
    /// The motion gate skipped the detector: the analysis saw no motion in this frame.
    #[serde(default)]
    pub gated: bool,
    /// The pipeline whose workers made this result; absent from a worker serving none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    /// The version of `pipeline` that made it: while a new version takes over, a frame
    /// processed twice (at-least-once) may have a result from each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_version: Option<u32>,
}

/// One detected object in a [`FrameResult`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectedObject {
    pub label: String,
    /// The model's class id (1-based; 0 is background in the Object Detection API's models).
    #[serde(default)]
    pub class_id: u32,
    /// Model confidence, 0–1.
    pub score: f32,
    /// `[x1, y1, x2, y2]` in the frame's pixels (its schema size), top-left origin.
    #[serde(rename = "box")]
    pub box_pixels: [f32; 4],
    /// The same box as fractions (0–1) of the frame's width and height.
    #[serde(default)]
    pub box_norm: [f32; 4],
}

/// Which model produced a result's detections.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelRef {
    pub name: String,
    /// SHA-256 of the model's weights file, as in its manifest.
    pub sha256: String,
}

/// Scores of one frame, computed on its luma at the worker's analysis size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct FrameScores {
    /// Mean luma of the blurred frame, 0–255.
    pub mean_luma: f32,
    /// Standard deviation of luma: near 0 for a covered or blank camera.
    pub contrast: f32,
    /// Mean absolute difference between the frame and its blur: low for defocused or
    /// covered cameras, high for sharp detailed scenes.
    pub sharpness: f32,
    /// Mean Sobel gradient magnitude of the blurred frame.
    pub edge_strength: f32,
    /// Fraction of pixels, 0–1, that differ from the channel's background model by more
    /// than the worker's motion threshold.
    pub motion: f32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MotionBox {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> FrameHeaders {
        FrameHeaders {
            channel_id: "cam-1".to_owned(),
            schema_version: 1,
            sequence: 42,
            ingestor_epoch: 7,
            capture_time_us: 1_700_000_000_000_000,
            checksum: payload_checksum(b"pixels"),
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned()),
        }
    }

    fn lookup_in<'a>(pairs: &'a [(&'static str, String)]) -> impl Iterator<Item = (&'a str, Option<&'a [u8]>)> {
        pairs.iter().map(|(name, value)| (*name, Some(value.as_bytes())))
    }

    #[test]
    fn headers_round_trip() {
        let headers = sample();
        let pairs = headers.to_pairs();
        assert_eq!(FrameHeaders::parse(lookup_in(&pairs)), Ok(headers));
    }

    #[test]
    fn missing_and_garbled_headers_are_named() {
        let mut pairs = sample().to_pairs();
        pairs.retain(|(name, _)| *name != HEADER_SEQUENCE);
        assert_eq!(
            FrameHeaders::parse(lookup_in(&pairs)),
            Err(HeaderError::Missing(HEADER_SEQUENCE))
        );

        let mut pairs = sample().to_pairs();
        for (name, value) in &mut pairs {
            if *name == HEADER_CHECKSUM {
                *value = "xyz".to_owned();
            }
        }
        assert!(matches!(
            FrameHeaders::parse(lookup_in(&pairs)),
            Err(HeaderError::Invalid {
                name: HEADER_CHECKSUM,
                ..
            })
        ));
    }

    #[test]
    fn repeated_headers_must_agree() {
        let mut pairs = sample().to_pairs();
        pairs.push((HEADER_CHANNEL, "cam-1".to_owned()));
        assert_eq!(
            FrameHeaders::parse(lookup_in(&pairs)),
            Ok(sample()),
            "same value twice is fine"
        );
        pairs.push((HEADER_SEQUENCE, "43".to_owned()));
        let error = FrameHeaders::parse(lookup_in(&pairs)).expect_err("two sequences");
        assert_eq!(error, HeaderError::Ambiguous(HEADER_SEQUENCE));
        assert_eq!(error.code(), DeadLetterCode::AmbiguousHeader);
        // Unrelated headers may repeat freely.
        let mut pairs = sample().to_pairs();
        pairs.push(("x-other", "1".to_owned()));
        pairs.push(("x-other", "2".to_owned()));
        assert!(FrameHeaders::parse(lookup_in(&pairs)).is_ok());
    }

    #[test]
    fn a_null_header_value_is_invalid_not_empty() {
        let pairs = sample().to_pairs();
        let headers = pairs.iter().map(|(name, value)| {
            let value = (*name != HEADER_CHECKSUM).then_some(value.as_bytes());
            (*name, value)
        });
        assert!(matches!(
            FrameHeaders::parse(headers),
            Err(HeaderError::Invalid { name: HEADER_CHECKSUM, ref detail }) if detail == "null"
        ));
    }

    #[test]
    fn checksum_text_is_fixed_width() {
        assert_eq!(format_checksum(0xab), "000000ab");
        assert_eq!(parse_checksum("000000ab"), Some(0xab));
        assert_eq!(parse_checksum("ab"), None);
    }
}
