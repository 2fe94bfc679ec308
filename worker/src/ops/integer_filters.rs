//! The filters for a plane of whole bytes: luma copied from 8-bit pixels, which is what a
//! grayscale decode at the analysis size gives (the common JPEG case, see [`crate::decode`]).
//!
//! OpenCV's 5×5 Gaussian is the binomial [1 4 6 4 1] / 16 each way, so on whole numbers it is
//! exact in integers: a row blurred across is at most 16 × 255 = 4 080 and then blurred down
//! at most 256 × 255 = 65 280, both u16. The f32 kernel ([`super::filters`]) computes the same
//! values exactly too (every intermediate, `a + e` and `b + d` included, is a multiple of 1/256
//! below 512: at most 17 significant bits of f32's 24), so this kernel's blurred plane is the
//! f32 kernel's bit for bit, and so are the Sobel magnitudes, taken from it by the same code. What changes
//! is the cost: a vector holds twice as many u16 lanes as f32 lanes, and integer sums may be
//! reordered, so the compiler folds the luma, blur and detail sums into the loops that produce
//! the values instead of needing a pass each (an f32 sum has an order it must keep). Those
//! three statistics are exact integer sums here, where the f32 kernel rounds partial sums.

use super::features::{FrameFeatures, SobelScratch, Sums as FloatSums, WINDOW_ROWS, sobel_row};
use super::staging::{BytePlane, LumaPlane};

/// Rows wider than this could overflow a row's u32 sums (each term is at most 256 × 255).
const MAX_WIDTH: usize = u32::MAX as usize / (256 * 255);

/// Whether [`analyse_plane`] can take `luma`: rows its sums cannot overflow.
pub(super) fn applies_to(luma: &BytePlane) -> bool {
    luma.width <= MAX_WIDTH
}

/// Blur, gradients and statistics of a plane for which [`applies_to`] holds.
pub(super) fn analyse_plane(luma: &BytePlane) -> FrameFeatures {
    debug_assert!(applies_to(luma));
    pulp::Arch::new().dispatch(AnalyseWholePlane(luma))
}

/// [`analyse_rows`] as a pulp operation, compiled per instruction-set level (a struct, not a
/// closure: see `super::filters::AnalysePlane`).
struct AnalyseWholePlane<'a>(&'a BytePlane);

impl pulp::WithSimd for AnalyseWholePlane<'_> {
    type Output = FrameFeatures;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) -> FrameFeatures {
        analyse_rows(self.0)
    }
}

/// Exact running sums of one frame: luma, luma², 256 × blurred and 256 × |luma − blurred|; the
/// Sobel magnitudes are f32, summed as the f32 kernel sums them.
#[derive(Default)]
struct Sums {
    luma: u64,
    luma_square: u64,
    blurred: u64,
    detail: u64,
    magnitude: f64,
}

/// Row buffers reused from row to row.
struct Scratch {
    /// [`WINDOW_ROWS`] input rows, `width + 4` values each (two repeated edge values each
    /// side), slot `row % 5`: blurred across when they arrive, read again for the detail sum.
    input: Vec<u16>,
    /// [`WINDOW_ROWS`] rows blurred across, 16 × the blur, `width` values each.
    window: Vec<u16>,
    sobel: SobelScratch,
}

#[inline(always)]
fn analyse_rows(luma: &BytePlane) -> FrameFeatures {
    let (width, height) = (luma.width, luma.height);
    let padded_width = width + 4;
    let last_row = height - 1;
    let clamp_row = |y: isize| y.clamp(0, last_row as isize) as usize;
    let mut scratch = Scratch {
        input: vec![0; padded_width * WINDOW_ROWS],
        window: vec![0; width * WINDOW_ROWS],
        sobel: SobelScratch::new(width),
    };
    // Grown a row at a time as rows are blurred, never zeroed first: zeroing the plane up
    // front cost a pass over memory as long as the blur's own.
    let mut blurred: Vec<f32> = Vec::with_capacity(width * height);
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
        let input = &scratch.input[(y % WINDOW_ROWS) * padded_width + 2..][..width];
        blur_down(rows, input, &mut blurred, &mut sums);
        // The row above now has its blurred neighbours on both sides.
        if y >= 1 {
            sums.magnitude += sobel_row(&blurred, width, y - 1, last_row, &mut scratch.sobel);
        }
    }
    sums.magnitude += sobel_row(&blurred, width, last_row, last_row, &mut scratch.sobel);
    // The exact sums in luma levels (the blur and detail ones are 256 × those).
    let sums = FloatSums {
        luma: sums.luma as f64,
        luma_square: sums.luma_square as f64,
        blurred: sums.blurred as f64 / 256.0,
        detail: sums.detail as f64 / 256.0,
        magnitude: sums.magnitude,
    };
    sums.into_features(LumaPlane {
        width,
        height,
        values: blurred,
    })
}

/// Takes input row `y` into its slot as u16 with its luma sums, and blurs it across into its
/// window slot: 16 × the blur, a + 4b + 6c + 4d + e.
#[inline(always)]
fn blur_across(row: &[u8], y: usize, scratch: &mut Scratch, sums: &mut Sums) {
    let width = row.len();
    let padded_width = width + 4;
    let input = &mut scratch.input[(y % WINDOW_ROWS) * padded_width..][..padded_width];
    let (mut luma, mut luma_square) = (0_u32, 0_u32);
    for (pixel, &byte) in input[2..2 + width].iter_mut().zip(row) {
        let byte = u16::from(byte);
        *pixel = byte;
        luma += u32::from(byte);
        // At most 255² = 65 025: a u16 product, which vectorises at twice the width of a u32 one.
        luma_square += u32::from(byte * byte);
    }
    sums.luma += u64::from(luma);
    sums.luma_square += u64::from(luma_square);
    let (first, last) = (input[2], input[width + 1]);
    input[..2].fill(first);
    input[width + 2..].fill(last);
    let input = &*input;
    let shifted = |offset: usize| &input[offset..offset + width];
    let out = &mut scratch.window[(y % WINDOW_ROWS) * width..][..width];
    // Zipped, not indexed: no bounds checks, so the loop vectorises.
    for (((((value, &a), &b), &c), &d), &e) in out
        .iter_mut()
        .zip(shifted(0))
        .zip(shifted(1))
        .zip(shifted(2))
        .zip(shifted(3))
        .zip(shifted(4))
    {
        *value = a + e + 4 * (b + d) + 6 * c;
    }
}

/// Blurs down five rows of the window (from two above to two below), appending the blurred
/// row in 0–255 to `out`, and adds its blur and detail sums against `input`, the row's luma.
#[inline(always)]
fn blur_down([first, second, centre, fourth, fifth]: [&[u16]; 5], input: &[u16], out: &mut Vec<f32>, sums: &mut Sums) {
    let (mut blurred, mut detail) = (0_u32, 0_u32);
    out.extend(
        first
            .iter()
            .zip(second)
            .zip(centre)
            .zip(fourth)
            .zip(fifth)
            .zip(input)
            .map(|(((((&a, &b), &c), &d), &e), &pixel)| {
                // At most 256 × 255 = 65 280: a u16 without overflow.
                let sum = a + e + 4 * (b + d) + 6 * c;
                blurred += u32::from(sum);
                detail += (i32::from(pixel) * 256 - i32::from(sum)).unsigned_abs();
                f32::from(sum) * (1.0 / 256.0)
            }),
    );
    sums.blurred += u64::from(blurred);
    sums.detail += u64::from(detail);
}

#[cfg(test)]
mod tests {
    use super::super::filters::analyse_plane as analyse_float_plane;
    use super::super::staging::StagedLuma;
    use super::*;

    fn whole_plane(width: usize, height: usize, byte: impl Fn(usize, usize) -> u8) -> BytePlane {
        let bytes: Vec<u8> = (0..height)
            .flat_map(|y| (0..width).map(move |x| (x, y)))
            .map(|(x, y)| byte(x, y))
            .collect();
        BytePlane::new(width, height, bytes).expect("plane")
    }

    #[test]
    fn the_widest_rows_sum_without_overflow_and_wider_ones_take_the_f32_kernel() {
        // White rows give the largest blur sum (65 280 a pixel), isolated white pixels the
        // largest detail; a debug build panics on any overflow.
        let patterns: [(&str, Pattern); 2] = [
            ("white", |_, _| 255),
            ("dots", |x, y| if (x + y) % 3 == 0 { 255 } else { 0 }),
        ];
        for (name, pattern) in patterns {
            let widest = whole_plane(MAX_WIDTH, 2, pattern);
            assert!(applies_to(&widest));
            let (exact, float) = (analyse_plane(&widest), analyse_float_plane(&widest.to_floats()));
            assert_eq!(exact.blurred, float.blurred, "{name}");
            // Against f64 sums of the planes (the f32 kernel's own sums drift by ~1e-5 over
            // rows this long).
            let pixels = widest.bytes.len() as f64;
            let mean = exact.blurred.values.iter().map(|&value| f64::from(value)).sum::<f64>() / pixels;
            let detail = (widest.bytes.iter().zip(&exact.blurred.values))
                .map(|(&byte, &blur)| (f64::from(byte) - f64::from(blur)).abs())
                .sum::<f64>()
                / pixels;
            for (statistic, actual, expected) in
                [("mean", exact.mean_luma, mean), ("sharpness", exact.sharpness, detail)]
            {
                let error = (f64::from(actual) - expected).abs();
                assert!(
                    error <= 1e-5 * expected.max(1.0),
                    "{name} {statistic}: {actual} ≠ {expected}"
                );
            }

            let wider = whole_plane(MAX_WIDTH + 1, 1, pattern);
            assert!(!applies_to(&wider));
            let through_dispatch = super::super::analyse_luma(&StagedLuma::Bytes(wider.clone()));
            assert_eq!(through_dispatch, analyse_float_plane(&wider.to_floats()), "{name}");
        }
    }

    /// A plane's byte at (x, y).
    type Pattern = fn(usize, usize) -> u8;

    #[test]
    fn integer_kernel_gives_the_f32_kernels_blur_and_edges_bit_for_bit() {
        // Widths around the vector widths (8 f32, 16 u16 lanes) and the kernels' reach, with
        // noise over the whole 0–255 range, saturated planes and a hard step.
        let patterns: [(&str, Pattern); 4] = [
            ("noise", |x, y| ((x * 7919 + y * 104_729 + x * y) % 256) as u8),
            ("white", |_, _| 255),
            ("checks", |x, y| if (x + y) % 2 == 0 { 255 } else { 0 }),
            ("step", |x, _| if x < 9 { 0 } else { 255 }),
        ];
        for (name, pattern) in patterns {
            for width in [1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 320] {
                for height in [1, 2, 3, 5, 8, 13] {
                    let plane = whole_plane(width, height, pattern);
                    let exact = analyse_plane(&plane);
                    let float = analyse_float_plane(&plane.to_floats());
                    let at = format!("{name} {width}×{height}");
                    assert_eq!(exact.blurred, float.blurred, "{at}: blurred planes differ");
                    assert_eq!(exact.edge_strength, float.edge_strength, "{at}: edge strength");
                    // The other sums are exact here and rounded in f32 there.
                    for (statistic, exact, float) in [
                        ("mean", exact.mean_luma, float.mean_luma),
                        ("contrast", exact.contrast, float.contrast),
                        ("sharpness", exact.sharpness, float.sharpness),
                    ] {
                        assert!(
                            (exact - float).abs() <= 1e-5 * float.abs().max(1.0),
                            "{at} {statistic}: {exact} ≠ {float}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn statistics_of_known_planes_are_exact() {
        let white = analyse_plane(&whole_plane(40, 30, |_, _| 255));
        assert_eq!(
            (white.mean_luma, white.contrast, white.sharpness, white.edge_strength),
            (255.0, 0.0, 0.0, 0.0)
        );
        // Half the pixels 0 and half 255: σ = 127.5 exactly.
        let checks = analyse_plane(&whole_plane(40, 30, |x, y| if (x + y) % 2 == 0 { 255 } else { 0 }));
        assert_eq!(checks.contrast, 127.5);
    }
}
