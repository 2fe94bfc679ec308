//! Channels: registration (validate → provision the topic → store in etcd), lookup and
//! listing. Records are JSON in etcd under `channels/<id>` so that `etcdctl get` is readable.

use crate::error::CoordinatorError;
use crate::store::{CreateOutcome, MetadataStore, StoredValue};
use crate::topics::{TopicAdmin, TopicSpec};
use framefleet_common::kafka::CHANNEL_TOPIC_PREFIX;
use framefleet_proto::v1::{Channel, FrameEncoding, FrameSchema, PixelFormat};
use serde::{Deserialize, Serialize};

pub const CHANNEL_KEY_PREFIX: &str = "channels/";
const MAX_CHANNEL_ID_LEN: usize = 128;
const MAX_SOURCE_URI_LEN: usize = 4096;
const MAX_DIMENSION: u32 = 16_384;
const MAX_FPS: f64 = 1_000.0;

/// The stored form of a channel. Field names are part of the etcd format: rename with care.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelRecord {
    pub channel_id: String,
    pub source_uri: String,
    pub schema: SchemaRecord,
    pub topic: String,
    pub created_unix_ms: i64,
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
    fn to_proto(&self) -> FrameSchema {
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
    fn same_shape(&self, other: &Self) -> bool {
        (
            self.width,
            self.height,
            self.channels,
            &self.pixel_format,
            &self.encoding,
        ) == (
            other.width,
            other.height,
            other.channels,
            &other.pixel_format,
            &other.encoding,
        ) && self.fps.to_bits() == other.fps.to_bits()
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
        }
    }
}

pub fn channel_key(channel_id: &str) -> String {
    format!("{CHANNEL_KEY_PREFIX}{channel_id}")
}

pub fn channel_topic(channel_id: &str) -> String {
    format!("{CHANNEL_TOPIC_PREFIX}{channel_id}")
}

/// Channel ids become Kafka topic names and etcd keys, so they use Kafka's topic alphabet.
pub fn validate_channel_id(channel_id: &str) -> Result<(), CoordinatorError> {
    if channel_id.is_empty() {
        return Err(CoordinatorError::invalid("channel_id", "must not be empty"));
    }
    if channel_id.len() > MAX_CHANNEL_ID_LEN {
        return Err(CoordinatorError::invalid(
            "channel_id",
            format!("must be at most {MAX_CHANNEL_ID_LEN} characters"),
        ));
    }
    if let Some(bad) = channel_id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(CoordinatorError::invalid(
            "channel_id",
            format!("character {bad:?} not allowed; use letters, digits, '-', '_' and '.'"),
        ));
    }
    Ok(())
}

pub fn validate_schema(schema: Option<&FrameSchema>, max_frame_bytes: u64) -> Result<SchemaRecord, CoordinatorError> {
    let schema = schema.ok_or_else(|| CoordinatorError::invalid("schema", "is required"))?;
    for (field, value) in [("schema.width", schema.width), ("schema.height", schema.height)] {
        if value == 0 || value > MAX_DIMENSION {
            return Err(CoordinatorError::invalid(
                field,
                format!("{value} is outside 1..={MAX_DIMENSION}"),
            ));
        }
    }
    let pixel_format = PixelFormat::try_from(schema.pixel_format).map_err(|_| {
        CoordinatorError::invalid("schema.pixel_format", format!("unknown value {}", schema.pixel_format))
    })?;
    let expected_channels = match pixel_format {
        PixelFormat::Unspecified => return Err(CoordinatorError::invalid("schema.pixel_format", "must be set")),
        PixelFormat::Gray8 => 1,
        PixelFormat::Rgb24 | PixelFormat::Bgr24 => 3,
    };
    if schema.channels != expected_channels {
        return Err(CoordinatorError::invalid(
            "schema.channels",
            format!(
                "{} does not match {} (expects {expected_channels})",
                schema.channels,
                pixel_format.as_str_name()
            ),
        ));
    }
    let encoding = FrameEncoding::try_from(schema.encoding)
        .map_err(|_| CoordinatorError::invalid("schema.encoding", format!("unknown value {}", schema.encoding)))?;
    if encoding == FrameEncoding::Unspecified {
        return Err(CoordinatorError::invalid("schema.encoding", "must be set"));
    }
    if !(schema.fps.is_finite() && schema.fps > 0.0 && schema.fps <= MAX_FPS) {
        return Err(CoordinatorError::invalid(
            "schema.fps",
            format!("{} is outside (0, {MAX_FPS}]", schema.fps),
        ));
    }
    if schema.version > 1 {
        return Err(CoordinatorError::invalid(
            "schema.version",
            "a new channel starts at version 1 (leave it 0 or 1)",
        ));
    }
    let frame_bytes = schema.raw_frame_bytes();
    if frame_bytes > max_frame_bytes {
        return Err(CoordinatorError::invalid(
            "schema",
            format!("a decoded frame is {frame_bytes} bytes, over the coordinator's limit of {max_frame_bytes}"),
        ));
    }
    Ok(SchemaRecord {
        version: 1,
        width: schema.width,
        height: schema.height,
        channels: schema.channels,
        pixel_format: pixel_format.as_str_name().to_owned(),
        encoding: encoding.as_str_name().to_owned(),
        fps: schema.fps,
    })
}

#[derive(Debug, Clone)]
pub struct TopicDefaults {
    pub partitions: i32,
    pub replication: i32,
    pub retention_ms: i64,
}

pub struct ChannelRegistry<S, T> {
    store: S,
    topics: T,
    topic_defaults: TopicDefaults,
    max_frame_bytes: u64,
}

impl<S: MetadataStore, T: TopicAdmin> ChannelRegistry<S, T> {
    pub fn new(store: S, topics: T, topic_defaults: TopicDefaults, max_frame_bytes: u64) -> Self {
        Self {
            store,
            topics,
            topic_defaults,
            max_frame_bytes,
        }
    }

    /// Registers a channel. The topic is provisioned before the record is written, so a
    /// stored channel always has a topic; a failure in between leaves only an unused topic,
    /// and retrying is safe because both steps are idempotent.
    pub async fn register(
        &self,
        channel_id: &str,
        source_uri: &str,
        schema: Option<&FrameSchema>,
    ) -> Result<(Channel, bool), CoordinatorError> {
        validate_channel_id(channel_id)?;
        if source_uri.len() > MAX_SOURCE_URI_LEN {
            return Err(CoordinatorError::invalid(
                "source_uri",
                format!("must be at most {MAX_SOURCE_URI_LEN} bytes"),
            ));
        }
        let schema = validate_schema(schema, self.max_frame_bytes)?;
        let record = ChannelRecord {
            channel_id: channel_id.to_owned(),
            source_uri: source_uri.to_owned(),
            topic: channel_topic(channel_id),
            created_unix_ms: framefleet_common::startup::unix_time_ms(),
            schema,
        };

        let key = channel_key(channel_id);
        if let Some(existing) = self.store.get(&key).await? {
            return self
                .existing_or_conflict(&record, &existing)
                .map(|channel| (channel, false));
        }

        let topic_spec = TopicSpec {
            name: record.topic.clone(),
            partitions: self.topic_defaults.partitions,
            replication: self.topic_defaults.replication,
            // An encoded frame (JPEG/PNG) of a pathological image can exceed the raw size
            // slightly; the raw size plus the record overhead covers every encoding we produce.
            max_payload_bytes: record.schema_raw_frame_bytes(),
            retention_ms: self.topic_defaults.retention_ms,
        };
        self.topics.ensure_topic(&topic_spec).await?;

        let value = serde_json::to_vec(&record).map_err(|error| CoordinatorError::CorruptRecord {
            key: key.clone(),
            reason: error.to_string(),
        })?;
        match self.store.create(&key, value).await? {
            CreateOutcome::Created { mod_revision } => {
                tracing::info!(channel = %channel_id, topic = %record.topic, "channel registered");
                Ok((record.to_proto(mod_revision), true))
            }
            // Lost a race with another registration of the same id.
            CreateOutcome::Exists(existing) => self
                .existing_or_conflict(&record, &existing)
                .map(|channel| (channel, false)),
        }
    }

    fn existing_or_conflict(
        &self,
        requested: &ChannelRecord,
        existing: &StoredValue,
    ) -> Result<Channel, CoordinatorError> {
        let stored = decode_record(existing)?;
        if stored.source_uri == requested.source_uri && stored.schema.same_shape(&requested.schema) {
            return Ok(stored.to_proto(existing.mod_revision));
        }
        Err(CoordinatorError::AlreadyExists {
            kind: "channel",
            id: requested.channel_id.clone(),
        })
    }

    pub async fn get(&self, channel_id: &str) -> Result<Channel, CoordinatorError> {
        validate_channel_id(channel_id)?;
        let stored = self
            .store
            .get(&channel_key(channel_id))
            .await?
            .ok_or_else(|| CoordinatorError::NotFound {
                kind: "channel",
                id: channel_id.to_owned(),
            })?;
        Ok(decode_record(&stored)?.to_proto(stored.mod_revision))
    }

    pub async fn list(&self, id_prefix: &str) -> Result<Vec<Channel>, CoordinatorError> {
        if !id_prefix.is_empty() {
            validate_channel_id(id_prefix)
                .map_err(|_| CoordinatorError::invalid("id_prefix", "use letters, digits, '-', '_' and '.' only"))?;
        }
        let stored = self.store.list(&channel_key(id_prefix)).await?;
        stored
            .iter()
            .map(|value| decode_record(value).map(|record| record.to_proto(value.mod_revision)))
            .collect()
    }
}

impl ChannelRecord {
    fn schema_raw_frame_bytes(&self) -> u64 {
        self.schema.to_proto().raw_frame_bytes()
    }
}

fn decode_record(stored: &StoredValue) -> Result<ChannelRecord, CoordinatorError> {
    serde_json::from_slice(&stored.value).map_err(|error| CoordinatorError::CorruptRecord {
        key: stored.key.clone(),
        reason: error.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use std::sync::Mutex;

    #[derive(Default)]
    struct RecordingTopics {
        created: Mutex<Vec<TopicSpec>>,
    }

    impl TopicAdmin for &'static RecordingTopics {
        async fn ensure_topic(&self, spec: &TopicSpec) -> Result<(), CoordinatorError> {
            self.created
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(spec.clone());
            Ok(())
        }
    }

    fn registry() -> (
        ChannelRegistry<MemoryStore, &'static RecordingTopics>,
        &'static RecordingTopics,
    ) {
        let topics: &'static RecordingTopics = Box::leak(Box::default());
        let defaults = TopicDefaults {
            partitions: 1,
            replication: 1,
            retention_ms: 3_600_000,
        };
        (
            ChannelRegistry::new(MemoryStore::default(), topics, defaults, 64 << 20),
            topics,
        )
    }

    fn schema(width: u32, height: u32) -> FrameSchema {
        FrameSchema {
            version: 0,
            width,
            height,
            channels: 3,
            pixel_format: PixelFormat::Rgb24.into(),
            encoding: FrameEncoding::Jpeg.into(),
            fps: 25.0,
        }
    }

    #[tokio::test]
    async fn registration_is_idempotent_and_sizes_the_topic() {
        let (registry, topics) = registry();
        let (channel, created) = registry
            .register("cam-1", "file:///a.avi", Some(&schema(1920, 1080)))
            .await
            .expect("register");
        assert!(created);
        assert_eq!(channel.topic, "framefleet.frames.cam-1");
        assert_eq!(channel.schema.as_ref().map(|s| s.version), Some(1));

        let (again, created_again) = registry
            .register("cam-1", "file:///a.avi", Some(&schema(1920, 1080)))
            .await
            .expect("re-register");
        assert!(!created_again);
        assert_eq!(again, channel);

        let created_topics = topics.created.lock().expect("lock").clone();
        assert_eq!(
            created_topics.len(),
            1,
            "an identical re-registration provisions nothing"
        );
        assert!(created_topics[0].max_message_bytes() > 1920 * 1080 * 3);
    }

    #[tokio::test]
    async fn a_different_definition_under_the_same_id_is_refused() {
        let (registry, _) = registry();
        registry
            .register("cam-1", "file:///a.avi", Some(&schema(640, 480)))
            .await
            .expect("register");
        let error = registry
            .register("cam-1", "file:///a.avi", Some(&schema(1280, 720)))
            .await
            .expect_err("conflict");
        assert!(matches!(error, CoordinatorError::AlreadyExists { .. }), "{error}");
    }

    #[tokio::test]
    async fn bad_input_names_the_field() {
        let (registry, topics) = registry();
        let cases: Vec<(&str, Option<FrameSchema>, &str)> = vec![
            ("", Some(schema(640, 480)), "channel_id"),
            ("cam/1", Some(schema(640, 480)), "channel_id"),
            ("cam-1", None, "schema"),
            ("cam-1", Some(schema(0, 480)), "schema.width"),
            ("cam-1", Some(schema(640, 100_000)), "schema.height"),
            (
                "cam-1",
                Some(FrameSchema {
                    fps: 0.0,
                    ..schema(640, 480)
                }),
                "schema.fps",
            ),
            (
                "cam-1",
                Some(FrameSchema {
                    channels: 1,
                    ..schema(640, 480)
                }),
                "schema.channels",
            ),
            (
                "cam-1",
                Some(FrameSchema {
                    encoding: 99,
                    ..schema(640, 480)
                }),
                "schema.encoding",
            ),
        ];
        for (channel_id, schema, field) in cases {
            let error = registry
                .register(channel_id, "file:///a.avi", schema.as_ref())
                .await
                .expect_err(field);
            match error {
                CoordinatorError::InvalidArgument { field: named, .. } => assert_eq!(named, field),
                other => panic!("expected invalid {field}, got {other}"),
            }
        }
        assert!(
            topics.created.lock().expect("lock").is_empty(),
            "invalid requests provision nothing"
        );
    }

    #[tokio::test]
    async fn get_and_list() {
        let (registry, _) = registry();
        for id in ["lobby-1", "lobby-2", "yard-1"] {
            registry
                .register(id, "synthetic://", Some(&schema(64, 48)))
                .await
                .expect("register");
        }
        assert_eq!(registry.get("lobby-2").await.expect("get").channel_id, "lobby-2");
        assert!(matches!(
            registry.get("nope").await,
            Err(CoordinatorError::NotFound { .. })
        ));
        assert_eq!(registry.list("lobby").await.expect("list").len(), 2);
        assert_eq!(registry.list("").await.expect("list").len(), 3);
    }
}
