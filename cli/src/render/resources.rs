//! Channels, schemas and assignment updates as tables and JSON.

use framefleet_proto::v1::{
    AssignmentUpdate, Channel, ChannelState, FrameEncoding, FrameSchema, PixelFormat, TopicStrategy,
};
use serde_json::{Value, json};
use std::fmt::Write as _;

pub fn channels_table(channels: &[Channel]) -> String {
    let mut out = format!(
        "{:<24} {:<8} {:<11} {:>5} {:<6} {:>4} {:>8} {:<36} {:<16} {}\n",
        "CHANNEL", "STATE", "SIZE", "FPS", "ENC", "VER", "REV", "TOPICS", "INGESTOR", "SOURCE"
    );
    for channel in channels {
        let (size, fps, encoding) = match &channel.schema {
            Some(schema) => (
                format!("{}x{}", schema.width, schema.height),
                format!("{:.1}", schema.fps),
                FrameEncoding::try_from(schema.encoding)
                    .map(|e| e.as_str_name().trim_start_matches("FRAME_ENCODING_").to_lowercase())
                    .unwrap_or_default(),
            ),
            None => Default::default(),
        };
        let version = channel.schema.as_ref().map_or(0, |schema| schema.version);
        let ingestor = if channel.ingestor_id.is_empty() {
            "-"
        } else {
            channel.ingestor_id.as_str()
        };
        let _ = writeln!(
            out,
            "{:<24} {:<8} {:<11} {:>5} {:<6} {:>4} {:>8} {:<36} {:<16} {}",
            channel.channel_id,
            if channel.drained_unix_ms > 0 {
                "drained".to_owned()
            } else if channel.ended_unix_ms > 0 {
                "ended".to_owned()
            } else {
                state_name(channel.state)
            },
            size,
            fps,
            encoding,
            version,
            channel.revision,
            channel.topics.join(","),
            ingestor,
            channel.source_uri
        );
    }
    out
}

pub fn state_name(state: i32) -> String {
    ChannelState::try_from(state)
        .map(|state| state.as_str_name().trim_start_matches("CHANNEL_STATE_").to_lowercase())
        .unwrap_or_else(|_| format!("#{state}"))
}

pub fn schema_value(schema: &FrameSchema) -> Value {
    json!({
        "version": schema.version,
        "width": schema.width,
        "height": schema.height,
        "channels": schema.channels,
        "pixel_format": PixelFormat::try_from(schema.pixel_format).map(|p| p.as_str_name()).unwrap_or("UNKNOWN"),
        "encoding": FrameEncoding::try_from(schema.encoding).map(|e| e.as_str_name()).unwrap_or("UNKNOWN"),
        "fps": schema.fps,
    })
}

pub fn channel_value(channel: &Channel) -> Value {
    json!({
        "channel_id": channel.channel_id,
        "source_uri": channel.source_uri,
        "topic": channel.topic,
        "topics": channel.topics,
        "topic_strategy": TopicStrategy::try_from(channel.topic_strategy).map(|s| s.as_str_name()).unwrap_or("UNKNOWN"),
        "pipelines": channel.pipelines,
        "state": ChannelState::try_from(channel.state).map(|s| s.as_str_name()).unwrap_or("UNKNOWN"),
        "ended_unix_ms": channel.ended_unix_ms,
        "drained_unix_ms": channel.drained_unix_ms,
        "ingestor_id": channel.ingestor_id,
        "owner": channel.owner,
        "declared_bytes_per_second": channel.declared_bytes_per_second,
        "created_unix_ms": channel.created_unix_ms,
        "updated_unix_ms": channel.updated_unix_ms,
        "revision": channel.revision,
        "schema": channel.schema.as_ref().map(schema_value),
    })
}

pub fn channels_json(channels: &[Channel]) -> String {
    Value::Array(channels.iter().map(channel_value).collect()).to_string()
}

pub fn schemas_table(schemas: &[FrameSchema]) -> String {
    let mut out = format!(
        "{:>4} {:<11} {:>3} {:<10} {:<6} {:>6}\n",
        "VER", "SIZE", "CH", "PIXELS", "ENC", "FPS"
    );
    for schema in schemas {
        let _ = writeln!(
            out,
            "{:>4} {:<11} {:>3} {:<10} {:<6} {:>6.1}",
            schema.version,
            format!("{}x{}", schema.width, schema.height),
            schema.channels,
            PixelFormat::try_from(schema.pixel_format)
                .map(|p| p.as_str_name().trim_start_matches("PIXEL_FORMAT_").to_lowercase())
                .unwrap_or_default(),
            FrameEncoding::try_from(schema.encoding)
                .map(|e| e.as_str_name().trim_start_matches("FRAME_ENCODING_").to_lowercase())
                .unwrap_or_default(),
            schema.fps
        );
    }
    out
}

pub fn assignment_update_json(update: &AssignmentUpdate) -> String {
    json!({
        "revision": update.revision,
        "reset": update.reset,
        "channels": update.channels.iter().map(channel_value).collect::<Vec<_>>(),
        "removed_channel_ids": update.removed_channel_ids,
    })
    .to_string()
}

pub fn assignment_update_line(update: &AssignmentUpdate) -> String {
    let run: Vec<String> = update
        .channels
        .iter()
        .map(|channel| format!("{}→{}", channel.channel_id, channel.topics.join(",")))
        .collect();
    format!(
        "revision {}{}: run [{}] stop [{}]",
        update.revision,
        if update.reset { " (full listing)" } else { "" },
        run.join(" "),
        update.removed_channel_ids.join(" ")
    )
}
