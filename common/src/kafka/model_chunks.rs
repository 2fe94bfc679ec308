//! Model weights in Kafka: the coordinator writes a pushed model's weights to one partition of
//! the models topic in chunks, and a worker reads them back by offset. The topic keeps records
//! forever (`retention.ms = -1`) and is not compacted: registered versions name the chunks'
//! offsets, and compaction could remove a chunk that a later push repeated.

use super::{KafkaConnection, base_config};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The topic pushed model weights go to.
pub const DEFAULT_MODELS_TOPIC: &str = "framefleet.models";
/// Most weight bytes in one record: well under Kafka's default 1 MiB record limit.
pub const MODEL_CHUNK_BYTES: usize = 512 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ChunkReadError {
    #[error("cannot read model chunks from Kafka topic `{topic}`: {reason}")]
    Kafka { topic: String, reason: String },
    #[error(
        "Kafka topic `{topic}` partition {partition} has no record at offset {offset} (the model's weights were deleted from the topic)"
    )]
    Missing { topic: String, partition: i32, offset: i64 },
    #[error("read {found} of {wanted} chunks of `{topic}` in {timeout:?}")]
    Timeout {
        topic: String,
        found: usize,
        wanted: usize,
        timeout: Duration,
    },
}

/// The values of the records at `offsets` of `topic`'s `partition`, concatenated in the order
/// of `offsets`. Blocks; other records between them (another push's chunks) are skipped.
///
/// Errors: the client cannot be made or fetches fail, a wanted offset is not in the partition,
/// or not every chunk arrived within `timeout`.
pub fn read_chunks(
    kafka: &KafkaConnection,
    topic: &str,
    partition: i32,
    offsets: &[i64],
    timeout: Duration,
) -> Result<Vec<u8>, ChunkReadError> {
    let kafka_error = |reason: String| ChunkReadError::Kafka {
        topic: topic.to_owned(),
        reason,
    };
    let Some(&first) = offsets.iter().min() else {
        return Ok(Vec::new());
    };
    let mut consumer_config = base_config(kafka);
    consumer_config
        // Assigned, never subscribed: the group is never joined and nothing is committed.
        .set("group.id", "framefleet-model-readers")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        // A first offset no longer in the partition is an error, not a jump to its end.
        .set("auto.offset.reset", "error");
    let consumer: BaseConsumer = consumer_config
        .create()
        .map_err(|error| kafka_error(error.to_string()))?;
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, partition, Offset::Offset(first))
        .map_err(|error| kafka_error(error.to_string()))?;
    consumer
        .assign(&assignment)
        .map_err(|error| kafka_error(error.to_string()))?;
    let last = offsets.iter().copied().max().unwrap_or(first);
    let mut wanted: HashMap<i64, usize> = offsets
        .iter()
        .enumerate()
        .map(|(index, offset)| (*offset, index))
        .collect();
    let mut chunks: Vec<Option<Vec<u8>>> = vec![None; offsets.len()];
    let deadline = Instant::now() + timeout;
    while !wanted.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ChunkReadError::Timeout {
                topic: topic.to_owned(),
                found: offsets.len() - wanted.len(),
                wanted: offsets.len(),
                timeout,
            });
        }
        let Some(message) = consumer.poll(left.min(Duration::from_millis(500))) else {
            continue;
        };
        let message = message.map_err(|error| match error.rdkafka_error_code() {
            // The first offset is before the partition's start: the weights were deleted.
            Some(RDKafkaErrorCode::AutoOffsetReset | RDKafkaErrorCode::OffsetOutOfRange) => ChunkReadError::Missing {
                topic: topic.to_owned(),
                partition,
                offset: first,
            },
            _ => kafka_error(error.to_string()),
        })?;
        let offset = message.offset();
        if let Some(index) = wanted.remove(&offset) {
            chunks[index] = Some(message.payload().unwrap_or_default().to_vec());
        }
        // Past the last wanted offset with some still missing: they are not in the partition.
        if offset >= last
            && let Some(&missing) = wanted.keys().min()
        {
            return Err(ChunkReadError::Missing {
                topic: topic.to_owned(),
                partition,
                offset: missing,
            });
        }
    }
    Ok(chunks.into_iter().flatten().flatten().collect())
}
