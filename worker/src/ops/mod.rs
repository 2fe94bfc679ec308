//! The analysis every frame gets, at the analysis size (the frame area-downscaled by an
//! integer factor until its longer side is at most `max_side`):
//!
//! 1. staging ([`staging`]): BT.601 luma at the analysis size (JPEG frames arrive here already
//!    decoded to that size, see [`crate::decode`]);
//! 2. filters ([`filters`]): 5×5 Gaussian blur, 3×3 Sobel, mean luma, contrast, sharpness and
//!    edge strength;
//! 3. motion ([`motion`]): each channel's running-average background, motion mask, fraction
//!    and box.
//!
//! On the CPU, steps 2 and 3 are one fused kernel per frame and frames run in parallel on the
//! worker's compute pool (rayon), each channel's frames in stream order. On a GPU the same
//! steps are one candle op graph over the whole batch ([`tensor`]), checked against the CPU
//! kernel, which is the reference.

pub mod batch;
mod error;
pub mod features;
pub mod filters;
mod integer_filters;
pub mod motion;
pub mod staging;
pub mod tensor;

pub use batch::{AnalysisSettings, FrameAnalysis, FrameInput, StagedFrame};
use candle_core::Device;
pub use error::OpsError;
pub use features::FrameFeatures;
use framefleet_proto::wire::FrameScores;
pub use motion::MotionState;
use rayon::prelude::*;
use staging::{LumaPlane, StagedLuma};
use std::collections::HashMap;

/// Which device the ops run on; chosen once at start-up.
pub fn select_device(requested: &str) -> anyhow::Result<Device> {
    match requested {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Device::new_cuda(0).map_err(|error| {
            anyhow::anyhow!("cannot use CUDA device 0 ({error}); build with `--features cuda` on a machine with the NVIDIA driver, or pass --device cpu")
        }),
        "auto" => Ok(match Device::cuda_if_available(0) {
            Ok(device) if !device.is_cpu() => device,
            Ok(_) => {
                tracing::warn!("--device auto: no CUDA device (or a build without the cuda feature); running on the CPU");
                Device::Cpu
            }
            Err(error) => {
                tracing::warn!(%error, "--device auto: the CUDA device cannot be used; running on the CPU");
                Device::Cpu
            }
        }),
        other => anyhow::bail!("unknown device `{other}`; use cpu, cuda or auto"),
    }
}

pub fn describe_device(device: &Device) -> String {
    match device {
        Device::Cpu => "cpu".to_owned(),
        Device::Cuda(_) => "cuda:0".to_owned(),
        Device::Metal(_) => "metal".to_owned(),
    }
}

/// The integer factor that brings the longer side of a `width`×`height` frame to at most
/// `max_side` (1 when it already fits, or when `max_side` is 0 meaning "full size"), but never
/// more than the shorter side: a line-scan frame (1920×3) keeps at least one row.
pub fn analysis_factor(width: usize, height: usize, max_side: usize) -> usize {
    if max_side == 0 {
        return 1;
    }
    width.max(height).div_ceil(max_side).min(width.min(height)).max(1)
}

/// Blur, gradients and statistics of staged luma (any size of at least 1×1): bytes go to the
/// integer kernel ([`integer_filters`]), which gives the same blurred plane and edge
/// strength as the f32 kernel ([`filters`]), bit for bit, and exact sums for the other statistics.
pub fn analyse_luma(luma: &StagedLuma) -> FrameFeatures {
    match luma {
        StagedLuma::Bytes(plane) if integer_filters::applies_to(plane) => integer_filters::analyse_plane(plane),
        StagedLuma::Bytes(_) => filters::analyse_plane(&luma.to_floats()),
        StagedLuma::Floats(plane) => filters::analyse_plane(plane),
    }
}

/// Analyses `frames` and returns one analysis per frame, in order. Frames of one channel must
/// be in stream order: each one's motion is measured against the background its predecessors
/// left. On the CPU this runs on the current rayon pool (the worker installs its compute pool).
///
/// Errors: only the GPU path fails (a device error, or frames of one analysis size mixed
/// wrongly); the CPU kernel has no failure mode once a frame is staged.
pub fn analyse_batch(
    frames: &[FrameInput<'_>],
    motion: &mut MotionState,
    device: &Device,
    settings: &AnalysisSettings,
) -> Result<Vec<FrameAnalysis>, OpsError> {
    if !device.is_cpu() {
        return analyse_batch_graph(frames, motion, device, settings);
    }
    let features: Vec<FrameFeatures> = frames.par_iter().map(|input| analyse_luma(&input.frame.luma)).collect();

    // Each channel's frames, in stream order, with the channel's background taken out of the
    // state so channels can run in parallel.
    let mut by_channel: HashMap<&str, Vec<usize>> = HashMap::new();
    for (index, input) in frames.iter().enumerate() {
        by_channel.entry(input.channel_id).or_default().push(index);
    }
    let mut channels: Vec<(&str, Vec<usize>, Option<LumaPlane>)> = by_channel
        .into_iter()
        .map(|(channel_id, indexes)| (channel_id, indexes, motion.host.remove(channel_id)))
        .collect();
    let movements: Vec<Vec<(usize, motion::Movement)>> = channels
        .par_iter_mut()
        .map(|(_, indexes, background)| {
            indexes
                .iter()
                .map(|&index| {
                    let frame = frames[index].frame;
                    let movement = motion::detect_on_host(
                        background,
                        &features[index].blurred,
                        frame.factor,
                        frame.full_size,
                        settings,
                    );
                    (index, movement)
                })
                .collect()
        })
        .collect();
    for (channel_id, _, background) in channels {
        if let Some(background) = background {
            motion.host.insert(channel_id.to_owned(), background);
        }
    }

    let mut analyses: Vec<Option<FrameAnalysis>> = vec![None; frames.len()];
    for (index, movement) in movements.into_iter().flatten() {
        let frame = &features[index];
        analyses[index] = Some(FrameAnalysis {
            scores: FrameScores {
                mean_luma: frame.mean_luma,
                contrast: frame.contrast,
                sharpness: frame.sharpness,
                edge_strength: frame.edge_strength,
                motion: movement.fraction,
            },
            motion_box: movement.motion_box,
        });
    }
    // Every index belongs to exactly one channel group, so every slot is filled.
    Ok(analyses.into_iter().flatten().collect())
}

/// [`analyse_batch`] through the candle op graph on any device, the CPU included: the GPU
/// path, which the device check (`framefleet-ops-check`) also runs on the CPU to compare with
/// the fused kernel. Errors: a device error, or frames of one analysis size mixed wrongly.
pub fn analyse_batch_graph(
    frames: &[FrameInput<'_>],
    motion: &mut MotionState,
    device: &Device,
    settings: &AnalysisSettings,
) -> Result<Vec<FrameAnalysis>, OpsError> {
    tensor::analyse_batch(frames, &mut motion.device, device, settings)
}

#[cfg(test)]
mod tests;
