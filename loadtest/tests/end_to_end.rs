//! One real video, camera → Kafka → workers → results, against the real etcd and broker
//! started by `deploy/local/infra.sh`. Every claim is checked from outside framefleet: the
//! frame count with OpenCV, the channel record with etcd-client, the records with a plain
//! Kafka consumer.

use framefleet_loadtest::Fleet;
use framefleet_proto::wire;
use rdkafka::message::Message;
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

const SAMPLE_VIDEO: &str = "/usr/share/doc/opencv-doc/examples/data/tree.avi";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_real_video_travels_camera_to_result_exactly_once() {
    let expected_frames =
        framefleet_loadtest::count_frames_with_opencv(SAMPLE_VIDEO).expect("count the sample's frames");
    assert!(
        expected_frames > 10,
        "the sample video should have frames, found {expected_frames}"
    );

    let mut fleet = Fleet::start("e2e").await.expect("start the coordinator");
    let channel_id = fleet.names.channel_id("tree");
    // One static member (Kafka `group.instance.id`) beside one dynamic member.
    fleet
        .spawn_worker("worker-a", &["--group-instance-id", "e2e-worker-a"])
        .expect("worker a");
    fleet.spawn_worker("worker-b", &[]).expect("worker b");

    let ingestor_config = fleet
        .ingestor_config("ingestor-e2e", &[(&channel_id, SAMPLE_VIDEO)], &[])
        .expect("ingestor config");
    let summary = framefleet_ingestor::run(ingestor_config, tokio_util::sync::CancellationToken::new())
        .await
        .expect("ingest the video");
    let ledger = &summary.channels[0];
    assert_eq!(ledger.frames_captured, expected_frames, "ingestor captured every frame");
    assert_eq!(
        ledger.frames_acknowledged, expected_frames,
        "Kafka acknowledged every frame"
    );
    assert_eq!(ledger.frames_failed, 0, "no frame failed: {}", ledger.last_error);

    // Drained: the worker group has committed every frame (read from Kafka, not reports).
    let topic = format!("framefleet.frames.{channel_id}");
    let status = fleet
        .wait_for_status(Duration::from_secs(180), |status| {
            status
                .topics
                .iter()
                .any(|metrics| metrics.topic == topic && metrics.consume == expected_frames && metrics.lag == 0)
                && status.frames_processed >= expected_frames
        })
        .await
        .expect("the fleet processes every frame");
    let metrics = status
        .topics
        .iter()
        .find(|metrics| metrics.topic == topic)
        .expect("topic metrics");
    assert_eq!(metrics.accumulate, expected_frames);

    // Every frame has exactly one result.
    let brokers = fleet.infrastructure.kafka_brokers.clone();
    let expected = expected_frames as usize;
    let results = fleet.read_results(expected).await.expect("read the results topic");
    let sequences: Vec<u64> = results.iter().map(|result| result.sequence).collect();
    let unique: HashSet<u64> = sequences.iter().copied().collect();
    assert_eq!(
        results.len(),
        expected,
        "one result record per frame (no loss, no duplicate)"
    );
    assert_eq!(
        unique,
        (0..expected_frames).collect::<HashSet<u64>>(),
        "results cover sequences 0..N"
    );
    assert!(results.iter().all(|result| result.channel_id == channel_id));
    let workers_used: HashSet<&str> = results.iter().map(|result| result.worker_id.as_str()).collect();
    assert!(!workers_used.is_empty() && workers_used.iter().all(|id| ["worker-a", "worker-b"].contains(id)));
    assert!(results.iter().all(|result| {
        result
            .scores
            .is_some_and(|scores| scores.mean_luma > 0.0 && scores.mean_luma < 255.0)
    }));
    assert!(
        results
            .iter()
            .all(|result| result.processed_time_us >= result.capture_time_us)
    );
    // Each result breaks its latency down by stage, in order: capture → produced (the
    // record's timestamp, ms resolution) → consumed → processed.
    for result in &results {
        let produced = result.produced_time_us.expect("the record's Kafka timestamp");
        assert!(produced + 1000 >= result.capture_time_us, "{result:?}");
        assert!(result.consumed_time_us + 1000 >= produced, "{result:?}");
        assert!(result.processed_time_us >= result.consumed_time_us, "{result:?}");
        assert!(
            result.decode_us > 0 && result.decode_us <= result.batch_compute_us,
            "{result:?}"
        );
    }

    // The fleet status agrees with what is in the results topic.
    assert_eq!(
        status.frames_processed, expected_frames,
        "fleet status processed count equals result records"
    );

    // Frame records carry correct headers, readable by any Kafka client.
    let frame_records = tokio::task::spawn_blocking({
        let topic = topic.clone();
        move || {
            framefleet_loadtest::read_topic(
                &brokers,
                &topic,
                expected,
                Duration::from_secs(60),
                Duration::from_secs(2),
            )
            .expect("read the frame topic")
        }
    })
    .await
    .expect("read frames");
    assert_eq!(
        frame_records.len(),
        expected,
        "the topic holds exactly the frames the ingestor acknowledged"
    );
    let mut epochs = HashSet::new();
    let mut by_sequence = BTreeMap::new();
    for record in &frame_records {
        let headers = framefleet_loadtest::frame_headers(record).expect("valid frame headers");
        let payload = record.payload().expect("frame payload");
        assert_eq!(record.key(), Some(channel_id.as_bytes()), "key is the channel id");
        assert_eq!(headers.channel_id, channel_id);
        assert_eq!(headers.schema_version, 1);
        assert_eq!(
            headers.checksum,
            wire::payload_checksum(payload),
            "checksum header matches the payload"
        );
        assert!(payload.starts_with(&[0xFF, 0xD8]), "payload is a JPEG");
        let traceparent = headers.traceparent.as_deref().expect("traceparent header");
        assert_eq!(traceparent.len(), 55, "W3C traceparent: {traceparent}");
        assert!(
            headers.capture_time_us > 1_600_000_000_000_000,
            "capture time is unix µs"
        );
        epochs.insert(headers.ingestor_epoch);
        by_sequence.insert(headers.sequence, record.offset());
    }
    assert_eq!(epochs.len(), 1, "one ingestor run, one epoch");
    assert_eq!(
        by_sequence.keys().copied().collect::<Vec<_>>(),
        (0..expected_frames).collect::<Vec<_>>()
    );
    assert!(
        by_sequence
            .values()
            .zip(by_sequence.values().skip(1))
            .all(|(a, b)| a < b),
        "frames are in capture order within the partition"
    );

    // The channel record is in etcd, read directly rather than through the coordinator.
    let mut etcd = etcd_client::Client::connect([fleet.infrastructure.etcd_endpoints.as_str()], None)
        .await
        .expect("etcd");
    let key = format!("{}channels/{channel_id}", fleet.names.etcd_prefix);
    let response = etcd.get(key.as_str(), None).await.expect("etcd get");
    let stored: serde_json::Value =
        serde_json::from_slice(response.kvs().first().expect("channel key in etcd").value()).expect("channel JSON");
    assert_eq!(stored["channel_id"], channel_id.as_str());
    assert_eq!(stored["topic"], topic.as_str());
    assert_eq!(stored["schema"]["encoding"], "FRAME_ENCODING_JPEG");
    assert!(stored["schema"]["width"].as_u64().is_some_and(|width| width > 0));

    let worker_summaries = fleet.stop().await.expect("stop the fleet");
    let processed_by_workers: u64 = worker_summaries.iter().map(|summary| summary.frames_processed).sum();
    assert_eq!(processed_by_workers, expected_frames);
    assert!(worker_summaries.iter().all(|summary| summary.frames_dead_lettered == 0));
}
