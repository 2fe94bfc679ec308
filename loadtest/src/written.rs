//! Records as another Kafka client would write them into a channel's topic: frames encoded
//! with OpenCV, framefleet's headers set by hand (or left out), and a plain producer. The
//! tests of what a worker makes of records it did not get from an ingestor use these.

use framefleet_proto::wire::{self, FrameHeaders};
use opencv::core::{Mat, Scalar, Vector};
use opencv::prelude::*;
use rdkafka::message::{Headers, OwnedHeaders, OwnedMessage};
use rdkafka::producer::FutureProducer;

/// A JPEG of `width`×`height` pixels of one colour.
pub fn solid_jpeg(width: i32, height: i32) -> anyhow::Result<Vec<u8>> {
    let image = Mat::new_rows_cols_with_default(
        height,
        width,
        opencv::core::CV_8UC3,
        Scalar::new(40.0, 120.0, 200.0, 0.0),
    )?;
    encode_jpeg(&image)
}

/// A JPEG of `width`×`height` pixels of uniform noise: the largest a JPEG of that size gets.
pub fn noise_jpeg(width: i32, height: i32) -> anyhow::Result<Vec<u8>> {
    let mut image = Mat::new_rows_cols_with_default(height, width, opencv::core::CV_8UC3, Scalar::all(0.0))?;
    opencv::core::randu(&mut image, &Scalar::all(0.0), &Scalar::all(255.0))?;
    encode_jpeg(&image)
}

fn encode_jpeg(image: &Mat) -> anyhow::Result<Vec<u8>> {
    let mut encoded = Vector::<u8>::new();
    opencv::imgcodecs::imencode(".jpg", image, &mut encoded, &Vector::new())?;
    Ok(encoded.to_vec())
}

/// framefleet's frame headers for `payload` as frame `sequence` of `channel_id` (schema
/// version 1, ingestor epoch 1), with its checksum.
pub fn frame_record_headers(channel_id: &str, sequence: u64, payload: &[u8]) -> OwnedHeaders {
    let headers = FrameHeaders {
        channel_id: channel_id.to_owned(),
        schema_version: 1,
        sequence,
        ingestor_epoch: 1,
        capture_time_us: 1_700_000_000_000_000,
        checksum: wire::payload_checksum(payload),
        traceparent: None,
    };
    framefleet_common::kafka::frame_record_headers(&headers)
}

/// Header `name` of `message` as text; empty when it is missing.
pub fn header_text(message: &OwnedMessage, name: &str) -> String {
    use rdkafka::message::Message;
    message
        .headers()
        .and_then(|headers| headers.iter().find(|header| header.key == name))
        .and_then(|header| header.value)
        .map(|value| String::from_utf8_lossy(value).into_owned())
        .unwrap_or_default()
}

/// An idempotent producer with librdkafka's defaults otherwise: what another client uses.
pub fn plain_producer(brokers: &str) -> anyhow::Result<FutureProducer> {
    Ok(rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .create()?)
}
