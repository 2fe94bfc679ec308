//! The worker's Kafka consumer context: commits stored offsets when partitions are revoked,
//! and turns librdkafka's statistics into the lag the worker reports.

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{ClientContext, Statistics};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// What the consumer context shares with the worker's reporter.
#[derive(Debug, Default)]
pub struct ConsumerGauges {
    /// Frames between the stored offset and the high watermark over the partitions this
    /// worker owns, from the last statistics; -1 before the first.
    pub lag_frames: AtomicI64,
    pub assigned_partitions: AtomicU64,
    pub rebalances: AtomicU64,
}

pub struct WorkerConsumerContext {
    pub gauges: Arc<ConsumerGauges>,
    /// Partitions revoked since the consume loop last looked: the records of theirs it has
    /// gathered but not started belong to the partitions' new owner now.
    pub revoked: Mutex<Vec<(String, i32)>>,
    /// The partitions this worker owns, from the last rebalance. librdkafka may still hand
    /// over records it prefetched for a partition after revoking it (measured: seconds of a
    /// revoked partition's backlog, every record processed twice); those are not ours.
    /// topic → partitions, so the per-record check looks up by `&str` without allocating.
    owned: std::sync::RwLock<std::collections::HashMap<String, std::collections::HashSet<i32>>>,
}

impl WorkerConsumerContext {
    pub fn new(gauges: Arc<ConsumerGauges>) -> Self {
        Self {
            gauges,
            revoked: Mutex::new(Vec::new()),
            owned: std::sync::RwLock::default(),
        }
    }

    /// Whether `partition` of `topic` is assigned to this worker now.
    pub fn owns(&self, topic: &str, partition: i32) -> bool {
        self.owned
            .read()
            .map(|owned| {
                owned
                    .get(topic)
                    .is_some_and(|partitions| partitions.contains(&partition))
            })
            .unwrap_or(true)
    }

    /// The partitions revoked since the last call, as (topic, partition).
    pub fn take_revoked(&self) -> Vec<(String, i32)> {
        self.revoked
            .lock()
            .map(|mut revoked| std::mem::take(&mut *revoked))
            .unwrap_or_default()
    }
}

impl ClientContext for WorkerConsumerContext {
    fn stats(&self, statistics: Statistics) {
        let mut lag = 0_i64;
        for (name, topic) in &statistics.topics {
            // Partition -1 is librdkafka's internal "unassigned" bucket; a partition this
            // worker no longer owns may linger in the statistics with its last lag.
            for partition in topic
                .partitions
                .values()
                .filter(|p| p.partition >= 0 && p.desired && self.owns(name, p.partition))
            {
                // Stored offsets move with every acknowledged batch; committed ones only on
                // commit. Fall back to the committed lag while nothing has been stored.
                lag += if partition.consumer_lag_stored >= 0 {
                    partition.consumer_lag_stored
                } else {
                    partition.consumer_lag.max(0)
                };
            }
        }
        self.gauges.lag_frames.store(lag, Ordering::Relaxed);
    }
}

impl ConsumerContext for WorkerConsumerContext {
    /// Commits what was stored before the partitions go, so their next owner starts after
    /// the last acknowledged result instead of up to one auto-commit interval earlier.
    /// Frames still being processed here are not stored and will be processed again there.
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        self.gauges.rebalances.fetch_add(1, Ordering::Relaxed);
        if let Rebalance::Revoke(partitions) = rebalance {
            if let Ok(mut revoked) = self.revoked.lock() {
                revoked.extend(
                    partitions
                        .elements()
                        .iter()
                        .map(|element| (element.topic().to_owned(), element.partition())),
                );
            }
            // Called from the consumer's poll, on a runtime thread: the synchronous commit
            // hands that thread's other tasks over while it waits for the broker.
            match framefleet_common::shutdown::blocking(|| consumer.commit_consumer_state(CommitMode::Sync)) {
                Ok(()) => tracing::info!(revoked = partitions.count(), "offsets committed before revocation"),
                Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
                Err(error) => tracing::warn!(%error, "commit before revocation failed; frames will be redelivered"),
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        // The assignment itself, not the statistics, which lag by up to an interval.
        let mut assignment: std::collections::HashMap<String, std::collections::HashSet<i32>> =
            std::collections::HashMap::new();
        let mut owned = 0;
        if let Ok(partitions) = consumer.assignment() {
            for element in partitions.elements() {
                assignment
                    .entry(element.topic().to_owned())
                    .or_default()
                    .insert(element.partition());
                owned += 1;
            }
        }
        if let Ok(mut current) = self.owned.write() {
            *current = assignment;
        }
        self.gauges.assigned_partitions.store(owned as u64, Ordering::Relaxed);
        if owned == 0 {
            // No statistics may come for partitions it no longer has: nothing is lagging here.
            self.gauges.lag_frames.store(0, Ordering::Relaxed);
        }
        let names = |partitions: &rdkafka::TopicPartitionList| -> Vec<String> {
            partitions
                .elements()
                .iter()
                .map(|element| format!("{}/{}", element.topic(), element.partition()))
                .collect()
        };
        match rebalance {
            Rebalance::Assign(partitions) => {
                tracing::info!(added = ?names(partitions), owned, "partitions assigned");
            }
            Rebalance::Revoke(partitions) => {
                tracing::info!(removed = ?names(partitions), owned, "partitions revoked");
            }
            Rebalance::Error(error) => tracing::warn!(%error, "rebalance failed"),
        }
    }
}
