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
use framefleet_proto::wire::FrameScores;

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

/// Stacks same-sized RGB frames into one (N, 3, H, W) f32 tensor on `device`. Pixels are
/// split into colour planes while they are copied in (the copy happens anyway), so every
/// later op works on contiguous planes; they are uploaded as u8 (a quarter of the bytes of
/// f32) and converted on the device.
pub fn frames_to_tensor(frames: &[&DecodedFrame], device: &Device) -> Result<Tensor, OpsError> {
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

/// Per-frame scores of a batch: grayscale, blur, then mean luma and sharpness.
///
/// On the CPU the frames go through one at a time: a frame's f32 planes stay in cache across
/// the ~20 passes, a batch's do not (`cargo bench --bench ops`: 263 frames/s at 640×480 one
/// by one, 132 in batches of 8). Batches are for devices that need them to be efficient.
pub fn score_batch(frames: &[&DecodedFrame], device: &Device) -> Result<Vec<FrameScores>, OpsError> {
    if device.is_cpu() && frames.len() > 1 {
        let mut scores = Vec::with_capacity(frames.len());
        for frame in frames {
            scores.extend(score_tensor_batch(std::slice::from_ref(frame), device)?);
        }
        return Ok(scores);
    }
    score_tensor_batch(frames, device)
}

fn score_tensor_batch(frames: &[&DecodedFrame], device: &Device) -> Result<Vec<FrameScores>, OpsError> {
    let batch = frames_to_tensor(frames, device)?;
    let gray = grayscale(&batch)?;
    let blurred = gaussian_blur_5(&gray)?;
    let mean_luma = blurred.flatten_from(1)?.mean(1)?.to_vec1::<f32>()?;
    let sharpness = (&gray - &blurred)?.abs()?.flatten_from(1)?.mean(1)?.to_vec1::<f32>()?;
    Ok(mean_luma
        .into_iter()
        .zip(sharpness)
        .map(|(mean_luma, sharpness)| FrameScores { mean_luma, sharpness })
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

    #[test]
    fn scores_separate_flat_from_detailed_frames() {
        let flat = frame(32, 32, |_, _| [100, 100, 100]);
        let checkerboard = frame(
            32,
            32,
            |x, y| if (x + y) % 2 == 0 { [255, 255, 255] } else { [0, 0, 0] },
        );
        let scores = score_batch(&[&flat, &checkerboard], &Device::Cpu).expect("scores");
        assert_eq!(scores.len(), 2);
        assert!((scores[0].mean_luma - 100.0).abs() < 0.01, "{:?}", scores[0]);
        assert!(
            scores[0].sharpness < 0.01,
            "a flat frame has no detail: {:?}",
            scores[0]
        );
        assert!(
            scores[1].sharpness > 50.0,
            "a checkerboard is all detail: {:?}",
            scores[1]
        );
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
