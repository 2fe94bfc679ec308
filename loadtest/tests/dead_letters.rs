//! Garbage written straight into a channel topic by a plain Kafka producer: every bad
//! record becomes a dead letter that says why, the worker stays up, and the good frame
//! behind them still gets its result.

use framefleet_loadtest::Fleet;
use framefleet_proto::v1::channel_service_client::ChannelServiceClient;
use framefleet_proto::v1::{FrameEncoding, FrameSchema, PixelFormat, RegisterChannelRequest};
use framefleet_proto::wire::{self, FrameHeaders, FrameResult};
use opencv::core::{Mat, Scalar, Vector};
use opencv::prelude::*;
use rdkafka::ClientConfig;
use rdkafka::message::{Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::time::Duration;

const WIDTH: i32 = 64;
const HEIGHT: i32 = 48;

fn jpeg(width: i32, height: i32) -> Vec<u8> {
    let image = Mat::new_rows_cols_with_default(
        height,
        width,
        opencv::core::CV_8UC3,
        Scalar::new(40.0, 120.0, 200.0, 0.0),
    )
    .expect("image");
    let mut encoded = Vector::<u8>::new();
    opencv::imgcodecs::imencode(".jpg", &image, &mut encoded, &Vector::new()).expect("encode");
    encoded.to_vec()
}

fn headers_for(channel_id: &str, sequence: u64, payload: &[u8]) -> OwnedHeaders {
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

fn header(message: &rdkafka::message::OwnedMessage, name: &str) -> String {
    message
        .headers()
        .and_then(|headers| headers.iter().find(|header| header.key == name))
        .and_then(|header| header.value)
        .map(|value| String::from_utf8_lossy(value).into_owned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_in_a_topic_is_dead_lettered_and_the_next_good_frame_processed() {
    let mut fleet = Fleet::start("dead-letters").await.expect("start the coordinator");
    let channel_id = fleet.names.channel_id("cam");
    let channel = framefleet_proto::client::connect_coordinator(
        &fleet.coordinator_address,
        Duration::from_secs(10),
        &Default::default(),
    )
    .await
    .expect("connect");
    let registered = ChannelServiceClient::new(channel)
        .register_channel(RegisterChannelRequest {
            channel_id: channel_id.clone(),
            source_uri: "test://garbage".to_owned(),
            schema: Some(FrameSchema {
                version: 1,
                width: WIDTH as u32,
                height: HEIGHT as u32,
                channels: 3,
                pixel_format: PixelFormat::Rgb24.into(),
                encoding: FrameEncoding::Jpeg.into(),
                fps: 10.0,
            }),
            ..RegisterChannelRequest::default()
        })
        .await
        .expect("register")
        .into_inner()
        .channel
        .expect("channel");
    fleet.spawn_worker("worker-dl", &[]).expect("worker");

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &fleet.infrastructure.kafka_brokers)
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    let good = jpeg(WIDTH, HEIGHT);
    let wrong_size = jpeg(WIDTH * 2, HEIGHT * 2);
    let corrupt = b"\xFF\xD8\xFF\xE0 this is not really a jpeg".to_vec();
    let empty: Vec<u8> = Vec::new();
    // (payload, headers, the reason the dead letter must give)
    let cases: Vec<(Vec<u8>, Option<OwnedHeaders>, &str)> = vec![
        (b"no headers at all".to_vec(), None, "missing"),
        (
            empty.clone(),
            Some(headers_for(&channel_id, 1, &empty)),
            "empty payload",
        ),
        (
            corrupt.clone(),
            Some(headers_for(&channel_id, 2, &corrupt)),
            "corrupt jpeg",
        ),
        (
            wrong_size.clone(),
            Some(headers_for(&channel_id, 3, &wrong_size)),
            "64×48",
        ),
        (
            good.clone(),
            Some(headers_for(&channel_id, 4, b"other bytes")),
            "checksum mismatch",
        ),
    ];
    let expected_dead_letters = cases.len();
    for (payload, headers, _) in &cases {
        let mut record = FutureRecord::to(&registered.topic)
            .key(channel_id.as_str())
            .payload(payload.as_slice());
        if let Some(headers) = headers {
            record = record.headers(headers.clone());
        }
        producer
            .send(record, Duration::from_secs(10))
            .await
            .expect("produce garbage");
    }
    let good_record = FutureRecord::to(&registered.topic)
        .key(channel_id.as_str())
        .payload(good.as_slice())
        .headers(headers_for(&channel_id, 5, &good));
    producer
        .send(good_record, Duration::from_secs(10))
        .await
        .expect("produce the good frame");

    let brokers = fleet.infrastructure.kafka_brokers.clone();
    let (dead_letter_topic, results_topic) = (fleet.names.dead_letter_topic.clone(), fleet.names.results_topic.clone());
    let (dead_letters, results) = tokio::task::spawn_blocking(move || {
        (
            framefleet_loadtest::read_topic(
                &brokers,
                &dead_letter_topic,
                expected_dead_letters,
                Duration::from_secs(60),
                Duration::ZERO,
            )
            .expect("read dead letters"),
            framefleet_loadtest::read_topic(&brokers, &results_topic, 1, Duration::from_secs(60), Duration::ZERO)
                .expect("read results"),
        )
    })
    .await
    .expect("read");

    assert_eq!(
        dead_letters.len(),
        expected_dead_letters,
        "one dead letter per bad record"
    );
    for (dead_letter, (payload, _, reason)) in dead_letters.iter().zip(&cases) {
        let stated = header(dead_letter, wire::HEADER_DEAD_LETTER_REASON);
        assert!(
            stated.contains(reason),
            "expected a reason containing {reason:?}, got {stated:?}"
        );
        assert!(
            header(dead_letter, "ff-source").starts_with(&registered.topic),
            "dead letter names its source"
        );
        assert_eq!(
            dead_letter.payload().unwrap_or_default(),
            payload.as_slice(),
            "the original payload is kept"
        );
    }
    assert_eq!(results.len(), 1, "the good frame after the garbage is processed");
    let result: FrameResult = serde_json::from_slice(results[0].payload().expect("payload")).expect("result JSON");
    assert_eq!(result.sequence, 5);

    // The worker stayed up, reports both counts, and committed past every record.
    let topic = registered.topic.clone();
    fleet
        .wait_for_status(Duration::from_secs(30), |status| {
            let worker_ok = status
                .workers
                .iter()
                .filter_map(|worker| worker.report.as_ref())
                .any(|report| {
                    report.frames_processed == 1 && report.frames_dead_lettered == expected_dead_letters as u64
                });
            let committed = status
                .topics
                .iter()
                .any(|metrics| metrics.topic == topic && metrics.lag == 0 && metrics.consume == 6);
            worker_ok && committed
        })
        .await
        .expect("worker reports and commits past the garbage");
    let summaries = fleet.stop().await.expect("stop");
    assert_eq!(summaries[0].frames_dead_lettered, expected_dead_letters as u64);
}
