//! Kafka client settings. Every setting that decides whether a frame can be lost, duplicated
//! or refused for its size is set here, explicitly, with the reason next to it.

pub mod model_chunks;
pub mod security;

use rdkafka::ClientConfig;
use security::KafkaSecurity;
use std::time::Duration;

/// Where a process's Kafka clients connect and how they secure the connection; every client
/// config of a process is made from one (`base_config` and the configs built on it).
#[derive(Debug, Clone)]
pub struct KafkaConnection {
    /// Bootstrap servers, `host:port`, comma-separated.
    pub brokers: String,
    pub security: KafkaSecurity,
}

impl KafkaConnection {
    pub fn new(brokers: impl Into<String>, security: KafkaSecurity) -> Self {
        Self {
            brokers: brokers.into(),
            security,
        }
    }

    /// A plaintext connection to `brokers` (tests, tools reading a local broker).
    pub fn plaintext(brokers: impl Into<String>) -> Self {
        Self::new(brokers, KafkaSecurity::plaintext())
    }
}

/// Topic carrying one JSON result per processed frame.
pub const DEFAULT_RESULTS_TOPIC: &str = "framefleet.results";
/// Topic carrying frames that could not be processed, with the reason in a header.
pub const DEFAULT_DEAD_LETTER_TOPIC: &str = "framefleet.dead-letter";
/// Consumer group shared by the worker fleet; the coordinator reads its committed offsets.
pub const DEFAULT_WORKER_GROUP: &str = "framefleet-workers";

/// The consumer group of the workers serving `pipeline`: `<base>.<pipeline>`, so each
/// pipeline commits its own offsets and a slow one holds back no other; `base` itself for
/// the workers that serve no pipeline. The coordinator derives the same names to read lag
/// and decide drains.
pub fn consumer_group(base: &str, pipeline: Option<&str>) -> String {
    match pipeline {
        Some(pipeline) => format!("{base}.{pipeline}"),
        None => base.to_owned(),
    }
}
/// Dedicated channel topics are named `<prefix><channel id>`.
pub const CHANNEL_TOPIC_PREFIX: &str = "framefleet.frames.";
/// Shared pool topics are named `<prefix><n>`; a prefix of its own so no channel id can
/// collide with a pool topic.
pub const POOL_TOPIC_PREFIX: &str = "framefleet.pool.";
/// Fan-out topics are named `<prefix><pipeline>.<channel id>`. Pipeline names have no `.`, so
/// the name splits back into one (pipeline, channel) pair, and a pipeline's consumers can
/// subscribe to `^framefleet\.fanout\.<pipeline>\.`.
pub const FANOUT_TOPIC_PREFIX: &str = "framefleet.fanout.";

/// Room for headers and record framing on top of the largest payload.
pub const RECORD_OVERHEAD_BYTES: usize = 64 * 1024;

/// Most bytes of records the producer packs into one batch. Kafka applies a topic's
/// `max.message.bytes` to a whole batch, not to one record, so every topic must accept at
/// least this much (plus overhead) however small its frames are.
pub const PRODUCER_BATCH_BYTES: usize = 1 << 20;

/// The smallest `max.message.bytes` a framefleet topic may have: one full producer batch.
pub fn topic_max_message_bytes(max_payload_bytes: u64) -> u64 {
    let largest_record = max_payload_bytes.saturating_add(RECORD_OVERHEAD_BYTES as u64);
    let full_batch = (PRODUCER_BATCH_BYTES + RECORD_OVERHEAD_BYTES) as u64;
    largest_record.max(full_batch)
}

/// Room kept in a frame record for its key and headers (a few hundred bytes in practice).
const FRAME_HEADER_ROOM: u64 = 16 * 1024;

/// The largest payload a frame record may carry on a topic sized for `raw_frame_bytes`: an
/// encoded frame is rarely larger than the raw one, but a PNG of noise can be, a little.
pub fn max_frame_payload_bytes(raw_frame_bytes: u64) -> u64 {
    topic_max_message_bytes(raw_frame_bytes) - FRAME_HEADER_ROOM
}

pub fn base_config(kafka: &KafkaConnection) -> ClientConfig {
    let mut config = ClientConfig::new();
    kafka.security.apply(&mut config);
    config
        .set("bootstrap.servers", &kafka.brokers)
        // Fail fast on a wrong address instead of retrying silently for minutes.
        .set("socket.connection.setup.timeout.ms", "5000")
        .set("log_level", "4");
    config
}

/// Producer for frames and results.
///
/// `max_record_bytes` is the largest payload this producer will send; librdkafka refuses
/// larger messages locally, so it must cover the largest frame of any schema it serves.
pub fn producer_config(kafka: &KafkaConnection, max_record_bytes: usize) -> ClientConfig {
    let mut config = base_config(kafka);
    let message_max_bytes = max_record_bytes.saturating_add(RECORD_OVERHEAD_BYTES);
    config
        // Idempotence + acks=all: a retried send can neither duplicate nor reorder a frame,
        // and an acknowledged frame is on every in-sync replica.
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.max.bytes", message_max_bytes.to_string())
        // Small batches keep capture-to-result latency low while still coalescing sends.
        .set("linger.ms", "5")
        // Topics are sized to accept a full batch (see `topic_max_message_bytes`).
        .set("batch.size", PRODUCER_BATCH_BYTES.to_string())
        // Keep retrying through a broker restart; an undelivered frame is reported as failed
        // (and counted) only after this.
        .set("message.timeout.ms", "300000");
    config
}

/// Consumer for the worker group: at-least-once with offsets stored by hand.
pub fn worker_consumer_config(kafka: &KafkaConnection, group_id: &str, max_record_bytes: usize) -> ClientConfig {
    let mut config = base_config(kafka);
    let fetch_bytes = max_record_bytes.saturating_add(RECORD_OVERHEAD_BYTES).max(1 << 20);
    config
        .set("group.id", group_id)
        // Auto-commit only commits offsets that we *stored*, and we store an offset only after
        // the frame's result is acknowledged: at-least-once without blocking on commits.
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        // A new group must start from the oldest frame, never skip the backlog.
        .set("auto.offset.reset", "earliest")
        // Cooperative rebalancing keeps unaffected partitions flowing when workers join or leave.
        .set("partition.assignment.strategy", "cooperative-sticky")
        // A single frame may be larger than the default 1 MiB per-partition fetch.
        .set("max.partition.fetch.bytes", fetch_bytes.to_string())
        .set(
            "fetch.max.bytes",
            fetch_bytes.saturating_mul(4).min(i32::MAX as usize).to_string(),
        )
        .set(
            "receive.message.max.bytes",
            (fetch_bytes.saturating_mul(4).saturating_add(RECORD_OVERHEAD_BYTES))
                .min(i32::MAX as usize)
                .to_string(),
        )
        .set("session.timeout.ms", "10000")
        // How long the broker may hold a fetch that found no new record. librdkafka's 500 ms
        // default put up to half a second between a frame's arrival and its consumption on
        // nisshi: capture → result latency at 4 cameras × 15 fps went from p50 141 / p99 264 ms
        // to 42 / 60 ms with 50 ms. An idle worker pays one empty fetch per broker every 50 ms.
        .set("fetch.wait.max.ms", "50");
    config
}

/// Consumer used only to read watermarks and a group's committed offsets (never subscribes,
/// so it never joins the group it inspects).
pub fn inspector_config(kafka: &KafkaConnection, group_id: &str) -> ClientConfig {
    let mut config = base_config(kafka);
    config.set("group.id", group_id).set("enable.auto.commit", "false");
    config
}

#[derive(Debug, thiserror::Error)]
#[error("Kafka at {brokers} is unreachable ({reason}); {hint}")]
pub struct BrokerUnreachable {
    pub brokers: String,
    /// librdkafka's own last error when it gave one (a refused connection, a TLS handshake
    /// that failed and why), else the metadata request's.
    pub reason: String,
    pub hint: &'static str,
}

/// Fails fast, with librdkafka's reason, when the brokers cannot be reached or the connection
/// cannot be secured as `kafka` says, instead of letting records wait in a client queue for the
/// delivery timeout. Uses a short-lived client of its own, whose context keeps the error
/// librdkafka reports (the metadata request alone says only "transport failure").
pub async fn check_reachable(kafka: &KafkaConnection, timeout: Duration) -> Result<(), BrokerUnreachable> {
    use rdkafka::producer::{BaseProducer, Producer as _};
    let kafka = kafka.clone();
    let hint = if kafka.security.protocol() == security::SecurityProtocol::Plaintext {
        "start it with `deploy/local/infra.sh up` or pass --kafka-brokers (brokers that speak TLS or SASL need --kafka-security-protocol)"
    } else {
        "check --kafka-brokers, that the brokers listen with --kafka-security-protocol there, and the --kafka-tls-* and --kafka-sasl-* settings"
    };
    let brokers = kafka.brokers.clone();
    let unreachable = |reason: String| BrokerUnreachable {
        brokers: brokers.clone(),
        reason,
        hint,
    };
    tokio::task::spawn_blocking(move || {
        let probe: BaseProducer<LastError> = base_config(&kafka)
            .create_with_context(LastError::default())
            .map_err(|error| error.to_string())?;
        probe
            .client()
            .fetch_metadata(None, timeout)
            .map(|_| ())
            .map_err(|error| {
                // librdkafka queues its errors as events, possibly after the request gave up:
                // polling serves them to the context.
                let deadline = std::time::Instant::now() + Duration::from_secs(1);
                while !probe.context().has_error() && std::time::Instant::now() < deadline {
                    probe.poll(Duration::from_millis(100));
                }
                probe.context().take().unwrap_or_else(|| error.to_string())
            })
    })
    .await
    .map_err(|error| unreachable(format!("metadata task failed: {error}")))?
    .map_err(unreachable)
}

/// A client context that keeps the last error librdkafka reported (and logs it, as the
/// default context does).
#[derive(Default)]
struct LastError(std::sync::Mutex<Option<String>>);

impl LastError {
    fn has_error(&self) -> bool {
        self.0.lock().is_ok_and(|last| last.is_some())
    }

    fn take(&self) -> Option<String> {
        self.0.lock().map_or(None, |mut last| last.take())
    }
}

impl rdkafka::ClientContext for LastError {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        tracing::warn!(%error, reason, "librdkafka");
        // "1/1 brokers are down" follows every failed connection and says less than it.
        if error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::AllBrokersDown) {
            return;
        }
        if let Ok(mut last) = self.0.lock() {
            *last = Some(format!("{error}: {reason}"));
        }
    }
}

impl rdkafka::producer::ProducerContext for LastError {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

/// How long to wait before offering a record again when librdkafka's local queue is full.
const QUEUE_FULL_BACKOFF: Duration = Duration::from_millis(10);

/// Hands `record` to the producer, waiting while librdkafka's local queue is full (the
/// back-pressure that makes a camera read or a worker batch wait instead of dropping a
/// record). Any other refusal is returned. The returned future resolves on delivery.
pub async fn send_when_queue_has_room<K, P>(
    producer: &rdkafka::producer::FutureProducer,
    mut record: rdkafka::producer::FutureRecord<'_, K, P>,
) -> Result<rdkafka::producer::DeliveryFuture, rdkafka::error::KafkaError>
where
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    loop {
        match producer.send_result(record) {
            Ok(delivery) => return Ok(delivery),
            Err((
                rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                returned,
            )) => {
                record = returned;
                tokio::time::sleep(QUEUE_FULL_BACKOFF).await;
            }
            Err((error, _)) => return Err(error),
        }
    }
}

/// The Kafka headers of a frame record, in the wire format of `framefleet_proto::wire`.
pub fn frame_record_headers(headers: &framefleet_proto::wire::FrameHeaders) -> rdkafka::message::OwnedHeaders {
    headers
        .to_pairs()
        .into_iter()
        .fold(rdkafka::message::OwnedHeaders::new(), |kafka_headers, (name, value)| {
            kafka_headers.insert(rdkafka::message::Header {
                key: name,
                value: Some(value.as_str()),
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_frame_topics_still_accept_a_full_producer_batch() {
        // 176×144 RGB frames: tiny records, but the producer may pack a megabyte of them.
        let limit = topic_max_message_bytes(176 * 144 * 3);
        assert!(limit >= (PRODUCER_BATCH_BYTES + RECORD_OVERHEAD_BYTES) as u64);
    }

    #[test]
    fn large_frame_topics_fit_one_frame_plus_headers() {
        let frame = 3840 * 2160 * 3;
        assert_eq!(topic_max_message_bytes(frame), frame + RECORD_OVERHEAD_BYTES as u64);
    }

    #[test]
    fn producer_batches_fit_the_smallest_topic() {
        let config = producer_config(&KafkaConnection::plaintext("127.0.0.1:9092"), 1000);
        let batch: u64 = config
            .get("batch.size")
            .and_then(|v| v.parse().ok())
            .expect("batch.size set");
        assert!(batch + RECORD_OVERHEAD_BYTES as u64 <= topic_max_message_bytes(0));
    }
}
