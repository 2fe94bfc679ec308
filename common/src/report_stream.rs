//! The report stream every ingestor and worker keeps open to the coordinator: its first report
//! registers the process (under an etcd lease), one follows every interval, and the last one,
//! sent on shutdown, carries the final counts before the stream closes so the process
//! deregisters at once. A stream that fails is reopened after [`RECONNECT_BACKOFF`]; the
//! process's own work (capture, processing) goes on meanwhile.
//!
//! The coordinator answers a closed stream OK only once it has stored the last report (an
//! ingestor's ledgers in etcd). Until such an answer, the final report is sent again on new
//! streams — to whichever coordinator answers — for up to [`FINAL_REPORT_PATIENCE`]: a process
//! that stops while its coordinator is cut off from etcd still leaves its final counts behind.

use framefleet_proto::client::{
    CallError, ClientOptions, CoordinatorChannel, StreamError, connect_coordinator_for_streams,
};
use framefleet_proto::v1::fleet_service_client::FleetServiceClient;
use std::future::Future;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

/// Wait before a failed report stream is opened again.
pub const RECONNECT_BACKOFF: Duration = Duration::from_secs(1);
/// How long a stopping process keeps trying to hand its final report to a coordinator that
/// stores it. Longer than a coordinator's member TTL (default 5 s): a registration left by a
/// coordinator that was cut off refuses the id (`ALREADY_EXISTS`) until its lease runs out.
pub const FINAL_REPORT_PATIENCE: Duration = Duration::from_secs(30);

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
    /// (`stream_ingestor_reports` or `stream_worker_reports`). After `stop` it returns once a
    /// coordinator has acknowledged the final report, or after [`FINAL_REPORT_PATIENCE`].
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
                        _ = stop.cancelled() => {}
                        _ = tokio::time::sleep(RECONNECT_BACKOFF) => {}
                    }
                }
            }
        }
        self.hand_over_final(&mut next_report, &open).await;
    }

    /// One stream, until `stop` and an acknowledged final report (Ok), or until it fails.
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
        let (sender, mut call) = self.open_stream(open, 4).await?;
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                ended = &mut call => return Err(call_failure(ended).unwrap_or(StreamError::EndedByCoordinator)),
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
        self.final_answer(call).await
    }

    /// Sends the final report on fresh streams, each holding that report alone, until a
    /// coordinator acknowledges it or [`FINAL_REPORT_PATIENCE`] has passed.
    async fn hand_over_final<R, T, Call>(
        &self,
        next_report: &mut impl FnMut() -> R,
        open: &impl Fn(FleetServiceClient<CoordinatorChannel>, ReceiverStream<R>) -> Call,
    ) where
        R: Send + 'static,
        T: Send + 'static,
        Call: Future<Output = Result<tonic::Response<T>, tonic::Status>> + Send + 'static,
    {
        let give_up_at = tokio::time::Instant::now() + FINAL_REPORT_PATIENCE;
        loop {
            let attempt = async {
                let (sender, call) = self.open_stream(open, 1).await?;
                let _ = sender.send(next_report()).await;
                drop(sender);
                self.final_answer(call).await
            };
            let reason = match tokio::time::timeout_at(give_up_at, attempt).await {
                Ok(Ok(())) => return,
                Ok(Err(reason)) => reason.to_string(),
                Err(_) => "no answer".to_owned(),
            };
            if tokio::time::Instant::now() + RECONNECT_BACKOFF >= give_up_at {
                tracing::error!(role = self.role, id = %self.process_id, %reason, patience = ?FINAL_REPORT_PATIENCE,
                    "no coordinator stored the final report; the counts kept in etcd may stop short of this process's own");
                return;
            }
            tracing::warn!(role = self.role, id = %self.process_id, %reason, patience = ?FINAL_REPORT_PATIENCE,
                "the final report was not stored; sending it again (a second Ctrl-C exits now)");
            tokio::time::sleep(RECONNECT_BACKOFF).await;
        }
    }

    /// Connects and starts the stream call; reports sent on the returned sender go out on it,
    /// and dropping the sender closes the stream.
    async fn open_stream<R, T, Call>(
        &self,
        open: &impl Fn(FleetServiceClient<CoordinatorChannel>, ReceiverStream<R>) -> Call,
        capacity: usize,
    ) -> Result<(mpsc::Sender<R>, JoinHandle<Result<tonic::Response<T>, tonic::Status>>), StreamError>
    where
        R: Send + 'static,
        T: Send + 'static,
        Call: Future<Output = Result<tonic::Response<T>, tonic::Status>> + Send + 'static,
    {
        let channel = connect_coordinator_for_streams(self.coordinator, self.timeout, self.client_options).await?;
        let (sender, receiver) = mpsc::channel::<R>(capacity);
        Ok((
            sender,
            tokio::spawn(open(FleetServiceClient::new(channel), ReceiverStream::new(receiver))),
        ))
    }

    /// Waits for the coordinator's answer to a closed stream: Ok once it stored the last report.
    async fn final_answer<T>(
        &self,
        call: JoinHandle<Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<(), StreamError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(ended) => match call_failure(ended) {
                None => {
                    tracing::info!(role = self.role, id = %self.process_id, "final report stored; deregistered from the coordinator");
                    Ok(())
                }
                Some(reason) => Err(reason),
            },
            Err(_) => Err(StreamError::NoFinalAnswer(self.timeout)),
        }
    }
}

/// Why a finished stream call failed; `None` when the coordinator answered OK.
fn call_failure<T>(
    ended: Result<Result<tonic::Response<T>, tonic::Status>, tokio::task::JoinError>,
) -> Option<StreamError> {
    match ended {
        Ok(Ok(_)) => None,
        Ok(Err(status)) => Some(CallError::new("the report stream", status).into()),
        Err(error) => Some(StreamError::Task(error.to_string())),
    }
}
