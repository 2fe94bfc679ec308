//! One truth on every screen: `watch --json`, `status --json`, the coordinator's Prometheus
//! metrics and `audit` are sampled side by side during a run and at its end. While frames
//! flow no screen says "drained" with lag showing, and every sample is consistent in itself
//! (lag = accumulate − consume, no more acknowledged than written); once `watch
//! --until-drained` exits 0, all of them give the same acknowledged, committed and processed
//! counts and 0 lag.

use framefleet_loadtest::Fleet;
use serde_json::Value;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const FRAMES_PER_CHANNEL: u64 = 120;

fn cli() -> std::path::PathBuf {
    framefleet_common::startup::sibling_binary("framefleet").expect("the framefleet CLI of this build")
}

/// `framefleet --json <args>` against the fleet: (exit code, the last JSON line printed).
async fn cli_json(fleet: &Fleet, args: &[&str]) -> (i32, Value) {
    let output = tokio::process::Command::new(cli())
        .args(["--coordinator", &fleet.coordinator_address, "--json"])
        .args(args)
        .output()
        .await
        .expect("run the CLI");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    let value = serde_json::from_str(last).unwrap_or_else(|error| {
        panic!(
            "`{args:?}` printed no JSON ({error}): {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code().unwrap_or(-1), value)
}

/// The coordinator's `/metrics`, as (metric name with labels, value) pairs.
async fn metrics(address: &str) -> Vec<(String, f64)> {
    let text = framefleet_common::metrics::scrape(address.parse().expect("metrics address"))
        .await
        .expect("scrape the coordinator's metrics");
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .filter_map(|(name, value)| value.parse().ok().map(|value| (name.to_owned(), value)))
        .collect()
}

fn metric_sum(samples: &[(String, f64)], name: &str, label_part: &str) -> u64 {
    samples
        .iter()
        .filter(|(metric, _)| {
            let labelled = metric.starts_with(&format!("{name}{{"));
            (labelled || metric == name) && metric.contains(label_part)
        })
        .map(|(_, value)| *value as u64)
        .sum()
}

/// Each topic's lag is its accumulate minus its consume, and "drained" never shows with lag.
fn check_consistent(status: &Value, what: &str) {
    for topic in status["topics"].as_array().expect("topics") {
        let (accumulate, consume, lag) = (
            topic["accumulate"].as_u64().unwrap_or_default(),
            topic["consume"].as_u64().unwrap_or_default(),
            topic["lag"].as_u64().unwrap_or_default(),
        );
        assert_eq!(lag, accumulate - consume, "{what}: {topic}");
    }
    if status["lag"].as_u64() != Some(0) {
        assert_eq!(status["drained"], false, "{what} says drained with lag: {status}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_screen_tells_the_same_counts() {
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let metrics_address = format!("127.0.0.1:{metrics_port}");
    let infrastructure = framefleet_loadtest::Infrastructure::from_env().expect("infrastructure");
    let mut fleet = Fleet::start_with("one-truth", infrastructure, &["--metrics-addr", &metrics_address])
        .await
        .expect("start the coordinator");
    fleet.spawn_worker("worker-truth", &[]).expect("worker");
    let prefix = fleet.names.channel_id("");
    let channels = [fleet.names.channel_id("a"), fleet.names.channel_id("b")];

    // The watch starts first and waits for this run.
    let address = fleet.coordinator_address.clone();
    let watch = tokio::spawn(
        tokio::process::Command::new(cli())
            .args(["--coordinator", &address, "--json", "watch", "--until-drained"])
            .args(["--timeout-secs", "120", "--interval-ms", "200"])
            .output(),
    );
    let frames = FRAMES_PER_CHANNEL.to_string();
    let sources: Vec<(&str, &str)> = channels
        .iter()
        .map(|channel| (channel.as_str(), "synthetic://64x48@40"))
        .collect();
    let config = fleet
        .ingestor_config(
            "ingestor-truth",
            &sources,
            &["--max-frames", &frames, "--pace", "realtime"],
        )
        .expect("config");
    let ingestor = tokio::spawn(framefleet_ingestor::run(config, CancellationToken::new()));

    // During the run: status and metrics, side by side.
    let mut samples = 0;
    while !ingestor.is_finished() {
        let (code, status) = cli_json(&fleet, &["status"]).await;
        assert_eq!(code, 0, "{status}");
        check_consistent(&status, "status during the run");
        let scraped = metrics(&metrics_address).await;
        let lag = metric_sum(&scraped, "framefleet_topic_lag_frames", "");
        let accumulate = metric_sum(&scraped, "framefleet_topic_accumulate_frames", "");
        let consume = metric_sum(&scraped, "framefleet_topic_consume_frames", "");
        assert_eq!(lag, accumulate - consume, "metrics during the run");
        samples += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    ingestor.await.expect("ingestor task").expect("the run");
    assert!(samples >= 3, "the run was sampled {samples} times");

    let output = watch.await.expect("watch task").expect("run the watch");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Every line the watch printed is consistent; its last says drained.
    let lines: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("watch JSON"))
        .collect();
    for line in &lines {
        check_consistent(line, "watch");
    }
    let watched = lines.last().expect("the watch printed");
    assert_eq!(watched["drained"], true, "{watched}");

    // At the end: every screen gives the same counts.
    let total = 2 * FRAMES_PER_CHANNEL;
    let (_, status) = cli_json(&fleet, &["status"]).await;
    let (code, audit) = cli_json(
        &fleet,
        &[
            "audit",
            "--channel-prefix",
            &prefix,
            "--read-timeout-secs",
            "30",
            "--frame-topics",
        ],
    )
    .await;
    assert_eq!(code, 0, "{audit}");
    let audited = |field: &str| -> u64 {
        audit["runs"]
            .as_array()
            .expect("runs")
            .iter()
            .map(|run| run[field].as_u64().unwrap_or_default())
            .sum()
    };
    for (screen, value) in [("watch", watched), ("status", &status)] {
        assert_eq!(value["drained"], true, "{screen}: {value}");
        assert_eq!(value["lag"], 0, "{screen}: {value}");
        assert_eq!(value["acknowledged"], total, "{screen}: {value}");
        assert_eq!(value["accumulate"], total, "{screen}: {value}");
        assert_eq!(value["consume"], total, "{screen}: {value}");
        // Results the workers wrote: each frame once here (no rebalance), as the audit reads them back.
        assert_eq!(
            value["processed"].as_u64(),
            Some(audited("frames_processed") + audited("duplicates")),
            "{screen}: {value}\naudit: {audit}"
        );
    }
    assert_eq!(audited("frames_acknowledged"), total, "{audit}");
    assert_eq!(audited("frames_processed"), total, "{audit}");
    assert_eq!(audit["frames_missing"], 0, "{audit}");
    // The metrics follow the status at their refresh interval: wait for the end state.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let scraped = metrics(&metrics_address).await;
        let figures = (
            metric_sum(&scraped, "framefleet_channel_acknowledged_frames", &prefix),
            metric_sum(&scraped, "framefleet_topic_consume_frames", &prefix),
            metric_sum(&scraped, "framefleet_topic_lag_frames", &prefix),
            metric_sum(&scraped, "framefleet_fleet_frames_processed", ""),
        );
        if figures == (total, total, 0, total) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "metrics (acknowledged, consumed, lag, processed) = {figures:?}, not ({total}, {total}, 0, {total})"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    fleet.stop().await.expect("stop");
}
