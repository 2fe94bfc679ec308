//! The broker stops for 20 s while a camera keeps producing, then comes back: the ingestor
//! recovers without a restart and no acknowledged frame is lost or duplicated. The test runs
//! its own etcd, PostgreSQL and broker (`deploy/local/infra.sh` in a private run directory),
//! so stopping the broker disturbs no other test; the broker stores on PostgreSQL, so what it
//! acknowledged survives its restart.

use framefleet_loadtest::{Fleet, Infrastructure};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

struct PrivateInfrastructure {
    run_dir: PathBuf,
    script: PathBuf,
}

impl PrivateInfrastructure {
    fn up() -> (Self, Infrastructure) {
        let run_dir = std::env::temp_dir().join(format!("framefleet-outage-{}", uuid::Uuid::new_v4().simple()));
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/local/infra.sh");
        let private = Self { run_dir, script };
        let output = private.run(&["up", "--storage", "postgres"]);
        let value = |name: &str| {
            output
                .lines()
                .find_map(|line| line.strip_prefix(&format!("export {name}=")))
                .unwrap_or_else(|| panic!("{name} missing from infra.sh output: {output}"))
                .to_owned()
        };
        let infrastructure = Infrastructure {
            etcd_endpoints: value("FRAMEFLEET_ETCD_ENDPOINTS"),
            kafka_brokers: value("FRAMEFLEET_KAFKA_BROKERS"),
        };
        (private, infrastructure)
    }

    fn run(&self, args: &[&str]) -> String {
        let output = Command::new(&self.script)
            .args(args)
            .env("FRAMEFLEET_RUN_DIR", &self.run_dir)
            .output()
            .expect("run deploy/local/infra.sh");
        assert!(
            output.status.success(),
            "infra.sh {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for PrivateInfrastructure {
    fn drop(&mut self) {
        let _ = Command::new(&self.script)
            .args(["down", "--purge"])
            .env("FRAMEFLEET_RUN_DIR", &self.run_dir)
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_20_second_broker_outage_loses_no_acknowledged_frame() {
    let (infra, infrastructure) = tokio::task::spawn_blocking(PrivateInfrastructure::up)
        .await
        .expect("start private infrastructure");
    let fleet = Fleet::start_on("outage", infrastructure.clone())
        .await
        .expect("start the coordinator");
    let channel_id = fleet.names.channel_id("cam");
    let config = fleet
        .ingestor_config(
            "ingestor-outage",
            &[(&channel_id, "synthetic://160x120@20")],
            // A queue that holds the whole outage: the camera keeps going, nothing is dropped.
            &["--pace", "realtime", "--queue-frames", "1000"],
        )
        .expect("config");
    let shutdown = CancellationToken::new();
    let ingesting = tokio::spawn(framefleet_ingestor::run(config, shutdown.clone()));
    fleet
        .wait_for_ledger(&channel_id, Duration::from_secs(60), |ledger| {
            ledger.frames_acknowledged >= 40
        })
        .await
        .expect("frames flow before the outage");

    infra.run(&["stop-broker"]);
    tokio::time::sleep(Duration::from_secs(20)).await;
    let captured_during = fleet
        .wait_for_ledger(&channel_id, Duration::from_secs(10), |_| true)
        .await
        .expect("ledger during the outage")
        .frames_captured;
    tokio::task::spawn_blocking({
        let run_dir = infra.run_dir.clone();
        let script = infra.script.clone();
        move || {
            let status = Command::new(script)
                .arg("restart-broker")
                .env("FRAMEFLEET_RUN_DIR", run_dir)
                .status()
                .expect("restart the broker");
            assert!(status.success());
        }
    })
    .await
    .expect("restart task");

    // Everything captured during the outage is acknowledged after it, without a restart.
    fleet
        .wait_for_ledger(&channel_id, Duration::from_secs(120), |ledger| {
            ledger.frames_acknowledged >= captured_during + 20
        })
        .await
        .expect("the ingestor recovers on its own");
    shutdown.cancel();
    let summary = ingesting.await.expect("ingestor task").expect("ingestor run");
    let ledger = summary.ledger(&channel_id).expect("ledger").clone();
    assert_eq!(ledger.frames_failed, 0, "{}", ledger.last_error);
    assert_eq!(ledger.frames_dropped, 0);
    assert_eq!(ledger.frames_acknowledged, ledger.frames_captured);

    // The topic, read with a plain consumer, holds each acknowledged frame exactly once.
    let expected = usize::try_from(ledger.frames_acknowledged).expect("count");
    let brokers = infrastructure.kafka_brokers.clone();
    let topic = format!("framefleet.frames.{channel_id}");
    let records = tokio::task::spawn_blocking(move || {
        framefleet_loadtest::read_topic(
            &brokers,
            &topic,
            expected,
            Duration::from_secs(60),
            Duration::from_secs(2),
        )
    })
    .await
    .expect("reader")
    .expect("read the topic");
    let mut copies: BTreeMap<u64, usize> = BTreeMap::new();
    for record in &records {
        let headers = framefleet_loadtest::frame_headers(record).expect("headers");
        *copies.entry(headers.sequence).or_default() += 1;
    }
    assert_eq!(
        copies.keys().copied().collect::<Vec<_>>(),
        (0..expected as u64).collect::<Vec<_>>(),
        "every acknowledged sequence is in the topic"
    );
    assert!(copies.values().all(|&count| count == 1), "no frame is duplicated");
    fleet.stop().await.expect("stop");
}
