//! The ingestor's two long-lived conversations with the coordinator: a report stream that
//! keeps it registered (under an etcd lease) while it lives, and the assignment watch that
//! says which channels to capture. Both reopen on failure; capture goes on meanwhile.

use crate::ledger::ChannelLedger;
use framefleet_proto::client::CallError;
use framefleet_proto::client::{ClientOptions, CoordinatorChannel};
use framefleet_proto::v1::assignment_service_client::AssignmentServiceClient;
use framefleet_proto::v1::fleet_service_client::FleetServiceClient;
use framefleet_proto::v1::{AssignmentUpdate, IngestorReport, WatchAssignmentsRequest};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const RECONNECT_BACKOFF: Duration = Duration::from_secs(1);

/// Every channel's ledger, kept after the channel stops so the counts stay cumulative.
/// Every channel ledger of this ingestor, shared by its capture, delivery, reports and
/// metrics; `epoch` (this run's start, unix ms, as in each frame's `ff-epoch`) goes into every
/// reported ledger, so the coordinator keeps one per channel and run.
#[derive(Clone, Default)]
pub struct Ledgers {
    channels: Arc<Mutex<BTreeMap<String, Arc<ChannelLedger>>>>,
    epoch: u64,
}

impl Ledgers {
    pub fn new(epoch: u64) -> Self {
        Self {
            channels: Arc::default(),
            epoch,
        }
    }

    pub fn get_or_create(&self, channel_id: &str) -> Arc<ChannelLedger> {
        let mut ledgers = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(
            ledgers
                .entry(channel_id.to_owned())
                .or_insert_with(|| Arc::new(ChannelLedger::new(channel_id))),
        )
    }

    pub fn get(&self, channel_id: &str) -> Option<Arc<ChannelLedger>> {
        self.channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(channel_id)
            .cloned()
    }

    /// Every channel's ledger, by channel id.
    pub fn all(&self) -> Vec<Arc<ChannelLedger>> {
        self.channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    pub fn snapshots(&self) -> Vec<framefleet_proto::v1::ChannelLedger> {
        self.channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|ledger| framefleet_proto::v1::ChannelLedger {
                ingestor_epoch: self.epoch,
                ..ledger.snapshot()
            })
            .collect()
    }
}

pub struct Coordinator {
    pub address: String,
    pub options: ClientOptions,
    pub timeout: Duration,
    pub ingestor_id: String,
}

impl Coordinator {
    async fn stream_channel(&self) -> Result<CoordinatorChannel, String> {
        framefleet_proto::client::connect_coordinator_for_streams(&self.address, self.timeout, &self.options)
            .await
            .map_err(|error| error.to_string())
    }

    /// Keeps the report stream open until `stop`; the last report carries the final counts,
    /// then the stream closes so the ingestor deregisters at once.
    pub async fn report(
        self: Arc<Self>,
        ledgers: Ledgers,
        accepts_assignments: bool,
        interval: Duration,
        stop: CancellationToken,
    ) {
        let report = || IngestorReport {
            ingestor_id: self.ingestor_id.clone(),
            channels: ledgers.snapshots(),
            accepts_assignments,
        };
        while !stop.is_cancelled() {
            let outcome = async {
                let mut client = FleetServiceClient::new(self.stream_channel().await?);
                let (sender, receiver) = mpsc::channel::<IngestorReport>(4);
                // The coordinator registers the ingestor on the first report.
                let _ = sender.send(report()).await;
                let mut call = tokio::spawn(async move {
                    client
                        .stream_ingestor_reports(tokio_stream::wrappers::ReceiverStream::new(receiver))
                        .await
                });
                let mut ticker = tokio::time::interval(interval);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                ticker.tick().await;
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        ended = &mut call => return Err(match ended {
                            Ok(Ok(_)) => "the coordinator closed the stream".to_owned(),
                            Ok(Err(status)) => CallError::new("the report stream", status).to_string(),
                            Err(error) => format!("report task failed: {error}"),
                        }),
                        _ = ticker.tick() => {
                            if sender.send(report()).await.is_err() {
                                return Err("the stream closed".to_owned());
                            }
                        }
                    }
                }
                let _ = sender.send(report()).await;
                drop(sender);
                match tokio::time::timeout(self.timeout, call).await {
                    Ok(Ok(Ok(_))) => tracing::info!(ingestor = %self.ingestor_id, "deregistered from the coordinator"),
                    _ => tracing::debug!(ingestor = %self.ingestor_id, "no answer to the final report"),
                }
                Ok::<(), String>(())
            }
            .await;
            match outcome {
                Ok(()) => return,
                Err(reason) => {
                    // Frames keep flowing while the coordinator is away.
                    tracing::warn!(ingestor = %self.ingestor_id, "report stream to the coordinator failed: {reason}");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(RECONNECT_BACKOFF) => {}
                    }
                }
            }
        }
    }

    /// Forwards this ingestor's assignment updates until `stop`, resuming after the last
    /// revision seen when the watch breaks (the coordinator re-lists if that is compacted).
    pub async fn watch_assignments(self: Arc<Self>, updates: mpsc::Sender<AssignmentUpdate>, stop: CancellationToken) {
        let mut after_revision = 0;
        while !stop.is_cancelled() {
            let outcome = async {
                let mut client = AssignmentServiceClient::new(self.stream_channel().await?);
                let mut stream = client
                    .watch_assignments(WatchAssignmentsRequest {
                        ingestor_id: self.ingestor_id.clone(),
                        after_revision,
                    })
                    .await
                    .map_err(|status| CallError::new("watching assignments", status).to_string())?
                    .into_inner();
                loop {
                    let update = tokio::select! {
                        _ = stop.cancelled() => return Ok(()),
                        update = stream.message() => update,
                    };
                    match update {
                        Ok(Some(update)) => {
                            after_revision = update.revision;
                            if updates.send(update).await.is_err() {
                                return Ok(());
                            }
                        }
                        Ok(None) => return Err("the coordinator ended the watch".to_owned()),
                        Err(status) => return Err(CallError::new("the assignment watch", status).to_string()),
                    }
                }
            }
            .await;
            if let Err(reason) = outcome {
                tracing::warn!(ingestor = %self.ingestor_id, after_revision, "assignment watch failed: {reason}; resuming");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(RECONNECT_BACKOFF) => {}
                }
            }
        }
    }
}
