//! An ingestor that stops while its coordinator is cut off from etcd still leaves its final
//! counts in etcd: the coordinator answers a closed report stream OK only once it has stored
//! the last report, and the ingestor sends that report again, to the coordinator that can,
//! until one has. Before, the cut-off coordinator answered OK and dropped the report; the
//! stored ledger stopped a second short of the ingestor's own counts (in the compose fault
//! suite's `leader-etcd-partition`, 1137 of 1200 frames captured, for good).
//!
//! Real etcd and Kafka (`deploy/local/infra.sh`); coordinator A reaches etcd through a proxy
//! the test cuts, coordinator B directly; the ingestor is given both.

use clap::Parser;
use framefleet_ingestor::config::IngestorConfig;
use framefleet_proto::v1::fleet_service_client::FleetServiceClient;
use framefleet_proto::v1::{ChannelLedger, GetFleetStatusRequest};
use framefleet_test_support::proxy::CuttableProxy;
use framefleet_test_support::{FleetNames, Infrastructure, TestCoordinator};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The channel's ledger as `coordinator` reads it from etcd, if it answers and has one.
async fn stored_ledger(coordinator: &str, channel_id: &str) -> Option<ChannelLedger> {
    let channel =
        framefleet_proto::client::connect_coordinator(coordinator, Duration::from_secs(5), &Default::default())
            .await
            .ok()?;
    let status = FleetServiceClient::new(channel)
        .get_fleet_status(GetFleetStatusRequest {})
        .await
        .ok()?
        .into_inner();
    status
        .ledgers
        .into_iter()
        .find(|ledger| ledger.channel_id == channel_id)
}

fn free_loopback_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingestor_stopping_while_its_coordinator_is_cut_off_from_etcd_leaves_its_final_counts() {
    let infrastructure = Infrastructure::required();
    let names = FleetNames::unique("final-report");
    let etcd_port: u16 = infrastructure
        .etcd_endpoints
        .split(',')
        .next()
        .and_then(|endpoint| endpoint.rsplit(':').next())
        .and_then(|port| port.trim_end_matches('/').parse().ok())
        .expect("an etcd endpoint with a port");
    let proxy = CuttableProxy::start(etcd_port).await.expect("start the etcd proxy");
    let mut coordinator_args = names.coordinator_args();
    coordinator_args.extend(["--member-ttl-secs", "3", "--request-timeout-secs", "2"].map(str::to_owned));
    let through_proxy = Infrastructure {
        etcd_endpoints: format!("http://{}", proxy.address),
        ..infrastructure.clone()
    };
    let cut_off = TestCoordinator::start(&through_proxy, &coordinator_args)
        .await
        .expect("start coordinator A");
    // B starts once the ingestor's report stream is open on A, so that stream is A's.
    let other_listen = free_loopback_address();
    let other_address = format!("http://{other_listen}");

    let channel_id = names.channel_id("cam");
    let config = IngestorConfig::try_parse_from([
        "framefleet-ingestor",
        "--ingestor-id",
        "ingestor-final-report",
        "--coordinator",
        &format!("{},{other_address}", cut_off.address),
        "--kafka-brokers",
        &infrastructure.kafka_brokers,
        "--report-interval-ms",
        "200",
        "--request-timeout-secs",
        "2",
        "--channel",
        &format!("{channel_id}=synthetic://64x48@20"),
        "--pace",
        "realtime",
    ])
    .expect("ingestor config");
    let stop = CancellationToken::new();
    let ingestor = tokio::spawn(framefleet_ingestor::run(config, stop.clone()));

    let deadline = Instant::now() + Duration::from_secs(60);
    while stored_ledger(&cut_off.address, &channel_id)
        .await
        .is_none_or(|ledger| ledger.frames_acknowledged < 20)
    {
        assert!(
            Instant::now() < deadline,
            "the channel never captured through coordinator A"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let other = TestCoordinator::start_at(&other_listen, &infrastructure, &coordinator_args)
        .await
        .expect("start coordinator B");
    // The ingestor's connection probes every coordinator each second: by now it knows B.
    tokio::time::sleep(Duration::from_secs(2)).await;

    // A loses etcd and, before it notices, the ingestor stops: its final report goes to A.
    proxy.cut();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopped_at = Instant::now();
    stop.cancel();
    let summary = tokio::time::timeout(Duration::from_secs(60), ingestor)
        .await
        .expect("the ingestor stops within a minute")
        .expect("ingestor task")
        .expect("ingestor run");
    let own = summary.ledger(&channel_id).expect("the ingestor's own ledger").clone();
    assert!(own.frames_acknowledged > 20, "{own:?}");

    // What the ingestor counted is what etcd keeps, read through B, as soon as it has exited.
    let stored = stored_ledger(&other.address, &channel_id)
        .await
        .expect("B reads the channel's ledger from etcd");
    assert_eq!(
        (
            stored.frames_captured,
            stored.frames_acknowledged,
            stored.frames_failed,
            stored.ingestor_epoch,
            stored.source_state.as_str(),
            stored.source_finished
        ),
        (
            own.frames_captured,
            own.frames_acknowledged,
            own.frames_failed,
            own.ingestor_epoch,
            own.source_state.as_str(),
            own.source_finished
        ),
        "stored {stored:?}\nown {own:?}\n(the ingestor took {:?} to stop)",
        stopped_at.elapsed()
    );
    other.stop().await.expect("stop B");
    drop(cut_off);
}
