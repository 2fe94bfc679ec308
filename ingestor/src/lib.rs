//! The framefleet ingestor. It registers with the coordinator (a report stream under an etcd
//! lease), registers the channels it was configured with (claiming them), and captures
//! whatever the coordinator's assignment watch says is its own: channels start, restart and
//! stop at runtime as assignments change. Each channel reads its source in its own capture
//! process (see [`isolation`]; a thread with `--capture-isolation thread`),
//! converts frames to the channel schema and produces every frame to each of the channel's
//! topics, keeping a ledger of what happened to each one.

pub mod capture;
pub mod config;
pub mod encode;
pub mod isolation;
pub mod ledger;
mod local_channels;
pub mod membership;
pub mod producer;
pub mod queue;
pub mod source;
mod supervisor;

use crate::config::{CaptureIsolation, IngestorConfig};
use crate::ledger::Ledgers;
use crate::ledger::SourceState;
use crate::membership::Coordinator;
use crate::producer::Producers;
use anyhow::Context;
use framefleet_common::kafka;
use framefleet_proto::client::CoordinatorChannel;
use framefleet_proto::v1::AssignmentUpdate;
use framefleet_proto::v1::channel_service_client::ChannelServiceClient;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use local_channels::LocalChannels;
use supervisor::Supervisor;
/// How often the channel file is looked at for changes.
const CONFIG_POLL: Duration = Duration::from_secs(2);
const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

/// What happened to every channel by the time the ingestor stopped.
#[derive(Debug, Clone)]
pub struct IngestSummary {
    pub channels: Vec<framefleet_proto::v1::ChannelLedger>,
}

impl IngestSummary {
    /// The final ledger of `channel_id`, if this run captured it.
    pub fn ledger(&self, channel_id: &str) -> Option<&framefleet_proto::v1::ChannelLedger> {
        self.channels.iter().find(|ledger| ledger.channel_id == channel_id)
    }

    pub fn failed_channels(&self) -> Vec<&framefleet_proto::v1::ChannelLedger> {
        self.channels
            .iter()
            .filter(|ledger| {
                ledger.frames_failed > 0
                    || ledger.source_state == SourceState::Failed.as_str()
                    || !ledger.last_error.is_empty()
            })
            .collect()
    }
}

pub async fn run(config: IngestorConfig, shutdown: CancellationToken) -> anyhow::Result<IngestSummary> {
    let config = Arc::new(config);
    let ingestor_id = config.ingestor_id();
    let timeout = config.request_timeout();
    // Read once: the token's file or variable is the same for every connection.
    let client_options = config.coordinator.client_options()?;
    let accepts_assignments = config.accepts_assignments();
    // Without assignments and without a channel file, the ingestor's work is the channels it
    // was given: it ends when they have.
    let exit_when_done = !accepts_assignments && config.channel_file.is_none();

    let unary =
        framefleet_proto::client::connect_coordinator(&config.coordinator.address, timeout, &client_options).await?;
    let mut channel_client = ChannelServiceClient::new(unary.clone());
    let kafka_connection = config.kafka.connection()?;
    let producers = Producers::new(
        &kafka_connection,
        config.raw_compression,
        config.kafka.max_frame_bytes(),
    )
    .context("cannot create the Kafka producer")?;
    kafka::check_reachable(&kafka_connection, timeout).await?;

    let ingestor_epoch = u64::try_from(framefleet_common::startup::unix_time_ms()).unwrap_or_default();
    let ledgers = Ledgers::new(ingestor_epoch);
    let coordinator = Arc::new(Coordinator {
        address: config.coordinator.address.clone(),
        options: client_options,
        timeout,
        ingestor_id: ingestor_id.clone(),
    });
    let background_stop = CancellationToken::new();
    let reporter = tokio::spawn(Arc::clone(&coordinator).report(
        ledgers.clone(),
        accepts_assignments,
        Duration::from_millis(config.report_interval_ms.max(100)),
        background_stop.clone(),
    ));
    if let Some(addr) = config.metrics_addr {
        let metrics_ledgers = ledgers.clone();
        let metrics_id = ingestor_id.clone();
        framefleet_common::metrics::serve(
            addr,
            Arc::new(move || {
                let all = metrics_ledgers.all();
                ledger::render_metrics(&metrics_id, &all.iter().map(Arc::as_ref).collect::<Vec<_>>())
            }),
            background_stop.clone(),
        )
        .await
        .with_context(|| format!("cannot serve metrics on {addr}"))?;
    }
    // A claimed channel stays with its ingestor only while that one is registered: wait for
    // the report stream to register us before claiming anything.
    wait_until_registered(&coordinator, unary, timeout).await;

    let (updates_sender, mut updates) = mpsc::channel::<AssignmentUpdate>(16);
    let watcher = tokio::spawn(Arc::clone(&coordinator).watch_assignments(updates_sender, background_stop.clone()));

    let (finished_sender, mut finished) = mpsc::unbounded_channel();
    let mut supervisor = Supervisor {
        config: Arc::clone(&config),
        ingestor_epoch,
        producers: producers.clone(),
        ledgers: ledgers.clone(),
        quality: HashMap::new(),
        running: HashMap::new(),
        ended: HashMap::new(),
        finished: finished_sender,
        generation: 0,
        capture_binary: match config.capture_isolation {
            CaptureIsolation::Process => {
                let binary = isolation::ingestor_binary();
                if binary.is_none() {
                    tracing::warn!(
                        set = isolation::INGESTOR_BINARY_ENV,
                        "no framefleet-ingestor binary found to run capture processes from; capturing in threads, so a decoder crash stops every channel"
                    );
                }
                binary
            }
            CaptureIsolation::Thread => None,
        },
    };
    let mut local = LocalChannels {
        config: Arc::clone(&config),
        ingestor_id: ingestor_id.clone(),
        registered: HashMap::new(),
        file_seen: None,
        reclaimed: HashMap::new(),
        to_reclaim: Default::default(),
    };
    for channel in config.flag_channels() {
        local.register(&mut channel_client, &mut supervisor, channel).await;
    }
    local.reload_file(&mut channel_client, &mut supervisor).await;

    let mut reclaim_poll = tokio::time::interval(Duration::from_secs(1));
    let mut config_poll = tokio::time::interval(CONFIG_POLL);
    config_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if exit_when_done && local.all_finished(&ledgers) {
            tracing::info!("every channel has ended");
            break;
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(update) = updates.recv() => {
                let taken = supervisor.taken_by(&update);
                supervisor.apply(update).await;
                local.reclaim(&mut channel_client, &supervisor, &taken).await;
            }
            Some((channel_id, generation)) = finished.recv() => supervisor.on_finished(&channel_id, generation),
            _ = reclaim_poll.tick(), if local.reclaims_pending() => local.retry_reclaims(&mut channel_client, &supervisor).await,
            _ = config_poll.tick(), if config.channel_file.is_some() => local.reload_file(&mut channel_client, &mut supervisor).await,
        }
    }

    supervisor.stop_all().await;
    if let Err(error) = producers.flush(FLUSH_TIMEOUT).await {
        tracing::error!(%error, "flushing the Kafka producer failed");
    }
    // The reporter sends the final counts as it closes its stream.
    background_stop.cancel();
    reporter.await.context("reporter task panicked")?;
    watcher.await.context("assignment watch task panicked")?;
    let summary = IngestSummary {
        channels: ledgers.snapshots(),
    };
    for ledger in &summary.channels {
        tracing::info!(
            channel = %ledger.channel_id,
            captured = ledger.frames_captured,
            acknowledged = ledger.frames_acknowledged,
            failed = ledger.frames_failed,
            dropped = ledger.frames_dropped,
            gaps = ledger.source_gaps,
            state = %ledger.source_state,
            "channel finished"
        );
    }
    Ok(summary)
}

async fn wait_until_registered(coordinator: &Coordinator, channel: CoordinatorChannel, timeout: Duration) {
    let mut fleet = framefleet_proto::v1::fleet_service_client::FleetServiceClient::new(channel);
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if let Ok(status) = fleet
            .get_fleet_status(framefleet_proto::v1::GetFleetStatusRequest {})
            .await
            .map(tonic::Response::into_inner)
            && status.registered_ingestors.contains(&coordinator.ingestor_id)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tracing::warn!(ingestor = %coordinator.ingestor_id, "not registered with the coordinator yet; claiming channels anyway");
}
