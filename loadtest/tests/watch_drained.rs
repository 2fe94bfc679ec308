//! `framefleet watch --until-drained` answers the question it is asked on a cluster with
//! history: a finished, drained channel of an earlier run does not make it say "drained"
//! before a new run's frames are processed, and it decides from the ledgers the coordinator
//! keeps in etcd rather than from ingestor reports that expire.

use framefleet_loadtest::Fleet;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn until_drained_waits_for_the_new_run_on_a_cluster_with_history() {
    let cli = framefleet_common::startup::sibling_binary("framefleet").expect("the framefleet CLI of this build");
    let mut fleet = Fleet::start("watch-history").await.expect("start the coordinator");
    fleet.spawn_worker("worker-w", &[]).expect("worker");

    // An earlier run: captured, processed, finished.
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
        .expect("the first run");
    fleet
        .wait_for_status(Duration::from_secs(60), |status| {
            status
                .ledgers
                .iter()
                .any(|ledger| ledger.channel_id == old && ledger.source_finished)
                && status.topics.iter().all(|topic| topic.lag == 0)
                && status.topics.iter().any(|topic| topic.accumulate == 30)
        })
        .await
        .expect("the first run is drained and its ledger kept");

    // The watch starts before the new run's ingestor exists.
    let address = fleet.coordinator_address.clone();
    let watch = tokio::task::spawn_blocking(move || {
        std::process::Command::new(cli)
            .args([
                "--coordinator",
                &address,
                "watch",
                "--until-drained",
                "--timeout-secs",
                "120",
                "--interval-ms",
                "200",
            ])
            .output()
            .expect("run the CLI")
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    let new = fleet.names.channel_id("new");
    let config = fleet
        .ingestor_config(
            "ingestor-new",
            &[(&new, "synthetic://64x48@100")],
            &["--max-frames", "300", "--pace", "realtime"],
        )
        .expect("config");
    let started = Instant::now();
    let ingestor = tokio::spawn(framefleet_ingestor::run(config, CancellationToken::new()));
    let output = watch.await.expect("watch task");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "300 frames at 100 frames/s take 3 s; the watch said drained after {:?}",
        started.elapsed()
    );
    // When the watch said "drained", the new run really was: every frame captured and
    // committed by the worker group.
    let mut client = fleet.fleet_client().await.expect("client");
    let status = client
        .get_fleet_status(framefleet_proto::v1::GetFleetStatusRequest {})
        .await
        .expect("status")
        .into_inner();
    let ledger = status
        .ledgers
        .iter()
        .find(|ledger| ledger.channel_id == new)
        .expect("the new run's ledger is kept");
    assert!(
        ledger.source_finished && ledger.frames_acknowledged == 300,
        "{ledger:?}"
    );
    assert!(
        ledger.ingestor_epoch > 0 && ledger.ingestor_id == "ingestor-new",
        "the kept ledger names its run: {ledger:?}"
    );
    let topic = format!("framefleet.frames.{new}");
    let metrics = status
        .topics
        .iter()
        .find(|metrics| metrics.topic == topic)
        .expect("topic");
    assert_eq!((metrics.accumulate, metrics.lag), (300, 0), "{stdout}");
    ingestor.await.expect("ingestor task").expect("the second run");
    fleet.stop().await.expect("stop");
}
