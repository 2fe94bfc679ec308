//! Garbage written straight into a channel topic by a plain Kafka producer: every bad
//! record becomes a dead letter that says why, the worker stays up, and the good frame
//! behind them still gets its result.

use framefleet_loadtest::{Fleet, written};
use framefleet_proto::v1::FrameEncoding;
use framefleet_proto::wire::{self, FrameResult};
use rdkafka::ClientConfig;
use rdkafka::message::{Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::time::Duration;

const WIDTH: i32 = 64;
const HEIGHT: i32 = 48;

fn jpeg(width: i32, height: i32) -> Vec<u8> {
    written::solid_jpeg(width, height).expect("encode")
}

fn noise_jpeg(width: i32, height: i32) -> Vec<u8> {
    written::noise_jpeg(width, height).expect("encode")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_in_a_topic_is_dead_lettered_and_the_next_good_frame_processed() {
    let mut fleet = Fleet::start("dead-letters").await.expect("start the coordinator");
    let channel_id = fleet.names.channel_id("cam");
    let registered = fleet
        .register_written_channel(
            "cam",
            "test://garbage",
            (WIDTH as u32, HEIGHT as u32),
            FrameEncoding::Jpeg,
        )
        .await
        .expect("register");
    fleet.spawn_worker("worker-dl", &[]).expect("worker");

    let producer = written::plain_producer(&fleet.infrastructure.kafka_brokers).expect("producer");
    let good = jpeg(WIDTH, HEIGHT);
    let wrong_size = jpeg(WIDTH * 2, HEIGHT * 2);
    let corrupt = b"\xFF\xD8\xFF\xE0 this is not really a jpeg".to_vec();
    let empty: Vec<u8> = Vec::new();
    // (payload, headers, the reason the dead letter must give)
    let cases: Vec<(Vec<u8>, Option<OwnedHeaders>, &str)> = vec![
        (b"no headers at all".to_vec(), None, "missing"),
        (
            empty.clone(),
            Some(written::frame_record_headers(&channel_id, 1, &empty)),
            "empty payload",
        ),
        (
            corrupt.clone(),
            Some(written::frame_record_headers(&channel_id, 2, &corrupt)),
            "corrupt jpeg",
        ),
        (
            wrong_size.clone(),
            Some(written::frame_record_headers(&channel_id, 3, &wrong_size)),
            "64×48",
        ),
        (
            good.clone(),
            Some(written::frame_record_headers(&channel_id, 4, b"other bytes")),
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
        .headers(written::frame_record_headers(&channel_id, 5, &good));
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
        let stated = written::header_text(dead_letter, wire::HEADER_DEAD_LETTER_REASON);
        assert!(
            stated.contains(reason),
            "expected a reason containing {reason:?}, got {stated:?}"
        );
        assert!(
            written::header_text(dead_letter, wire::HEADER_SOURCE).starts_with(&registered.topic),
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

async fn register_channel(
    fleet: &Fleet,
    name: &str,
    size: (u32, u32),
    encoding: FrameEncoding,
) -> framefleet_proto::v1::Channel {
    fleet
        .register_written_channel(name, "test://other-clients", size, encoding)
        .await
        .expect("register")
}

/// Removes the JPEG's Huffman tables (DHT segments), as Motion-JPEG cameras do.
fn without_huffman_tables(jpeg: &[u8]) -> Vec<u8> {
    let mut out = jpeg[..2].to_vec();
    let mut at = 2;
    while at + 4 <= jpeg.len() {
        let marker = jpeg[at + 1];
        if marker == 0xDA {
            out.extend_from_slice(&jpeg[at..]);
            return out;
        }
        let length = usize::from(u16::from_be_bytes([jpeg[at + 2], jpeg[at + 3]]));
        if marker != 0xC4 {
            out.extend_from_slice(&jpeg[at..at + 2 + length]);
        }
        at += 2 + length;
    }
    out
}

/// Records written by other Kafka clients, through the real broker: each kind of bad record
/// gets a dead letter with its code (and the record as it was, nulls kept null), each kind of
/// odd but valid frame gets a result, and none of them stops the partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_from_other_clients_get_a_coded_dead_letter_or_a_result() {
    let mut fleet = Fleet::start("other-clients").await.expect("start the coordinator");
    let cam = register_channel(&fleet, "cam", (WIDTH as u32, HEIGHT as u32), FrameEncoding::Jpeg).await;
    let line_scan = register_channel(&fleet, "linescan", (1920, 3), FrameEncoding::Jpeg).await;
    // Large frames (3 MiB raw), for a record bigger than the worker's own limit.
    let big = register_channel(&fleet, "big", (1024, 1024), FrameEncoding::Jpeg).await;
    let metrics_addr: std::net::SocketAddr = format!(
        "127.0.0.1:{}",
        framefleet_common::startup::free_loopback_port().expect("a free port")
    )
    .parse()
    .expect("address");
    let metrics_arg = metrics_addr.to_string();
    fleet
        .spawn_worker("worker-oc", &["--max-frame-mib", "1", "--metrics-addr", &metrics_arg])
        .expect("worker");

    let plain: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &fleet.infrastructure.kafka_brokers)
        .set("message.max.bytes", "4000000")
        .create()
        .expect("producer");
    // Another producer's choice of codec: every standard one must be readable.
    let zstd: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &fleet.infrastructure.kafka_brokers)
        .set("compression.codec", "zstd")
        .create()
        .expect("a zstd producer (librdkafka built with zstd)");

    let good = jpeg(WIDTH, HEIGHT);
    // A detailed picture, so that most of the file is scan data and a third ends inside it.
    let detailed = noise_jpeg(WIDTH, HEIGHT);
    let third = detailed[..detailed.len() / 3].to_vec();
    let mjpeg = without_huffman_tables(&good);
    assert!(mjpeg.len() < good.len());
    let line = jpeg(1920, 3);
    let huge: Vec<u8> = (0..2_400_000_u32).map(|index| (index % 251) as u8).collect();

    struct Case {
        topic: String,
        key: Option<Vec<u8>>,
        payload: Option<Vec<u8>>,
        headers: OwnedHeaders,
        zstd: bool,
        /// `None`: a result is expected.
        code: Option<&'static str>,
    }
    let id = |channel: &framefleet_proto::v1::Channel| channel.channel_id.clone();
    let frame =
        |channel: &framefleet_proto::v1::Channel, sequence: u64, payload: &[u8], code: Option<&'static str>| Case {
            topic: channel.topic.clone(),
            key: Some(channel.channel_id.clone().into_bytes()),
            payload: Some(payload.to_vec()),
            headers: written::frame_record_headers(&channel.channel_id, sequence, payload),
            zstd: false,
            code,
        };
    let mut cases = vec![
        // Two different sequence numbers: ambiguous, whichever comes first.
        Case {
            headers: written::frame_record_headers(&id(&cam), 1, &good).insert(rdkafka::message::Header {
                key: wire::HEADER_SEQUENCE,
                value: Some("2"),
            }),
            ..frame(&cam, 1, &good, Some("DEAD_LETTER_CODE_AMBIGUOUS_HEADER"))
        },
        // A tombstone.
        Case {
            payload: None,
            headers: written::frame_record_headers(&id(&cam), 3, b""),
            ..frame(&cam, 3, b"", Some("DEAD_LETTER_CODE_NULL_VALUE"))
        },
        // Keyed as another channel.
        Case {
            key: Some(b"some-other-camera".to_vec()),
            ..frame(&cam, 4, &good, Some("DEAD_LETTER_CODE_KEY_MISMATCH"))
        },
        // A third of a JPEG, its checksum recomputed to match.
        frame(&cam, 5, &third, Some("DEAD_LETTER_CODE_TRUNCATED_IMAGE")),
        // Larger than the worker's --max-frame-mib 1: the dead letter must still be written.
        frame(&big, 0, &huge, Some("DEAD_LETTER_CODE_PAYLOAD_TOO_LARGE")),
        // Valid frames in the liberties other clients and cameras take.
        Case {
            zstd: true,
            ..frame(&cam, 6, &good, None)
        },
        Case {
            key: None,
            ..frame(&cam, 7, &good, None)
        },
        frame(&cam, 8, &mjpeg, None),
        frame(&line_scan, 0, &line, None),
    ];
    // The last record of each partition is a good frame, so nothing is left behind a bad one.
    cases.push(frame(&big, 1, &jpeg(1024, 1024), None));
    cases.push(frame(&cam, 9, &good, None));
    for case in &cases {
        let mut record = FutureRecord::<[u8], [u8]>::to(&case.topic).headers(case.headers.clone());
        if let Some(key) = &case.key {
            record = record.key(key.as_slice());
        }
        if let Some(payload) = &case.payload {
            record = record.payload(payload.as_slice());
        }
        let producer = if case.zstd { &zstd } else { &plain };
        producer
            .send(record, Duration::from_secs(10))
            .await
            .expect("produce as another client");
    }

    let expected_dead: Vec<&Case> = cases.iter().filter(|case| case.code.is_some()).collect();
    let expected_results = cases.len() - expected_dead.len();
    let brokers = fleet.infrastructure.kafka_brokers.clone();
    let (dead_letter_topic, results_topic) = (fleet.names.dead_letter_topic.clone(), fleet.names.results_topic.clone());
    let dead_count = expected_dead.len();
    let (dead_letters, results) = tokio::task::spawn_blocking(move || {
        (
            framefleet_loadtest::read_topic(
                &brokers,
                &dead_letter_topic,
                dead_count,
                Duration::from_secs(90),
                Duration::ZERO,
            )
            .expect("read dead letters"),
            framefleet_loadtest::read_topic(
                &brokers,
                &results_topic,
                expected_results,
                Duration::from_secs(90),
                Duration::from_secs(2),
            )
            .expect("read results"),
        )
    })
    .await
    .expect("read");

    let mut codes: Vec<String> = dead_letters
        .iter()
        .map(|dead_letter| written::header_text(dead_letter, wire::HEADER_DEAD_LETTER_CODE))
        .collect();
    codes.sort();
    let mut expected_codes: Vec<String> = expected_dead
        .iter()
        .filter_map(|case| case.code)
        .map(str::to_owned)
        .collect();
    expected_codes.sort();
    let reasons: Vec<String> = dead_letters
        .iter()
        .map(|dead_letter| written::header_text(dead_letter, wire::HEADER_DEAD_LETTER_REASON))
        .collect();
    assert_eq!(
        codes, expected_codes,
        "one coded dead letter per bad record: {reasons:#?}"
    );
    for dead_letter in &dead_letters {
        assert!(!written::header_text(dead_letter, wire::HEADER_DEAD_LETTER_REASON).is_empty());
        match written::header_text(dead_letter, wire::HEADER_DEAD_LETTER_CODE).as_str() {
            "DEAD_LETTER_CODE_NULL_VALUE" => assert!(dead_letter.payload().is_none(), "a null value stays null"),
            "DEAD_LETTER_CODE_PAYLOAD_TOO_LARGE" => {
                assert!(dead_letter.payload().is_none(), "the oversized payload is not copied");
                assert_eq!(
                    written::header_text(dead_letter, wire::HEADER_PAYLOAD_DROPPED_BYTES),
                    huge.len().to_string()
                );
            }
            "DEAD_LETTER_CODE_KEY_MISMATCH" => assert_eq!(dead_letter.key(), Some(b"some-other-camera".as_slice())),
            _ => assert!(dead_letter.payload().is_some_and(|payload| !payload.is_empty())),
        }
    }
    let mut processed: Vec<(String, u64)> = results
        .iter()
        .map(|record| {
            let result: FrameResult = serde_json::from_slice(record.payload().expect("payload")).expect("result JSON");
            assert_eq!(
                record.key(),
                Some(result.channel_id.as_bytes()),
                "results are keyed by channel"
            );
            (result.channel_id, result.sequence)
        })
        .collect();
    processed.sort();
    let mut expected: Vec<(String, u64)> = vec![
        (id(&cam), 6),
        (id(&cam), 7),
        (id(&cam), 8),
        (id(&cam), 9),
        (id(&line_scan), 0),
        (id(&big), 1),
    ];
    expected.sort();
    assert_eq!(processed, expected, "every valid frame processed once");
    // Prometheus sees the same: every result and every dead letter, by code. Results are
    // counted once their batch settles, which may be a moment after they can be read.
    let mut metrics = String::new();
    let want_processed =
        format!("framefleet_worker_frames_processed_total{{worker_id=\"worker-oc\"}} {expected_results}");
    for _ in 0..50 {
        metrics = framefleet_common::metrics::scrape(metrics_addr)
            .await
            .expect("scrape the worker");
        if metrics.contains(&want_processed) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(metrics.contains(&want_processed), "{metrics}");
    for case in &expected_dead {
        let line = format!(
            "framefleet_worker_dead_letters_total{{worker_id=\"worker-oc\",code=\"{}\"}} 1",
            case.code.unwrap_or_default()
        );
        assert!(metrics.contains(&line), "missing `{line}` in\n{metrics}");
    }
    let summaries = fleet.stop().await.expect("stop");
    assert_eq!(summaries[0].frames_dead_lettered, dead_count as u64);
    let mut counted: Vec<String> = Vec::new();
    for (code, count) in &summaries[0].dead_letters_by_code {
        counted.extend(std::iter::repeat_n(code.clone(), *count as usize));
    }
    assert_eq!(counted, expected_codes, "the worker counts its dead letters by code");
}
