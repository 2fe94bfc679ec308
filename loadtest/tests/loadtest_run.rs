//! `framefleet-loadtest` end to end on small scenarios: the paper's experiment, the scaling
//! run and the baselines through the real coordinator, ingestor, workers, broker and etcd,
//! and the files they leave behind (CSV, PNG, JSON, Markdown). The figures themselves are
//! the business of the real run (scripts/loadtest.sh); this checks that what it writes
//! adds up.

use framefleet_loadtest::Infrastructure;
use framefleet_loadtest::report::{MachineDescription, Progress};
use framefleet_loadtest::runner::run_all;
use framefleet_loadtest::scenario::Scenario;
use std::path::{Path, PathBuf};

const LAG: &str = r#"
kind = "lag"
name = "smoke-lag"
title = "1 topic, 1 worker"
workers = 1
generation_secs = 3
drain_timeout_secs = 120
[cameras]
count = 1
fps = 10
width = 160
height = 120
encoding = "jpeg"
"#;

// Workers of 0.05 CPU each (processes of their own in a cgroup CPU quota; the test runs as
// root, as CI does) so that one worker needs seconds for the backlog: the scaling clock starts
// only once both workers hold partitions, and there must be frames left for both by then. An
// unlimited worker drained the whole backlog while the second one was still joining.
const SCALING: &str = r#"
kind = "scaling"
name = "smoke-scaling"
title = "scaling"
workers = [1, 2]
frames_per_camera = 200
worker_cpu_quota = 0.05
[cameras]
count = 2
fps = 10
width = 640
height = 480
encoding = "jpeg"
"#;

const BASELINES: &str = r#"
kind = "baselines"
name = "smoke-baselines"
title = "baselines"
frames = 60
video = "/usr/share/doc/opencv-doc/examples/data/vtest.avi"
[cameras]
count = 1
fps = 10
width = 160
height = 120
encoding = "jpeg"
"#;

fn scenarios(dir: &Path) -> Vec<Scenario> {
    [
        ("lag.toml", LAG),
        ("scaling.toml", SCALING),
        ("baselines.toml", BASELINES),
    ]
    .iter()
    .map(|(name, text)| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write scenario");
        Scenario::load(&path).expect("valid scenario")
    })
    .collect()
}

fn assert_png(dir: &Path, name: &str, width: i32, height: i32) {
    use opencv::prelude::*;
    let path = dir.join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "{name} is not a PNG");
    let image = opencv::imgcodecs::imread(&path, opencv::imgcodecs::IMREAD_COLOR).expect("imread");
    assert_eq!((image.cols(), image.rows()), (width, height), "{name} size");
    // A blank canvas would mean nothing was drawn.
    let mut grey = opencv::core::Mat::default();
    opencv::imgproc::cvt_color_def(&image, &mut grey, opencv::imgproc::COLOR_BGR2GRAY).expect("grey");
    let non_white = opencv::core::count_non_zero(&{
        let mut inverted = opencv::core::Mat::default();
        opencv::core::bitwise_not_def(&grey, &mut inverted).expect("invert");
        inverted
    })
    .expect("count");
    assert!(non_white > 2_000, "{name} is almost blank ({non_white} drawn pixels)");
}

/// The baselines' Python consumer runs in the venv this script makes (or finds): the path the
/// load test looks in when FRAMEFLEET_BASELINE_PYTHON is unset.
fn python_baseline_env() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/python-baseline-env.sh");
    let status = std::process::Command::new(&script)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap_or_else(|error| panic!("{}: {error}", script.display()));
    assert!(status.success(), "{} failed", script.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_load_run_measures_lag_scaling_and_baselines_and_writes_its_results() {
    let infrastructure = Infrastructure::from_env().expect("infrastructure");
    python_baseline_env();
    let dir: PathBuf = std::env::temp_dir().join(format!("framefleet-loadtest-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let results = dir.join("results");
    let summary = run_all(
        &infrastructure,
        &scenarios(&dir),
        &results,
        MachineDescription::collect("test"),
        &Progress::default(),
    )
    .await
    .expect("the load run");

    // The paper's experiment: every generated frame accumulated, consumed and measured.
    let lag = &summary.lag[0];
    assert_eq!(lag.frames_generated, 30, "10 fps for 3 s");
    let drained = lag.drained_s.expect("the backlog drained");
    let last = lag.samples.last().expect("samples");
    assert_eq!((last.accumulate, last.consume, last.lag), (30, 30, 0));
    assert!(lag.samples.len() >= 3, "a sample a second: {}", lag.samples.len());
    assert!(
        lag.samples
            .windows(2)
            .all(|pair| pair[0].accumulate <= pair[1].accumulate)
    );
    assert!(lag.generation_ended_s >= 2.5 && lag.generation_ended_s <= drained + 1.0);
    assert_eq!(lag.latency.count, 30, "a latency per frame");
    assert!(lag.latency.p50_ms > 0.0 && lag.latency.p50_ms <= lag.latency.p95_ms);
    assert!(lag.latency.p95_ms <= lag.latency.p99_ms && lag.latency.p99_ms <= lag.latency.max_ms);
    assert_eq!(lag.results_per_worker.values().sum::<u64>(), 30);
    let csv = std::fs::read_to_string(results.join("smoke-lag.csv")).expect("lag csv");
    assert_eq!(
        csv.lines().count(),
        lag.samples.len() + 1,
        "a header and a row per sample"
    );
    assert!(
        csv.lines().last().is_some_and(|row| row.contains(",draining,30,30,0,")),
        "{csv}"
    );

    // Scaling: both points measured, the first is the base.
    let scaling = &summary.scaling[0];
    assert_eq!(scaling.backlog_frames, 400);
    let workers: Vec<u32> = scaling.points.iter().map(|point| point.workers).collect();
    assert_eq!(workers, [1, 2]);
    assert!((scaling.points[0].efficiency - 1.0).abs() < 1e-9);
    assert!(
        scaling
            .points
            .iter()
            .all(|point| point.frames_per_second > 0.0 && point.frames >= 10)
    );
    assert_eq!(
        scaling.points[1].results_per_worker.len(),
        2,
        "both workers took frames"
    );

    // Baselines: every consumer analysed every frame of the same backlog, on one core, and
    // the Python consumers' scores agree with the worker's (the same work, not just the same
    // bytes); the transport-only line moved every record.
    let baselines = &summary.baselines[0];
    assert_eq!(baselines.frames, 60);
    for system in baselines.consumers() {
        assert_eq!(system.frames, 60, "{}", system.system);
        assert!(system.frames_per_second > 0.0 && system.seconds > 0.0, "{system:?}");
        // 60 small frames take tens of milliseconds: a few ticks of /proc's CPU clock, or none.
        assert!(
            system.process_cpu_seconds > 0.0 && system.process_cpu_seconds >= system.cpu_seconds,
            "{system:?}"
        );
    }
    assert_eq!(baselines.framefleet.framefleet_over_this.frames_per_second, 1.0);
    for python in [&baselines.python_opencv, &baselines.python_opencv_reduced] {
        let ratio = &python.framefleet_over_this;
        assert!(
            ratio.frames_per_second > 0.0 && ratio.cpu_ms_per_frame.is_finite(),
            "{python:?}"
        );
        let difference = python
            .difference_from_framefleet
            .as_ref()
            .expect("compared with framefleet");
        assert_eq!(difference.frames, 60, "{python:?}");
        assert!(difference.mean_luma < 2.0 && difference.motion < 0.02, "{python:?}");
    }
    assert_eq!(baselines.transport_only.frames, 60);
    assert!(baselines.bytes_per_frame > 1_000.0, "a 160×120 JPEG and its headers");
    let csv = std::fs::read_to_string(results.join("smoke-baselines.csv")).expect("baselines csv");
    assert_eq!(
        csv.lines().count(),
        5,
        "a header, three consumers, the transport line: {csv}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(results.join("smoke-baselines.json")).expect("baselines json"))
            .expect("baselines json is JSON");
    assert_eq!(json["python_opencv"]["frames"], 60);

    // The files docs/performance.md points at.
    assert_png(&results, "smoke-lag.png", 1000, 620);
    assert_png(&results, "lag-overlay.png", 1000, 900);
    assert_png(&results, "latency.png", 1000, 340);
    assert_png(&results, "smoke-scaling.png", 900, 560);
    assert_png(&results, "smoke-baselines.png", 1000, 480);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(results.join("summary.json")).expect("summary.json"))
            .expect("summary.json is JSON");
    assert_eq!(json["lag"][0]["frames_generated"], 30);
    assert_eq!(json["machine"]["broker_storage"], "test");
    let markdown = std::fs::read_to_string(results.join("summary.md")).expect("summary.md");
    assert!(
        markdown.contains("smoke-lag") && markdown.contains("python-opencv-reduced"),
        "{markdown}"
    );
    for file in &summary.files {
        assert!(results.join(file).is_file(), "{file} listed but missing");
    }
    std::fs::remove_dir_all(&dir).expect("clean up");
}
