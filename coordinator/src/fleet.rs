//! Fleet reports and the paper's metrics. Reports arrive every second from every process,
//! so they live in coordinator memory, never in etcd. Accumulate / consume / lag are read
//! from Kafka itself (watermarks and the worker group's committed offsets), not from what
//! processes say about themselves.

use crate::channels::validate;
use crate::error::CoordinatorError;
use framefleet_proto::v1::{ChannelStatus, IngestorReport, IngestorStatus, WorkerReport, WorkerStatus};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A process that has not reported for this long is left out of the fleet status.
const REPORT_EXPIRY: Duration = Duration::from_secs(60);
/// Only workers heard from this recently count towards the fleet's current frames/s.
const LIVE_WINDOW: Duration = Duration::from_secs(5);
const MAX_CHANNELS_PER_REPORT: usize = 10_000;

#[derive(Default)]
pub struct FleetRegistry {
    workers: Mutex<HashMap<String, (WorkerReport, Instant)>>,
    ingestors: Mutex<HashMap<String, IngestorEntry>>,
}

struct IngestorEntry {
    report: IngestorReport,
    seen: Instant,
    /// The report before `report`, for per-channel rates.
    previous: Option<(IngestorReport, Instant)>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Reports are plain data; a panic elsewhere cannot leave them half-updated.
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl FleetRegistry {
    pub fn record_worker(&self, report: WorkerReport) -> Result<(), CoordinatorError> {
        validate::process_id("worker_id", &report.worker_id)?;
        if !report.frames_per_second.is_finite() || report.frames_per_second < 0.0 {
            return Err(CoordinatorError::invalid(
                "frames_per_second",
                "must be a finite number ≥ 0",
            ));
        }
        lock(&self.workers).insert(report.worker_id.clone(), (report, Instant::now()));
        Ok(())
    }

    pub fn record_ingestor(&self, report: IngestorReport) -> Result<(), CoordinatorError> {
        validate::process_id("ingestor_id", &report.ingestor_id)?;
        if report.channels.len() > MAX_CHANNELS_PER_REPORT {
            return Err(CoordinatorError::invalid(
                "channels",
                format!("at most {MAX_CHANNELS_PER_REPORT} per report"),
            ));
        }
        if let Some(index) = report.channels.iter().position(|ledger| ledger.channel_id.is_empty()) {
            return Err(CoordinatorError::invalid(
                "channels.channel_id",
                format!("entry {index} is empty"),
            ));
        }
        let mut ingestors = lock(&self.ingestors);
        let now = Instant::now();
        let previous = ingestors
            .remove(&report.ingestor_id)
            .map(|entry| (entry.report, entry.seen));
        ingestors.insert(
            report.ingestor_id.clone(),
            IngestorEntry {
                report,
                seen: now,
                previous,
            },
        );
        Ok(())
    }

    /// Current workers (sorted by id) with the fleet's total processed frames and frames/s.
    /// `registered` holds the ids with a live registration in etcd.
    pub fn workers(&self, registered: &std::collections::HashSet<String>) -> (Vec<WorkerStatus>, u64, f64) {
        let now = Instant::now();
        let mut workers = lock(&self.workers);
        workers.retain(|_, (_, seen)| now.duration_since(*seen) < REPORT_EXPIRY);
        let mut statuses: Vec<WorkerStatus> = workers
            .values()
            .map(|(report, seen)| WorkerStatus {
                report: Some(report.clone()),
                last_seen_ms_ago: millis(now.duration_since(*seen)),
                registered: registered.contains(&report.worker_id),
            })
            .collect();
        statuses.sort_by(|a, b| worker_id(a).cmp(worker_id(b)));
        let frames_processed = workers.values().map(|(report, _)| report.frames_processed).sum();
        let frames_per_second = workers
            .values()
            .filter(|(_, seen)| now.duration_since(*seen) < LIVE_WINDOW)
            .map(|(report, _)| report.frames_per_second)
            .sum();
        (statuses, frames_processed, frames_per_second)
    }

    pub fn ingestors(&self) -> Vec<IngestorStatus> {
        let now = Instant::now();
        let mut ingestors = lock(&self.ingestors);
        ingestors.retain(|_, entry| now.duration_since(entry.seen) < REPORT_EXPIRY);
        let mut statuses: Vec<IngestorStatus> = ingestors
            .values()
            .map(|entry| IngestorStatus {
                report: Some(entry.report.clone()),
                last_seen_ms_ago: millis(now.duration_since(entry.seen)),
            })
            .collect();
        statuses.sort_by(|a, b| {
            let id = |status: &IngestorStatus| {
                status
                    .report
                    .as_ref()
                    .map(|r| r.ingestor_id.clone())
                    .unwrap_or_default()
            };
            id(a).cmp(&id(b))
        });
        statuses
    }

    /// Per channel, what its ingestors reported, with the capture rate between each
    /// ingestor's last two reports. Sorted by channel id.
    pub fn channels(&self) -> Vec<ChannelStatus> {
        let now = Instant::now();
        let ingestors = lock(&self.ingestors);
        let mut by_channel: std::collections::BTreeMap<String, ChannelStatus> = std::collections::BTreeMap::new();
        for entry in ingestors.values() {
            if now.duration_since(entry.seen) >= REPORT_EXPIRY {
                continue;
            }
            for ledger in &entry.report.channels {
                let rate = entry.previous.as_ref().and_then(|(previous, previous_seen)| {
                    let before = previous
                        .channels
                        .iter()
                        .find(|old| old.channel_id == ledger.channel_id)?;
                    let seconds = entry.seen.duration_since(*previous_seen).as_secs_f64();
                    (seconds > 0.0)
                        .then(|| ledger.frames_captured.saturating_sub(before.frames_captured) as f64 / seconds)
                });
                let status = by_channel
                    .entry(ledger.channel_id.clone())
                    .or_insert_with(|| ChannelStatus {
                        channel_id: ledger.channel_id.clone(),
                        ..ChannelStatus::default()
                    });
                if status.ingestor_id.is_empty() {
                    status.ingestor_id.clone_from(&entry.report.ingestor_id);
                }
                status.frames_captured += ledger.frames_captured;
                status.frames_acknowledged += ledger.frames_acknowledged;
                status.frames_dropped += ledger.frames_dropped;
                status.frames_failed += ledger.frames_failed;
                status.captured_per_second += rate.unwrap_or(0.0);
            }
        }
        by_channel.into_values().collect()
    }
}

fn worker_id(status: &WorkerStatus) -> &str {
    status
        .report
        .as_ref()
        .map(|report| report.worker_id.as_str())
        .unwrap_or_default()
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(id: &str, processed: u64, fps: f64) -> WorkerReport {
        WorkerReport {
            worker_id: id.to_owned(),
            frames_processed: processed,
            frames_per_second: fps,
            device: "cpu".to_owned(),
            ..WorkerReport::default()
        }
    }

    #[test]
    fn the_latest_report_of_each_worker_counts_once() {
        let fleet = FleetRegistry::default();
        fleet.record_worker(worker("w1", 10, 5.0)).expect("report");
        fleet.record_worker(worker("w1", 30, 7.0)).expect("report");
        fleet.record_worker(worker("w2", 5, 2.0)).expect("report");
        let (statuses, processed, fps) = fleet.workers(&Default::default());
        assert_eq!(statuses.len(), 2);
        assert_eq!(processed, 35);
        assert!((fps - 9.0).abs() < 1e-9);
    }

    #[test]
    fn malformed_reports_are_refused() {
        let fleet = FleetRegistry::default();
        assert!(fleet.record_worker(worker("", 1, 1.0)).is_err());
        assert!(fleet.record_worker(worker("w", 1, f64::NAN)).is_err());
        assert!(fleet.record_ingestor(IngestorReport::default()).is_err());
        assert!(fleet.workers(&Default::default()).0.is_empty());
    }
}
