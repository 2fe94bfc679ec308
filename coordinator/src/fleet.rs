//! Fleet reports and the paper's metrics. Reports arrive every second from every process,
//! so they live in coordinator memory, never in etcd. Accumulate / consume / lag are read
//! from Kafka itself (watermarks and the worker group's committed offsets), not from what
//! processes say about themselves.

use crate::error::CoordinatorError;
use framefleet_common::kafka;
use framefleet_proto::v1::{IngestorReport, IngestorStatus, TopicMetrics, WorkerReport, WorkerStatus};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A process that has not reported for this long is left out of the fleet status.
const REPORT_EXPIRY: Duration = Duration::from_secs(60);
/// Only workers heard from this recently count towards the fleet's current frames/s.
const LIVE_WINDOW: Duration = Duration::from_secs(5);
const MAX_ID_LEN: usize = 128;
const MAX_CHANNELS_PER_REPORT: usize = 10_000;

#[derive(Default)]
pub struct FleetRegistry {
    workers: Mutex<HashMap<String, (WorkerReport, Instant)>>,
    ingestors: Mutex<HashMap<String, (IngestorReport, Instant)>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Reports are plain data; a panic elsewhere cannot leave them half-updated.
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn validate_process_id(field: &'static str, id: &str) -> Result<(), CoordinatorError> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(CoordinatorError::invalid(
            field,
            format!("must be 1..={MAX_ID_LEN} characters"),
        ));
    }
    Ok(())
}

impl FleetRegistry {
    pub fn record_worker(&self, report: WorkerReport) -> Result<(), CoordinatorError> {
        validate_process_id("worker_id", &report.worker_id)?;
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
        validate_process_id("ingestor_id", &report.ingestor_id)?;
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
        lock(&self.ingestors).insert(report.ingestor_id.clone(), (report, Instant::now()));
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
        ingestors.retain(|_, (_, seen)| now.duration_since(*seen) < REPORT_EXPIRY);
        let mut statuses: Vec<IngestorStatus> = ingestors
            .values()
            .map(|(report, seen)| IngestorStatus {
                report: Some(report.clone()),
                last_seen_ms_ago: millis(now.duration_since(*seen)),
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

/// Reads topic watermarks and the worker group's committed offsets. It never subscribes,
/// so it never joins (or disturbs) the group it inspects.
pub struct KafkaInspector {
    consumer: Arc<BaseConsumer>,
    timeout: Duration,
}

impl KafkaInspector {
    pub fn new(bootstrap_servers: &str, worker_group: &str, timeout: Duration) -> Result<Self, CoordinatorError> {
        let consumer: BaseConsumer = kafka::inspector_config(bootstrap_servers, worker_group)
            .create()
            .map_err(|error| {
                CoordinatorError::KafkaUnavailable(format!("cannot create the Kafka inspector: {error}"))
            })?;
        Ok(Self {
            consumer: Arc::new(consumer),
            timeout,
        })
    }

    pub async fn topic_metrics(&self, topics: Vec<String>) -> Result<Vec<TopicMetrics>, CoordinatorError> {
        let consumer = Arc::clone(&self.consumer);
        let timeout = self.timeout;
        // librdkafka's metadata and offset calls block; keep them off the reactor.
        tokio::task::spawn_blocking(move || {
            topics
                .iter()
                .map(|topic| metrics_for_topic(&consumer, topic, timeout))
                .collect()
        })
        .await
        .map_err(|error| CoordinatorError::KafkaUnavailable(format!("topic metrics task failed: {error}")))?
    }
}

fn metrics_for_topic(
    consumer: &BaseConsumer,
    topic: &str,
    timeout: Duration,
) -> Result<TopicMetrics, CoordinatorError> {
    let unavailable = |what: &str, error: rdkafka::error::KafkaError| {
        CoordinatorError::KafkaUnavailable(format!("reading {what} of topic `{topic}` failed: {error}"))
    };
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(|error| unavailable("metadata", error))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|described| described.name() == topic)
        .flat_map(|described| described.partitions().iter().map(|partition| partition.id()))
        .collect();

    let mut accumulate: u64 = 0;
    let mut partition_list = TopicPartitionList::new();
    for &partition in &partitions {
        let (_low, high) = consumer
            .fetch_watermarks(topic, partition, timeout)
            .map_err(|error| unavailable("watermarks", error))?;
        accumulate = accumulate.saturating_add(u64::try_from(high).unwrap_or(0));
        partition_list.add_partition(topic, partition);
    }

    let mut consume: u64 = 0;
    if !partitions.is_empty() {
        let committed = consumer
            .committed_offsets(partition_list, timeout)
            .map_err(|error| unavailable("committed offsets", error))?;
        for element in committed.elements() {
            if let Offset::Offset(offset) = element.offset() {
                consume = consume.saturating_add(u64::try_from(offset).unwrap_or(0));
            }
        }
    }
    Ok(TopicMetrics {
        topic: topic.to_owned(),
        accumulate,
        consume,
        lag: accumulate.saturating_sub(consume),
    })
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
