//! Worker counters and the report stream to the coordinator. The stream is the worker's
//! registration: while it is open the coordinator keeps the worker registered in etcd under
//! a lease; when the worker stops, the stream closes and the registration goes with it.

use crate::consumer::ConsumerGauges;
use framefleet_common::report_stream::ReportStream;
use framefleet_proto::v1::WorkerReport;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Latency samples kept between two reports; a worker finishing more batches than this in
/// one interval reports percentiles of the most recent ones.
const MAX_LATENCY_SAMPLES: usize = 4096;

#[derive(Debug, Default)]
pub struct WorkerCounters {
    pub frames_processed: AtomicU64,
    pub frames_dead_lettered: AtomicU64,
    pub batches: AtomicU64,
    pub errors: AtomicU64,
    /// Duration of the last batch's compute, in microseconds.
    pub last_batch_us: AtomicU64,
    /// Batch latencies (compute start → all results acknowledged) since the last report, µs.
    batch_latencies_us: Mutex<Vec<u64>>,
    /// Dead letters by `DeadLetterCode` name, cumulative.
    dead_letters_by_code: Mutex<std::collections::BTreeMap<&'static str, u64>>,
    /// The pipeline served, as reported.
    pipeline: Mutex<PipelineState>,
}

/// What a worker serving a pipeline tells the coordinator about it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PipelineState {
    pub name: String,
    /// The version it runs.
    pub version: u32,
    /// Why it does not run the newest version; empty when it does.
    pub error: String,
}

impl PipelineState {
    /// Running `served`, its pipeline's newest version.
    pub fn running(served: &crate::stages::ServedVersion) -> Self {
        Self {
            name: served.name.clone(),
            version: served.version,
            error: String::new(),
        }
    }
}

impl WorkerCounters {
    /// Counts settled dead letters, by code.
    pub fn record_dead_letters(&self, codes: &[framefleet_proto::v1::DeadLetterCode]) {
        if codes.is_empty() {
            return;
        }
        let mut by_code = self
            .dead_letters_by_code
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for code in codes {
            *by_code.entry(code.as_str_name()).or_default() += 1;
        }
        self.frames_dead_lettered
            .fetch_add(codes.len() as u64, Ordering::Relaxed);
    }

    /// Dead letters so far, by code name.
    pub fn dead_letters_by_code(&self) -> std::collections::BTreeMap<String, u64> {
        self.dead_letters_by_code
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(code, count)| ((*code).to_owned(), *count))
            .collect()
    }
    pub fn set_pipeline(&self, state: PipelineState) {
        *self.pipeline.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = state;
    }

    pub fn record_batch_latency(&self, latency: Duration) {
        let mut samples = self
            .batch_latencies_us
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if samples.len() >= MAX_LATENCY_SAMPLES {
            samples.remove(0);
        }
        samples.push(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
    }

    /// p50 and p99 of the latencies recorded since the last call, in milliseconds.
    fn take_latency_percentiles(&self) -> (f64, f64) {
        let mut samples = std::mem::take(
            &mut *self
                .batch_latencies_us
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        samples.sort_unstable();
        (percentile_ms(&samples, 0.50), percentile_ms(&samples, 0.99))
    }

    pub fn to_report(
        &self,
        worker_id: &str,
        device: &str,
        frames_per_second: f64,
        gauges: &ConsumerGauges,
    ) -> WorkerReport {
        let (batch_latency_p50_ms, batch_latency_p99_ms) = self.take_latency_percentiles();
        let pipeline = self
            .pipeline
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        WorkerReport {
            worker_id: worker_id.to_owned(),
            frames_processed: self.frames_processed.load(Ordering::Relaxed),
            frames_dead_lettered: self.frames_dead_lettered.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
            frames_per_second,
            last_batch_ms: self.last_batch_us.load(Ordering::Relaxed) as f64 / 1000.0,
            device: device.to_owned(),
            errors: self.errors.load(Ordering::Relaxed),
            batch_latency_p50_ms,
            batch_latency_p99_ms,
            lag_frames: gauges.lag_frames.load(Ordering::Relaxed),
            assigned_partitions: u32::try_from(gauges.assigned_partitions.load(Ordering::Relaxed)).unwrap_or(u32::MAX),
            rebalances: gauges.rebalances.load(Ordering::Relaxed),
            dead_letters_by_code: self.dead_letters_by_code().into_iter().collect(),
            pipeline: pipeline.name,
            pipeline_version: pipeline.version,
            pipeline_error: pipeline.error,
        }
    }
}

/// Nearest-rank percentile of sorted microsecond samples, in milliseconds (0 when empty).
fn percentile_ms(sorted_us: &[u64], quantile: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = ((quantile * sorted_us.len() as f64).ceil() as usize).clamp(1, sorted_us.len());
    sorted_us[rank - 1] as f64 / 1000.0
}

pub struct Reporter {
    pub coordinator: String,
    pub client_options: framefleet_proto::client::ClientOptions,
    pub connect_timeout: Duration,
    pub worker_id: String,
    pub device: String,
    pub counters: Arc<WorkerCounters>,
    pub gauges: Arc<ConsumerGauges>,
}

struct Throughput {
    previous_frames: u64,
    previous_at: Instant,
}

impl Reporter {
    /// Keeps a report stream open until `stop`, reopening it when it fails; the last report
    /// carries the final counts, then the stream is closed so the worker deregisters at once.
    /// Processing goes on while the coordinator is away; only the registration and the
    /// reports wait.
    pub async fn run(self, interval: Duration, stop: CancellationToken) {
        let mut throughput = Throughput {
            previous_frames: 0,
            previous_at: Instant::now(),
        };
        let stream = ReportStream {
            role: "worker",
            process_id: &self.worker_id,
            coordinator: &self.coordinator,
            client_options: &self.client_options,
            timeout: self.connect_timeout,
            interval,
        };
        stream
            .run(
                &stop,
                || self.report(&mut throughput),
                |mut client, reports| async move { client.stream_worker_reports(reports).await },
            )
            .await;
    }

    fn report(&self, throughput: &mut Throughput) -> WorkerReport {
        let frames = self.counters.frames_processed.load(Ordering::Relaxed);
        let elapsed = throughput.previous_at.elapsed().as_secs_f64();
        let frames_per_second = if elapsed > 0.0 {
            frames.saturating_sub(throughput.previous_frames) as f64 / elapsed
        } else {
            0.0
        };
        throughput.previous_frames = frames;
        throughput.previous_at = Instant::now();
        self.counters
            .to_report(&self.worker_id, &self.device, frames_per_second, &self.gauges)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank_and_reset_after_each_report() {
        let counters = WorkerCounters::default();
        for millis in 1..=100 {
            counters.record_batch_latency(Duration::from_millis(millis));
        }
        let gauges = ConsumerGauges::default();
        let report = counters.to_report("w", "cpu", 0.0, &gauges);
        assert_eq!(report.batch_latency_p50_ms, 50.0);
        assert_eq!(report.batch_latency_p99_ms, 99.0);
        let next = counters.to_report("w", "cpu", 0.0, &gauges);
        assert_eq!((next.batch_latency_p50_ms, next.batch_latency_p99_ms), (0.0, 0.0));
    }
}
