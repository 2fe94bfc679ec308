//! Turns a frame payload into interleaved RGB pixels, checked against the channel schema.
//! Decoding is pure Rust (no OpenCV), so the worker runs on GPU machines that lack OpenCV.
//! Payloads come from outside the process: every size is checked before it is trusted.

use framefleet_proto::v1::{FrameEncoding, FrameSchema, PixelFormat};
use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;
use zune_png::PngDecoder;

/// A frame as interleaved 8-bit RGB, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedFrame {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("empty payload")]
    Empty,
    #[error("corrupt jpeg: {0}")]
    CorruptJpeg(String),
    #[error("corrupt png: {0}")]
    CorruptPng(String),
    #[error("frame is {actual_width}×{actual_height} but the schema says {expected_width}×{expected_height}")]
    SizeMismatch {
        expected_width: usize,
        expected_height: usize,
        actual_width: usize,
        actual_height: usize,
    },
    #[error("raw frame has {actual} bytes but the schema needs {expected}")]
    RawLengthMismatch { expected: usize, actual: usize },
    #[error("encoding {0} is not supported by this worker")]
    UnsupportedEncoding(String),
    #[error("schema is unusable: {0}")]
    BadSchema(String),
}

pub fn decode_frame(payload: &[u8], schema: &FrameSchema) -> Result<DecodedFrame, DecodeError> {
    if payload.is_empty() {
        return Err(DecodeError::Empty);
    }
    let width = usize::try_from(schema.width).map_err(|_| DecodeError::BadSchema("width".into()))?;
    let height = usize::try_from(schema.height).map_err(|_| DecodeError::BadSchema("height".into()))?;
    if width == 0 || height == 0 {
        return Err(DecodeError::BadSchema(format!("{width}×{height}")));
    }
    match FrameEncoding::try_from(schema.encoding) {
        Ok(FrameEncoding::Jpeg) => decode_jpeg(payload, width, height),
        Ok(FrameEncoding::Png) => decode_png(payload, width, height),
        Ok(FrameEncoding::Raw) => decode_raw(payload, width, height, schema.pixel_format),
        Ok(other) => Err(DecodeError::UnsupportedEncoding(other.as_str_name().to_owned())),
        Err(_) => Err(DecodeError::UnsupportedEncoding(format!("#{}", schema.encoding))),
    }
}

/// The largest side any schema may declare (the coordinator refuses more); a header that
/// claims more is not parsed further.
const MAX_DIMENSION: usize = 16_384;

/// Runs one decoder step so that a decoder bug on hostile input costs one frame, not the
/// worker: a panic or an error becomes `corrupt(reason)`.
fn guarded<T, E: std::fmt::Debug>(
    corrupt: fn(String) -> DecodeError,
    step: impl FnOnce() -> Result<T, E>,
) -> Result<T, DecodeError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(step))
        .map_err(|_| corrupt("decoder panicked".to_owned()))?
        .map_err(|error| corrupt(format!("{error:?}")))
}

/// Refuses a frame whose header declares another size than the schema.
fn check_size(
    (expected_width, expected_height): (usize, usize),
    (actual_width, actual_height): (usize, usize),
) -> Result<(), DecodeError> {
    if (actual_width, actual_height) != (expected_width, expected_height) {
        return Err(DecodeError::SizeMismatch {
            expected_width,
            expected_height,
            actual_width,
            actual_height,
        });
    }
    Ok(())
}

fn decode_jpeg(payload: &[u8], width: usize, height: usize) -> Result<DecodedFrame, DecodeError> {
    let options = DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::RGB)
        .set_max_width(MAX_DIMENSION)
        .set_max_height(MAX_DIMENSION);
    let mut decoder = JpegDecoder::new_with_options(payload, options);
    // Header first: a frame of the wrong size is refused as such, before any pixel memory
    // is allocated for it.
    guarded(DecodeError::CorruptJpeg, || decoder.decode_headers())?;
    let actual = decoder
        .dimensions()
        .ok_or_else(|| DecodeError::CorruptJpeg("no dimensions".to_owned()))?;
    check_size((width, height), actual)?;
    let rgb = guarded(DecodeError::CorruptJpeg, || decoder.decode())?;
    if rgb.len() != width * height * 3 {
        return Err(DecodeError::CorruptJpeg(format!(
            "decoded {} bytes, expected {}",
            rgb.len(),
            width * height * 3
        )));
    }
    Ok(DecodedFrame { width, height, rgb })
}

fn decode_png(payload: &[u8], width: usize, height: usize) -> Result<DecodedFrame, DecodeError> {
    let options = DecoderOptions::default()
        .png_set_strip_to_8bit(true)
        .set_max_width(MAX_DIMENSION)
        .set_max_height(MAX_DIMENSION);
    let mut decoder = PngDecoder::new_with_options(payload, options);
    guarded(DecodeError::CorruptPng, || decoder.decode_headers())?;
    let actual = decoder
        .get_dimensions()
        .ok_or_else(|| DecodeError::CorruptPng("no dimensions".to_owned()))?;
    check_size((width, height), actual)?;
    let colorspace = decoder
        .get_colorspace()
        .ok_or_else(|| DecodeError::CorruptPng("no colour space".to_owned()))?;
    let pixels = guarded(DecodeError::CorruptPng, || decoder.decode_raw())?;
    let components = colorspace.num_components();
    if pixels.len() != width * height * components {
        return Err(DecodeError::CorruptPng(format!(
            "decoded {} bytes, expected {}",
            pixels.len(),
            width * height * components
        )));
    }
    // Alpha is dropped: the ops work on colour, and a camera frame has no transparency.
    let rgb = match colorspace {
        ColorSpace::RGB => pixels,
        ColorSpace::RGBA => pixels.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect(),
        ColorSpace::Luma => pixels.iter().flat_map(|&luma| [luma, luma, luma]).collect(),
        ColorSpace::LumaA => pixels.chunks_exact(2).flat_map(|p| [p[0], p[0], p[0]]).collect(),
        other => return Err(DecodeError::CorruptPng(format!("unexpected colour space {other:?}"))),
    };
    Ok(DecodedFrame { width, height, rgb })
}

fn decode_raw(payload: &[u8], width: usize, height: usize, pixel_format: i32) -> Result<DecodedFrame, DecodeError> {
    let pixel_format = PixelFormat::try_from(pixel_format)
        .map_err(|_| DecodeError::BadSchema(format!("pixel format #{pixel_format}")))?;
    let bytes_per_pixel = match pixel_format {
        PixelFormat::Gray8 => 1,
        PixelFormat::Rgb24 | PixelFormat::Bgr24 => 3,
        PixelFormat::Unspecified => return Err(DecodeError::BadSchema("pixel format unspecified".to_owned())),
    };
    let expected = width * height * bytes_per_pixel;
    if payload.len() != expected {
        return Err(DecodeError::RawLengthMismatch {
            expected,
            actual: payload.len(),
        });
    }
    let rgb = match pixel_format {
        PixelFormat::Rgb24 => payload.to_vec(),
        PixelFormat::Bgr24 => payload
            .chunks_exact(3)
            .flat_map(|bgr| [bgr[2], bgr[1], bgr[0]])
            .collect(),
        PixelFormat::Gray8 => payload.iter().flat_map(|&luma| [luma, luma, luma]).collect(),
        PixelFormat::Unspecified => unreachable!("rejected above"),
    };
    Ok(DecodedFrame { width, height, rgb })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(encoding: FrameEncoding, pixel_format: PixelFormat, width: u32, height: u32) -> FrameSchema {
        FrameSchema {
            version: 1,
            width,
            height,
            channels: if pixel_format == PixelFormat::Gray8 { 1 } else { 3 },
            pixel_format: pixel_format.into(),
            encoding: encoding.into(),
            fps: 25.0,
        }
    }

    #[test]
    fn raw_bgr_is_reordered_to_rgb() {
        let frame = decode_frame(
            &[1, 2, 3, 4, 5, 6],
            &schema(FrameEncoding::Raw, PixelFormat::Bgr24, 2, 1),
        )
        .expect("decode");
        assert_eq!(frame.rgb, vec![3, 2, 1, 6, 5, 4]);
    }

    #[test]
    fn raw_of_the_wrong_size_is_refused() {
        let error = decode_frame(&[0; 10], &schema(FrameEncoding::Raw, PixelFormat::Rgb24, 2, 2)).expect_err("size");
        assert_eq!(
            error,
            DecodeError::RawLengthMismatch {
                expected: 12,
                actual: 10
            }
        );
    }

    #[test]
    fn garbage_and_empty_payloads_are_errors_not_panics() {
        let jpeg = schema(FrameEncoding::Jpeg, PixelFormat::Rgb24, 64, 48);
        assert_eq!(decode_frame(&[], &jpeg), Err(DecodeError::Empty));
        assert!(matches!(
            decode_frame(b"definitely not a jpeg", &jpeg),
            Err(DecodeError::CorruptJpeg(_))
        ));
        // A JPEG start marker followed by junk.
        let mut truncated = vec![0xFF, 0xD8, 0xFF, 0xE0];
        truncated.extend(std::iter::repeat_n(0x55, 200));
        assert!(matches!(
            decode_frame(&truncated, &jpeg),
            Err(DecodeError::CorruptJpeg(_))
        ));
    }

    #[test]
    fn corrupt_png_is_an_error_not_a_panic() {
        let png = schema(FrameEncoding::Png, PixelFormat::Rgb24, 4, 4);
        assert!(matches!(
            decode_frame(&[1, 2, 3], &png),
            Err(DecodeError::CorruptPng(_))
        ));
        let mut truncated = b"\x89PNG\r\n\x1a\n".to_vec();
        truncated.extend(std::iter::repeat_n(0x55, 100));
        assert!(matches!(
            decode_frame(&truncated, &png),
            Err(DecodeError::CorruptPng(_))
        ));
    }
}
