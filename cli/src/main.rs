//! `framefleet`: the admin CLI. Every command is one or a few gRPC calls, the same ones
//! grpcurl makes; output is for people by default and JSON with `--json`.
//!
//! Exit codes: 0 success, 1 other failure, 2 usage error, 3 not found, 4 already exists,
//! 5 invalid argument, 6 coordinator or its dependencies unavailable, 7 `watch` timed out,
//! 8 failed precondition (stale revision, draining channel, unconfirmed size change),
//! 9 unauthenticated, 10 `audit` found acknowledged frames without an outcome, 130 `watch`
//! interrupted by Ctrl-C (after printing the summary so far).

mod audit;
mod render;
mod snapshot;

use clap::{Args, Parser, Subcommand, ValueEnum};
use framefleet_common::args::CoordinatorArgs;
use framefleet_proto::client::CallError;
use framefleet_proto::client::CoordinatorChannel;
use framefleet_proto::v1::assignment_service_client::AssignmentServiceClient;
use framefleet_proto::v1::channel_service_client::ChannelServiceClient;
use framefleet_proto::v1::fleet_service_client::FleetServiceClient;
use framefleet_proto::v1::schema_service_client::SchemaServiceClient;
use framefleet_proto::v1::{
    AddSchemaVersionRequest, ChannelLedger, ChannelState, DeregisterChannelRequest, FleetStatus, FrameEncoding,
    FrameSchema, GetChannelRequest, GetFleetStatusRequest, GetSchemaRequest, IngestorReport, ListChannelsRequest,
    ListSchemaVersionsRequest, MoveChannelRequest, PixelFormat, RegisterChannelRequest, TopicStrategy,
    UpdateChannelRequest, WatchAssignmentsRequest, WorkerReport,
};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Writes to stdout. A reader that went away (`framefleet --json status | head`) ends the
/// program quietly with status 0, as other command-line tools do, instead of a panic.
fn write_stdout(text: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = stdout.write_fmt(text).and_then(|()| stdout.flush()) {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write the output: {error}");
        std::process::exit(1);
    }
}

macro_rules! out {
    ($($arg:tt)*) => {
        write_stdout(format_args!($($arg)*))
    };
}

macro_rules! outln {
    () => {
        write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

#[derive(Debug, Parser)]
#[command(name = "framefleet", version, about = "Administer a framefleet coordinator", after_help = EXIT_CODES)]
struct Cli {
    #[command(flatten)]
    coordinator: CoordinatorArgs,

    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,

    /// Deadline for each call, in seconds.
    #[arg(long, global = true, default_value_t = 10)]
    timeout_secs: u64,

    #[command(subcommand)]
    command: Command,
}

const EXIT_CODES: &str = "Exit codes: 0 ok, 1 failure, 2 usage (also an unusable --coordinator, token or CA file), 3 not found, 4 already exists, 5 invalid argument, 6 unavailable, 7 watch timed out, 8 failed precondition, 9 unauthenticated, 10 audit found frames without an outcome, 130 watch interrupted";

#[derive(Debug, Subcommand)]
enum Command {
    /// Manage channels (ChannelService).
    #[command(subcommand)]
    Channels(ChannelsCommand),
    /// Manage frame schemas (SchemaService).
    #[command(subcommand)]
    Schemas(SchemasCommand),
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
        /// Kafka bootstrap servers to read from; default: the coordinator's.
        #[arg(long, env = "FRAMEFLEET_KAFKA_BROKERS")]
        kafka_brokers: Option<String>,
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
        /// Kafka bootstrap servers to read from; default: the coordinator's.
        #[arg(long, env = "FRAMEFLEET_KAFKA_BROKERS")]
        kafka_brokers: Option<String>,
        /// Give up reading after this many seconds.
        #[arg(long, default_value_t = 60)]
        read_timeout_secs: u64,
    },
    /// Send one fleet report by hand (FleetService.ReportWorker / ReportIngestor), for scripts
    /// and checks; processes report by themselves.
    #[command(subcommand)]
    Report(ReportCommand),
}

#[derive(Debug, Subcommand)]
enum ChannelsCommand {
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
enum SchemasCommand {
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
enum ReportCommand {
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
struct SchemaArgs {
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
    fn to_proto(&self) -> FrameSchema {
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
struct PlacementArgs {
    #[arg(long, value_enum, default_value_t = StrategyArg::Dedicated)]
    strategy: StrategyArg,
    /// Fan-out pipeline (repeat for several).
    #[arg(long = "pipeline")]
    pipelines: Vec<String>,
}

impl PlacementArgs {
    fn strategy(&self) -> i32 {
        match self.strategy {
            StrategyArg::Dedicated => TopicStrategy::Dedicated,
            StrategyArg::SharedPool => TopicStrategy::SharedPool,
            StrategyArg::FanOut => TopicStrategy::FanOut,
        }
        .into()
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum EncodingArg {
    Raw,
    Jpeg,
    Png,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum PixelFormatArg {
    Rgb24,
    Bgr24,
    Gray8,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum StrategyArg {
    Dedicated,
    SharedPool,
    FanOut,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum StateArg {
    Active,
    Draining,
}

enum Failure {
    Status(tonic::Status),
    Other(anyhow::Error, u8),
}

impl From<tonic::Status> for Failure {
    fn from(status: tonic::Status) -> Self {
        Self::Status(status)
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match execute(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Status(status)) => {
            let error = CallError::new(format!("`framefleet {}`", command_words()), status);
            eprintln!("error: {error}");
            ExitCode::from(error.exit_code())
        }
        Err(Failure::Other(error, code)) => {
            eprintln!("error: {error:#}");
            ExitCode::from(code)
        }
    }
}

/// The subcommand as typed (`channels get`), without flags and their values.
fn command_words() -> String {
    let mut words = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg.starts_with("--") {
            // A global flag's value follows it unless it was written `--flag=value`.
            if !arg.contains('=') && !matches!(arg.as_str(), "--json" | "--until-drained") {
                args.next();
            }
            continue;
        }
        words.push(arg);
        if words.len() == 2 {
            break;
        }
    }
    words.join(" ")
}

fn print_channels(json: bool, channels: &[framefleet_proto::v1::Channel]) {
    if json {
        outln!("{}", render::channels_json(channels));
    } else {
        out!("{}", render::channels_table(channels));
    }
}

fn print_schemas(json: bool, schemas: &[FrameSchema]) {
    if json {
        let values: Vec<serde_json::Value> = schemas.iter().map(render::schema_value).collect();
        outln!("{}", serde_json::Value::Array(values));
    } else {
        out!("{}", render::schemas_table(schemas));
    }
}

async fn execute(cli: Cli) -> Result<(), Failure> {
    let timeout = Duration::from_secs(cli.timeout_secs.max(1));
    let options = cli.coordinator.client_options();
    let streaming = matches!(cli.command, Command::Assignments { .. });
    let channel = if streaming {
        framefleet_proto::client::connect_coordinator_for_streams(&cli.coordinator.address, timeout, &options).await
    } else {
        framefleet_proto::client::connect_coordinator(&cli.coordinator.address, timeout, &options).await
    }
    .map_err(|error| {
        let code = if error.is_usage_error() { 2 } else { 6 };
        Failure::Other(error.into(), code)
    })?;
    let mut channels = ChannelServiceClient::new(channel.clone());
    let mut schemas = SchemaServiceClient::new(channel.clone());
    let mut fleet = FleetServiceClient::new(channel.clone());
    let json = cli.json;
    match cli.command {
        Command::Channels(ChannelsCommand::List {
            prefix,
            state,
            topic,
            page_size,
            page_token,
        }) => {
            let state = match state {
                None => ChannelState::Unspecified,
                Some(StateArg::Active) => ChannelState::Active,
                Some(StateArg::Draining) => ChannelState::Draining,
            };
            let mut request = ListChannelsRequest {
                id_prefix: prefix,
                page_size: page_size.unwrap_or(1000),
                page_token,
                state: state.into(),
                topic,
            };
            let mut listed = Vec::new();
            loop {
                let page = channels.list_channels(request.clone()).await?.into_inner();
                listed.extend(page.channels);
                if page_size.is_some() || page.next_page_token.is_empty() {
                    if page_size.is_some() && !page.next_page_token.is_empty() {
                        eprintln!("next page: --page-token {}", page.next_page_token);
                    }
                    break;
                }
                request.page_token = page.next_page_token;
            }
            print_channels(json, &listed);
        }
        Command::Channels(ChannelsCommand::Get { channel_id }) => {
            let channel = channels
                .get_channel(GetChannelRequest { channel_id })
                .await?
                .into_inner();
            print_channels(json, std::slice::from_ref(&channel));
        }
        Command::Channels(ChannelsCommand::Register {
            channel_id,
            source,
            schema,
            placement,
            bytes_per_second,
            ingestor,
        }) => {
            let request = RegisterChannelRequest {
                channel_id,
                source_uri: source,
                schema: Some(schema.to_proto()),
                topic_strategy: placement.strategy(),
                pipelines: placement.pipelines.clone(),
                declared_bytes_per_second: bytes_per_second,
                ingestor_id: ingestor.unwrap_or_default(),
            };
            let response = channels.register_channel(request).await?.into_inner();
            let registered: Vec<_> = response.channel.into_iter().collect();
            print_channels(json, &registered);
            if !json {
                outln!(
                    "{}",
                    if response.created {
                        "created"
                    } else {
                        "already registered (identical)"
                    }
                );
            }
        }
        Command::Channels(ChannelsCommand::Update {
            channel_id,
            source,
            bytes_per_second,
            expected_revision,
        }) => {
            let request = UpdateChannelRequest {
                channel_id,
                source_uri: source,
                declared_bytes_per_second: bytes_per_second,
                expected_revision,
            };
            let channel = channels.update_channel(request).await?.into_inner();
            print_channels(json, std::slice::from_ref(&channel));
        }
        Command::Channels(ChannelsCommand::Deregister {
            channel_id,
            force,
            expected_revision,
        }) => {
            let request = DeregisterChannelRequest {
                channel_id,
                expected_revision,
                force,
            };
            let response = channels.deregister_channel(request).await?.into_inner();
            let channel: Vec<_> = response.channel.into_iter().collect();
            print_channels(json, &channel);
            if !json {
                outln!("{}", if response.deleted { "deleted" } else { "draining" });
            }
        }
        Command::Channels(ChannelsCommand::Move {
            channel_id,
            placement,
            expected_revision,
        }) => {
            let request = MoveChannelRequest {
                channel_id,
                topic_strategy: placement.strategy(),
                pipelines: placement.pipelines.clone(),
                expected_revision,
            };
            let channel = channels.move_channel(request).await?.into_inner();
            print_channels(json, std::slice::from_ref(&channel));
        }
        Command::Schemas(SchemasCommand::Add {
            channel_id,
            schema,
            allow_frame_size_change,
            expected_revision,
        }) => {
            let request = AddSchemaVersionRequest {
                channel_id,
                schema: Some(schema.to_proto()),
                allow_frame_size_change,
                expected_revision,
            };
            let added = schemas.add_schema_version(request).await?.into_inner();
            print_schemas(json, &[added]);
        }
        Command::Schemas(SchemasCommand::Get { channel_id, version }) => {
            let schema = schemas
                .get_schema(GetSchemaRequest { channel_id, version })
                .await?
                .into_inner();
            print_schemas(json, &[schema]);
        }
        Command::Schemas(SchemasCommand::List { channel_id }) => {
            let listed = schemas
                .list_schema_versions(ListSchemaVersionsRequest { channel_id })
                .await?
                .into_inner();
            print_schemas(json, &listed.schemas);
        }
        Command::Assignments {
            ingestor,
            after_revision,
            count,
        } => follow_assignments(channel, json, ingestor, after_revision, count).await?,
        Command::Health { service } => {
            use tonic_health::pb::health_check_response::ServingStatus;
            let response = tonic_health::pb::health_client::HealthClient::new(channel)
                .check(tonic_health::pb::HealthCheckRequest { service })
                .await?
                .into_inner();
            let status = ServingStatus::try_from(response.status).unwrap_or(ServingStatus::Unknown);
            if json {
                outln!("{}", serde_json::json!({ "status": status.as_str_name() }));
            } else {
                outln!("{}", status.as_str_name());
            }
            if status != ServingStatus::Serving {
                return Err(Failure::Other(
                    anyhow::anyhow!("the coordinator is {}", status.as_str_name()),
                    6,
                ));
            }
        }
        Command::Status => {
            let status = fleet.get_fleet_status(GetFleetStatusRequest {}).await?.into_inner();
            if json {
                // "drained" is decided over the registered channels, as `watch` decides it.
                let listed = all_channels(&mut channels).await?;
                outln!("{}", render::status_json(&status, &listed, None));
            } else {
                out!("{}", render::status_report(&status));
            }
        }
        Command::Snapshot {
            channel,
            out,
            kafka_brokers,
            read_timeout_secs,
        } => {
            let status = fleet.get_fleet_status(GetFleetStatusRequest {}).await?.into_inner();
            let kafka = status.kafka.clone().unwrap_or_default();
            let brokers = kafka_brokers.unwrap_or(kafka.bootstrap_servers);
            if brokers.is_empty() {
                return Err(Failure::Other(
                    anyhow::anyhow!("the coordinator did not say which Kafka it uses; pass --kafka-brokers"),
                    2,
                ));
            }
            let line = tokio::task::spawn_blocking(move || {
                snapshot::snapshot(
                    &brokers,
                    &kafka.results_topic,
                    &channel,
                    &out,
                    Duration::from_secs(read_timeout_secs),
                )
            })
            .await
            .map_err(|error| Failure::Other(error.into(), 1))?
            .map_err(|error| Failure::Other(error, 1))?;
            outln!("{line}");
        }
        Command::Audit {
            kafka_brokers,
            channel_prefix,
            read_timeout_secs,
            frame_topics,
        } => {
            let status = fleet.get_fleet_status(GetFleetStatusRequest {}).await?.into_inner();
            let mut topics: Vec<String> = Vec::new();
            if frame_topics {
                for channel in all_channels(&mut channels).await? {
                    if channel.channel_id.starts_with(&channel_prefix) {
                        topics.extend(channel.all_topics().iter().cloned());
                    }
                }
                topics.sort();
                topics.dedup();
            }
            let kafka = status.kafka.clone().unwrap_or_default();
            let brokers = kafka_brokers.unwrap_or(kafka.bootstrap_servers);
            if brokers.is_empty() {
                return Err(Failure::Other(
                    anyhow::anyhow!("the coordinator did not say which Kafka it uses; pass --kafka-brokers"),
                    2,
                ));
            }
            let prefix = channel_prefix.clone();
            let outcomes = tokio::task::spawn_blocking(move || {
                framefleet_common::audit::read(
                    &brokers,
                    &framefleet_common::audit::Topics {
                        results: &kafka.results_topic,
                        dead_letters: &kafka.dead_letter_topic,
                        frames: &topics,
                    },
                    &prefix,
                    Duration::from_secs(read_timeout_secs),
                )
            })
            .await
            .map_err(|error| Failure::Other(error.into(), 1))?
            .map_err(|error| Failure::Other(error.into(), 6))?;
            let report = audit::audit_report(&status, &outcomes, &channel_prefix, frame_topics);
            if json {
                outln!("{}", report.json);
            } else {
                out!("{}", report.text);
            }
            if report.missing > 0 {
                return Err(Failure::Other(
                    anyhow::anyhow!("{} frames have no result or dead letter", report.missing),
                    10,
                ));
            }
        }
        Command::Watch {
            until_drained,
            timeout_secs,
            interval_ms,
        } => {
            watch(
                &mut fleet,
                &mut channels,
                json,
                until_drained,
                timeout_secs.map(Duration::from_secs),
                Duration::from_millis(interval_ms.max(100)),
            )
            .await?;
        }
        Command::Report(ReportCommand::Worker {
            worker_id,
            frames_processed,
            frames_per_second,
            device,
        }) => {
            let report = WorkerReport {
                worker_id,
                frames_processed,
                frames_per_second,
                device,
                lag_frames: -1,
                ..WorkerReport::default()
            };
            fleet.report_worker(report).await?;
            if !json {
                outln!("reported");
            }
        }
        Command::Report(ReportCommand::Ingestor {
            ingestor_id,
            channel,
            captured,
            acknowledged,
        }) => {
            let report = IngestorReport {
                ingestor_id,
                channels: vec![ChannelLedger {
                    channel_id: channel,
                    frames_captured: captured,
                    frames_acknowledged: acknowledged,
                    ..ChannelLedger::default()
                }],
                // A unary report registers nothing, so nothing can be assigned through it.
                accepts_assignments: false,
            };
            fleet.report_ingestor(report).await?;
            if !json {
                outln!("reported");
            }
        }
    }
    Ok(())
}

/// Prints each assignment update as it arrives: one JSON object per line with `--json`.
async fn follow_assignments(
    channel: CoordinatorChannel,
    json: bool,
    ingestor_id: String,
    after_revision: i64,
    count: Option<usize>,
) -> Result<(), Failure> {
    let mut client = AssignmentServiceClient::new(channel);
    let mut updates = client
        .watch_assignments(WatchAssignmentsRequest {
            ingestor_id,
            after_revision,
        })
        .await?
        .into_inner();
    let mut received = 0usize;
    while count.is_none_or(|count| received < count) {
        let update = tokio::select! {
            update = updates.message() => update?,
            _ = tokio::signal::ctrl_c() => return Err(Failure::Other(anyhow::anyhow!("interrupted"), 130)),
        };
        let Some(update) = update else {
            return Err(Failure::Other(anyhow::anyhow!("the coordinator ended the watch"), 6));
        };
        if json {
            outln!("{}", render::assignment_update_json(&update));
        } else {
            outln!("{}", render::assignment_update_line(&update));
        }
        received += 1;
    }
    Ok(())
}

/// Every channel, all pages.
async fn all_channels(
    channels: &mut ChannelServiceClient<CoordinatorChannel>,
) -> Result<Vec<framefleet_proto::v1::Channel>, tonic::Status> {
    let mut request = ListChannelsRequest {
        page_size: 1000,
        ..ListChannelsRequest::default()
    };
    let mut listed = Vec::new();
    loop {
        let page = channels.list_channels(request.clone()).await?.into_inner();
        listed.extend(page.channels);
        if page.next_page_token.is_empty() {
            return Ok(listed);
        }
        request.page_token = page.next_page_token;
    }
}

/// One call of a watch's poll: its answer, `None` after a transient failure (printed; a
/// missed poll is not worth stopping the watch for), or the failure that ends the watch.
fn missed_poll_or<T>(what: &str, outcome: Result<T, tonic::Status>) -> Result<Option<T>, Failure> {
    match outcome {
        Ok(answer) => Ok(Some(answer)),
        Err(status) => {
            let error = CallError::new(what, status);
            if !error.is_transient() {
                return Err(error.status.into());
            }
            eprintln!("{error}");
            Ok(None)
        }
    }
}

/// The fleet status once every registered worker has reported since this call (a few
/// seconds at most); `None` when that does not happen in time or the status cannot be read.
async fn reports_after_drain(fleet: &mut FleetServiceClient<CoordinatorChannel>) -> Option<FleetStatus> {
    const LONGEST_WAIT: Duration = Duration::from_secs(5);
    let since = Instant::now();
    while since.elapsed() < LONGEST_WAIT {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let status = fleet
            .get_fleet_status(GetFleetStatusRequest {})
            .await
            .ok()?
            .into_inner();
        let waited_ms = u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX);
        let fresh = status
            .workers
            .iter()
            .filter(|worker| worker.registered)
            .all(|worker| worker.last_seen_ms_ago < waited_ms);
        if fresh {
            return Some(status);
        }
    }
    None
}

async fn watch(
    fleet: &mut FleetServiceClient<CoordinatorChannel>,
    channels: &mut ChannelServiceClient<CoordinatorChannel>,
    json: bool,
    until_drained: bool,
    timeout: Option<Duration>,
    interval: Duration,
) -> Result<(), Failure> {
    let started = Instant::now();
    let mut ticker = tokio::time::interval(interval);
    let mut last: Option<FleetStatus> = None;
    let mut interrupted = false;
    let mut drain = render::DrainTracker::default();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = tokio::signal::ctrl_c() => {
                interrupted = true;
                break;
            }
        }
        let polled = fleet
            .get_fleet_status(GetFleetStatusRequest {})
            .await
            .map(tonic::Response::into_inner);
        let Some(status) = missed_poll_or("fleet status", polled)? else {
            continue;
        };
        let elapsed = started.elapsed();
        let Some(listed) = missed_poll_or("listing channels", all_channels(channels).await)? else {
            continue;
        };
        let drained = until_drained && drain.drained(&status, &listed);
        let status = if drained {
            // Every frame is committed; the worker counts come from reports, which reach the
            // coordinator a report interval later. The last line and the summary wait for one
            // report from every registered worker made after this moment, so they include
            // every result.
            reports_after_drain(fleet).await.unwrap_or(status)
        } else {
            status
        };
        if json {
            outln!("{}", render::status_json(&status, &listed, Some(elapsed)));
        } else if until_drained {
            outln!(
                "{}  [until drained: {} channels]",
                render::progress_line(&status, elapsed),
                drain.tracked()
            );
        } else {
            outln!("{}", render::progress_line(&status, elapsed));
        }
        last = Some(status);
        if drained {
            break;
        }
        if timeout.is_some_and(|limit| elapsed >= limit) {
            if let Some(status) = &last {
                eprint!("{}", render::status_report(status));
            }
            return Err(Failure::Other(
                anyhow::anyhow!("not drained after {:.0} s", elapsed.as_secs_f64()),
                7,
            ));
        }
    }
    if let (Some(status), false) = (&last, json) {
        outln!();
        // The channels' topics, for the per-channel accounting; a summary without them is
        // still worth printing.
        let listed = all_channels(channels).await.unwrap_or_default();
        out!("{}", render::final_summary(status, started.elapsed(), &listed));
    }
    if interrupted {
        // 130 (128 + SIGINT) tells a calling script that the user interrupted the run.
        return Err(Failure::Other(anyhow::anyhow!("interrupted"), 130));
    }
    Ok(())
}
