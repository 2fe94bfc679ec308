//! An end-to-end audit read from Kafka itself: every result and dead letter on the fleet's
//! topics, tallied per channel run (channel id, ingestor epoch) by frame sequence number, so
//! duplicates (at-least-once redelivery after a rebalance or a crash) are counted apart from
//! frames. Compared with the frames each run's ledger says Kafka acknowledged, it tells
//! whether every accepted frame got exactly one outcome.
//!
//! It reads each partition of both topics from its start to the high watermark it had when
//! the audit began, with a plain consumer (manual assignment; it joins no group and commits
//! nothing), so it never disturbs the workers.

use framefleet_proto::wire::{FrameHeaders, FrameResult};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("reading `{topic}` from Kafka: {source}")]
    Kafka {
        topic: String,
        source: rdkafka::error::KafkaError,
    },
    #[error("`{topic}` was not read to its end within {timeout:?} ({remaining} records left)")]
    Incomplete {
        topic: String,
        timeout: Duration,
        remaining: i64,
    },
}

/// Outcomes of one channel run, by sequence number.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RunTally {
    /// Frames with at least one result.
    pub processed: u64,
    /// Frames with a dead letter and no result.
    pub dead_lettered: u64,
    /// Outcome records beyond each frame's first.
    pub duplicates: u64,
    /// Frames found in the channel's own topics (each once); 0 when they were not read.
    pub in_kafka: u64,
    /// Frames found in the channel's topics with neither a result nor a dead letter.
    pub without_outcome: u64,
}

impl RunTally {
    /// Frames with an outcome, each counted once.
    pub fn frames(&self) -> u64 {
        self.processed + self.dead_lettered
    }
}

/// What the fleet's result and dead-letter topics hold.
#[derive(Debug, Default, Clone)]
pub struct Audit {
    /// Per (channel id, ingestor epoch).
    pub runs: BTreeMap<(String, u64), RunTally>,
    /// Result records that are not a readable `FrameResult`.
    pub unreadable_results: u64,
    /// Dead letters whose frame headers were missing or unreadable (records of other
    /// producers, or headers dropped to make the dead letter fit): no channel to count them
    /// against.
    pub unattributed_dead_letters: u64,
    pub records_read: u64,
    /// Results per pipeline version (`name@version`; empty for workers serving no
    /// pipeline), of the tallied channels.
    pub versions: BTreeMap<String, VersionTally>,
}

/// The results one pipeline version made.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct VersionTally {
    /// Result records.
    pub results: u64,
    /// Of those, results of a frame that already had one earlier in its partition (another
    /// version's while a new one took over, or this one's after a redelivery).
    pub duplicates: u64,
}

/// How an audit names the version that made a result: `name@version`, or empty.
pub fn version_label(result: &FrameResult) -> String {
    match (&result.pipeline, result.pipeline_version) {
        (Some(name), Some(version)) => format!("{name}@{version}"),
        (Some(name), None) => name.clone(),
        (None, _) => String::new(),
    }
}

#[derive(Default)]
struct Outcomes {
    /// Seen in the channel's own topics.
    written: bool,
    results: u32,
    dead_letters: u32,
}

/// The topics an audit reads.
pub struct Topics<'a> {
    pub results: &'a str,
    pub dead_letters: &'a str,
    /// The channels' frame topics: read first, so that every frame found there can be
    /// checked for an outcome (not only the frames the ingestors' ledgers count).
    pub frames: &'a [String],
    /// Audit one pipeline's outcomes: only dead letters its workers wrote (their
    /// `ff-pipeline` header names it) count. `None`: only dead letters without that header
    /// (of workers serving no pipeline).
    pub pipeline: Option<&'a str>,
}

/// Whether a dead letter's `ff-pipeline` header (`name@version`, or absent) is `pipeline`'s.
fn dead_letter_of(record: &rdkafka::message::BorrowedMessage<'_>, pipeline: Option<&str>) -> bool {
    let written_by = record
        .headers()
        .into_iter()
        .flat_map(|headers| headers.iter())
        .find(|header| header.key == framefleet_proto::wire::HEADER_PIPELINE)
        .and_then(|header| header.value)
        .map(|value| {
            let label = String::from_utf8_lossy(value);
            label
                .split_once('@')
                .map_or_else(|| label.to_string(), |(name, _)| name.to_owned())
        });
    written_by.as_deref() == pipeline
}

/// The channels an audit tallies: those whose id starts with `prefix`, are among `only` when
/// it is given (the channels that name the audited pipeline), and are not in `except` (an
/// audit of the workers serving no pipeline leaves out the channels that name pipelines:
/// their outcomes are in those pipelines' topics).
#[derive(Debug, Clone, Default)]
pub struct ChannelFilter {
    pub prefix: String,
    pub only: Option<std::collections::HashSet<String>>,
    pub except: std::collections::HashSet<String>,
}

impl ChannelFilter {
    pub fn admits(&self, channel_id: &str) -> bool {
        channel_id.starts_with(&self.prefix)
            && self.only.as_ref().is_none_or(|only| only.contains(channel_id))
            && !self.except.contains(channel_id)
    }
}

/// Reads the topics to their current ends, frame topics first (blocking: call it from
/// `spawn_blocking`). Only channels `channels` admits are tallied.
pub fn read(
    kafka: &crate::kafka::KafkaConnection,
    topics: &Topics<'_>,
    channels: &ChannelFilter,
    timeout: Duration,
) -> Result<Audit, AuditError> {
    let mut outcomes: HashMap<(String, u64), HashMap<u64, Outcomes>> = HashMap::new();
    let mut audit = Audit::default();
    let deadline = Instant::now() + timeout;
    let headers_of = |record: &rdkafka::message::BorrowedMessage<'_>| {
        let headers = record
            .headers()
            .into_iter()
            .flat_map(|headers| headers.iter())
            .map(|header| (header.key, header.value));
        FrameHeaders::parse(headers)
    };
    for topic in topics.frames {
        read_topic(kafka, topic, deadline, timeout, |record| {
            audit.records_read += 1;
            // Records of other producers get dead letters, counted below.
            if let Ok(frame) = headers_of(record)
                && channels.admits(&frame.channel_id)
            {
                outcomes
                    .entry((frame.channel_id, frame.ingestor_epoch))
                    .or_default()
                    .entry(frame.sequence)
                    .or_default()
                    .written = true;
            }
        })?;
    }
    let results_topic = topics.results;
    let dead_letter_topic = topics.dead_letters;
    read_topic(kafka, results_topic, deadline, timeout, |record| {
        audit.records_read += 1;
        let Some(result) = record
            .payload()
            .and_then(|payload| serde_json::from_slice::<FrameResult>(payload).ok())
        else {
            audit.unreadable_results += 1;
            return;
        };
        if channels.admits(&result.channel_id) {
            let version = audit.versions.entry(version_label(&result)).or_default();
            let frame = outcomes
                .entry((result.channel_id, result.ingestor_epoch))
                .or_default()
                .entry(result.sequence)
                .or_default();
            version.results += 1;
            version.duplicates += u64::from(frame.results > 0);
            frame.results += 1;
        }
    })?;
    read_topic(kafka, dead_letter_topic, deadline, timeout, |record| {
        audit.records_read += 1;
        if !dead_letter_of(record, topics.pipeline) {
            return;
        }
        let Ok(frame) = headers_of(record) else {
            audit.unattributed_dead_letters += 1;
            return;
        };
        if channels.admits(&frame.channel_id) {
            outcomes
                .entry((frame.channel_id, frame.ingestor_epoch))
                .or_default()
                .entry(frame.sequence)
                .or_default()
                .dead_letters += 1;
        }
    })?;
    audit.runs = tally(outcomes);
    Ok(audit)
}

/// Per run: each frame once (processed if any of its outcomes is a result), and every
/// outcome beyond a frame's first as a duplicate.
fn tally(outcomes: HashMap<(String, u64), HashMap<u64, Outcomes>>) -> BTreeMap<(String, u64), RunTally> {
    let mut runs = BTreeMap::new();
    for (run, frames) in outcomes {
        let tally: &mut RunTally = runs.entry(run).or_default();
        for frame in frames.values() {
            tally.in_kafka += u64::from(frame.written);
            if frame.results > 0 {
                tally.processed += 1;
            } else if frame.dead_letters > 0 {
                tally.dead_lettered += 1;
            } else {
                tally.without_outcome += 1;
            }
            tally.duplicates += u64::from((frame.results + frame.dead_letters).saturating_sub(1));
        }
    }
    runs
}

/// Reads `topic` from its low watermarks up to the high watermarks taken when it starts, calling
/// `each` on every record; errors when that takes past `deadline`.
pub fn read_topic(
    kafka: &crate::kafka::KafkaConnection,
    topic: &str,
    deadline: Instant,
    timeout: Duration,
    mut each: impl FnMut(&rdkafka::message::BorrowedMessage<'_>),
) -> Result<(), AuditError> {
    let failed = |source| AuditError::Kafka {
        topic: topic.to_owned(),
        source,
    };
    let consumer: BaseConsumer = crate::kafka::base_config(kafka)
        .set("group.id", "framefleet-audit")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("max.partition.fetch.bytes", "16777216")
        .set("fetch.max.bytes", "67108864")
        .create()
        .map_err(failed)?;
    let metadata = consumer
        .fetch_metadata(Some(topic), deadline.saturating_duration_since(Instant::now()))
        .map_err(failed)?;
    // Per partition: the offset to read up to (exclusive), taken now, and the next to read.
    let mut pending: HashMap<i32, (i64, i64)> = HashMap::new();
    let mut assignment = TopicPartitionList::new();
    for partition in metadata.topics().iter().flat_map(|topic| topic.partitions()) {
        let (low, high) = consumer
            .fetch_watermarks(
                topic,
                partition.id(),
                deadline.saturating_duration_since(Instant::now()),
            )
            .map_err(failed)?;
        if high > low {
            pending.insert(partition.id(), (high, low));
            assignment
                .add_partition_offset(topic, partition.id(), Offset::Offset(low))
                .map_err(failed)?;
        }
    }
    if pending.is_empty() {
        return Ok(());
    }
    consumer.assign(&assignment).map_err(failed)?;
    while !pending.is_empty() {
        if Instant::now() > deadline {
            return Err(AuditError::Incomplete {
                topic: topic.to_owned(),
                timeout,
                remaining: pending.values().map(|(end, next)| end - next).sum(),
            });
        }
        match consumer.poll(Duration::from_millis(200)) {
            Some(record) => {
                let record = record.map_err(failed)?;
                if let Some((end, next)) = pending.get_mut(&record.partition())
                    && record.offset() < *end
                {
                    *next = record.offset() + 1;
                    each(&record);
                }
            }
            // Offsets without a record to deliver (transaction markers, compaction) end a
            // partition without its last offset ever being seen: ask where the consumer is.
            None => {
                if let Ok(positions) = consumer.position() {
                    for element in positions.elements_for_topic(topic) {
                        if let (Offset::Offset(position), Some((_, next))) =
                            (element.offset(), pending.get_mut(&element.partition()))
                        {
                            *next = (*next).max(position);
                        }
                    }
                }
            }
        }
        pending.retain(|_, (end, next)| next < end);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_frame_counts_once_and_extra_outcomes_are_duplicates() {
        let outcome = |results, dead_letters| Outcomes {
            written: true,
            results,
            dead_letters,
        };
        let run = ("cam".to_owned(), 7);
        let frames: HashMap<u64, Outcomes> = [
            (0, outcome(1, 0)),
            (1, outcome(2, 0)),
            (2, outcome(0, 1)),
            (3, outcome(1, 1)),
            (4, outcome(0, 3)),
            (5, outcome(0, 0)),
        ]
        .into_iter()
        .collect();
        let runs = tally([(run.clone(), frames)].into_iter().collect());
        assert_eq!(
            runs[&run],
            RunTally {
                processed: 3,
                dead_lettered: 2,
                duplicates: 4,
                in_kafka: 6,
                without_outcome: 1,
            }
        );
        assert_eq!(runs[&run].frames(), 5);
    }
}
