//! Ingestor configuration: flags, with `FRAMEFLEET_*` environment variables as fallback.

use clap::{Parser, ValueEnum};
use std::str::FromStr;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "framefleet-ingestor",
    version,
    about = "Capture camera channels and produce every frame to Kafka"
)]
pub struct IngestorConfig {
    /// A channel to capture, as ID=SOURCE (a video file path). Repeat for more channels.
    #[arg(long = "channel", value_name = "ID=SOURCE", required = true)]
    pub channels: Vec<ChannelSource>,

    /// Coordinator gRPC address.
    #[arg(long, env = "FRAMEFLEET_COORDINATOR", default_value = "http://127.0.0.1:50051")]
    pub coordinator: String,

    /// Bearer token for the coordinator's mutating calls (registration, reports); needed when
    /// the coordinator was started with one.
    #[arg(long, env = "FRAMEFLEET_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<framefleet_proto::client::Token>,

    /// PEM CA certificate of a TLS coordinator (`https://` address).
    #[arg(long, env = "FRAMEFLEET_TLS_CA")]
    pub tls_ca: Option<std::path::PathBuf>,

    /// Kafka bootstrap servers (host:port, comma-separated).
    #[arg(long, env = "FRAMEFLEET_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,

    /// Identifies this process in fleet reports; defaults to ingestor-<pid>.
    #[arg(long, env = "FRAMEFLEET_INGESTOR_ID")]
    pub ingestor_id: Option<String>,

    /// Resize every frame to this width (default: the source's own).
    #[arg(long)]
    pub width: Option<u32>,

    /// Resize every frame to this height (default: the source's own).
    #[arg(long)]
    pub height: Option<u32>,

    /// JPEG quality, 1–100.
    #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub jpeg_quality: u8,

    /// `max` reads files as fast as they decode; `realtime` paces them at the source fps.
    #[arg(long, value_enum, default_value_t = Pace::Max)]
    pub pace: Pace,

    /// Stop each channel after this many frames.
    #[arg(long)]
    pub max_frames: Option<u64>,

    /// Frames captured but not yet handed to Kafka, per channel. When full, the camera read
    /// waits (no frame is dropped).
    #[arg(long, default_value_t = 64)]
    pub queue_frames: usize,

    /// How often to report counters to the coordinator, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub report_interval_ms: u64,

    /// Deadline for reaching the coordinator and the broker, in seconds.
    #[arg(long, env = "FRAMEFLEET_REQUEST_TIMEOUT_SECS", default_value_t = 10)]
    pub request_timeout_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Pace {
    Max,
    Realtime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelSource {
    pub channel_id: String,
    pub source: String,
}

impl FromStr for ChannelSource {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (channel_id, source) = text
            .split_once('=')
            .ok_or_else(|| format!("`{text}` is not ID=SOURCE (for example cam-1=/videos/lobby.avi)"))?;
        if channel_id.is_empty() || source.is_empty() {
            return Err(format!("`{text}` needs both an id and a source"));
        }
        Ok(Self {
            channel_id: channel_id.to_owned(),
            source: source.to_owned(),
        })
    }
}

impl IngestorConfig {
    pub fn client_options(&self) -> framefleet_proto::client::ClientOptions {
        framefleet_proto::client::ClientOptions {
            token: self.auth_token.clone(),
            tls_ca: self.tls_ca.clone(),
        }
    }

    pub fn ingestor_id(&self) -> String {
        self.ingestor_id
            .clone()
            .unwrap_or_else(|| format!("ingestor-{}", std::process::id()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_sources_parse() {
        let parsed: ChannelSource = "cam-1=/videos/a=b.avi".parse().expect("parse");
        assert_eq!(parsed.channel_id, "cam-1");
        assert_eq!(parsed.source, "/videos/a=b.avi");
        assert!("no-equals".parse::<ChannelSource>().is_err());
        assert!("=/a.avi".parse::<ChannelSource>().is_err());
    }
}
