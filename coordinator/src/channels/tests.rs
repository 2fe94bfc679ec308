use super::*;
use crate::store::MemoryStore;
use framefleet_proto::v1::{FrameEncoding, PixelFormat};
use std::sync::Mutex;

/// Records what would be provisioned; the real admin client is tested against the broker.
#[derive(Default)]
pub struct RecordingTopics {
    pub created: Mutex<Vec<TopicSpec>>,
    pub resized: Mutex<Vec<TopicSpec>>,
}

impl TopicAdmin for &'static RecordingTopics {
    async fn ensure_topic(&self, spec: &TopicSpec) -> Result<(), CoordinatorError> {
        lock(&self.created).push(spec.clone());
        Ok(())
    }

    async fn resize_topic(&self, spec: &TopicSpec) -> Result<(), CoordinatorError> {
        lock(&self.resized).push(spec.clone());
        Ok(())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub fn placement() -> Placement {
    Placement {
        partitions: 1,
        replication: 1,
        retention_ms: 3_600_000,
        pool_topics: 2,
        pool_partitions: 4,
        max_frame_bytes: 64 << 20,
    }
}

pub fn registry() -> (
    ChannelRegistry<MemoryStore, &'static RecordingTopics>,
    &'static RecordingTopics,
) {
    let topics: &'static RecordingTopics = Box::leak(Box::default());
    (
        ChannelRegistry::new(MemoryStore::default(), topics, placement()),
        topics,
    )
}

/// A registry whose store already holds analysis-only pipelines `names`.
async fn registry_with_pipelines(names: &[&str]) -> ChannelRegistry<MemoryStore, &'static RecordingTopics> {
    let store = MemoryStore::default();
    let pipelines = crate::pipelines::PipelineRegistry::new(store.clone(), Vec::new());
    let spec = framefleet_proto::v1::PipelineSpec {
        analysis: true,
        ..Default::default()
    };
    for name in names {
        pipelines
            .create_version(&crate::pipelines::NewVersion {
                name,
                spec: Some(&spec),
                expected_revision: 0,
                description: "",
            })
            .await
            .expect("pipeline");
    }
    let topics: &'static RecordingTopics = Box::leak(Box::default());
    ChannelRegistry::new(store, topics, placement())
}

pub fn schema(width: u32, height: u32) -> FrameSchema {
    FrameSchema {
        version: 0,
        width,
        height,
        channels: 3,
        pixel_format: PixelFormat::Rgb24.into(),
        encoding: FrameEncoding::Jpeg.into(),
        fps: 25.0,
    }
}

pub fn spec(channel_id: &str, schema: Option<FrameSchema>) -> ChannelSpec {
    ChannelSpec {
        channel_id: channel_id.to_owned(),
        source_uri: "file:///a.avi".to_owned(),
        schema,
        ..ChannelSpec::default()
    }
}

#[tokio::test]
async fn registration_is_idempotent_and_sizes_the_topic() {
    let (registry, topics) = registry();
    let (channel, created) = registry
        .register(&spec("cam-1", Some(schema(1920, 1080))))
        .await
        .expect("register");
    assert!(created);
    assert_eq!(channel.topic, "framefleet.frames.cam-1");
    assert_eq!(channel.topics, vec!["framefleet.frames.cam-1".to_owned()]);
    assert_eq!(channel.schema.as_ref().map(|s| s.version), Some(1));
    assert_eq!(channel.declared_bytes_per_second, 1920 * 1080 * 3 * 25);

    let (again, created_again) = registry
        .register(&spec("cam-1", Some(schema(1920, 1080))))
        .await
        .expect("re-register");
    assert!(!created_again);
    assert_eq!(again, channel);

    let created_topics = lock(&topics.created).clone();
    assert_eq!(
        created_topics.len(),
        1,
        "an identical re-registration provisions nothing"
    );
    assert!(created_topics[0].max_message_bytes() > 1920 * 1080 * 3);
    assert_eq!(registry.list_schemas("cam-1").await.expect("schemas").len(), 1);
}

#[tokio::test]
async fn a_different_definition_under_the_same_id_is_refused() {
    let (registry, _) = registry();
    registry
        .register(&spec("cam-1", Some(schema(640, 480))))
        .await
        .expect("register");
    let error = registry
        .register(&spec("cam-1", Some(schema(1280, 720))))
        .await
        .expect_err("conflict");
    assert!(matches!(error, CoordinatorError::AlreadyExists { .. }), "{error}");
}

#[tokio::test]
async fn bad_input_names_the_field() {
    let (registry, topics) = registry();
    let fan_out = |pipelines: &[&str]| ChannelSpec {
        topic_strategy: TopicStrategy::FanOut.into(),
        pipelines: pipelines.iter().map(|p| (*p).to_owned()).collect(),
        ..spec("cam-1", Some(schema(640, 480)))
    };
    let cases: Vec<(ChannelSpec, &str)> = vec![
        (spec("", Some(schema(640, 480))), "channel_id"),
        (spec("cam/1", Some(schema(640, 480))), "channel_id"),
        (spec("cam-1", None), "schema"),
        (spec("cam-1", Some(schema(0, 480))), "schema.width"),
        (spec("cam-1", Some(schema(640, 100_000))), "schema.height"),
        (
            spec(
                "cam-1",
                Some(FrameSchema {
                    fps: 0.0,
                    ..schema(640, 480)
                }),
            ),
            "schema.fps",
        ),
        (
            spec(
                "cam-1",
                Some(FrameSchema {
                    channels: 1,
                    ..schema(640, 480)
                }),
            ),
            "schema.channels",
        ),
        (
            spec(
                "cam-1",
                Some(FrameSchema {
                    encoding: 99,
                    ..schema(640, 480)
                }),
            ),
            "schema.encoding",
        ),
        (
            spec(
                "cam-1",
                Some(FrameSchema {
                    version: 3,
                    ..schema(640, 480)
                }),
            ),
            "schema.version",
        ),
        (
            ChannelSpec {
                source_uri: "a\u{0}b".to_owned(),
                ..spec("cam-1", Some(schema(640, 480)))
            },
            "source_uri",
        ),
        (
            ChannelSpec {
                topic_strategy: 42,
                ..spec("cam-1", Some(schema(640, 480)))
            },
            "topic_strategy",
        ),
        (fan_out(&[]), "pipelines"),
        (fan_out(&["a.b"]), "pipelines"),
        (fan_out(&["x", "x"]), "pipelines"),
        (
            ChannelSpec {
                topic_strategy: TopicStrategy::SharedPool.into(),
                pipelines: vec!["people".to_owned()],
                ..spec("cam-1", Some(schema(640, 480)))
            },
            "pipelines",
        ),
        (
            ChannelSpec {
                pipelines: (0..17).map(|index| format!("p{index}")).collect(),
                ..spec("cam-1", Some(schema(640, 480)))
            },
            "pipelines",
        ),
    ];
    for (request, field) in cases {
        match registry.register(&request).await.expect_err(field) {
            CoordinatorError::InvalidArgument { field: named, .. } => assert_eq!(named, field),
            other => panic!("expected invalid {field}, got {other}"),
        }
    }
    assert!(lock(&topics.created).is_empty(), "invalid requests provision nothing");
}

#[tokio::test]
async fn list_pages_and_filters() {
    let (registry, _) = registry();
    for id in ["lobby-1", "lobby-2", "lobby-3", "yard-1"] {
        registry
            .register(&spec(id, Some(schema(64, 48))))
            .await
            .expect("register");
    }
    assert_eq!(registry.get("lobby-2").await.expect("get").channel_id, "lobby-2");
    assert!(matches!(
        registry.get("nope").await,
        Err(CoordinatorError::NotFound { .. })
    ));

    let mut filter = ListFilter {
        id_prefix: "lobby".into(),
        page_size: 2,
        ..ListFilter::default()
    };
    let (first, token) = registry.list(&filter).await.expect("page 1");
    assert_eq!(
        first.iter().map(|c| c.channel_id.as_str()).collect::<Vec<_>>(),
        ["lobby-1", "lobby-2"]
    );
    assert_eq!(token, "lobby-2");
    filter.page_token = token;
    let (second, token) = registry.list(&filter).await.expect("page 2");
    assert_eq!(second.len(), 1);
    assert!(token.is_empty(), "last page");

    registry.deregister("yard-1", 0, false).await.expect("drain");
    let draining = ListFilter {
        state: ChannelState::Draining.into(),
        ..ListFilter::default()
    };
    assert_eq!(registry.list(&draining).await.expect("list").0.len(), 1);
    let by_topic = ListFilter {
        topic: "framefleet.frames.lobby-3".into(),
        ..ListFilter::default()
    };
    assert_eq!(registry.list(&by_topic).await.expect("list").0[0].channel_id, "lobby-3");
    let too_big = ListFilter {
        page_size: 5000,
        ..ListFilter::default()
    };
    assert!(matches!(
        registry.list(&too_big).await,
        Err(CoordinatorError::InvalidArgument { field: "page_size", .. })
    ));
}

#[tokio::test]
async fn updates_compare_the_revision() {
    let (registry, _) = registry();
    let (channel, _) = registry
        .register(&spec("cam-1", Some(schema(64, 48))))
        .await
        .expect("register");
    let change = ChannelChange {
        source_uri: Some("rtsp://camera/1".into()),
        ..ChannelChange::default()
    };
    let updated = registry
        .update("cam-1", &change, channel.revision)
        .await
        .expect("update");
    assert_eq!(updated.source_uri, "rtsp://camera/1");
    assert!(updated.revision > channel.revision);

    // A second writer that read the old revision must not overwrite the first.
    let stale = registry
        .update("cam-1", &ChannelChange::default(), channel.revision)
        .await;
    assert!(
        matches!(stale, Err(CoordinatorError::FailedPrecondition(_))),
        "{stale:?}"
    );
    assert!(matches!(
        registry.update("ghost", &change, 0).await,
        Err(CoordinatorError::NotFound { .. })
    ));
}

#[tokio::test]
async fn deregistration_drains_and_force_deletes_everything() {
    let (registry, _) = registry();
    registry
        .register(&spec("cam-1", Some(schema(64, 48))))
        .await
        .expect("register");
    let (draining, deleted) = registry.deregister("cam-1", 0, false).await.expect("drain");
    assert!(!deleted);
    assert_eq!(draining.state, i32::from(ChannelState::Draining));
    assert!(draining.ingestor_id.is_empty());
    let change = ChannelChange {
        declared_bytes_per_second: Some(5),
        ..ChannelChange::default()
    };
    assert!(matches!(
        registry.update("cam-1", &change, 0).await,
        Err(CoordinatorError::FailedPrecondition(_))
    ));

    let (_, deleted) = registry.deregister("cam-1", 0, true).await.expect("force");
    assert!(deleted);
    assert!(matches!(
        registry.get("cam-1").await,
        Err(CoordinatorError::NotFound { .. })
    ));
    assert!(registry.store().list("schemas/cam-1/").await.expect("list").is_empty());
}

#[tokio::test]
async fn the_pool_balances_declared_load_and_fan_out_has_a_topic_per_pipeline() {
    let registry = registry_with_pipelines(&["detect", "archive"]).await;
    let pooled = |id: &str, load: u64| ChannelSpec {
        topic_strategy: TopicStrategy::SharedPool.into(),
        declared_bytes_per_second: load,
        ..spec(id, Some(schema(64, 48)))
    };
    let heavy = registry.register(&pooled("heavy", 1000)).await.expect("heavy").0;
    let light = registry.register(&pooled("light", 10)).await.expect("light").0;
    let third = registry.register(&pooled("third", 10)).await.expect("third").0;
    assert_eq!(heavy.topic, "framefleet.pool.0");
    assert_eq!(light.topic, "framefleet.pool.1");
    assert_eq!(third.topic, "framefleet.pool.1", "joins the lighter topic");

    let fan_out = ChannelSpec {
        topic_strategy: TopicStrategy::FanOut.into(),
        pipelines: vec!["detect".into(), "archive".into()],
        ..spec("door", Some(schema(64, 48)))
    };
    let door = registry.register(&fan_out).await.expect("fan-out").0;
    assert_eq!(
        door.topics,
        ["framefleet.fanout.detect.door", "framefleet.fanout.archive.door"]
    );

    let moved = registry
        .move_to("door", TopicStrategy::Dedicated.into(), &[], door.revision)
        .await
        .expect("move");
    assert_eq!(moved.topics, ["framefleet.frames.door"]);
    assert_eq!(moved.topic_strategy, i32::from(TopicStrategy::Dedicated));
}

#[tokio::test]
async fn schema_versions_need_consent_to_change_the_frame_size() {
    let (registry, topics) = registry();
    registry
        .register(&spec("cam-1", Some(schema(640, 480))))
        .await
        .expect("register");

    let faster = FrameSchema {
        fps: 30.0,
        ..schema(640, 480)
    };
    let v2 = registry
        .add_schema_version("cam-1", Some(&faster), false, 0)
        .await
        .expect("v2");
    assert_eq!(v2.version, 2);
    assert!(lock(&topics.resized).is_empty(), "same size, no resize");

    let bigger = schema(1920, 1080);
    let refused = registry.add_schema_version("cam-1", Some(&bigger), false, 0).await;
    assert!(
        matches!(refused, Err(CoordinatorError::FailedPrecondition(_))),
        "{refused:?}"
    );
    let v3 = registry
        .add_schema_version("cam-1", Some(&bigger), true, 0)
        .await
        .expect("v3");
    assert_eq!(v3.version, 3);
    let resized = lock(&topics.resized).clone();
    assert_eq!(resized.len(), 1);
    assert_eq!(resized[0].name, "framefleet.frames.cam-1");
    assert_eq!(resized[0].max_payload_bytes, 1920 * 1080 * 3);

    assert_eq!(registry.get_schema("cam-1", 1).await.expect("v1").width, 640);
    assert_eq!(registry.get_schema("cam-1", 0).await.expect("current").version, 3);
    assert!(matches!(
        registry.get_schema("cam-1", 9).await,
        Err(CoordinatorError::NotFound { .. })
    ));
    let versions: Vec<u32> = registry
        .list_schemas("cam-1")
        .await
        .expect("list")
        .iter()
        .map(|s| s.version)
        .collect();
    assert_eq!(versions, [1, 2, 3]);
}

#[tokio::test]
async fn a_channel_belongs_to_the_ingestor_it_was_registered_for() {
    let (registry, _) = registry();
    let claimed = |ingestor: &str, must_own: bool| ChannelSpec {
        claimed_by: ingestor.to_owned(),
        claimant_must_own: must_own,
        ..spec("cam-1", Some(schema(64, 48)))
    };
    let (channel, _) = registry
        .register(&claimed("ingestor-1", true))
        .await
        .expect("registered");
    assert_eq!(channel.owner, "ingestor-1");
    registry
        .register(&claimed("ingestor-1", true))
        .await
        .expect("its owner registers it again");
    let refused = registry
        .register(&claimed("ingestor-2", true))
        .await
        .expect_err("another ingestor's credential");
    assert!(
        matches!(&refused, CoordinatorError::NotOwner { owner, .. } if owner == "ingestor-1"),
        "{refused}"
    );
    assert_eq!(
        registry.get("cam-1").await.expect("get").ingestor_id,
        "ingestor-1",
        "nothing written"
    );
    // An admin's claim moves the channel, and its owner stays.
    let (moved, _) = registry
        .register(&claimed("ingestor-2", false))
        .await
        .expect("an admin's claim");
    assert_eq!(
        (moved.ingestor_id.as_str(), moved.owner.as_str()),
        ("ingestor-2", "ingestor-1")
    );
}

#[test]
fn a_record_from_before_owners_belongs_to_the_ingestor_that_claimed_it() {
    let record = |assigned_by: &str| {
        ChannelRecord {
        ingestor_id: "ingestor-1".into(),
        assigned_by: assigned_by.into(),
        ..serde_json::from_str::<ChannelRecord>(
            r#"{"channel_id":"a","source_uri":"x","schema":{"version":1,"width":1,"height":1,"channels":3,"pixel_format":"PIXEL_FORMAT_RGB24","encoding":"FRAME_ENCODING_JPEG","fps":1.0},"topic":"t","created_unix_ms":0}"#,
        )
        .expect("an old record")
    }
    };
    assert_eq!(record(record::CLAIMED_BY_REGISTRATION).owner(), "ingestor-1");
    assert_eq!(
        record("coordinator-1@3").owner(),
        "",
        "assigned by a leader: no ingestor's"
    );
}

#[tokio::test]
async fn a_channel_names_registered_pipelines_only_under_any_strategy() {
    let registry = registry_with_pipelines(&["people"]).await;
    let naming = |id: &str, pipelines: &[&str]| ChannelSpec {
        pipelines: pipelines.iter().map(|p| (*p).to_owned()).collect(),
        ..spec(id, Some(schema(64, 48)))
    };
    let lobby = registry
        .register(&naming("lobby", &["people"]))
        .await
        .expect("a dedicated channel read by a pipeline")
        .0;
    assert_eq!(lobby.topics, ["framefleet.frames.lobby"]);
    assert_eq!(lobby.pipelines, ["people"]);
    let error = registry
        .register(&naming("door", &["people", "nobody"]))
        .await
        .expect_err("an unregistered pipeline");
    assert!(
        matches!(&error, CoordinatorError::FailedPrecondition(message) if message.contains("`nobody`")),
        "{error}"
    );
    assert!(
        matches!(registry.get("door").await, Err(CoordinatorError::NotFound { .. })),
        "nothing written"
    );
    let error = registry
        .move_to("lobby", TopicStrategy::FanOut.into(), &["nobody".to_owned()], 0)
        .await
        .expect_err("moved to an unregistered pipeline");
    assert!(matches!(error, CoordinatorError::FailedPrecondition(_)), "{error}");
    // Same strategy and topic, other pipelines: still a change.
    let unbound = registry
        .move_to("lobby", TopicStrategy::Dedicated.into(), &[], 0)
        .await
        .expect("no pipeline any more");
    assert!(unbound.pipelines.is_empty());
    assert_eq!(unbound.topics, ["framefleet.frames.lobby"]);
}
