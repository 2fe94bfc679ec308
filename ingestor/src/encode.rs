//! Resolution synchronisation (the paper's strategy 1): every frame is converted to its
//! channel's registered schema — size, pixel format and encoding — before it is produced, so
//! a worker never sees a frame that disagrees with the schema it looked up.

use framefleet_proto::v1::{FrameEncoding, FrameSchema, PixelFormat};
use opencv::core::{Mat, Size, Vector};
use opencv::prelude::*;
use opencv::{imgcodecs, imgproc};

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("schema {0}")]
    Schema(String),
    #[error("schema {0}")]
    Size(#[from] crate::source::OutOfRange),
    #[error("converting the frame failed: {0}")]
    OpenCv(#[from] opencv::Error),
    #[error("{0} encoding of the frame failed")]
    Encoder(&'static str),
    #[error("the frame has {0} colour channels; 1, 3 or 4 are supported")]
    Channels(i32),
}

/// Settings that are not part of the schema: they change bytes, not what a worker decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quality {
    /// 1–100.
    pub jpeg: u8,
    /// zlib level 0–9.
    pub png_compression: u8,
}

impl Default for Quality {
    fn default() -> Self {
        Self {
            jpeg: 90,
            png_compression: 1,
        }
    }
}

pub struct FrameEncoder {
    size: Size,
    pixel_format: PixelFormat,
    encoding: FrameEncoding,
    params: Vector<i32>,
    expected_raw_bytes: usize,
    colour: Mat,
    resized: Mat,
    converted: Mat,
}

impl FrameEncoder {
    pub fn new(schema: &FrameSchema, quality: Quality) -> Result<Self, EncodeError> {
        crate::source::check_dimensions(schema.width, schema.height)?;
        let pixel_format = match PixelFormat::try_from(schema.pixel_format) {
            Ok(PixelFormat::Unspecified) | Err(_) => PixelFormat::Rgb24,
            Ok(format) => format,
        };
        let channels = pixel_format.channel_count().unwrap_or(3);
        if schema.channels != 0 && schema.channels != channels {
            return Err(EncodeError::Schema(format!(
                "declares {} channels but pixel format {} has {channels}",
                schema.channels,
                pixel_format.as_str_name()
            )));
        }
        let encoding = match FrameEncoding::try_from(schema.encoding) {
            Ok(FrameEncoding::Unspecified) | Err(_) => FrameEncoding::Jpeg,
            Ok(encoding) => encoding,
        };
        let params = match encoding {
            FrameEncoding::Jpeg => vec![imgcodecs::IMWRITE_JPEG_QUALITY, i32::from(quality.jpeg.clamp(1, 100))],
            FrameEncoding::Png => vec![
                imgcodecs::IMWRITE_PNG_COMPRESSION,
                i32::from(quality.png_compression.min(9)),
            ],
            _ => Vec::new(),
        };
        let size = Size::new(
            i32::try_from(schema.width).unwrap_or(i32::MAX),
            i32::try_from(schema.height).unwrap_or(i32::MAX),
        );
        Ok(Self {
            size,
            pixel_format,
            encoding,
            params: Vector::from_slice(&params),
            expected_raw_bytes: usize::try_from(schema.width as u64 * schema.height as u64 * channels as u64)
                .unwrap_or(usize::MAX),
            colour: Mat::default(),
            resized: Mat::default(),
            converted: Mat::default(),
        })
    }

    pub fn encoding(&self) -> FrameEncoding {
        self.encoding
    }

    /// Converts an OpenCV frame (BGR, gray or BGRA, any size) to the schema's bytes.
    pub fn encode(&mut self, frame: &Mat) -> Result<Vec<u8>, EncodeError> {
        let colour: &Mat = match frame.channels() {
            3 => frame,
            1 => {
                imgproc::cvt_color_def(frame, &mut self.colour, imgproc::COLOR_GRAY2BGR)?;
                &self.colour
            }
            4 => {
                imgproc::cvt_color_def(frame, &mut self.colour, imgproc::COLOR_BGRA2BGR)?;
                &self.colour
            }
            other => return Err(EncodeError::Channels(other)),
        };
        let sized: &Mat = if colour.size()? == self.size {
            colour
        } else {
            // Area averaging when shrinking avoids aliasing; it is slow and blurry when growing.
            let shrinking = colour.cols() >= self.size.width && colour.rows() >= self.size.height;
            let interpolation = if shrinking {
                imgproc::INTER_AREA
            } else {
                imgproc::INTER_LINEAR
            };
            imgproc::resize(colour, &mut self.resized, self.size, 0.0, 0.0, interpolation)?;
            &self.resized
        };
        let conversion = match (self.encoding, self.pixel_format) {
            (_, PixelFormat::Gray8) => Some(imgproc::COLOR_BGR2GRAY),
            (FrameEncoding::Raw, PixelFormat::Rgb24) => Some(imgproc::COLOR_BGR2RGB),
            // JPEG and PNG take BGR and decode to RGB whatever the order was.
            _ => None,
        };
        let pixels: &Mat = match conversion {
            Some(code) => {
                imgproc::cvt_color_def(sized, &mut self.converted, code)?;
                &self.converted
            }
            None => sized,
        };
        match self.encoding {
            FrameEncoding::Jpeg => self.compress(".jpg", "JPEG", pixels),
            FrameEncoding::Png => self.compress(".png", "PNG", pixels),
            _ => {
                let bytes = if pixels.is_continuous() {
                    pixels.data_bytes()?.to_vec()
                } else {
                    pixels.try_clone()?.data_bytes()?.to_vec()
                };
                if bytes.len() != self.expected_raw_bytes {
                    return Err(EncodeError::Schema(format!(
                        "expects {} raw bytes, the frame has {}",
                        self.expected_raw_bytes,
                        bytes.len()
                    )));
                }
                Ok(bytes)
            }
        }
    }

    fn compress(&self, extension: &str, name: &'static str, pixels: &Mat) -> Result<Vec<u8>, EncodeError> {
        let mut encoded = Vector::<u8>::new();
        if !imgcodecs::imencode(extension, pixels, &mut encoded, &self.params)? {
            return Err(EncodeError::Encoder(name));
        }
        Ok(encoded.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opencv::core::{CV_8UC3, Scalar};

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

    fn bgr(width: i32, height: i32, blue: f64, green: f64, red: f64) -> Mat {
        Mat::new_rows_cols_with_default(height, width, CV_8UC3, Scalar::new(blue, green, red, 0.0)).expect("mat")
    }

    #[test]
    fn raw_frames_are_resized_and_reordered_to_the_schema() {
        let mut encoder = FrameEncoder::new(
            &schema(FrameEncoding::Raw, PixelFormat::Rgb24, 4, 2),
            Quality::default(),
        )
        .expect("new");
        let bytes = encoder.encode(&bgr(8, 4, 10.0, 20.0, 30.0)).expect("encode");
        assert_eq!(bytes.len(), 4 * 2 * 3);
        assert_eq!(&bytes[..3], &[30, 20, 10], "RGB order");

        let mut gray = FrameEncoder::new(
            &schema(FrameEncoding::Raw, PixelFormat::Gray8, 4, 2),
            Quality::default(),
        )
        .expect("new");
        assert_eq!(gray.encode(&bgr(4, 2, 0.0, 0.0, 0.0)).expect("encode").len(), 8);
    }

    #[test]
    fn jpeg_and_png_frames_have_the_schema_size() {
        for encoding in [FrameEncoding::Jpeg, FrameEncoding::Png] {
            let mut encoder =
                FrameEncoder::new(&schema(encoding, PixelFormat::Rgb24, 64, 48), Quality::default()).expect("new");
            let bytes = encoder.encode(&bgr(320, 240, 0.0, 128.0, 255.0)).expect("encode");
            let decoded =
                imgcodecs::imdecode(&Vector::<u8>::from_slice(&bytes), imgcodecs::IMREAD_UNCHANGED).expect("decode");
            assert_eq!((decoded.cols(), decoded.rows()), (64, 48), "{encoding:?}");
        }
    }

    #[test]
    fn impossible_schemas_are_refused_before_any_allocation() {
        for (width, height) in [(0, 480), (100_000, 480)] {
            let error = FrameEncoder::new(
                &schema(FrameEncoding::Raw, PixelFormat::Rgb24, width, height),
                Quality::default(),
            )
            .err()
            .expect("refused");
            assert!(error.to_string().contains("outside"), "{error}");
        }
    }
}
