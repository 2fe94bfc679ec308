//! The report stream every ingestor and worker keeps open to the coordinator: its first report
//! registers the process (under an etcd lease), one follows every interval, and the last one,
//! sent on shutdown, carries the final counts before the stream closes so the process
//! deregisters at once. A stream that fails is reopened after [`RECONNECT_BACKOFF`]; the
//! process's own work (capture, processing) goes on meanwhile.

use framefleet_proto::client::{
    CallError, ClientOptions, CoordinatorChannel, StreamError, connect_coordinator_for_streams,
};
use framefleet_proto::v1::fleet_service_client::FleetServiceClient;
use std::future::Future;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

/// Wait before a failed report stream is opened again.
pub const RECONNECT_BACKOFF: Duration = Duration::from_secs(1);

/// Where and how often a process reports.
pub struct ReportStream<'a> {
    /// `ingestor` or `worker`, for logs.
    pub role: &'static str,
    /// The process's id, for logs.
    pub process_id: &'a str,
    pub coordinator: &'a str,
    pub client_options: &'a ClientOptions,
    /// Connecting, and waiting for the coordinator's answer to the last report.
    pub timeout: Duration,
    pub interval: Duration,
}

impl ReportStream<'_> {
    /// Keeps the stream open until `stop`, sending `next_report()` at once and then every
    /// interval, and reopening the stream when it fails. `open` starts the call on a client
    /// (`stream_ingestor_reports` or `stream_worker_reports`).
    pub async fn run<R, T, Call>(
        &self,
        stop: &CancellationToken,
        mut next_report: impl FnMut() -> R,
        open: impl Fn(FleetServiceClient<CoordinatorChannel>, ReceiverStream<R>) -> Call,
    ) where
        R: Send + 'static,
        T: Send + 'static,
        Call: Future<Output = Result<tonic::Response<T>, tonic::Status>> + Send + 'static,
    {
        while !stop.is_cancelled() {
            match self.stream_until(stop, &mut next_report, &open).await {
                Ok(()) => return,
                Err(reason) => {
                    tracing::warn!(role = self.role, id = %self.process_id, %reason, "report stream to the coordinator failed; reopening it");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(RECONNECT_BACKOFF) => {}
                    }
                }
            }
        }
    }

    /// One stream, until `stop` (Ok) or until it fails.
    async fn stream_until<R, T, Call>(
        &self,
        stop: &CancellationToken,
        next_report: &mut impl FnMut() -> R,
        open: &impl Fn(FleetServiceClient<CoordinatorChannel>, ReceiverStream<R>) -> Call,
    ) -> Result<(), StreamError>
    where
        R: Send + 'static,
        T: Send + 'static,
        Call: Future<Output = Result<tonic::Response<T>, tonic::Status>> + Send + 'static,
    {
        let channel = connect_coordinator_for_streams(self.coordinator, self.timeout, self.client_options).await?;
        let (sender, receiver) = mpsc::channel::<R>(4);
        let mut call = tokio::spawn(open(FleetServiceClient::new(channel), ReceiverStream::new(receiver)));
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                ended = &mut call => {
                    return Err(match ended {
                        Ok(Ok(_)) => StreamError::EndedByCoordinator,
                        Ok(Err(status)) => CallError::new("the report stream", status).into(),
                        Err(error) => StreamError::Task(error.to_string()),
                    });
                }
                // The first tick is immediate: the first report registers the process.
                _ = ticker.tick() => {
                    if sender.send(next_report()).await.is_err() {
                        return Err(StreamError::EndedByCoordinator);
                    }
                }
            }
        }
        let _ = sender.send(next_report()).await;
        drop(sender);
        // The coordinator answers once it has seen the end of the stream and deregistered.
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(Ok(_))) => {
                tracing::info!(role = self.role, id = %self.process_id, "deregistered from the coordinator")
            }
            _ => tracing::debug!(role = self.role, id = %self.process_id, "no answer to the final report"),
        }
        Ok(())
    }
}
