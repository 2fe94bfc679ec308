//! The Grafana dashboard (`deploy/grafana/framefleet-dashboard.json`) queries only metrics
//! that the coordinator and the worker really export, so it cannot drift from them.

use framefleet_proto::v1::{ChannelLedger, ChannelStatus, DeadLetterCode, FleetStatus, TopicMetrics};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Metric names in the exposition text, without the series suffixes Prometheus derives.
fn exported_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_dashboard_query_names_an_exported_metric() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/framefleet-dashboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("the dashboard")).expect("dashboard JSON");

    let worker = framefleet_worker::metrics::WorkerMetrics::new("w", Arc::default());
    worker.record_batch(
        1,
        &[DeadLetterCode::CorruptImage],
        Duration::from_millis(1),
        Duration::from_millis(2),
    );
    let result = framefleet_proto::wire::FrameResult {
        channel_id: "c".into(),
        sequence: 0,
        ingestor_epoch: 1,
        schema_version: 1,
        capture_time_us: 1_000,
        processed_time_us: 5_000,
        produced_time_us: Some(2_000),
        consumed_time_us: 3_000,
        decode_us: 500,
        worker_id: "w".into(),
        source_topic: "t".into(),
        source_partition: 0,
        source_offset: 0,
        batch_size: 1,
        batch_compute_us: 1_000,
        scores: Some(framefleet_proto::wire::FrameScores {
            mean_luma: 0.0,
            contrast: 0.0,
            sharpness: 0.0,
            edge_strength: 0.0,
            motion: 0.0,
        }),
        motion_box: None,
        detections: Vec::new(),
        model: None,
        detector_ran: false,
        gated: false,
        pipeline: None,
        pipeline_version: None,
    };
    worker.record_frames(&[framefleet_worker::metrics::FrameTimes::of(&result)], 6_000);
    let status = FleetStatus {
        topics: vec![TopicMetrics {
            topic: "t".into(),
            ..TopicMetrics::default()
        }],
        channels: vec![ChannelStatus {
            channel_id: "c".into(),
            ..ChannelStatus::default()
        }],
        ledgers: vec![ChannelLedger {
            channel_id: "c".into(),
            ingestor_id: "i".into(),
            ..ChannelLedger::default()
        }],
        ..FleetStatus::default()
    };
    let mut exported = exported_names(&worker.render());
    exported.extend(exported_names(&framefleet_coordinator::metrics::render(
        true,
        Some((&status, std::time::Duration::from_secs(1))),
    )));

    let mut queried = BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            let mut rest = expr;
            while let Some(at) = rest.find("framefleet_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[at + name.len()..];
                queried.insert(name);
            }
        }
    }
    assert!(queried.len() >= 10, "{queried:?}");
    let missing: Vec<&String> = queried.iter().filter(|name| !exported.contains(*name)).collect();
    assert!(
        missing.is_empty(),
        "queried but not exported: {missing:?}\nexported: {exported:?}"
    );
}
