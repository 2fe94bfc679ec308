//! Kafka's offsets as the coordinator reads them: each topic's high watermarks and the
//! committed offsets of the consumer groups that read it (one per pipeline, see
//! [`framefleet_proto::channel_readers`]), for the paper's metrics (accumulate, consume, lag)
//! and for deciding that a channel is drained.

use crate::error::CoordinatorError;
use framefleet_common::kafka;
use framefleet_proto::Reader;
use framefleet_proto::v1::TopicMetrics;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Topic rates need readings at least this far apart.
const MIN_RATE_INTERVAL: Duration = Duration::from_millis(200);

/// When a (topic, reader) was read, with its accumulate and consume then.
type Reading = (Instant, u64, u64);

/// Offsets per (topic, partition).
pub type PartitionOffsets = Vec<(String, i32, i64)>;

/// The offsets one reader (a pipeline's group, or the workers serving none) has committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReaderOffsets {
    pub pipeline: Option<String>,
    pub committed: PartitionOffsets,
}

/// Kafka as the drain needs it: how far topics were written, and how far each reader's
/// consumer group has committed.
pub trait DrainProbe: Send + Sync + 'static {
    fn high_watermarks(
        &self,
        topics: Vec<String>,
    ) -> impl Future<Output = Result<PartitionOffsets, CoordinatorError>> + Send;
    /// How far each reader has committed, with the high watermarks of the topics they read,
    /// taken in the same reading: (high watermarks, each reader's committed offsets).
    fn offsets(
        &self,
        readers: Vec<Reader>,
    ) -> impl Future<Output = Result<(PartitionOffsets, Vec<ReaderOffsets>), CoordinatorError>> + Send;
}

/// Reads topic watermarks and the committed offsets of the worker groups (one consumer per
/// group, made on first use). It never subscribes, so it never joins (or disturbs) the
/// groups it inspects.
pub struct KafkaInspector {
    connection: kafka::KafkaConnection,
    /// The workers' base group: pipelines' groups are derived from it
    /// ([`kafka::consumer_group`]).
    worker_group: String,
    /// Consumer group → the consumer that reads its commits.
    consumers: Mutex<HashMap<String, Arc<BaseConsumer>>>,
    timeout: Duration,
    /// The previous reading of each (topic, pipeline), for rates.
    previous: Mutex<HashMap<(String, Option<String>), Reading>>,
}

/// A topic to measure for one reader, and the frame rate its active channels declare.
#[derive(Debug, Clone)]
pub struct TopicLoad {
    pub topic: String,
    pub pipeline: Option<String>,
    pub frames_per_second: f64,
}

/// One partition: its high watermark and the group's committed offset (if any).
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
        let inspector = Self {
            connection: kafka.clone(),
            worker_group: worker_group.to_owned(),
            consumers: Mutex::default(),
            timeout,
            previous: Mutex::default(),
        };
        // Made now so a bad Kafka setting fails the start, not the first status call.
        inspector.consumer(None)?;
        Ok(inspector)
    }

    /// The consumer whose group is the reader's.
    fn consumer(&self, pipeline: Option<&str>) -> Result<Arc<BaseConsumer>, CoordinatorError> {
        let group = kafka::consumer_group(&self.worker_group, pipeline);
        // The map only grows by whole entries; a panic elsewhere cannot leave it half-updated.
        let mut consumers = self.consumers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(consumer) = consumers.get(&group) {
            return Ok(Arc::clone(consumer));
        }
        let consumer: BaseConsumer = kafka::inspector_config(&self.connection, &group)
            .create()
            .map_err(|error| {
                CoordinatorError::KafkaUnavailable(format!(
                    "cannot create the Kafka inspector of group `{group}`: {error}"
                ))
            })?;
        let consumer = Arc::new(consumer);
        consumers.insert(group, Arc::clone(&consumer));
        Ok(consumer)
    }

    /// Each (reader, topic)'s partitions, in the order asked.
    async fn read(
        &self,
        wanted: Vec<(Option<String>, String)>,
    ) -> Result<Vec<(Option<String>, String, Vec<PartitionReading>)>, CoordinatorError> {
        let with_consumers = wanted
            .into_iter()
            .map(|(pipeline, topic)| Ok((self.consumer(pipeline.as_deref())?, pipeline, topic)))
            .collect::<Result<Vec<_>, CoordinatorError>>()?;
        let timeout = self.timeout;
        // librdkafka's metadata and offset calls block; keep them off the reactor.
        tokio::task::spawn_blocking(move || {
            with_consumers
                .into_iter()
                .map(|(consumer, pipeline, topic)| {
                    read_topic(&consumer, &topic, timeout).map(|readings| (pipeline, topic, readings))
                })
                .collect()
        })
        .await
        .map_err(|error| CoordinatorError::KafkaUnavailable(format!("topic metrics task failed: {error}")))?
    }

    /// The paper's metrics per (topic, reader): accumulate, consume, lag (frames and seconds),
    /// and the rates since this coordinator's previous reading.
    pub async fn topic_metrics(&self, topics: Vec<TopicLoad>) -> Result<Vec<TopicMetrics>, CoordinatorError> {
        let wanted = topics
            .iter()
            .map(|load| (load.pipeline.clone(), load.topic.clone()))
            .collect();
        let readings = self.read(wanted).await?;
        let now = Instant::now();
        // Readings are plain data; a panic elsewhere cannot leave them half-updated.
        let mut previous = self.previous.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let metrics = readings
            .into_iter()
            .zip(topics)
            .map(|((pipeline, topic, partitions), load)| {
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
                let key = (topic.clone(), pipeline.clone());
                let last = previous.get(&key).copied();
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
                    previous.insert(key, (now, accumulate, consume));
                }
                TopicMetrics {
                    topic,
                    accumulate,
                    consume,
                    lag,
                    lag_seconds,
                    accumulate_per_second,
                    consume_per_second,
                    pipeline: pipeline.unwrap_or_default(),
                }
            })
            .collect();
        Ok(metrics)
    }
}

/// No partitions is no answer (a topic just created, or a broker between states): read as
/// "nothing written", it would let an ended channel count as drained with frames unread.
fn require_partitions(topic: &str, partitions: &[PartitionReading]) -> Result<(), CoordinatorError> {
    if partitions.is_empty() {
        return Err(CoordinatorError::KafkaUnavailable(format!(
            "the metadata of topic `{topic}` lists no partitions"
        )));
    }
    Ok(())
}

impl DrainProbe for KafkaInspector {
    async fn high_watermarks(&self, topics: Vec<String>) -> Result<PartitionOffsets, CoordinatorError> {
        let mut marks = Vec::new();
        for (_, topic, partitions) in self
            .read(topics.into_iter().map(|topic| (None, topic)).collect())
            .await?
        {
            require_partitions(&topic, &partitions)?;
            marks.extend(
                partitions
                    .iter()
                    .map(|reading| (topic.clone(), reading.partition, reading.high)),
            );
        }
        Ok(marks)
    }

    async fn offsets(&self, readers: Vec<Reader>) -> Result<(PartitionOffsets, Vec<ReaderOffsets>), CoordinatorError> {
        let wanted = readers
            .iter()
            .flat_map(|reader| {
                reader
                    .topics
                    .iter()
                    .map(|topic| (reader.pipeline.clone(), topic.clone()))
            })
            .collect();
        // One entry per reader, however many channels named it.
        let mut offsets: Vec<ReaderOffsets> = Vec::new();
        for reader in readers {
            if !offsets.iter().any(|known| known.pipeline == reader.pipeline) {
                offsets.push(ReaderOffsets {
                    pipeline: reader.pipeline,
                    committed: Vec::new(),
                });
            }
        }
        let mut marks: PartitionOffsets = Vec::new();
        for (pipeline, topic, partitions) in self.read(wanted).await? {
            require_partitions(&topic, &partitions)?;
            // A topic several pipelines read is read once per pipeline: its marks are kept once.
            if !marks.iter().any(|(marked, _, _)| *marked == topic) {
                marks.extend(
                    partitions
                        .iter()
                        .map(|reading| (topic.clone(), reading.partition, reading.high)),
                );
            }
            if let Some(reader) = offsets.iter_mut().find(|reader| reader.pipeline == pipeline) {
                reader.committed.extend(partitions.iter().filter_map(|reading| {
                    reading
                        .committed
                        .map(|offset| (topic.clone(), reading.partition, offset))
                }));
            }
        }
        Ok((marks, offsets))
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
