//! The device check behind `framefleet-ops-check` and `scripts/device-check.sh`: the worker's
//! analysis run over the same real frames by the fused CPU kernel (the reference) and by the
//! candle op graph on a device (CUDA on a GPU machine; the CPU here), every score and motion
//! box compared within a stated [`Tolerance`], and the graph timed at several batch sizes.
//!
//! Frames are JPEG files (any sizes; grouped by size). Each is decoded to luma at the
//! analysis size on the CPU, as the worker does, and frame `i` belongs to channel
//! `i % channels`, so batches hold several channels and each channel's background model is
//! exercised in stream order. Timing per batch: the upload alone (planes → one device tensor,
//! synchronised), and the whole analysis (upload, compute, the few numbers per frame back).

use crate::decode::stage_frame;
use crate::ops::{self, AnalysisSettings, FrameAnalysis, FrameInput, MotionState, StagedFrame, tensor};
use candle_core::Device;
use framefleet_proto::v1::{FrameEncoding, FrameSchema, PixelFormat};
use framefleet_proto::wire::MotionBox;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// A check binary's exit status, as `scripts/device-check.sh` reads it: 0 when the device
/// agrees with the reference, 1 when it does not, 2 when the check could not run (the error
/// printed, prefixed by `program`).
pub fn exit_code(program: &str, outcome: anyhow::Result<bool>) -> std::process::ExitCode {
    match outcome {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(error) => {
            eprintln!("{program}: {error:#}");
            std::process::ExitCode::from(2)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path} is not a readable JPEG: {reason}")]
    NotJpeg { path: String, reason: String },
    #[error("no .jpg or .jpeg file in {0}")]
    NoFrames(String),
    #[error("analysis failed: {0}")]
    Ops(#[from] ops::OpsError),
    #[error("device error: {0}")]
    Device(#[from] candle_core::Error),
}

/// How far the device may differ from the CPU reference and still agree. Both compute in
/// f32 but sum in different orders, so scores differ in their last digits; a pixel whose
/// difference from the background sits at the threshold may fall either side, which moves
/// the motion fraction by a pixel's share and a box edge by one analysis pixel (`factor`
/// frame pixels).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    /// Largest difference of mean luma, contrast, sharpness and edge strength (0–255 scale).
    pub score: f32,
    /// Largest difference of the moving fraction (0–1).
    pub motion: f32,
    /// Largest shift of a motion box edge, in analysis pixels.
    pub box_pixels: u32,
}

impl Default for Tolerance {
    fn default() -> Self {
        Self {
            score: 0.01,
            motion: 0.001,
            box_pixels: 1,
        }
    }
}

#[derive(Debug, Clone)]
pub struct CheckSettings {
    pub batch_sizes: Vec<usize>,
    pub channels: usize,
    /// Timed passes over all frames per batch size (the first is also the compared one).
    pub passes: usize,
    pub analysis: AnalysisSettings,
    pub tolerance: Tolerance,
}

/// Maps an I/O error on `path` to [`CheckError::Io`].
fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> CheckError {
    let path = path.display().to_string();
    move |source| CheckError::Io { path, source }
}

/// JPEG payloads grouped by their (width, height) in pixels.
pub type JpegsBySize = BTreeMap<(usize, usize), Vec<Vec<u8>>>;

/// JPEG files of `dir` in name order, grouped by their size.
pub fn load_jpegs(dir: &Path) -> Result<JpegsBySize, CheckError> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map_err(io_error(dir))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.extension()
                .and_then(|extension| extension.to_str())
                .is_some_and(|extension| matches!(extension.to_ascii_lowercase().as_str(), "jpg" | "jpeg"))
        })
        .collect();
    paths.sort();
    let mut by_size = JpegsBySize::new();
    for path in &paths {
        let jpeg = std::fs::read(path).map_err(io_error(path))?;
        let header = turbojpeg::read_header(&jpeg).map_err(|error| CheckError::NotJpeg {
            path: path.display().to_string(),
            reason: error.to_string(),
        })?;
        by_size.entry((header.width, header.height)).or_default().push(jpeg);
    }
    if by_size.is_empty() {
        return Err(CheckError::NoFrames(dir.display().to_string()));
    }
    Ok(by_size)
}

/// Worst differences of the device's analyses from the reference's, over all frames.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Differences {
    pub score: f32,
    pub motion: f32,
    /// Frames whose box is missing on one side only, or whose edges moved beyond tolerance.
    pub boxes_differing: usize,
    pub box_pixels: u32,
}

impl Differences {
    pub fn within(&self, tolerance: &Tolerance) -> bool {
        self.score <= tolerance.score && self.motion <= tolerance.motion && self.boxes_differing == 0
    }
}

/// Compares `device` with `reference` frame by frame; `factor` converts box edges (in frame
/// pixels) to analysis pixels.
pub fn compare(
    reference: &[FrameAnalysis],
    device: &[FrameAnalysis],
    factor: usize,
    tolerance: &Tolerance,
) -> Differences {
    let mut worst = Differences::default();
    let edges = |motion_box: &MotionBox| {
        [
            motion_box.x,
            motion_box.y,
            motion_box.x + motion_box.width,
            motion_box.y + motion_box.height,
        ]
    };
    let factor = u32::try_from(factor.max(1)).unwrap_or(u32::MAX);
    for (expected, got) in reference.iter().zip(device) {
        let (e, g) = (&expected.scores, &got.scores);
        for (a, b) in [
            (e.mean_luma, g.mean_luma),
            (e.contrast, g.contrast),
            (e.sharpness, g.sharpness),
            (e.edge_strength, g.edge_strength),
        ] {
            worst.score = worst.score.max((a - b).abs());
        }
        worst.motion = worst.motion.max((e.motion - g.motion).abs());
        match (&expected.motion_box, &got.motion_box) {
            (None, None) => {}
            (Some(a), Some(b)) => {
                let shift = edges(a)
                    .iter()
                    .zip(edges(b))
                    .map(|(&p, q)| p.abs_diff(q).div_ceil(factor))
                    .max()
                    .unwrap_or(0);
                worst.box_pixels = worst.box_pixels.max(shift);
                if shift > tolerance.box_pixels {
                    worst.boxes_differing += 1;
                }
            }
            _ => worst.boxes_differing += 1,
        }
    }
    if reference.len() != device.len() {
        worst.boxes_differing += reference.len().abs_diff(device.len());
    }
    worst
}

fn schema_for(width: usize, height: usize) -> FrameSchema {
    FrameSchema {
        version: 1,
        width: u32::try_from(width).unwrap_or(u32::MAX),
        height: u32::try_from(height).unwrap_or(u32::MAX),
        channels: 3,
        pixel_format: PixelFormat::Rgb24.into(),
        encoding: FrameEncoding::Jpeg.into(),
        fps: 0.0,
    }
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// Frames of one size staged as the worker stages them, the reference analyses, and what the
/// reference cost.
pub struct Reference {
    pub frames: Vec<StagedFrame>,
    pub channels: Vec<String>,
    pub analyses: Vec<FrameAnalysis>,
    pub decode_ms_per_frame: f64,
    pub cpu_kernel_ms_per_frame: f64,
}

/// Decodes `jpegs` (one thread, as one compute thread of the worker would) and analyses them
/// one by one with the fused CPU kernel.
pub fn reference(jpegs: &[Vec<u8>], size: (usize, usize), settings: &CheckSettings) -> Result<Reference, CheckError> {
    let schema = schema_for(size.0, size.1);
    let started = Instant::now();
    let frames = jpegs
        .iter()
        .map(|jpeg| stage_frame(jpeg, &schema, settings.analysis.max_side))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| CheckError::NotJpeg {
            path: format!("a {}×{} frame", size.0, size.1),
            reason: error.to_string(),
        })?;
    let decode = started.elapsed();
    let channels: Vec<String> = (0..frames.len())
        .map(|index| format!("cam-{}", index % settings.channels.max(1)))
        .collect();
    let mut motion = MotionState::default();
    let started = Instant::now();
    let mut analyses = Vec::with_capacity(frames.len());
    for (frame, channel_id) in frames.iter().zip(&channels) {
        let input = FrameInput { channel_id, frame };
        analyses.extend(ops::analyse_batch(
            &[input],
            &mut motion,
            &Device::Cpu,
            &settings.analysis,
        )?);
    }
    let count = frames.len().max(1) as f64;
    Ok(Reference {
        decode_ms_per_frame: millis(decode) / count,
        cpu_kernel_ms_per_frame: millis(started.elapsed()) / count,
        frames,
        channels,
        analyses,
    })
}

/// The graph at one batch size: per-batch means over every timed pass.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchTiming {
    pub batch: usize,
    pub upload_ms: f64,
    pub analyse_ms: f64,
    pub frames_per_second: f64,
    pub differences: Differences,
}

/// Runs the candle graph on `device` over the reference's frames in batches of `batch`.
pub fn time_graph(
    reference: &Reference,
    device: &Device,
    batch: usize,
    settings: &CheckSettings,
) -> Result<BatchTiming, CheckError> {
    let batch = batch.max(1);
    let (mut upload, mut analyse, mut batches, mut frames_done) = (Duration::ZERO, Duration::ZERO, 0_usize, 0_usize);
    let mut first_pass = Vec::with_capacity(reference.frames.len());
    for pass in 0..settings.passes.max(1) {
        let mut motion = MotionState::default();
        for (frames, channels) in reference.frames.chunks(batch).zip(reference.channels.chunks(batch)) {
            let floats: Vec<_> = frames.iter().map(|frame| frame.luma.to_floats()).collect();
            let planes: Vec<_> = floats.iter().map(|plane| &**plane).collect();
            let started = Instant::now();
            let uploaded = tensor::planes_to_tensor(&planes, device)?;
            device.synchronize()?;
            upload += started.elapsed();
            drop(uploaded);
            let inputs: Vec<FrameInput<'_>> = frames
                .iter()
                .zip(channels)
                .map(|(frame, channel_id)| FrameInput { channel_id, frame })
                .collect();
            let started = Instant::now();
            let analyses = ops::analyse_batch_graph(&inputs, &mut motion, device, &settings.analysis)?;
            analyse += started.elapsed();
            batches += 1;
            frames_done += frames.len();
            if pass == 0 {
                first_pass.extend(analyses);
            }
        }
    }
    let factor = reference.frames.first().map_or(1, |frame| frame.factor);
    let batches = batches.max(1) as f64;
    Ok(BatchTiming {
        batch,
        upload_ms: millis(upload) / batches,
        analyse_ms: millis(analyse) / batches,
        frames_per_second: frames_done as f64 / analyse.as_secs_f64().max(f64::EPSILON),
        differences: compare(&reference.analyses, &first_pass, factor, &settings.tolerance),
    })
}

/// The reference of one size as files for the PyTorch script: `<W>x<H>.planes.f32` (the
/// staged luma planes, N × h × w little-endian f32) and `<W>x<H>.reference.json`.
pub fn dump_reference(
    dir: &Path,
    size: (usize, usize),
    reference: &Reference,
    settings: &CheckSettings,
) -> Result<(), CheckError> {
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    let stem = format!("{}x{}", size.0, size.1);
    let mut bytes = Vec::new();
    for frame in &reference.frames {
        bytes.extend(
            frame
                .luma
                .to_floats()
                .values
                .iter()
                .flat_map(|value| value.to_le_bytes()),
        );
    }
    let planes = dir.join(format!("{stem}.planes.f32"));
    std::fs::write(&planes, bytes).map_err(io_error(&planes))?;
    let first = reference.frames.first();
    let document = json!({
        "full_size": [size.0, size.1],
        "analysis_size": first.map(|frame| [frame.luma.width(), frame.luma.height()]),
        "factor": first.map(|frame| frame.factor),
        "frames": reference.frames.len(),
        "channels": reference.channels,
        "motion_threshold": settings.analysis.motion_threshold,
        "background_rate": settings.analysis.background_rate,
        "tolerance": tolerance_json(&settings.tolerance),
        "analyses": reference.analyses.iter().map(analysis_json).collect::<Vec<_>>(),
    });
    let path = dir.join(format!("{stem}.reference.json"));
    std::fs::write(&path, format!("{document:#}\n")).map_err(io_error(&path))?;
    Ok(())
}

pub fn tolerance_json(tolerance: &Tolerance) -> Value {
    json!({"score": tolerance.score, "motion": tolerance.motion, "box_pixels": tolerance.box_pixels})
}

fn analysis_json(analysis: &FrameAnalysis) -> Value {
    let scores = &analysis.scores;
    json!({
        "mean_luma": scores.mean_luma,
        "contrast": scores.contrast,
        "sharpness": scores.sharpness,
        "edge_strength": scores.edge_strength,
        "motion": scores.motion,
        "motion_box": analysis.motion_box.map(|b| [b.x, b.y, b.width, b.height]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use framefleet_proto::wire::FrameScores;

    fn analysis(mean_luma: f32, motion: f32, motion_box: Option<(u32, u32, u32, u32)>) -> FrameAnalysis {
        FrameAnalysis {
            scores: FrameScores {
                mean_luma,
                contrast: 10.0,
                sharpness: 2.0,
                edge_strength: 5.0,
                motion,
            },
            motion_box: motion_box.map(|(x, y, width, height)| MotionBox { x, y, width, height }),
        }
    }

    #[test]
    fn agreement_within_tolerance_and_each_kind_of_disagreement() {
        let tolerance = Tolerance::default();
        let reference = [analysis(100.0, 0.1, Some((10, 10, 20, 20))), analysis(50.0, 0.0, None)];
        // Last-digit differences and a box edge one analysis pixel (2 frame pixels) away.
        let close = [
            analysis(100.004, 0.1005, Some((12, 10, 18, 20))),
            analysis(50.0, 0.0, None),
        ];
        let differences = compare(&reference, &close, 2, &tolerance);
        assert!(differences.within(&tolerance), "{differences:?}");
        assert_eq!(differences.box_pixels, 1);

        let off_score = [analysis(100.5, 0.1, Some((10, 10, 20, 20))), analysis(50.0, 0.0, None)];
        assert!(!compare(&reference, &off_score, 2, &tolerance).within(&tolerance));
        let off_motion = [analysis(100.0, 0.2, Some((10, 10, 20, 20))), analysis(50.0, 0.0, None)];
        assert!(!compare(&reference, &off_motion, 2, &tolerance).within(&tolerance));
        let box_moved = [analysis(100.0, 0.1, Some((16, 10, 20, 20))), analysis(50.0, 0.0, None)];
        assert!(!compare(&reference, &box_moved, 2, &tolerance).within(&tolerance));
        let box_appeared = [
            analysis(100.0, 0.1, Some((10, 10, 20, 20))),
            analysis(50.0, 0.0, Some((0, 0, 2, 2))),
        ];
        assert_eq!(compare(&reference, &box_appeared, 2, &tolerance).boxes_differing, 1);
        assert!(!compare(&reference, &reference[..1], 2, &tolerance).within(&tolerance));
    }
}
