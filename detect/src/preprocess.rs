//! Resizing a frame to the network's input exactly as the reference pipeline does:
//! `cv2.resize(frame, size)` with OpenCV's default `INTER_LINEAR` on 8-bit images, which is
//! fixed-point (11-bit coefficients, `INTER_RESIZE_COEF_BITS` in `imgproc/src/resize.cpp`)
//! and rounds the vertical pass as its SIMD path does (`VResizeLinearVec_32s8u`). Bit-exact
//! against OpenCV 4.x's x86 build on the frames tested (see `tests`), so the detector sees
//! the same pixels as a Python script calling `cv2.resize`.

/// Fixed-point scale of OpenCV's linear-resize coefficients (`INTER_RESIZE_COEF_SCALE`).
const COEFFICIENT_SCALE: f32 = 2048.0;

/// Source index and fixed-point weights `(a0, a1)` of each destination column (or row).
fn coefficients(source: usize, destination: usize) -> Vec<(usize, i32, i32)> {
    // OpenCV computes the inverse scale first and the scale from it, in double.
    let scale = 1.0 / (destination as f64 / source as f64);
    (0..destination)
        .map(|index| {
            let position = ((index as f64 + 0.5) * scale - 0.5) as f32;
            let floor = position.floor();
            let (mut start, mut fraction) = (floor as isize, position - floor);
            if start < 0 {
                start = 0;
                fraction = 0.0;
            }
            if start as usize >= source - 1 {
                start = source as isize - 1;
                fraction = 0.0;
            }
            let a1 = (fraction * COEFFICIENT_SCALE).round_ties_even() as i32;
            let a0 = ((1.0 - fraction) * COEFFICIENT_SCALE).round_ties_even() as i32;
            (start as usize, a0, a1)
        })
        .collect()
}

/// Resizes packed 8-bit pixels (`channels` per pixel, rows without padding) from
/// `width`×`height` to `out_width`×`out_height` into `out`.
///
/// Panics: only when the buffers do not match the sizes, which callers check
/// ([`crate::Detector::prepare`] does).
pub fn resize_linear(
    pixels: &[u8],
    (width, height): (usize, usize),
    channels: usize,
    (out_width, out_height): (usize, usize),
    out: &mut [u8],
) {
    assert_eq!(pixels.len(), width * height * channels, "source buffer size");
    assert_eq!(out.len(), out_width * out_height * channels, "destination buffer size");
    let rows = coefficients(height, out_height);
    let row_len = out_width * channels;
    // Each destination value's two source offsets in a row and weights, flattened over the
    // channels, so the horizontal pass is one loop with no per-pixel arithmetic.
    let taps: Vec<(usize, usize, i32, i32)> = coefficients(width, out_width)
        .into_iter()
        .flat_map(|(start, a0, a1)| {
            let next = (start + 1).min(width - 1);
            (0..channels).map(move |channel| (start * channels + channel, next * channels + channel, a0, a1))
        })
        .collect();
    let horizontal = |y: usize, row: &mut [i32]| {
        let source = &pixels[y * width * channels..(y + 1) * width * channels];
        for (value, &(first, second, a0, a1)) in row.iter_mut().zip(&taps) {
            *value = i32::from(source[first]) * a0 + i32::from(source[second]) * a1;
        }
    };
    // The two source rows last filtered horizontally, by source row: downscaling by less
    // than 2 reuses one of them for most destination rows.
    let mut filtered: [(Option<usize>, Vec<i32>); 2] = [(None, vec![0i32; row_len]), (None, vec![0i32; row_len])];
    for (y, &(start, b0, b1)) in rows.iter().enumerate() {
        let next = (start + 1).min(height - 1);
        if filtered[0].0 != Some(start) {
            if filtered[1].0 == Some(start) {
                filtered.swap(0, 1);
            } else {
                horizontal(start, &mut filtered[0].1);
                filtered[0].0 = Some(start);
            }
        }
        if filtered[1].0 != Some(next) {
            horizontal(next, &mut filtered[1].1);
            filtered[1].0 = Some(next);
        }
        let [(_, upper), (_, lower)] = &filtered;
        let out_row = &mut out[y * row_len..(y + 1) * row_len];
        for ((value, &top), &bottom) in out_row.iter_mut().zip(upper).zip(lower) {
            // (S >> 4) · b, keeping the high 16 bits, as `v_mul_hi` on 16-bit lanes does.
            let sum = (((top >> 4) * b0) >> 16) + (((bottom >> 4) * b1) >> 16);
            *value = ((sum + 2) >> 2).clamp(0, 255) as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_size_is_a_copy() {
        let pixels: Vec<u8> = (0..5 * 4 * 3).map(|value| (value * 7 % 256) as u8).collect();
        let mut out = vec![0u8; pixels.len()];
        resize_linear(&pixels, (5, 4), 3, (5, 4), &mut out);
        assert_eq!(out, pixels);
    }

    #[test]
    fn a_flat_image_stays_flat_at_any_size() {
        for value in [0u8, 1, 128, 254, 255] {
            let pixels = vec![value; 7 * 5 * 3];
            for size in [(3, 2), (300, 300), (7, 11), (1, 1)] {
                let mut out = vec![0u8; size.0 * size.1 * 3];
                resize_linear(&pixels, (7, 5), 3, size, &mut out);
                assert!(out.iter().all(|&pixel| pixel == value), "{value} at {size:?}");
            }
        }
    }

    /// The resize computed directly, each destination row from its two source rows with no
    /// reuse: what the row cache and the flattened taps must not change.
    fn resize_directly(
        pixels: &[u8],
        (width, height): (usize, usize),
        channels: usize,
        (out_width, out_height): (usize, usize),
    ) -> Vec<u8> {
        let columns = coefficients(width, out_width);
        let rows = coefficients(height, out_height);
        let horizontal = |y: usize, x: usize, channel: usize| {
            let (start, a0, a1) = columns[x];
            let next = (start + 1).min(width - 1);
            i32::from(pixels[(y * width + start) * channels + channel]) * a0
                + i32::from(pixels[(y * width + next) * channels + channel]) * a1
        };
        let mut out = Vec::new();
        for &(start, b0, b1) in &rows {
            let next = (start + 1).min(height - 1);
            for x in 0..out_width {
                for channel in 0..channels {
                    let sum = (((horizontal(start, x, channel) >> 4) * b0) >> 16)
                        + (((horizontal(next, x, channel) >> 4) * b1) >> 16);
                    out.push(((sum + 2) >> 2).clamp(0, 255) as u8);
                }
            }
        }
        out
    }

    #[test]
    fn row_reuse_changes_nothing() {
        for (source, destination) in [
            ((640, 480), (300, 300)),
            ((1920, 1080), (300, 300)),
            ((200, 150), (300, 300)),
            ((9, 7), (4, 13)),
            ((300, 300), (300, 300)),
        ] {
            let pixels = crate::test_inputs::bytes(source.0 * source.1 * 3, (source.0 * source.1) as u64);
            let mut out = vec![0u8; destination.0 * destination.1 * 3];
            resize_linear(&pixels, source, 3, destination, &mut out);
            assert!(
                out == resize_directly(&pixels, source, 3, destination),
                "{source:?} -> {destination:?}"
            );
        }
    }

    #[test]
    fn halving_averages_pairs() {
        // Downscaling by 2 samples exactly between two source pixels: weights 1024 and 1024.
        let pixels = [10u8, 20, 30, 40];
        let mut out = [0u8; 2];
        resize_linear(&pixels, (4, 1), 1, (2, 1), &mut out);
        assert_eq!(out, [15, 35]);
    }
}
