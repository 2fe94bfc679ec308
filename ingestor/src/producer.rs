//! Delivery of one channel's frames to Kafka. Sends are asynchronous (many frames in flight);
//! a frame is written to every topic of its channel (one, or one per fan-out pipeline) and
//! counts as acknowledged only when every copy is. Each delivery report lands in the
//! channel's ledger, so every captured frame is accounted for.

use crate::capture::EncodedFrame;
use crate::ledger::{ChannelLedger, Persisted};
use crate::queue::FrameQueue;
use framefleet_common::frame_trace::IngestSpan;
use framefleet_common::kafka;
use framefleet_proto::v1::FrameEncoding;
use framefleet_proto::wire::{FrameHeaders, payload_checksum};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Frames handed to librdkafka but not yet acknowledged, per channel. Bounds memory when the
/// broker is slow; beyond it the capture queue fills and the queue policy decides.
const MAX_IN_FLIGHT: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Compression {
    None,
    Lz4,
    Zstd,
}

impl Compression {
    fn codec(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Lz4 => "lz4",
            Self::Zstd => "zstd",
        }
    }
}

/// One producer for already-compressed payloads (JPEG, PNG: compressing again only costs
/// CPU) and one with Kafka compression for raw frames.
#[derive(Clone)]
pub struct Producers {
    plain: FutureProducer,
    compressed: FutureProducer,
}

impl Producers {
    pub fn new(
        kafka: &kafka::KafkaConnection,
        raw_compression: Compression,
        max_frame_bytes: usize,
    ) -> Result<Self, KafkaError> {
        let plain: FutureProducer = kafka::producer_config(kafka, max_frame_bytes).create()?;
        let compressed = match raw_compression {
            Compression::None => plain.clone(),
            codec => kafka::producer_config(kafka, max_frame_bytes)
                .set("compression.codec", codec.codec())
                .create()?,
        };
        Ok(Self { plain, compressed })
    }

    pub fn for_encoding(&self, encoding: FrameEncoding) -> &FutureProducer {
        if encoding == FrameEncoding::Raw {
            &self.compressed
        } else {
            &self.plain
        }
    }

    /// Waits (off the runtime) for every queued record of both producers.
    pub async fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        for producer in [self.plain.clone(), self.compressed.clone()] {
            tokio::task::spawn_blocking(move || producer.flush(timeout))
                .await
                .map_err(|_| KafkaError::Canceled)??;
        }
        Ok(())
    }
}

pub struct ChannelStream {
    pub channel_id: String,
    pub topics: Vec<String>,
    pub schema_version: u32,
    pub ingestor_epoch: u64,
    /// Larger encoded frames are refused locally: the topics were sized for the schema.
    pub max_payload_bytes: usize,
    /// How long after its first send a frame whose delivery failed for a passing reason is
    /// sent again (see [`resend_after`]); zero counts the first failure.
    pub delivery_timeout: Duration,
}

/// First wait before a failed copy is sent again; it doubles up to [`MAX_RESEND_BACKOFF`].
const FIRST_RESEND_BACKOFF: Duration = Duration::from_millis(250);
const MAX_RESEND_BACKOFF: Duration = Duration::from_secs(5);

pub async fn deliver_channel(
    producer: FutureProducer,
    stream: ChannelStream,
    frames: Arc<FrameQueue<EncodedFrame>>,
    ledger: Arc<ChannelLedger>,
) {
    let stream = Arc::new(stream);
    let mut in_flight = FuturesUnordered::new();
    let mut source_open = true;
    while source_open || !in_flight.is_empty() {
        tokio::select! {
            frame = frames.pop(), if source_open && in_flight.len() < MAX_IN_FLIGHT => {
                ledger.set_queued(frames.len());
                let Some(frame) = frame else {
                    source_open = false;
                    continue;
                };
                if frame.payload.len() > stream.max_payload_bytes {
                    ledger.record_failed(
                        format!(
                            "frame {} is {} bytes, over the {} its topics accept",
                            frame.sequence,
                            frame.payload.len(),
                            stream.max_payload_bytes
                        ),
                        Persisted::No,
                    );
                    continue;
                }
                let payload_bytes = frame.payload.len();
                let sequence = frame.sequence;
                // One trace per frame, whatever number of topics it is copied to.
                let trace = IngestSpan::start(&stream.channel_id, sequence, frame.capture_time_us, &stream.topics);
                let sent = SystemTime::now();
                let first_sent = tokio::time::Instant::now();
                // The first sends are awaited here: a full librdkafka queue holds the capture
                // queue back, and with it the camera read (the queue policy decides).
                let mut copies = Vec::with_capacity(stream.topics.len());
                for topic in &stream.topics {
                    copies.push(send_frame(&producer, &stream, topic, &frame, trace.traceparent()).await);
                }
                let copy = CopyContext {
                    producer: producer.clone(),
                    stream: Arc::clone(&stream),
                    ledger: Arc::clone(&ledger),
                    frame: Arc::new(frame),
                    traceparent: trace.traceparent().to_owned(),
                    first_sent,
                };
                in_flight.push(async move {
                    let capture_time_us = copy.frame.capture_time_us;
                    let outcomes = futures::future::join_all(
                        copy.stream.topics.iter().zip(copies).map(|(topic, first)| copy.deliver(topic, first)),
                    )
                    .await;
                    let settled = settle(outcomes);
                    let failure = settled.as_ref().err().map(|(reason, _)| reason.as_str());
                    trace.end(capture_time_us, sent, SystemTime::now(), failure);
                    (settled, payload_bytes, capture_time_us)
                });
            }
            Some((outcome, payload_bytes, capture_time_us)) = in_flight.next() => match outcome {
                Ok(()) => ledger.record_acknowledged(payload_bytes, capture_time_us),
                Err((reason, persisted)) => ledger.record_failed(reason, persisted),
            },
        }
    }
    ledger.set_queued(0);
}

/// What sending one frame's copy again needs.
struct CopyContext {
    producer: FutureProducer,
    stream: Arc<ChannelStream>,
    ledger: Arc<ChannelLedger>,
    frame: Arc<EncodedFrame>,
    traceparent: String,
    first_sent: tokio::time::Instant,
}

impl CopyContext {
    /// Waits for the copy of the frame for `topic` to be acknowledged, sending it again after
    /// each failure [`resend_after`] calls passing until `delivery_timeout` after the first
    /// send: a frame the camera gave is not lost because the broker could not take it for a
    /// while (a restart, its storage failing over). A copy sent again may already be in the
    /// log (the first attempt timed out after the write): at-least-once, like the workers.
    async fn deliver(
        &self,
        topic: &String,
        first: Result<rdkafka::producer::DeliveryFuture, KafkaError>,
    ) -> Result<(), (String, Persisted)> {
        let sequence = self.frame.sequence;
        let mut attempt = first;
        let mut backoff = FIRST_RESEND_BACKOFF;
        loop {
            let error = match attempt {
                Ok(delivery) => match delivery.await {
                    Ok(Ok(_)) => return Ok(()),
                    Ok(Err((error, _))) => error,
                    Err(_) => {
                        return Err((
                            format!("frame {sequence} delivery report lost: producer closed"),
                            Persisted::Possibly,
                        ));
                    }
                },
                Err(error) => error,
            };
            let deadline = self.first_sent + self.stream.delivery_timeout;
            if !resend_after(&error) || tokio::time::Instant::now() + backoff > deadline {
                let reason = format!("frame {sequence} delivery to `{topic}` failed: {error}");
                return Err((reason, persisted_after(&error)));
            }
            self.ledger.record_resent(&format!(
                "frame {sequence} delivery to `{topic}` failed ({error}); sending it again in {backoff:?}"
            ));
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_RESEND_BACKOFF);
            attempt = send_frame(&self.producer, &self.stream, topic, &self.frame, &self.traceparent).await;
        }
    }
}

/// One answer for all copies of a frame: acknowledged only if every topic acknowledged it.
fn settle(outcomes: Vec<Result<(), (String, Persisted)>>) -> Result<(), (String, Persisted)> {
    let mut failure: Option<(String, Persisted)> = None;
    for problem in outcomes.into_iter().filter_map(Result::err) {
        // A copy that may be in the log outweighs one that surely is not.
        if failure
            .as_ref()
            .is_none_or(|(_, persisted)| *persisted == Persisted::No)
        {
            failure = Some(problem);
        }
    }
    failure.map_or(Ok(()), Err)
}

/// Whether a failed delivery is worth sending again: everything but what the broker will
/// refuse again however often it is asked (a record too large or malformed, no permission)
/// and the producer's own purge at shutdown. A timeout, a broker restarting, its storage
/// failing (`KAFKA_STORAGE_ERROR`, `UNKNOWN_SERVER_ERROR` from a broker whose database went
/// away), a leader moving or a topic briefly unknown while metadata catches up all pass.
pub fn resend_after(error: &KafkaError) -> bool {
    !matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed
                | RDKafkaErrorCode::InvalidRecord
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::MessageBatchTooLarge
                | RDKafkaErrorCode::InvalidTopic
                | RDKafkaErrorCode::PurgeQueue
                | RDKafkaErrorCode::PurgeInflight
                | RDKafkaErrorCode::Fatal
        )
    )
}

/// librdkafka's message status (`rd_kafka_message_status`) is not exposed by the safe
/// rdkafka API, so it is inferred from the error as librdkafka documents it: refusals happen
/// before the write, while a timeout or a broken connection may follow a write.
fn persisted_after(error: &KafkaError) -> Persisted {
    match error.rdkafka_error_code() {
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::UnknownTopicOrPartition
            | RDKafkaErrorCode::UnknownTopic
            | RDKafkaErrorCode::UnknownPartition
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::InvalidRecord
            | RDKafkaErrorCode::InvalidMessage
            | RDKafkaErrorCode::MessageBatchTooLarge
            | RDKafkaErrorCode::PurgeQueue,
        ) => Persisted::No,
        _ => Persisted::Possibly,
    }
}

async fn send_frame(
    producer: &FutureProducer,
    stream: &ChannelStream,
    topic: &str,
    frame: &EncodedFrame,
    traceparent: &str,
) -> Result<rdkafka::producer::DeliveryFuture, KafkaError> {
    let headers = FrameHeaders {
        channel_id: stream.channel_id.clone(),
        schema_version: stream.schema_version,
        sequence: frame.sequence,
        ingestor_epoch: stream.ingestor_epoch,
        capture_time_us: frame.capture_time_us,
        checksum: payload_checksum(&frame.payload),
        traceparent: Some(traceparent.to_owned()),
    };
    let kafka_headers = kafka::frame_record_headers(&headers);
    // Keyed by channel: all of a channel's frames land in one partition, in order, also on
    // a shared pool topic.
    let record = FutureRecord::to(topic)
        .key(stream.channel_id.as_str())
        .payload(frame.payload.as_slice())
        .headers(kafka_headers)
        .timestamp(frame.capture_time_us / 1000);
    kafka::send_when_queue_has_room(producer, record).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_not_persisted_and_timeouts_may_be() {
        let too_large = KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge);
        let timed_out = KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut);
        assert_eq!(persisted_after(&too_large), Persisted::No);
        assert_eq!(persisted_after(&timed_out), Persisted::Possibly);
    }

    #[test]
    fn passing_failures_are_sent_again_and_refusals_are_not() {
        for passing in [
            RDKafkaErrorCode::MessageTimedOut,
            RDKafkaErrorCode::KafkaStorageError,
            RDKafkaErrorCode::UnknownTopicOrPartition,
            RDKafkaErrorCode::NotLeaderForPartition,
            RDKafkaErrorCode::BrokerTransportFailure,
            RDKafkaErrorCode::Unknown,
        ] {
            assert!(resend_after(&KafkaError::MessageProduction(passing)), "{passing:?}");
        }
        for refused in [
            RDKafkaErrorCode::MessageSizeTooLarge,
            RDKafkaErrorCode::TopicAuthorizationFailed,
            RDKafkaErrorCode::PurgeQueue,
        ] {
            assert!(!resend_after(&KafkaError::MessageProduction(refused)), "{refused:?}");
        }
    }

    #[test]
    fn one_copy_that_may_be_in_the_log_decides_the_frames_failure() {
        let refused = || Err(("refused".to_owned(), Persisted::No));
        let timed_out = || Err(("timed out".to_owned(), Persisted::Possibly));
        assert_eq!(settle(vec![Ok(()), Ok(())]), Ok(()));
        assert_eq!(settle(vec![refused(), timed_out()]), timed_out());
        assert_eq!(settle(vec![timed_out(), refused()]), timed_out());
        assert_eq!(settle(vec![Ok(()), refused()]), refused());
    }
}
