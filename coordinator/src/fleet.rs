//! Fleet reports and the paper's metrics. Reports arrive every second from every process,
//! so they live in coordinator memory, never in etcd. Accumulate / consume / lag are read
//! from Kafka itself (watermarks and the worker group's committed offsets), not from what
//! processes say about themselves.

use crate::error::CoordinatorError;
use crate::reconciler::{DrainProbe, PartitionOffsets};
use framefleet_common::kafka;
use framefleet_proto::v1::{ChannelStatus, IngestorReport, IngestorStatus, TopicMetrics, WorkerReport, WorkerStatus};
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
/// Topic rates need readings at least this far apart.
const MIN_RATE_INTERVAL: Duration = Duration::from_millis(200);
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

pub fn validate_process_id(field: &'static str, id: &str) -> Result<(), CoordinatorError> {
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

/// Reads topic watermarks and the worker group's committed offsets. It never subscribes,
/// so it never joins (or disturbs) the group it inspects.
pub struct KafkaInspector {
    consumer: Arc<BaseConsumer>,
    timeout: Duration,
    /// The previous reading of each topic, for rates.
    previous: Mutex<HashMap<String, (Instant, u64, u64)>>,
}

/// A topic to measure and the frame rate its active channels declare.
#[derive(Debug, Clone)]
pub struct TopicLoad {
    pub topic: String,
    pub frames_per_second: f64,
}

/// One partition: its high watermark and the worker group's committed offset (if any).
#[derive(Debug, Clone, Copy)]
struct PartitionReading {
    partition: i32,
    high: i64,
    committed: Option<i64>,
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
            previous: Mutex::default(),
        })
    }

    async fn read(&self, topics: Vec<String>) -> Result<Vec<(String, Vec<PartitionReading>)>, CoordinatorError> {
        let consumer = Arc::clone(&self.consumer);
        let timeout = self.timeout;
        // librdkafka's metadata and offset calls block; keep them off the reactor.
        tokio::task::spawn_blocking(move || {
            topics
                .into_iter()
                .map(|topic| read_topic(&consumer, &topic, timeout).map(|readings| (topic, readings)))
                .collect()
        })
        .await
        .map_err(|error| CoordinatorError::KafkaUnavailable(format!("topic metrics task failed: {error}")))?
    }

    /// The paper's metrics per topic: accumulate, consume, lag (frames and seconds), and the
    /// rates since this coordinator's previous reading.
    pub async fn topic_metrics(&self, topics: Vec<TopicLoad>) -> Result<Vec<TopicMetrics>, CoordinatorError> {
        let names = topics.iter().map(|load| load.topic.clone()).collect();
        let readings = self.read(names).await?;
        let now = Instant::now();
        let mut previous = lock(&self.previous);
        let metrics = readings
            .into_iter()
            .zip(topics)
            .map(|((topic, partitions), load)| {
                let accumulate: u64 = partitions.iter().map(|p| u64::try_from(p.high).unwrap_or(0)).sum();
                let consume: u64 = partitions
                    .iter()
                    .filter_map(|p| p.committed)
                    .map(|offset| u64::try_from(offset).unwrap_or(0))
                    .sum();
                let lag = accumulate.saturating_sub(consume);
                let lag_seconds = if load.frames_per_second > 0.0 {
                    lag as f64 / load.frames_per_second
                } else {
                    0.0
                };
                // Readings closer together than MIN_RATE_INTERVAL give noisy rates: the older
                // reading is kept until the next one is far enough from it.
                let last = previous.get(&topic).copied();
                let interval = last.map(|(at, _, _)| now.duration_since(at));
                let (accumulate_per_second, consume_per_second) = match (last, interval) {
                    (Some((_, old_accumulate, old_consume)), Some(interval)) if interval >= MIN_RATE_INTERVAL => {
                        let seconds = interval.as_secs_f64();
                        (
                            accumulate.saturating_sub(old_accumulate) as f64 / seconds,
                            consume.saturating_sub(old_consume) as f64 / seconds,
                        )
                    }
                    _ => (0.0, 0.0),
                };
                if interval.is_none_or(|interval| interval >= MIN_RATE_INTERVAL) {
                    previous.insert(topic.clone(), (now, accumulate, consume));
                }
                TopicMetrics {
                    topic,
                    accumulate,
                    consume,
                    lag,
                    lag_seconds,
                    accumulate_per_second,
                    consume_per_second,
                }
            })
            .collect();
        Ok(metrics)
    }
}

impl DrainProbe for KafkaInspector {
    async fn high_watermarks(&self, topics: Vec<String>) -> Result<PartitionOffsets, CoordinatorError> {
        Ok(self.offsets(topics).await?.0)
    }

    async fn committed(&self, topics: Vec<String>) -> Result<PartitionOffsets, CoordinatorError> {
        Ok(self.offsets(topics).await?.1)
    }

    async fn offsets(&self, topics: Vec<String>) -> Result<(PartitionOffsets, PartitionOffsets), CoordinatorError> {
        let mut marks = Vec::new();
        let mut committed = Vec::new();
        for (topic, partitions) in self.read(topics).await? {
            for reading in partitions {
                marks.push((topic.clone(), reading.partition, reading.high));
                if let Some(offset) = reading.committed {
                    committed.push((topic.clone(), reading.partition, offset));
                }
            }
        }
        Ok((marks, committed))
    }
}

fn read_topic(
    consumer: &BaseConsumer,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<PartitionReading>, CoordinatorError> {
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

    let mut readings = Vec::with_capacity(partitions.len());
    let mut partition_list = TopicPartitionList::new();
    for &partition in &partitions {
        let (_low, high) = consumer
            .fetch_watermarks(topic, partition, timeout)
            .map_err(|error| unavailable("watermarks", error))?;
        readings.push(PartitionReading {
            partition,
            high,
            committed: None,
        });
        partition_list.add_partition(topic, partition);
    }
    if !partitions.is_empty() {
        let committed = consumer
            .committed_offsets(partition_list, timeout)
            .map_err(|error| unavailable("committed offsets", error))?;
        for element in committed.elements() {
            if let Offset::Offset(offset) = element.offset()
                && let Some(reading) = readings.iter_mut().find(|r| r.partition == element.partition())
            {
                reading.committed = Some(offset);
            }
        }
    }
    Ok(readings)
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
