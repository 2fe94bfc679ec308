//! The paper's experiment (accumulate / consume / lag over time) and the scaling run, both
//! through the real system: a coordinator, one ingestor with synthetic cameras and a worker
//! group, in this process, against the broker and etcd of `deploy/local/infra.sh`.

use crate::report::{LatencySummary, Progress};
use crate::scenario::{Cameras, LagScenario, ScalingScenario};
use crate::{Fleet, Infrastructure};
use anyhow::Context;
use framefleet_proto::v1::{FleetStatus, GetFleetStatusRequest};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// One second of the paper's experiment, summed over the scenario's topics.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub elapsed_s: f64,
    /// True while the cameras are still generating.
    pub generating: bool,
    pub accumulate: u64,
    pub consume: u64,
    pub lag: u64,
    pub accumulate_per_s: f64,
    pub consume_per_s: f64,
    pub workers: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct LagRun {
    pub name: String,
    pub title: String,
    pub topics: u32,
    pub workers: u32,
    pub cameras: String,
    pub generation_secs: u64,
    pub frames_generated: u64,
    /// When the last camera stopped, from the start of generation.
    pub generation_ended_s: f64,
    /// When consume reached accumulate for good; None when the drain timed out.
    pub drained_s: Option<f64>,
    pub peak_lag: u64,
    pub lag_at_generation_end: u64,
    /// Frames/s written during generation and consumed from start to drained.
    pub accumulate_per_s: f64,
    pub consume_per_s: f64,
    pub latency: LatencySummary,
    pub results_per_worker: BTreeMap<String, u64>,
    pub duplicate_results: u64,
    #[serde(skip)]
    pub samples: Vec<Sample>,
}

pub(crate) fn channel_ids(fleet: &Fleet, cameras: &Cameras) -> Vec<String> {
    (0..cameras.count)
        .map(|index| fleet.names.channel_id(&format!("cam{index}")))
        .collect()
}

/// The ingestor's arguments for a scenario's cameras.
pub(crate) fn camera_args(cameras: &Cameras, pace: &str, frames_per_camera: u64) -> Vec<String> {
    [
        "--pace",
        pace,
        "--max-frames",
        &frames_per_camera.to_string(),
        "--encoding",
        cameras.encoding.as_arg(),
        "--width",
        &cameras.width.to_string(),
        "--height",
        &cameras.height.to_string(),
        "--fps",
        &cameras.fps.to_string(),
        "--queue-frames",
        "256",
    ]
    .iter()
    .map(|arg| (*arg).to_owned())
    .collect()
}

pub(crate) fn start_ingestor(
    fleet: &Fleet,
    label: &str,
    channel_ids: &[String],
    cameras: &Cameras,
    extra_args: &[String],
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<(anyhow::Result<framefleet_ingestor::IngestSummary>, Instant)>> {
    let source = format!("synthetic://{}x{}@{}", cameras.width, cameras.height, cameras.fps);
    let channels: Vec<(&str, &str)> = channel_ids.iter().map(|id| (id.as_str(), source.as_str())).collect();
    let extra: Vec<&str> = extra_args.iter().map(String::as_str).collect();
    let config = fleet.ingestor_config(&format!("{label}-ingestor"), &channels, &extra)?;
    // The moment the last camera stopped, not the moment somebody noticed.
    Ok(tokio::spawn(async move {
        let summary = framefleet_ingestor::run(config, shutdown).await;
        (summary, Instant::now())
    }))
}

fn registered_workers(status: &FleetStatus) -> usize {
    status.workers.iter().filter(|worker| worker.registered).count()
}

/// accumulate and consume summed over the topics of `channel_ids`.
pub(crate) fn topic_totals(status: &FleetStatus, channel_ids: &[String]) -> (u64, u64) {
    status
        .topics
        .iter()
        .filter(|metrics| channel_ids.iter().any(|id| metrics.topic.ends_with(id.as_str())))
        .fold((0, 0), |(accumulate, consume), metrics| {
            (accumulate + metrics.accumulate, consume + metrics.consume)
        })
}

pub(crate) fn acknowledged(summary: &framefleet_ingestor::IngestSummary) -> anyhow::Result<u64> {
    if let Some(failed) = summary.failed_channels().first() {
        anyhow::bail!("camera {} failed: {}", failed.channel_id, failed.last_error);
    }
    Ok(summary.channels.iter().map(|ledger| ledger.frames_acknowledged).sum())
}

/// Starts `count` workers and waits until the coordinator lists them all.
pub(crate) async fn start_workers(
    fleet: &mut Fleet,
    label: &str,
    count: u32,
    worker_args: &[String],
    cpu_quota: Option<f64>,
) -> anyhow::Result<()> {
    let worker_args: Vec<&str> = worker_args.iter().map(String::as_str).collect();
    for index in 1..=count {
        fleet.spawn_worker_in(&format!("{label}-worker-{index}"), &worker_args, cpu_quota)?;
    }
    fleet
        .wait_for_status(Duration::from_secs(60), |status| {
            registered_workers(status) == count as usize
        })
        .await
        .context("the workers did not register")?;
    Ok(())
}

/// Result records of the fleet, with the latency from capture to the result record's
/// timestamp (set when the worker hands the result to its producer).
#[derive(Default)]
pub(crate) struct Results {
    pub latency: LatencySummary,
    pub per_worker: BTreeMap<String, u64>,
    pub duplicates: u64,
    pub processed_us: Vec<i64>,
}

pub(crate) async fn read_fleet_results(fleet: &Fleet, expected: u64) -> anyhow::Result<Results> {
    let records = fleet
        .read_result_records(expected as usize, Duration::from_secs(120), Duration::from_millis(500))
        .await?;
    let mut latencies = Vec::with_capacity(records.len());
    let mut per_worker = BTreeMap::new();
    let mut seen = std::collections::HashSet::new();
    let mut processed_us = Vec::with_capacity(records.len());
    for (record, result) in &records {
        use rdkafka::message::Message;
        if !seen.insert((result.channel_id.clone(), result.sequence)) {
            continue;
        }
        if let Some(written_ms) = record.timestamp().to_millis() {
            latencies.push(written_ms as f64 - result.capture_time_us as f64 / 1000.0);
        }
        *per_worker.entry(result.worker_id.clone()).or_insert(0) += 1;
        processed_us.push(result.processed_time_us);
    }
    anyhow::ensure!(
        seen.len() as u64 == expected,
        "{} of {expected} frames have a result",
        seen.len()
    );
    Ok(Results {
        latency: LatencySummary::from_samples(latencies),
        per_worker,
        duplicates: (records.len() - seen.len()) as u64,
        processed_us,
    })
}

/// The paper's experiment: cameras generate in real time for `generation_secs` while the
/// workers consume; accumulate / consume / lag are sampled every second until every frame
/// is consumed.
pub async fn run_lag(
    infrastructure: &Infrastructure,
    scenario: &LagScenario,
    progress: &Progress,
) -> anyhow::Result<LagRun> {
    let mut fleet = Fleet::start_on(&scenario.name, infrastructure.clone()).await?;
    let channel_ids = channel_ids(&fleet, &scenario.cameras);
    start_workers(
        &mut fleet,
        &scenario.name,
        scenario.workers,
        &scenario.worker_args,
        scenario.worker_cpu_quota,
    )
    .await?;
    let frames_per_camera = (scenario.cameras.fps * scenario.generation_secs as f64).round() as u64;
    let ingest_shutdown = CancellationToken::new();
    let started = Instant::now();
    let mut ingesting = Some(start_ingestor(
        &fleet,
        &scenario.name,
        &channel_ids,
        &scenario.cameras,
        &camera_args(&scenario.cameras, "realtime", frames_per_camera),
        ingest_shutdown.clone(),
    )?);
    let _stop_cameras_on_error = ingest_shutdown.drop_guard();

    let mut client = fleet.fleet_client().await?;
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut samples: Vec<Sample> = Vec::new();
    let mut frames_generated = None;
    let mut generation_ended_s = 0.0;
    let mut drained_s = None;
    loop {
        ticks.tick().await;
        // Checked before the status is read, so a sample marked "draining" really comes after
        // the last frame was acknowledged.
        let generating = ingesting.as_ref().is_some_and(|task| !task.is_finished());
        if !generating && let Some(task) = ingesting.take() {
            let (summary, ended) = task.await.context("ingestor task panicked")?;
            frames_generated = Some(acknowledged(&summary?)?);
            generation_ended_s = ended.duration_since(started).as_secs_f64();
        }
        let status = client
            .get_fleet_status(GetFleetStatusRequest {})
            .await
            .context("GetFleetStatus")?
            .into_inner();
        let elapsed_s = started.elapsed().as_secs_f64();
        let (accumulate, consume) = topic_totals(&status, &channel_ids);
        let (accumulate_per_s, consume_per_s) = samples.last().map_or((0.0, 0.0), |previous| {
            let seconds = (elapsed_s - previous.elapsed_s).max(1e-3);
            (
                accumulate.saturating_sub(previous.accumulate) as f64 / seconds,
                consume.saturating_sub(previous.consume) as f64 / seconds,
            )
        });
        let sample = Sample {
            elapsed_s,
            generating,
            accumulate,
            consume,
            lag: accumulate.saturating_sub(consume),
            accumulate_per_s,
            consume_per_s,
            workers: registered_workers(&status),
        };
        progress.update(&format!(
            "{:<12} {:<10} {:>5.0} s  accumulate {:>7}  consume {:>7}  lag {:>6}  in {:>6.1}/s  out {:>6.1}/s",
            scenario.name,
            if generating { "generating" } else { "draining" },
            elapsed_s,
            sample.accumulate,
            sample.consume,
            sample.lag,
            sample.accumulate_per_s,
            sample.consume_per_s,
        ));
        samples.push(sample);
        if let Some(total) = frames_generated {
            if consume >= total {
                drained_s = Some(elapsed_s);
                break;
            }
            if elapsed_s - generation_ended_s > scenario.drain_timeout_secs as f64 {
                progress.finish(&format!(
                    "{}: the backlog did not drain within {} s",
                    scenario.name, scenario.drain_timeout_secs
                ));
                break;
            }
        }
    }
    let frames_generated = frames_generated.unwrap_or(0);
    let results = if drained_s.is_some() {
        read_fleet_results(&fleet, frames_generated).await?
    } else {
        Results::default()
    };
    fleet.stop().await?;
    let lag_at_generation_end = samples
        .iter()
        .rev()
        .find(|sample| sample.generating)
        .map_or(0, |sample| sample.lag);
    let run = LagRun {
        name: scenario.name.clone(),
        title: scenario.title.clone(),
        topics: scenario.cameras.count,
        workers: scenario.workers,
        cameras: scenario.cameras.describe(),
        generation_secs: scenario.generation_secs,
        frames_generated,
        generation_ended_s,
        drained_s,
        peak_lag: samples.iter().map(|sample| sample.lag).max().unwrap_or(0),
        lag_at_generation_end,
        accumulate_per_s: frames_generated as f64 / generation_ended_s.max(1e-3),
        consume_per_s: drained_s.map_or(0.0, |drained| frames_generated as f64 / drained),
        latency: results.latency,
        results_per_worker: results.per_worker,
        duplicate_results: results.duplicates,
        samples,
    };
    progress.finish(&format!(
        "{:<12} {} frames in {:.0} s; lag {} at the end of generation, peak {}; drained at {}; latency p50 {:.0} ms p99 {:.0} ms",
        run.name,
        run.frames_generated,
        run.generation_ended_s,
        run.lag_at_generation_end,
        run.peak_lag,
        run.drained_s.map_or_else(|| "never".to_owned(), |drained| format!("{drained:.0} s")),
        run.latency.p50_ms,
        run.latency.p99_ms,
    ));
    Ok(run)
}

#[derive(Debug, Clone, Serialize)]
pub struct ScalingPoint {
    pub workers: u32,
    /// Frames processed after every worker had joined, and the time they took.
    pub frames: u64,
    pub seconds: f64,
    pub frames_per_second: f64,
    /// frames/s ÷ (workers × frames/s of the first point).
    pub efficiency: f64,
    pub results_per_worker: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScalingRun {
    pub name: String,
    pub title: String,
    pub cameras: String,
    pub backlog_frames: u64,
    pub points: Vec<ScalingPoint>,
}

/// Consume rate of 1, 2, 4… workers on the same backlog. The backlog is written first (no
/// worker running, so capture does not compete with processing for the CPU); the clock
/// starts once every worker has joined and the partitions are spread, and counts the frames
/// whose results were computed after that moment.
pub async fn run_scaling(
    infrastructure: &Infrastructure,
    scenario: &ScalingScenario,
    progress: &Progress,
) -> anyhow::Result<ScalingRun> {
    let mut points: Vec<ScalingPoint> = Vec::new();
    let mut backlog_frames = 0;
    for &workers in &scenario.workers {
        let label = format!("{}-{workers}w", scenario.name);
        let mut fleet = Fleet::start_on(&label, infrastructure.clone()).await?;
        let channel_ids = channel_ids(&fleet, &scenario.cameras);
        progress.update(&format!("{label:<12} writing the backlog"));
        let summary = start_ingestor(
            &fleet,
            &label,
            &channel_ids,
            &scenario.cameras,
            &camera_args(&scenario.cameras, "max", scenario.frames_per_camera),
            CancellationToken::new(),
        )?
        .await
        .context("ingestor task panicked")?
        .0?;
        backlog_frames = acknowledged(&summary)?;

        for index in 1..=workers {
            fleet.spawn_worker_in(&format!("{label}-worker-{index}"), &[], scenario.worker_cpu_quota)?;
        }
        let partitions = scenario.cameras.count;
        fleet
            .wait_for_status(Duration::from_secs(60), |status| {
                let owned: Vec<u32> = status
                    .workers
                    .iter()
                    .filter(|worker| worker.registered)
                    .filter_map(|worker| worker.report.as_ref())
                    .map(|report| report.assigned_partitions)
                    .collect();
                owned.len() == workers as usize && owned.iter().sum::<u32>() == partitions
            })
            .await
            .context("the workers did not join and share the partitions")?;
        let settled_us = framefleet_common::startup::unix_time_us();
        let started = Instant::now();
        let mut client = fleet.fleet_client().await?;
        loop {
            let status = client.get_fleet_status(GetFleetStatusRequest {}).await?.into_inner();
            let (_, consume) = topic_totals(&status, &channel_ids);
            progress.update(&format!(
                "{label:<12} {workers} workers  consumed {consume}/{backlog_frames}  {:.0} s",
                started.elapsed().as_secs_f64()
            ));
            if consume >= backlog_frames {
                break;
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(900),
                "{label}: {workers} workers did not drain {backlog_frames} frames in 900 s"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let results = read_fleet_results(&fleet, backlog_frames).await?;
        fleet.stop().await?;
        let after: Vec<i64> = results
            .processed_us
            .iter()
            .copied()
            .filter(|&processed| processed >= settled_us)
            .collect();
        let last = after.iter().copied().max().unwrap_or(settled_us);
        let seconds = (last - settled_us) as f64 / 1e6;
        anyhow::ensure!(
            after.len() >= 10 && seconds > 0.0,
            "{label}: only {} frames were left after the workers joined; raise frames_per_camera",
            after.len()
        );
        let frames_per_second = after.len() as f64 / seconds;
        let base = points.first().map_or(frames_per_second, |first| {
            first.frames_per_second / f64::from(first.workers)
        });
        let point = ScalingPoint {
            workers,
            frames: after.len() as u64,
            seconds,
            frames_per_second,
            efficiency: frames_per_second / (f64::from(workers) * base),
            results_per_worker: results.per_worker,
        };
        progress.finish(&format!(
            "{label:<12} {workers} workers: {:.1} frames/s ({} frames in {:.1} s), efficiency {:.0} %",
            point.frames_per_second,
            point.frames,
            point.seconds,
            point.efficiency * 100.0
        ));
        points.push(point);
    }
    Ok(ScalingRun {
        name: scenario.name.clone(),
        title: scenario.title.clone(),
        cameras: scenario.cameras.describe(),
        backlog_frames,
        points,
    })
}
