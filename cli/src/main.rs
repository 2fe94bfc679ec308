//! `framefleet`: the admin CLI. Every command is one or a few gRPC calls, the same ones
//! grpcurl makes; output is for people by default and JSON with `--json`.
//!
//! Exit codes: 0 success, 1 other failure, 2 usage error, 3 not found, 4 already exists,
//! 5 invalid argument, 6 coordinator or its dependencies unavailable, 7 `watch` timed out,
//! 130 `watch` interrupted by Ctrl-C (after printing the summary so far).

mod render;

use clap::{Parser, Subcommand, ValueEnum};
use framefleet_proto::v1::channel_service_client::ChannelServiceClient;
use framefleet_proto::v1::fleet_service_client::FleetServiceClient;
use framefleet_proto::v1::{
    FleetStatus, FrameEncoding, FrameSchema, GetChannelRequest, GetFleetStatusRequest, ListChannelsRequest,
    PixelFormat, RegisterChannelRequest,
};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
#[command(name = "framefleet", version, about = "Administer a framefleet coordinator", after_help = EXIT_CODES)]
struct Cli {
    /// Coordinator gRPC address.
    #[arg(
        long,
        global = true,
        env = "FRAMEFLEET_COORDINATOR",
        default_value = "http://127.0.0.1:50051"
    )]
    coordinator: String,

    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,

    /// Deadline for each call, in seconds.
    #[arg(long, global = true, default_value_t = 10)]
    timeout_secs: u64,

    #[command(subcommand)]
    command: Command,
}

const EXIT_CODES: &str = "Exit codes: 0 ok, 1 failure, 2 usage, 3 not found, 4 already exists, 5 invalid argument, 6 unavailable, 7 watch timed out, 130 watch interrupted";

#[derive(Debug, Subcommand)]
enum Command {
    /// Manage channels.
    #[command(subcommand)]
    Channels(ChannelsCommand),
    /// One snapshot of the fleet: workers, ingestors, per-topic accumulate / consume / lag.
    Status,
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
}

#[derive(Debug, Subcommand)]
enum ChannelsCommand {
    /// List channels, optionally only those whose id starts with a prefix.
    List {
        #[arg(long, default_value = "")]
        prefix: String,
    },
    /// Show one channel.
    Get { channel_id: String },
    /// Register a channel (idempotent for an identical definition).
    Register {
        channel_id: String,
        #[arg(long)]
        source: String,
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
    },
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
            eprintln!("error: {:?}: {}", status.code(), status.message());
            ExitCode::from(exit_code_for(status.code()))
        }
        Err(Failure::Other(error, code)) => {
            eprintln!("error: {error:#}");
            ExitCode::from(code)
        }
    }
}

fn exit_code_for(code: tonic::Code) -> u8 {
    match code {
        tonic::Code::NotFound => 3,
        tonic::Code::AlreadyExists => 4,
        tonic::Code::InvalidArgument => 5,
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => 6,
        _ => 1,
    }
}

async fn execute(cli: Cli) -> Result<(), Failure> {
    let timeout = Duration::from_secs(cli.timeout_secs.max(1));
    let channel = framefleet_proto::client::connect_coordinator(&cli.coordinator, timeout)
        .await
        .map_err(|error| Failure::Other(error.into(), 6))?;
    let mut channels = ChannelServiceClient::new(channel.clone());
    let mut fleet = FleetServiceClient::new(channel);
    match cli.command {
        Command::Channels(ChannelsCommand::List { prefix }) => {
            let response = channels
                .list_channels(ListChannelsRequest { id_prefix: prefix })
                .await?
                .into_inner();
            if cli.json {
                println!("{}", render::channels_json(&response.channels));
            } else {
                print!("{}", render::channels_table(&response.channels));
            }
        }
        Command::Channels(ChannelsCommand::Get { channel_id }) => {
            let channel = channels
                .get_channel(GetChannelRequest { channel_id })
                .await?
                .into_inner();
            if cli.json {
                println!("{}", render::channels_json(std::slice::from_ref(&channel)));
            } else {
                print!("{}", render::channels_table(std::slice::from_ref(&channel)));
            }
        }
        Command::Channels(ChannelsCommand::Register {
            channel_id,
            source,
            width,
            height,
            fps,
            encoding,
            pixel_format,
        }) => {
            let (pixel_format, colour_channels) = match pixel_format {
                PixelFormatArg::Rgb24 => (PixelFormat::Rgb24, 3),
                PixelFormatArg::Bgr24 => (PixelFormat::Bgr24, 3),
                PixelFormatArg::Gray8 => (PixelFormat::Gray8, 1),
            };
            let encoding = match encoding {
                EncodingArg::Raw => FrameEncoding::Raw,
                EncodingArg::Jpeg => FrameEncoding::Jpeg,
                EncodingArg::Png => FrameEncoding::Png,
            };
            let request = RegisterChannelRequest {
                channel_id,
                source_uri: source,
                schema: Some(FrameSchema {
                    version: 1,
                    width,
                    height,
                    channels: colour_channels,
                    pixel_format: pixel_format.into(),
                    encoding: encoding.into(),
                    fps,
                }),
            };
            let response = channels.register_channel(request).await?.into_inner();
            let registered: Vec<_> = response.channel.into_iter().collect();
            if cli.json {
                println!("{}", render::channels_json(&registered));
            } else {
                print!("{}", render::channels_table(&registered));
                println!(
                    "{}",
                    if response.created {
                        "created"
                    } else {
                        "already registered (identical)"
                    }
                );
            }
        }
        Command::Status => {
            let status = fleet.get_fleet_status(GetFleetStatusRequest {}).await?.into_inner();
            if cli.json {
                println!("{}", render::status_json(&status, None));
            } else {
                print!("{}", render::status_report(&status));
            }
        }
        Command::Watch {
            until_drained,
            timeout_secs,
            interval_ms,
        } => {
            watch(
                &mut fleet,
                cli.json,
                until_drained,
                timeout_secs.map(Duration::from_secs),
                Duration::from_millis(interval_ms.max(100)),
            )
            .await?;
        }
    }
    Ok(())
}

async fn watch(
    fleet: &mut FleetServiceClient<tonic::transport::Channel>,
    json: bool,
    until_drained: bool,
    timeout: Option<Duration>,
    interval: Duration,
) -> Result<(), Failure> {
    let started = Instant::now();
    let mut ticker = tokio::time::interval(interval);
    let mut last: Option<FleetStatus> = None;
    let mut interrupted = false;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = tokio::signal::ctrl_c() => {
                interrupted = true;
                break;
            }
        }
        let status = match fleet.get_fleet_status(GetFleetStatusRequest {}).await {
            Ok(response) => response.into_inner(),
            // A missed poll is not worth stopping the watch for.
            Err(status) if matches!(status.code(), tonic::Code::Unavailable | tonic::Code::DeadlineExceeded) => {
                eprintln!("coordinator not answering: {}", status.message());
                continue;
            }
            Err(status) => return Err(status.into()),
        };
        let elapsed = started.elapsed();
        if json {
            println!("{}", render::status_json(&status, Some(elapsed)));
        } else {
            println!("{}", render::progress_line(&status, elapsed));
        }
        let drained = render::is_drained(&status);
        last = Some(status);
        if until_drained && drained {
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
        println!();
        print!("{}", render::final_summary(status, started.elapsed()));
    }
    if interrupted {
        // 130 (128 + SIGINT) tells a calling script that the user interrupted the run.
        return Err(Failure::Other(anyhow::anyhow!("interrupted"), 130));
    }
    Ok(())
}
