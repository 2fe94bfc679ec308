//! Delivery of one channel's frames to Kafka. Sends are asynchronous (many frames in flight)
//! and every delivery report lands in the channel's ledger, so each captured frame is
//! accounted for as acknowledged or failed.

use crate::capture::EncodedFrame;
use crate::ledger::ChannelLedger;
use framefleet_proto::wire::{FrameHeaders, payload_checksum};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Frames handed to librdkafka but not yet acknowledged, per channel. Bounds memory when the
/// broker is slow; beyond it the capture queue fills and the camera read waits.
const MAX_IN_FLIGHT: usize = 512;

pub struct ChannelStream {
    pub channel_id: String,
    pub topic: String,
    pub schema_version: u32,
    pub ingestor_epoch: u64,
}

pub async fn deliver_channel(
    producer: FutureProducer,
    stream: ChannelStream,
    mut frames: mpsc::Receiver<EncodedFrame>,
    ledger: Arc<ChannelLedger>,
) {
    let mut in_flight = FuturesUnordered::new();
    let mut next_sequence: u64 = 0;
    let mut source_open = true;
    while source_open || !in_flight.is_empty() {
        tokio::select! {
            frame = frames.recv(), if source_open && in_flight.len() < MAX_IN_FLIGHT => {
                let Some(frame) = frame else {
                    source_open = false;
                    continue;
                };
                let sequence = next_sequence;
                next_sequence += 1;
                let payload_bytes = frame.payload.len();
                match send_frame(&producer, &stream, sequence, frame).await {
                    Ok(delivery) => in_flight.push(async move { (delivery.await, payload_bytes) }),
                    Err(error) => ledger.record_failed(format!("frame {sequence} refused by the producer: {error}")),
                }
            }
            Some((outcome, payload_bytes)) = in_flight.next() => match outcome {
                Ok(Ok(_)) => ledger.record_acknowledged(payload_bytes),
                Ok(Err((error, _message))) => ledger.record_failed(format!("delivery failed: {error}")),
                Err(_cancelled) => ledger.record_failed("delivery report lost: producer closed".to_owned()),
            },
        }
    }
}

async fn send_frame(
    producer: &FutureProducer,
    stream: &ChannelStream,
    sequence: u64,
    frame: EncodedFrame,
) -> Result<rdkafka::producer::DeliveryFuture, KafkaError> {
    // One span per frame: when traces are exported, its context is the frame's traceparent,
    // so capture → process → result can be one trace.
    let span = tracing::info_span!("produce_frame", channel = %stream.channel_id, sequence);
    let traceparent = span.in_scope(framefleet_common::telemetry::frame_traceparent);
    let headers = FrameHeaders {
        channel_id: stream.channel_id.clone(),
        schema_version: stream.schema_version,
        sequence,
        ingestor_epoch: stream.ingestor_epoch,
        capture_time_us: frame.capture_time_us,
        checksum: payload_checksum(&frame.payload),
        traceparent: Some(traceparent),
    };
    let kafka_headers = framefleet_common::kafka::frame_record_headers(&headers);
    let record = FutureRecord::to(&stream.topic)
        .key(stream.channel_id.as_str())
        .payload(frame.payload.as_slice())
        .headers(kafka_headers)
        .timestamp(frame.capture_time_us / 1000);
    framefleet_common::kafka::send_when_queue_has_room(producer, record).await
}
