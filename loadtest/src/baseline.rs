//! framefleet's worker against the consumer an operator would write by hand, doing the same
//! work per frame, on the same frames:
//!
//! The ingestor writes a backlog of `frames` frames of a real video (looped, resized and
//! JPEG-encoded to the scenario's size) to one channel topic, once. Then each consumer drains
//! that topic alone, in a consumer group of its own, as a process of its own pinned to one
//! core, one after the other:
//!
//! - **framefleet-worker**: the worker binary of this build, with its defaults.
//! - **python-opencv**: `loadtest/python/opencv_consumer.py`, confluent-kafka and OpenCV:
//!   colour decode, integer area downscale, BT.601 luma, 5×5 Gaussian blur, Sobel edges, the
//!   scores, per-channel background and motion box, a JSON result per frame, the offset stored
//!   once the result is delivered.
//! - **python-opencv-reduced**: the same, with libjpeg's reduced grayscale decode where the
//!   downscale factor is 2, 4 or 8 (the fastest thing an expert would write).
//!
//! Each writes one result per frame. The clock runs from the first frame's compute starting
//! (the earliest result's processed time less its batch's compute time, so a batching
//! consumer's clock may start up to one batch early) to the last result computed; process
//! start-up and group join stay outside it. The CPU is the process's user + system time over
//! the same window. The ratios divide framefleet's figure by each Python consumer's.
//!
//! **raw-rdkafka** is a transport-only line: the backlog's records re-produced and consumed by
//! plain rdkafka clients that look at nothing. It says what moving the bytes costs on this
//! broker; it decodes and analyses nothing, so it is no baseline for the consumers.

use crate::process::{CpuProfile, PinnedProcess};
use crate::report::Progress;
use crate::scenario::{BaselineScenario, Encoding};
use crate::{Fleet, Infrastructure, experiment, read_topic};
use anyhow::Context;
use framefleet_proto::wire::{FrameResult, FrameScores};
use rdkafka::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Every consumer runs on this core alone: its frames/s and CPU time are one core's.
pub const PINNED_CORE: usize = 0;
/// The longest a consumer may take for the backlog.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(600);
/// The hand-written consumer, run from the source tree.
const PYTHON_CONSUMER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/python/opencv_consumer.py");
/// Where `FRAMEFLEET_BASELINE_PYTHON` points, else what `scripts/python-baseline-env.sh` made.
const PYTHON_ENV: &str = "FRAMEFLEET_BASELINE_PYTHON";

/// framefleet's figure ÷ another consumer's.
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    /// Above 1: framefleet drains faster.
    pub frames_per_second: f64,
    /// Below 1: framefleet spends less CPU per frame.
    pub cpu_ms_per_frame: f64,
}

/// Mean absolute difference of each score from framefleet's for the same frame: how nearly
/// the consumers did the same work.
#[derive(Debug, Clone, Serialize)]
pub struct ScoreDifference {
    pub frames: u64,
    pub mean_luma: f64,
    pub contrast: f64,
    pub sharpness: f64,
    pub edge_strength: f64,
    pub motion: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConsumerRun {
    pub system: &'static str,
    pub frames: u64,
    /// First frame's compute start to last result computed.
    pub seconds: f64,
    pub frames_per_second: f64,
    /// User + system CPU time of the process over `seconds`.
    pub cpu_seconds: f64,
    pub cpu_ms_per_frame: f64,
    /// The process's CPU time from its start (imports, group join) to its last result.
    pub process_cpu_seconds: f64,
    /// framefleet ÷ this consumer (1 for framefleet itself).
    pub framefleet_over_this: Ratio,
    /// None for framefleet itself.
    pub difference_from_framefleet: Option<ScoreDifference>,
}

/// The raw rdkafka line: bytes moved, nothing decoded.
#[derive(Debug, Clone, Serialize)]
pub struct TransportRun {
    pub system: &'static str,
    pub frames: u64,
    /// Start of production to the last record consumed, producer and consumer running at once.
    pub seconds: f64,
    pub frames_per_second: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BaselineRun {
    pub name: String,
    pub title: String,
    /// The backlog's frames, e.g. `vtest.avi → 640×480 jpeg`.
    pub source: String,
    pub frames: u64,
    /// Key, value and headers of a backlog record, as a consumer receives them.
    pub bytes_per_frame: f64,
    /// How fast the ingestor wrote the backlog, nothing consuming.
    pub backlog_frames_per_second: f64,
    pub pinned_core: usize,
    pub framefleet: ConsumerRun,
    pub python_opencv: ConsumerRun,
    pub python_opencv_reduced: ConsumerRun,
    /// The same worker given every core of the machine (`taskset` on all of them).
    pub framefleet_all_cores: ConsumerRun,
    pub cores: usize,
    /// framefleet's frames/s on every core ÷ on one core.
    pub core_scaling: f64,
    pub transport_only: TransportRun,
}

impl BaselineRun {
    pub fn consumers(&self) -> [&ConsumerRun; 3] {
        [&self.framefleet, &self.python_opencv, &self.python_opencv_reduced]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drainer {
    Framefleet,
    FramefleetAllCores,
    PythonOpencv,
    PythonOpencvReduced,
}

impl Drainer {
    /// The CPUs it may run on: every drainer but one is pinned to [`PINNED_CORE`].
    fn cpu_list(self) -> String {
        match self {
            Self::FramefleetAllCores => format!("0-{}", available_cores() - 1),
            _ => PINNED_CORE.to_string(),
        }
    }

    fn system(self) -> &'static str {
        match self {
            Self::Framefleet => "framefleet-worker",
            Self::FramefleetAllCores => "framefleet-worker-all-cores",
            Self::PythonOpencv => "python-opencv",
            Self::PythonOpencvReduced => "python-opencv-reduced",
        }
    }
}

pub(crate) fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// The programs the consumers run, found before anything is started.
struct Programs {
    worker: PathBuf,
    python: PathBuf,
}

impl Programs {
    fn locate() -> anyhow::Result<Self> {
        let worker = crate::process::worker_binary()?;
        let python = std::env::var_os(PYTHON_ENV).map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("../.run/venv/bin/python"),
            PathBuf::from,
        );
        anyhow::ensure!(
            python.is_file(),
            "{} does not exist: run scripts/python-baseline-env.sh (scripts/loadtest.sh does) or set {PYTHON_ENV}",
            python.display()
        );
        Ok(Self { worker, python })
    }
}

pub async fn run_baselines(
    infrastructure: &Infrastructure,
    scenario: &BaselineScenario,
    progress: &Progress,
) -> anyhow::Result<BaselineRun> {
    anyhow::ensure!(
        scenario.cameras.encoding == Encoding::Jpeg,
        "{}: the baselines compare consumers of JPEG frames",
        scenario.name
    );
    let programs = Programs::locate()?;
    let fleet = Fleet::start_on(&scenario.name, infrastructure.clone()).await?;
    progress.update(&format!(
        "{:<12} writing a backlog of {} frames",
        scenario.name, scenario.frames
    ));
    let backlog = write_backlog(&fleet, scenario).await?;
    let mut drained = Vec::new();
    for drainer in [
        Drainer::Framefleet,
        Drainer::PythonOpencv,
        Drainer::PythonOpencvReduced,
        Drainer::FramefleetAllCores,
    ] {
        progress.update(&format!(
            "{:<12} {} drains {} frames on CPUs {}",
            scenario.name,
            drainer.system(),
            backlog.frames,
            drainer.cpu_list()
        ));
        let run = drain(&fleet, &backlog, drainer, &programs)
            .await
            .with_context(|| drainer.system())?;
        drained.push(run);
    }
    progress.update(&format!("{:<12} raw-rdkafka (transport only)", scenario.name));
    let transport_only = run_transport(&fleet.infrastructure, &scenario.name, &backlog).await?;
    fleet.stop().await?;

    let [
        (framefleet, framefleet_results),
        python_opencv,
        python_opencv_reduced,
        (framefleet_all_cores, _),
    ] = <[_; 4]>::try_from(drained).map_err(|_| anyhow::anyhow!("four consumers ran"))?;
    let compared = |(mut run, results): (ConsumerRun, Vec<FrameResult>)| {
        run.framefleet_over_this = Ratio::of(&framefleet, &run);
        run.difference_from_framefleet = Some(score_difference(&framefleet_results, &results));
        run
    };
    let run = BaselineRun {
        name: scenario.name.clone(),
        title: scenario.title.clone(),
        source: scenario.source(),
        frames: backlog.frames,
        bytes_per_frame: backlog.bytes_per_frame(),
        backlog_frames_per_second: backlog.frames as f64 / backlog.seconds.max(1e-6),
        pinned_core: PINNED_CORE,
        python_opencv: compared(python_opencv),
        python_opencv_reduced: compared(python_opencv_reduced),
        cores: available_cores(),
        core_scaling: framefleet_all_cores.frames_per_second / framefleet.frames_per_second.max(1e-9),
        framefleet_all_cores,
        framefleet,
        transport_only,
    };
    progress.finish(&format!(
        "{:<12} frames/s on one core: framefleet {:.1}, python-opencv {:.1}, reduced {:.1}; CPU ms/frame {:.2} / {:.2} / {:.2}",
        run.name,
        run.framefleet.frames_per_second,
        run.python_opencv.frames_per_second,
        run.python_opencv_reduced.frames_per_second,
        run.framefleet.cpu_ms_per_frame,
        run.python_opencv.cpu_ms_per_frame,
        run.python_opencv_reduced.cpu_ms_per_frame,
    ));
    Ok(run)
}

impl Ratio {
    fn of(framefleet: &ConsumerRun, theirs: &ConsumerRun) -> Self {
        Self {
            frames_per_second: framefleet.frames_per_second / theirs.frames_per_second.max(1e-9),
            cpu_ms_per_frame: framefleet.cpu_ms_per_frame / theirs.cpu_ms_per_frame.max(1e-9),
        }
    }
}

pub(crate) struct Backlog {
    pub(crate) topic: String,
    pub(crate) frames: u64,
    /// The ingestor's start to its last frame acknowledged.
    pub(crate) seconds: f64,
    pub(crate) records: Vec<OwnedMessage>,
}

impl Backlog {
    pub(crate) fn bytes_per_frame(&self) -> f64 {
        self.records.iter().map(record_bytes).sum::<u64>() as f64 / self.records.len().max(1) as f64
    }
}

/// The ingestor replays the scenario's video at full speed until `frames` are acknowledged.
pub(crate) async fn write_backlog(fleet: &Fleet, scenario: &BaselineScenario) -> anyhow::Result<Backlog> {
    let channel_id = fleet.names.channel_id("cam0");
    let source = format!("file://{}?loop=true", scenario.video.display());
    let arguments = experiment::camera_args(&scenario.cameras, "max", scenario.frames);
    let arguments: Vec<&str> = arguments.iter().map(String::as_str).collect();
    let config = fleet.ingestor_config(
        &format!("{}-ingestor", scenario.name),
        &[(channel_id.as_str(), source.as_str())],
        &arguments,
    )?;
    let started = Instant::now();
    let summary = framefleet_ingestor::run(config, CancellationToken::new()).await?;
    let seconds = started.elapsed().as_secs_f64();
    let acknowledged = experiment::acknowledged(&summary)?;
    anyhow::ensure!(
        acknowledged == scenario.frames,
        "the ingestor acknowledged {acknowledged} of {} frames",
        scenario.frames
    );
    let topic = format!("{}{channel_id}", framefleet_common::kafka::CHANNEL_TOPIC_PREFIX);
    let brokers = fleet.infrastructure.kafka_brokers.clone();
    let reader_topic = topic.clone();
    let expected = scenario.frames as usize;
    let records = tokio::task::spawn_blocking(move || {
        read_topic(
            &brokers,
            &reader_topic,
            expected,
            Duration::from_secs(60),
            Duration::ZERO,
        )
    })
    .await??;
    anyhow::ensure!(
        records.len() == expected,
        "{topic} holds {} of {expected} frames",
        records.len()
    );
    Ok(Backlog {
        topic,
        frames: scenario.frames,
        seconds,
        records,
    })
}

/// Runs one consumer over the backlog, pinned, and measures it from its results.
async fn drain(
    fleet: &Fleet,
    backlog: &Backlog,
    drainer: Drainer,
    programs: &Programs,
) -> anyhow::Result<(ConsumerRun, Vec<FrameResult>)> {
    let system = drainer.system();
    let names = &fleet.names;
    let brokers = fleet.infrastructure.kafka_brokers.as_str();
    let is_framefleet = matches!(drainer, Drainer::Framefleet | Drainer::FramefleetAllCores);
    // Each run its own group and results topic, so each drains the whole backlog.
    let group = format!("{}-{system}", names.worker_group);
    let results_topic = format!("{}-{system}", names.results_topic);
    crate::create_plain_topic(brokers, &results_topic, 1 << 20).await?;
    let (program, arguments) = if is_framefleet {
        // Defaults only: tuning flags would measure a configuration, not the worker.
        let arguments = fleet.draining_worker_args(&format!("{}-{system}", names.suffix), &group, &results_topic);
        (programs.worker.clone(), arguments)
    } else {
        let mut arguments = [
            PYTHON_CONSUMER,
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
        ]
        .map(str::to_owned)
        .to_vec();
        if drainer == Drainer::PythonOpencvReduced {
            arguments.push("--reduced-decode".to_owned());
        }
        (programs.python.clone(), arguments)
    };
    let log = crate::process::log_path(&format!("{}-{system}.log", names.suffix))?;
    let mut process = PinnedProcess::spawn(system, &drainer.cpu_list(), &program, &arguments, &log)?;
    let results = read_results(brokers, &results_topic, backlog.frames, &mut process).await?;
    let cpu = process.cpu_profile();
    if is_framefleet {
        process.terminate(Duration::from_secs(30)).await?;
    } else {
        // It stops by itself after the backlog's frames, once the last result is delivered.
        process.wait(Duration::from_secs(60)).await?;
    }
    ConsumerRun::measure(system, &results, &cpu).map(|run| (run, results))
}

impl ConsumerRun {
    pub(crate) fn measure(system: &'static str, results: &[FrameResult], cpu: &CpuProfile) -> anyhow::Result<Self> {
        let started_us = results
            .iter()
            .map(|result| result.processed_time_us - i64::try_from(result.batch_compute_us).unwrap_or(i64::MAX))
            .min()
            .context("no results")?;
        let ended_us = results
            .iter()
            .map(|result| result.processed_time_us)
            .max()
            .context("no results")?;
        let frames = results.len() as u64;
        let seconds = (ended_us - started_us) as f64 / 1e6;
        let cpu_seconds = cpu.cpu_between(started_us, ended_us);
        Ok(Self {
            system,
            frames,
            seconds,
            frames_per_second: frames as f64 / seconds.max(1e-6),
            cpu_seconds,
            cpu_ms_per_frame: cpu_seconds * 1000.0 / frames.max(1) as f64,
            process_cpu_seconds: cpu.cpu_at(ended_us),
            framefleet_over_this: Ratio {
                frames_per_second: 1.0,
                cpu_ms_per_frame: 1.0,
            },
            difference_from_framefleet: None,
        })
    }
}

/// Reads `topic` from the beginning until a result for each of `frames` frames arrived (one
/// per frame: a duplicate of at-least-once delivery counts once), failing early when the
/// process that writes them fails, or exits without having written them all.
pub(crate) async fn read_results(
    brokers: &str,
    topic: &str,
    frames: u64,
    process: &mut PinnedProcess,
) -> anyhow::Result<Vec<FrameResult>> {
    let consumer_brokers = brokers.to_owned();
    let consumer_topic = topic.to_owned();
    let consumer = tokio::task::spawn_blocking(move || -> anyhow::Result<StreamConsumer> {
        let consumer: StreamConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &consumer_brokers)
            .set("group.id", format!("reader-{consumer_topic}"))
            .set("enable.auto.commit", "false")
            .create()?;
        let metadata = consumer.fetch_metadata(Some(&consumer_topic), Duration::from_secs(10))?;
        let mut assignment = rdkafka::TopicPartitionList::new();
        for partition in metadata.topics().iter().flat_map(|topic| topic.partitions()) {
            assignment.add_partition_offset(&consumer_topic, partition.id(), rdkafka::Offset::Beginning)?;
        }
        consumer.assign(&assignment)?;
        Ok(consumer)
    })
    .await??;
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    // A consumer that exits has delivered every result it will: a few seconds for the reader.
    let mut exited_at = None;
    let mut checks = tokio::time::interval(Duration::from_millis(500));
    let mut seen = HashSet::new();
    let mut results = Vec::with_capacity(frames as usize);
    while (results.len() as u64) < frames {
        tokio::select! {
            record = consumer.recv() => {
                let record = record?;
                let payload = record.payload().context("a result record without a payload")?;
                let result: FrameResult = serde_json::from_slice(payload)
                    .with_context(|| format!("a record of {topic} is not a frame result"))?;
                if seen.insert((result.channel_id.clone(), result.ingestor_epoch, result.sequence)) {
                    results.push(result);
                }
            }
            _ = checks.tick() => {
                if process.has_exited()? {
                    let exited_at = *exited_at.get_or_insert_with(Instant::now);
                    anyhow::ensure!(
                        exited_at.elapsed() < Duration::from_secs(10),
                        "the consumer exited after {} of {frames} results; see {}",
                        results.len(),
                        process.log().display()
                    );
                }
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "{} of {frames} results in {DRAIN_TIMEOUT:?}; see {}",
                    results.len(),
                    process.log().display()
                );
            }
        }
    }
    Ok(results)
}

fn score_difference(framefleet: &[FrameResult], theirs: &[FrameResult]) -> ScoreDifference {
    let reference: HashMap<(u64, u64), &FrameScores> = framefleet
        .iter()
        .filter_map(|result| Some(((result.ingestor_epoch, result.sequence), result.scores.as_ref()?)))
        .collect();
    let pairs: Vec<(&FrameScores, &FrameScores)> = theirs
        .iter()
        .filter_map(|result| {
            let ours = reference.get(&(result.ingestor_epoch, result.sequence))?;
            Some((*ours, result.scores.as_ref()?))
        })
        .collect();
    let mean_difference = |score: fn(&FrameScores) -> f32| {
        pairs
            .iter()
            .map(|(ours, theirs)| f64::from((score(ours) - score(theirs)).abs()))
            .sum::<f64>()
            / pairs.len().max(1) as f64
    };
    ScoreDifference {
        frames: pairs.len() as u64,
        mean_luma: mean_difference(|scores| scores.mean_luma),
        contrast: mean_difference(|scores| scores.contrast),
        sharpness: mean_difference(|scores| scores.sharpness),
        edge_strength: mean_difference(|scores| scores.edge_strength),
        motion: mean_difference(|scores| scores.motion),
    }
}

fn record_bytes(record: &impl rdkafka::Message) -> u64 {
    use rdkafka::message::Headers;
    let headers: usize = record.headers().map_or(0, |headers| {
        headers
            .iter()
            .map(|header| header.key.len() + header.value.map_or(0, <[u8]>::len))
            .sum()
    });
    (record.payload().map_or(0, <[u8]>::len) + record.key().map_or(0, <[u8]>::len) + headers) as u64
}

/// The backlog's records through a plain producer and a plain group consumer at once.
async fn run_transport(
    infrastructure: &Infrastructure,
    label: &str,
    backlog: &Backlog,
) -> anyhow::Result<TransportRun> {
    let topic = format!(
        "{label}-raw-rdkafka-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let largest_record = backlog.records.iter().map(record_bytes).max().unwrap_or(0) as usize + 4096;
    crate::create_plain_topic(&infrastructure.kafka_brokers, &topic, largest_record as u64).await?;
    let brokers = infrastructure.kafka_brokers.clone();
    let records = backlog.records.clone();
    tokio::task::spawn_blocking(move || run_transport_blocking(&brokers, &topic, largest_record, &records))
        .await
        .context("raw-rdkafka panicked")?
}

fn run_transport_blocking(
    brokers: &str,
    topic: &str,
    largest_record: usize,
    records: &[OwnedMessage],
) -> anyhow::Result<TransportRun> {
    let frames = records.len() as u64;
    let consumer_topic = topic.to_owned();
    let consumer_brokers = brokers.to_owned();
    let consuming = std::thread::spawn(move || consume_all(&consumer_brokers, &consumer_topic, frames, largest_record));
    let producer: ThreadedProducer<DefaultProducerContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("message.max.bytes", (largest_record + 65_536).to_string())
        .create()?;
    let started = Instant::now();
    for source in records {
        let mut record = BaseRecord::<[u8], [u8]>::to(topic).payload(source.payload().unwrap_or_default());
        if let Some(key) = source.key() {
            record = record.key(key);
        }
        if let Some(headers) = source.headers() {
            record = record.headers(headers.clone());
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                    back,
                )) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((error, _)) => anyhow::bail!("raw-rdkafka: produce failed: {error}"),
            }
        }
    }
    producer.flush(Duration::from_secs(120))?;
    let last_at = consuming
        .join()
        .map_err(|_| anyhow::anyhow!("raw-rdkafka consumer panicked"))??;
    let seconds = last_at.duration_since(started).as_secs_f64();
    Ok(TransportRun {
        system: "raw-rdkafka",
        frames,
        seconds,
        frames_per_second: frames as f64 / seconds.max(1e-6),
    })
}

/// A plain group consumer that counts records and looks at nothing; returns when the last
/// one arrived.
fn consume_all(brokers: &str, topic: &str, frames: u64, largest_record: usize) -> anyhow::Result<Instant> {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("{topic}-consumer"))
        .set("auto.offset.reset", "earliest")
        .set("max.partition.fetch.bytes", (largest_record + 65_536).to_string())
        .create()?;
    consumer.subscribe(&[topic])?;
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    let mut consumed = 0;
    let mut last_at = Instant::now();
    while consumed < frames {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{topic}: consumed {consumed} of {frames} in {DRAIN_TIMEOUT:?}"
        );
        let Some(result) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        result?;
        consumed += 1;
        last_at = Instant::now();
    }
    Ok(last_at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(sequence: u64, processed_time_us: i64, batch_compute_us: u64, mean_luma: f32) -> FrameResult {
        FrameResult {
            channel_id: "cam".to_owned(),
            sequence,
            ingestor_epoch: 1,
            schema_version: 1,
            capture_time_us: 0,
            processed_time_us,
            produced_time_us: None,
            consumed_time_us: 0,
            decode_us: 0,
            worker_id: "w".to_owned(),
            source_topic: "t".to_owned(),
            source_partition: 0,
            source_offset: sequence as i64,
            batch_size: 1,
            batch_compute_us,
            scores: Some(FrameScores {
                mean_luma,
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
        }
    }

    #[test]
    fn the_clock_runs_from_the_first_compute_to_the_last_result() {
        let cpu = CpuProfile::new(vec![
            crate::process::CpuSample {
                unix_us: 0,
                cpu_seconds: 0.5,
            },
            crate::process::CpuSample {
                unix_us: 3_000_000,
                cpu_seconds: 2.0,
            },
        ]);
        let results = [result(0, 1_500_000, 500_000, 0.0), result(1, 3_000_000, 1_000_000, 0.0)];
        let run = ConsumerRun::measure("x", &results, &cpu).expect("measured");
        assert_eq!(run.seconds, 2.0, "from 1.0 s to 3.0 s");
        assert_eq!(run.frames_per_second, 1.0);
        assert_eq!(run.cpu_seconds, 1.0, "half a CPU second per wall second");
        assert_eq!(run.cpu_ms_per_frame, 500.0);
        assert_eq!(run.process_cpu_seconds, 2.0);
        let slower = ConsumerRun {
            frames_per_second: 0.5,
            cpu_ms_per_frame: 1000.0,
            ..run.clone()
        };
        let ratio = Ratio::of(&run, &slower);
        assert_eq!((ratio.frames_per_second, ratio.cpu_ms_per_frame), (2.0, 0.5));
    }

    #[test]
    fn scores_are_compared_frame_by_frame() {
        let ours = [result(0, 0, 0, 100.0), result(1, 0, 0, 120.0)];
        let theirs = [result(1, 0, 0, 121.0), result(0, 0, 0, 99.0), result(7, 0, 0, 0.0)];
        let difference = score_difference(&ours, &theirs);
        assert_eq!(difference.frames, 2, "frame 7 has no counterpart");
        assert_eq!(difference.mean_luma, 1.0);
        assert_eq!(difference.motion, 0.0);
    }
}
