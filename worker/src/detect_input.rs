//! From a frame payload to the detector's input: packed 8-bit RGB at the frame's full size,
//! checked against the channel schema like [`crate::decode`]. Only frames the detector will
//! run on come here (after the analysis and the motion gate), so a gated frame costs no
//! colour decode.
//!
//! JPEG is decoded by libjpeg-turbo to RGB with its default (accurate integer) IDCT and
//! fancy upsampling — what `cv2.imdecode` does with the same library, so the detector sees the
//! pixels a Python script would. PNG through zune-png; raw frames are reordered to RGB.

use crate::decode::{DecodeError, check_size, checked_size, decode_png, judge_jpeg_warning, raw_layout};
use crate::ops::staging::PixelLayout;
use framefleet_proto::v1::{FrameEncoding, FrameSchema};
use std::cell::RefCell;

/// A decoded frame, packed RGB, rows without padding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

impl RgbImage {
    pub fn as_frame(&self) -> framefleet_detect::RgbFrame<'_> {
        framefleet_detect::RgbFrame {
            width: self.width,
            height: self.height,
            pixels: &self.pixels,
        }
    }
}

thread_local! {
    /// One libjpeg-turbo decoder per compute thread for colour decodes.
    static RGB_DECODER: RefCell<Option<turbojpeg::Decompressor>> = const { RefCell::new(None) };
}

/// Decodes `payload` as `schema` describes to full-size RGB.
///
/// Errors: an empty or corrupt payload, one whose size is not the schema's, a schema this
/// worker cannot read.
pub fn decode_rgb(payload: &[u8], schema: &FrameSchema) -> Result<RgbImage, DecodeError> {
    let (width, height) = checked_size(payload, schema)?;
    let packed = |pixels: &[u8], layout: PixelLayout| RgbImage {
        width,
        height,
        pixels: to_rgb(pixels, layout),
    };
    match FrameEncoding::try_from(schema.encoding) {
        Ok(FrameEncoding::Jpeg) => {
            let decoded = decode_jpeg(payload, (width, height));
            if decoded.is_err() {
                // As for grayscale decodes: a decoder that failed mid-stream starts afresh.
                RGB_DECODER.with_borrow_mut(Option::take);
            }
            decoded
        }
        Ok(FrameEncoding::Png) => {
            let (pixels, layout) = decode_png(payload, (width, height))?;
            Ok(packed(&pixels, layout))
        }
        Ok(FrameEncoding::Raw) => Ok(packed(
            payload,
            raw_layout(payload, (width, height), schema.pixel_format)?,
        )),
        Ok(other) => Err(DecodeError::UnsupportedEncoding(other.as_str_name().to_owned())),
        Err(_) => Err(DecodeError::UnsupportedEncoding(format!("#{}", schema.encoding))),
    }
}

fn decode_jpeg(payload: &[u8], size: (usize, usize)) -> Result<RgbImage, DecodeError> {
    let corrupt = |error: turbojpeg::Error| DecodeError::CorruptJpeg(error.to_string());
    RGB_DECODER.with_borrow_mut(|slot| {
        let decompressor = match slot {
            Some(decompressor) => decompressor,
            None => slot.insert(turbojpeg::Decompressor::new().map_err(corrupt)?),
        };
        let header = decompressor.read_header(payload).map_err(corrupt)?;
        check_size(size, (header.width, header.height))?;
        let mut pixels = vec![0u8; size.0 * size.1 * 3];
        let image = turbojpeg::Image {
            pixels: pixels.as_mut_slice(),
            width: size.0,
            pitch: size.0 * 3,
            height: size.1,
            format: turbojpeg::PixelFormat::RGB,
        };
        if let Err(error) = decompressor.decompress(payload, image) {
            judge_jpeg_warning(error)?;
        }
        Ok(RgbImage {
            width: size.0,
            height: size.1,
            pixels,
        })
    })
}

/// Packed pixels of `layout` as RGB (alpha dropped: a camera frame has no transparency).
fn to_rgb(pixels: &[u8], layout: PixelLayout) -> Vec<u8> {
    match layout {
        PixelLayout::Rgb => pixels.to_vec(),
        PixelLayout::Bgr => pixels.chunks_exact(3).flat_map(|p| [p[2], p[1], p[0]]).collect(),
        PixelLayout::Rgba => pixels.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect(),
        PixelLayout::Gray => pixels.iter().flat_map(|&gray| [gray; 3]).collect(),
        PixelLayout::GrayAlpha => pixels.chunks_exact(2).flat_map(|p| [p[0]; 3]).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use framefleet_proto::v1::PixelFormat;

    fn schema(encoding: FrameEncoding, pixel_format: PixelFormat, width: u32, height: u32) -> FrameSchema {
        FrameSchema {
            version: 1,
            width,
            height,
            channels: 3,
            pixel_format: pixel_format.into(),
            encoding: encoding.into(),
            fps: 25.0,
        }
    }

    #[test]
    fn raw_frames_come_out_as_rgb() {
        let bgr = [1u8, 2, 3, 4, 5, 6];
        let decoded = decode_rgb(&bgr, &schema(FrameEncoding::Raw, PixelFormat::Bgr24, 2, 1)).expect("bgr");
        assert_eq!(decoded.pixels, vec![3, 2, 1, 6, 5, 4]);
        let gray = decode_rgb(&[9, 8], &schema(FrameEncoding::Raw, PixelFormat::Gray8, 2, 1)).expect("gray");
        assert_eq!(gray.pixels, vec![9, 9, 9, 8, 8, 8]);
        assert!(matches!(
            decode_rgb(&[1, 2], &schema(FrameEncoding::Raw, PixelFormat::Rgb24, 2, 1)),
            Err(DecodeError::RawLengthMismatch { .. })
        ));
    }

    #[test]
    fn jpeg_round_trips_and_bad_jpeg_is_refused() {
        let pixels: Vec<u8> = (0..16 * 8 * 3).map(|index| (index % 251) as u8).collect();
        let image = turbojpeg::Image {
            pixels: pixels.as_slice(),
            width: 16,
            pitch: 48,
            height: 8,
            format: turbojpeg::PixelFormat::RGB,
        };
        let jpeg = turbojpeg::compress(image, 95, turbojpeg::Subsamp::None).expect("encode");
        let decoded = decode_rgb(&jpeg, &schema(FrameEncoding::Jpeg, PixelFormat::Rgb24, 16, 8)).expect("decode");
        assert_eq!(
            (decoded.width, decoded.height, decoded.pixels.len()),
            (16, 8, 16 * 8 * 3)
        );
        assert!(matches!(
            decode_rgb(&jpeg, &schema(FrameEncoding::Jpeg, PixelFormat::Rgb24, 8, 8)),
            Err(DecodeError::SizeMismatch { .. })
        ));
        assert!(decode_rgb(&jpeg[..20], &schema(FrameEncoding::Jpeg, PixelFormat::Rgb24, 16, 8)).is_err());
        // The thread's decoder still works after the failure.
        assert!(decode_rgb(&jpeg, &schema(FrameEncoding::Jpeg, PixelFormat::Rgb24, 16, 8)).is_ok());
    }
}
