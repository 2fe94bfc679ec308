//! `framefleet status`, `health` and `report …` (FleetService and gRPC health).

use super::channels::all_channels;
use super::clients::{Channels, Fleet};
use crate::args::ReportCommand;
use crate::failure::Failure;
use crate::output::{out, outln};
use crate::render;
use framefleet_proto::client::CoordinatorChannel;
use framefleet_proto::v1::{ChannelLedger, GetFleetStatusRequest, IngestorReport, WorkerReport};

pub(super) async fn status(fleet: &mut Fleet, channels: &mut Channels, json: bool) -> Result<(), Failure> {
    let status = fleet.get_fleet_status(GetFleetStatusRequest {}).await?.into_inner();
    if json {
        // "drained" is decided over the registered channels, as `watch` decides it.
        let listed = all_channels(channels).await?;
        outln!("{}", render::status_json(&status, &listed, None));
    } else {
        out!("{}", render::status_report(&status));
    }
    Ok(())
}

/// Asks the gRPC health service; anything but SERVING fails with exit code 6.
pub(super) async fn health(channel: CoordinatorChannel, service: String, json: bool) -> Result<(), Failure> {
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
    Ok(())
}

/// One report sent by hand.
pub(super) async fn report(command: ReportCommand, fleet: &mut Fleet, json: bool) -> Result<(), Failure> {
    match command {
        ReportCommand::Worker {
            worker_id,
            frames_processed,
            frames_per_second,
            device,
        } => {
            let report = WorkerReport {
                worker_id,
                frames_processed,
                frames_per_second,
                device,
                lag_frames: -1,
                ..WorkerReport::default()
            };
            fleet.report_worker(report).await?;
        }
        ReportCommand::Ingestor {
            ingestor_id,
            channel,
            captured,
            acknowledged,
        } => {
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
        }
    }
    if !json {
        outln!("reported");
    }
    Ok(())
}
