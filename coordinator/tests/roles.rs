//! Roles against a real coordinator on real etcd and the real broker: each role's forbidden
//! calls are refused `PERMISSION_DENIED` naming the role, the credential and the call, and write
//! nothing; an ingestor's credential changes only its own channels and reports; reads need a
//! credential; a rotated token is accepted beside the old one, then alone; a client certificate
//! named in the credentials file authenticates as its role.

use framefleet_proto::client::{ClientOptions, CoordinatorChannel, Token, connect_coordinator};
use framefleet_proto::v1::assignment_service_client::AssignmentServiceClient;
use framefleet_proto::v1::channel_service_client::ChannelServiceClient;
use framefleet_proto::v1::fleet_service_client::FleetServiceClient;
use framefleet_proto::v1::pipeline_service_client::PipelineServiceClient;
use framefleet_proto::v1::schema_service_client::SchemaServiceClient;
use framefleet_proto::v1::{
    AddSchemaVersionRequest, ChannelLedger, CreatePipelineVersionRequest, DeregisterChannelRequest, FrameEncoding,
    FrameSchema, GetChannelRequest, GetFleetStatusRequest, IngestorReport, ListChannelsRequest, ListPipelinesRequest,
    MoveChannelRequest, PipelineSpec, PixelFormat, RegisterChannelRequest, TopicStrategy, UpdateChannelRequest,
    WatchAssignmentsRequest, WorkerReport,
};
use framefleet_test_support::tls::{make_certificates, run};
use framefleet_test_support::{FleetNames, Infrastructure, TestCoordinator};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tonic::Code;

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// A credentials-file entry for `role` with these tokens.
fn credential(name: &str, role: &str, ingestor_id: Option<&str>, tokens: &[&str]) -> String {
    let hashes: Vec<String> = tokens
        .iter()
        .map(|token| format!("\"{}\"", sha256_hex(token)))
        .collect();
    let ingestor = ingestor_id
        .map(|id| format!("ingestor_id = \"{id}\"\n"))
        .unwrap_or_default();
    format!(
        "[[credentials]]\nname = \"{name}\"\nrole = \"{role}\"\n{ingestor}token_sha256 = [{}]\n",
        hashes.join(", ")
    )
}

struct Fleet {
    names: FleetNames,
    coordinator: TestCoordinator,
    dir: PathBuf,
}

impl Fleet {
    async fn start(label: &str, credentials: &str, extra: &[String]) -> Self {
        let names = FleetNames::unique(label);
        let dir = std::env::temp_dir().join(format!("framefleet-{}", names.suffix));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("credentials.toml"), credentials).expect("credentials file");
        let mut args = names.coordinator_args();
        args.extend([
            "--credentials-file".to_owned(),
            dir.join("credentials.toml").to_string_lossy().into_owned(),
        ]);
        args.extend_from_slice(extra);
        let coordinator = TestCoordinator::start(&Infrastructure::required(), &args)
            .await
            .expect("start coordinator");
        Self {
            names,
            coordinator,
            dir,
        }
    }

    async fn channel(&self, token: Option<&str>) -> CoordinatorChannel {
        let options = ClientOptions {
            token: token.map(Token::new),
            ..ClientOptions::default()
        };
        connect_coordinator(&self.coordinator.address, Duration::from_secs(5), &options)
            .await
            .expect("connect")
    }

    async fn stop(self) {
        self.coordinator.stop().await.expect("clean stop");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn schema(width: u32) -> FrameSchema {
    FrameSchema {
        version: 0,
        width,
        height: 48,
        channels: 3,
        pixel_format: PixelFormat::Rgb24.into(),
        encoding: FrameEncoding::Jpeg.into(),
        fps: 10.0,
    }
}

fn register(channel_id: &str, ingestor_id: &str) -> RegisterChannelRequest {
    RegisterChannelRequest {
        channel_id: channel_id.to_owned(),
        source_uri: "synthetic://".to_owned(),
        schema: Some(schema(64)),
        ingestor_id: ingestor_id.to_owned(),
        ..RegisterChannelRequest::default()
    }
}

/// One call of the API, made with a credential.
#[derive(Debug, Clone)]
enum Call {
    Register(String, String),
    Update(String),
    Deregister(String),
    Move(String),
    AddSchema(String),
    CreatePipeline,
    PushModel,
    ReportIngestor(String),
    StreamIngestorReports(String),
    /// A report as the ingestor that carries the ledger of the channel.
    ReportLedger(String, String),
    StreamLedger(String, String),
    ReportWorker,
    ListChannels,
    GetChannel(String),
    Status,
    ListPipelines,
    Watch,
}

impl Call {
    /// The RPC's name as refusals give it.
    fn rpc(&self) -> &'static str {
        match self {
            Self::Register(..) => "ChannelService/RegisterChannel",
            Self::Update(_) => "ChannelService/UpdateChannel",
            Self::Deregister(_) => "ChannelService/DeregisterChannel",
            Self::Move(_) => "ChannelService/MoveChannel",
            Self::AddSchema(_) => "SchemaService/AddSchemaVersion",
            Self::CreatePipeline => "PipelineService/CreatePipelineVersion",
            Self::PushModel => "ModelService/PushModel",
            Self::ReportIngestor(_) | Self::ReportLedger(..) => "FleetService/ReportIngestor",
            Self::StreamIngestorReports(_) | Self::StreamLedger(..) => "FleetService/StreamIngestorReports",
            Self::ReportWorker => "FleetService/ReportWorker",
            Self::ListChannels => "ChannelService/ListChannels",
            Self::GetChannel(_) => "ChannelService/GetChannel",
            Self::Status => "FleetService/GetFleetStatus",
            Self::ListPipelines => "PipelineService/ListPipelines",
            Self::Watch => "AssignmentService/WatchAssignments",
        }
    }

    async fn make(&self, channel: CoordinatorChannel) -> Result<(), tonic::Status> {
        let mut channels = ChannelServiceClient::new(channel.clone());
        let mut fleet = FleetServiceClient::new(channel.clone());
        match self {
            Self::Register(id, ingestor) => channels.register_channel(register(id, ingestor)).await.map(drop),
            Self::Update(id) => channels
                .update_channel(UpdateChannelRequest {
                    channel_id: id.clone(),
                    declared_bytes_per_second: Some(1_000),
                    ..UpdateChannelRequest::default()
                })
                .await
                .map(drop),
            Self::Deregister(id) => channels
                .deregister_channel(DeregisterChannelRequest {
                    channel_id: id.clone(),
                    ..DeregisterChannelRequest::default()
                })
                .await
                .map(drop),
            Self::Move(id) => channels
                .move_channel(MoveChannelRequest {
                    channel_id: id.clone(),
                    topic_strategy: TopicStrategy::SharedPool.into(),
                    ..MoveChannelRequest::default()
                })
                .await
                .map(drop),
            Self::AddSchema(id) => SchemaServiceClient::new(channel)
                .add_schema_version(AddSchemaVersionRequest {
                    channel_id: id.clone(),
                    schema: Some(FrameSchema { fps: 5.0, ..schema(64) }),
                    ..AddSchemaVersionRequest::default()
                })
                .await
                .map(drop),
            Self::CreatePipeline => PipelineServiceClient::new(channel)
                .create_pipeline_version(CreatePipelineVersionRequest {
                    name: "people".into(),
                    spec: Some(PipelineSpec {
                        analysis: true,
                        ..PipelineSpec::default()
                    }),
                    ..CreatePipelineVersionRequest::default()
                })
                .await
                .map(drop),
            Self::PushModel => {
                let upload = framefleet_common::model_upload::ModelUpload {
                    name: "roles-model".into(),
                    manifest_json: "{}".into(),
                    weights: b"weights".to_vec(),
                };
                let mut models = framefleet_proto::v1::model_service_client::ModelServiceClient::new(channel);
                framefleet_common::model_upload::push(&mut models, &upload, "roles-model", "")
                    .await
                    .map(drop)
            }
            Self::ReportIngestor(id) => fleet.report_ingestor(ingestor_report(id)).await.map(drop),
            Self::ReportLedger(id, channel) => fleet.report_ingestor(ledger_report(id, channel)).await.map(drop),
            Self::StreamIngestorReports(_) | Self::StreamLedger(..) => {
                let report = match self {
                    Self::StreamLedger(id, channel) => ledger_report(id, channel),
                    Self::StreamIngestorReports(id) => ingestor_report(id),
                    _ => unreachable!("a stream of reports"),
                };
                // The refusal comes with the first report; an accepted stream stays open.
                let reports = futures::stream::iter([report]).chain(futures::stream::pending());
                match tokio::time::timeout(Duration::from_secs(3), fleet.stream_ingestor_reports(reports)).await {
                    Ok(answer) => answer.map(drop),
                    Err(_still_open) => Ok(()),
                }
            }
            Self::ReportWorker => fleet
                .report_worker(WorkerReport {
                    worker_id: "worker-roles".into(),
                    ..WorkerReport::default()
                })
                .await
                .map(drop),
            Self::ListChannels => channels.list_channels(ListChannelsRequest::default()).await.map(drop),
            Self::GetChannel(id) => channels
                .get_channel(GetChannelRequest { channel_id: id.clone() })
                .await
                .map(drop),
            Self::Status => fleet.get_fleet_status(GetFleetStatusRequest::default()).await.map(drop),
            Self::ListPipelines => PipelineServiceClient::new(channel)
                .list_pipelines(ListPipelinesRequest::default())
                .await
                .map(drop),
            Self::Watch => {
                let mut updates = AssignmentServiceClient::new(channel)
                    .watch_assignments(WatchAssignmentsRequest::default())
                    .await?
                    .into_inner();
                updates.message().await.map(drop)
            }
        }
    }
}

use futures::StreamExt;

fn ingestor_report(id: &str) -> IngestorReport {
    IngestorReport {
        ingestor_id: id.to_owned(),
        ..IngestorReport::default()
    }
}

fn ledger_report(id: &str, channel_id: &str) -> IngestorReport {
    IngestorReport {
        ingestor_id: id.to_owned(),
        channels: vec![ChannelLedger {
            channel_id: channel_id.to_owned(),
            ..ChannelLedger::default()
        }],
        ..IngestorReport::default()
    }
}

/// Requires `call` to be refused PERMISSION_DENIED with a message naming `role`, `credential`,
/// the call and `why`.
async fn assert_denied(fleet: &Fleet, token: &str, call: &Call, role: &str, why: &str) {
    let status = call
        .make(fleet.channel(Some(token)).await)
        .await
        .expect_err(&format!("{role} must not {call:?}"));
    assert_eq!(status.code(), Code::PermissionDenied, "{call:?}: {}", status.message());
    let expected = format!("role {role} (credential `{token}`) may not call {}: {why}", call.rpc());
    assert!(
        status.message().starts_with(&expected),
        "{call:?}: `{}` should start with `{expected}`",
        status.message()
    );
}

async fn channel_revision(fleet: &Fleet, id: &str) -> i64 {
    ChannelServiceClient::new(fleet.channel(Some("admin")).await)
        .get_channel(GetChannelRequest {
            channel_id: id.to_owned(),
        })
        .await
        .expect("the admin reads")
        .into_inner()
        .revision
}

#[tokio::test(flavor = "multi_thread")]
async fn each_role_is_refused_what_it_may_not_call_and_an_ingestor_touches_only_its_own() {
    // Each credential's token is its name, so messages can be checked against it.
    let credentials = [
        credential("admin", "admin", None, &["admin"]),
        credential("host-a", "ingestor", Some("ingestor-a"), &["host-a"]),
        credential("host-b", "ingestor", Some("ingestor-b"), &["host-b"]),
        credential("workers", "worker", None, &["workers"]),
        credential("grafana", "observer", None, &["grafana"]),
    ]
    .concat();
    let fleet = Fleet::start("roles", &credentials, &[]).await;
    let cam_a = fleet.names.channel_id("cam-a");
    let cam_b = fleet.names.channel_id("cam-b");
    let admins = fleet.names.channel_id("admins");

    // What each role may do.
    Call::Register(admins.clone(), String::new())
        .make(fleet.channel(Some("admin")).await)
        .await
        .expect("admin registers");
    Call::Register(cam_a.clone(), "ingestor-a".into())
        .make(fleet.channel(Some("host-a")).await)
        .await
        .expect("its own");
    Call::Register(cam_a.clone(), "ingestor-a".into())
        .make(fleet.channel(Some("host-a")).await)
        .await
        .expect("again");
    Call::Register(cam_b.clone(), "ingestor-b".into())
        .make(fleet.channel(Some("host-b")).await)
        .await
        .expect("its own");
    Call::Update(cam_b.clone())
        .make(fleet.channel(Some("host-b")).await)
        .await
        .expect("updates its own");
    Call::ReportIngestor("ingestor-a".into())
        .make(fleet.channel(Some("host-a")).await)
        .await
        .expect("reports as itself");
    // (One stream per ingestor at a time: this one is its stream.)
    Call::StreamLedger("ingestor-a".into(), cam_a.clone())
        .make(fleet.channel(Some("host-a")).await)
        .await
        .expect("streams as itself, with its channel's ledger");
    for own in [
        Call::ReportLedger("ingestor-a".into(), cam_a.clone()),
        // A channel that does not exist (any more): its final counts still come.
        Call::ReportLedger("ingestor-a".into(), format!("{cam_a}-gone")),
    ] {
        own.make(fleet.channel(Some("host-a")).await)
            .await
            .unwrap_or_else(|status| panic!("{own:?}: {status:?}"));
    }
    Call::ReportWorker
        .make(fleet.channel(Some("workers")).await)
        .await
        .expect("a worker reports");
    for token in ["admin", "host-a", "workers", "grafana"] {
        for read in [
            Call::ListChannels,
            Call::GetChannel(cam_a.clone()),
            Call::Status,
            Call::ListPipelines,
            Call::Watch,
        ] {
            read.make(fleet.channel(Some(token)).await)
                .await
                .unwrap_or_else(|status| panic!("{token} {read:?}: {status:?}"));
        }
    }
    let revision_a = channel_revision(&fleet, &cam_a).await;
    let revision_admins = channel_revision(&fleet, &admins).await;

    // An ingestor's credential and another ingestor's channels and reports.
    let acts_for_b = "and this credential acts for ingestor `ingestor-b`";
    for (call, what) in [
        (
            Call::Update(cam_a.clone()),
            format!("channel `{cam_a}` is ingestor `ingestor-a`'s, {acts_for_b}"),
        ),
        (
            Call::Deregister(cam_a.clone()),
            format!("channel `{cam_a}` is ingestor `ingestor-a`'s, {acts_for_b}"),
        ),
        (
            Call::Register(cam_a.clone(), "ingestor-b".into()),
            format!("channel `{cam_a}` is ingestor `ingestor-a`'s, {acts_for_b}"),
        ),
        (
            Call::Register(cam_a.clone(), "ingestor-a".into()),
            format!("the claim on channel `{cam_a}` is ingestor `ingestor-a`'s, {acts_for_b}"),
        ),
        (
            Call::Update(admins.clone()),
            format!("channel `{admins}` is no ingestor's, {acts_for_b}"),
        ),
        (
            Call::Register(admins.clone(), "ingestor-b".into()),
            format!("channel `{admins}` is no ingestor's, {acts_for_b}"),
        ),
        (
            Call::ReportIngestor("ingestor-a".into()),
            format!("the report of `ingestor-a` is ingestor `ingestor-a`'s, {acts_for_b}"),
        ),
        (
            Call::StreamIngestorReports("ingestor-a".into()),
            format!("the report of `ingestor-a` is ingestor `ingestor-a`'s, {acts_for_b}"),
        ),
        (
            Call::ReportLedger("ingestor-b".into(), cam_a.clone()),
            format!("the ledger of channel `{cam_a}` is ingestor `ingestor-a`'s, {acts_for_b}"),
        ),
        (
            Call::StreamLedger("ingestor-b".into(), cam_a.clone()),
            format!("the ledger of channel `{cam_a}` is ingestor `ingestor-a`'s, {acts_for_b}"),
        ),
        (
            Call::ReportLedger("ingestor-b".into(), admins.clone()),
            format!("the ledger of channel `{admins}` is no ingestor's, {acts_for_b}"),
        ),
    ] {
        assert_denied(&fleet, "host-b", &call, "ingestor", &what).await;
    }

    // Calls outside a role.
    let admin_only = "it needs the admin role";
    for call in [
        Call::Move(cam_b.clone()),
        Call::AddSchema(cam_b.clone()),
        Call::CreatePipeline,
        Call::PushModel,
    ] {
        assert_denied(&fleet, "host-b", &call, "ingestor", admin_only).await;
        assert_denied(&fleet, "workers", &call, "worker", admin_only).await;
        assert_denied(&fleet, "grafana", &call, "observer", admin_only).await;
    }
    assert_denied(
        &fleet,
        "host-b",
        &Call::ReportWorker,
        "ingestor",
        "it needs the admin or worker role",
    )
    .await;
    for call in [
        Call::Register(cam_b.clone(), "ingestor-b".into()),
        Call::Update(cam_b.clone()),
        Call::Deregister(cam_b.clone()),
    ] {
        let why = "it needs the admin role, or the ingestor role for the ingestor's own channels";
        assert_denied(&fleet, "workers", &call, "worker", why).await;
        assert_denied(&fleet, "grafana", &call, "observer", why).await;
    }
    for call in [
        Call::ReportIngestor("ingestor-b".into()),
        Call::StreamIngestorReports("ingestor-b".into()),
    ] {
        let why = "it needs the admin role, or the ingestor role reporting as itself";
        assert_denied(&fleet, "workers", &call, "worker", why).await;
        assert_denied(&fleet, "grafana", &call, "observer", why).await;
    }
    assert_denied(
        &fleet,
        "grafana",
        &Call::ReportWorker,
        "observer",
        "it needs the admin or worker role",
    )
    .await;

    // The refused calls wrote nothing; without a credential even reads are refused.
    assert_eq!(channel_revision(&fleet, &cam_a).await, revision_a);
    assert_eq!(channel_revision(&fleet, &admins).await, revision_admins);
    let owner = ChannelServiceClient::new(fleet.channel(Some("grafana")).await)
        .get_channel(GetChannelRequest {
            channel_id: cam_a.clone(),
        })
        .await
        .expect("read")
        .into_inner()
        .owner;
    assert_eq!(owner, "ingestor-a");
    for (token, message) in [
        (None, "this call needs a credential"),
        (Some("nobody"), "the bearer token is not valid"),
    ] {
        let status = Call::ListChannels
            .make(fleet.channel(token).await)
            .await
            .expect_err("no credential");
        assert_eq!(status.code(), Code::Unauthenticated);
        assert!(status.message().starts_with(message), "{}", status.message());
    }
    // The admin may do what the ingestors may not.
    for call in [
        Call::Update(cam_a.clone()),
        Call::AddSchema(cam_a.clone()),
        Call::Move(cam_a.clone()),
        Call::Deregister(cam_a.clone()),
    ] {
        call.make(fleet.channel(Some("admin")).await)
            .await
            .unwrap_or_else(|status| panic!("admin {call:?}: {status:?}"));
    }
    fleet.stop().await;
}

/// Waits until `token` is accepted (or refused, `accepted == false`) for a read.
async fn wait_for_token(fleet: &Fleet, token: &str, accepted: bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let answer = Call::ListChannels.make(fleet.channel(Some(token)).await).await;
        match (&answer, accepted) {
            (Ok(()), true) => return,
            (Err(status), false) if status.code() == Code::Unauthenticated => return,
            _ => {}
        }
        assert!(Instant::now() < deadline, "{token}: still {answer:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_token_is_accepted_beside_the_old_one_then_alone() {
    let fleet = Fleet::start("rotation", &credential("host-a", "ingestor", None, &["old-token"]), &[]).await;
    let file = fleet.dir.join("credentials.toml");
    wait_for_token(&fleet, "old-token", true).await;

    // During the change both are accepted, as the same credential.
    std::fs::write(
        &file,
        credential("host-a", "ingestor", None, &["old-token", "new-token"]),
    )
    .expect("rotate");
    wait_for_token(&fleet, "new-token", true).await;
    Call::ListChannels
        .make(fleet.channel(Some("old-token")).await)
        .await
        .expect("the old token still works");
    let cam = fleet.names.channel_id("cam");
    Call::Register(cam.clone(), "host-a".into())
        .make(fleet.channel(Some("new-token")).await)
        .await
        .expect("registers");
    Call::Update(cam.clone())
        .make(fleet.channel(Some("old-token")).await)
        .await
        .expect("the same ingestor's channel");

    // A file that became invalid is not applied: the credentials in force stay.
    std::fs::write(&file, "[[credentials]]\nname = \"host-a\"\nrole = \"superuser\"\n").expect("break");
    tokio::time::sleep(framefleet_coordinator::grpc::auth::credentials::RELOAD_EVERY * 3).await;
    Call::ListChannels
        .make(fleet.channel(Some("new-token")).await)
        .await
        .expect("kept");

    // Then the old one is refused.
    std::fs::write(&file, credential("host-a", "ingestor", None, &["new-token"])).expect("retire the old token");
    wait_for_token(&fleet, "old-token", false).await;
    Call::Update(cam)
        .make(fleet.channel(Some("new-token")).await)
        .await
        .expect("the new token alone");
    fleet.stop().await;
}

/// The SHA-256 fingerprint `openssl` gives the certificate in `path`.
fn fingerprint(dir: &Path, file: &str) -> String {
    run(
        "openssl",
        &[
            "x509",
            "-in",
            file,
            "-noout",
            "-fingerprint",
            "-sha256",
            "-out",
            "fingerprint.txt",
        ],
        dir,
    );
    let text = std::fs::read_to_string(dir.join("fingerprint.txt")).expect("fingerprint");
    text.trim().rsplit('=').next().expect("value").to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_certificate_in_the_credentials_file_authenticates_as_its_role() {
    let dir = std::env::temp_dir().join(format!("framefleet-mtls-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    make_certificates(&dir, &[("grafana", "grafana"), ("stranger", "stranger")]);
    let credentials = format!(
        "[[credentials]]\nname = \"grafana\"\nrole = \"observer\"\ncert_sha256 = \"{}\"\n{}",
        fingerprint(&dir, "grafana.pem"),
        credential("admin", "admin", None, &["admin"])
    );
    let path = |file: &str| dir.join(file).to_string_lossy().into_owned();
    let tls = [
        "--tls-cert",
        &path("server.pem"),
        "--tls-key",
        &path("server.key"),
        "--tls-client-ca",
        &path("ca.pem"),
    ]
    .map(str::to_owned);
    let fleet = Fleet::start("mtls", &credentials, &tls).await;
    let address = fleet.coordinator.address.replace("http://", "https://");
    let connect = |identity: Option<&str>, token: Option<&str>| {
        let options = ClientOptions {
            token: token.map(Token::new),
            tls_ca: Some(dir.join("ca.pem")),
            tls_identity: identity.map(|name| (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")))),
        };
        let address = address.clone();
        async move {
            connect_coordinator(&address, Duration::from_secs(5), &options)
                .await
                .expect("connect")
        }
    };

    Call::ListChannels
        .make(connect(Some("grafana"), None).await)
        .await
        .expect("the observer's certificate reads");
    let refused = Call::Register(fleet.names.channel_id("cam"), String::new())
        .make(connect(Some("grafana"), None).await)
        .await
        .expect_err("an observer does not register");
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(
        refused.message().starts_with("role observer (credential `grafana`)"),
        "{}",
        refused.message()
    );

    let stranger = Call::ListChannels
        .make(connect(Some("stranger"), None).await)
        .await
        .expect_err("unknown certificate");
    assert_eq!(stranger.code(), Code::Unauthenticated);
    assert!(
        stranger
            .message()
            .contains("is not in the coordinator's credentials file"),
        "{}",
        stranger.message()
    );
    let none = Call::ListChannels
        .make(connect(None, None).await)
        .await
        .expect_err("no certificate, no token");
    assert_eq!(none.code(), Code::Unauthenticated);
    // A token still works over TLS, and takes precedence over a certificate.
    Call::Register(fleet.names.channel_id("cam"), String::new())
        .make(connect(Some("grafana"), Some("admin")).await)
        .await
        .expect("the admin's token");
    fleet.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
