//! The stored form of channels and schemas. Records are JSON in etcd, so `etcdctl get` is
//! readable; field names are part of the etcd format: rename with care. Fields added after the
//! first release default when absent, so records written by older coordinators still load.

use crate::error::CoordinatorError;
use crate::store::StoredValue;
use framefleet_proto::v1::{Channel, ChannelState, FrameEncoding, FrameSchema, PixelFormat, TopicStrategy};
use serde::{Deserialize, Serialize};

pub const CHANNEL_KEY_PREFIX: &str = "channels/";
pub const SCHEMA_KEY_PREFIX: &str = "schemas/";

/// `assigned_by` of a channel its own ingestor claimed by registering it (rather than a
/// leader assigning it).
pub(crate) const CLAIMED_BY_REGISTRATION: &str = "registration";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelRecord {
    pub channel_id: String,
    pub source_uri: String,
    /// The current (newest) schema version.
    pub schema: SchemaRecord,
    /// The first of `topics`.
    pub topic: String,
    pub created_unix_ms: i64,
    #[serde(default)]
    pub topics: Vec<String>,
    #[serde(default = "dedicated")]
    pub topic_strategy: String,
    #[serde(default)]
    pub pipelines: Vec<String>,
    #[serde(default = "active")]
    pub state: String,
    #[serde(default)]
    pub declared_bytes_per_second: u64,
    /// The ingestor that captures the channel; written only by the leading coordinator.
    #[serde(default)]
    pub ingestor_id: String,
    /// `<coordinator id>@<leader term>` of the leader that wrote `ingestor_id`.
    #[serde(default)]
    pub assigned_by: String,
    #[serde(default)]
    pub updated_unix_ms: i64,
    #[serde(default)]
    pub drain: Option<DrainRecord>,
    /// Set by the leader when the channel's source ended (a file read to its end, as its
    /// stored ledger says) and its ingestor is gone: it is not assigned again — another
    /// ingestor would replay the file — until the channel is updated or claimed.
    #[serde(default)]
    pub ended_unix_ms: Option<i64>,
    /// Set by the leader once the worker group has committed every frame of an ended
    /// channel's topics; workers then stop subscribing to them. Cleared with `ended_unix_ms`.
    #[serde(default)]
    pub drained_unix_ms: Option<i64>,
    /// The ingestor the channel was registered for; never changes. Records from before this
    /// field: see [`ChannelRecord::owner`].
    #[serde(default)]
    pub owner: String,
}

fn dedicated() -> String {
    TopicStrategy::Dedicated.as_str_name().to_owned()
}

fn active() -> String {
    ChannelState::Active.as_str_name().to_owned()
}

/// Progress of a deregistration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrainRecord {
    pub started_unix_ms: i64,
    /// High watermarks (topic, partition, offset) taken once capture had stopped: the channel
    /// is drained when the worker group has committed up to each of them.
    #[serde(default)]
    pub marks: Option<Vec<(String, i32, i64)>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaRecord {
    pub version: u32,
    pub width: u32,
    pub height: u32,
    pub channels: u32,
    pub pixel_format: String,
    pub encoding: String,
    pub fps: f64,
}

impl SchemaRecord {
    pub fn to_proto(&self) -> FrameSchema {
        FrameSchema {
            version: self.version,
            width: self.width,
            height: self.height,
            channels: self.channels,
            pixel_format: PixelFormat::from_str_name(&self.pixel_format)
                .unwrap_or(PixelFormat::Unspecified)
                .into(),
            encoding: FrameEncoding::from_str_name(&self.encoding)
                .unwrap_or(FrameEncoding::Unspecified)
                .into(),
            fps: self.fps,
        }
    }

    /// Same frames, regardless of version number.
    pub fn same_shape(&self, other: &Self) -> bool {
        self.same_frame_size(other)
            && (&self.pixel_format, &self.encoding) == (&other.pixel_format, &other.encoding)
            && self.fps.to_bits() == other.fps.to_bits()
    }

    /// Same decoded frame size: what workers and topic limits depend on.
    pub fn same_frame_size(&self, other: &Self) -> bool {
        (self.width, self.height, self.channels) == (other.width, other.height, other.channels)
    }

    pub fn raw_frame_bytes(&self) -> u64 {
        self.to_proto().raw_frame_bytes()
    }

    /// Bytes per second a channel of this schema writes at most (raw frames at the declared fps).
    pub fn raw_bytes_per_second(&self) -> u64 {
        let per_second = self.raw_frame_bytes() as f64 * self.fps;
        if per_second >= u64::MAX as f64 {
            u64::MAX
        } else {
            per_second as u64
        }
    }
}

impl ChannelRecord {
    pub fn to_proto(&self, revision: i64) -> Channel {
        Channel {
            channel_id: self.channel_id.clone(),
            source_uri: self.source_uri.clone(),
            schema: Some(self.schema.to_proto()),
            topic: self.topic.clone(),
            created_unix_ms: self.created_unix_ms,
            revision,
            topic_strategy: self.strategy().into(),
            topics: self.topics(),
            state: self.state().into(),
            declared_bytes_per_second: self.declared_bytes_per_second,
            ingestor_id: self.ingestor_id.clone(),
            updated_unix_ms: self.updated_unix_ms,
            pipelines: self.pipelines.clone(),
            ended_unix_ms: self.ended_unix_ms.unwrap_or_default(),
            drained_unix_ms: self.drained_unix_ms.unwrap_or_default(),
            owner: self.owner().to_owned(),
        }
    }

    /// The ingestor the channel belongs to: the one it was registered for. A record written
    /// before owners were kept belongs to the ingestor that claimed it by registering it, if
    /// that one still has it, and otherwise to no ingestor (administrators only).
    pub fn owner(&self) -> &str {
        if !self.owner.is_empty() {
            &self.owner
        } else if self.assigned_by == CLAIMED_BY_REGISTRATION {
            &self.ingestor_id
        } else {
            ""
        }
    }

    /// Every topic the channel writes to; records from before fan-out have only `topic`.
    pub fn topics(&self) -> Vec<String> {
        if self.topics.is_empty() {
            vec![self.topic.clone()]
        } else {
            self.topics.clone()
        }
    }

    /// Who must consume the channel's frames (see [`framefleet_proto::channel_readers`]).
    pub fn readers(&self) -> Vec<framefleet_proto::Reader> {
        framefleet_proto::channel_readers(
            self.strategy() == TopicStrategy::FanOut,
            &self.topics(),
            &self.pipelines,
        )
    }

    pub fn strategy(&self) -> TopicStrategy {
        TopicStrategy::from_str_name(&self.topic_strategy).unwrap_or(TopicStrategy::Dedicated)
    }

    pub fn state(&self) -> ChannelState {
        ChannelState::from_str_name(&self.state).unwrap_or(ChannelState::Active)
    }

    pub fn is_active(&self) -> bool {
        self.state() == ChannelState::Active
    }

    pub fn encode(&self) -> Result<Vec<u8>, CoordinatorError> {
        encode(&channel_key(&self.channel_id), self)
    }
}

pub fn channel_key(channel_id: &str) -> String {
    format!("{CHANNEL_KEY_PREFIX}{channel_id}")
}

/// Versions are zero-padded so etcd lists them in version order.
pub fn schema_key(channel_id: &str, version: u32) -> String {
    format!("{SCHEMA_KEY_PREFIX}{channel_id}/{version:010}")
}

pub fn schema_prefix(channel_id: &str) -> String {
    format!("{SCHEMA_KEY_PREFIX}{channel_id}/")
}

pub fn decode<T: for<'de> Deserialize<'de>>(stored: &StoredValue) -> Result<T, CoordinatorError> {
    serde_json::from_slice(&stored.value).map_err(|error| CoordinatorError::CorruptRecord {
        key: stored.key.clone(),
        reason: error.to_string(),
    })
}

pub fn encode_schema(channel_id: &str, schema: &SchemaRecord) -> Result<Vec<u8>, CoordinatorError> {
    encode(&schema_key(channel_id, schema.version), schema)
}

/// A record's stored form (JSON), for the etcd key `key`; the key names it in the error.
pub fn encode<T: Serialize>(key: &str, value: &T) -> Result<Vec<u8>, CoordinatorError> {
    serde_json::to_vec(value).map_err(|error| CoordinatorError::CorruptRecord {
        key: key.to_owned(),
        reason: error.to_string(),
    })
}
