//! The command line: every command, subcommand and flag (clap derive).

use clap::{Args, Parser, Subcommand, ValueEnum};
use framefleet_common::args::CoordinatorArgs;
use framefleet_common::kafka::security::KafkaSecurityArgs;
use framefleet_proto::v1::{DetectStage, FrameEncoding, FrameSchema, PipelineSpec, PixelFormat, TopicStrategy};

#[derive(Debug, Parser)]
#[command(name = "framefleet", version, about = "Administer a framefleet coordinator", after_help = EXIT_CODES)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) coordinator: CoordinatorArgs,

    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub(crate) json: bool,

    /// Deadline for each call, in seconds.
    #[arg(long, global = true, default_value_t = 10)]
    pub(crate) timeout_secs: u64,

    #[command(subcommand)]
    pub(crate) command: Command,
}

const EXIT_CODES: &str = "Exit codes: 0 ok, 1 failure, 2 usage (also an unusable --coordinator, token or CA file, or Kafka security settings), 3 not found, 4 already exists, 5 invalid argument, 6 unavailable, 7 watch timed out, 8 failed precondition, 9 unauthenticated, 10 audit found frames without an outcome, 130 watch interrupted";

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Manage channels (ChannelService).
    #[command(subcommand)]
    Channels(ChannelsCommand),
    /// Manage frame schemas (SchemaService).
    #[command(subcommand)]
    Schemas(SchemasCommand),
    /// Manage pipelines: what workers do with frames, versioned (PipelineService).
    #[command(subcommand)]
    Pipelines(PipelinesCommand),
    /// Register detectors the fleet ships to its workers, versioned (ModelService).
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Follow channel assignments (AssignmentService.WatchAssignments).
    Assignments {
        /// Only this ingestor's channels; default every channel.
        #[arg(long, default_value = "")]
        ingestor: String,
        /// Resume after this revision (0: start with a full listing).
        #[arg(long, default_value_t = 0)]
        after_revision: i64,
        /// Exit after this many updates (default: until Ctrl-C).
        #[arg(long)]
        count: Option<usize>,
    },
    /// One snapshot of the fleet: workers, ingestors, channels, per-topic accumulate / consume / lag.
    Status,
    /// Ask the coordinator's gRPC health service (grpc.health.v1.Health/Check); exit 0 when it
    /// says SERVING, 6 otherwise. For container health checks and load balancers.
    Health {
        /// The service to ask about; empty: the server as a whole.
        #[arg(long, default_value = "")]
        service: String,
    },
    /// Live progress until stopped, or until everything ingested is processed.
    Watch {
        /// Exit once every ingestor has finished its sources and every topic's lag is 0.
        #[arg(long)]
        until_drained: bool,
        /// Give up (exit 7) after this many seconds.
        #[arg(long)]
        timeout_secs: Option<u64>,
        /// Refresh interval in milliseconds.
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
    },
    /// End-to-end audit read from Kafka itself: per channel run, the frames Kafka acknowledged
    /// (the run's ledger kept in etcd) against the results and dead letters on the fleet's
    /// topics, each frame counted once and duplicates apart. Exits 10 when an acknowledged frame
    /// has no outcome yet (run it once `watch --until-drained` says drained).
    Audit {
        #[command(flatten)]
        kafka: ReadbackKafka,
        /// Only channels whose id starts with this.
        #[arg(long, default_value = "")]
        channel_prefix: String,
        /// Give up reading the topics after this many seconds.
        #[arg(long, default_value_t = 120)]
        read_timeout_secs: u64,
        /// Also read the channels' own frame topics, and count every frame found there
        /// without a result or dead letter (not only the frames the ledgers count).
        #[arg(long)]
        frame_topics: bool,
        /// Audit one pipeline: its results topic (the current version's, from the
        /// coordinator) and only the channels that name it; results are also counted per
        /// pipeline version.
        #[arg(long)]
        pipeline: Option<String>,
    },
    /// Draw a channel's latest frame with its detections as a PNG (the latest result with
    /// detections, else the latest result, read back from Kafka), and print the channel's
    /// detection tally: results, frames the detector ran on, frames gated, objects by label.
    Snapshot {
        /// The channel id.
        channel: String,
        /// Where to write the PNG.
        #[arg(long)]
        out: std::path::PathBuf,
        #[command(flatten)]
        kafka: ReadbackKafka,
        /// Give up reading after this many seconds.
        #[arg(long, default_value_t = 60)]
        read_timeout_secs: u64,
        /// Read the results of this pipeline (its current version's results topic) instead
        /// of those of the workers serving no pipeline.
        #[arg(long)]
        pipeline: Option<String>,
    },
    /// Send one fleet report by hand (FleetService.ReportWorker / ReportIngestor), for scripts
    /// and checks; processes report by themselves.
    #[command(subcommand)]
    Report(ReportCommand),
}

/// How `audit` and `snapshot` reach Kafka.
#[derive(Debug, Clone, Args)]
pub(crate) struct ReadbackKafka {
    /// Kafka bootstrap servers to read from; default: the coordinator's.
    #[arg(long, env = "FRAMEFLEET_KAFKA_BROKERS")]
    pub(crate) kafka_brokers: Option<String>,
    #[command(flatten)]
    pub(crate) security: KafkaSecurityArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ChannelsCommand {
    /// List channels (every page unless --page-size is given).
    List {
        /// Only ids that start with this.
        #[arg(long, default_value = "")]
        prefix: String,
        #[arg(long, value_enum)]
        state: Option<StateArg>,
        /// Only channels that write to this topic.
        #[arg(long, default_value = "")]
        topic: String,
        /// Fetch one page of this size and print the next page token.
        #[arg(long)]
        page_size: Option<u32>,
        #[arg(long, default_value = "")]
        page_token: String,
    },
    /// Show one channel.
    Get { channel_id: String },
    /// Register a channel (idempotent for an identical definition).
    Register {
        channel_id: String,
        #[arg(long)]
        source: String,
        #[command(flatten)]
        schema: SchemaArgs,
        #[command(flatten)]
        placement: PlacementArgs,
        /// Declared load for pool balancing (default: raw frame bytes × fps).
        #[arg(long, default_value_t = 0)]
        bytes_per_second: u64,
        /// Pin the channel to this ingestor (it is moved there, also if already registered);
        /// by default the coordinator assigns it to an ingestor that accepts assignments.
        #[arg(long)]
        ingestor: Option<String>,
    },
    /// Change a channel's source or declared load.
    Update {
        channel_id: String,
        #[arg(long)]
        source: Option<String>,
        #[arg(long)]
        bytes_per_second: Option<u64>,
        /// Apply only if the channel is still at this revision.
        #[arg(long, default_value_t = 0)]
        expected_revision: i64,
    },
    /// Stop capture and delete the channel once its frames are processed.
    Deregister {
        channel_id: String,
        /// Delete now, without draining.
        #[arg(long)]
        force: bool,
        #[arg(long, default_value_t = 0)]
        expected_revision: i64,
    },
    /// Send the channel's future frames to the topics of another strategy.
    Move {
        channel_id: String,
        #[command(flatten)]
        placement: PlacementArgs,
        #[arg(long, default_value_t = 0)]
        expected_revision: i64,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum SchemasCommand {
    /// Add the next schema version of a channel.
    Add {
        channel_id: String,
        #[command(flatten)]
        schema: SchemaArgs,
        /// Confirm that the new version changes the frame size.
        #[arg(long)]
        allow_frame_size_change: bool,
        #[arg(long, default_value_t = 0)]
        expected_revision: i64,
    },
    /// Show one schema version (0: the current one).
    Get {
        channel_id: String,
        #[arg(long, default_value_t = 0)]
        version: u32,
    },
    /// List every schema version of a channel.
    List { channel_id: String },
}

#[derive(Debug, Subcommand)]
pub(crate) enum PipelinesCommand {
    /// Create a pipeline (version 1) or add its next version; a spec equal to the current
    /// version's adds nothing.
    Create {
        /// 1–32 letters, digits, `-` and `_`.
        name: String,
        #[command(flatten)]
        spec: PipelineSpecArgs,
        /// Why this version: kept with it.
        #[arg(long, default_value = "", hide_default_value = true)]
        description: String,
        /// Add the version only if the pipeline is still at this revision (0: any).
        #[arg(long, default_value_t = 0)]
        expected_revision: i64,
    },
    /// Show one version of a pipeline (0: the current one).
    Get {
        name: String,
        #[arg(long, default_value_t = 0)]
        version: u32,
    },
    /// List pipelines with their current version.
    List {
        /// Only names that start with this.
        #[arg(long, default_value = "")]
        prefix: String,
    },
    /// List every version of a pipeline, oldest first.
    Versions { name: String },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ModelsCommand {
    /// Register a converted model (its next version, or its first): the coordinator checks the
    /// weights against the manifest's SHA-256 and stores them in Kafka, where every worker
    /// fetches them. The newest version's weights and manifest again add nothing.
    Push {
        /// The model's name: must be the manifest's `name`.
        name: String,
        /// The model directory `framefleet-model-convert` wrote, or its manifest.json.
        path: std::path::PathBuf,
        /// Why this version: kept with it.
        #[arg(long, default_value = "", hide_default_value = true)]
        description: String,
    },
    /// Show one version of a model (0: the newest).
    Get {
        name: String,
        #[arg(long, default_value_t = 0)]
        version: u32,
    },
    /// List models with their newest version.
    List {
        /// Only names that start with this.
        #[arg(long, default_value = "")]
        prefix: String,
    },
    /// List every version of a model, oldest first.
    Versions { name: String },
}

/// A pipeline's stages and outputs; the detect settings are the worker's flags of the same
/// names.
#[derive(Debug, Args)]
pub(crate) struct PipelineSpecArgs {
    /// Run the luma analysis (statistics, motion) on each frame (`true`/`false`).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    analysis: bool,
    /// Run this detector on each frame: a model registered with `framefleet models push`.
    #[arg(long)]
    detect_model: Option<String>,
    /// The model version to run [default: its newest when the pipeline version is created].
    #[arg(long, requires = "detect_model")]
    detect_model_version: Option<u32>,
    /// Detections scoring below this (0–1) are left out [coordinator's default: 0.5].
    #[arg(long, requires = "detect_model")]
    detect_min_score: Option<f32>,
    /// Keep only these labels (comma-separated; default every label of the model).
    #[arg(long, value_delimiter = ',', requires = "detect_model")]
    detect_labels: Vec<String>,
    /// At most this many detections per frame [default: 100].
    #[arg(long, requires = "detect_model")]
    detect_max: Option<u32>,
    /// Run the detector on every Nth frame [default: 1].
    #[arg(long, requires = "detect_model")]
    detect_every_nth_frame: Option<u32>,
    /// Skip the detector where the analysis saw no motion (`true`/`false`) [default: on
    /// when the analysis runs].
    #[arg(long, requires = "detect_model", action = clap::ArgAction::Set)]
    motion_gate: Option<bool>,
    /// Where results go [default: framefleet.results.<pipeline>].
    #[arg(long, default_value = "", hide_default_value = true)]
    results_topic: String,
    /// Also write each result with a detection to this topic.
    #[arg(long, default_value = "", hide_default_value = true)]
    events_topic: String,
}

impl PipelineSpecArgs {
    pub(crate) fn to_proto(&self) -> PipelineSpec {
        PipelineSpec {
            analysis: self.analysis,
            detect: self.detect_model.as_ref().map(|model| DetectStage {
                model: model.clone(),
                min_score: self.detect_min_score,
                labels: self.detect_labels.clone(),
                max_detections: self.detect_max.unwrap_or(0),
                every_nth_frame: self.detect_every_nth_frame.unwrap_or(0),
                motion_gate: self.motion_gate,
                model_version: self.detect_model_version.unwrap_or(0),
                model_sha256: String::new(),
            }),
            results_topic: self.results_topic.clone(),
            events_topic: self.events_topic.clone(),
        }
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum ReportCommand {
    Worker {
        worker_id: String,
        #[arg(long, default_value_t = 0)]
        frames_processed: u64,
        #[arg(long, default_value_t = 0.0)]
        frames_per_second: f64,
        #[arg(long, default_value = "cpu")]
        device: String,
    },
    Ingestor {
        ingestor_id: String,
        #[arg(long)]
        channel: String,
        #[arg(long, default_value_t = 0)]
        captured: u64,
        #[arg(long, default_value_t = 0)]
        acknowledged: u64,
    },
}

#[derive(Debug, Args)]
pub(crate) struct SchemaArgs {
    #[arg(long)]
    width: u32,
    #[arg(long)]
    height: u32,
    #[arg(long, default_value_t = 25.0)]
    fps: f64,
    #[arg(long, value_enum, default_value_t = EncodingArg::Jpeg)]
    encoding: EncodingArg,
    #[arg(long, value_enum, default_value_t = PixelFormatArg::Rgb24)]
    pixel_format: PixelFormatArg,
}

impl SchemaArgs {
    pub(crate) fn to_proto(&self) -> FrameSchema {
        let pixel_format = match self.pixel_format {
            PixelFormatArg::Rgb24 => PixelFormat::Rgb24,
            PixelFormatArg::Bgr24 => PixelFormat::Bgr24,
            PixelFormatArg::Gray8 => PixelFormat::Gray8,
        };
        let colour_channels = pixel_format.channel_count().unwrap_or(3);
        let encoding = match self.encoding {
            EncodingArg::Raw => FrameEncoding::Raw,
            EncodingArg::Jpeg => FrameEncoding::Jpeg,
            EncodingArg::Png => FrameEncoding::Png,
        };
        FrameSchema {
            version: 0,
            width: self.width,
            height: self.height,
            channels: colour_channels,
            pixel_format: pixel_format.into(),
            encoding: encoding.into(),
            fps: self.fps,
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct PlacementArgs {
    #[arg(long, value_enum, default_value_t = StrategyArg::Dedicated)]
    strategy: StrategyArg,
    /// A registered pipeline that processes the channel's frames, in its own consumer group
    /// (repeat for several; fan-out writes one topic per pipeline). None: workers that serve
    /// no pipeline process them.
    #[arg(long = "pipeline")]
    pub(crate) pipelines: Vec<String>,
}

impl PlacementArgs {
    pub(crate) fn strategy(&self) -> i32 {
        match self.strategy {
            StrategyArg::Dedicated => TopicStrategy::Dedicated,
            StrategyArg::SharedPool => TopicStrategy::SharedPool,
            StrategyArg::FanOut => TopicStrategy::FanOut,
        }
        .into()
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum EncodingArg {
    Raw,
    Jpeg,
    Png,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum PixelFormatArg {
    Rgb24,
    Bgr24,
    Gray8,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum StrategyArg {
    Dedicated,
    SharedPool,
    FanOut,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum StateArg {
    Active,
    Draining,
}

#[cfg(test)]
mod tests {
    /// clap checks the flags (unique ids and names, valid relations) only when a command is
    /// built; this builds it in every test run rather than in the first invocation.
    #[test]
    fn the_flags_are_consistent() {
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}
