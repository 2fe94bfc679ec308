//! A channel whose source ended and whose frames were all committed is drained: the
//! coordinator says so, and workers stop subscribing to its topic, so finished channels no
//! longer take partitions (and with them a worker's share of the group) from live ones.

use framefleet_loadtest::Fleet;
use framefleet_proto::v1::{FleetStatus, ListChannelsRequest, WorkerReport};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The fleet's one worker's last report.
fn worker_report(status: &FleetStatus) -> Option<&WorkerReport> {
    status.workers.iter().find_map(|worker| worker.report.as_ref())
}

fn worker_partitions(status: &FleetStatus) -> Option<u32> {
    worker_report(status).map(|report| report.assigned_partitions)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_channel_gives_its_partitions_back() {
    let mut fleet = Fleet::start("ended-drained").await.expect("start the coordinator");
    fleet.spawn_worker("worker-d", &[]).expect("worker");
    let mut channels = fleet.channel_client().await.expect("connect");

    // A finished run: its ingestor read 30 frames and exited.
    let old = fleet.names.channel_id("old");
    let config = fleet
        .ingestor_config(
            "ingestor-old",
            &[(&old, "synthetic://64x48@30")],
            &["--max-frames", "30"],
        )
        .expect("config");
    framefleet_ingestor::run(config, CancellationToken::new())
        .await
        .expect("the finished run");

    let deadline = Instant::now() + Duration::from_secs(60);
    let drained = loop {
        let listed = channels
            .list_channels(ListChannelsRequest {
                id_prefix: old.clone(),
                ..ListChannelsRequest::default()
            })
            .await
            .expect("list")
            .into_inner();
        let record = listed
            .channels
            .into_iter()
            .find(|channel| channel.channel_id == old)
            .expect("the channel");
        if record.drained_unix_ms > 0 {
            break record;
        }
        assert!(Instant::now() < deadline, "never marked drained: {record:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
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
