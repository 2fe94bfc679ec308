//! Pipelines as fleet resources, through real etcd, the real broker and real workers: a
//! channel names two registered pipelines, each served by its own workers in its own consumer
//! group with its own results, so a slow detector holds back no cheap analysis of the same
//! frames, and the channel's drain waits for the slowest pipeline; and a new pipeline version
//! published mid-stream takes over with every frame getting a result of one version or the
//! other. The detector is the model pushed to the fleet (`framefleet models push`): no worker
//! here is given a local copy; each fetches it from Kafka into an empty cache.

use framefleet_loadtest::{Fleet, written};
use framefleet_proto::v1::{
    ChannelState, DeregisterChannelRequest, DetectStage, FrameEncoding, GetChannelRequest, PipelineSpec, TopicMetrics,
};
use framefleet_proto::wire::FrameResult;
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// vtest.avi frames at 640×480 (the detector's reference fixtures), in stream order.
fn vtest_frames() -> Vec<Vec<u8>> {
    let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("../worker/tests/fixtures/detection");
    let mut names: Vec<_> = std::fs::read_dir(&directory)
        .expect("fixtures")
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("vtest-") && name.ends_with(".jpg"))
        })
        .collect();
    names.sort();
    names.iter().map(|path| std::fs::read(path).expect("fixture")).collect()
}

/// The model name the converted detector's manifest gives: what a pipeline's detect stage names.
fn model_name(model_dir: &Path) -> String {
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(model_dir.join("manifest.json")).expect("manifest")).expect("json");
    manifest["name"].as_str().expect("model name").to_owned()
}

async fn create_version(fleet: &Fleet, name: &str, spec: PipelineSpec) -> u32 {
    fleet
        .create_pipeline(name, spec)
        .await
        .expect("create a pipeline version")
        .version
}

fn detect(model: &str) -> Option<DetectStage> {
    Some(DetectStage {
        model: model.to_owned(),
        motion_gate: Some(false),
        ..DetectStage::default()
    })
}

async fn register(fleet: &Fleet, name: &str, pipelines: &[&str]) -> (String, String) {
    let channel = fleet
        .register_written_channel_for(name, "test://pipelines", (640, 480), FrameEncoding::Jpeg, pipelines)
        .await
        .expect("register");
    (channel.channel_id, channel.topic)
}

/// Writes `frames` as frames `first..` of `channel_id`, `gap` apart.
async fn produce(brokers: &str, topic: &str, channel_id: &str, frames: &[Vec<u8>], first: u64, gap: Duration) {
    let producer = written::plain_producer(brokers).expect("producer");
    for (index, payload) in frames.iter().enumerate() {
        let sequence = first + index as u64;
        let record = FutureRecord::to(topic)
            .key(channel_id)
            .payload(payload.as_slice())
            .headers(written::frame_record_headers(channel_id, sequence, payload));
        producer
            .send(record, Duration::from_secs(10))
            .await
            .expect("produce a frame");
        tokio::time::sleep(gap).await;
    }
}

async fn read_results(fleet: &Fleet, topic: &str, expected: usize, settle: Duration) -> Vec<FrameResult> {
    let brokers = fleet.infrastructure.kafka_brokers.clone();
    let topic = topic.to_owned();
    let records = tokio::task::spawn_blocking(move || {
        framefleet_loadtest::read_topic(&brokers, &topic, expected, Duration::from_secs(180), settle)
    })
    .await
    .expect("reader")
    .expect("read results");
    records
        .iter()
        .map(|record| serde_json::from_slice(record.payload().expect("payload")).expect("result JSON"))
        .collect()
}

/// The rows of the fleet status for `topic`, by pipeline.
async fn topic_rows(fleet: &Fleet, topic: &str) -> BTreeMap<String, TopicMetrics> {
    let status = fleet
        .fleet_client()
        .await
        .expect("connect")
        .get_fleet_status(framefleet_proto::v1::GetFleetStatusRequest::default())
        .await
        .expect("status")
        .into_inner();
    assert!(status.kafka_error.is_empty(), "{}", status.kafka_error);
    status
        .topics
        .into_iter()
        .filter(|row| row.topic == topic)
        .map(|row| (row.pipeline.clone(), row))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_pipeline_keeps_its_own_offsets_and_results_and_the_drain_waits_for_the_slowest() {
    let mut fleet = Fleet::start_with(
        "pipelines",
        framefleet_test_support::Infrastructure::required(),
        &["--drain-settle-secs", "1"],
    )
    .await
    .expect("start the coordinator");
    let model_dir = framefleet_test_support::detector_model_dir();
    let model = model_name(&model_dir);
    let pushed = fleet.push_model(&model_dir).await.expect("push the detector");
    let cheap_results = format!("results-cheap-{}", fleet.names.suffix);
    let people_results = format!("results-people-{}", fleet.names.suffix);
    create_version(
        &fleet,
        "cheap",
        PipelineSpec {
            analysis: true,
            results_topic: cheap_results.clone(),
            ..PipelineSpec::default()
        },
    )
    .await;
    create_version(
        &fleet,
        "people",
        PipelineSpec {
            analysis: false,
            detect: detect(&model),
            results_topic: people_results.clone(),
            ..PipelineSpec::default()
        },
    )
    .await;
    let (lobby, topic) = register(&fleet, "lobby", &["cheap", "people"]).await;

    // A worker for an unknown pipeline stops before it consumes anything, saying why.
    let unknown = fleet
        .worker_config("worker-unknown", &["--pipeline", "nope"])
        .expect("flags");
    let error = framefleet_worker::run(unknown, tokio_util::sync::CancellationToken::new())
        .await
        .expect_err("an unregistered pipeline");
    assert!(format!("{error:#}").contains("`nope` is not registered"), "{error:#}");

    // Only the cheap pipeline's worker runs: it finishes every frame while the detector's
    // pipeline has not started.
    fleet
        .spawn_worker("worker-cheap", &["--pipeline", "cheap"])
        .expect("cheap worker");
    let frames = vtest_frames();
    assert!(frames.len() >= 12, "fixtures");
    produce(
        &fleet.infrastructure.kafka_brokers,
        &topic,
        &lobby,
        &frames,
        0,
        Duration::ZERO,
    )
    .await;
    let cheap = read_results(&fleet, &cheap_results, frames.len(), Duration::from_secs(1)).await;
    assert_eq!(cheap.len(), frames.len(), "one cheap result per frame");
    for result in &cheap {
        assert_eq!(result.pipeline.as_deref(), Some("cheap"));
        assert_eq!(result.pipeline_version, Some(1));
        assert!(result.scores.is_some() && result.model.is_none(), "{result:?}");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let rows = loop {
        let rows = topic_rows(&fleet, &topic).await;
        if rows.get("cheap").is_some_and(|row| row.lag == 0) || Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(rows.len(), 2, "a row per pipeline: {rows:?}");
    assert_eq!(
        rows["cheap"].lag, 0,
        "the cheap pipeline committed every frame: {rows:?}"
    );
    assert_eq!(
        rows["people"].lag,
        frames.len() as u64,
        "the detector's pipeline has its own offsets, none committed: {rows:?}"
    );

    // Deregistered now, the channel drains only once the slowest pipeline has its frames.
    let mut channels = fleet.channel_client().await.expect("connect");
    channels
        .deregister_channel(DeregisterChannelRequest {
            channel_id: lobby.clone(),
            ..DeregisterChannelRequest::default()
        })
        .await
        .expect("deregister");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let waiting = channels
        .get_channel(GetChannelRequest {
            channel_id: lobby.clone(),
        })
        .await
        .expect("the channel is kept while a pipeline has frames left")
        .into_inner();
    assert_eq!(waiting.state, i32::from(ChannelState::Draining));

    fleet
        .spawn_worker("worker-people", &["--pipeline", "people"])
        .expect("people worker");
    let people = read_results(&fleet, &people_results, frames.len(), Duration::from_secs(1)).await;
    assert_eq!(people.len(), frames.len(), "one detector result per frame");
    for result in &people {
        assert_eq!(result.pipeline.as_deref(), Some("people"));
        assert_eq!(result.pipeline_version, Some(1));
        assert!(result.detector_ran && result.scores.is_none(), "{result:?}");
        let ran = result
            .model
            .as_ref()
            .map(|model| (model.name.as_str(), model.sha256.as_str()));
        assert_eq!(
            ran,
            Some((model.as_str(), pushed.sha256.as_str())),
            "the pushed weights ran"
        );
    }
    let cached = Path::new(&fleet.names.model_cache).join(framefleet_worker::fleet_models::cache_entry_name(&pushed));
    assert!(
        cached.join("manifest.json").is_file(),
        "the worker fetched the model into {}",
        cached.display()
    );
    assert!(
        people.iter().any(|result| !result.detections.is_empty()),
        "people walk through vtest.avi"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match channels
            .get_channel(GetChannelRequest {
                channel_id: lobby.clone(),
            })
            .await
        {
            Err(status) if status.code() == tonic::Code::NotFound => break,
            _ if Instant::now() > deadline => panic!("the channel was not deleted once both pipelines drained it"),
            _ => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
    fleet.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_published_mid_stream_takes_over_and_every_frame_gets_a_result() {
    let mut fleet = Fleet::start("pipeline-swap").await.expect("start the coordinator");
    let model_dir = framefleet_test_support::detector_model_dir();
    let model = model_name(&model_dir);
    let pushed = fleet.push_model(&model_dir).await.expect("push the detector");
    let results_topic = format!("results-swap-{}", fleet.names.suffix);
    let analysis_only = PipelineSpec {
        analysis: true,
        results_topic: results_topic.clone(),
        ..PipelineSpec::default()
    };
    assert_eq!(create_version(&fleet, "gate", analysis_only.clone()).await, 1);
    let (gate, topic) = register(&fleet, "gate", &["gate"]).await;
    // Version 1 has no detector: the worker fetches the model when version 2 names it.
    fleet
        .spawn_worker("worker-gate", &["--pipeline", "gate"])
        .expect("worker");

    let fixtures = vtest_frames();
    let frames: Vec<Vec<u8>> = fixtures.iter().cycle().take(90).cloned().collect();
    // The camera keeps writing (about 3 s of frames) while version 2, which adds the
    // detector, is published about a third of the way in.
    let producing = {
        let (brokers, topic, gate, frames) = (
            fleet.infrastructure.kafka_brokers.clone(),
            topic.clone(),
            gate.clone(),
            frames.clone(),
        );
        tokio::spawn(async move { produce(&brokers, &topic, &gate, &frames, 0, Duration::from_millis(30)).await })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let with_detector = PipelineSpec {
        detect: detect(&model),
        ..analysis_only.clone()
    };
    assert_eq!(create_version(&fleet, "gate", with_detector).await, 2);
    producing.await.expect("the camera");

    let results = read_results(&fleet, &results_topic, frames.len(), Duration::from_secs(2)).await;
    let mut by_sequence: BTreeMap<u64, Vec<&FrameResult>> = BTreeMap::new();
    for result in &results {
        by_sequence.entry(result.sequence).or_default().push(result);
    }
    let without = (0..frames.len() as u64)
        .filter(|sequence| !by_sequence.contains_key(sequence))
        .count();
    assert_eq!(without, 0, "every frame has a result");
    let mut per_version: BTreeMap<u32, usize> = BTreeMap::new();
    for result in &results {
        let version = result.pipeline_version.expect("a version");
        *per_version.entry(version).or_default() += 1;
        assert_eq!(result.pipeline.as_deref(), Some("gate"));
        match version {
            1 => assert!(result.model.is_none(), "version 1 has no detector: {result:?}"),
            2 => assert_eq!(
                result
                    .model
                    .as_ref()
                    .map(|model| (model.name.as_str(), model.sha256.as_str())),
                Some((model.as_str(), pushed.sha256.as_str()))
            ),
            other => panic!("no version {other}"),
        }
    }
    assert!(
        per_version.get(&1).is_some_and(|count| *count > 0) && per_version.get(&2).is_some_and(|count| *count > 0),
        "both versions made results: {per_version:?}"
    );
    // The takeover is at a batch boundary, in stream order: no frame after a version-2 result
    // went back to version 1.
    let first_v2 = results
        .iter()
        .filter(|result| result.pipeline_version == Some(2))
        .map(|result| result.sequence)
        .min()
        .expect("a version-2 result");
    assert!(
        results
            .iter()
            .all(|result| result.pipeline_version == Some(2) || result.sequence < first_v2),
        "version 1 stopped where version 2 began (frame {first_v2})"
    );
    let duplicates = results.len() - by_sequence.len();

    // `framefleet audit --pipeline` reads the same topics back and counts per version.
    let coordinator = fleet.coordinator_address.clone();
    let prefix = fleet.names.channel_id("");
    let (code, output) = tokio::task::spawn_blocking(move || {
        framefleet_test_support::processes::cli(
            &coordinator,
            &[
                "--json",
                "audit",
                "--pipeline",
                "gate",
                "--frame-topics",
                "--channel-prefix",
                &prefix,
            ],
            &[],
        )
    })
    .await
    .expect("audit");
    assert_eq!(code, 0, "every frame of the pipeline has an outcome: {output}");
    let report: serde_json::Value = serde_json::from_str(output.trim()).expect("audit JSON");
    // A plain audit is of the workers serving no pipeline: it leaves this channel out (its
    // outcomes are in the pipeline's topic) and says so, rather than counting it missing.
    let coordinator = fleet.coordinator_address.clone();
    let prefix = fleet.names.channel_id("");
    let (plain_code, plain_output) = tokio::task::spawn_blocking(move || {
        framefleet_test_support::processes::cli(&coordinator, &["audit", "--channel-prefix", &prefix], &[])
    })
    .await
    .expect("plain audit");
    assert_eq!(plain_code, 0, "{plain_output}");
    assert!(plain_output.contains("audit them with --pipeline"), "{plain_output}");
    assert_eq!(report["frames_missing"], 0, "{report}");
    let audited: BTreeMap<String, (u64, u64)> = report["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|row| {
            (
                row["version"].as_str().expect("label").to_owned(),
                (
                    row["results"].as_u64().expect("results"),
                    row["duplicates"].as_u64().expect("duplicates"),
                ),
            )
        })
        .collect();
    assert_eq!(
        audited.get("gate@1").map(|row| row.0),
        per_version.get(&1).map(|count| *count as u64),
        "{report}"
    );
    assert_eq!(
        audited.get("gate@2").map(|row| row.0),
        per_version.get(&2).map(|count| *count as u64),
        "{report}"
    );
    assert_eq!(
        audited.values().map(|row| row.1).sum::<u64>(),
        duplicates as u64,
        "{report}"
    );
    // A model nobody pushed is refused when the version is created.
    let unregistered = fleet
        .create_pipeline(
            "gate",
            PipelineSpec {
                detect: detect("no-such-model"),
                ..analysis_only.clone()
            },
        )
        .await
        .expect_err("an unregistered model");
    let status = unregistered.downcast_ref::<tonic::Status>().expect("a gRPC status");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("`no-such-model`"), "{status:?}");
    // Version 3 names a registered model whose weights do not load: the worker keeps running
    // version 2 and says why in its report, which `status` shows.
    framefleet_test_support::push_unloadable_model(&fleet.coordinator_address, "unloadable", None)
        .await
        .expect("push");
    let unrunnable = PipelineSpec {
        detect: detect("unloadable"),
        ..analysis_only
    };
    assert_eq!(create_version(&fleet, "gate", unrunnable).await, 3);
    let status = fleet
        .wait_for_status(Duration::from_secs(30), |status| {
            status
                .workers
                .iter()
                .filter_map(|worker| worker.report.as_ref())
                .any(|report| report.worker_id == "worker-gate" && !report.pipeline_error.is_empty())
        })
        .await
        .expect("the worker reports why it cannot run version 3");
    let report = status
        .workers
        .iter()
        .filter_map(|worker| worker.report.as_ref())
        .find(|report| report.worker_id == "worker-gate")
        .expect("the worker's report");
    assert_eq!((report.pipeline.as_str(), report.pipeline_version), ("gate", 2));
    assert!(
        report.pipeline_error.contains("`unloadable`") && report.pipeline_error.contains("does not load"),
        "{}",
        report.pipeline_error
    );
    produce(
        &fleet.infrastructure.kafka_brokers,
        &topic,
        &gate,
        &fixtures[..2],
        frames.len() as u64,
        Duration::ZERO,
    )
    .await;
    let after = read_results(&fleet, &results_topic, results.len() + 2, Duration::ZERO).await;
    let later: Vec<&FrameResult> = after
        .iter()
        .filter(|result| result.sequence >= frames.len() as u64)
        .collect();
    assert!(
        !later.is_empty() && later.iter().all(|result| result.pipeline_version == Some(2)),
        "frames after version 3 still get version 2's results: {later:?}"
    );
    eprintln!(
        "swap: {} frames, {} results, version 1: {}, version 2: {}, duplicates: {duplicates}, version 2 from frame {first_v2}",
        frames.len(),
        results.len(),
        per_version.get(&1).copied().unwrap_or(0),
        per_version.get(&2).copied().unwrap_or(0)
    );
    fleet.stop().await.expect("stop");
}

/// A model pushed to the fleet runs on a worker that has no copy of it, and only as the bytes
/// registered: a cache entry damaged on the worker's disk is fetched again from Kafka rather
/// than run, and the same weights pushed again register nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_model_runs_as_registered_and_a_damaged_cache_is_fetched_again() {
    let mut fleet = Fleet::start("models").await.expect("start the coordinator");
    let model_dir = framefleet_test_support::detector_model_dir();
    let model = model_name(&model_dir);
    let pushed = fleet.push_model(&model_dir).await.expect("push the detector");
    assert_eq!(pushed.version, 1);
    let again = fleet.push_model(&model_dir).await.expect("push it again");
    assert_eq!(
        (again.version, again.sha256.as_str()),
        (1, pushed.sha256.as_str()),
        "nothing new"
    );
    let results_topic = format!("results-models-{}", fleet.names.suffix);
    let spec = PipelineSpec {
        analysis: false,
        detect: detect(&model),
        results_topic: results_topic.clone(),
        ..PipelineSpec::default()
    };
    let created = fleet.create_pipeline("people", spec).await.expect("pipeline");
    let pinned = created.spec.and_then(|spec| spec.detect).expect("detect stage");
    assert_eq!(
        (pinned.model_version, pinned.model_sha256.as_str()),
        (1, pushed.sha256.as_str())
    );
    let (channel, topic) = register(&fleet, "door", &["people"]).await;
    let frames = vtest_frames();
    let brokers = fleet.infrastructure.kafka_brokers.clone();
    produce(&brokers, &topic, &channel, &frames[..4], 0, Duration::ZERO).await;
    fleet
        .spawn_worker("worker-first", &["--pipeline", "people"])
        .expect("worker");
    let first = read_results(&fleet, &results_topic, 4, Duration::ZERO).await;
    fleet.stop_worker("worker-first").await.expect("stop the first worker");

    // The cached weights are damaged on disk (same size, other bytes).
    let weights = Path::new(&fleet.names.model_cache)
        .join(framefleet_worker::fleet_models::cache_entry_name(&pushed))
        .join("model.safetensors");
    let original = std::fs::read(&weights).expect("the worker cached the weights");
    std::fs::write(&weights, vec![0u8; original.len()]).expect("damage the cache");
    produce(&brokers, &topic, &channel, &frames[4..8], 4, Duration::ZERO).await;
    fleet
        .spawn_worker("worker-second", &["--pipeline", "people"])
        .expect("worker");
    let all = read_results(&fleet, &results_topic, 8, Duration::from_secs(1)).await;
    assert!(all.len() >= 8 && first.len() >= 4, "{} results", all.len());
    let sequences: std::collections::BTreeSet<u64> = all.iter().map(|result| result.sequence).collect();
    assert_eq!(
        sequences,
        (0..8).collect(),
        "the second worker, on the fetched-again model, processed frames 4–7"
    );
    for result in &all {
        let ran = result
            .model
            .as_ref()
            .map(|model| (model.name.as_str(), model.sha256.as_str()));
        assert_eq!(ran, Some((model.as_str(), pushed.sha256.as_str())), "{result:?}");
    }
    assert!(
        std::fs::read(&weights).expect("cached again") == original,
        "the damaged entry was replaced by the registered bytes"
    );
    fleet.stop().await.expect("stop");
}
