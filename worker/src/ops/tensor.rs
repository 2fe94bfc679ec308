//! The analysis as one candle op graph over a batch: the GPU path (`--device cuda`). A batch
//! is one (N, 1, h, w) f32 tensor of analysis-size luma planes; every op is a batched tensor
//! op, so a batch costs a few dozen kernel launches whatever its size. On the CPU the fused
//! kernel in [`super::filters`] is used instead (and is what this graph is checked against).
//!
//! Filters are separable and written as sums of shifted views (`narrow` + scale + add)
//! rather than `conv2d`: plain element-wise kernels on CUDA. Arithmetic is f32 throughout
//! because candle's u8 ops wrap on subtraction and several ops refuse u8.

use super::batch::{AnalysisSettings, FrameAnalysis, FrameInput};
use super::error::OpsError;
use super::features::GAUSSIAN_5;
use super::motion::motion_box_from_profiles;
use super::staging::LumaPlane;
use candle_core::{DType, Device, Tensor};
use framefleet_proto::wire::{FrameScores, MotionBox};
use std::collections::{BTreeMap, HashMap};

/// Stacks same-sized luma planes into one (N, 1, h, w) tensor on `device`.
pub fn planes_to_tensor(planes: &[&LumaPlane], device: &Device) -> Result<Tensor, OpsError> {
    let first = planes.first().ok_or(OpsError::EmptyBatch)?;
    let (width, height) = (first.width, first.height);
    let mut values = Vec::with_capacity(planes.len() * width * height);
    for plane in planes {
        if (plane.width, plane.height) != (width, height) {
            return Err(OpsError::MixedSizes(format!(
                "{width}×{height} and {}×{}",
                plane.width, plane.height
            )));
        }
        values.extend_from_slice(&plane.values);
    }
    Ok(Tensor::from_vec(values, (planes.len(), 1, height, width), device)?)
}

/// Correlates `image` with `taps` along `dim`, repeating edge pixels beyond the border.
pub fn filter_along(image: &Tensor, taps: &[f32], dim: usize) -> Result<Tensor, OpsError> {
    debug_assert!(taps.len() % 2 == 1, "filters are centred, so they have an odd length");
    let radius = taps.len() / 2;
    let length = image.dim(dim)?;
    let padded = image.pad_with_same(dim, radius, radius)?;
    let mut accumulated = (padded.narrow(dim, 0, length)? * f64::from(taps[0]))?;
    for (offset, &tap) in taps.iter().enumerate().skip(1) {
        accumulated = (accumulated + (padded.narrow(dim, offset, length)? * f64::from(tap))?)?;
    }
    Ok(accumulated)
}

/// 5×5 Gaussian blur of an (N, C, H, W) tensor, as two 1-D passes.
pub fn gaussian_blur_5(image: &Tensor) -> Result<Tensor, OpsError> {
    let horizontal = filter_along(image, &GAUSSIAN_5, 3)?;
    filter_along(&horizontal, &GAUSSIAN_5, 2)
}

/// The 3-tap smoothing and derivative halves of OpenCV's 3×3 `Sobel` kernel.
const SOBEL_SMOOTH: [f32; 3] = [1.0, 2.0, 1.0];
const SOBEL_DERIVATIVE: [f32; 3] = [-1.0, 0.0, 1.0];

/// Horizontal and vertical 3×3 Sobel derivatives of an (N, C, H, W) tensor (OpenCV's
/// `Sobel(dx=1, dy=0, ksize=3)` and `Sobel(dx=0, dy=1, ksize=3)`), each as two 1-D passes.
pub fn sobel(image: &Tensor) -> Result<(Tensor, Tensor), OpsError> {
    let gradient_x = filter_along(&filter_along(image, &SOBEL_SMOOTH, 2)?, &SOBEL_DERIVATIVE, 3)?;
    let gradient_y = filter_along(&filter_along(image, &SOBEL_SMOOTH, 3)?, &SOBEL_DERIVATIVE, 2)?;
    Ok((gradient_x, gradient_y))
}

/// Euclidean gradient magnitude, as OpenCV's `magnitude`.
pub fn gradient_magnitude(gradient_x: &Tensor, gradient_y: &Tensor) -> Result<Tensor, OpsError> {
    Ok((gradient_x.sqr()? + gradient_y.sqr()?)?.sqrt()?)
}

/// Per-frame mean of an (N, ...) tensor.
pub fn per_frame_mean(batch: &Tensor) -> Result<Vec<f32>, OpsError> {
    Ok(batch.flatten_from(1)?.mean(1)?.to_vec1::<f32>()?)
}

/// Per-frame standard deviation, from E[x²] − E[x]².
pub fn per_frame_std(batch: &Tensor) -> Result<Vec<f32>, OpsError> {
    let means = per_frame_mean(batch)?;
    let mean_squares = per_frame_mean(&batch.sqr()?)?;
    Ok(means
        .iter()
        .zip(mean_squares)
        .map(|(mean, mean_square)| (mean_square - mean * mean).max(0.0).sqrt())
        .collect())
}

/// Pixels whose absolute difference from the background is at least `threshold` (OpenCV's
/// `absdiff` followed by `threshold(THRESH_BINARY)` at `threshold − 1`), as a u8 0/1 mask.
pub fn motion_mask(current: &Tensor, background: &Tensor, threshold: f32) -> Result<Tensor, OpsError> {
    Ok((current - background)?.abs()?.ge(f64::from(threshold))?)
}

/// Running-average background update, OpenCV's `accumulateWeighted`:
/// background ← (1 − rate)·background + rate·current.
pub fn update_background(background: &Tensor, current: &Tensor, rate: f32) -> Result<Tensor, OpsError> {
    Ok(((background * f64::from(1.0 - rate))? + (current * f64::from(rate))?)?)
}

/// [`super::analyse_batch`] on a device: frames are grouped by analysis size, each group one
/// tensor graph. `backgrounds` holds each channel's model as a (1, 1, h, w) device tensor.
pub fn analyse_batch(
    frames: &[FrameInput<'_>],
    backgrounds: &mut HashMap<String, Tensor>,
    device: &Device,
    settings: &AnalysisSettings,
) -> Result<Vec<FrameAnalysis>, OpsError> {
    let mut by_size: BTreeMap<(usize, usize), Vec<usize>> = BTreeMap::new();
    for (index, input) in frames.iter().enumerate() {
        let luma = &input.frame.luma;
        by_size.entry((luma.width(), luma.height())).or_default().push(index);
    }
    let mut analyses: Vec<Option<FrameAnalysis>> = vec![None; frames.len()];
    for indexes in by_size.values() {
        let group: Vec<FrameInput<'_>> = indexes.iter().map(|&index| frames[index]).collect();
        for (index, analysis) in indexes
            .iter()
            .zip(analyse_group(&group, backgrounds, device, settings)?)
        {
            analyses[*index] = Some(analysis);
        }
    }
    Ok(analyses.into_iter().flatten().collect())
}

/// One graph over frames of one analysis size.
fn analyse_group(
    frames: &[FrameInput<'_>],
    backgrounds: &mut HashMap<String, Tensor>,
    device: &Device,
    settings: &AnalysisSettings,
) -> Result<Vec<FrameAnalysis>, OpsError> {
    let floats: Vec<_> = frames.iter().map(|input| input.frame.luma.to_floats()).collect();
    let planes: Vec<&LumaPlane> = floats.iter().map(|plane| &**plane).collect();
    let luma = planes_to_tensor(&planes, device)?;
    let blurred = gaussian_blur_5(&luma)?;
    let (gradient_x, gradient_y) = sobel(&blurred)?;

    let mean_luma = per_frame_mean(&blurred)?;
    let contrast = per_frame_std(&luma)?;
    let sharpness = per_frame_mean(&(&luma - &blurred)?.abs()?)?;
    let edge_strength = per_frame_mean(&gradient_magnitude(&gradient_x, &gradient_y)?)?;
    let movement = detect(frames, &blurred, backgrounds, settings)?;

    Ok((0..frames.len())
        .map(|index| FrameAnalysis {
            scores: FrameScores {
                mean_luma: mean_luma[index],
                contrast: contrast[index],
                sharpness: sharpness[index],
                edge_strength: edge_strength[index],
                motion: movement[index].0,
            },
            motion_box: movement[index].1,
        })
        .collect())
}

/// Motion fraction and box of each frame of `blurred` (N, 1, h, w) and the background update
/// after each one. Frames of one channel depend on each other through the background, so the
/// batch runs in rounds: round r holds the r-th frame of every channel and is one set of
/// batched tensor ops.
fn detect(
    frames: &[FrameInput<'_>],
    blurred: &Tensor,
    backgrounds: &mut HashMap<String, Tensor>,
    settings: &AnalysisSettings,
) -> Result<Vec<(f32, Option<MotionBox>)>, OpsError> {
    // A stored background is one frame: the batch's shape with N = 1.
    let mut frame_dims = blurred.dims().to_vec();
    frame_dims[0] = 1;
    let mut round_of = Vec::with_capacity(frames.len());
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for input in frames {
        let round = seen.entry(input.channel_id).or_insert(0);
        round_of.push(*round);
        *round += 1;
    }
    let rounds = seen.values().copied().max().unwrap_or(0);
    let mut motion = vec![(0.0, None); frames.len()];
    for round in 0..rounds {
        let members: Vec<usize> = (0..frames.len()).filter(|&index| round_of[index] == round).collect();
        let current = if members.len() == frames.len() {
            blurred.clone()
        } else {
            let indexes: Vec<u32> = members.iter().map(|&index| index as u32).collect();
            let indexes = Tensor::from_vec(indexes, members.len(), blurred.device())?;
            blurred.index_select(&indexes, 0)?
        };
        let mut models = Vec::with_capacity(members.len());
        // A channel's first frame is its background as it is, as in the CPU kernel: updating
        // it with itself (0.95·b + 0.05·b) rounds it, and the next frame's differences that
        // lie exactly on the threshold (common on byte planes) then fall the other way.
        let mut fresh = Vec::with_capacity(members.len());
        for (slot, &index) in members.iter().enumerate() {
            let stored = backgrounds
                .get(frames[index].channel_id)
                .filter(|background| background.dims() == frame_dims.as_slice());
            fresh.push(stored.is_none());
            models.push(match stored {
                Some(background) => background.clone(),
                None => current.narrow(0, slot, 1)?,
            });
        }
        let background = Tensor::cat(&models, 0)?;
        let mask = motion_mask(&current, &background, settings.motion_threshold)?;
        let fractions = per_frame_mean(&mask.to_dtype(DType::F32)?)?;
        // A row (column) moves if any pixel in it does: two small vectors per frame are all
        // that leaves the device.
        let moving_rows = mask.max(3)?.flatten_from(1)?.to_vec2::<u8>()?;
        let moving_columns = mask.max(2)?.flatten_from(1)?.to_vec2::<u8>()?;
        let updated = update_background(&background, &current, settings.background_rate)?;
        for (slot, &index) in members.iter().enumerate() {
            let frame = frames[index].frame;
            let motion_box =
                motion_box_from_profiles(&moving_columns[slot], &moving_rows[slot], frame.factor, frame.full_size);
            motion[index] = (fractions[slot], motion_box);
            let next = if fresh[slot] { &current } else { &updated };
            backgrounds.insert(frames[index].channel_id.to_owned(), next.narrow(0, slot, 1)?);
        }
    }
    Ok(motion)
}
