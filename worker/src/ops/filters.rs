//! The CPU kernel of the analysis: 5×5 Gaussian blur, 3×3 Sobel gradients and every
//! per-frame statistic in three passes over one analysis-size plane, with no intermediate
//! tensor and no allocation beyond the blurred plane (which motion detection needs) and two
//! row buffers. It is the reference the candle graph in [`super::tensor`] (the CUDA path) is
//! checked against, and both are checked against OpenCV (`tests/ops_vs_opencv.rs`).
//!
//! Borders repeat the edge pixel (OpenCV's `BORDER_REPLICATE`). Rows are copied into a padded
//! buffer so the inner loops have no edge cases and the compiler vectorises them.

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
const LANES: usize = 8;

/// Σ f(a, b) over paired values, in `LANES` partial sums.
#[inline]
fn lane_sum(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f32 {
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

/// Copies `row` into `padded` with `radius` repeated edge values on each side.
fn pad_row(row: &[f32], radius: usize, padded: &mut [f32]) {
    let width = row.len();
    padded[radius..radius + width].copy_from_slice(row);
    let (first, last) = (row[0], row[width - 1]);
    padded[..radius].fill(first);
    padded[radius + width..].fill(last);
}

/// Blur, gradients and statistics of `luma` (any size of at least 1×1).
pub fn analyse_plane(luma: &LumaPlane) -> FrameFeatures {
    let (width, height) = (luma.width, luma.height);
    let pixels = (width * height) as f64;
    let [k0, k1, k2, _, _] = GAUSSIAN_5;

    // Pass 1: horizontal blur, and the luma's first and second moments.
    let mut horizontal = vec![0_f32; width * height];
    let mut padded = vec![0_f32; width + 4];
    let (mut luma_sum, mut luma_square_sum) = (0_f64, 0_f64);
    for y in 0..height {
        let row = luma.row(y);
        pad_row(row, 2, &mut padded);
        let out = &mut horizontal[y * width..(y + 1) * width];
        // Five shifted views zipped, not indexed: no bounds checks, so the loop vectorises.
        let shifted = |offset: usize| &padded[offset..offset + width];
        for (((((value, &left2), &left1), &centre), &right1), &right2) in out
            .iter_mut()
            .zip(shifted(0))
            .zip(shifted(1))
            .zip(shifted(2))
            .zip(shifted(3))
            .zip(shifted(4))
        {
            *value = k0 * (left2 + right2) + k1 * (left1 + right1) + k2 * centre;
        }
        luma_sum += f64::from(lane_sum(row, row, |value, _| value));
        luma_square_sum += f64::from(lane_sum(row, row, |value, _| value * value));
    }

    // Pass 2: vertical blur, with the blurred mean and the detail the blur removed.
    let mut blurred = vec![0_f32; width * height];
    let (mut blurred_sum, mut detail_sum) = (0_f64, 0_f64);
    let clamp_row = |y: isize| y.clamp(0, height as isize - 1) as usize * width;
    for y in 0..height {
        let at = |offset: isize| &horizontal[clamp_row(y as isize + offset)..][..width];
        let (above2, above1, centre, below1, below2) = (at(-2), at(-1), at(0), at(1), at(2));
        let out = &mut blurred[y * width..(y + 1) * width];
        for (((((value, &up2), &up1), &middle), &down1), &down2) in out
            .iter_mut()
            .zip(above2)
            .zip(above1)
            .zip(centre)
            .zip(below1)
            .zip(below2)
        {
            *value = k0 * (up2 + down2) + k1 * (up1 + down1) + k2 * middle;
        }
        blurred_sum += f64::from(lane_sum(out, out, |value, _| value));
        detail_sum += f64::from(lane_sum(luma.row(y), out, |original, value| (original - value).abs()));
    }

    // Pass 3: Sobel x/y of the blurred plane (OpenCV's ksize 3: [-1 0 1] across, [1 2 1]
    // along) and the mean magnitude.
    let mut rows = [vec![0_f32; width + 2], vec![0_f32; width + 2], vec![0_f32; width + 2]];
    let (mut across, mut down) = (vec![0_f32; width + 2], vec![0_f32; width + 2]);
    let mut magnitude = vec![0_f32; width];
    let mut magnitude_sum = 0_f64;
    for y in 0..height {
        for (slot, offset) in [-1_isize, 0, 1].into_iter().enumerate() {
            let source = clamp_row(y as isize + offset);
            pad_row(&blurred[source..source + width], 1, &mut rows[slot]);
        }
        let [above, centre, below] = &rows;
        // The difference of the right and left neighbours, smoothed [1 2 1] down the rows,
        // and the difference of the rows below and above, smoothed [1 2 1] across.
        for (((value, &up), &middle), &low) in across.iter_mut().zip(above).zip(centre).zip(below) {
            *value = up + 2.0 * middle + low;
        }
        for ((value, &up), &low) in down.iter_mut().zip(above).zip(below) {
            *value = low - up;
        }
        for (((((value, &left), &right), &down_left), &down_middle), &down_right) in magnitude
            .iter_mut()
            .zip(&across)
            .zip(&across[2..])
            .zip(&down)
            .zip(&down[1..])
            .zip(&down[2..])
        {
            let gradient_x = right - left;
            let gradient_y = down_left + 2.0 * down_middle + down_right;
            *value = (gradient_x * gradient_x + gradient_y * gradient_y).sqrt();
        }
        magnitude_sum += f64::from(lane_sum(&magnitude, &magnitude, |value, _| value));
    }

    let luma_mean = luma_sum / pixels;
    let variance = (luma_square_sum / pixels - luma_mean * luma_mean).max(0.0);
    FrameFeatures {
        blurred: LumaPlane {
            width,
            height,
            values: blurred,
        },
        mean_luma: (blurred_sum / pixels) as f32,
        contrast: variance.sqrt() as f32,
        sharpness: (detail_sum / pixels) as f32,
        edge_strength: (magnitude_sum / pixels) as f32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plane(width: usize, height: usize, value: impl Fn(usize, usize) -> f32) -> LumaPlane {
        let values = (0..height)
            .flat_map(|y| (0..width).map(move |x| (x, y)))
            .map(|(x, y)| value(x, y))
            .collect();
        LumaPlane::new(width, height, values).expect("plane")
    }

    /// Straightforward per-pixel 5×5 blur with replicated borders.
    fn reference_blur(input: &LumaPlane) -> Vec<f32> {
        let clamp = |value: isize, max: usize| value.clamp(0, max as isize - 1) as usize;
        let mut out = vec![0.0; input.width * input.height];
        for y in 0..input.height {
            for x in 0..input.width {
                let mut sum = 0.0;
                for (dy, wy) in GAUSSIAN_5.iter().enumerate() {
                    for (dx, wx) in GAUSSIAN_5.iter().enumerate() {
                        let sy = clamp(y as isize + dy as isize - 2, input.height);
                        let sx = clamp(x as isize + dx as isize - 2, input.width);
                        sum += wy * wx * input.values[sy * input.width + sx];
                    }
                }
                out[y * input.width + x] = sum;
            }
        }
        out
    }

    #[test]
    fn blur_matches_a_per_pixel_reference_even_on_tiny_planes() {
        for (width, height) in [(37, 23), (1, 1), (2, 7), (6, 1)] {
            let noisy = plane(width, height, |x, y| ((x * 7919 + y * 104_729) % 251) as f32);
            let features = analyse_plane(&noisy);
            let expected = reference_blur(&noisy);
            let worst = features
                .blurred
                .values
                .iter()
                .zip(&expected)
                .map(|(a, e)| (a - e).abs())
                .fold(0.0_f32, f32::max);
            assert!(worst < 1e-3, "{width}×{height}: differs by up to {worst}");
        }
    }

    #[test]
    fn statistics_separate_flat_from_detailed_planes() {
        let flat = analyse_plane(&plane(32, 32, |_, _| 100.0));
        assert!((flat.mean_luma - 100.0).abs() < 1e-3, "{flat:?}");
        assert!(flat.contrast < 1e-3 && flat.sharpness < 1e-3 && flat.edge_strength < 1e-3);
        let checks = analyse_plane(&plane(32, 32, |x, y| if (x + y) % 2 == 0 { 255.0 } else { 0.0 }));
        assert!((checks.contrast - 127.5).abs() < 0.01, "{}", checks.contrast);
        assert!(checks.sharpness > 50.0, "{}", checks.sharpness);
        // A vertical edge: |gx| of a unit step blurred is large only near the edge.
        let stripes = analyse_plane(&plane(32, 32, |x, _| if x < 16 { 0.0 } else { 255.0 }));
        assert!(stripes.edge_strength > 10.0, "{}", stripes.edge_strength);
    }
}
