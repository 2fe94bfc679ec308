//! The detect stage through a real fleet: frames of `vtest.avi` (the detector's reference
//! fixtures) written into channel topics with a plain Kafka producer, a worker with the
//! converted person detector, and every result read back from Kafka. Checked: persons found
//! where TensorFlow finds them, the motion gate marking frames without motion, a channel
//! without a detect stage left alone, a detect-only channel (no analysis: detections, no
//! scores), the events topic holding exactly the results with detections, every result naming
//! the model by sha256.

use framefleet_loadtest::Fleet;
use framefleet_proto::v1::FrameEncoding;
use framefleet_proto::wire::{self, FrameHeaders, FrameResult};
use rdkafka::ClientConfig;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::path::Path;
use std::time::Duration;

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../worker/tests/fixtures/detection")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

async fn register(fleet: &Fleet, name: &str) -> (String, String) {
    let channel = fleet
        .register_written_channel(name, "test://detection", (640, 480), FrameEncoding::Jpeg)
        .await
        .expect("register");
    (channel.channel_id, channel.topic)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detections_gating_and_events_through_a_fleet() {
    let mut fleet = Fleet::start("detection").await.expect("start the coordinator");
    let (walking, walking_topic) = register(&fleet, "walking").await;
    let (still, still_topic) = register(&fleet, "still").await;
    let (plain, plain_topic) = register(&fleet, "plain").await;
    let (door, door_topic) = register(&fleet, "door").await;
    let model = framefleet_test_support::detector_model_dir();
    let model = model.to_string_lossy().into_owned();
    let events_topic = format!("events-{}", fleet.names.suffix);
    let processing = std::env::temp_dir().join(format!("processing-{}.toml", fleet.names.suffix));
    std::fs::write(
        &processing,
        format!("[channels.{plain}]\n[channels.{door}]\nanalysis = false\ndetect = {{ motion_gate = false }}\n"),
    )
    .expect("processing file");
    let processing_arg = processing.to_string_lossy().into_owned();
    fleet
        .spawn_worker(
            "worker-detect",
            &[
                "--detect",
                "--model",
                &model,
                "--events-topic",
                &events_topic,
                "--processing",
                &processing_arg,
            ],
        )
        .expect("worker");

    // (topic, channel, fixture frames in stream order)
    let walking_frames = ["vtest-0000.jpg", "vtest-0025.jpg", "vtest-0050.jpg", "vtest-0075.jpg"];
    let still_frames = ["vtest-0100.jpg"; 3];
    let plain_frames = ["vtest-0125.jpg", "vtest-0150.jpg"];
    let door_frames = ["vtest-0175.jpg", "vtest-0175.jpg"];
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &fleet.infrastructure.kafka_brokers)
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    let mut total = 0;
    for (topic, channel_id, files) in [
        (&walking_topic, &walking, &walking_frames[..]),
        (&still_topic, &still, &still_frames[..]),
        (&plain_topic, &plain, &plain_frames[..]),
        (&door_topic, &door, &door_frames[..]),
    ] {
        for (sequence, file) in files.iter().enumerate() {
            let payload = fixture(file);
            let headers = FrameHeaders {
                channel_id: channel_id.clone(),
                schema_version: 1,
                sequence: sequence as u64,
                ingestor_epoch: 1,
                capture_time_us: 1_700_000_000_000_000,
                checksum: wire::payload_checksum(&payload),
                traceparent: None,
            };
            let record = FutureRecord::to(topic)
                .key(channel_id.as_str())
                .payload(payload.as_slice())
                .headers(framefleet_common::kafka::frame_record_headers(&headers));
            producer
                .send(record, Duration::from_secs(10))
                .await
                .expect("produce a frame");
            total += 1;
        }
    }

    let brokers = fleet.infrastructure.kafka_brokers.clone();
    let results_topic = fleet.names.results_topic.clone();
    let events = events_topic.clone();
    let (results, events) = tokio::task::spawn_blocking(move || {
        let results = framefleet_loadtest::read_topic(
            &brokers,
            &results_topic,
            total,
            Duration::from_secs(120),
            Duration::ZERO,
        )
        .expect("read results");
        // Read past the expected count for a moment: an extra event would be a bug too.
        let events = framefleet_loadtest::read_topic(
            &brokers,
            &events,
            usize::MAX,
            Duration::from_secs(5),
            Duration::from_secs(5),
        )
        .expect("read events");
        (results, events)
    })
    .await
    .expect("read");
    let results: Vec<FrameResult> = results
        .iter()
        .map(|record| serde_json::from_slice(record.payload().expect("payload")).expect("result JSON"))
        .collect();
    assert_eq!(results.len(), total, "one result per frame");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(Path::new(&model).join("manifest.json")).expect("manifest"))
            .expect("json");
    let of = |channel: &str| -> Vec<&FrameResult> {
        let mut mine: Vec<&FrameResult> = results.iter().filter(|result| result.channel_id == channel).collect();
        mine.sort_by_key(|result| result.sequence);
        mine
    };

    let walking_results = of(&walking);
    assert_eq!(walking_results.len(), walking_frames.len());
    // A channel's first frame starts its background: no motion, so the gate closes.
    assert!(
        walking_results[0].gated && !walking_results[0].detector_ran,
        "{:?}",
        walking_results[0]
    );
    for result in &walking_results[1..] {
        assert!(
            result.detector_ran && !result.gated,
            "people walk between these frames: {result:?}"
        );
        let model = result.model.as_ref().expect("the model is named");
        assert_eq!(model.sha256, manifest["sha256"].as_str().expect("sha256"));
        assert!(
            !result.detections.is_empty(),
            "TensorFlow finds persons above 0.5 in every one of these frames: {result:?}"
        );
        for object in &result.detections {
            assert_eq!(object.label, "person");
            assert!(object.score >= 0.5);
            assert!(
                object.box_pixels[2] <= 640.0 && object.box_pixels[3] <= 480.0,
                "{object:?}"
            );
            assert!((object.box_pixels[0] - object.box_norm[0] * 640.0).abs() < 1e-3);
        }
    }
    for result in of(&still) {
        assert!(
            result.gated && !result.detector_ran && result.detections.is_empty(),
            "the same frame thrice never moves: {result:?}"
        );
        assert!(result.model.is_some());
    }
    for result in of(&plain) {
        assert!(
            result.model.is_none() && !result.gated && !result.detector_ran,
            "no detect stage: {result:?}"
        );
        assert!(result.scores.is_some(), "the analysis ran: {result:?}");
    }
    let door_results = of(&door);
    assert_eq!(door_results.len(), door_frames.len());
    for result in door_results {
        assert!(
            result.detector_ran && !result.gated && !result.detections.is_empty(),
            "detect-only: the detector runs on every frame, even one that never moves: {result:?}"
        );
        assert!(
            result.scores.is_none() && result.motion_box.is_none(),
            "no analysis: {result:?}"
        );
    }
    let with_detections = results.iter().filter(|result| !result.detections.is_empty()).count();
    assert_eq!(
        events.len(),
        with_detections,
        "the events topic holds exactly the results with detections"
    );

    let summaries = fleet.stop().await.expect("stop");
    assert_eq!(summaries[0].frames_processed, total as u64);
    let _ = std::fs::remove_file(&processing);
}

/// A missing, truncated or mismatched model stops the worker at start, with a message that
/// says what is wrong, before it connects to anything (the broker address here is unused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_model_file_stops_the_worker_before_it_consumes() {
    let good = framefleet_test_support::detector_model_dir();
    let scratch = std::env::temp_dir().join(format!("bad-models-{}", uuid::Uuid::new_v4().simple()));
    let copy = |name: &str| {
        let dir = scratch.join(name);
        std::fs::create_dir_all(&dir).expect("dir");
        for file in ["manifest.json", "model.safetensors"] {
            std::fs::copy(good.join(file), dir.join(file)).expect("copy");
        }
        dir
    };
    let truncated = copy("truncated");
    let weights = std::fs::read(truncated.join("model.safetensors")).expect("weights");
    std::fs::write(truncated.join("model.safetensors"), &weights[..weights.len() / 2]).expect("truncate");
    let wrong_architecture = copy("wrong-architecture");
    let manifest_path = wrong_architecture.join("manifest.json");
    let manifest = std::fs::read_to_string(&manifest_path).expect("manifest");
    std::fs::write(&manifest_path, manifest.replace("ssdlite_mobilenet_v2", "yolov8n")).expect("edit");

    let cases = [
        (scratch.join("absent"), "cannot read"),
        (truncated, "sha256"),
        (wrong_architecture, "yolov8n"),
    ];
    for (path, expected) in &cases {
        let config = <framefleet_worker::config::WorkerConfig as clap::Parser>::try_parse_from([
            "framefleet-worker",
            "--detect",
            "--model",
            &path.to_string_lossy(),
            "--coordinator",
            "http://127.0.0.1:9",
            "--kafka-brokers",
            "127.0.0.1:9",
        ])
        .expect("flags parse");
        let outcome = tokio::time::timeout(
            Duration::from_secs(30),
            framefleet_worker::run(config, tokio_util::sync::CancellationToken::new()),
        )
        .await
        .expect("the worker stops at once");
        let error = format!("{:#}", outcome.expect_err("a bad model is refused"));
        assert!(
            error.contains(expected),
            "{}: expected {expected:?} in {error}",
            path.display()
        );
        assert!(error.contains("model"), "{error}");
    }
    let _ = std::fs::remove_dir_all(&scratch);
}
