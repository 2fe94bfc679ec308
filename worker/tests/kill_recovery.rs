//! At-least-once under a crash: two worker processes share the frames of two channels, one
//! is killed with SIGKILL mid-stream, and every frame still gets a result. Duplicates (work
//! the killed worker did but had not committed) are counted and must stay bounded.

use framefleet_proto::v1::channel_service_client::ChannelServiceClient;
use framefleet_proto::v1::fleet_service_client::FleetServiceClient;
use framefleet_proto::v1::{FrameEncoding, FrameSchema, GetFleetStatusRequest, PixelFormat, RegisterChannelRequest};
use framefleet_proto::wire::{self, FrameHeaders, FrameResult};
use framefleet_test_support::{FleetNames, Infrastructure, TestCoordinator};
use opencv::core::{Mat, Vector};
use opencv::prelude::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SAMPLE_VIDEO: &str = "/usr/share/doc/opencv-doc/examples/data/vtest.avi";
const FRAMES_PER_CHANNEL: usize = 300;
/// Time between a channel's frames as they are written: 300 frames take 6 s.
const FRAME_INTERVAL: Duration = Duration::from_millis(20);

fn jpeg_frames(count: usize) -> (Vec<Vec<u8>>, u32, u32) {
    let mut capture = opencv::videoio::VideoCapture::from_file(SAMPLE_VIDEO, opencv::videoio::CAP_ANY).expect("video");
    let mut frame = Mat::default();
    let mut frames = Vec::new();
    while frames.len() < count && capture.read(&mut frame).expect("read") {
        let mut encoded = Vector::<u8>::new();
        opencv::imgcodecs::imencode(".jpg", &frame, &mut encoded, &Vector::new()).expect("encode");
        frames.push(encoded.to_vec());
    }
    assert_eq!(frames.len(), count);
    (frames, frame.cols() as u32, frame.rows() as u32)
}

fn headers(channel_id: &str, sequence: u64, payload: &[u8]) -> OwnedHeaders {
    let headers = FrameHeaders {
        channel_id: channel_id.to_owned(),
        schema_version: 1,
        sequence,
        ingestor_epoch: 1,
        capture_time_us: framefleet_common::startup::unix_time_us(),
        checksum: wire::payload_checksum(payload),
        traceparent: None,
    };
    framefleet_common::kafka::frame_record_headers(&headers)
}

/// Reads the results topic from the start (partition 0, no consumer group) until `enough`
/// says the results so far suffice; with `settle`, keeps reading until 2 s pass without a
/// new record, so duplicates that arrive late are counted too.
fn read_results(
    brokers: &str,
    topic: &str,
    enough: impl Fn(&[FrameResult]) -> bool,
    settle: bool,
    timeout: Duration,
) -> Vec<FrameResult> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("reader-{topic}"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("reader");
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, 0, Offset::Beginning)
        .expect("assign");
    consumer.assign(&assignment).expect("assign");
    let deadline = Instant::now() + timeout;
    let mut results: Vec<FrameResult> = Vec::new();
    let mut last_record = Instant::now();
    while Instant::now() < deadline {
        if enough(&results) && (!settle || last_record.elapsed() > Duration::from_secs(2)) {
            break;
        }
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message.expect("consume");
            results.push(serde_json::from_slice(message.payload().expect("payload")).expect("result JSON"));
            last_record = Instant::now();
        }
    }
    results
}

fn spawn_worker(worker_id: &str, coordinator: &str, brokers: &str, names: &FleetNames) -> Child {
    Command::new(env!("CARGO_BIN_EXE_framefleet-worker"))
        .args([
            "--worker-id",
            worker_id,
            "--coordinator",
            coordinator,
            "--kafka-brokers",
            brokers,
        ])
        .args([
            "--worker-group",
            &names.worker_group,
            "--results-topic",
            &names.results_topic,
            "--dead-letter-topic",
            &names.dead_letter_topic,
        ])
        .args([
            "--channel-prefix",
            &names.suffix,
            "--channel-refresh-ms",
            "300",
            "--batch-size",
            "4",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start a worker process")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_stream_loses_no_frame() {
    let infrastructure = Infrastructure::required();
    let (etcd, brokers) = (
        infrastructure.etcd_endpoints.clone(),
        infrastructure.kafka_brokers.clone(),
    );
    let names = FleetNames::unique("kill");
    let coordinator = TestCoordinator::start(&infrastructure, &names.coordinator_args())
        .await
        .expect("coordinator");
    let coordinator_address = coordinator.address.clone();
    let channel = framefleet_proto::client::connect_coordinator(
        &coordinator_address,
        Duration::from_secs(10),
        &Default::default(),
    )
    .await
    .expect("connect");

    let (frames, width, height) = tokio::task::spawn_blocking(|| jpeg_frames(FRAMES_PER_CHANNEL))
        .await
        .expect("frames");
    let channel_ids = [format!("{}-north", names.suffix), format!("{}-south", names.suffix)];
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("enable.idempotence", "true")
        .set("message.max.bytes", "4194304")
        .create()
        .expect("producer");
    let mut topics = Vec::new();
    for channel_id in &channel_ids {
        let registered = ChannelServiceClient::new(channel.clone())
            .register_channel(RegisterChannelRequest {
                channel_id: channel_id.clone(),
                source_uri: SAMPLE_VIDEO.to_owned(),
                schema: Some(FrameSchema {
                    version: 1,
                    width,
                    height,
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
        topics.push(registered.topic);
    }

    let mut doomed = spawn_worker("worker-doomed", &coordinator_address, &brokers, &names);
    let mut survivor = spawn_worker("worker-survivor", &coordinator_address, &brokers, &names);
    // The frames arrive as a camera's would, over several seconds: a backlog written up front
    // could be drained by whichever worker joined the group first before the other had any
    // partition, and the kill would then land on a worker with nothing to lose.
    let streams: Vec<(String, String)> = channel_ids.iter().cloned().zip(topics.iter().cloned()).collect();
    let producing = tokio::spawn(async move {
        for (sequence, payload) in frames.iter().enumerate() {
            for (channel_id, topic) in &streams {
                let record = FutureRecord::to(topic)
                    .key(channel_id.as_str())
                    .payload(payload.as_slice())
                    .headers(headers(channel_id, sequence as u64, payload));
                producer
                    .send(record, Duration::from_secs(30))
                    .await
                    .expect("produce a frame");
            }
            tokio::time::sleep(FRAME_INTERVAL).await;
        }
    });

    // Kill one worker as soon as it is well into its share of the stream.
    let written_by_doomed = |results: &[FrameResult]| {
        results
            .iter()
            .filter(|result| result.worker_id == "worker-doomed")
            .count()
    };
    let (reader_brokers, results_topic) = (brokers.clone(), names.results_topic.clone());
    let results_before_kill = tokio::task::spawn_blocking(move || {
        let enough = |results: &[FrameResult]| written_by_doomed(results) >= 20;
        read_results(&reader_brokers, &results_topic, enough, false, Duration::from_secs(120))
    })
    .await
    .expect("read");
    // Both workers hold a registration in etcd, under a lease the coordinator keeps alive.
    let mut etcd_client = etcd_client::Client::connect([etcd.as_str()], None).await.expect("etcd");
    let member_key = |worker_id: &str| format!("{}members/workers/{worker_id}", names.etcd_prefix);
    for worker_id in ["worker-doomed", "worker-survivor"] {
        let stored = etcd_client.get(member_key(worker_id), None).await.expect("etcd get");
        let lease = stored.kvs().first().map(|kv| kv.lease());
        assert!(
            lease.is_some_and(|lease| lease != 0),
            "{worker_id} is registered under a lease: {lease:?}"
        );
    }

    doomed.kill().expect("SIGKILL the worker");
    doomed.wait().expect("reap");
    let killed_at = Instant::now();
    let killed_after = written_by_doomed(&results_before_kill);
    assert!(
        (20..FRAMES_PER_CHANNEL).contains(&killed_after),
        "the kill must land mid-stream: the doomed worker had written {killed_after} of its {FRAMES_PER_CHANNEL} results"
    );

    // The dead worker's registration goes within the lease TTL (5 s) + 1 s: its broken
    // stream, or at worst the lease running out, removes it.
    loop {
        let stored = etcd_client
            .get(member_key("worker-doomed"), None)
            .await
            .expect("etcd get");
        if stored.kvs().is_empty() {
            break;
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(6),
            "the killed worker is still registered {:?} after the kill",
            killed_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "the killed worker was deregistered {:?} after SIGKILL",
        killed_at.elapsed()
    );
    let survivor_registration = etcd_client
        .get(member_key("worker-survivor"), None)
        .await
        .expect("etcd get");
    assert_eq!(survivor_registration.kvs().len(), 1, "the survivor stays registered");

    producing.await.expect("every frame written");
    // The survivor takes over the killed worker's partitions and the group commits everything.
    let mut fleet = FleetServiceClient::new(channel.clone());
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let status = fleet
            .get_fleet_status(GetFleetStatusRequest {})
            .await
            .expect("status")
            .into_inner();
        let done = topics.iter().all(|topic| {
            status.topics.iter().any(|metrics| {
                &metrics.topic == topic && metrics.consume == FRAMES_PER_CHANNEL as u64 && metrics.lag == 0
            })
        });
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the survivor did not finish the stream; last status {:?}",
            status.topics
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    let total = channel_ids.len() * FRAMES_PER_CHANNEL;
    let (reader_brokers, results_topic) = (brokers.clone(), names.results_topic.clone());
    let results = tokio::task::spawn_blocking(move || {
        read_results(
            &reader_brokers,
            &results_topic,
            |results| results.len() >= total,
            true,
            Duration::from_secs(60),
        )
    })
    .await
    .expect("read");
    let mut per_frame: HashMap<(String, u64), usize> = HashMap::new();
    for result in &results {
        *per_frame
            .entry((result.channel_id.clone(), result.sequence))
            .or_default() += 1;
    }
    let expected: HashSet<(String, u64)> = channel_ids
        .iter()
        .flat_map(|id| (0..FRAMES_PER_CHANNEL as u64).map(move |sequence| (id.clone(), sequence)))
        .collect();
    let seen: HashSet<(String, u64)> = per_frame.keys().cloned().collect();
    let missing: Vec<_> = expected.difference(&seen).take(5).collect();
    assert!(
        missing.is_empty(),
        "frames without a result after the crash, e.g. {missing:?}"
    );
    let duplicates = results.len() - expected.len();
    println!(
        "{} results for {} frames: {duplicates} duplicates; the killed worker had written {killed_after} results when it was killed",
        results.len(),
        expected.len()
    );
    // Only uncommitted work is redone: what the killed worker had processed since its last
    // commit, and what a worker handing a partition over in a rebalance had in flight. The
    // frames arrive at 50 a second per channel, so that is bounded by the stream's pace (about
    // one auto-commit interval of it), not by how fast the workers are, and far below a
    // channel's frames.
    assert!(
        duplicates <= FRAMES_PER_CHANNEL / 2,
        "{duplicates} duplicates is more than the crash explains"
    );

    Command::new("kill")
        .arg("-TERM")
        .arg(survivor.id().to_string())
        .status()
        .expect("SIGTERM the survivor");
    let status = survivor.wait().expect("the survivor exits");
    assert!(
        status.success(),
        "the survivor drains and exits cleanly on SIGTERM: {status}"
    );
    coordinator.stop().await.expect("coordinator stops");
}
