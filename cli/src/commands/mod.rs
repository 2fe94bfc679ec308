//! Each command's calls, one file per area; [`execute`] connects and dispatches.

mod assignments;
mod channels;
mod clients;
mod fleet;
mod models;
mod pipelines;
mod readback;
mod schemas;
mod watch;

use crate::args::{Cli, Command};
use crate::failure::Failure;
use framefleet_proto::v1::channel_service_client::ChannelServiceClient;
use framefleet_proto::v1::fleet_service_client::FleetServiceClient;
use framefleet_proto::v1::model_service_client::ModelServiceClient;
use framefleet_proto::v1::pipeline_service_client::PipelineServiceClient;
use framefleet_proto::v1::schema_service_client::SchemaServiceClient;
use std::time::Duration;

/// Runs the command line's command against its coordinator.
pub(crate) async fn execute(cli: Cli) -> Result<(), Failure> {
    let timeout = Duration::from_secs(cli.timeout_secs.max(1));
    let options = cli
        .coordinator
        .client_options()
        .map_err(|error| Failure::Other(error.into(), 2))?;
    // A stream meant to stay open, and a model push (its weights take as long as they take to
    // upload, hash and replicate), carry no per-call deadline.
    let streaming = matches!(
        cli.command,
        Command::Assignments { .. } | Command::Models(crate::args::ModelsCommand::Push { .. })
    );
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
    let mut fleet = FleetServiceClient::new(channel.clone());
    let mut pipelines = PipelineServiceClient::new(channel.clone());
    let json = cli.json;
    match cli.command {
        Command::Channels(command) => channels::run(command, &mut channels, json).await,
        Command::Schemas(command) => schemas::run(command, &mut SchemaServiceClient::new(channel), json).await,
        Command::Pipelines(command) => pipelines::run(command, &mut pipelines, json).await,
        Command::Models(command) => models::run(command, &mut ModelServiceClient::new(channel), json).await,
        Command::Assignments {
            ingestor,
            after_revision,
            count,
        } => assignments::follow(channel, json, ingestor, after_revision, count).await,
        Command::Health { service } => fleet::health(channel, service, json).await,
        Command::Status => fleet::status(&mut fleet, &mut channels, json).await,
        Command::Report(command) => fleet::report(command, &mut fleet, json).await,
        Command::Snapshot {
            channel,
            out,
            kafka,
            read_timeout_secs,
            pipeline,
        } => {
            let request = readback::SnapshotRequest {
                channel,
                out,
                kafka,
                read_timeout_secs,
                pipeline,
            };
            readback::snapshot(&mut fleet, &mut pipelines, request).await
        }
        Command::Audit {
            kafka,
            channel_prefix,
            read_timeout_secs,
            frame_topics,
            pipeline,
        } => {
            let request = readback::AuditRequest {
                kafka,
                channel_prefix,
                read_timeout_secs,
                frame_topics,
                pipeline,
            };
            readback::audit(&mut fleet, &mut channels, &mut pipelines, request, json).await
        }
        Command::Watch {
            until_drained,
            timeout_secs,
            interval_ms,
        } => {
            let settings = watch::WatchSettings {
                json,
                until_drained,
                timeout: timeout_secs.map(Duration::from_secs),
                interval: Duration::from_millis(interval_ms.max(100)),
            };
            watch::watch(&mut fleet, &mut channels, &settings).await
        }
    }
}
