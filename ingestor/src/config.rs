//! Ingestor configuration: flags, with `FRAMEFLEET_*` environment variables as fallback, and
//! an optional TOML file of channels that is re-read when it changes.

use crate::capture::Pace;
use crate::encode::Quality;
use crate::producer::Compression;
use crate::queue::QueuePolicy;
use clap::{Parser, ValueEnum};
use framefleet_common::args::{CoordinatorArgs, KafkaArgs};
use framefleet_proto::v1::{FrameEncoding, PixelFormat, TopicStrategy};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "framefleet-ingestor",
    version,
    about = "Capture camera channels and produce every frame to Kafka",
    long_about = "Capture camera channels and produce every frame to Kafka.\n\n\
        Channels come from --channel, from a --channel-file (re-read when it changes), and, with \
        --accept-assignments, from the coordinator. Sources: video files (file:///v.avi?loop=true), \
        image directories, rtsp:// and http:// streams, V4L2 devices (/dev/video0) and \
        synthetic://WIDTHxHEIGHT@FPS test patterns.\n\n\
        Without --accept-assignments the ingestor exits once every channel it was given has ended \
        (files, --max-frames); live sources run until Ctrl-C."
)]
pub struct IngestorConfig {
    #[command(flatten)]
    pub coordinator: CoordinatorArgs,

    #[command(flatten)]
    pub kafka: KafkaArgs,

    /// A channel to capture, as ID=SOURCE. Repeat for more channels.
    #[arg(long = "channel", value_name = "ID=SOURCE")]
    pub channels: Vec<ChannelSource>,

    /// TOML file of `[[channel]]` entries (id, source and optional width, height, fps,
    /// encoding, pixel_format, jpeg_quality, topic_strategy, pipelines). Channels added to or
    /// removed from it are started or drained without a restart.
    #[arg(long, env = "FRAMEFLEET_CHANNEL_FILE")]
    pub channel_file: Option<PathBuf>,

    /// Capture the channels the coordinator assigns to this ingestor, and run until stopped.
    /// Default: on when no --channel and no --channel-file is given.
    #[arg(long, env = "FRAMEFLEET_ACCEPT_ASSIGNMENTS", num_args = 0..=1, default_missing_value = "true")]
    pub accept_assignments: Option<bool>,

    /// Identifies this process in fleet reports and assignments; defaults to ingestor-<host name>-<pid>.
    #[arg(long, env = "FRAMEFLEET_INGESTOR_ID")]
    pub ingestor_id: Option<String>,

    /// Width of the frames of channels registered here (default: the source's own).
    #[arg(long, env = "FRAMEFLEET_WIDTH")]
    pub width: Option<u32>,

    /// Height of the frames of channels registered here (default: the source's own).
    #[arg(long, env = "FRAMEFLEET_HEIGHT")]
    pub height: Option<u32>,

    /// Frame rate of channels registered here (default: the source's own).
    #[arg(long, env = "FRAMEFLEET_FPS")]
    pub fps: Option<f64>,

    /// Encoding of channels registered here.
    #[arg(long, env = "FRAMEFLEET_ENCODING", value_enum, default_value_t = EncodingArg::Jpeg)]
    pub encoding: EncodingArg,

    /// Pixel format of channels registered here.
    #[arg(long, env = "FRAMEFLEET_PIXEL_FORMAT", value_enum, default_value_t = PixelFormatArg::Rgb24)]
    pub pixel_format: PixelFormatArg,

    /// How channels registered here are laid out on topics.
    #[arg(long, env = "FRAMEFLEET_TOPIC_STRATEGY", value_enum, default_value_t = StrategyArg::Dedicated)]
    pub topic_strategy: StrategyArg,

    /// A registered pipeline that processes the frames of channels registered here (repeat;
    /// fan-out writes one topic per pipeline). None: workers serving no pipeline do.
    #[arg(long = "pipeline", env = "FRAMEFLEET_CHANNEL_PIPELINES", value_delimiter = ',')]
    pub pipelines: Vec<String>,

    /// JPEG quality, 1–100.
    #[arg(long, env = "FRAMEFLEET_JPEG_QUALITY", default_value_t = 90, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub jpeg_quality: u8,

    /// PNG zlib level, 0–9 (higher: smaller and slower).
    #[arg(long, env = "FRAMEFLEET_PNG_COMPRESSION", default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=9))]
    pub png_compression: u8,

    /// Kafka compression of raw frames (JPEG and PNG are sent as they are).
    #[arg(long, env = "FRAMEFLEET_RAW_COMPRESSION", value_enum, default_value_t = Compression::Lz4)]
    pub raw_compression: Compression,

    /// `max` reads files and synthetic sources as fast as they encode; `realtime` at their fps.
    #[arg(long, env = "FRAMEFLEET_PACE", value_enum, default_value_t = Pace::Max)]
    pub pace: Pace,

    /// Stop each channel after this many frames.
    #[arg(long, env = "FRAMEFLEET_MAX_FRAMES")]
    pub max_frames: Option<u64>,

    /// Frames encoded but not yet handed to Kafka, per channel.
    #[arg(long, env = "FRAMEFLEET_QUEUE_FRAMES", default_value_t = 64)]
    pub queue_frames: usize,

    /// When a channel's queue is full: `block` makes the camera read wait (nothing captured
    /// is lost); `drop-oldest` discards the oldest queued frame and counts it.
    #[arg(long, env = "FRAMEFLEET_QUEUE_POLICY", value_enum, default_value_t = QueuePolicy::Block)]
    pub queue_policy: QueuePolicy,

    /// Where each channel's source is read and decoded: `process` (one capture process per
    /// channel, so a decoder crash fails or restarts that channel alone) or `thread` (all in
    /// this process: cheaper, but one crash stops every channel).
    #[arg(long, env = "FRAMEFLEET_CAPTURE_ISOLATION", value_enum, default_value_t = CaptureIsolation::Process)]
    pub capture_isolation: CaptureIsolation,

    /// A live source with no frame for this long is reconnected.
    #[arg(long, env = "FRAMEFLEET_STALL_TIMEOUT_SECS", default_value_t = 10)]
    pub stall_timeout_secs: u64,

    /// Longest wait between reconnect attempts (doubling from 250 ms; no attempt limit).
    #[arg(long, env = "FRAMEFLEET_MAX_BACKOFF_SECS", default_value_t = 30)]
    pub max_backoff_secs: u64,

    /// How long a frame Kafka could not take for a passing reason (a broker restarting, its
    /// storage down, a timeout) is sent again before it is counted failed, in seconds from
    /// its first send. 0 counts it failed at the first failure.
    #[arg(long, env = "FRAMEFLEET_DELIVERY_TIMEOUT_SECS", default_value_t = 900)]
    pub delivery_timeout_secs: u64,

    /// Serve Prometheus metrics (per-channel ledgers) on this address, e.g. 127.0.0.1:9464.
    #[arg(long, env = "FRAMEFLEET_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,

    /// How often to report counters to the coordinator, in milliseconds.
    #[arg(long, env = "FRAMEFLEET_REPORT_INTERVAL_MS", default_value_t = 1000)]
    pub report_interval_ms: u64,

    /// Deadline for reaching the coordinator and the broker, in seconds.
    #[arg(long, env = "FRAMEFLEET_REQUEST_TIMEOUT_SECS", default_value_t = 10)]
    pub request_timeout_secs: u64,
}

/// See `--capture-isolation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CaptureIsolation {
    Process,
    Thread,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncodingArg {
    Raw,
    Jpeg,
    Png,
}

impl From<EncodingArg> for FrameEncoding {
    fn from(encoding: EncodingArg) -> Self {
        match encoding {
            EncodingArg::Raw => Self::Raw,
            EncodingArg::Jpeg => Self::Jpeg,
            EncodingArg::Png => Self::Png,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PixelFormatArg {
    Rgb24,
    Bgr24,
    Gray8,
}

impl From<PixelFormatArg> for PixelFormat {
    fn from(format: PixelFormatArg) -> Self {
        match format {
            PixelFormatArg::Rgb24 => Self::Rgb24,
            PixelFormatArg::Bgr24 => Self::Bgr24,
            PixelFormatArg::Gray8 => Self::Gray8,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StrategyArg {
    Dedicated,
    SharedPool,
    FanOut,
}

impl From<StrategyArg> for TopicStrategy {
    fn from(strategy: StrategyArg) -> Self {
        match strategy {
            StrategyArg::Dedicated => Self::Dedicated,
            StrategyArg::SharedPool => Self::SharedPool,
            StrategyArg::FanOut => Self::FanOut,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelSource {
    pub channel_id: String,
    pub source: String,
}

/// Why a `--channel` value is not `ID=SOURCE`.
#[derive(Debug, thiserror::Error)]
pub enum ChannelSourceError {
    #[error("`{0}` is not ID=SOURCE (for example cam-1=/videos/lobby.avi)")]
    NoEquals(String),
    #[error("`{0}` needs both an id and a source")]
    EmptyPart(String),
}

impl FromStr for ChannelSource {
    type Err = ChannelSourceError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (channel_id, source) = text
            .split_once('=')
            .ok_or_else(|| ChannelSourceError::NoEquals(text.to_owned()))?;
        if channel_id.is_empty() || source.is_empty() {
            return Err(ChannelSourceError::EmptyPart(text.to_owned()));
        }
        Ok(Self {
            channel_id: channel_id.to_owned(),
            source: source.to_owned(),
        })
    }
}

/// A channel this ingestor registers itself (from the flags or the config file).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalChannel {
    pub id: String,
    pub source: String,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub fps: Option<f64>,
    pub encoding: Option<EncodingArg>,
    pub pixel_format: Option<PixelFormatArg>,
    pub jpeg_quality: Option<u8>,
    pub png_compression: Option<u8>,
    pub topic_strategy: Option<StrategyArg>,
    #[serde(default)]
    pub pipelines: Vec<String>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    channel: Vec<LocalChannel>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read channel file `{path}`: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("channel file `{path}` is not valid: {error}")]
    Parse { path: PathBuf, error: toml::de::Error },
    #[error("channel file `{path}` names channel `{id}` twice")]
    Duplicate { path: PathBuf, id: String },
}

pub fn read_channel_file(path: &Path) -> Result<Vec<LocalChannel>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.to_owned(),
        error,
    })?;
    let file: ConfigFile = toml::from_str(&text).map_err(|error| ConfigError::Parse {
        path: path.to_owned(),
        error,
    })?;
    let mut seen = std::collections::HashSet::new();
    for channel in &file.channel {
        if !seen.insert(channel.id.clone()) {
            return Err(ConfigError::Duplicate {
                path: path.to_owned(),
                id: channel.id.clone(),
            });
        }
    }
    Ok(file.channel)
}

impl IngestorConfig {
    pub fn ingestor_id(&self) -> String {
        self.ingestor_id
            .clone()
            .unwrap_or_else(|| format!("ingestor-{}", framefleet_common::startup::host_process_id()))
    }

    pub fn accepts_assignments(&self) -> bool {
        self.accept_assignments
            .unwrap_or(self.channels.is_empty() && self.channel_file.is_none())
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs.max(1))
    }

    pub fn default_quality(&self) -> Quality {
        Quality {
            jpeg: self.jpeg_quality,
            png_compression: self.png_compression,
        }
    }

    /// The `--channel` flags as channels with this ingestor's defaults.
    pub fn flag_channels(&self) -> Vec<LocalChannel> {
        self.channels
            .iter()
            .map(|channel| LocalChannel {
                id: channel.channel_id.clone(),
                source: channel.source.clone(),
                width: None,
                height: None,
                fps: None,
                encoding: None,
                pixel_format: None,
                jpeg_quality: None,
                png_compression: None,
                topic_strategy: None,
                pipelines: Vec::new(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// clap checks the flags (unique ids and names, valid relations) only when a command is
    /// built; this builds it in every test run rather than in the first process that starts.
    #[test]
    fn the_flags_are_consistent() {
        <IngestorConfig as clap::CommandFactory>::command().debug_assert();
    }

    #[test]
    fn channel_sources_parse() {
        let parsed: ChannelSource = "cam-1=/videos/a=b.avi".parse().expect("parse");
        assert_eq!(parsed.channel_id, "cam-1");
        assert_eq!(parsed.source, "/videos/a=b.avi");
        assert!("no-equals".parse::<ChannelSource>().is_err());
        assert!("=/a.avi".parse::<ChannelSource>().is_err());
    }

    #[test]
    fn channel_files_parse_and_refuse_duplicates_and_unknown_keys() {
        let dir = std::env::temp_dir().join(format!("framefleet-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let good = dir.join("good.toml");
        std::fs::write(
            &good,
            "[[channel]]\nid = \"lobby\"\nsource = \"synthetic://640x480@10\"\nencoding = \"raw\"\n\
             topic_strategy = \"fan-out\"\npipelines = [\"detect\"]\n",
        )
        .expect("write");
        let channels = read_channel_file(&good).expect("parse");
        assert_eq!(channels[0].encoding, Some(EncodingArg::Raw));
        assert_eq!(channels[0].topic_strategy, Some(StrategyArg::FanOut));

        let duplicate = dir.join("duplicate.toml");
        std::fs::write(
            &duplicate,
            "[[channel]]\nid = \"a\"\nsource = \"x\"\n[[channel]]\nid = \"a\"\nsource = \"y\"\n",
        )
        .expect("write");
        assert!(matches!(
            read_channel_file(&duplicate),
            Err(ConfigError::Duplicate { .. })
        ));

        let unknown = dir.join("unknown.toml");
        std::fs::write(&unknown, "[[channel]]\nid = \"a\"\nsource = \"x\"\nwidht = 3\n").expect("write");
        let error = read_channel_file(&unknown).expect_err("unknown key").to_string();
        assert!(error.contains("widht"), "{error}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn the_binary_parses_its_flags_beside_the_shared_config_file_flag() {
        let args = [
            "framefleet-ingestor",
            "--channel",
            "a=/v.avi",
            "--channel-file",
            "/c.toml",
        ];
        let config: IngestorConfig =
            framefleet_common::config::parse_from(args.iter().map(Into::into).collect()).expect("parse");
        assert_eq!(config.channel_file.as_deref(), Some(Path::new("/c.toml")));
    }

    #[test]
    fn assignments_are_accepted_by_default_only_without_local_channels() {
        let parse = |args: &[&str]| IngestorConfig::try_parse_from(args).expect("parse");
        assert!(parse(&["framefleet-ingestor"]).accepts_assignments());
        assert!(!parse(&["framefleet-ingestor", "--channel", "a=/v.avi"]).accepts_assignments());
        assert!(
            parse(&[
                "framefleet-ingestor",
                "--channel",
                "a=/v.avi",
                "--accept-assignments",
                "true"
            ])
            .accepts_assignments()
        );
    }
}
