//! The control plane against real etcd and a real Kafka-protocol broker (started by
//! `deploy/local/infra.sh`, through `scripts/test.sh`). Each test uses its own etcd prefix
//! and channel ids, so tests run in parallel and twice in a row.

use framefleet_proto::client::{ClientOptions, CoordinatorChannel, Token, connect_coordinator_for_streams};
use framefleet_proto::v1::assignment_service_client::AssignmentServiceClient;
use framefleet_proto::v1::channel_service_client::ChannelServiceClient;
use framefleet_proto::v1::fleet_service_client::FleetServiceClient;
use framefleet_proto::v1::schema_service_client::SchemaServiceClient;
use framefleet_proto::v1::{
    AddSchemaVersionRequest, AssignmentUpdate, ChannelLedger, ChannelState, DeregisterChannelRequest, FrameEncoding,
    FrameSchema, GetChannelRequest, GetFleetStatusRequest, GetSchemaRequest, IngestorReport, ListChannelsRequest,
    ListSchemaVersionsRequest, MoveChannelRequest, PipelineSpec, PixelFormat, RegisterChannelRequest, TopicStrategy,
    UpdateChannelRequest, WatchAssignmentsRequest,
};
use framefleet_test_support::{Infrastructure, TestCoordinator};
use std::time::{Duration, Instant};
use tonic::Code;

/// A coordinator with short membership and drain timings, and clients for it.
struct Coordinator(TestCoordinator);

impl Coordinator {
    async fn start(prefix: &str, extra: &[&str]) -> Self {
        let mut args: Vec<String> = [
            "--etcd-prefix",
            prefix,
            "--member-ttl-secs",
            "2",
            "--drain-settle-secs",
            "1",
            "--request-timeout-secs",
            "5",
        ]
        .map(str::to_owned)
        .to_vec();
        args.extend(extra.iter().map(|arg| (*arg).to_owned()));
        Self(
            TestCoordinator::start(&Infrastructure::required(), &args)
                .await
                .expect("start coordinator"),
        )
    }

    async fn stop(self) {
        self.0.stop().await.expect("clean stop");
    }

    fn address(&self) -> &str {
        &self.0.address
    }

    /// Registers analysis-only pipelines `names` (channels may name only registered ones).
    async fn create_pipelines(&self, names: &[&str]) {
        for name in names {
            let spec = PipelineSpec {
                analysis: true,
                ..PipelineSpec::default()
            };
            framefleet_test_support::create_pipeline(self.address(), name, spec)
                .await
                .expect("create a pipeline");
        }
    }

    async fn channel(&self, token: Option<&str>) -> CoordinatorChannel {
        let options = ClientOptions {
            token: token.map(Token::new),
            ..ClientOptions::default()
        };
        connect_coordinator_for_streams(self.address(), Duration::from_secs(5), &options)
            .await
            .expect("connect")
    }
}

fn unique(name: &str) -> String {
    format!("{name}-{}", &uuid::Uuid::new_v4().simple().to_string()[..10])
}

fn prefix() -> String {
    format!("/framefleet-test/{}/", unique("cp"))
}

fn schema(width: u32, height: u32) -> FrameSchema {
    FrameSchema {
        version: 0,
        width,
        height,
        channels: 3,
        pixel_format: PixelFormat::Rgb24.into(),
        encoding: FrameEncoding::Jpeg.into(),
        fps: 10.0,
    }
}

fn register(channel_id: &str, width: u32, height: u32) -> RegisterChannelRequest {
    RegisterChannelRequest {
        channel_id: channel_id.to_owned(),
        source_uri: "synthetic://".to_owned(),
        schema: Some(schema(width, height)),
        ..RegisterChannelRequest::default()
    }
}

async fn etcd_keys(prefix: &str) -> Vec<String> {
    let endpoints = Infrastructure::required().etcd_endpoints;
    let mut client = etcd_client::Client::connect([endpoints], None)
        .await
        .expect("etcd client");
    let response = client
        .get(prefix, Some(etcd_client::GetOptions::new().with_prefix()))
        .await
        .expect("get");
    response
        .kvs()
        .iter()
        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
        .collect()
}

async fn next_update(stream: &mut tonic::Streaming<AssignmentUpdate>) -> AssignmentUpdate {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("an update in time")
        .expect("stream alive")
        .expect("stream not closed")
}

async fn wait_until<F, Fut>(what: &str, limit: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_channel_and_schema_rpc_answers_with_the_right_code() {
    let coordinator = Coordinator::start(&prefix(), &[]).await;
    coordinator.create_pipelines(&["detect", "archive"]).await;
    let channel = coordinator.channel(None).await;
    let mut channels = ChannelServiceClient::new(channel.clone());
    let mut schemas = SchemaServiceClient::new(channel);
    let cam = unique("cam");

    let registered = channels
        .register_channel(register(&cam, 64, 48))
        .await
        .expect("register")
        .into_inner();
    assert!(registered.created);
    let first = registered.channel.expect("channel");
    assert_eq!(first.topics, [format!("framefleet.frames.{cam}")]);
    let again = channels
        .register_channel(register(&cam, 64, 48))
        .await
        .expect("idempotent")
        .into_inner();
    assert!(!again.created);
    let conflict = channels
        .register_channel(register(&cam, 128, 96))
        .await
        .expect_err("conflict");
    assert_eq!(conflict.code(), Code::AlreadyExists);
    let invalid = channels
        .register_channel(register("bad/id", 64, 48))
        .await
        .expect_err("invalid");
    assert_eq!(invalid.code(), Code::InvalidArgument);
    assert!(invalid.message().contains("channel_id"), "{}", invalid.message());
    let missing = channels
        .get_channel(GetChannelRequest {
            channel_id: unique("ghost"),
        })
        .await
        .expect_err("missing");
    assert_eq!(missing.code(), Code::NotFound);

    let page = channels
        .list_channels(ListChannelsRequest {
            id_prefix: cam.clone(),
            page_size: 1,
            ..ListChannelsRequest::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(page.channels.len(), 1);
    let bad_page = channels
        .list_channels(ListChannelsRequest {
            page_size: 100_000,
            ..ListChannelsRequest::default()
        })
        .await
        .expect_err("page size");
    assert_eq!(bad_page.code(), Code::InvalidArgument);

    let updated = channels
        .update_channel(UpdateChannelRequest {
            channel_id: cam.clone(),
            source_uri: Some("rtsp://127.0.0.1/cam".into()),
            expected_revision: first.revision,
            ..UpdateChannelRequest::default()
        })
        .await
        .expect("update")
        .into_inner();
    assert_eq!(updated.source_uri, "rtsp://127.0.0.1/cam");
    let stale = channels
        .update_channel(UpdateChannelRequest {
            channel_id: cam.clone(),
            declared_bytes_per_second: Some(1),
            expected_revision: first.revision,
            ..UpdateChannelRequest::default()
        })
        .await
        .expect_err("stale revision");
    assert_eq!(stale.code(), Code::FailedPrecondition);

    // A size change needs consent; with it, the real broker's topic limit is raised first.
    let unconfirmed = schemas
        .add_schema_version(AddSchemaVersionRequest {
            channel_id: cam.clone(),
            schema: Some(schema(1920, 1080)),
            ..AddSchemaVersionRequest::default()
        })
        .await
        .expect_err("size change without consent");
    assert_eq!(unconfirmed.code(), Code::FailedPrecondition);
    // With consent the channel's topic must be resized first. Apache Kafka can; the local
    // broker (Nisshi) has no AlterConfigs, and then nothing may be written.
    let confirmed = schemas
        .add_schema_version(AddSchemaVersionRequest {
            channel_id: cam.clone(),
            schema: Some(schema(1920, 1080)),
            allow_frame_size_change: true,
            ..AddSchemaVersionRequest::default()
        })
        .await;
    if let Err(status) = &confirmed {
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
        assert!(status.message().contains("shared pool"), "{}", status.message());
        channels
            .move_channel(MoveChannelRequest {
                channel_id: cam.clone(),
                topic_strategy: TopicStrategy::SharedPool.into(),
                ..MoveChannelRequest::default()
            })
            .await
            .expect("move to the pool");
    }
    let v2 = schemas
        .add_schema_version(AddSchemaVersionRequest {
            channel_id: cam.clone(),
            schema: Some(schema(1920, 1080)),
            allow_frame_size_change: true,
            ..AddSchemaVersionRequest::default()
        })
        .await
        .expect("size change")
        .into_inner();
    assert_eq!(v2.version, 2);
    let v1 = schemas
        .get_schema(GetSchemaRequest {
            channel_id: cam.clone(),
            version: 1,
        })
        .await
        .expect("v1")
        .into_inner();
    assert_eq!((v1.width, v1.height), (64, 48));
    let versions = schemas
        .list_schema_versions(ListSchemaVersionsRequest {
            channel_id: cam.clone(),
        })
        .await
        .expect("versions")
        .into_inner();
    assert_eq!(versions.schemas.len(), 2);
    let no_version = schemas
        .get_schema(GetSchemaRequest {
            channel_id: cam.clone(),
            version: 7,
        })
        .await
        .expect_err("no such version");
    assert_eq!(no_version.code(), Code::NotFound);

    let moved = channels
        .move_channel(MoveChannelRequest {
            channel_id: cam.clone(),
            topic_strategy: TopicStrategy::FanOut.into(),
            pipelines: vec!["detect".into(), "archive".into()],
            ..MoveChannelRequest::default()
        })
        .await
        .expect("move")
        .into_inner();
    assert_eq!(
        moved.topics,
        [
            format!("framefleet.fanout.detect.{cam}"),
            format!("framefleet.fanout.archive.{cam}")
        ]
    );

    let drained = channels
        .deregister_channel(DeregisterChannelRequest {
            channel_id: cam.clone(),
            ..DeregisterChannelRequest::default()
        })
        .await
        .expect("deregister")
        .into_inner();
    assert_eq!(
        drained.channel.expect("channel").state,
        i32::from(ChannelState::Draining)
    );
    // Nothing was written to the topics, so the leader finishes the drain by itself.
    wait_until("the drain to finish", Duration::from_secs(20), || {
        let mut channels = channels.clone();
        let cam = cam.clone();
        async move {
            matches!(channels.get_channel(GetChannelRequest { channel_id: cam }).await, Err(status) if status.code() == Code::NotFound)
        }
    })
    .await;
    coordinator.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_coordinator_rebuilds_everything_from_etcd() {
    let prefix = prefix();
    let cam = unique("cam");
    let first = Coordinator::start(&prefix, &[]).await;
    let pooled = RegisterChannelRequest {
        topic_strategy: TopicStrategy::SharedPool.into(),
        ..register(&cam, 64, 48)
    };
    let before = ChannelServiceClient::new(first.channel(None).await)
        .register_channel(pooled)
        .await
        .expect("register")
        .into_inner()
        .channel
        .expect("channel");
    first.stop().await;

    let second = Coordinator::start(&prefix, &[]).await;
    let after = ChannelServiceClient::new(second.channel(None).await)
        .get_channel(GetChannelRequest { channel_id: cam })
        .await
        .expect("get after restart")
        .into_inner();
    assert_eq!(after, before);
    assert!(after.topic.starts_with("framefleet.pool."), "{}", after.topic);
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ingestors_get_assignments_and_lose_them_when_their_lease_expires() {
    let coordinator = Coordinator::start(&prefix(), &[]).await;
    let channel = coordinator.channel(None).await;
    let ingestor = unique("ingestor");
    let cam = unique("cam");
    ChannelServiceClient::new(channel.clone())
        .register_channel(register(&cam, 64, 48))
        .await
        .expect("register");

    let mut watch = AssignmentServiceClient::new(channel.clone())
        .watch_assignments(WatchAssignmentsRequest {
            ingestor_id: ingestor.clone(),
            after_revision: 0,
        })
        .await
        .expect("watch")
        .into_inner();
    let listing = next_update(&mut watch).await;
    assert!(listing.reset && listing.channels.is_empty(), "{listing:?}");

    // One report, then silence: registered, assigned, then expired after the 2 s TTL.
    let (sender, receiver) = tokio::sync::mpsc::channel(1);
    let mut fleet = FleetServiceClient::new(channel.clone());
    let report_stream = tokio::spawn(async move {
        fleet
            .stream_ingestor_reports(tokio_stream::wrappers::ReceiverStream::new(receiver))
            .await
    });
    sender
        .send(IngestorReport {
            ingestor_id: ingestor.clone(),
            channels: Vec::new(),
            accepts_assignments: true,
        })
        .await
        .expect("send");
    let assigned = next_update(&mut watch).await;
    assert_eq!(assigned.channels.len(), 1, "{assigned:?}");
    assert_eq!(assigned.channels[0].ingestor_id, ingestor);
    let silent_since = Instant::now();

    let removed = next_update(&mut watch).await;
    assert_eq!(removed.removed_channel_ids, std::slice::from_ref(&cam), "{removed:?}");
    let noticed_after = silent_since.elapsed();
    assert!(
        noticed_after <= Duration::from_secs(4),
        "expiry noticed after {noticed_after:?}"
    );
    let status = FleetServiceClient::new(channel)
        .get_fleet_status(GetFleetStatusRequest {})
        .await
        .expect("status")
        .into_inner();
    assert!(!status.registered_ingestors.contains(&ingestor));
    assert!(!status.leader_id.is_empty());
    drop(sender);
    let _ = report_stream.await;
    coordinator.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watch_resumes_after_a_coordinator_outage_and_relists_after_compaction() {
    let prefix = prefix();
    let first = Coordinator::start(&prefix, &[]).await;
    let channel = first.channel(None).await;
    let mut watch = AssignmentServiceClient::new(channel.clone())
        .watch_assignments(WatchAssignmentsRequest::default())
        .await
        .expect("watch")
        .into_inner();
    let listing = next_update(&mut watch).await;
    assert!(listing.reset);
    let seen = listing.revision;
    drop(watch);
    first.stop().await;

    // While no coordinator runs, another one changes the channels.
    let cam = unique("cam");
    let second = Coordinator::start(&prefix, &[]).await;
    ChannelServiceClient::new(second.channel(None).await)
        .register_channel(register(&cam, 64, 48))
        .await
        .expect("register");
    second.stop().await;

    let third = Coordinator::start(&prefix, &[]).await;
    let channel = third.channel(None).await;
    let mut resumed = AssignmentServiceClient::new(channel.clone())
        .watch_assignments(WatchAssignmentsRequest {
            ingestor_id: String::new(),
            after_revision: seen,
        })
        .await
        .expect("resume")
        .into_inner();
    let missed = next_update(&mut resumed).await;
    assert!(!missed.reset, "history is still there: no full listing needed");
    assert!(missed.channels.iter().any(|c| c.channel_id == cam), "{missed:?}");
    drop(resumed);

    // Compact etcd past `seen` the way an operator would, then resume from `seen` again.
    let endpoints = Infrastructure::required().etcd_endpoints;
    let output = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &endpoints, "endpoint", "status", "--write-out", "json"])
        .output()
        .expect("etcdctl");
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).expect("etcdctl json");
    let revision = status[0]["Status"]["header"]["revision"].as_i64().expect("revision");
    let compacted = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &endpoints, "compact", &revision.to_string()])
        .output()
        .expect("etcdctl compact");
    assert!(
        compacted.status.success(),
        "{}",
        String::from_utf8_lossy(&compacted.stderr)
    );
    let mut after_compaction = AssignmentServiceClient::new(channel)
        .watch_assignments(WatchAssignmentsRequest {
            ingestor_id: String::new(),
            after_revision: seen,
        })
        .await
        .expect("resume after compaction")
        .into_inner();
    let relisted = next_update(&mut after_compaction).await;
    assert!(
        relisted.reset,
        "compacted history must give a full listing: {relisted:?}"
    );
    assert!(relisted.channels.iter().any(|c| c.channel_id == cam));
    assert!(relisted.revision >= revision);
    third.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_coordinators_agree_on_one_leader_and_one_owner_per_channel() {
    let prefix = prefix();
    let first = Coordinator::start(&prefix, &["--coordinator-id", "coord-a"]).await;
    let second = Coordinator::start(&prefix, &["--coordinator-id", "coord-b"]).await;
    let ingestors = [unique("ing"), unique("ing")];
    let mut senders = Vec::new();
    for (index, ingestor) in ingestors.iter().enumerate() {
        // Each ingestor reports to a different coordinator.
        let coordinator = if index == 0 { &first } else { &second };
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        let mut fleet = FleetServiceClient::new(coordinator.channel(None).await);
        tokio::spawn(async move {
            fleet
                .stream_ingestor_reports(tokio_stream::wrappers::ReceiverStream::new(receiver))
                .await
        });
        senders.push((sender, ingestor.clone()));
    }
    let keep_alive = tokio::spawn(async move {
        loop {
            for (sender, ingestor) in &senders {
                let report = IngestorReport {
                    ingestor_id: ingestor.clone(),
                    channels: Vec::new(),
                    accepts_assignments: true,
                };
                if sender.send(report).await.is_err() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });

    // Register through both coordinators at once, racing on the same ids.
    let ids: Vec<String> = (0..6).map(|_| unique("cam")).collect();
    let mut races = Vec::new();
    for coordinator in [&first, &second] {
        let mut client = ChannelServiceClient::new(coordinator.channel(None).await);
        let ids = ids.clone();
        races.push(tokio::spawn(async move {
            for id in ids {
                client.register_channel(register(&id, 64, 48)).await.expect("register");
            }
        }));
    }
    for race in races {
        race.await.expect("registrations");
    }

    let client = ChannelServiceClient::new(first.channel(None).await);
    wait_until("every channel to have an ingestor", Duration::from_secs(15), || {
        let mut client = client.clone();
        let ids = ids.clone();
        async move {
            for id in ids {
                match client.get_channel(GetChannelRequest { channel_id: id }).await {
                    Ok(channel) if !channel.get_ref().ingestor_id.is_empty() => {}
                    _ => return false,
                }
            }
            true
        }
    })
    .await;

    // Both coordinators name the same leader, and every assignment was written by it.
    let status_a = FleetServiceClient::new(first.channel(None).await)
        .get_fleet_status(GetFleetStatusRequest {})
        .await
        .expect("status")
        .into_inner();
    let status_b = FleetServiceClient::new(second.channel(None).await)
        .get_fleet_status(GetFleetStatusRequest {})
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status_a.leader_id, status_b.leader_id);
    assert!(["coord-a", "coord-b"].contains(&status_a.leader_id.as_str()));

    // Every channel record changed owner at most once: read etcd's history of each key.
    let endpoints = Infrastructure::required().etcd_endpoints;
    let mut etcd = etcd_client::Client::connect([endpoints], None).await.expect("etcd");
    for id in &ids {
        let key = format!("{prefix}channels/{id}");
        let current = etcd.get(key.as_str(), None).await.expect("get");
        let kv = current.kvs().first().expect("channel key");
        let (created, last) = (kv.create_revision(), kv.mod_revision());
        let mut owners = Vec::new();
        for revision in created..=last {
            let at = etcd
                .get(
                    key.as_str(),
                    Some(etcd_client::GetOptions::new().with_revision(revision)),
                )
                .await
                .expect("history");
            if let Some(kv) = at.kvs().first()
                && kv.mod_revision() == revision
            {
                let record: serde_json::Value = serde_json::from_slice(kv.value()).expect("json");
                let owner = record["ingestor_id"].as_str().unwrap_or_default().to_owned();
                if !owner.is_empty() && owners.last() != Some(&owner) {
                    owners.push(owner);
                }
                let assigned_by = record["assigned_by"].as_str().unwrap_or_default();
                assert!(
                    assigned_by.is_empty() || assigned_by.starts_with(&status_a.leader_id),
                    "{id} assigned by {assigned_by}, leader is {}",
                    status_a.leader_id
                );
            }
        }
        assert_eq!(owners.len(), 1, "{id} had owners {owners:?}");
    }
    keep_alive.abort();
    first.stop().await;
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unauthenticated_call_is_refused_and_writes_nothing() {
    let prefix = prefix();
    let token_file = framefleet_test_support::token_file("tok-123");
    let token_file = token_file.to_string_lossy();
    let coordinator = Coordinator::start(&prefix, &["--auth-token-file", &token_file]).await;
    let cam = unique("cam");
    let anonymous = coordinator.channel(None).await;
    let refused = ChannelServiceClient::new(anonymous.clone())
        .register_channel(register(&cam, 64, 48))
        .await
        .expect_err("no token");
    assert_eq!(refused.code(), Code::Unauthenticated);
    let wrong = ChannelServiceClient::new(coordinator.channel(Some("tok-999")).await)
        .register_channel(register(&cam, 64, 48))
        .await
        .expect_err("wrong token");
    assert_eq!(wrong.code(), Code::Unauthenticated);
    let channel_keys = etcd_keys(&format!("{prefix}channels/")).await;
    assert!(channel_keys.is_empty(), "refused calls wrote {channel_keys:?}");
    assert!(etcd_keys(&format!("{prefix}schemas/")).await.is_empty());

    // Reads need a credential too; the right token reads and writes.
    let unread = ChannelServiceClient::new(anonymous)
        .list_channels(ListChannelsRequest::default())
        .await
        .expect_err("a read without a token");
    assert_eq!(unread.code(), Code::Unauthenticated);
    let mut admin = ChannelServiceClient::new(coordinator.channel(Some("tok-123")).await);
    admin
        .list_channels(ListChannelsRequest::default())
        .await
        .expect("the token reads");
    admin
        .register_channel(register(&cam, 64, 48))
        .await
        .expect("authorised");
    assert_eq!(etcd_keys(&format!("{prefix}channels/")).await.len(), 1);
    coordinator.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watch_refuses_revisions_the_store_has_not_reached_and_resumes_exactly() {
    let coordinator = Coordinator::start(&prefix(), &[]).await;
    let channel = coordinator.channel(None).await;
    let mut client = AssignmentServiceClient::new(channel.clone());
    let mut watch = client
        .watch_assignments(WatchAssignmentsRequest::default())
        .await
        .expect("watch")
        .into_inner();
    let current = next_update(&mut watch).await.revision;
    drop(watch);

    // Other tests share this etcd, so "beyond" is far beyond, not current + 1.
    for after_revision in [i64::MAX, current + 1_000_000] {
        let status = client
            .watch_assignments(WatchAssignmentsRequest {
                ingestor_id: String::new(),
                after_revision,
            })
            .await
            .expect_err("a revision from the future");
        assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
        assert!(status.message().contains("after_revision"), "{}", status.message());
    }

    // Resuming after the revision last seen gets the very next change.
    let mut resumed = client
        .watch_assignments(WatchAssignmentsRequest {
            ingestor_id: String::new(),
            after_revision: current,
        })
        .await
        .expect("resume")
        .into_inner();
    let cam = unique("cam");
    ChannelServiceClient::new(channel)
        .register_channel(register(&cam, 64, 48))
        .await
        .expect("register");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let update = next_update(&mut resumed).await;
        assert!(!update.reset, "{update:?}");
        assert!(update.revision > current);
        if update.channels.iter().any(|c| c.channel_id == cam) {
            break;
        }
        assert!(Instant::now() < deadline, "the registration never arrived");
    }
    coordinator.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn channel_ids_that_make_unusable_or_colliding_topics_are_refused() {
    let coordinator = Coordinator::start(&prefix(), &[]).await;
    let mut channels = ChannelServiceClient::new(coordinator.channel(None).await);
    for bad in ["..", ".", ".cam", "cam.", "cam..1"] {
        let status = channels
            .register_channel(register(bad, 64, 48))
            .await
            .expect_err("unusable id");
        assert_eq!(status.code(), Code::InvalidArgument, "{bad}: {status:?}");
        assert!(status.message().contains("channel_id"), "{}", status.message());
    }
    let dotted = format!("{}.north", unique("site"));
    channels
        .register_channel(register(&dotted, 64, 48))
        .await
        .expect("register the first");
    let underscored = dotted.replace('.', "_");
    let status = channels
        .register_channel(register(&underscored, 64, 48))
        .await
        .expect_err("colliding topics");
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    assert!(
        status.message().contains(&dotted),
        "names the other channel: {}",
        status.message()
    );
    let listed = channels
        .list_channels(ListChannelsRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert!(
        !listed.channels.iter().any(|c| c.channel_id == underscored),
        "nothing written for the refused id"
    );
    // Registering the first again is still idempotent.
    channels
        .register_channel(register(&dotted, 64, 48))
        .await
        .expect("same registration again");
    coordinator.stop().await;
}

/// Topic names composed of two parts collide across channels whose ids do not:
/// `framefleet.fanout.<pipeline>.<channel>` for (`p_q`, `cam`) and (`p`, `q.cam`) are one topic
/// to Kafka. The second is refused before anything reaches etcd or Kafka.
#[tokio::test(flavor = "multi_thread")]
async fn a_fan_out_topic_composed_to_collide_with_another_channels_is_refused() {
    let prefix = prefix();
    let coordinator = Coordinator::start(&prefix, &[]).await;
    coordinator.create_pipelines(&["p_q", "p"]).await;
    let mut channels = ChannelServiceClient::new(coordinator.channel(None).await);
    let cam = unique("cam");
    let fan_out = |channel_id: &str, pipeline: &str| RegisterChannelRequest {
        topic_strategy: TopicStrategy::FanOut.into(),
        pipelines: vec![pipeline.to_owned()],
        ..register(channel_id, 64, 48)
    };
    let first = channels
        .register_channel(fan_out(&cam, "p_q"))
        .await
        .expect("the first channel")
        .into_inner()
        .channel
        .expect("channel");
    let second_id = format!("q.{cam}");
    let status = channels
        .register_channel(fan_out(&second_id, "p"))
        .await
        .expect_err("a colliding topic");
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    let message = status.message();
    assert!(
        message.contains(&first.topics[0]) && message.contains(&format!("channel `{cam}`")),
        "names the other channel and its topic: {message}"
    );
    let colliding_topic = format!("framefleet.fanout.p.{second_id}");
    assert!(message.contains(&colliding_topic), "names its own topic: {message}");
    assert!(
        !etcd_keys(&prefix).await.iter().any(|key| key.contains(&second_id)),
        "nothing written to etcd for the refused channel"
    );
    let topics = framefleet_test_support::topic_names(&Infrastructure::required().kafka_brokers).expect("topics");
    assert!(topics.contains(&first.topics[0]), "the first channel's topic exists");
    assert!(!topics.contains(&colliding_topic), "the refused topic was not created");
    // A channel id that makes no colliding name is still accepted beside them.
    channels
        .register_channel(fan_out(&format!("r.{cam}"), "p"))
        .await
        .expect("a channel whose topics collide with none");
    coordinator.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_sees_the_papers_metrics_per_topic() {
    let port = framefleet_common::startup::free_loopback_port().expect("a free port");
    let metrics_addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    let coordinator = Coordinator::start(&prefix(), &["--metrics-addr", &metrics_addr.to_string()]).await;
    let cam = unique("cam");
    let registered = ChannelServiceClient::new(coordinator.channel(None).await)
        .register_channel(register(&cam, 64, 48))
        .await
        .expect("register")
        .into_inner()
        .channel
        .expect("channel");
    let expected = [
        format!(
            "framefleet_topic_accumulate_frames{{topic=\"{}\",pipeline=\"\"}} 0",
            registered.topic
        ),
        format!(
            "framefleet_topic_lag_frames{{topic=\"{}\",pipeline=\"\"}} 0",
            registered.topic
        ),
        "framefleet_coordinator_is_leader 1".to_owned(),
        "framefleet_kafka_up 1".to_owned(),
    ];
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = framefleet_common::metrics::scrape(metrics_addr).await.expect("scrape");
        if expected.iter().all(|line| text.contains(line)) {
            break;
        }
        assert!(Instant::now() < deadline, "expected {expected:?} in\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    coordinator.stop().await;
}

/// Opens an ingestor's report stream and sends `first`; the returned sender sends more, and
/// dropping it closes the stream (the ingestor leaves).
fn ingestor_stream(channel: CoordinatorChannel, first: IngestorReport) -> tokio::sync::mpsc::Sender<IngestorReport> {
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    let mut fleet = FleetServiceClient::new(channel);
    tokio::spawn(async move {
        let _ = fleet
            .stream_ingestor_reports(tokio_stream::wrappers::ReceiverStream::new(receiver))
            .await;
    });
    sender.try_send(first).expect("first report");
    sender
}

/// A file read to its end is not handed to another ingestor when its own goes away (that
/// would capture the file again from the start); it waits, unassigned, until it is updated.
#[tokio::test(flavor = "multi_thread")]
async fn an_ended_file_is_not_replayed_by_another_ingestor() {
    let coordinator = Coordinator::start(&prefix(), &[]).await;
    let channel = coordinator.channel(None).await;
    let mut channels = ChannelServiceClient::new(channel.clone());
    let cam = unique("cam");
    channels
        .register_channel(register(&cam, 64, 48))
        .await
        .expect("register");
    let owner_of = |channels: &ChannelServiceClient<CoordinatorChannel>, cam: &str| {
        let (mut channels, cam) = (channels.clone(), cam.to_owned());
        async move {
            channels
                .get_channel(GetChannelRequest { channel_id: cam })
                .await
                .expect("get")
                .into_inner()
        }
    };
    let report = |ingestor: &str, ledgers: Vec<ChannelLedger>| IngestorReport {
        ingestor_id: ingestor.to_owned(),
        channels: ledgers,
        accepts_assignments: true,
    };

    let first = unique("ing-a");
    let first_reports = ingestor_stream(channel.clone(), report(&first, Vec::new()));
    wait_until(
        "the channel assigned to the first ingestor",
        Duration::from_secs(10),
        || async { owner_of(&channels, &cam).await.ingestor_id == first },
    )
    .await;
    // The second ingestor is live (it keeps reporting, so its lease holds) and accepts
    // assignments from here on.
    let second = unique("ing-b");
    let second_reports = ingestor_stream(channel.clone(), report(&second, Vec::new()));
    let keep_alive = tokio::spawn({
        let (sender, second) = (second_reports.clone(), second.clone());
        async move {
            while sender.send(report(&second, Vec::new())).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    });

    // The first reads its file to the end, and the coordinator keeps that ledger.
    let ended = ChannelLedger {
        channel_id: cam.clone(),
        frames_captured: 10,
        frames_acknowledged: 10,
        source_finished: true,
        source_state: "ended".to_owned(),
        ..ChannelLedger::default()
    };
    first_reports.send(report(&first, vec![ended])).await.expect("report");
    let fleet = FleetServiceClient::new(channel.clone());
    wait_until("the ended ledger stored", Duration::from_secs(10), || {
        let mut fleet = fleet.clone();
        let cam = cam.clone();
        async move {
            fleet
                .get_fleet_status(GetFleetStatusRequest {})
                .await
                .expect("status")
                .into_inner()
                .ledgers
                .iter()
                .any(|ledger| ledger.channel_id == cam && ledger.source_finished)
        }
    })
    .await;
    drop(first_reports);

    wait_until("the ended channel left unassigned", Duration::from_secs(10), || async {
        let record = owner_of(&channels, &cam).await;
        record.ingestor_id.is_empty() && record.ended_unix_ms > 0
    })
    .await;
    // No frame reached its topic, so nothing is left to commit: it is drained too.
    wait_until("the ended, empty channel drained", Duration::from_secs(10), || async {
        owner_of(&channels, &cam).await.drained_unix_ms > 0
    })
    .await;
    // Several reconcile passes later, still nobody captures it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        owner_of(&channels, &cam).await.ingestor_id,
        "",
        "an ended file is not replayed"
    );

    // A new source is worth capturing: the live ingestor gets it.
    channels
        .update_channel(UpdateChannelRequest {
            channel_id: cam.clone(),
            source_uri: Some("synthetic://64x48@10".to_owned()),
            ..UpdateChannelRequest::default()
        })
        .await
        .expect("update");
    wait_until(
        "the updated channel assigned again",
        Duration::from_secs(10),
        || async {
            let record = owner_of(&channels, &cam).await;
            record.ingestor_id == second && record.ended_unix_ms == 0 && record.drained_unix_ms == 0
        },
    )
    .await;
    keep_alive.abort();
    drop(second_reports);
    coordinator.stop().await;
}
