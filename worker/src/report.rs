//! Worker counters and the periodic throughput report to the coordinator.

use framefleet_proto::v1::WorkerReport;
use framefleet_proto::v1::fleet_service_client::FleetServiceClient;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Default)]
pub struct WorkerCounters {
    pub frames_processed: AtomicU64,
    pub frames_dead_lettered: AtomicU64,
    pub batches: AtomicU64,
    pub errors: AtomicU64,
    /// Duration of the last batch, in microseconds.
    pub last_batch_us: AtomicU64,
}

impl WorkerCounters {
    pub fn to_report(&self, worker_id: &str, device: &str, frames_per_second: f64) -> WorkerReport {
        WorkerReport {
            worker_id: worker_id.to_owned(),
            frames_processed: self.frames_processed.load(Ordering::Relaxed),
            frames_dead_lettered: self.frames_dead_lettered.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
            frames_per_second,
            last_batch_ms: self.last_batch_us.load(Ordering::Relaxed) as f64 / 1000.0,
            device: device.to_owned(),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }
}

pub struct Reporter {
    pub client: FleetServiceClient<tonic::transport::Channel>,
    pub worker_id: String,
    pub device: String,
    pub counters: Arc<WorkerCounters>,
}

impl Reporter {
    pub async fn run(mut self, interval: Duration, stop: CancellationToken) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut previous_frames = 0_u64;
        let mut previous_at = Instant::now();
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = ticker.tick() => {}
            }
            let frames = self.counters.frames_processed.load(Ordering::Relaxed);
            let elapsed = previous_at.elapsed().as_secs_f64();
            let frames_per_second = if elapsed > 0.0 {
                frames.saturating_sub(previous_frames) as f64 / elapsed
            } else {
                0.0
            };
            previous_frames = frames;
            previous_at = Instant::now();
            self.send(frames_per_second).await;
        }
        // The last report carries the final counts.
        self.send(0.0).await;
    }

    async fn send(&mut self, frames_per_second: f64) {
        let report = self
            .counters
            .to_report(&self.worker_id, &self.device, frames_per_second);
        if let Err(status) = self.client.report_worker(report).await {
            // Best effort: processing goes on while the coordinator is away.
            tracing::debug!(code = ?status.code(), "report to coordinator failed: {}", status.message());
        }
    }
}
