//! Runs scenario files one after the other and writes what they measured under the results
//! directory: a CSV per run, PNG figures, `summary.json`, `summary.md` and `machine.json`.
//! Files are written as each scenario finishes, so an interrupted run keeps what it finished.

use crate::baseline::{BaselineRun, run_baselines};
use crate::experiment::{LagRun, ScalingRun, run_lag, run_scaling};
use crate::report::{MachineDescription, Progress};
use crate::scenario::Scenario;
use crate::{Infrastructure, plot};
use anyhow::Context;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[derive(Debug, Serialize)]
pub struct Summary {
    pub machine: MachineDescription,
    pub lag: Vec<LagRun>,
    pub scaling: Vec<ScalingRun>,
    pub baselines: Vec<BaselineRun>,
    pub detection: Vec<crate::detect_baseline::DetectionRun>,
    /// Every file this run wrote, relative to the results directory.
    pub files: Vec<String>,
}

pub async fn run_all(
    infrastructure: &Infrastructure,
    scenarios: &[Scenario],
    results_dir: &Path,
    machine: MachineDescription,
    progress: &Progress,
) -> anyhow::Result<Summary> {
    std::fs::create_dir_all(results_dir).with_context(|| format!("cannot create {}", results_dir.display()))?;
    let mut summary = Summary {
        machine,
        lag: Vec::new(),
        scaling: Vec::new(),
        baselines: Vec::new(),
        detection: Vec::new(),
        files: Vec::new(),
    };
    let label = summary.machine.label();
    write_json(results_dir, "machine.json", &summary.machine, &mut summary.files)?;
    for scenario in scenarios {
        match scenario {
            Scenario::Lag(lag) => {
                let run = run_lag(infrastructure, lag, progress)
                    .await
                    .with_context(|| format!("scenario {}", lag.name))?;
                write_file(
                    results_dir,
                    &format!("{}.csv", run.name),
                    &lag_csv(&run),
                    &mut summary.files,
                )?;
                plot_into(results_dir, &format!("{}.png", run.name), &mut summary.files, |path| {
                    plot::lag_figure(&run, &label, path)
                })?;
                summary.lag.push(run);
                let runs: Vec<&LagRun> = summary.lag.iter().collect();
                plot_into(results_dir, "lag-overlay.png", &mut summary.files, |path| {
                    plot::lag_overlay_figure(&runs, &label, path)
                })?;
                let measured: Vec<&LagRun> = runs.into_iter().filter(|run| run.latency.count > 0).collect();
                plot_into(results_dir, "latency.png", &mut summary.files, |path| {
                    plot::latency_figure(&measured, &label, path)
                })?;
            }
            Scenario::Scaling(scaling) => {
                let run = run_scaling(infrastructure, scaling, progress)
                    .await
                    .with_context(|| format!("scenario {}", scaling.name))?;
                write_file(
                    results_dir,
                    &format!("{}.csv", run.name),
                    &scaling_csv(&run),
                    &mut summary.files,
                )?;
                plot_into(results_dir, &format!("{}.png", run.name), &mut summary.files, |path| {
                    plot::scaling_figure(&run, &label, path)
                })?;
                summary.scaling.push(run);
            }
            Scenario::Baselines(baselines) => {
                let run = run_baselines(infrastructure, baselines, progress)
                    .await
                    .with_context(|| format!("scenario {}", baselines.name))?;
                write_file(
                    results_dir,
                    &format!("{}.csv", run.name),
                    &baselines_csv(&run),
                    &mut summary.files,
                )?;
                write_json(results_dir, &format!("{}.json", run.name), &run, &mut summary.files)?;
                plot_into(results_dir, &format!("{}.png", run.name), &mut summary.files, |path| {
                    plot::baselines_figure(&run, &label, path)
                })?;
                summary.baselines.push(run);
            }
            Scenario::Detection(detection) => {
                let run = crate::detect_baseline::run_detection_baselines(infrastructure, detection, progress)
                    .await
                    .with_context(|| format!("scenario {}", detection.name))?;
                write_file(
                    results_dir,
                    &format!("{}.csv", run.name),
                    &crate::detect_baseline::detection_csv(&run),
                    &mut summary.files,
                )?;
                write_json(results_dir, &format!("{}.json", run.name), &run, &mut summary.files)?;
                summary.detection.push(run);
            }
        }
        let markdown = markdown(&summary);
        write_file(results_dir, "summary.md", &markdown, &mut summary.files)?;
        remember(&mut summary.files, "summary.json");
        std::fs::write(
            results_dir.join("summary.json"),
            serde_json::to_string_pretty(&summary)?,
        )?;
    }
    Ok(summary)
}

fn remember(files: &mut Vec<String>, name: &str) {
    if !files.iter().any(|file| file == name) {
        files.push(name.to_owned());
    }
}

fn write_file(dir: &Path, name: &str, contents: &str, files: &mut Vec<String>) -> anyhow::Result<()> {
    let path = dir.join(name);
    std::fs::write(&path, contents).with_context(|| format!("cannot write {}", path.display()))?;
    remember(files, name);
    Ok(())
}

fn write_json(dir: &Path, name: &str, value: &impl Serialize, files: &mut Vec<String>) -> anyhow::Result<()> {
    write_file(dir, name, &serde_json::to_string_pretty(value)?, files)
}

fn plot_into(
    dir: &Path,
    name: &str,
    files: &mut Vec<String>,
    draw: impl FnOnce(&Path) -> Result<(), plot::PlotError>,
) -> anyhow::Result<()> {
    let path: PathBuf = dir.join(name);
    draw(&path)?;
    remember(files, name);
    Ok(())
}

pub fn lag_csv(run: &LagRun) -> String {
    let mut csv = String::from("elapsed_s,phase,accumulate,consume,lag,accumulate_per_s,consume_per_s,workers\n");
    for sample in &run.samples {
        let _ = writeln!(
            csv,
            "{:.3},{},{},{},{},{:.2},{:.2},{}",
            sample.elapsed_s,
            if sample.generating { "generating" } else { "draining" },
            sample.accumulate,
            sample.consume,
            sample.lag,
            sample.accumulate_per_s,
            sample.consume_per_s,
            sample.workers
        );
    }
    csv
}

fn scaling_csv(run: &ScalingRun) -> String {
    let mut csv = String::from("workers,frames,seconds,frames_per_second,efficiency\n");
    for point in &run.points {
        let _ = writeln!(
            csv,
            "{},{},{:.3},{:.2},{:.3}",
            point.workers, point.frames, point.seconds, point.frames_per_second, point.efficiency
        );
    }
    csv
}

/// A row per consumer with framefleet ÷ its frames/s and CPU ms per frame, then the
/// transport-only line, whose CPU and ratio cells stay empty.
fn baselines_csv(run: &BaselineRun) -> String {
    let mut csv = String::from(
        "system,kind,frames,seconds,frames_per_second,cpu_seconds,cpu_ms_per_frame,framefleet_fps_ratio,framefleet_cpu_ratio\n",
    );
    for system in run.consumers() {
        let _ = writeln!(
            csv,
            "{},consumer,{},{:.3},{:.2},{:.3},{:.3},{:.3},{:.3}",
            system.system,
            system.frames,
            system.seconds,
            system.frames_per_second,
            system.cpu_seconds,
            system.cpu_ms_per_frame,
            system.framefleet_over_this.frames_per_second,
            system.framefleet_over_this.cpu_ms_per_frame,
        );
    }
    let transport = &run.transport_only;
    let _ = writeln!(
        csv,
        "{},transport-only,{},{:.3},{:.2},,,,",
        transport.system, transport.frames, transport.seconds, transport.frames_per_second
    );
    csv
}

/// The tables docs/performance.md quotes.
pub fn markdown(summary: &Summary) -> String {
    let mut text = format!("Machine: {}\n\n", summary.machine.label());
    if !summary.lag.is_empty() {
        text.push_str(
            "| scenario | cameras | frames | lag at end of generation | peak lag | drained at | in / out frames/s | latency p50 / p95 / p99 |\n\
             |---|---|---|---|---|---|---|---|\n",
        );
        for run in &summary.lag {
            let _ = writeln!(
                text,
                "| {} ({}) | {} | {} | {} | {} | {} | {:.1} / {:.1} | {:.2} / {:.2} / {:.2} s |",
                run.title,
                run.name,
                run.cameras,
                run.frames_generated,
                run.lag_at_generation_end,
                run.peak_lag,
                run.drained_s
                    .map_or_else(|| "not drained".to_owned(), |drained| format!("{drained:.0} s")),
                run.accumulate_per_s,
                run.consume_per_s,
                run.latency.p50_ms / 1000.0,
                run.latency.p95_ms / 1000.0,
                run.latency.p99_ms / 1000.0,
            );
        }
        text.push('\n');
    }
    for run in &summary.scaling {
        let _ = writeln!(
            text,
            "Scaling, {} ({}), backlog {} frames:\n\n| workers | frames/s | efficiency vs linear |\n|---|---|---|",
            run.title, run.cameras, run.backlog_frames
        );
        for point in &run.points {
            let _ = writeln!(
                text,
                "| {} | {:.1} | {:.0} % |",
                point.workers,
                point.frames_per_second,
                point.efficiency * 100.0
            );
        }
        text.push('\n');
    }
    for run in &summary.detection {
        let _ = writeln!(
            text,
            "Detection, {} ({}): a backlog of {} frames, the person detector on every frame, each consumer alone:\n\n\
             | consumer | CPUs | frames/s | CPU ms/frame | persons ≥ 0.5 | framefleet ÷ frames/s |\n|---|---|---|---|---|---|",
            run.title, run.source, run.frames
        );
        for consumer in &run.consumers {
            let _ = writeln!(
                text,
                "| {} | {} | {:.1} | {:.2} | {} | {:.3} |",
                consumer.run.system,
                consumer.cpus,
                consumer.run.frames_per_second,
                consumer.run.cpu_ms_per_frame,
                consumer.persons,
                consumer.framefleet_over_this
            );
        }
        text.push('\n');
    }
    for run in &summary.baselines {
        let _ = writeln!(
            text,
            "Baselines, {} ({}): a backlog of {} frames ({:.0} bytes each) drained by each consumer alone, \
             pinned to CPU core {}:\n\n\
             | consumer | frames/s | CPU ms/frame | framefleet ÷ frames/s | framefleet ÷ CPU ms/frame |\n|---|---|---|---|---|",
            run.title, run.source, run.frames, run.bytes_per_frame, run.pinned_core
        );
        for system in run.consumers() {
            let _ = writeln!(
                text,
                "| {} | {:.1} | {:.2} | {:.3} | {:.3} |",
                system.system,
                system.frames_per_second,
                system.cpu_ms_per_frame,
                system.framefleet_over_this.frames_per_second,
                system.framefleet_over_this.cpu_ms_per_frame
            );
        }
        let _ = writeln!(
            text,
            "\nThe same worker on all {} cores: {:.1} frames/s, {:.2}× its one-core rate ({:.2} CPU ms/frame).\n",
            run.cores,
            run.framefleet_all_cores.frames_per_second,
            run.core_scaling,
            run.framefleet_all_cores.cpu_ms_per_frame
        );
        let _ = writeln!(
            text,
            "\nTransport only, not a baseline (no decode, no analysis): {} moves the same records at {:.1} frames/s.\n",
            run.transport_only.system, run.transport_only.frames_per_second
        );
    }
    text
}
