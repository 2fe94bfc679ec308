//! Where a computed batch goes: one result (or dead letter) record per frame, and the frames'
//! offsets stored only once Kafka has acknowledged every record of the batch, in
//! consumption order: at-least-once, never at-most-once.

use crate::Worker;
use crate::compute::Outcome;
use crate::record::ConsumedFrame;
use anyhow::Context;
use framefleet_common::kafka;
use framefleet_proto::wire::{self, HEADER_DEAD_LETTER_REASON};
use rdkafka::consumer::Consumer;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// A batch whose results were sent; resolves when Kafka has acknowledged all of them.
pub(crate) type PendingBatch = Pin<Box<dyn Future<Output = anyhow::Result<SettledBatch>> + Send>>;

pub(crate) struct SettledBatch {
    next_offsets: Vec<(String, i32, i64)>,
    processed: u64,
    dead_lettered: u64,
    compute_time: Duration,
    /// When its computation started: settling it ends the batch's latency.
    started: Instant,
}

impl Worker {
    /// Sends a computed batch's results and dead letters. Returns a future that resolves
    /// once Kafka has acknowledged every one of them.
    pub(crate) async fn send_batch(
        &mut self,
        frames: Vec<ConsumedFrame>,
        outcomes: Vec<Outcome>,
        started: Instant,
    ) -> anyhow::Result<PendingBatch> {
        let compute_time = started.elapsed();
        let mut deliveries = Vec::with_capacity(frames.len());
        for (frame, outcome) in frames.iter().zip(&outcomes) {
            deliveries.push((frame.source(), self.send_outcome(frame, outcome).await?));
        }
        let processed = outcomes
            .iter()
            .filter(|outcome| matches!(outcome, Outcome::Result(_)))
            .count() as u64;
        let settled = SettledBatch {
            next_offsets: next_offsets(&frames),
            processed,
            dead_lettered: outcomes.len() as u64 - processed,
            compute_time,
            started,
        };
        Ok(Box::pin(async move {
            for (source, delivery) in deliveries {
                match delivery.await {
                    Ok(Ok(_)) => {}
                    Ok(Err((error, _))) => anyhow::bail!(
                        "result for {source} was not acknowledged ({error}); stopping without storing its offset so it is processed again"
                    ),
                    Err(_) => anyhow::bail!("producer closed before acknowledging the result for {source}"),
                }
            }
            Ok(settled)
        }))
    }

    /// Everything in the batch is acknowledged: store its offsets and count it.
    pub(crate) fn settle(&self, settled: SettledBatch) {
        self.store_offsets(&settled.next_offsets);
        self.counters
            .frames_processed
            .fetch_add(settled.processed, Ordering::Relaxed);
        self.counters
            .frames_dead_lettered
            .fetch_add(settled.dead_lettered, Ordering::Relaxed);
        self.counters.batches.fetch_add(1, Ordering::Relaxed);
        self.counters.record_batch_latency(settled.started.elapsed());
        self.counters.last_batch_us.store(
            u64::try_from(settled.compute_time.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    async fn send_outcome(
        &self,
        frame: &ConsumedFrame,
        outcome: &Outcome,
    ) -> anyhow::Result<rdkafka::producer::DeliveryFuture> {
        let (topic, payload, headers) = match outcome {
            Outcome::Result(result) => {
                let payload = Cow::Owned(serde_json::to_vec(result).context("encoding a result")?);
                let mut headers = OwnedHeaders::new().insert(Header {
                    key: wire::HEADER_CHANNEL,
                    value: Some(result.channel_id.as_str()),
                });
                if let Some(traceparent) = frame.header(wire::HEADER_TRACEPARENT) {
                    headers = headers.insert(Header {
                        key: wire::HEADER_TRACEPARENT,
                        value: Some(traceparent),
                    });
                }
                (&self.config.results_topic, payload, headers)
            }
            Outcome::DeadLetter { reason } => {
                tracing::warn!(topic = %frame.topic, partition = frame.partition, offset = frame.offset, %reason, "dead-lettering frame");
                let mut headers = OwnedHeaders::new();
                for (name, value) in &frame.headers {
                    headers = headers.insert(Header {
                        key: name.as_str(),
                        value: Some(value.as_slice()),
                    });
                }
                let source = frame.source();
                headers = headers
                    .insert(Header {
                        key: HEADER_DEAD_LETTER_REASON,
                        value: Some(reason.as_str()),
                    })
                    .insert(Header {
                        key: "ff-source",
                        value: Some(source.as_str()),
                    });
                (
                    &self.config.dead_letter_topic,
                    Cow::Borrowed(frame.payload.as_slice()),
                    headers,
                )
            }
        };
        let mut record = FutureRecord::to(topic).payload(payload.as_ref()).headers(headers);
        if let Some(key) = &frame.key {
            record = record.key(key.as_slice());
        }
        kafka::send_when_queue_has_room(&self.producer, record)
            .await
            .with_context(|| format!("cannot produce to `{topic}`"))
    }

    fn store_offsets(&self, next_offsets: &[(String, i32, i64)]) {
        let mut partitions = TopicPartitionList::new();
        for (topic, partition, next_offset) in next_offsets {
            if let Err(error) = partitions.add_partition_offset(topic, *partition, Offset::Offset(*next_offset)) {
                tracing::warn!(%error, topic, partition, "cannot record an offset to store");
            }
        }
        // After a rebalance a partition may no longer be ours; its new owner will process
        // those frames again (at-least-once), so a refused store is expected, not fatal.
        if let Err(error) = self.consumer.store_offsets(&partitions) {
            tracing::info!(%error, "offsets not stored (partition revoked?); frames will be redelivered");
        }
    }
}

/// Per partition, the offset after the last frame of the batch (what Kafka should resume
/// from). Frames of one partition arrive in order, so the highest offset covers the others.
fn next_offsets(frames: &[ConsumedFrame]) -> Vec<(String, i32, i64)> {
    let mut highest: BTreeMap<(&str, i32), i64> = BTreeMap::new();
    for frame in frames {
        let entry = highest
            .entry((frame.topic.as_str(), frame.partition))
            .or_insert(frame.offset);
        *entry = (*entry).max(frame.offset);
    }
    highest
        .into_iter()
        .map(|((topic, partition), offset)| (topic.to_owned(), partition, offset + 1))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(topic: &str, partition: i32, offset: i64) -> ConsumedFrame {
        ConsumedFrame {
            topic: topic.to_owned(),
            partition,
            offset,
            key: None,
            payload: Vec::new(),
            headers: Vec::new(),
        }
    }

    #[test]
    fn offsets_to_store_resume_after_the_last_frame_of_each_partition() {
        let frames = [
            frame("a", 0, 7),
            frame("b", 1, 3),
            frame("a", 0, 8),
            frame("a", 1, 2),
            frame("b", 1, 4),
        ];
        assert_eq!(
            next_offsets(&frames),
            vec![("a".to_owned(), 0, 9), ("a".to_owned(), 1, 3), ("b".to_owned(), 1, 5)]
        );
    }
}
