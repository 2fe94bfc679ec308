//! The CPU kernel of the analysis on f32 luma: 5×5 Gaussian blur, 3×3 Sobel gradients and
//! every per-frame statistic in one pass down the rows of an analysis-size plane. Each row is
//! blurred across into a ring of five rows, blurred down from the ring, and its Sobel
//! gradients are taken from the blurred plane as soon as the rows below it exist, so apart
//! from the input and the blurred plane (which motion detection needs) the kernel works on
//! nine rows at a time (11.5 kB at 320 columns) instead of whole intermediate planes. Byte
//! planes take the integer kernel ([`super::integer_filters`]); the two share the Sobel step and
//! the statistics' sums ([`super::features`]).
//! This kernel is the reference the candle graph in [`super::tensor`] (the CUDA path) is
//! checked against, and both are checked against OpenCV (`tests/ops_vs_opencv.rs`).
//!
//! Borders repeat the edge pixel (OpenCV's `BORDER_REPLICATE`). Input rows are copied into
//! padded buffers, and the Sobel step pads its own vertical sums, so the inner loops have no
//! edge cases and the compiler vectorises them; the kernel is compiled once per x86-64
//! instruction set level and the widest one the CPU has is chosen at run time
//! ([`pulp::Arch`]), so one binary runs everywhere and uses AVX2 where it exists. No fused
//! multiply-add is formed (Rust never contracts `a * b + c`), so every level computes the
//! same values.

use super::features::{FrameFeatures, GAUSSIAN_5, SobelScratch, Sums, WINDOW_ROWS, lane_sum, sobel_row};
use super::staging::LumaPlane;

/// Copies `row` into `padded` with `radius` repeated edge values on each side.
#[inline(always)]
fn pad_row(row: &[f32], radius: usize, padded: &mut [f32]) {
    let width = row.len();
    padded[radius..radius + width].copy_from_slice(row);
    let (first, last) = (row[0], row[width - 1]);
    padded[..radius].fill(first);
    padded[radius + width..].fill(last);
}

/// Row buffers the kernel reuses from row to row.
struct Scratch {
    /// One input row with two repeated edge values each side.
    padded: Vec<f32>,
    /// [`WINDOW_ROWS`] rows blurred across, `width` values each.
    window: Vec<f32>,
    sobel: SobelScratch,
}

impl Scratch {
    fn new(width: usize) -> Self {
        Self {
            padded: vec![0.0; width + 4],
            window: vec![0.0; width * WINDOW_ROWS],
            sobel: SobelScratch::new(width),
        }
    }
}

/// Blur, gradients and statistics of an f32 plane (any size of at least 1×1).
pub fn analyse_plane(luma: &LumaPlane) -> FrameFeatures {
    pulp::Arch::new().dispatch(AnalysePlane(luma))
}

/// [`analyse_rows`] as a pulp operation. A closure would not do: it is compiled as a function
/// of its own, without the instruction set pulp enables, unless the optimiser chooses to
/// inline it, and it did not (the kernel ran on SSE2 on an AVX2 machine).
struct AnalysePlane<'a>(&'a LumaPlane);

impl pulp::WithSimd for AnalysePlane<'_> {
    type Output = FrameFeatures;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) -> FrameFeatures {
        analyse_rows(self.0)
    }
}

#[inline(always)]
fn analyse_rows(luma: &LumaPlane) -> FrameFeatures {
    let (width, height) = (luma.width, luma.height);
    let last_row = height - 1;
    let clamp_row = |y: isize| y.clamp(0, last_row as isize) as usize;
    let mut scratch = Scratch::new(width);
    let mut blurred = vec![0_f32; width * height];
    let mut sums = Sums::default();
    let mut next_across = 0;
    for y in 0..height {
        // The window needs the rows up to two below this one blurred across.
        while next_across <= (y + 2).min(last_row) {
            blur_across(luma.row(next_across), next_across, &mut scratch, &mut sums);
            next_across += 1;
        }
        let window_row = |offset: isize| {
            let slot = clamp_row(y as isize + offset) % WINDOW_ROWS;
            &scratch.window[slot * width..][..width]
        };
        let rows = [
            window_row(-2),
            window_row(-1),
            window_row(0),
            window_row(1),
            window_row(2),
        ];
        let out = &mut blurred[y * width..(y + 1) * width];
        gaussian_taps(rows, out);
        sums.blurred += f64::from(lane_sum(out, out, |value, _| value));
        sums.detail += f64::from(lane_sum(luma.row(y), out, |original, value| (original - value).abs()));
        // The row above now has its blurred neighbours on both sides.
        if y >= 1 {
            sums.magnitude += sobel_row(&blurred, width, y - 1, last_row, &mut scratch.sobel);
        }
    }
    sums.magnitude += sobel_row(&blurred, width, last_row, last_row, &mut scratch.sobel);
    sums.into_features(LumaPlane {
        width,
        height,
        values: blurred,
    })
}

/// Blurs input row `y` across into its window slot and adds its luma moments.
#[inline(always)]
fn blur_across(row: &[f32], y: usize, scratch: &mut Scratch, sums: &mut Sums) {
    let width = row.len();
    pad_row(row, 2, &mut scratch.padded);
    let padded = &scratch.padded;
    let shifted = |offset: usize| &padded[offset..offset + width];
    let out = &mut scratch.window[(y % WINDOW_ROWS) * width..][..width];
    gaussian_taps([shifted(0), shifted(1), shifted(2), shifted(3), shifted(4)], out);
    sums.luma += f64::from(lane_sum(row, row, |value, _| value));
    sums.luma_square += f64::from(lane_sum(row, row, |value, _| value * value));
}

/// The 5-tap Gaussian of five aligned views into `out`: across a row, the row shifted by 0–4
/// values; down the rows, the five rows from two above to two below.
#[inline(always)]
fn gaussian_taps([first, second, centre, fourth, fifth]: [&[f32]; 5], out: &mut [f32]) {
    let [k0, k1, k2, _, _] = GAUSSIAN_5;
    // Zipped, not indexed: no bounds checks, so the loop vectorises.
    for (((((value, &a), &b), &c), &d), &e) in out.iter_mut().zip(first).zip(second).zip(centre).zip(fourth).zip(fifth)
    {
        *value = k0 * (a + e) + k1 * (b + d) + k2 * c;
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

    /// Mean Sobel magnitude of the blurred plane, pixel by pixel with replicated borders.
    fn reference_edge_strength(blurred: &[f32], width: usize, height: usize) -> f32 {
        let at = |x: isize, y: isize| {
            blurred[y.clamp(0, height as isize - 1) as usize * width + x.clamp(0, width as isize - 1) as usize]
        };
        let mut total = 0.0_f64;
        for y in 0..height as isize {
            for x in 0..width as isize {
                let gradient_x = (at(x + 1, y - 1) + 2.0 * at(x + 1, y) + at(x + 1, y + 1))
                    - (at(x - 1, y - 1) + 2.0 * at(x - 1, y) + at(x - 1, y + 1));
                let gradient_y = (at(x - 1, y + 1) + 2.0 * at(x, y + 1) + at(x + 1, y + 1))
                    - (at(x - 1, y - 1) + 2.0 * at(x, y - 1) + at(x + 1, y - 1));
                total += f64::from((gradient_x * gradient_x + gradient_y * gradient_y).sqrt());
            }
        }
        (total / (width * height) as f64) as f32
    }

    #[test]
    fn every_statistic_matches_a_per_pixel_reference_at_every_edge_width() {
        // Widths around the vector width and the kernels' reach, where the edge code runs.
        for width in [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 16, 17, 23, 33] {
            for height in [1, 2, 3, 5, 8] {
                let noisy = plane(width, height, |x, y| ((x * 7919 + y * 104_729 + x * y) % 251) as f32);
                let features = analyse_plane(&noisy);
                let blurred = reference_blur(&noisy);
                let pixels = (width * height) as f64;
                let mean = |values: &mut dyn Iterator<Item = f32>| (values.map(f64::from).sum::<f64>() / pixels) as f32;
                let luma_mean = mean(&mut noisy.values.iter().copied());
                let expected = [
                    mean(&mut blurred.iter().copied()),
                    mean(&mut noisy.values.iter().map(|value| (value - luma_mean).powi(2))).sqrt(),
                    mean(
                        &mut noisy
                            .values
                            .iter()
                            .zip(&blurred)
                            .map(|(value, blur)| (value - blur).abs()),
                    ),
                    reference_edge_strength(&blurred, width, height),
                ];
                let actual = [
                    features.mean_luma,
                    features.contrast,
                    features.sharpness,
                    features.edge_strength,
                ];
                for (name, (actual, expected)) in ["mean", "contrast", "sharpness", "edges"]
                    .iter()
                    .zip(actual.iter().zip(expected))
                {
                    assert!(
                        (actual - expected).abs() <= 1e-3 * expected.abs().max(1.0),
                        "{width}×{height} {name}: {actual} ≠ {expected}"
                    );
                }
            }
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
