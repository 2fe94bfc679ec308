//! Image operations on batches of frames with candle. A batch is one NCHW f32 tensor of
//! frames that share a size; everything runs on the selected device (CPU or CUDA) with the
//! same code.
//!
//! Filters are separable and written as sums of shifted views (`narrow` + scale + add)
//! rather than `conv2d`: on the CPU that is several times faster than candle's im2col
//! convolution, and on CUDA it is plain element-wise kernels. Arithmetic is f32 throughout
//! because candle's u8 ops wrap on subtraction and several ops refuse u8.

use crate::decode::DecodedFrame;
use candle_core::{DType, Device, Tensor};
use framefleet_proto::wire::{FrameScores, MotionBox};
use std::collections::HashMap;

/// ITU-R BT.601 luma weights, the ones OpenCV's `cvtColor(RGB2GRAY)` uses.
const LUMA_WEIGHTS: [f32; 3] = [0.299, 0.587, 0.114];
/// The 5-tap binomial kernel OpenCV uses for `GaussianBlur` with ksize 5 and sigma 0.
pub const GAUSSIAN_5: [f32; 5] = [1.0 / 16.0, 4.0 / 16.0, 6.0 / 16.0, 4.0 / 16.0, 1.0 / 16.0];

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("tensor operation failed: {0}")]
    Tensor(#[from] candle_core::Error),
    #[error("batch is empty")]
    EmptyBatch,
    #[error("frames in one batch must share a size: {0}")]
    MixedSizes(String),
    #[error("a {width}×{height} frame cannot be downscaled by {factor}")]
    TooSmall { width: usize, height: usize, factor: usize },
}

/// Which device the ops run on; chosen once at start-up.
pub fn select_device(requested: &str) -> anyhow::Result<Device> {
    match requested {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Device::new_cuda(0).map_err(|error| {
            anyhow::anyhow!("cannot use CUDA device 0 ({error}); build with `--features cuda` on a machine with the NVIDIA driver, or pass --device cpu")
        }),
        "auto" => Ok(Device::cuda_if_available(0).unwrap_or(Device::Cpu)),
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

/// The width and height every frame of a batch shares.
fn shared_size(frames: &[&DecodedFrame]) -> Result<(usize, usize), OpsError> {
    let first = frames.first().ok_or(OpsError::EmptyBatch)?;
    let (width, height) = (first.width, first.height);
    if let Some(odd) = frames
        .iter()
        .find(|frame| (frame.width, frame.height) != (width, height))
    {
        return Err(OpsError::MixedSizes(format!(
            "{width}×{height} and {}×{}",
            odd.width, odd.height
        )));
    }
    Ok((width, height))
}

/// Stacks same-sized RGB frames into one (N, 3, H, W) f32 tensor on `device`. Pixels are
/// split into colour planes while they are copied in (the copy happens anyway), so every
/// later op works on contiguous planes; they are uploaded as u8 (a quarter of the bytes of
/// f32) and converted on the device.
pub fn frames_to_tensor(frames: &[&DecodedFrame], device: &Device) -> Result<Tensor, OpsError> {
    let (width, height) = shared_size(frames)?;
    let plane = width * height;
    let mut planes = vec![0_u8; frames.len() * 3 * plane];
    for (frame, frame_planes) in frames.iter().zip(planes.chunks_exact_mut(3 * plane)) {
        let (red, rest) = frame_planes.split_at_mut(plane);
        let (green, blue) = rest.split_at_mut(plane);
        for (index, pixel) in frame.rgb.chunks_exact(3).enumerate() {
            red[index] = pixel[0];
            green[index] = pixel[1];
            blue[index] = pixel[2];
        }
    }
    let batch = Tensor::from_vec(planes, (frames.len(), 3, height, width), device)?.to_dtype(DType::F32)?;
    Ok(batch)
}

/// Like [`frames_to_tensor`] followed by [`downscale_area`] by `factor`, but the block means
/// are taken while the pixels are split into planes, on the host, in one pass: the full-size
/// frame is never converted to f32 or uploaded, which at 1080p is most of the work (and of the
/// bytes sent to a GPU).
pub fn frames_to_downscaled_tensor(
    frames: &[&DecodedFrame],
    factor: usize,
    device: &Device,
) -> Result<Tensor, OpsError> {
    if factor <= 1 {
        return frames_to_tensor(frames, device);
    }
    let (width, height) = shared_size(frames)?;
    if width < factor || height < factor {
        return Err(OpsError::TooSmall { width, height, factor });
    }
    let (small_width, small_height) = (width / factor, height / factor);
    let plane = small_width * small_height;
    let scale = 1.0 / (factor * factor) as f32;
    let mut planes = vec![0_f32; frames.len() * 3 * plane];
    let mut sums = vec![0_u32; 3 * small_width];
    for (frame, frame_planes) in frames.iter().zip(planes.chunks_exact_mut(3 * plane)) {
        for small_y in 0..small_height {
            sums.fill(0);
            for y in small_y * factor..(small_y + 1) * factor {
                let row = &frame.rgb[y * width * 3..(y * width + small_width * factor) * 3];
                for (block, pixels) in row.chunks_exact(3 * factor).enumerate() {
                    let (mut red, mut green, mut blue) = (0_u32, 0_u32, 0_u32);
                    for pixel in pixels.chunks_exact(3) {
                        red += u32::from(pixel[0]);
                        green += u32::from(pixel[1]);
                        blue += u32::from(pixel[2]);
                    }
                    sums[block] += red;
                    sums[small_width + block] += green;
                    sums[2 * small_width + block] += blue;
                }
            }
            for colour in 0..3 {
                let out = &mut frame_planes[colour * plane + small_y * small_width..][..small_width];
                for (value, sum) in out
                    .iter_mut()
                    .zip(&sums[colour * small_width..(colour + 1) * small_width])
                {
                    *value = *sum as f32 * scale;
                }
            }
        }
    }
    Ok(Tensor::from_vec(
        planes,
        (frames.len(), 3, small_height, small_width),
        device,
    )?)
}

/// (N, 3, H, W) RGB → (N, 1, H, W) luma: a weighted sum of the three contiguous planes.
/// (Reducing over an interleaved last dimension of 3, or a skinny matmul, measured 2–4×
/// slower in candle on the CPU.)
pub fn grayscale(rgb: &Tensor) -> Result<Tensor, OpsError> {
    let red = (rgb.narrow(1, 0, 1)? * f64::from(LUMA_WEIGHTS[0]))?;
    let green = (rgb.narrow(1, 1, 1)? * f64::from(LUMA_WEIGHTS[1]))?;
    let blue = (rgb.narrow(1, 2, 1)? * f64::from(LUMA_WEIGHTS[2]))?;
    Ok(((red + green)? + blue)?)
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

/// The integer factor that brings the longer side of a `width`×`height` frame to at most
/// `max_side` (1 when it already fits, or when `max_side` is 0 meaning "full size").
pub fn analysis_factor(width: usize, height: usize, max_side: usize) -> usize {
    if max_side == 0 {
        return 1;
    }
    width.max(height).div_ceil(max_side).max(1)
}

/// Area downscale by an integer `factor`: each output pixel is the mean of a factor×factor
/// block, which is what OpenCV's `resize(INTER_AREA)` computes for integer factors. Rows and
/// columns that do not fill a whole block are cropped.
pub fn downscale_area(image: &Tensor, factor: usize) -> Result<Tensor, OpsError> {
    if factor <= 1 {
        return Ok(image.clone());
    }
    let (_, _, height, width) = image.dims4()?;
    if height < factor || width < factor {
        return Err(OpsError::TooSmall { width, height, factor });
    }
    let cropped = image
        .narrow(2, 0, height - height % factor)?
        .narrow(3, 0, width - width % factor)?;
    Ok(cropped.avg_pool2d(factor)?)
}

/// Per-frame mean of an (N, ...) tensor.
pub fn per_frame_mean(batch: &Tensor) -> Result<Vec<f32>, OpsError> {
    Ok(batch.flatten_from(1)?.mean(1)?.to_vec1::<f32>()?)
}

/// Per-frame standard deviation (the scale a per-frame normalisation divides by), from
/// E[x²] − E[x]² in one pass over the data.
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

/// How a frame is analysed; the same for every frame a worker processes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AnalysisSettings {
    /// Frames are area-downscaled by an integer factor until their longer side is at most
    /// this (0: analyse at full size). Blur, edges and motion then run on far fewer pixels.
    pub max_side: usize,
    /// Luma difference (0–255) from the background that counts a pixel as moving.
    pub motion_threshold: f32,
    /// Weight of each new frame in the running-average background, 0–1.
    pub background_rate: f32,
}

impl Default for AnalysisSettings {
    fn default() -> Self {
        Self {
            max_side: 480,
            motion_threshold: 25.0,
            background_rate: 0.05,
        }
    }
}

/// One frame to analyse and the channel it belongs to (whose background model it uses).
#[derive(Debug, Clone, Copy)]
pub struct FrameInput<'a> {
    pub channel_id: &'a str,
    pub pixels: &'a DecodedFrame,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameAnalysis {
    pub scores: FrameScores,
    /// The box around every moving pixel, in full-frame pixel coordinates.
    pub motion_box: Option<MotionBox>,
}

/// The background model of every channel seen, kept on the compute device between batches.
/// A channel's model starts from its first frame (so that frame shows no motion) and is
/// restarted when the channel's frame size changes.
#[derive(Debug, Default)]
pub struct MotionState {
    backgrounds: HashMap<String, Tensor>,
}

impl MotionState {
    pub fn channels(&self) -> usize {
        self.backgrounds.len()
    }

    pub fn forget(&mut self, channel_id: &str) {
        self.backgrounds.remove(channel_id);
    }

    /// Motion fraction and box of each frame of `luma` (N, 1, h, w), whose frames belong to
    /// `channel_ids` in stream order, and the background update after each one. Frames of
    /// one channel depend on each other through the background, so the batch runs in rounds:
    /// round r holds the r-th frame of every channel and is one set of batched tensor ops.
    fn detect(
        &mut self,
        channel_ids: &[&str],
        luma: &Tensor,
        factor: usize,
        full_size: (usize, usize),
        settings: &AnalysisSettings,
    ) -> Result<Vec<(f32, Option<MotionBox>)>, OpsError> {
        // A stored background is one frame: the batch's shape with N = 1.
        let mut frame_dims = luma.dims().to_vec();
        frame_dims[0] = 1;
        let mut round_of = Vec::with_capacity(channel_ids.len());
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for channel_id in channel_ids {
            let round = seen.entry(channel_id).or_insert(0);
            round_of.push(*round);
            *round += 1;
        }
        let rounds = seen.values().copied().max().unwrap_or(0);
        let mut motion = vec![(0.0, None); channel_ids.len()];
        for round in 0..rounds {
            let members: Vec<usize> = (0..channel_ids.len())
                .filter(|&index| round_of[index] == round)
                .collect();
            let current = if members.len() == channel_ids.len() {
                luma.clone()
            } else {
                let indexes: Vec<u32> = members.iter().map(|&index| index as u32).collect();
                let indexes = Tensor::from_vec(indexes, members.len(), luma.device())?;
                luma.index_select(&indexes, 0)?
            };
            let mut backgrounds = Vec::with_capacity(members.len());
            for (slot, &index) in members.iter().enumerate() {
                backgrounds.push(match self.backgrounds.get(channel_ids[index]) {
                    Some(background) if background.dims() == frame_dims.as_slice() => background.clone(),
                    _ => current.narrow(0, slot, 1)?,
                });
            }
            let background = Tensor::cat(&backgrounds, 0)?;
            let mask = motion_mask(&current, &background, settings.motion_threshold)?;
            let fractions = per_frame_mean(&mask.to_dtype(DType::F32)?)?;
            // A row (column) moves if any pixel in it does: two small vectors per frame are
            // all that leaves the device.
            let moving_rows = mask.max(3)?.flatten_from(1)?.to_vec2::<u8>()?;
            let moving_columns = mask.max(2)?.flatten_from(1)?.to_vec2::<u8>()?;
            let updated = update_background(&background, &current, settings.background_rate)?;
            for (slot, &index) in members.iter().enumerate() {
                let motion_box = motion_box_from_profiles(&moving_columns[slot], &moving_rows[slot], factor, full_size);
                motion[index] = (fractions[slot], motion_box);
                self.backgrounds
                    .insert(channel_ids[index].to_owned(), updated.narrow(0, slot, 1)?);
            }
        }
        Ok(motion)
    }
}

/// The box spanned by the first and last moving column and row at analysis size, scaled
/// back to full-frame pixels.
fn motion_box_from_profiles(
    columns: &[u8],
    rows: &[u8],
    factor: usize,
    (width, height): (usize, usize),
) -> Option<MotionBox> {
    let span = |profile: &[u8]| {
        let first = profile.iter().position(|&moving| moving != 0)?;
        let last = profile.iter().rposition(|&moving| moving != 0)?;
        Some((first * factor, (last + 1) * factor))
    };
    let (left, right) = span(columns)?;
    let (top, bottom) = span(rows)?;
    let to_u32 = |value: usize| u32::try_from(value).unwrap_or(u32::MAX);
    Some(MotionBox {
        x: to_u32(left),
        y: to_u32(top),
        width: to_u32(right.min(width) - left),
        height: to_u32(bottom.min(height) - top),
    })
}

/// Analyses `frames` (all of one size) and returns one analysis per frame, in order:
/// area downscale to the analysis size, grayscale, then on the small frames a
/// 5×5 Gaussian blur, Sobel edges, brightness/contrast/sharpness and motion against each
/// channel's background.
///
/// On the CPU the frames go through one at a time: a frame's f32 planes stay in cache across
/// the ~30 passes, a batch's do not (`cargo bench --bench ops`). Batches are for devices that
/// need them to be efficient.
pub fn analyse_batch(
    frames: &[FrameInput<'_>],
    motion: &mut MotionState,
    device: &Device,
    settings: &AnalysisSettings,
) -> Result<Vec<FrameAnalysis>, OpsError> {
    if device.is_cpu() && frames.len() > 1 {
        let mut analyses = Vec::with_capacity(frames.len());
        for frame in frames {
            analyses.extend(analyse_tensor_batch(
                std::slice::from_ref(frame),
                motion,
                device,
                settings,
            )?);
        }
        return Ok(analyses);
    }
    analyse_tensor_batch(frames, motion, device, settings)
}

fn analyse_tensor_batch(
    frames: &[FrameInput<'_>],
    motion: &mut MotionState,
    device: &Device,
    settings: &AnalysisSettings,
) -> Result<Vec<FrameAnalysis>, OpsError> {
    let pixels: Vec<&DecodedFrame> = frames.iter().map(|frame| frame.pixels).collect();
    let first = pixels.first().ok_or(OpsError::EmptyBatch)?;
    let (width, height) = (first.width, first.height);
    let factor = analysis_factor(width, height, settings.max_side);
    // Area averaging and the luma weights are both linear, so downscaling the colour planes
    // first gives the same luma while the weighted sum runs on factor² fewer pixels.
    let luma = grayscale(&frames_to_downscaled_tensor(&pixels, factor, device)?)?;
    let blurred = gaussian_blur_5(&luma)?;
    let (gradient_x, gradient_y) = sobel(&blurred)?;

    let mean_luma = per_frame_mean(&blurred)?;
    let contrast = per_frame_std(&luma)?;
    let sharpness = per_frame_mean(&(&luma - &blurred)?.abs()?)?;
    let edge_strength = per_frame_mean(&gradient_magnitude(&gradient_x, &gradient_y)?)?;
    let channel_ids: Vec<&str> = frames.iter().map(|frame| frame.channel_id).collect();
    let movement = motion.detect(&channel_ids, &blurred, factor, (width, height), settings)?;

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

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(width: usize, height: usize, pixel: impl Fn(usize, usize) -> [u8; 3]) -> DecodedFrame {
        let mut rgb = Vec::with_capacity(width * height * 3);
        for y in 0..height {
            for x in 0..width {
                rgb.extend_from_slice(&pixel(x, y));
            }
        }
        DecodedFrame { width, height, rgb }
    }

    /// Straightforward per-pixel reference: luma, then a 5×5 blur with replicated borders.
    fn reference_blurred_luma(input: &DecodedFrame) -> Vec<f32> {
        let (width, height) = (input.width, input.height);
        let luma: Vec<f32> = input
            .rgb
            .chunks_exact(3)
            .map(|p| {
                LUMA_WEIGHTS[0] * f32::from(p[0])
                    + LUMA_WEIGHTS[1] * f32::from(p[1])
                    + LUMA_WEIGHTS[2] * f32::from(p[2])
            })
            .collect();
        let clamp = |value: isize, max: usize| value.clamp(0, max as isize - 1) as usize;
        let mut out = vec![0.0; width * height];
        for y in 0..height {
            for x in 0..width {
                let mut sum = 0.0;
                for (dy, wy) in GAUSSIAN_5.iter().enumerate() {
                    for (dx, wx) in GAUSSIAN_5.iter().enumerate() {
                        let sy = clamp(y as isize + dy as isize - 2, height);
                        let sx = clamp(x as isize + dx as isize - 2, width);
                        sum += wy * wx * luma[sy * width + sx];
                    }
                }
                out[y * width + x] = sum;
            }
        }
        out
    }

    #[test]
    fn grayscale_uses_bt601_weights() {
        let red = frame(4, 3, |_, _| [255, 0, 0]);
        let tensor = frames_to_tensor(&[&red], &Device::Cpu).expect("tensor");
        let gray = grayscale(&tensor)
            .expect("gray")
            .flatten_all()
            .expect("flat")
            .to_vec1::<f32>()
            .expect("vec");
        assert!(
            gray.iter().all(|&value| (value - 0.299 * 255.0).abs() < 1e-3),
            "{gray:?}"
        );
    }

    #[test]
    fn blur_matches_a_per_pixel_reference() {
        let noisy = frame(37, 23, |x, y| {
            let value = ((x * 7919 + y * 104_729) % 251) as u8;
            [value, value.wrapping_mul(3), 255 - value]
        });
        let tensor = frames_to_tensor(&[&noisy], &Device::Cpu).expect("tensor");
        let blurred = gaussian_blur_5(&grayscale(&tensor).expect("gray")).expect("blur");
        assert_eq!(blurred.dims(), &[1, 1, 23, 37]);
        let actual = blurred.flatten_all().expect("flat").to_vec1::<f32>().expect("vec");
        let expected = reference_blurred_luma(&noisy);
        let worst = actual
            .iter()
            .zip(&expected)
            .map(|(a, e)| (a - e).abs())
            .fold(0.0_f32, f32::max);
        assert!(worst < 1e-2, "largest difference from the reference: {worst}");
    }

    fn analyse(frames: &[(&str, &DecodedFrame)], motion: &mut MotionState, device: &Device) -> Vec<FrameAnalysis> {
        let inputs: Vec<FrameInput<'_>> = frames
            .iter()
            .map(|&(channel_id, pixels)| FrameInput { channel_id, pixels })
            .collect();
        analyse_batch(&inputs, motion, device, &AnalysisSettings::default()).expect("analysis")
    }

    /// A grey frame with a white square whose top-left corner is at (`left`, `top`).
    fn square_at(left: usize, top: usize) -> DecodedFrame {
        frame(64, 48, move |x, y| {
            if (left..left + 10).contains(&x) && (top..top + 8).contains(&y) {
                [255, 255, 255]
            } else {
                [60, 60, 60]
            }
        })
    }

    #[test]
    fn scores_separate_flat_from_detailed_frames() {
        let flat = frame(32, 32, |_, _| [100, 100, 100]);
        let checkerboard = frame(
            32,
            32,
            |x, y| if (x + y) % 2 == 0 { [255, 255, 255] } else { [0, 0, 0] },
        );
        let stripes = frame(32, 32, |x, _| if x < 16 { [0, 0, 0] } else { [255, 255, 255] });
        let analyses = analyse(
            &[("flat", &flat), ("checks", &checkerboard), ("stripes", &stripes)],
            &mut MotionState::default(),
            &Device::Cpu,
        );
        let [flat, checkerboard, stripes] = [analyses[0].scores, analyses[1].scores, analyses[2].scores];
        assert!((flat.mean_luma - 100.0).abs() < 0.01, "{flat:?}");
        assert!(
            flat.sharpness < 0.01 && flat.contrast < 0.01 && flat.edge_strength < 0.01,
            "{flat:?}"
        );
        assert!(
            checkerboard.sharpness > 50.0,
            "a checkerboard is all detail: {checkerboard:?}"
        );
        assert!((checkerboard.contrast - 127.5).abs() < 0.5, "{checkerboard:?}");
        // One vertical edge: the gradient is zero except in the columns around it.
        assert!(stripes.edge_strength > 10.0, "{stripes:?}");
        assert!(analyses.iter().all(|analysis| analysis.motion_box.is_none()));
    }

    #[test]
    fn motion_is_found_where_the_square_moved() {
        let mut motion = MotionState::default();
        let first = analyse(&[("cam", &square_at(5, 5))], &mut motion, &Device::Cpu);
        assert_eq!(first[0].scores.motion, 0.0, "a channel's first frame is its background");
        assert_eq!(first[0].motion_box, None);

        let moved = analyse(&[("cam", &square_at(40, 30))], &mut motion, &Device::Cpu);
        let motion_box = moved[0].motion_box.expect("the square moved");
        assert!(moved[0].scores.motion > 0.02, "{:?}", moved[0].scores);
        // Where it left and where it arrived, widened by at most the blur radius.
        assert!(
            motion_box.x <= 5 && motion_box.x + motion_box.width >= 50,
            "{motion_box:?}"
        );
        assert!(
            motion_box.y <= 5 && motion_box.y + motion_box.height >= 38,
            "{motion_box:?}"
        );
        assert!(motion_box.x + motion_box.width <= 64 && motion_box.y + motion_box.height <= 48);
        assert_eq!(motion.channels(), 1);
    }

    #[test]
    fn channels_have_separate_backgrounds() {
        let mut motion = MotionState::default();
        analyse(
            &[("a", &square_at(5, 5)), ("b", &square_at(40, 30))],
            &mut motion,
            &Device::Cpu,
        );
        // The same frames again: nothing moved on either channel.
        let again = analyse(
            &[("b", &square_at(40, 30)), ("a", &square_at(5, 5))],
            &mut motion,
            &Device::Cpu,
        );
        assert!(again.iter().all(|analysis| analysis.motion_box.is_none()), "{again:?}");
    }

    #[test]
    fn several_frames_of_a_channel_in_one_batch_equal_one_at_a_time() {
        let frames = [square_at(5, 5), square_at(20, 10), square_at(40, 30)];
        let mut batched_motion = MotionState::default();
        let batched: Vec<(&str, &DecodedFrame)> = frames
            .iter()
            .enumerate()
            .map(|(index, frame)| (if index == 1 { "other" } else { "cam" }, frame))
            .collect();
        // A single tensor batch, as on a GPU: three frames of two channels in rounds.
        let inputs: Vec<FrameInput<'_>> = batched
            .iter()
            .map(|&(channel_id, pixels)| FrameInput { channel_id, pixels })
            .collect();
        let together = analyse_tensor_batch(&inputs, &mut batched_motion, &Device::Cpu, &AnalysisSettings::default())
            .expect("batch");

        let mut sequential_motion = MotionState::default();
        let one_by_one: Vec<FrameAnalysis> = batched
            .iter()
            .flat_map(|&input| analyse(&[input], &mut sequential_motion, &Device::Cpu))
            .collect();
        assert_eq!(together, one_by_one);
        assert!(together[2].motion_box.is_some(), "cam moved between its two frames");
        assert!(together[1].motion_box.is_none(), "`other` has one frame only");
    }

    #[test]
    fn a_size_change_restarts_the_background() {
        let mut motion = MotionState::default();
        analyse(&[("cam", &square_at(5, 5))], &mut motion, &Device::Cpu);
        let larger = frame(80, 60, |_, _| [200, 200, 200]);
        let analysed = analyse(&[("cam", &larger)], &mut motion, &Device::Cpu);
        assert_eq!(analysed[0].motion_box, None);
    }

    #[test]
    fn packing_with_downscale_equals_packing_then_downscaling() {
        let noisy = frame(37, 23, |x, y| {
            let value = ((x * 7919 + y * 104_729) % 251) as u8;
            [value, value.wrapping_mul(3), 255 - value]
        });
        for factor in [1, 2, 3, 5] {
            let direct = frames_to_downscaled_tensor(&[&noisy, &noisy], factor, &Device::Cpu).expect("packed");
            let reference = downscale_area(
                &frames_to_tensor(&[&noisy, &noisy], &Device::Cpu).expect("tensor"),
                factor,
            )
            .expect("downscale");
            assert_eq!(direct.dims(), reference.dims(), "factor {factor}");
            let worst = (direct - reference)
                .and_then(|difference| difference.abs())
                .and_then(|difference| difference.flatten_all())
                .and_then(|difference| difference.max(0))
                .and_then(|worst| worst.to_scalar::<f32>())
                .expect("difference");
            assert!(worst < 1e-3, "factor {factor}: differs by up to {worst}");
        }
    }

    #[test]
    fn analysis_size_is_reached_by_an_integer_factor() {
        assert_eq!(analysis_factor(1920, 1080, 640), 3);
        assert_eq!(analysis_factor(768, 576, 640), 2);
        assert_eq!(analysis_factor(640, 480, 640), 1);
        assert_eq!(analysis_factor(3840, 2160, 0), 1);
        let image = Tensor::arange(0_f32, 24.0, &Device::Cpu)
            .and_then(|values| values.reshape((1, 1, 4, 6)))
            .expect("image");
        let small = downscale_area(&image, 2).expect("downscale");
        assert_eq!(small.dims(), &[1, 1, 2, 3]);
        let values = small.flatten_all().and_then(|v| v.to_vec1::<f32>()).expect("values");
        assert_eq!(values, vec![3.5, 5.5, 7.5, 15.5, 17.5, 19.5]);
        assert!(matches!(downscale_area(&image, 5), Err(OpsError::TooSmall { .. })));
    }

    #[test]
    fn mixed_sizes_in_one_batch_are_refused() {
        let small = frame(4, 4, |_, _| [0, 0, 0]);
        let large = frame(8, 4, |_, _| [0, 0, 0]);
        assert!(matches!(
            frames_to_tensor(&[&small, &large], &Device::Cpu),
            Err(OpsError::MixedSizes(_))
        ));
    }
}
