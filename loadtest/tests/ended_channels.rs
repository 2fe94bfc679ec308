//! A channel whose source ended and whose frames were all committed is drained: the
//! coordinator says so, and workers stop subscribing to its topic, so finished channels no
//! longer take partitions (and with them a worker's share of the group) from live ones.
//! Drained is a fact about offsets, not a promise: records written into a drained channel's
//! topic later (another client, a late retry) withdraw it, and each gets its outcome.

use framefleet_loadtest::{Fleet, written};
use framefleet_proto::v1::channel_service_client::ChannelServiceClient;
use framefleet_proto::v1::{Channel, FleetStatus, ListChannelsRequest, WorkerReport};
use framefleet_proto::wire::{self, FrameResult};
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The fleet's one worker's last report.
fn worker_report(status: &FleetStatus) -> Option<&WorkerReport> {
    status.workers.iter().find_map(|worker| worker.report.as_ref())
}

fn worker_partitions(status: &FleetStatus) -> Option<u32> {
    worker_report(status).map(|report| report.assigned_partitions)
}

/// A fleet with one worker, after a finished run: an ingestor read synthetic 64×48 frames
/// into one channel and exited, and the coordinator marked the channel drained.
struct DrainedRun {
    fleet: Fleet,
    channels: ChannelServiceClient<framefleet_proto::client::CoordinatorChannel>,
    channel_id: String,
    /// The channel as it was first seen drained.
    drained: Channel,
}

impl DrainedRun {
    async fn start(label: &str, channel: &str, frames: u32) -> Self {
        let mut fleet = Fleet::start(label).await.expect("start the coordinator");
        fleet.spawn_worker(&format!("worker-{label}"), &[]).expect("worker");
        let mut channels = fleet.channel_client().await.expect("connect");
        let channel_id = fleet.names.channel_id(channel);
        let source = [(channel_id.as_str(), "synthetic://64x48@30")];
        let frames = frames.to_string();
        let config = fleet
            .ingestor_config(&format!("ingestor-{label}"), &source, &["--max-frames", &frames])
            .expect("config");
        framefleet_ingestor::run(config, CancellationToken::new())
            .await
            .expect("the finished run");
        let drained = wait_for_channel(&mut channels, &channel_id, "marked drained", |channel| {
            channel.drained_unix_ms > 0
        })
        .await;
        Self {
            fleet,
            channels,
            channel_id,
            drained,
        }
    }
}

/// Polls the channel until `done` holds of it (60 s at most).
async fn wait_for_channel(
    channels: &mut ChannelServiceClient<framefleet_proto::client::CoordinatorChannel>,
    channel_id: &str,
    what: &str,
    done: impl Fn(&Channel) -> bool,
) -> Channel {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let listed = channels
            .list_channels(ListChannelsRequest {
                id_prefix: channel_id.to_owned(),
                ..ListChannelsRequest::default()
            })
            .await
            .expect("list")
            .into_inner();
        let record = listed
            .channels
            .into_iter()
            .find(|channel| channel.channel_id == channel_id)
            .expect("the channel");
        if done(&record) {
            return record;
        }
        assert!(Instant::now() < deadline, "never {what}: {record:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_channel_gives_its_partitions_back() {
    let DrainedRun {
        fleet,
        channel_id: old,
        drained,
        ..
    } = DrainedRun::start("ended-drained", "old", 30).await;
    assert!(
        drained.ended_unix_ms > 0 && drained.drained_unix_ms >= drained.ended_unix_ms,
        "{drained:?}"
    );
    let status = fleet
        .wait_for_status(Duration::from_secs(30), |status| worker_partitions(status) == Some(0))
        .await
        .expect("the worker lets the drained channel's partition go");
    // With nothing assigned, nothing lags here (not the last lag of a partition it let go).
    let lag = worker_report(&status).map(|report| report.lag_frames);
    assert!(lag.is_some_and(|lag| lag <= 0), "worker lag {lag:?} with no partitions");
    let old_topic = status
        .topics
        .iter()
        .find(|topic| topic.topic.ends_with(&old))
        .expect("the old topic's metrics");
    assert_eq!(
        (old_topic.accumulate, old_topic.lag),
        (30, 0),
        "every frame was consumed first"
    );

    // A live channel: the worker holds its partition only, not the drained one's as well.
    let live = fleet.names.channel_id("live");
    let config = fleet
        .ingestor_config(
            "ingestor-live",
            &[(&live, "synthetic://64x48@30")],
            &["--max-frames", "90", "--pace", "realtime"],
        )
        .expect("config");
    let ingestor = tokio::spawn(framefleet_ingestor::run(config, CancellationToken::new()));
    let status = fleet
        .wait_for_status(Duration::from_secs(30), |status| {
            worker_partitions(status) == Some(1)
                && status
                    .topics
                    .iter()
                    .any(|topic| topic.topic.ends_with(&live) && topic.consume > 0)
        })
        .await
        .expect("the worker consumes the live channel");
    assert_eq!(worker_partitions(&status), Some(1), "{status:?}");
    ingestor.await.expect("ingestor task").expect("the live run");
    fleet.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_written_into_a_drained_channel_get_their_outcomes() {
    let DrainedRun {
        fleet,
        mut channels,
        channel_id: cam,
        drained,
    } = DrainedRun::start("drained-late", "cam", 20).await;
    fleet
        .wait_for_status(Duration::from_secs(30), |status| worker_partitions(status) == Some(0))
        .await
        .expect("the worker lets the drained channel's partition go");

    // Another client writes into the drained topic: good frames and bad ones.
    let producer = written::plain_producer(&fleet.infrastructure.kafka_brokers).expect("producer");
    let good = written::solid_jpeg(64, 48).expect("jpeg");
    let wrong_size = written::solid_jpeg(128, 96).expect("jpeg");
    let corrupt = b"\xFF\xD8\xFF\xE0 not really a jpeg".to_vec();
    let late: Vec<(u64, &[u8])> = vec![
        (1001, &good),
        (1002, &corrupt),
        (1003, &good),
        (1004, &wrong_size),
        (1005, &good),
    ];
    for (sequence, payload) in &late {
        let record = FutureRecord::to(&drained.topic)
            .key(cam.as_str())
            .payload(*payload)
            .headers(written::frame_record_headers(&cam, *sequence, payload));
        producer
            .send(record, Duration::from_secs(10))
            .await
            .expect("write into the drained topic");
    }

    // Drained is withdrawn (the topic grew), the worker consumes the topic again, and
    // every late record gets its outcome; then the channel is drained once more.
    let again = wait_for_channel(&mut channels, &cam, "drained again after the late records", |channel| {
        channel.drained_unix_ms > drained.drained_unix_ms
    })
    .await;
    assert_eq!(again.ended_unix_ms, drained.ended_unix_ms, "still the ended channel");
    let brokers = fleet.infrastructure.kafka_brokers.clone();
    let (dead_letter_topic, results_topic) = (fleet.names.dead_letter_topic.clone(), fleet.names.results_topic.clone());
    let (results, dead_letters) = tokio::task::spawn_blocking(move || {
        let read = |topic: &str, expected| {
            framefleet_loadtest::read_topic(
                &brokers,
                topic,
                expected,
                Duration::from_secs(60),
                Duration::from_secs(1),
            )
            .expect("read")
        };
        (read(&results_topic, 23), read(&dead_letter_topic, 2))
    })
    .await
    .expect("read");
    let mut late_results: Vec<u64> = results
        .iter()
        .map(|record| serde_json::from_slice::<FrameResult>(record.payload().unwrap_or_default()).expect("result JSON"))
        .filter(|result| result.sequence > 1000)
        .map(|result| result.sequence)
        .collect();
    late_results.sort_unstable();
    assert_eq!(late_results, [1001, 1003, 1005], "each late good frame has one result");
    assert_eq!(results.len(), 23, "the run's 20 results and the late 3, none twice");
    let mut late_dead: Vec<String> = dead_letters
        .iter()
        .map(|record| written::header_text(record, wire::HEADER_DEAD_LETTER_CODE))
        .collect();
    late_dead.sort();
    assert_eq!(
        late_dead,
        ["DEAD_LETTER_CODE_CORRUPT_IMAGE", "DEAD_LETTER_CODE_SIZE_MISMATCH"],
        "each late bad record has a coded dead letter"
    );
    let status = fleet
        .wait_for_status(Duration::from_secs(30), |status| {
            status
                .topics
                .iter()
                .any(|topic| topic.topic == drained.topic && topic.lag == 0 && topic.consume == 25)
        })
        .await
        .expect("every record of the topic committed");
    assert!(status.kafka_error.is_empty(), "{status:?}");
    fleet.stop().await.expect("stop");
}
