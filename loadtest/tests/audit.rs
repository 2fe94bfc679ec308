//! `framefleet audit` on a real fleet: it reads the result and dead-letter topics back from
//! Kafka and sets each channel run's acknowledged frames against them, each frame once. It
//! fails (exit 10) while acknowledged frames have no outcome — the negative control — and
//! splits outcomes into processed, dead-lettered and duplicates once the worker is done.

use framefleet_loadtest::{Fleet, frame_headers, read_topic};
use rdkafka::ClientConfig;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const FRAMES: u64 = 30;

/// Runs `framefleet --json audit` for this fleet's channels: (exit code, report).
async fn audit(fleet: &Fleet) -> (i32, Value) {
    let cli = framefleet_common::startup::sibling_binary("framefleet").expect("the framefleet CLI of this build");
    let output = tokio::process::Command::new(cli)
        .args([
            "--coordinator",
            &fleet.coordinator_address,
            "--json",
            "audit",
            "--channel-prefix",
            &fleet.names.channel_id(""),
            "--read-timeout-secs",
            "30",
            "--frame-topics",
        ])
        .output()
        .await
        .expect("run the CLI");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report = serde_json::from_str(&stdout).unwrap_or_else(|error| {
        panic!(
            "audit printed no JSON ({error}): {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code().unwrap_or(-1), report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_accounts_for_every_acknowledged_frame() {
    let mut fleet = Fleet::start("audit").await.expect("start the coordinator");
    let channel = fleet.names.channel_id("cam");
    let config = fleet
        .ingestor_config(
            "ingestor-audit",
            &[(&channel, "synthetic://64x48@30")],
            &["--max-frames", &FRAMES.to_string()],
        )
        .expect("config");
    framefleet_ingestor::run(config, CancellationToken::new())
        .await
        .expect("the run");
    fleet
        .wait_for_status(Duration::from_secs(30), |status| {
            status
                .ledgers
                .iter()
                .any(|ledger| ledger.channel_id == channel && ledger.frames_acknowledged == FRAMES)
        })
        .await
        .expect("the run's ledger is kept");

    // No worker yet: every acknowledged frame lacks an outcome, and the audit says so.
    let (code, report) = audit(&fleet).await;
    assert_eq!(code, 10, "{report}");
    assert_eq!(report["frames_missing"], FRAMES, "{report}");
    assert_eq!(report["runs"][0]["frames_in_kafka"], FRAMES, "{report}");
    assert_eq!(report["runs"][0]["frames_without_outcome"], FRAMES, "{report}");

    // A frame copied back into the topic by another producer (processed twice), and a copy
    // whose payload was damaged under a sequence number of its own (dead-lettered).
    let topic = format!("framefleet.frames.{channel}");
    let brokers = fleet.infrastructure.kafka_brokers.clone();
    let records =
        tokio::task::spawn_blocking(move || read_topic(&brokers, &topic, 1, Duration::from_secs(20), Duration::ZERO))
            .await
            .expect("reader")
            .expect("read the channel topic");
    let original = &records[0];
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &fleet.infrastructure.kafka_brokers)
        .create()
        .expect("producer");
    let payload = original.payload().expect("payload").to_vec();
    let headers = frame_headers(original).expect("frame headers");
    let topic = original.topic().to_owned();
    let copy_headers = framefleet_common::kafka::frame_record_headers(&headers);
    producer
        .send(
            FutureRecord::to(&topic)
                .key(channel.as_str())
                .payload(&payload)
                .headers(copy_headers),
            Duration::from_secs(10),
        )
        .await
        .expect("a duplicate written");
    let damaged_headers = framefleet_common::kafka::frame_record_headers(&framefleet_proto::wire::FrameHeaders {
        sequence: 1_000,
        ..headers.clone()
    });
    let damaged: Vec<u8> = payload.iter().map(|byte| byte ^ 0x5a).collect();
    producer
        .send(
            FutureRecord::to(&topic)
                .key(channel.as_str())
                .payload(&damaged)
                .headers(damaged_headers),
            Duration::from_secs(10),
        )
        .await
        .expect("a damaged frame written");

    fleet.spawn_worker("worker-audit", &[]).expect("worker");
    fleet
        .wait_for_status(Duration::from_secs(60), |status| {
            status.topics.iter().any(|metrics| {
                metrics.topic.ends_with(&channel) && metrics.accumulate == FRAMES + 2 && metrics.lag == 0
            })
        })
        .await
        .expect("the worker drains the topic");

    let (code, report) = audit(&fleet).await;
    assert_eq!(code, 0, "{report}");
    let runs = report["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 1, "{report}");
    let run = &runs[0];
    assert_eq!(run["channel_id"], channel.as_str());
    assert_eq!(run["ingestor_epoch"], headers.ingestor_epoch);
    assert_eq!(run["frames_acknowledged"], FRAMES);
    assert_eq!(run["frames_processed"], FRAMES, "{report}");
    assert_eq!(run["frames_dead_lettered"], 1, "the damaged copy: {report}");
    assert_eq!(run["duplicates"], 1, "the copied frame: {report}");
    assert_eq!(run["frames_missing"], 0, "{report}");
    assert_eq!(
        run["frames_in_kafka"],
        FRAMES + 1,
        "the copy is the same frame: {report}"
    );
    assert_eq!(run["frames_without_outcome"], 0, "{report}");
    fleet.stop().await.expect("stop");
}
