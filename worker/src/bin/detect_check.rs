//! `framefleet-detect-check`: the person detector on a device against the CPU kernels, on the
//! detector's reference frames (`worker/tests/fixtures/detection`), and its forward pass timed
//! per batch size. With `--device cpu` the candidate is the GPU's path (candle tensor ops) run
//! on the CPU, so the check's CPU half runs in CI. Prints a line per batch size and writes
//! JSON; exits 1 when the two disagree beyond the reference tolerance (IoU ≥ 0.9, |Δscore| ≤
//! 0.02 for boxes ≥ 0.3), 2 when it cannot run.

use anyhow::Context;
use clap::Parser;
use framefleet_detect::agreement::{Agreement, REFERENCE_TOLERANCE, scored_boxes};
use framefleet_detect::architecture::Target;
use framefleet_detect::{Detector, PreparedFrame};
use framefleet_worker::detect_reference::ReferenceSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Debug, Parser)]
#[command(
    name = "framefleet-detect-check",
    about = "Checks the person detector on a device against the CPU kernels and times it per batch size"
)]
struct Args {
    /// The converted model (manifest.json + model.safetensors).
    #[arg(long)]
    model: PathBuf,
    /// A folder of JPEG frames with reference.json (worker/tests/fixtures/detection).
    #[arg(long)]
    frames: PathBuf,
    /// cpu (the tensor-op path on the CPU) or cuda.
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    batch_sizes: Vec<usize>,
    /// Timed passes per batch size (after one warm-up pass).
    #[arg(long, default_value_t = 3)]
    passes: usize,
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also writes the prepared network inputs here (`inputs.u8`: N×H×W×3 RGB bytes;
    /// `inputs.json`: the frames' file names and the shape), for
    /// `loadtest/python/torch_detector.py` to run the same pixels.
    #[arg(long)]
    dump_inputs: Option<PathBuf>,
}

fn main() -> ExitCode {
    framefleet_worker::device_check::exit_code("framefleet-detect-check", check(Args::parse()))
}

fn check(args: Args) -> anyhow::Result<bool> {
    let reference_detector = Detector::load(&args.model, &candle_core::Device::Cpu).context("the CPU reference")?;
    let target = match args.device.as_str() {
        "cpu" => Target::cpu_tensor_ops(),
        "cuda" => Target::new(&candle_core::Device::new_cuda(0).context("CUDA device 0")?),
        other => anyhow::bail!("unknown device `{other}`; use cpu or cuda"),
    };
    let candidate = Detector::load_for(&args.model, &target).context("the model on the device")?;
    let reference = ReferenceSet::read(&args.frames)?;
    let mut names = Vec::new();
    let mut frames: Vec<PreparedFrame> = Vec::new();
    for frame in &reference.frames {
        let image = reference.decode(frame)?;
        frames.push(reference_detector.prepare(image.as_frame())?);
        names.push(frame.file.clone());
    }
    if let Some(dir) = &args.dump_inputs {
        dump_inputs(dir, &names, &frames, reference_detector.input_size())?;
    }
    let mut agreement = Agreement::default();
    for (chunk, chunk_names) in frames.chunks(8).zip(names.chunks(8)) {
        let expected = reference_detector.detect(chunk)?;
        let found = candidate.detect(chunk)?;
        for ((name, expected), found) in chunk_names.iter().zip(&expected).zip(&found) {
            agreement.add(name, &scored_boxes(expected), &scored_boxes(found), REFERENCE_TOLERANCE);
        }
    }
    let agrees = agreement.problems.is_empty() && agreement.compared > 0;
    println!(
        "detector on {} ({}): {} frames, {} boxes >= {} compared, worst IoU {:?}, largest |dscore| {:.2e}: {}",
        args.device,
        if target.cpu_kernels {
            "CPU kernels"
        } else {
            "tensor ops"
        },
        frames.len(),
        agreement.compared,
        REFERENCE_TOLERANCE.min_score,
        agreement.min_iou,
        agreement.max_score_difference,
        if agrees { "agrees" } else { "DISAGREES" }
    );
    for problem in agreement.problems.iter().take(10) {
        println!("  {problem}");
    }
    let mut batches = Vec::new();
    for &batch in &args.batch_sizes {
        let inputs: Vec<PreparedFrame> = frames.iter().cycle().take(batch.max(1)).cloned().collect();
        candidate.detect(&inputs)?;
        let started = Instant::now();
        for _ in 0..args.passes.max(1) {
            candidate.detect(&inputs)?;
        }
        let seconds = started.elapsed().as_secs_f64();
        let frames_per_second = (inputs.len() * args.passes.max(1)) as f64 / seconds.max(1e-9);
        println!("  batch {batch:>3}: {frames_per_second:>8.1} frames/s (forward + post-processing)");
        batches.push(serde_json::json!({"batch": batch, "frames_per_second": frames_per_second}));
    }
    if let Some(path) = &args.json {
        let summary = serde_json::json!({
            "device": args.device,
            "path": if target.cpu_kernels { "cpu-kernels" } else { "tensor-ops" },
            "frames": frames.len(),
            "compared": agreement.compared,
            "min_iou": agreement.min_iou,
            "max_score_difference": agreement.max_score_difference,
            "problems": agreement.problems,
            "agrees": agrees,
            "batches": batches,
        });
        std::fs::write(path, serde_json::to_string_pretty(&summary)? + "\n")?;
    }
    Ok(agrees)
}

fn dump_inputs(
    dir: &std::path::Path,
    names: &[String],
    frames: &[PreparedFrame],
    (width, height): (usize, usize),
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let pixels: Vec<u8> = frames.iter().flat_map(|frame| frame.pixels().iter().copied()).collect();
    std::fs::write(dir.join("inputs.u8"), pixels)?;
    let index = serde_json::json!({"files": names, "shape": [frames.len(), height, width, 3]});
    std::fs::write(dir.join("inputs.json"), serde_json::to_string_pretty(&index)? + "\n")?;
    Ok(())
}
