//! From a frame payload to its luma at the analysis size ([`StagedFrame`]), checked against
//! the channel schema. Payloads come from outside the process: every size is checked before
//! it is trusted.
//!
//! JPEG frames are decoded by libjpeg-turbo (vendored and linked statically, so the worker
//! needs no system package and no OpenCV) straight to grayscale — the JPEG Y channel, which is
//! BT.601 luma, so chroma is never inverse-transformed or upsampled — and, when the analysis
//! factor allows, at 1/2, 1/4 or 1/8 scale in the DCT domain, so the full-size picture the
//! analysis would throw away is never produced. The rest of the factor is an area downscale.
//! PNG (zune-png) and raw frames are area-downscaled and converted to luma in one pass.

use crate::ops::staging::{PixelLayout, PixelView, area_luma};
use crate::ops::{OpsError, StagedFrame, analysis_factor};
use framefleet_proto::v1::{DeadLetterCode, FrameEncoding, FrameSchema, PixelFormat};
use std::cell::RefCell;
use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;
use zune_png::PngDecoder;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("empty payload")]
    Empty,
    #[error("corrupt jpeg: {0}")]
    CorruptJpeg(String),
    #[error("truncated jpeg: {0}")]
    TruncatedJpeg(String),
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
    #[error("cannot stage the frame for analysis: {0}")]
    Staging(String),
}

impl DecodeError {
    /// The dead-letter code of a frame that fails this way.
    pub fn code(&self) -> DeadLetterCode {
        match self {
            Self::Empty => DeadLetterCode::EmptyPayload,
            Self::CorruptJpeg(_) | Self::CorruptPng(_) => DeadLetterCode::CorruptImage,
            Self::TruncatedJpeg(_) => DeadLetterCode::TruncatedImage,
            Self::SizeMismatch { .. } | Self::RawLengthMismatch { .. } => DeadLetterCode::SizeMismatch,
            Self::UnsupportedEncoding(_) | Self::BadSchema(_) => DeadLetterCode::UnsupportedSchema,
            Self::Staging(_) => DeadLetterCode::ProcessingFailed,
        }
    }
}

impl From<OpsError> for DecodeError {
    fn from(error: OpsError) -> Self {
        Self::Staging(error.to_string())
    }
}

/// The largest side any schema may declare (the coordinator refuses more); a header that
/// claims more is not parsed further.
pub(crate) const MAX_DIMENSION: usize = 16_384;

/// Decodes `payload` as `schema` describes and stages it at the analysis size that
/// `max_side` gives (see [`analysis_factor`]).
///
/// Errors: an empty or corrupt payload, one whose encoded size is not the schema's, a schema
/// this worker cannot read.
pub fn stage_frame(payload: &[u8], schema: &FrameSchema, max_side: usize) -> Result<StagedFrame, DecodeError> {
    let (width, height) = checked_size(payload, schema)?;
    let factor = analysis_factor(width, height, max_side);
    let luma = match FrameEncoding::try_from(schema.encoding) {
        Ok(FrameEncoding::Jpeg) => stage_jpeg(payload, (width, height), factor)?,
        Ok(FrameEncoding::Png) => stage_png(payload, (width, height), factor)?,
        Ok(FrameEncoding::Raw) => stage_raw(payload, (width, height), schema.pixel_format, factor)?,
        Ok(other) => return Err(DecodeError::UnsupportedEncoding(other.as_str_name().to_owned())),
        Err(_) => return Err(DecodeError::UnsupportedEncoding(format!("#{}", schema.encoding))),
    };
    Ok(StagedFrame {
        full_size: (width, height),
        factor,
        luma,
    })
}

/// The checks a frame gets without being decoded (a detect-only channel's frame that its
/// detect stage skips): a payload, a schema this worker reads, and for raw frames the length.
/// Damage inside compressed image data shows only when a stage decodes the frame.
///
/// Errors: as [`stage_frame`]'s, short of those that need the decode.
pub fn check_undecoded(payload: &[u8], schema: &FrameSchema) -> Result<(), DecodeError> {
    let size = checked_size(payload, schema)?;
    match FrameEncoding::try_from(schema.encoding) {
        Ok(FrameEncoding::Raw) => raw_layout(payload, size, schema.pixel_format).map(|_| ()),
        Ok(FrameEncoding::Jpeg | FrameEncoding::Png) => Ok(()),
        Ok(other) => Err(DecodeError::UnsupportedEncoding(other.as_str_name().to_owned())),
        Err(_) => Err(DecodeError::UnsupportedEncoding(format!("#{}", schema.encoding))),
    }
}

/// The schema's frame size, `(width, height)`, once the payload is known not to be empty and
/// the size to be one a frame may have.
pub(crate) fn checked_size(payload: &[u8], schema: &FrameSchema) -> Result<(usize, usize), DecodeError> {
    if payload.is_empty() {
        return Err(DecodeError::Empty);
    }
    let width = usize::try_from(schema.width).map_err(|_| DecodeError::BadSchema("width".into()))?;
    let height = usize::try_from(schema.height).map_err(|_| DecodeError::BadSchema("height".into()))?;
    if width == 0 || height == 0 || width > MAX_DIMENSION || height > MAX_DIMENSION {
        return Err(DecodeError::BadSchema(format!("{width}×{height}")));
    }
    Ok((width, height))
}

/// Refuses a frame whose header declares another size than the schema.
pub(crate) fn check_size(
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

/// What a compute thread keeps from frame to frame to decode JPEGs.
struct JpegDecoder {
    decompressor: turbojpeg::Decompressor,
    /// The decoded (scaled) grayscale pixels; grown to the largest frame seen, never shrunk,
    /// so a frame costs no allocation and no zeroing of its pixel memory.
    pixels: Vec<u8>,
}

thread_local! {
    /// One libjpeg-turbo decoder per compute thread, reused for every frame.
    static JPEG_DECODER: RefCell<Option<JpegDecoder>> = const { RefCell::new(None) };
}

/// The largest DCT-domain scale denominator (8, 4, 2 or 1) that divides `factor`.
pub fn dct_scale(factor: usize) -> usize {
    [8, 4, 2]
        .into_iter()
        .find(|scale| factor.is_multiple_of(*scale))
        .unwrap_or(1)
}

fn stage_jpeg(
    payload: &[u8],
    size: (usize, usize),
    factor: usize,
) -> Result<crate::ops::staging::StagedLuma, DecodeError> {
    let staged = stage_jpeg_with_thread_decoder(payload, size, factor);
    if staged.is_err() {
        // A decoder that failed mid-stream keeps state from the bad frame (Huffman
        // tables half-read): every later frame on this thread then failed with "Bogus Huffman
        // table definition". One bad frame must cost one frame, so start afresh.
        JPEG_DECODER.with_borrow_mut(Option::take);
    }
    staged
}

fn stage_jpeg_with_thread_decoder(
    payload: &[u8],
    size: (usize, usize),
    factor: usize,
) -> Result<crate::ops::staging::StagedLuma, DecodeError> {
    let corrupt = |error: turbojpeg::Error| DecodeError::CorruptJpeg(error.to_string());
    JPEG_DECODER.with_borrow_mut(|slot| {
        let JpegDecoder { decompressor, pixels } = match slot {
            Some(decoder) => decoder,
            None => slot.insert(JpegDecoder {
                decompressor: turbojpeg::Decompressor::new().map_err(corrupt)?,
                pixels: Vec::new(),
            }),
        };
        // Header first: a frame of the wrong size is refused as such, before any pixel memory
        // is allocated for it. (The header's size is the full size whatever the scaling factor
        // the previous frame left set.)
        let header = decompressor.read_header(payload).map_err(corrupt)?;
        check_size(size, (header.width, header.height))?;
        // Lossless JPEG has no DCT to scale in.
        let scale = if header.is_lossless { 1 } else { dct_scale(factor) };
        let scaling = turbojpeg::ScalingFactor::new(1, scale);
        decompressor.set_scaling_factor(scaling).map_err(corrupt)?;
        let scaled = header.scaled(scaling);
        let size_bytes = scaled.width * scaled.height;
        if pixels.len() < size_bytes {
            pixels.resize(size_bytes, 0);
        }
        // libjpeg-turbo writes every row (a warning's rows too), so nothing of an earlier
        // frame is left in the part read below.
        let image = turbojpeg::Image {
            pixels: &mut pixels[..size_bytes],
            width: scaled.width,
            pitch: scaled.width,
            height: scaled.height,
            format: turbojpeg::PixelFormat::GRAY,
        };
        if let Err(error) = decompressor.decompress(payload, image) {
            judge_jpeg_warning(error)?;
        }
        // A scaled side is rounded up; the analysis size is the full size over the factor,
        // rounded down, so only whole blocks of the remaining factor are read.
        let remaining = factor / scale;
        let view = PixelView {
            pixels: &pixels[..size_bytes],
            width: (size.0 / factor * remaining).min(scaled.width),
            height: (size.1 / factor * remaining).min(scaled.height),
            stride: scaled.width,
            layout: PixelLayout::Gray,
        };
        Ok(area_luma(view, remaining)?)
    })
}

/// libjpeg-turbo reports a warning as a failed decompression, with every pixel it could
/// decode written. Decoders (OpenCV, PIL, browsers) accept the warnings that are about
/// metadata or padding, which camera MJPEG streams produce all the time: those frames are
/// good. Missing data is never accepted — libjpeg fills it with grey and the scores would be
/// made up — nor is entropy-coded data it had to conceal. Messages are libjpeg's `jerror.h`
/// texts; anything not known to be harmless is refused.
pub(crate) fn judge_jpeg_warning(error: turbojpeg::Error) -> Result<(), DecodeError> {
    const HARMLESS: [&str; 6] = [
        // JWRN_EXTRANEOUS_DATA: padding or junk between segments, typical of camera MJPEG.
        "extraneous bytes before marker",
        // JWRN_NOT_SEQUENTIAL: webcams writing Ss/Se/Ah/Al wrongly in a baseline scan.
        "Invalid SOS parameters for sequential JPEG",
        // JWRN_JFIF_MAJOR, JWRN_ADOBE_XFORM, JWRN_BOGUS_ICC: metadata libjpeg ignores.
        "unknown JFIF revision number",
        "Unknown Adobe color transform code",
        "bad ICC marker",
        // JWRN_JFIF_BADTHUMBNAILSIZE / JWRN_JFXX_BAD_THUMBNAILSIZE.
        "thumbnail image size does not match data length",
    ];
    const TRUNCATED: [&str; 2] = [
        // JWRN_JPEG_EOF: the data ends without an end-of-image marker.
        "Premature end of JPEG file",
        // JWRN_HIT_MARKER: a scan's data stops before its last block.
        "premature end of data segment",
    ];
    let message = error.to_string();
    if HARMLESS.iter().any(|known| message.contains(known)) {
        Ok(())
    } else if TRUNCATED.iter().any(|known| message.contains(known)) {
        Err(DecodeError::TruncatedJpeg(message))
    } else {
        Err(DecodeError::CorruptJpeg(message))
    }
}

fn stage_png(
    payload: &[u8],
    size: (usize, usize),
    factor: usize,
) -> Result<crate::ops::staging::StagedLuma, DecodeError> {
    let (pixels, layout) = decode_png(payload, size)?;
    Ok(area_luma(PixelView::packed(&pixels, size.0, size.1, layout), factor)?)
}

/// A PNG's pixels, stripped to 8 bits, in their own layout (checked: the schema's size, that
/// many pixels).
pub(crate) fn decode_png(payload: &[u8], size: (usize, usize)) -> Result<(Vec<u8>, PixelLayout), DecodeError> {
    let options = DecoderOptions::default()
        .png_set_strip_to_8bit(true)
        .set_max_width(MAX_DIMENSION)
        .set_max_height(MAX_DIMENSION);
    let mut decoder = PngDecoder::new_with_options(payload, options);
    guarded(DecodeError::CorruptPng, || decoder.decode_headers())?;
    let actual = decoder
        .get_dimensions()
        .ok_or_else(|| DecodeError::CorruptPng("no dimensions".to_owned()))?;
    check_size(size, actual)?;
    let colorspace = decoder
        .get_colorspace()
        .ok_or_else(|| DecodeError::CorruptPng("no colour space".to_owned()))?;
    // Alpha is ignored: a camera frame has no transparency.
    let layout = match colorspace {
        ColorSpace::RGB => PixelLayout::Rgb,
        ColorSpace::RGBA => PixelLayout::Rgba,
        ColorSpace::Luma => PixelLayout::Gray,
        ColorSpace::LumaA => PixelLayout::GrayAlpha,
        other => return Err(DecodeError::CorruptPng(format!("unexpected colour space {other:?}"))),
    };
    let pixels = guarded(DecodeError::CorruptPng, || decoder.decode_raw())?;
    let expected = size.0 * size.1 * layout.bytes_per_pixel();
    if pixels.len() != expected {
        return Err(DecodeError::CorruptPng(format!(
            "decoded {} bytes, expected {expected}",
            pixels.len()
        )));
    }
    Ok((pixels, layout))
}

/// Runs one decoder step so that a decoder bug on hostile input costs one frame, not the
/// worker: a panic or an error becomes `corrupt(reason)`.
pub(crate) fn guarded<T, E: std::fmt::Debug>(
    corrupt: fn(String) -> DecodeError,
    step: impl FnOnce() -> Result<T, E>,
) -> Result<T, DecodeError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(step))
        .map_err(|_| corrupt("decoder panicked".to_owned()))?
        .map_err(|error| corrupt(format!("{error:?}")))
}

fn stage_raw(
    payload: &[u8],
    (width, height): (usize, usize),
    pixel_format: i32,
    factor: usize,
) -> Result<crate::ops::staging::StagedLuma, DecodeError> {
    let layout = raw_layout(payload, (width, height), pixel_format)?;
    Ok(area_luma(PixelView::packed(payload, width, height, layout), factor)?)
}

/// The layout of a raw frame's pixels, once its length is checked against the schema.
pub(crate) fn raw_layout(
    payload: &[u8],
    (width, height): (usize, usize),
    pixel_format: i32,
) -> Result<PixelLayout, DecodeError> {
    let pixel_format = PixelFormat::try_from(pixel_format)
        .map_err(|_| DecodeError::BadSchema(format!("pixel format #{pixel_format}")))?;
    let layout = match pixel_format {
        PixelFormat::Gray8 => PixelLayout::Gray,
        PixelFormat::Rgb24 => PixelLayout::Rgb,
        PixelFormat::Bgr24 => PixelLayout::Bgr,
        PixelFormat::Unspecified => return Err(DecodeError::BadSchema("pixel format unspecified".to_owned())),
    };
    let expected = width * height * layout.bytes_per_pixel();
    if payload.len() != expected {
        return Err(DecodeError::RawLengthMismatch {
            expected,
            actual: payload.len(),
        });
    }
    Ok(layout)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(encoding: FrameEncoding, pixel_format: PixelFormat, width: u32, height: u32) -> FrameSchema {
        FrameSchema {
            version: 1,
            width,
            height,
            channels: pixel_format.channel_count().unwrap_or(3),
            pixel_format: pixel_format.into(),
            encoding: encoding.into(),
            fps: 25.0,
        }
    }

    #[test]
    fn raw_bgr_is_read_in_its_channel_order() {
        let staged = stage_frame(
            &[0, 0, 255, 255, 0, 0],
            &schema(FrameEncoding::Raw, PixelFormat::Bgr24, 2, 1),
            0,
        )
        .expect("stage");
        let luma = staged.luma.to_floats();
        assert!((luma.values[0] - 0.299 * 255.0).abs() < 1e-3, "{staged:?}");
        assert!((luma.values[1] - 0.114 * 255.0).abs() < 1e-3, "{staged:?}");
    }

    #[test]
    fn raw_of_the_wrong_size_is_refused() {
        let error =
            stage_frame(&[0; 10], &schema(FrameEncoding::Raw, PixelFormat::Rgb24, 2, 2), 480).expect_err("size");
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
        assert_eq!(stage_frame(&[], &jpeg, 480), Err(DecodeError::Empty));
        assert!(matches!(
            stage_frame(b"definitely not a jpeg", &jpeg, 480),
            Err(DecodeError::CorruptJpeg(_))
        ));
        // A JPEG start marker followed by junk.
        let mut truncated = vec![0xFF, 0xD8, 0xFF, 0xE0];
        truncated.extend(std::iter::repeat_n(0x55, 200));
        assert!(matches!(
            stage_frame(&truncated, &jpeg, 480),
            Err(DecodeError::CorruptJpeg(_))
        ));
    }

    #[test]
    fn corrupt_png_is_an_error_not_a_panic() {
        let png = schema(FrameEncoding::Png, PixelFormat::Rgb24, 4, 4);
        assert!(matches!(
            stage_frame(&[1, 2, 3], &png, 480),
            Err(DecodeError::CorruptPng(_))
        ));
        let mut truncated = b"\x89PNG\r\n\x1a\n".to_vec();
        truncated.extend(std::iter::repeat_n(0x55, 100));
        assert!(matches!(
            stage_frame(&truncated, &png, 480),
            Err(DecodeError::CorruptPng(_))
        ));
    }

    /// A JPEG encoded here (libjpeg-turbo) at `quality` 95 of a smooth gradient.
    fn gradient_jpeg(width: usize, height: usize) -> Vec<u8> {
        let mut pixels = Vec::with_capacity(width * height * 3);
        for y in 0..height {
            for x in 0..width {
                pixels.extend_from_slice(&[(x * 255 / width) as u8, (y * 255 / height) as u8, 128]);
            }
        }
        let image = turbojpeg::Image {
            pixels: pixels.as_slice(),
            width,
            pitch: width * 3,
            height,
            format: turbojpeg::PixelFormat::RGB,
        };
        turbojpeg::compress(image, 95, turbojpeg::Subsamp::Sub2x2)
            .expect("encode")
            .to_vec()
    }

    #[test]
    fn jpeg_is_staged_at_the_analysis_size_for_every_factor() {
        // 100×60 with max_side 16 is factor 7 (no DCT scale), 8 (1/8), 6 (1/2 then 3), ...
        let payload = gradient_jpeg(100, 60);
        let jpeg = schema(FrameEncoding::Jpeg, PixelFormat::Rgb24, 100, 60);
        let full = stage_frame(&payload, &jpeg, 0).expect("full size");
        assert_eq!((full.luma.width(), full.luma.height(), full.factor), (100, 60, 1));
        let full_luma = full.luma.to_floats();
        for max_side in [50, 34, 25, 17, 15, 13, 12] {
            let staged = stage_frame(&payload, &jpeg, max_side).expect("stage");
            let factor = analysis_factor(100, 60, max_side);
            assert_eq!(staged.factor, factor);
            let luma = staged.luma.to_floats();
            assert_eq!((luma.width, luma.height), (100 / factor, 60 / factor));
            // Each analysis pixel is close to the mean of its block at full size.
            for y in 0..luma.height {
                for x in 0..luma.width {
                    let mut sum = 0.0;
                    for dy in 0..factor {
                        for dx in 0..factor {
                            sum += full_luma.values[(y * factor + dy) * 100 + x * factor + dx];
                        }
                    }
                    let mean = sum / (factor * factor) as f32;
                    let value = luma.values[y * luma.width + x];
                    assert!(
                        (value - mean).abs() < 4.0,
                        "factor {factor} at ({x}, {y}): {value} vs {mean}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_threads_reused_decoder_gives_what_a_fresh_one_gives() {
        let (large, small) = (gradient_jpeg(100, 60), gradient_jpeg(40, 24));
        let (large_schema, small_schema) = (
            schema(FrameEncoding::Jpeg, PixelFormat::Rgb24, 100, 60),
            schema(FrameEncoding::Jpeg, PixelFormat::Rgb24, 40, 24),
        );
        let fresh_small = std::thread::scope(|scope| {
            scope
                .spawn(|| stage_frame(&small, &small_schema, 0).expect("small on a fresh thread"))
                .join()
                .expect("thread")
        });
        // The pixel buffer grew for the large frame (at full size and at 1/2 scale) and keeps
        // its bytes, and a corrupt frame reset the decoder in between.
        stage_frame(&large, &large_schema, 0).expect("large");
        stage_frame(&large, &large_schema, 50).expect("large at 1/2 scale");
        assert!(stage_frame(&large[..large.len() / 2], &large_schema, 0).is_err());
        assert_eq!(stage_frame(&small, &small_schema, 0).expect("small"), fresh_small);
    }

    #[test]
    fn jpeg_of_another_size_than_the_schema_is_refused() {
        let payload = gradient_jpeg(32, 16);
        let error =
            stage_frame(&payload, &schema(FrameEncoding::Jpeg, PixelFormat::Rgb24, 64, 48), 480).expect_err("size");
        assert!(
            matches!(error, DecodeError::SizeMismatch { actual_width: 32, .. }),
            "{error}"
        );
    }

    /// Splits a JPEG into its marker segments: (marker, bytes of the whole segment).
    fn segments(jpeg: &[u8]) -> Vec<(u8, std::ops::Range<usize>)> {
        let mut segments = vec![(0xD8, 0..2)];
        let mut at = 2;
        while at + 4 <= jpeg.len() {
            let marker = jpeg[at + 1];
            let length = usize::from(u16::from_be_bytes([jpeg[at + 2], jpeg[at + 3]]));
            segments.push((marker, at..at + 2 + length));
            if marker == 0xDA {
                break;
            }
            at += 2 + length;
        }
        segments
    }

    fn stage_jpeg_payload(payload: &[u8]) -> Result<StagedFrame, DecodeError> {
        stage_frame(payload, &schema(FrameEncoding::Jpeg, PixelFormat::Rgb24, 64, 48), 480)
    }

    #[test]
    fn jpeg_liberties_camera_streams_take_are_decoded() {
        let jpeg = gradient_jpeg(64, 48);
        let reference = stage_jpeg_payload(&jpeg).expect("the original");

        // Motion-JPEG (AVI1) frames leave out the Huffman tables and rely on the standard ones.
        let mut without_tables = Vec::new();
        for (marker, range) in segments(&jpeg) {
            if marker != 0xC4 {
                without_tables.extend_from_slice(&jpeg[range]);
            }
        }
        let scan_start = segments(&jpeg).last().expect("a scan").1.end;
        without_tables.extend_from_slice(&jpeg[scan_start..]);
        assert!(without_tables.len() < jpeg.len(), "tables removed");
        assert_eq!(stage_jpeg_payload(&without_tables).expect("no DHT"), reference);

        // Padding before the end-of-image marker ("N extraneous bytes before marker 0xd9").
        let mut padded = jpeg[..jpeg.len() - 2].to_vec();
        padded.extend_from_slice(&[0; 16]);
        padded.extend_from_slice(&[0xFF, 0xD9]);
        assert_eq!(stage_jpeg_payload(&padded).expect("padding"), reference);

        // Bytes after the end-of-image marker are not the image's.
        let mut trailing = jpeg.clone();
        trailing.extend_from_slice(b"trailer");
        assert_eq!(stage_jpeg_payload(&trailing).expect("trailer"), reference);
    }

    #[test]
    fn a_truncated_jpeg_is_refused_as_truncated() {
        let jpeg = gradient_jpeg(64, 48);
        let scan_start = segments(&jpeg).last().expect("a scan").1.end;
        for cut in [
            jpeg.len() - 2,
            scan_start + (jpeg.len() - scan_start) / 3,
            scan_start + 1,
        ] {
            let error = stage_jpeg_payload(&jpeg[..cut]).expect_err("truncated");
            assert!(matches!(error, DecodeError::TruncatedJpeg(_)), "cut at {cut}: {error}");
            assert_eq!(error.code(), DeadLetterCode::TruncatedImage);
        }
        // Cut inside the headers: not an image at all.
        let error = stage_jpeg_payload(&jpeg[..scan_start - 4]).expect_err("headers cut");
        assert_eq!(error.code(), DeadLetterCode::CorruptImage, "{error}");
    }

    #[test]
    fn a_bad_frame_does_not_poison_the_next_ones_on_its_thread() {
        let jpeg = gradient_jpeg(64, 48);
        let reference = stage_jpeg_payload(&jpeg).expect("the original");
        let (_, tables) = segments(&jpeg)
            .into_iter()
            .find(|(marker, _)| *marker == 0xC4)
            .expect("a DHT segment");
        // Cut inside the Huffman tables, then garbage after a start marker, then a cut scan.
        let scan_start = segments(&jpeg).last().expect("a scan").1.end;
        for bad in [
            &jpeg[..tables.start + 20],
            &[0xFF, 0xD8, 0xFF, 0xC4, 0x00, 0x40, 0x13][..],
            &jpeg[..scan_start + 5],
        ] {
            assert!(stage_jpeg_payload(bad).is_err());
            assert_eq!(stage_jpeg_payload(&jpeg).expect("the next good frame"), reference);
        }
    }

    #[test]
    fn a_line_scan_frame_keeps_at_least_one_row() {
        let width = 1920;
        let raw: Vec<u8> = (0..width * 3).map(|index| (index % 256) as u8).collect();
        let staged = stage_frame(&raw, &schema(FrameEncoding::Raw, PixelFormat::Gray8, 1920, 3), 480).expect("1920×3");
        assert_eq!((staged.luma.width(), staged.luma.height(), staged.factor), (640, 1, 3));
        let tall = stage_frame(&raw, &schema(FrameEncoding::Raw, PixelFormat::Gray8, 1, 5760), 480).expect("1×5760");
        assert_eq!((tall.luma.width(), tall.luma.height(), tall.factor), (1, 5760, 1));
    }
}
