//! The frame record contract: a consumed Kafka record, and the checks that make it a frame
//! the worker may analyse (size limit, framefleet headers, a known channel and schema
//! version, the payload checksum) before it is decoded and staged. A record that fails any
//! of them is dead-lettered with the reason; it never stops the partition.

use crate::catalog::Catalog;
use crate::decode::stage_frame;
use crate::ops::StagedFrame;
use framefleet_proto::wire::{FrameHeaders, payload_checksum};
use rdkafka::message::{Headers, Message};

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
    pub fn from_message(message: &impl Message) -> Self {
        let headers = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|header| {
                        (
                            header.key.to_owned(),
                            header.value.map(<[u8]>::to_vec).unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            headers,
        }
    }

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

    /// Bytes this record holds in memory (payload, key and headers).
    pub fn size_bytes(&self) -> usize {
        self.payload.len()
            + self.key.as_ref().map_or(0, Vec::len)
            + self
                .headers
                .iter()
                .map(|(name, value)| name.len() + value.len())
                .sum::<usize>()
    }
}

/// Checks `frame` against the contract and stages it for analysis at `max_side`. The error is
/// the dead-letter reason.
pub fn validate_and_stage(
    frame: &ConsumedFrame,
    catalog: &Catalog,
    max_payload_bytes: usize,
    max_side: usize,
) -> Result<(FrameHeaders, StagedFrame), String> {
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
    let staged = stage_frame(&frame.payload, schema, max_side).map_err(|error| error.to_string())?;
    Ok((headers, staged))
}
