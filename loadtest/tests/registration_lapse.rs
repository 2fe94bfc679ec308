//! An ingestor whose registration lapses (its lease gone from etcd, as when the etcd member
//! its coordinator talked to dies) is registered again, and claims its own channels back once
//! the leader has taken them away: capture resumes without a restart.

use framefleet_loadtest::{Fleet, frame_headers, read_topic};
use framefleet_proto::v1::GetChannelRequest;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lapsed_registration_comes_back_with_its_channels() {
    let fleet = Fleet::start("lapse").await.expect("start the coordinator");
    let channel_id = fleet.names.channel_id("cam");
    let ingestor_id = "ingestor-lapse";
    let config = fleet
        .ingestor_config(
            ingestor_id,
            &[(&channel_id, "synthetic://64x48@20")],
            &["--pace", "realtime"],
        )
        .expect("config");
    let stop = CancellationToken::new();
    let ingestor = tokio::spawn(framefleet_ingestor::run(config, stop.clone()));
    let channels = fleet.channel_client().await.expect("connect");
    let owner = || {
        let mut channels = channels.clone();
        let channel_id = channel_id.clone();
        async move {
            channels
                .get_channel(GetChannelRequest { channel_id })
                .await
                .map(|channel| channel.into_inner().ingestor_id)
                .unwrap_or_default()
        }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while owner().await != ingestor_id {
        assert!(
            Instant::now() < deadline,
            "the channel was never assigned to its ingestor"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The registration's lease is revoked behind the coordinator's back: the key is gone.
    let mut etcd = etcd_client::Client::connect([fleet.infrastructure.etcd_endpoints.as_str()], None)
        .await
        .expect("etcd");
    let key = format!("{}members/ingestors/{ingestor_id}", fleet.names.etcd_prefix);
    let lease = etcd.get(key.as_str(), None).await.expect("get").kvs()[0].lease();
    etcd.lease_revoke(lease).await.expect("revoke the lease");

    // The leader takes the channel away from an ingestor it no longer sees…
    let deadline = Instant::now() + Duration::from_secs(20);
    while !owner().await.is_empty() {
        assert!(Instant::now() < deadline, "the leader never noticed the lapse");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let taken_at = fleet
        .wait_for_ledger(&channel_id, Duration::from_secs(5), |_| true)
        .await
        .expect("ledger")
        .frames_captured;
    // …the registration comes back, the ingestor claims its channel again, and capture goes on.
    let deadline = Instant::now() + Duration::from_secs(30);
    while owner().await != ingestor_id {
        if Instant::now() >= deadline {
            let status = fleet
                .wait_for_status(Duration::from_secs(1), |_| true)
                .await
                .expect("status");
            panic!(
                "the ingestor never got its channel back (owner `{}`); registered ingestors {:?}",
                owner().await,
                status.registered_ingestors
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let resumed = fleet
        .wait_for_ledger(&channel_id, Duration::from_secs(20), |ledger| {
            ledger.frames_captured >= taken_at + 40
        })
        .await
        .expect("capture resumes after the channel is claimed again");
    assert_eq!(resumed.frames_failed, 0, "{resumed:?}");
    let status = fleet
        .wait_for_status(Duration::from_secs(10), |status| {
            status.registered_ingestors.iter().any(|id| id == ingestor_id)
        })
        .await
        .expect("registered again");
    assert!(status.registered_ingestors.iter().any(|id| id == ingestor_id));

    stop.cancel();
    let summary = ingestor.await.expect("ingestor task").expect("ingestor run");
    // Captured before and after the channel was taken away, in one run: every frame in the
    // topic has a (channel, epoch, sequence) of its own.
    let acknowledged = summary.channels[0].frames_acknowledged;
    let (brokers, topic) = (
        fleet.infrastructure.kafka_brokers.clone(),
        format!("framefleet.frames.{channel_id}"),
    );
    let records = tokio::task::spawn_blocking(move || {
        read_topic(
            &brokers,
            &topic,
            acknowledged as usize,
            Duration::from_secs(30),
            Duration::from_millis(500),
        )
    })
    .await
    .expect("reader")
    .expect("read the channel topic");
    let mut names: Vec<(u64, u64)> = records
        .iter()
        .map(|record| {
            let headers = frame_headers(record).expect("frame headers");
            (headers.ingestor_epoch, headers.sequence)
        })
        .collect();
    let written = names.len();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), written, "a sequence number was given to two frames");
    assert_eq!(written as u64, acknowledged);
    fleet.stop().await.expect("stop");
}
