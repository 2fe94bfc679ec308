//! Model weights kept in Kafka ([`ModelBytes`]): one partition of the models topic, one record
//! per chunk, keyed by the weights' SHA-256. See `framefleet_common::kafka::model_chunks` for
//! how workers read them back.

use crate::error::CoordinatorError;
use crate::models::ModelBytes;
use crate::models::record::ChunkLocation;
use framefleet_common::kafka::model_chunks::MODEL_CHUNK_BYTES;
use framefleet_common::kafka::{self, KafkaConnection};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use std::time::Duration;

/// Every chunk goes to this partition, so a model's chunks are in offset order.
const PARTITION: i32 = 0;

pub struct KafkaModelBytes {
    producer: FutureProducer,
    topic: String,
    timeout: Duration,
}

impl KafkaModelBytes {
    /// A producer for `topic`, which must exist (the coordinator creates it at start).
    pub fn new(connection: &KafkaConnection, topic: &str, timeout: Duration) -> Result<Self, CoordinatorError> {
        let producer = kafka::producer_config(connection, MODEL_CHUNK_BYTES)
            .create()
            .map_err(|error| {
                CoordinatorError::KafkaUnavailable(format!("cannot create the model producer: {error}"))
            })?;
        Ok(Self {
            producer,
            topic: topic.to_owned(),
            timeout,
        })
    }
}

impl ModelBytes for KafkaModelBytes {
    async fn store(&self, sha256: &str, weights: &[u8]) -> Result<ChunkLocation, CoordinatorError> {
        let chunks: Vec<&[u8]> = weights.chunks(MODEL_CHUNK_BYTES).collect();
        let count = chunks.len().to_string();
        let sends = chunks.iter().enumerate().map(|(index, chunk)| {
            let index = index.to_string();
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "ff-model-chunk",
                    value: Some(index.as_str()),
                })
                .insert(Header {
                    key: "ff-model-chunks",
                    value: Some(count.as_str()),
                });
            let record = FutureRecord::to(&self.topic)
                .partition(PARTITION)
                .key(sha256)
                .payload(*chunk)
                .headers(headers);
            self.producer.send(record, self.timeout)
        });
        // The idempotent producer keeps one partition's records in send order.
        let delivered = futures::future::join_all(sends).await;
        let mut offsets = Vec::with_capacity(delivered.len());
        for delivery in delivered {
            let delivery = delivery.map_err(|(error, _)| {
                let message = format!(
                    "the broker did not take a chunk of model {sha256} on `{}`: {error}",
                    self.topic
                );
                // Asking again cannot help these: the topic's settings or this coordinator's
                // access must change first.
                match error.rdkafka_error_code() {
                    Some(
                        RDKafkaErrorCode::MessageSizeTooLarge
                        | RDKafkaErrorCode::TopicAuthorizationFailed
                        | RDKafkaErrorCode::InvalidTopic
                        | RDKafkaErrorCode::UnknownTopicOrPartition,
                    ) => CoordinatorError::FailedPrecondition(message),
                    _ => CoordinatorError::KafkaUnavailable(message),
                }
            })?;
            offsets.push(delivery.offset);
        }
        Ok(ChunkLocation {
            topic: self.topic.clone(),
            partition: PARTITION,
            offsets,
        })
    }
}
