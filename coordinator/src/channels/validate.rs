//! Field validation of channel and schema requests. Every refusal names the field.

use super::record::SchemaRecord;
use crate::error::CoordinatorError;
use framefleet_proto::v1::{FrameEncoding, FrameSchema, PixelFormat, TopicStrategy};

const MAX_CHANNEL_ID_LEN: usize = 128;
const MAX_PROCESS_ID_LEN: usize = 128;
pub const MAX_SOURCE_URI_LEN: usize = 4096;
const MAX_DIMENSION: u32 = 16_384;
const MAX_FPS: f64 = 1_000.0;
const MAX_PIPELINE_LEN: usize = 32;
const MAX_PIPELINES: usize = 16;

/// Channel ids become Kafka topic names and etcd keys, so they use Kafka's topic alphabet;
/// dots only between other characters, one at a time (`.`, `..` and `a..b` make topic names
/// Kafka refuses or that read as paths).
pub fn channel_id(channel_id: &str) -> Result<(), CoordinatorError> {
    topic_safe_name("channel_id", channel_id, MAX_CHANNEL_ID_LEN, &['-', '_', '.'])?;
    if channel_id.starts_with('.') || channel_id.ends_with('.') || channel_id.contains("..") {
        return Err(CoordinatorError::invalid(
            "channel_id",
            "`.` must stand between other characters, one at a time",
        ));
    }
    Ok(())
}

/// Ingestor and worker ids: any text of 1 to 128 characters (they name processes in reports
/// and in etcd keys' values, never in topic names).
pub fn process_id(field: &'static str, id: &str) -> Result<(), CoordinatorError> {
    if id.is_empty() || id.len() > MAX_PROCESS_ID_LEN {
        return Err(CoordinatorError::invalid(
            field,
            format!("must be 1..={MAX_PROCESS_ID_LEN} characters"),
        ));
    }
    Ok(())
}

/// Apache Kafka treats topic names that differ only by `.` versus `_` as colliding (both map
/// to the same metric names) and refuses the second: two names (topics, or channel ids that
/// become parts of topics) with the same key here would get such topics.
pub fn topic_collision_key(name: &str) -> String {
    name.replace('.', "_")
}

/// The first of `wanted` that Kafka would take for one of `existing` (see
/// [`topic_collision_key`]), with that one; `shared(wanted, existing)` exempts a pair two
/// owners may share by design (the same pool topic).
pub fn colliding_topic<'a, 'b>(
    wanted: &[&'a str],
    existing: impl IntoIterator<Item = &'b str>,
    shared: impl Fn(&str, &str) -> bool,
) -> Option<(&'a str, &'b str)> {
    let wanted: Vec<(String, &'a str)> = wanted.iter().map(|name| (topic_collision_key(name), *name)).collect();
    existing.into_iter().find_map(|other| {
        let other_key = topic_collision_key(other);
        wanted
            .iter()
            .find(|(key, name)| *key == other_key && !shared(name, other))
            .map(|(_, name)| (*name, other))
    })
}

/// A name of Kafka's topic alphabet: 1 to `max_len` letters, digits and `punctuation`.
pub(crate) fn topic_safe_name(
    field: &'static str,
    name: &str,
    max_len: usize,
    punctuation: &[char],
) -> Result<(), CoordinatorError> {
    if name.is_empty() {
        return Err(CoordinatorError::invalid(field, "must not be empty"));
    }
    if name.len() > max_len {
        return Err(CoordinatorError::invalid(
            field,
            format!("must be at most {max_len} characters"),
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || punctuation.contains(c)))
    {
        let allowed: String = punctuation.iter().map(|c| format!(" '{c}'")).collect();
        return Err(CoordinatorError::invalid(
            field,
            format!("character {bad:?} not allowed; use letters, digits and{allowed}"),
        ));
    }
    Ok(())
}

pub fn source_uri(source_uri: &str) -> Result<(), CoordinatorError> {
    if source_uri.len() > MAX_SOURCE_URI_LEN {
        return Err(CoordinatorError::invalid(
            "source_uri",
            format!("must be at most {MAX_SOURCE_URI_LEN} bytes"),
        ));
    }
    if source_uri.chars().any(char::is_control) {
        return Err(CoordinatorError::invalid(
            "source_uri",
            "must not contain control characters",
        ));
    }
    Ok(())
}

pub fn expected_revision(revision: i64) -> Result<(), CoordinatorError> {
    if revision < 0 {
        return Err(CoordinatorError::invalid(
            "expected_revision",
            "must be ≥ 0 (0 means any)",
        ));
    }
    Ok(())
}

/// The strategy and the pipelines that process the channel's frames: at most 16 unique
/// names (FAN_OUT needs at least one: it writes one topic per pipeline). No pipelines: the
/// frames go to the workers that serve no pipeline (processing from their flags).
pub fn strategy(strategy: i32, pipelines: &[String]) -> Result<TopicStrategy, CoordinatorError> {
    let strategy = match TopicStrategy::try_from(strategy) {
        Ok(TopicStrategy::Unspecified) => TopicStrategy::Dedicated,
        Ok(strategy) => strategy,
        Err(_) => {
            return Err(CoordinatorError::invalid(
                "topic_strategy",
                format!("unknown value {strategy}"),
            ));
        }
    };
    if strategy == TopicStrategy::FanOut && pipelines.is_empty() {
        return Err(CoordinatorError::invalid(
            "pipelines",
            format!("TOPIC_STRATEGY_FAN_OUT needs 1..={MAX_PIPELINES} pipeline names (one topic each)"),
        ));
    }
    // A pool topic carries the frames of many channels, and every reader of any of them would
    // read them all: a pipeline's workers would process channels that do not name it.
    if strategy == TopicStrategy::SharedPool && !pipelines.is_empty() {
        return Err(CoordinatorError::invalid(
            "pipelines",
            "TOPIC_STRATEGY_SHARED_POOL takes no pipelines (a pool topic is shared with channels that do not name them); use DEDICATED or FAN_OUT",
        ));
    }
    if pipelines.len() > MAX_PIPELINES {
        return Err(CoordinatorError::invalid(
            "pipelines",
            format!("at most {MAX_PIPELINES} pipelines per channel"),
        ));
    }
    for pipeline in pipelines {
        pipeline_name("pipelines", pipeline)?;
    }
    let mut unique = pipelines.to_vec();
    unique.sort();
    unique.dedup();
    if unique.len() != pipelines.len() {
        return Err(CoordinatorError::invalid("pipelines", "names must be unique"));
    }
    Ok(strategy)
}

/// Pipeline names become parts of topic names and consumer groups: 1 to 32 letters, digits,
/// `-` and `_`, without `.` (a `.` would let two (channel, pipeline) pairs share a topic name).
pub fn pipeline_name(field: &'static str, name: &str) -> Result<(), CoordinatorError> {
    topic_safe_name(field, name, MAX_PIPELINE_LEN, &['-', '_'])
}

/// Checks a schema and returns its stored form at `version`. The version number in the
/// request is not trusted: the registry decides it.
pub fn schema(
    schema: Option<&FrameSchema>,
    max_frame_bytes: u64,
    version: u32,
) -> Result<SchemaRecord, CoordinatorError> {
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
    let expected_channels = pixel_format
        .channel_count()
        .ok_or_else(|| CoordinatorError::invalid("schema.pixel_format", "must be set"))?;
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
    let frame_bytes = schema.raw_frame_bytes();
    if frame_bytes > max_frame_bytes {
        return Err(CoordinatorError::invalid(
            "schema",
            format!("a decoded frame is {frame_bytes} bytes, over the coordinator's limit of {max_frame_bytes}"),
        ));
    }
    Ok(SchemaRecord {
        version,
        width: schema.width,
        height: schema.height,
        channels: schema.channels,
        pixel_format: pixel_format.as_str_name().to_owned(),
        encoding: encoding.as_str_name().to_owned(),
        fps: schema.fps,
    })
}
