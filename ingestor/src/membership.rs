//! The ingestor's two long-lived conversations with the coordinator: a report stream that
//! keeps it registered (under an etcd lease) while it lives, and the assignment watch that
//! says which channels to capture. Both reopen on failure; capture goes on meanwhile.

use crate::ledger::Ledgers;
use framefleet_common::report_stream::{RECONNECT_BACKOFF, ReportStream};
use framefleet_proto::client::{CallError, StreamError};
use framefleet_proto::client::{ClientOptions, CoordinatorChannel};
use framefleet_proto::v1::assignment_service_client::AssignmentServiceClient;
use framefleet_proto::v1::{AssignmentUpdate, IngestorReport, WatchAssignmentsRequest};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub struct Coordinator {
    pub address: String,
    pub options: ClientOptions,
    pub timeout: Duration,
    pub ingestor_id: String,
}

impl Coordinator {
    async fn stream_channel(&self) -> Result<CoordinatorChannel, StreamError> {
        Ok(
            framefleet_proto::client::connect_coordinator_for_streams(&self.address, self.timeout, &self.options)
                .await?,
        )
    }

    /// Keeps the report stream open until `stop`; the last report carries the final counts,
    /// then the stream closes so the ingestor deregisters at once. Frames keep flowing while
    /// the coordinator is away.
    pub async fn report(
        self: Arc<Self>,
        ledgers: Ledgers,
        accepts_assignments: bool,
        interval: Duration,
        stop: CancellationToken,
    ) {
        let stream = ReportStream {
            role: "ingestor",
            process_id: &self.ingestor_id,
            coordinator: &self.address,
            client_options: &self.options,
            timeout: self.timeout,
            interval,
        };
        let report = || IngestorReport {
            ingestor_id: self.ingestor_id.clone(),
            channels: ledgers.snapshots(),
            accepts_assignments,
        };
        stream
            .run(&stop, report, |mut client, reports| async move {
                client.stream_ingestor_reports(reports).await
            })
            .await;
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
                    .map_err(|status| CallError::new("watching assignments", status))?
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
                        Ok(None) => return Err(StreamError::EndedByCoordinator),
                        Err(status) => return Err(CallError::new("the assignment watch", status).into()),
                    }
                }
            }
            .await;
            if let Err(reason) = outcome {
                tracing::warn!(ingestor = %self.ingestor_id, after_revision, %reason, "assignment watch failed; resuming");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(RECONNECT_BACKOFF) => {}
                }
            }
        }
    }
}
