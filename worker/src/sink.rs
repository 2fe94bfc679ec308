//! Where a computed batch goes: one result (or dead letter) record per frame, and the frames'
//! offsets stored only once Kafka has acknowledged every record of the batch, in
//! consumption order: at-least-once, never at-most-once.

use crate::Worker;
use crate::compute::Outcome;
use crate::record::{ConsumedFrame, Rejection};
use crate::stages::Stages;
use anyhow::Context;
use framefleet_common::frame_trace::{self, ProcessedFrame};
use framefleet_common::kafka;
use framefleet_proto::wire;
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
    /// The code of each dead letter of the batch.
    dead_letter_codes: Vec<framefleet_proto::v1::DeadLetterCode>,
    compute_time: Duration,
    /// When its computation started: settling it ends the batch's latency.
    started: Instant,
    /// Each processed frame's stage times, for the stage histograms.
    frame_times: Vec<crate::metrics::FrameTimes>,
    /// Each frame's part of its trace; empty when traces are not exported.
    traced: Vec<TracedFrame>,
    /// Unix µs: the batch's compute started and ended.
    compute_started_us: i64,
    computed_us: i64,
    detect: crate::metrics::DetectTally,
}

/// What a frame's spans need once its outcome is acknowledged.
struct TracedFrame {
    traceparent: Option<String>,
    topic: String,
    partition: i32,
    offset: i64,
    consumed_us: i64,
    decode_us: u64,
    dead_letter_code: Option<&'static str>,
}

impl TracedFrame {
    fn of(frame: &ConsumedFrame, outcome: &Outcome) -> Self {
        let (decode_us, dead_letter_code) = match outcome {
            Outcome::Result(result) => (result.decode_us, None),
            Outcome::DeadLetter(rejection) => (0, Some(rejection.code.as_str_name())),
        };
        Self {
            traceparent: frame.header_text(wire::HEADER_TRACEPARENT).map(str::to_owned),
            topic: frame.topic.clone(),
            partition: frame.partition,
            offset: frame.offset,
            consumed_us: frame.consumed_time_us,
            decode_us,
            dead_letter_code,
        }
    }
}

impl Worker {
    /// Sends a computed batch's results and dead letters. Returns a future that resolves
    /// once Kafka has acknowledged every one of them.
    pub(crate) async fn send_batch(
        &mut self,
        frames: Vec<ConsumedFrame>,
        outcomes: Vec<Outcome>,
        started: Instant,
        stages: &Stages,
    ) -> anyhow::Result<PendingBatch> {
        let compute_time = started.elapsed();
        let computed_us = framefleet_common::startup::unix_time_us();
        let compute_started_us = computed_us - i64::try_from(compute_time.as_micros()).unwrap_or(i64::MAX);
        let traced = if framefleet_common::telemetry::exporting() {
            frames
                .iter()
                .zip(&outcomes)
                .map(|(frame, outcome)| TracedFrame::of(frame, outcome))
                .collect()
        } else {
            Vec::new()
        };
        let mut deliveries = Vec::with_capacity(frames.len());
        for (frame, outcome) in frames.iter().zip(&outcomes) {
            deliveries.push((frame.source(), self.send_outcome(frame, outcome, stages).await?));
            // Events go out with the batch's results, so a frame's offset is stored only once
            // its event is acknowledged too.
            if let (Some(events_topic), Outcome::Result(result)) = (&stages.events_topic, outcome)
                && !result.detections.is_empty()
            {
                deliveries.push((frame.source(), self.send_result(events_topic, frame, result).await?));
            }
        }
        let results: Vec<&wire::FrameResult> = outcomes
            .iter()
            .filter_map(|outcome| match outcome {
                Outcome::Result(result) => Some(result.as_ref()),
                Outcome::DeadLetter(_) => None,
            })
            .collect();
        let detect = crate::metrics::DetectTally::of(&results);
        let processed = outcomes
            .iter()
            .filter(|outcome| matches!(outcome, Outcome::Result(_)))
            .count() as u64;
        let settled = SettledBatch {
            next_offsets: next_offsets(&frames),
            processed,
            dead_letter_codes: outcomes
                .iter()
                .filter_map(|outcome| match outcome {
                    Outcome::DeadLetter(rejection) => Some(rejection.code),
                    Outcome::Result(_) => None,
                })
                .collect(),
            compute_time,
            started,
            frame_times: outcomes
                .iter()
                .filter_map(|outcome| match outcome {
                    Outcome::Result(result) => Some(crate::metrics::FrameTimes::of(result)),
                    Outcome::DeadLetter(_) => None,
                })
                .collect(),
            traced,
            compute_started_us,
            computed_us,
            detect,
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
        self.counters.record_dead_letters(&settled.dead_letter_codes);
        self.metrics.record_detections(&settled.detect);
        self.counters.batches.fetch_add(1, Ordering::Relaxed);
        let latency = settled.started.elapsed();
        self.counters.record_batch_latency(latency);
        self.metrics.record_batch(
            settled.processed,
            &settled.dead_letter_codes,
            settled.compute_time,
            latency,
        );
        let acknowledged_us = framefleet_common::startup::unix_time_us();
        self.metrics.record_frames(&settled.frame_times, acknowledged_us);
        if !settled.traced.is_empty() {
            let frames: Vec<ProcessedFrame<'_>> = settled
                .traced
                .iter()
                .map(|frame| ProcessedFrame {
                    traceparent: frame.traceparent.as_deref(),
                    topic: &frame.topic,
                    partition: frame.partition,
                    offset: frame.offset,
                    consumed_us: frame.consumed_us,
                    compute_started_us: settled.compute_started_us,
                    computed_us: settled.computed_us,
                    decode_us: frame.decode_us,
                    batch_size: settled.traced.len(),
                    dead_letter_code: frame.dead_letter_code,
                })
                .collect();
            frame_trace::record_processed(&frames, frame_trace::unix_us(acknowledged_us));
        }
        self.counters.last_batch_us.store(
            u64::try_from(settled.compute_time.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    async fn send_outcome(
        &self,
        frame: &ConsumedFrame,
        outcome: &Outcome,
        stages: &Stages,
    ) -> anyhow::Result<rdkafka::producer::DeliveryFuture> {
        match outcome {
            Outcome::Result(result) => self.send_result(&stages.results_topic, frame, result).await,
            Outcome::DeadLetter(rejection) => {
                tracing::warn!(topic = %frame.topic, partition = frame.partition, offset = frame.offset, code = rejection.code.as_str_name(), reason = %rejection.reason, "dead-lettering frame");
                let mut dead_letter = DeadLetter::new(frame, rejection, self.config.kafka.max_frame_bytes());
                if let Some(served) = &stages.pipeline {
                    // Small enough for the room `new` leaves for notes.
                    dead_letter.headers.push((
                        Cow::Borrowed(wire::HEADER_PIPELINE),
                        Some(Cow::Owned(served.to_string().into_bytes())),
                    ));
                }
                let mut headers = OwnedHeaders::new_with_capacity(dead_letter.headers.len());
                for (name, value) in &dead_letter.headers {
                    headers = headers.insert(Header {
                        key: name,
                        value: value.as_deref(),
                    });
                }
                let mut record = FutureRecord::<[u8], [u8]>::to(&self.config.dead_letter_topic).headers(headers);
                if let Some(payload) = dead_letter.payload {
                    record = record.payload(payload);
                }
                if let Some(key) = dead_letter.key {
                    record = record.key(key);
                }
                self.send(record).await
            }
        }
    }

    /// Writes `result` to `topic`, keyed by its channel.
    async fn send_result(
        &self,
        topic: &str,
        frame: &ConsumedFrame,
        result: &wire::FrameResult,
    ) -> anyhow::Result<rdkafka::producer::DeliveryFuture> {
        let payload = serde_json::to_vec(result).context("encoding a result")?;
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
        // Keyed by the channel whatever the frame's key was, so a channel's results
        // share a partition and stay in order.
        let record = FutureRecord::to(topic)
            .payload(payload.as_slice())
            .key(result.channel_id.as_bytes())
            .headers(headers);
        self.send(record).await
    }

    async fn send<K, P>(&self, record: FutureRecord<'_, K, P>) -> anyhow::Result<rdkafka::producer::DeliveryFuture>
    where
        K: rdkafka::message::ToBytes + ?Sized,
        P: rdkafka::message::ToBytes + ?Sized,
    {
        let topic = record.topic.to_owned();
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
            tracing::info!(%error, ?next_offsets, "offsets not stored (partition revoked?); frames will be redelivered");
        }
    }
}

/// Longest reason text written; a reason quoting a hostile key or header stays readable.
const MAX_REASON_BYTES: usize = 1024;

/// A dead letter as it will be written: the original record (key, value and headers as they
/// were, nulls kept null) plus why and where from — trimmed so that it always fits in a
/// record of `max_bytes`. A dead letter that cannot be written would stop the worker and
/// bring it back to the same record forever, so the original payload is dropped first when
/// it does not fit, then the original headers, then the key, each noted with its size.
/// A header of a dead letter: name, and value (`None` for null).
type HeaderPair<'a> = (Cow<'a, str>, Option<Cow<'a, [u8]>>);

fn headers_bytes(headers: &[HeaderPair<'_>]) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.len() + value.as_ref().map_or(0, |value| value.len()))
        .sum()
}

pub(crate) struct DeadLetter<'a> {
    pub(crate) key: Option<&'a [u8]>,
    pub(crate) payload: Option<&'a [u8]>,
    pub(crate) headers: Vec<HeaderPair<'a>>,
}

impl<'a> DeadLetter<'a> {
    pub(crate) fn new(frame: &'a ConsumedFrame, rejection: &Rejection, max_bytes: usize) -> Self {
        let mut reason = rejection.reason.clone();
        if reason.len() > MAX_REASON_BYTES {
            let mut end = MAX_REASON_BYTES;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.truncate(end);
            reason.push('…');
        }
        let mut ours: Vec<HeaderPair<'a>> = vec![
            (
                Cow::Borrowed(wire::HEADER_DEAD_LETTER_CODE),
                Some(Cow::Borrowed(rejection.code.as_str_name().as_bytes())),
            ),
            (
                Cow::Borrowed(wire::HEADER_DEAD_LETTER_REASON),
                Some(Cow::Owned(reason.into_bytes())),
            ),
            (
                Cow::Borrowed(wire::HEADER_SOURCE),
                Some(Cow::Owned(frame.source().into_bytes())),
            ),
        ];
        let mut key = frame.key.as_deref();
        let mut payload = frame.payload.as_deref();
        let mut original_headers = true;
        // Room for the size notes added below and the record's framing.
        let budget = max_bytes.saturating_sub(1024);
        let size = |key: Option<&[u8]>, payload: Option<&[u8]>, original_headers: bool, ours: &[HeaderPair<'_>]| {
            key.map_or(0, <[u8]>::len)
                + payload.map_or(0, <[u8]>::len)
                + if original_headers {
                    frame.headers_size_bytes()
                } else {
                    0
                }
                + headers_bytes(ours)
        };
        fn note(ours: &mut Vec<HeaderPair<'_>>, name: &'static str, bytes: usize) {
            ours.push((Cow::Borrowed(name), Some(Cow::Owned(bytes.to_string().into_bytes()))));
        }
        if size(key, payload, original_headers, &ours) > budget
            && let Some(dropped) = payload.take()
        {
            note(&mut ours, wire::HEADER_PAYLOAD_DROPPED_BYTES, dropped.len());
        }
        if size(key, payload, original_headers, &ours) > budget && !frame.headers.is_empty() {
            original_headers = false;
            note(
                &mut ours,
                wire::HEADER_HEADERS_DROPPED_BYTES,
                frame.headers_size_bytes(),
            );
        }
        if size(key, payload, original_headers, &ours) > budget
            && let Some(dropped) = key.take()
        {
            note(&mut ours, wire::HEADER_KEY_DROPPED_BYTES, dropped.len());
        }
        let mut headers: Vec<HeaderPair<'a>> = Vec::new();
        if original_headers {
            headers.extend(
                frame
                    .headers
                    .iter()
                    .map(|(name, value)| (Cow::Borrowed(name.as_str()), value.as_deref().map(Cow::Borrowed))),
            );
        }
        headers.extend(ours);
        Self { key, payload, headers }
    }

    /// Bytes of key, payload and headers.
    #[cfg(test)]
    pub(crate) fn size_bytes(&self) -> usize {
        self.key.map_or(0, <[u8]>::len) + self.payload.map_or(0, <[u8]>::len) + headers_bytes(&self.headers)
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
    use framefleet_proto::v1::DeadLetterCode;

    fn frame(topic: &str, partition: i32, offset: i64) -> ConsumedFrame {
        ConsumedFrame {
            topic: topic.to_owned(),
            partition,
            offset,
            key: None,
            payload: Some(Vec::new()),
            headers: Vec::new(),
            timestamp_ms: None,
            consumed_time_us: 0,
        }
    }

    fn header<'a>(dead_letter: &'a DeadLetter<'_>, name: &str) -> Option<&'a [u8]> {
        dead_letter
            .headers
            .iter()
            .find(|(key, _)| key == name)
            .and_then(|(_, value)| value.as_deref())
    }

    #[test]
    fn a_dead_letter_keeps_the_record_as_it_was_when_it_fits() {
        let mut record = frame("t", 0, 5);
        record.key = None;
        record.payload = None;
        record.headers = vec![("x-null".to_owned(), None), ("x-a".to_owned(), Some(b"1".to_vec()))];
        let rejection = Rejection::new(DeadLetterCode::NullValue, "tombstone");
        let dead_letter = DeadLetter::new(&record, &rejection, 1 << 20);
        assert_eq!((dead_letter.key, dead_letter.payload), (None, None), "nulls stay null");
        assert_eq!(dead_letter.headers[0], (Cow::Borrowed("x-null"), None));
        assert_eq!(
            header(&dead_letter, wire::HEADER_DEAD_LETTER_CODE),
            Some(b"DEAD_LETTER_CODE_NULL_VALUE".as_slice())
        );
        assert_eq!(header(&dead_letter, wire::HEADER_SOURCE), Some(b"t/0@5".as_slice()));
        assert_eq!(header(&dead_letter, wire::HEADER_PAYLOAD_DROPPED_BYTES), None);
    }

    #[test]
    fn a_dead_letter_always_fits_in_a_record() {
        let max_bytes = 1 << 20;
        let mut record = frame("t", 0, 5);
        record.key = Some(b"cam".to_vec());
        record.payload = Some(vec![7; 2_400_000]);
        record.headers = vec![(wire::HEADER_CHANNEL.to_owned(), Some(b"cam".to_vec()))];
        let rejection = Rejection::new(DeadLetterCode::PayloadTooLarge, "x".repeat(10_000));
        let dead_letter = DeadLetter::new(&record, &rejection, max_bytes);
        assert_eq!(dead_letter.payload, None);
        assert_eq!(dead_letter.key, Some(b"cam".as_slice()));
        assert_eq!(
            header(&dead_letter, wire::HEADER_PAYLOAD_DROPPED_BYTES),
            Some(b"2400000".as_slice())
        );
        assert_eq!(
            header(&dead_letter, wire::HEADER_CHANNEL),
            Some(b"cam".as_slice()),
            "headers kept"
        );
        let reason = header(&dead_letter, wire::HEADER_DEAD_LETTER_REASON).expect("reason");
        assert!(
            reason.len() <= MAX_REASON_BYTES + 3,
            "reason trimmed to {}",
            reason.len()
        );

        // Headers and key that cannot fit either go too, each noted.
        record.payload = Some(vec![1; 10]);
        record.headers = vec![("big".to_owned(), Some(vec![0; 2_000_000]))];
        record.key = Some(vec![b'k'; 1_500_000]);
        let dead_letter = DeadLetter::new(&record, &rejection, max_bytes);
        assert_eq!(header(&dead_letter, "big"), None);
        assert_eq!(
            header(&dead_letter, wire::HEADER_HEADERS_DROPPED_BYTES),
            Some(b"2000003".as_slice())
        );
        assert_eq!(
            header(&dead_letter, wire::HEADER_KEY_DROPPED_BYTES),
            Some(b"1500000".as_slice())
        );
        let size = dead_letter.size_bytes();
        assert!(size <= max_bytes, "{size} bytes");
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
