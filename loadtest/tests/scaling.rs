//! Scale the worker group 1 → 3 → 1 while cameras keep producing: every frame still gets a
//! result, the added workers take real work, and the removed ones deregister and hand their
//! partitions back. Real etcd, broker, OpenCV capture and candle; the results are read back
//! with a plain Kafka consumer.

use framefleet_loadtest::Fleet;
use framefleet_proto::v1::FleetStatus;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

const SAMPLE_VIDEO: &str = "/usr/share/doc/opencv-doc/examples/data/vtest.avi";
const CHANNELS: [&str; 4] = ["gate", "dock", "yard", "lobby"];
/// At the video's 10 frames/s, paced in real time: 20 s of generation per channel.
const FRAMES_PER_CHANNEL: u64 = 200;

fn processed_by(status: &FleetStatus, worker_id: &str) -> u64 {
    status
        .workers
        .iter()
        .filter_map(|worker| worker.report.as_ref())
        .find(|report| report.worker_id == worker_id)
        .map_or(0, |report| report.frames_processed)
}

fn registered(status: &FleetStatus) -> HashSet<String> {
    status
        .workers
        .iter()
        .filter(|worker| worker.registered)
        .filter_map(|worker| worker.report.as_ref().map(|report| report.worker_id.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scaling_one_to_three_to_one_under_load_leaves_no_frame_unprocessed() {
    let mut fleet = Fleet::start("scale").await.expect("start the coordinator");
    let channel_ids: Vec<String> = CHANNELS.iter().map(|name| fleet.names.channel_id(name)).collect();
    let sources: Vec<(&str, &str)> = channel_ids.iter().map(|id| (id.as_str(), SAMPLE_VIDEO)).collect();
    let max_frames = FRAMES_PER_CHANNEL.to_string();
    let ingestor_config = fleet
        .ingestor_config(
            "ingestor-scale",
            &sources,
            &["--pace", "realtime", "--max-frames", &max_frames],
        )
        .expect("ingestor config");
    let ingesting = tokio::spawn(framefleet_ingestor::run(
        ingestor_config,
        tokio_util::sync::CancellationToken::new(),
    ));

    // One worker owns all four channel partitions.
    fleet.spawn_worker("worker-1", &[]).expect("worker 1");
    fleet
        .wait_for_status(Duration::from_secs(60), |status| processed_by(status, "worker-1") >= 40)
        .await
        .expect("worker 1 processes frames");

    // Scale out: the new workers are registered and take partitions and frames of their own.
    fleet.spawn_worker("worker-2", &[]).expect("worker 2");
    fleet.spawn_worker("worker-3", &[]).expect("worker 3");
    // Reports are snapshots taken at different moments, so ownership is checked once the
    // rebalance has settled: every worker owns some of the four partitions, none twice.
    fleet
        .wait_for_status(Duration::from_secs(60), |status| {
            let owned: Vec<u32> = status
                .workers
                .iter()
                .filter_map(|worker| worker.report.as_ref())
                .map(|report| report.assigned_partitions)
                .collect();
            ["worker-2", "worker-3"].iter().all(|id| processed_by(status, id) >= 5)
                && registered(status).len() == 3
                && owned.len() == 3
                && owned.iter().all(|&partitions| partitions >= 1)
                && owned.iter().sum::<u32>() == CHANNELS.len() as u32
        })
        .await
        .expect("the added workers take a share of the stream");

    // Scale in while the cameras are still producing.
    let worker_2 = fleet.stop_worker("worker-2").await.expect("stop worker 2");
    let worker_3 = fleet.stop_worker("worker-3").await.expect("stop worker 3");
    assert!(worker_2.frames_processed > 0 && worker_3.frames_processed > 0);
    fleet
        .wait_for_status(Duration::from_secs(10), |status| {
            registered(status) == HashSet::from(["worker-1".to_owned()])
        })
        .await
        .expect("stopped workers deregister at once");

    let summary = ingesting.await.expect("ingestor task").expect("ingest");
    let total: u64 = summary.channels.iter().map(|ledger| ledger.frames_acknowledged).sum();
    assert_eq!(
        total,
        FRAMES_PER_CHANNEL * CHANNELS.len() as u64,
        "every frame was acknowledged"
    );

    // The remaining worker drains everything, as the group's committed offsets show.
    let topics: Vec<String> = channel_ids.iter().map(|id| format!("framefleet.frames.{id}")).collect();
    fleet
        .wait_for_status(Duration::from_secs(180), |status| {
            topics.iter().all(|topic| {
                status
                    .topics
                    .iter()
                    .any(|metrics| &metrics.topic == topic && metrics.consume == FRAMES_PER_CHANNEL && metrics.lag == 0)
            })
        })
        .await
        .expect("one worker drains the backlog");

    let expected = total as usize;
    let results = fleet.read_results(expected).await.expect("read the results topic");
    let mut per_frame: HashMap<(String, u64), usize> = HashMap::new();
    let mut per_worker: HashMap<String, usize> = HashMap::new();
    for result in &results {
        *per_frame
            .entry((result.channel_id.clone(), result.sequence))
            .or_default() += 1;
        *per_worker.entry(result.worker_id.clone()).or_default() += 1;
    }
    let missing: Vec<(String, u64)> = channel_ids
        .iter()
        .flat_map(|id| (0..FRAMES_PER_CHANNEL).map(move |sequence| (id.clone(), sequence)))
        .filter(|frame| !per_frame.contains_key(frame))
        .collect();
    assert!(
        missing.is_empty(),
        "{} frames have no result, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let duplicates = results.len() - per_frame.len();
    println!(
        "{} results for {expected} frames, {duplicates} duplicates; per worker {per_worker:?}",
        results.len()
    );
    // Workers that leave cleanly commit what they finished, so a rebalance redoes at most the
    // frames in flight at the moment partitions moved.
    assert!(
        duplicates <= expected / 10,
        "{duplicates} duplicates is more than two clean rebalances explain"
    );
    fleet.stop().await.expect("stop the fleet");
}
