//! `framefleet audit` and `snapshot`: commands that read the fleet's topics back from Kafka.

use super::channels::all_channels;
use super::clients::{Channels, Fleet, Pipelines};
use crate::args::ReadbackKafka;
use crate::failure::Failure;
use crate::output::{out, outln};
use crate::{audit, snapshot};
use framefleet_common::audit::ChannelFilter;
use framefleet_common::kafka::KafkaConnection;
use framefleet_common::kafka::security::KafkaSecurity;
use framefleet_proto::v1::{GetFleetStatusRequest, GetPipelineRequest};
use std::path::PathBuf;
use std::time::Duration;

/// `framefleet audit`'s flags.
pub(super) struct AuditRequest {
    pub(super) kafka: ReadbackKafka,
    pub(super) channel_prefix: String,
    pub(super) read_timeout_secs: u64,
    pub(super) frame_topics: bool,
    pub(super) pipeline: Option<String>,
}

/// `framefleet snapshot`'s arguments.
pub(super) struct SnapshotRequest {
    pub(super) channel: String,
    pub(super) out: PathBuf,
    pub(super) kafka: ReadbackKafka,
    pub(super) read_timeout_secs: u64,
    pub(super) pipeline: Option<String>,
}

/// Draws a channel's latest frame with detections and prints its detection tally.
pub(super) async fn snapshot(
    fleet: &mut Fleet,
    pipelines: &mut Pipelines,
    request: SnapshotRequest,
) -> Result<(), Failure> {
    let status = fleet.get_fleet_status(GetFleetStatusRequest {}).await?.into_inner();
    let kafka = status.kafka.clone().unwrap_or_default();
    let results_topic = match &request.pipeline {
        Some(name) => pipeline_results_topic(pipelines, name).await?,
        None => kafka.results_topic.clone(),
    };
    let connection = connection(request.kafka, kafka.bootstrap_servers)?;
    let (channel, out) = (request.channel, request.out);
    let read_timeout = Duration::from_secs(request.read_timeout_secs);
    let line = tokio::task::spawn_blocking(move || {
        snapshot::snapshot(&connection, &results_topic, &channel, &out, read_timeout)
    })
    .await
    .map_err(|error| Failure::Other(error.into(), 1))?
    .map_err(|error| Failure::Other(error, 1))?;
    outln!("{line}");
    Ok(())
}

/// Where pipeline `name`'s current version writes its results.
async fn pipeline_results_topic(pipelines: &mut Pipelines, name: &str) -> Result<String, Failure> {
    let version = pipelines
        .get_pipeline(GetPipelineRequest {
            name: name.to_owned(),
            version: 0,
        })
        .await?
        .into_inner();
    Ok(version.spec.map(|spec| spec.results_topic).unwrap_or_default())
}

/// Every acknowledged frame's outcome, read back from the result and dead-letter topics;
/// fails with exit code 10 while any frame has none.
pub(super) async fn audit(
    fleet: &mut Fleet,
    channels: &mut Channels,
    pipelines: &mut Pipelines,
    request: AuditRequest,
    json: bool,
) -> Result<(), Failure> {
    let status = fleet.get_fleet_status(GetFleetStatusRequest {}).await?.into_inner();
    let kafka = status.kafka.clone().unwrap_or_default();
    let mut filter = ChannelFilter {
        prefix: request.channel_prefix.clone(),
        ..ChannelFilter::default()
    };
    let listed = all_channels(channels).await?;
    // A pipeline's audit: its results topic, and only the channels that name it. Without one:
    // the fleet's results topic, and the channels that name no pipeline.
    let results_topic = match &request.pipeline {
        Some(name) => {
            let results_topic = pipeline_results_topic(pipelines, name).await?;
            filter.only = Some(
                listed
                    .iter()
                    .filter(|channel| channel.pipelines.contains(name))
                    .map(|channel| channel.channel_id.clone())
                    .collect(),
            );
            results_topic
        }
        None => {
            filter.except = listed
                .iter()
                .filter(|channel| !channel.pipelines.is_empty() && channel.channel_id.starts_with(&filter.prefix))
                .map(|channel| channel.channel_id.clone())
                .collect();
            if !filter.except.is_empty() {
                eprintln!(
                    "{} channels name pipelines and are left out; audit them with --pipeline NAME",
                    filter.except.len()
                );
            }
            kafka.results_topic.clone()
        }
    };
    let mut topics: Vec<String> = Vec::new();
    if request.frame_topics {
        for channel in &listed {
            if filter.admits(&channel.channel_id) {
                topics.extend(channel.topics_for(request.pipeline.as_deref()));
            }
        }
        topics.sort();
        topics.dedup();
    }
    let connection = connection(request.kafka, kafka.bootstrap_servers)?;
    let read_timeout = Duration::from_secs(request.read_timeout_secs);
    let read_filter = filter.clone();
    let pipeline = request.pipeline.clone();
    let outcomes = tokio::task::spawn_blocking(move || {
        framefleet_common::audit::read(
            &connection,
            &framefleet_common::audit::Topics {
                results: &results_topic,
                dead_letters: &kafka.dead_letter_topic,
                frames: &topics,
                pipeline: pipeline.as_deref(),
            },
            &read_filter,
            read_timeout,
        )
    })
    .await
    .map_err(|error| Failure::Other(error.into(), 1))?
    .map_err(|error| Failure::Other(error.into(), 6))?;
    let report = audit::audit_report(&status, &outcomes, &filter, request.frame_topics);
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
    Ok(())
}

/// How a read-back command reaches Kafka: the flag's brokers, else the coordinator's, with the
/// command's own security settings (the coordinator never hands out credentials).
fn connection(readback: ReadbackKafka, coordinators: String) -> Result<KafkaConnection, Failure> {
    let security = KafkaSecurity::new(&readback.security).map_err(|error| Failure::Other(error.into(), 2))?;
    let brokers = readback.kafka_brokers.unwrap_or(coordinators);
    if brokers.is_empty() {
        return Err(Failure::Other(
            anyhow::anyhow!("the coordinator did not say which Kafka it uses; pass --kafka-brokers"),
            2,
        ));
    }
    Ok(KafkaConnection::new(brokers, security))
}
