//! Kafka's offsets as the coordinator reads them: each topic's high watermarks and the worker
//! group's committed offsets, for the paper's metrics (accumulate, consume, lag) and for
//! deciding that a channel is drained.

use crate::error::CoordinatorError;
use framefleet_common::kafka;
use framefleet_proto::v1::TopicMetrics;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Topic rates need readings at least this far apart.
const MIN_RATE_INTERVAL: Duration = Duration::from_millis(200);

/// Offsets per (topic, partition).
pub type PartitionOffsets = Vec<(String, i32, i64)>;

/// Kafka as the drain needs it: how far topics were written, and how far the worker group
/// has committed.
pub trait DrainProbe: Send + Sync + 'static {
    fn high_watermarks(
        &self,
        topics: Vec<String>,
    ) -> impl Future<Output = Result<PartitionOffsets, CoordinatorError>> + Send;
    fn committed(&self, topics: Vec<String>)
    -> impl Future<Output = Result<PartitionOffsets, CoordinatorError>> + Send;
    /// Both, read once: (high watermarks, committed offsets).
    fn offsets(
        &self,
        topics: Vec<String>,
    ) -> impl Future<Output = Result<(PartitionOffsets, PartitionOffsets), CoordinatorError>> + Send;
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
    pub fn new(
        kafka: &kafka::KafkaConnection,
        worker_group: &str,
        timeout: Duration,
    ) -> Result<Self, CoordinatorError> {
        let consumer: BaseConsumer = kafka::inspector_config(kafka, worker_group).create().map_err(|error| {
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
        // Readings are plain data; a panic elsewhere cannot leave them half-updated.
        let mut previous = self.previous.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
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
            // No partitions is no answer (a topic just created, or a broker between states):
            // read as "nothing written", it would let an ended channel count as drained with
            // frames unread.
            if partitions.is_empty() {
                return Err(CoordinatorError::KafkaUnavailable(format!(
                    "the metadata of topic `{topic}` lists no partitions"
                )));
            }
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
