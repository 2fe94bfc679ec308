//! Staging: from a frame's pixels, in whatever layout its encoding gave, to the one thing
//! every op reads — BT.601 luma at the analysis size: the decoder's bytes as they are when no
//! arithmetic is needed (gray pixels already at the analysis size), f32 otherwise. Area
//! averaging and the luma weights are both linear, so the block means of the colour channels
//! are taken first and weighted once per output pixel: one pass over the full-size pixels,
//! factor² fewer multiplications, and the full-size frame is never converted to f32.

use super::error::OpsError;
use std::borrow::Cow;

/// ITU-R BT.601 luma weights (R, G, B), the ones OpenCV's `cvtColor(RGB2GRAY)` and JPEG's
/// YCbCr (JFIF, ITU-T T.871) use.
pub const LUMA_WEIGHTS: [f32; 3] = [0.299, 0.587, 0.114];

/// One frame's luma, row-major, `width × height` values in 0–255.
#[derive(Debug, Clone, PartialEq)]
pub struct LumaPlane {
    pub width: usize,
    pub height: usize,
    pub values: Vec<f32>,
}

/// 8-bit luma, row-major, `width × height` bytes: what a grayscale decode at the analysis
/// size gives (the common JPEG case), copied as it is. A quarter of the memory of a
/// [`LumaPlane`], and the filters blur it in exact integer arithmetic
/// ([`super::integer_filters`]).
#[derive(Debug, Clone, PartialEq)]
pub struct BytePlane {
    pub width: usize,
    pub height: usize,
    pub bytes: Vec<u8>,
}

impl BytePlane {
    /// Errors: `bytes` is not `width × height` long, or the plane is empty.
    pub fn new(width: usize, height: usize, bytes: Vec<u8>) -> Result<Self, OpsError> {
        check_plane(width, height, bytes.len())?;
        Ok(Self { width, height, bytes })
    }

    /// Row `y` (`width` bytes). Panics if `y ≥ height`.
    pub fn row(&self, y: usize) -> &[u8] {
        &self.bytes[y * self.width..(y + 1) * self.width]
    }

    /// The same luma as f32 values.
    pub fn to_floats(&self) -> LumaPlane {
        LumaPlane {
            width: self.width,
            height: self.height,
            values: self.bytes.iter().map(|&byte| f32::from(byte)).collect(),
        }
    }
}

/// A plane of `width × height` must hold that many values, and at least one.
fn check_plane(width: usize, height: usize, values: usize) -> Result<(), OpsError> {
    if values != width * height || width == 0 || height == 0 {
        return Err(OpsError::BadPlane { width, height, values });
    }
    Ok(())
}

/// A frame's luma at the analysis size, as staging produced it: the decoder's bytes when no
/// arithmetic was needed, f32 values when luma was weighted or area-averaged.
#[derive(Debug, Clone, PartialEq)]
pub enum StagedLuma {
    Bytes(BytePlane),
    Floats(LumaPlane),
}

impl StagedLuma {
    /// Width of the analysis-size plane, in pixels.
    pub fn width(&self) -> usize {
        match self {
            Self::Bytes(plane) => plane.width,
            Self::Floats(plane) => plane.width,
        }
    }

    /// Height of the analysis-size plane, in pixels.
    pub fn height(&self) -> usize {
        match self {
            Self::Bytes(plane) => plane.height,
            Self::Floats(plane) => plane.height,
        }
    }

    /// The luma as f32 values (converted from bytes when that is how it was staged).
    pub fn to_floats(&self) -> Cow<'_, LumaPlane> {
        match self {
            Self::Floats(plane) => Cow::Borrowed(plane),
            Self::Bytes(plane) => Cow::Owned(plane.to_floats()),
        }
    }
}

impl LumaPlane {
    /// Errors: `values` is not `width × height` long, or the plane is empty.
    pub fn new(width: usize, height: usize, values: Vec<f32>) -> Result<Self, OpsError> {
        check_plane(width, height, values.len())?;
        Ok(Self { width, height, values })
    }

    pub fn row(&self, y: usize) -> &[f32] {
        &self.values[y * self.width..(y + 1) * self.width]
    }
}

/// How 8-bit interleaved pixels are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelLayout {
    Gray,
    GrayAlpha,
    Rgb,
    Bgr,
    Rgba,
}

impl PixelLayout {
    pub fn bytes_per_pixel(self) -> usize {
        match self {
            Self::Gray => 1,
            Self::GrayAlpha => 2,
            Self::Rgb | Self::Bgr => 3,
            Self::Rgba => 4,
        }
    }

    /// Weight of each byte of a pixel in its luma; alpha weighs nothing.
    fn weights(self) -> [f32; 4] {
        let [red, green, blue] = LUMA_WEIGHTS;
        match self {
            Self::Gray | Self::GrayAlpha => [1.0, 0.0, 0.0, 0.0],
            Self::Rgb | Self::Rgba => [red, green, blue, 0.0],
            Self::Bgr => [blue, green, red, 0.0],
        }
    }
}

/// A borrowed 8-bit image: `height` rows of `width` pixels, each row starting `stride` bytes
/// after the previous one (a stride wider than the row crops the right-hand columns).
#[derive(Debug, Clone, Copy)]
pub struct PixelView<'a> {
    pub pixels: &'a [u8],
    pub width: usize,
    pub height: usize,
    pub stride: usize,
    pub layout: PixelLayout,
}

impl<'a> PixelView<'a> {
    /// A tightly packed image (stride = width × bytes per pixel).
    pub fn packed(pixels: &'a [u8], width: usize, height: usize, layout: PixelLayout) -> Self {
        Self {
            pixels,
            width,
            height,
            stride: width * layout.bytes_per_pixel(),
            layout,
        }
    }
}

/// Area downscale by the integer `factor` (each output pixel the mean of a factor×factor
/// block, OpenCV's `resize(INTER_AREA)` for integer factors; rows and columns that do not fill
/// a block are cropped) fused with BT.601 luma. Output: `width / factor × height / factor`.
///
/// Errors: the view's buffer is shorter than its geometry says, or the frame is smaller than
/// one block.
pub fn area_luma(image: PixelView<'_>, factor: usize) -> Result<StagedLuma, OpsError> {
    let factor = factor.max(1);
    let bytes_per_pixel = image.layout.bytes_per_pixel();
    let row_bytes = image.width * bytes_per_pixel;
    let needed = match image.height {
        0 => 0,
        rows => image.stride * (rows - 1) + row_bytes,
    };
    if image.stride < row_bytes || image.pixels.len() < needed {
        return Err(OpsError::BadPlane {
            width: image.width,
            height: image.height,
            values: image.pixels.len(),
        });
    }
    let (width, height) = (image.width / factor, image.height / factor);
    if width == 0 || height == 0 {
        return Err(OpsError::TooSmall {
            width: image.width,
            height: image.height,
            factor,
        });
    }
    if factor == 1 && image.layout == PixelLayout::Gray {
        let mut bytes = Vec::with_capacity(width * height);
        for y in 0..height {
            bytes.extend_from_slice(&image.pixels[y * image.stride..][..width]);
        }
        return Ok(StagedLuma::Bytes(BytePlane::new(width, height, bytes)?));
    }
    let weights = image.layout.weights();
    let mut values = Vec::with_capacity(width * height);
    if factor == 1 {
        for y in 0..height {
            let row = &image.pixels[y * image.stride..][..row_bytes];
            values.extend(row.chunks_exact(bytes_per_pixel).map(|pixel| {
                pixel
                    .iter()
                    .zip(weights)
                    .map(|(&byte, weight)| f32::from(byte) * weight)
                    .sum::<f32>()
            }));
        }
        return Ok(StagedLuma::Floats(LumaPlane::new(width, height, values)?));
    }
    let scale = 1.0 / (factor * factor) as f32;
    let block_bytes = factor * bytes_per_pixel;
    // Per output column, the running sum of each byte of the pixel over the block's rows.
    let mut sums = vec![0_u64; width * bytes_per_pixel];
    for out_y in 0..height {
        sums.fill(0);
        for y in out_y * factor..(out_y + 1) * factor {
            let row = &image.pixels[y * image.stride..][..width * block_bytes];
            for (block, block_sums) in row
                .chunks_exact(block_bytes)
                .zip(sums.chunks_exact_mut(bytes_per_pixel))
            {
                for pixel in block.chunks_exact(bytes_per_pixel) {
                    for (sum, &byte) in block_sums.iter_mut().zip(pixel) {
                        *sum += u64::from(byte);
                    }
                }
            }
        }
        values.extend(sums.chunks_exact(bytes_per_pixel).map(|block_sums| {
            block_sums
                .iter()
                .zip(weights)
                .map(|(&sum, weight)| sum as f32 * scale * weight)
                .sum::<f32>()
        }));
    }
    Ok(StagedLuma::Floats(LumaPlane::new(width, height, values)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luma_uses_bt601_weights_in_every_layout() {
        let rgb = [255_u8, 0, 0, 0, 255, 0];
        let bgr = [0_u8, 0, 255, 0, 255, 0];
        let rgba = [255_u8, 0, 0, 9, 0, 255, 0, 9];
        for (pixels, layout) in [
            (&rgb[..], PixelLayout::Rgb),
            (&bgr[..], PixelLayout::Bgr),
            (&rgba[..], PixelLayout::Rgba),
        ] {
            let plane = area_luma(PixelView::packed(pixels, 2, 1, layout), 1)
                .expect("luma")
                .to_floats()
                .into_owned();
            assert!((plane.values[0] - 0.299 * 255.0).abs() < 1e-3, "{layout:?}: {plane:?}");
            assert!((plane.values[1] - 0.587 * 255.0).abs() < 1e-3, "{layout:?}: {plane:?}");
        }
        let gray_alpha = [10_u8, 255, 20, 0];
        let plane = area_luma(PixelView::packed(&gray_alpha, 2, 1, PixelLayout::GrayAlpha), 1).expect("luma");
        assert_eq!(plane.to_floats().values, vec![10.0, 20.0]);
    }

    #[test]
    fn blocks_are_averaged_and_partial_blocks_cropped() {
        // 5×3 gray, factor 2: a 2×1 output from the top-left 4×2 pixels.
        let pixels: Vec<u8> = (0..15).collect();
        let plane = area_luma(PixelView::packed(&pixels, 5, 3, PixelLayout::Gray), 2).expect("luma");
        assert_eq!((plane.width(), plane.height()), (2, 1));
        assert_eq!(
            plane.to_floats().values,
            vec![(0.0 + 1.0 + 5.0 + 6.0) / 4.0, (2.0 + 3.0 + 7.0 + 8.0) / 4.0]
        );
    }

    #[test]
    fn a_wider_stride_crops_columns() {
        let pixels: Vec<u8> = (0..12).collect();
        let view = PixelView {
            pixels: &pixels,
            width: 2,
            height: 3,
            stride: 4,
            layout: PixelLayout::Gray,
        };
        // Gray at factor 1 is the bytes themselves.
        let plane = area_luma(view, 1).expect("luma");
        assert_eq!(
            plane,
            StagedLuma::Bytes(BytePlane::new(2, 3, vec![0, 1, 4, 5, 8, 9]).expect("plane"))
        );
        assert_eq!(plane.to_floats().values, vec![0.0, 1.0, 4.0, 5.0, 8.0, 9.0]);
    }

    #[test]
    fn short_buffers_and_tiny_frames_are_errors() {
        assert!(matches!(
            area_luma(PixelView::packed(&[0; 5], 2, 1, PixelLayout::Rgb), 1),
            Err(OpsError::BadPlane { .. })
        ));
        assert!(matches!(
            area_luma(PixelView::packed(&[0; 4], 2, 2, PixelLayout::Gray), 3),
            Err(OpsError::TooSmall { .. })
        ));
    }
}
