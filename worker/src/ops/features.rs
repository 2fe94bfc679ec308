//! What the two CPU kernels of the analysis share: the features they compute ([`FrameFeatures`])
//! from running sums ([`Sums`]), the blur's taps and window, and the Sobel step, which both
//! feed the same blurred values. The f32 kernel is [`super::filters`], the whole-byte one
//! [`super::integer_filters`]; [`super::analyse_luma`] picks between them.

use super::staging::LumaPlane;

/// The 5-tap binomial kernel OpenCV uses for `GaussianBlur` with ksize 5 and sigma 0.
pub const GAUSSIAN_5: [f32; 5] = [1.0 / 16.0, 4.0 / 16.0, 6.0 / 16.0, 4.0 / 16.0, 1.0 / 16.0];

/// What the filters tell of one frame, and the blurred plane motion detection compares.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameFeatures {
    /// The 5×5 Gaussian blur of the luma.
    pub blurred: LumaPlane,
    /// Mean of the blurred luma, 0–255.
    pub mean_luma: f32,
    /// Standard deviation of the luma, 0–127.5.
    pub contrast: f32,
    /// Mean |luma − blurred|: fine detail the blur removed.
    pub sharpness: f32,
    /// Mean Sobel gradient magnitude of the blurred luma.
    pub edge_strength: f32,
}

/// Independent partial sums per reduction: a single f32 accumulator is a serial dependency
/// chain the compiler may not reorder (float addition is not associative), which keeps a
/// reduction loop scalar and bound by the add latency; eight lanes vectorise.
pub(super) const LANES: usize = 8;

/// Σ f(a, b) over paired values, in `LANES` partial sums.
#[inline(always)]
pub(super) fn lane_sum(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut lanes = [0_f32; LANES];
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(&x, &y)| f(x, y))
        .sum();
    for (a_chunk, b_chunk) in a_chunks.zip(b_chunks) {
        for ((lane, &x), &y) in lanes.iter_mut().zip(a_chunk).zip(b_chunk) {
            *lane += f(x, y);
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// Rows of the blur's vertical window: five rows blurred across, slot `row % 5`.
pub(super) const WINDOW_ROWS: usize = 5;

/// Running sums of one frame's statistics over its pixels, in luma levels (0–255).
#[derive(Default)]
pub(super) struct Sums {
    pub(super) luma: f64,
    pub(super) luma_square: f64,
    pub(super) blurred: f64,
    /// Σ |luma − blurred|.
    pub(super) detail: f64,
    /// Σ Sobel gradient magnitude of the blurred plane.
    pub(super) magnitude: f64,
}

impl Sums {
    /// The frame's features: each statistic is its sum over the `blurred` plane's pixels.
    pub(super) fn into_features(self, blurred: LumaPlane) -> FrameFeatures {
        let pixels = (blurred.width * blurred.height) as f64;
        let luma_mean = self.luma / pixels;
        let variance = (self.luma_square / pixels - luma_mean * luma_mean).max(0.0);
        FrameFeatures {
            blurred,
            mean_luma: (self.blurred / pixels) as f32,
            contrast: variance.sqrt() as f32,
            sharpness: (self.detail / pixels) as f32,
            edge_strength: (self.magnitude / pixels) as f32,
        }
    }
}

/// The Sobel step's row buffers.
pub(super) struct SobelScratch {
    /// Per column, above + 2 × centre + below: the [1 2 1] smoothing of the x gradient;
    /// `width + 2`, one repeated edge value each side.
    across: Vec<f32>,
    /// Per column, below − above: the difference the y gradient smooths across; `width + 2`.
    down: Vec<f32>,
    /// The row's gradient magnitudes, `width`.
    magnitude: Vec<f32>,
}

impl SobelScratch {
    pub(super) fn new(width: usize) -> Self {
        Self {
            across: vec![0.0; width + 2],
            down: vec![0.0; width + 2],
            magnitude: vec![0.0; width],
        }
    }
}

/// The sum of the Sobel magnitudes of row `y` of a blurred plane `width` values wide whose last
/// row is `last_row` (OpenCV's ksize 3: [-1 0 1] across, [1 2 1] along; edge rows repeated).
/// The rows from `y − 1` to `y + 1` must already be blurred; `blurred` may hold no more.
#[inline(always)]
pub(super) fn sobel_row(blurred: &[f32], width: usize, y: usize, last_row: usize, scratch: &mut SobelScratch) -> f64 {
    let row = |index: usize| &blurred[index * width..][..width];
    let [above, centre, below] = [y.saturating_sub(1), y, (y + 1).min(last_row)].map(row);
    let SobelScratch {
        across,
        down,
        magnitude,
    } = scratch;
    // The difference of the right and left neighbours, smoothed [1 2 1] down the rows, and
    // the difference of the rows below and above, smoothed [1 2 1] across. Both are linear in
    // the rows, so padding them by their own edge values is padding the rows (the edge pixel
    // repeated, as OpenCV's BORDER_REPLICATE does).
    for (((value, &up), &middle), &low) in across[1..=width].iter_mut().zip(above).zip(centre).zip(below) {
        *value = up + 2.0 * middle + low;
    }
    for ((value, &up), &low) in down[1..=width].iter_mut().zip(above).zip(below) {
        *value = low - up;
    }
    for vertical in [&mut *across, &mut *down] {
        (vertical[0], vertical[width + 1]) = (vertical[1], vertical[width]);
    }
    for (((((value, &left), &right), &down_left), &down_middle), &down_right) in magnitude
        .iter_mut()
        .zip(across.iter())
        .zip(&across[2..])
        .zip(down.iter())
        .zip(&down[1..])
        .zip(&down[2..])
    {
        let gradient_x = right - left;
        let gradient_y = down_left + 2.0 * down_middle + down_right;
        *value = (gradient_x * gradient_x + gradient_y * gradient_y).sqrt();
    }
    f64::from(lane_sum(magnitude, magnitude, |value, _| value))
}
