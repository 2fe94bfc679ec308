//! The frame record contract: a consumed Kafka record, and the checks that make it a frame
//! the worker may analyse (size limit, framefleet headers, a known channel and schema
//! version, the payload checksum) before it is decoded and staged. A record that fails any
//! of them is dead-lettered with the reason; it never stops the partition.

use crate::catalog::Catalog;
use crate::decode::{check_undecoded, stage_frame};
use crate::ops::StagedFrame;
use framefleet_proto::v1::DeadLetterCode;
use framefleet_proto::wire::{FrameHeaders, payload_checksum};
use rdkafka::message::{Headers, Message};

/// A consumed record, copied out of librdkafka's buffers. Null values (a tombstone, a header
/// written without a value) stay `None`, so a dead letter can give them back as they were.
#[derive(Debug, Clone)]
pub struct ConsumedFrame {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// The record's Kafka timestamp, unix ms.
    pub timestamp_ms: Option<i64>,
    /// When this worker took the record from its consumer, unix µs.
    pub consumed_time_us: i64,
}

impl ConsumedFrame {
    pub fn from_message(message: &impl Message) -> Self {
        let headers = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|header| (header.key.to_owned(), header.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        Self {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec),
            headers,
            timestamp_ms: message.timestamp().to_millis(),
            consumed_time_us: framefleet_common::startup::unix_time_us(),
        }
    }

    /// The payload's bytes; empty for a null value.
    pub fn payload_bytes(&self) -> &[u8] {
        self.payload.as_deref().unwrap_or_default()
    }

    /// The value of the first header called `name` (`None` when absent or null).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .and_then(|(_, value)| value.as_deref())
    }

    /// A header as text; `None` when absent, null or not UTF-8.
    pub fn header_text(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|raw| std::str::from_utf8(raw).ok())
    }

    /// Where the record came from, as `topic/partition@offset`.
    pub fn source(&self) -> String {
        format!("{}/{}@{}", self.topic, self.partition, self.offset)
    }

    /// Bytes of the record's headers (names and values).
    pub fn headers_size_bytes(&self) -> usize {
        self.headers
            .iter()
            .map(|(name, value)| name.len() + value.as_ref().map_or(0, Vec::len))
            .sum()
    }

    /// Bytes this record holds in memory (payload, key and headers).
    pub fn size_bytes(&self) -> usize {
        self.payload_bytes().len() + self.key.as_ref().map_or(0, Vec::len) + self.headers_size_bytes()
    }
}

/// Why a record cannot be processed: a stable code for machines and the details for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: DeadLetterCode,
    pub reason: String,
}

impl Rejection {
    pub fn new(code: DeadLetterCode, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.reason, self.code.as_str_name())
    }
}

/// Checks `frame` against the contract and, when `analysed` says its channel runs the
/// analysis, stages it for analysis at `max_side` (decoding it); a channel without the
/// analysis gets `None` and its frames are decoded by the stage that needs them. The error
/// says why it must be dead-lettered.
pub fn validate_and_stage(
    frame: &ConsumedFrame,
    catalog: &Catalog,
    max_payload_bytes: usize,
    max_side: usize,
    analysed: impl Fn(&str) -> bool,
) -> Result<(FrameHeaders, Option<StagedFrame>), Rejection> {
    let Some(payload) = frame.payload.as_deref() else {
        return Err(Rejection::new(
            DeadLetterCode::NullValue,
            "record has a null value (a tombstone?), not a frame",
        ));
    };
    if payload.len() > max_payload_bytes {
        return Err(Rejection::new(
            DeadLetterCode::PayloadTooLarge,
            format!(
                "payload of {} bytes exceeds the {max_payload_bytes}-byte limit",
                payload.len()
            ),
        ));
    }
    let headers = FrameHeaders::parse(
        frame
            .headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_deref())),
    )
    .map_err(|error| Rejection::new(error.code(), error.to_string()))?;
    // The key decides the partition, and so the order of a channel's frames: a record keyed
    // otherwise may be out of order with its channel's others, so it is not trusted. A record
    // without a key (another client's) is accepted; its result is keyed by the channel.
    if let Some(key) = &frame.key
        && key.as_slice() != headers.channel_id.as_bytes()
    {
        return Err(Rejection::new(
            DeadLetterCode::KeyMismatch,
            format!(
                "record key `{}` is not the channel `{}` named in its headers",
                String::from_utf8_lossy(key),
                headers.channel_id
            ),
        ));
    }
    // The frame's topic is not checked against the channel's: after MoveChannel the frames
    // still in the old topics are valid and must be processed.
    let channel = catalog.channels.get(&headers.channel_id).ok_or_else(|| {
        Rejection::new(
            DeadLetterCode::UnknownChannel,
            format!("unknown channel `{}`", headers.channel_id),
        )
    })?;
    let schema = catalog
        .schema(&headers.channel_id, headers.schema_version)
        .ok_or_else(|| {
            let current = channel.schema.as_ref().map_or(0, |schema| schema.version);
            Rejection::new(
                DeadLetterCode::UnknownSchemaVersion,
                format!(
                    "schema version {} of channel `{}` is unknown (current is {current})",
                    headers.schema_version, headers.channel_id
                ),
            )
        })?;
    let actual_checksum = payload_checksum(payload);
    if actual_checksum != headers.checksum {
        return Err(Rejection::new(
            DeadLetterCode::ChecksumMismatch,
            format!(
                "checksum mismatch: header says {:08x}, payload is {actual_checksum:08x}",
                headers.checksum
            ),
        ));
    }
    if !analysed(&headers.channel_id) {
        // Decoded, if at all, by the detect stage; what can be checked without a decode is.
        check_undecoded(payload, schema).map_err(|error| Rejection::new(error.code(), error.to_string()))?;
        return Ok((headers, None));
    }
    let staged =
        stage_frame(payload, schema, max_side).map_err(|error| Rejection::new(error.code(), error.to_string()))?;
    Ok((headers, Some(staged)))
}
