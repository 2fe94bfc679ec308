//! `framefleet-ops-check`: the worker's analysis on a device (`--device cuda` on a GPU machine)
//! against the fused CPU kernel, over the same real frames, every score and motion box
//! compared, and the device path timed at several batch sizes. Prints a table, writes JSON,
//! and exits 1 when the device disagrees with the reference beyond the tolerance.
//! `scripts/device-check.sh` runs it; see `framefleet_worker::device_check`.

use anyhow::Context;
use clap::Parser;
use framefleet_worker::device_check::{self, CheckSettings, Tolerance};
use framefleet_worker::ops::{self, AnalysisSettings};
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Checks the worker's analysis on a device against the CPU reference and times it per batch size"
)]
struct Args {
    /// Folder of JPEG frames (any sizes; each size is checked on its own), in name order.
    #[arg(long)]
    frames: PathBuf,
    /// cpu, cuda, or auto. On cpu the candle op graph (the GPU path) runs on the CPU.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Batch sizes to time, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    batch_sizes: Vec<usize>,
    /// Frame i belongs to channel i % CHANNELS (each with its own background model).
    #[arg(long, default_value_t = 4)]
    channels: usize,
    /// Timed passes over all frames per batch size.
    #[arg(long, default_value_t = 3)]
    passes: usize,
    /// Longer side of the analysis size, as the worker's --analysis-max-side.
    #[arg(long, default_value_t = 480)]
    analysis_max_side: usize,
    /// Largest difference of a score (0–255 scale) that still agrees.
    #[arg(long, default_value_t = Tolerance::default().score)]
    score_tolerance: f32,
    /// Largest difference of the moving fraction (0–1) that still agrees.
    #[arg(long, default_value_t = Tolerance::default().motion)]
    motion_tolerance: f32,
    /// Largest motion box edge shift, in analysis pixels, that still agrees.
    #[arg(long, default_value_t = Tolerance::default().box_pixels)]
    box_tolerance: u32,
    /// Write the results here as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write each size's staged planes and reference scores here (for the PyTorch script).
    #[arg(long)]
    dump_reference: Option<PathBuf>,
}

fn main() -> ExitCode {
    device_check::exit_code("framefleet-ops-check", run(Args::parse()))
}

fn run(args: Args) -> anyhow::Result<bool> {
    let device = ops::select_device(&args.device)?;
    let settings = CheckSettings {
        batch_sizes: args.batch_sizes.clone(),
        channels: args.channels,
        passes: args.passes,
        analysis: AnalysisSettings {
            max_side: args.analysis_max_side,
            ..AnalysisSettings::default()
        },
        tolerance: Tolerance {
            score: args.score_tolerance,
            motion: args.motion_tolerance,
            box_pixels: args.box_tolerance,
        },
    };
    let by_size = device_check::load_jpegs(&args.frames)?;
    let device_name = ops::describe_device(&device);
    if args.device == "auto" && device.is_cpu() {
        eprintln!("framefleet-ops-check: no usable CUDA device; --device auto runs on the CPU");
    }
    println!(
        "{:<10} {:<8} {:>6} {:>7} {:>6} {:>10} {:>11} {:>10} {:>10} {:>10} {:>6}",
        "frame",
        "analysis",
        "frames",
        "device",
        "batch",
        "upload ms",
        "analyse ms",
        "frames/s",
        "score Δ",
        "motion Δ",
        "agree"
    );
    let mut all_agree = true;
    let mut sizes = Vec::new();
    for (size, jpegs) in &by_size {
        let reference = device_check::reference(jpegs, *size, &settings)?;
        if let Some(dir) = &args.dump_reference {
            device_check::dump_reference(dir, *size, &reference, &settings)?;
        }
        let analysis_size = reference
            .frames
            .first()
            .map_or((0, 0), |frame| (frame.luma.width(), frame.luma.height()));
        let mut batches = Vec::new();
        for &batch in &settings.batch_sizes {
            let timing = device_check::time_graph(&reference, &device, batch, &settings)
                .with_context(|| format!("{}×{} at batch {batch} on {device_name}", size.0, size.1))?;
            let agrees = timing.differences.within(&settings.tolerance);
            all_agree &= agrees;
            println!(
                "{:<10} {:<8} {:>6} {:>7} {:>6} {:>10.3} {:>11.3} {:>10.1} {:>10.5} {:>10.5} {:>6}",
                format!("{}x{}", size.0, size.1),
                format!("{}x{}", analysis_size.0, analysis_size.1),
                jpegs.len(),
                device_name,
                batch,
                timing.upload_ms,
                timing.analyse_ms,
                timing.frames_per_second,
                timing.differences.score,
                timing.differences.motion,
                if agrees { "yes" } else { "NO" }
            );
            batches.push(json!({
                "batch": batch,
                "upload_ms_per_batch": timing.upload_ms,
                "analyse_ms_per_batch": timing.analyse_ms,
                "frames_per_second": timing.frames_per_second,
                "worst_score_difference": timing.differences.score,
                "worst_motion_difference": timing.differences.motion,
                "worst_box_shift_pixels": timing.differences.box_pixels,
                "boxes_differing": timing.differences.boxes_differing,
                "agrees": agrees,
            }));
        }
        println!(
            "{:<10} CPU decode to luma at {}x{}: {:.3} ms/frame; fused CPU kernel (the reference): {:.3} ms/frame, one thread",
            format!("{}x{}", size.0, size.1),
            analysis_size.0,
            analysis_size.1,
            reference.decode_ms_per_frame,
            reference.cpu_kernel_ms_per_frame
        );
        sizes.push(json!({
            "full_size": [size.0, size.1],
            "analysis_size": [analysis_size.0, analysis_size.1],
            "frames": jpegs.len(),
            "cpu_decode_ms_per_frame": reference.decode_ms_per_frame,
            "cpu_kernel_ms_per_frame": reference.cpu_kernel_ms_per_frame,
            "graph": batches,
        }));
    }
    if let Some(path) = &args.json {
        let document = json!({
            "device": device_name,
            "channels": settings.channels,
            "passes": settings.passes,
            "tolerance": device_check::tolerance_json(&settings.tolerance),
            "sizes": sizes,
            "agrees": all_agree,
        });
        std::fs::write(path, format!("{document:#}\n")).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if !all_agree {
        eprintln!("framefleet-ops-check: {device_name} disagrees with the CPU reference beyond the tolerance");
    }
    Ok(all_agree)
}
