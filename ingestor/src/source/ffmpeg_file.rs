//! Video files read with FFmpeg's libraries directly (`ffmpeg-next`), not through OpenCV's
//! `VideoCapture`. OpenCV 4.6 converts every decoded picture with the scaler it set up for
//! the first one and reports the opening size for ever: when a file's resolution changes
//! mid-stream (a drone switching modes, concatenated recordings) it returns the new picture
//! in a corner of the old size, the rest stale, with nothing to tell it apart. Here each
//! decoded picture is converted at its own size (the encoder then scales the whole picture to
//! the channel schema), and pictures the decoder flags as damaged are reported.
//!
//! Rotation metadata (the stream's display matrix) is applied as the `ffmpeg` tool does;
//! the frame rate is the stream's when plausible, else derived from timestamps.

use crate::source::frame_source::{FrameSource, ReadOutcome, SourceError, SourceInfo};
use crate::source::spec::{FALLBACK_FPS, MAX_DIMENSION, MAX_PLAUSIBLE_FPS, median_rate};
use ffmpeg_next as ffmpeg;
use opencv::core::{self, Mat};
use opencv::prelude::*;
use std::path::Path;

/// Why a decoded picture could not be turned into a BGR frame.
#[derive(Debug, thiserror::Error)]
enum ConvertError {
    #[error("cannot convert a {width}×{height} {format} picture: {error}")]
    Scaler {
        width: u32,
        height: u32,
        format: String,
        error: ffmpeg::Error,
    },
    #[error("converting a picture failed: {0}")]
    Scaling(ffmpeg::Error),
    #[error("a {width}×{height} picture is too large")]
    TooLarge { width: u32, height: u32 },
    #[error(transparent)]
    OpenCv(#[from] opencv::Error),
}

/// Packets of the video stream read to derive a frame rate the file does not state.
const RATE_PROBE_PACKETS: usize = 50;

pub struct FfmpegFileSource {
    uri: String,
    input: ffmpeg::format::context::Input,
    stream_index: usize,
    decoder: ffmpeg::decoder::Video,
    decoded: ffmpeg::frame::Video,
    bgr: ffmpeg::frame::Video,
    /// Quarter turns clockwise to display the picture upright (0–3).
    quarter_turns: u8,
    info: SourceInfo,
    /// The decoded size last seen, to log a change once.
    last_size: (u32, u32),
    flushed: bool,
}

fn open_error(uri: &str, error: impl std::fmt::Display) -> SourceError {
    tracing::debug!(source = uri, %error, "FFmpeg cannot open the file");
    SourceError::CannotOpen(uri.to_owned())
}

impl FfmpegFileSource {
    /// Opens `path`. `fps_override` (the channel's `?fps=`) wins over the file's rate.
    pub fn open(uri: &str, path: &Path, fps_override: Option<f64>) -> Result<Self, SourceError> {
        ffmpeg::init().map_err(|error| open_error(uri, error))?;
        let input = ffmpeg::format::input(path).map_err(|error| open_error(uri, error))?;
        let stream = input
            .streams()
            .best(ffmpeg::media::Type::Video)
            .ok_or_else(|| open_error(uri, "no video stream"))?;
        let stream_index = stream.index();
        let quarter_turns = stream
            .side_data()
            .find(|side_data| side_data.kind() == ffmpeg::codec::packet::side_data::Type::DisplayMatrix)
            .map_or(0, |side_data| quarter_turns(side_data.data()));
        let stream_rate = [stream.avg_frame_rate(), stream.rate()]
            .into_iter()
            .map(f64::from)
            .find(|fps| fps.is_finite() && *fps > 0.0 && *fps <= MAX_PLAUSIBLE_FPS);
        let context = ffmpeg::codec::context::Context::from_parameters(stream.parameters())
            .map_err(|error| open_error(uri, error))?;
        let decoder = context.decoder().video().map_err(|error| open_error(uri, error))?;
        let (width, height) = (decoder.width(), decoder.height());
        let valid = |side: u32| (1..=MAX_DIMENSION).contains(&side);
        if !(valid(width) && valid(height)) {
            return Err(SourceError::BadFrameSize {
                uri: uri.to_owned(),
                width: f64::from(width),
                height: f64::from(height),
            });
        }
        let fps = match (fps_override, stream_rate) {
            (Some(fps), _) | (None, Some(fps)) => fps,
            (None, None) => {
                let derived = rate_from_packet_times(path, stream_index);
                tracing::info!(source = uri, ?derived, "frame rate not stated; derived from timestamps");
                derived.unwrap_or(FALLBACK_FPS)
            }
        };
        let (width, height) = if quarter_turns % 2 == 1 {
            (height, width)
        } else {
            (width, height)
        };
        Ok(Self {
            uri: uri.to_owned(),
            input,
            stream_index,
            decoder,
            decoded: ffmpeg::frame::Video::empty(),
            bgr: ffmpeg::frame::Video::empty(),
            quarter_turns,
            info: SourceInfo { width, height, fps },
            last_size: (0, 0),
            flushed: false,
        })
    }

    /// The next decoded picture into `self.decoded`; false at the end of the file.
    fn next_picture(&mut self) -> Result<Option<ReadOutcome>, SourceError> {
        loop {
            if self.decoder.receive_frame(&mut self.decoded).is_ok() {
                return Ok(None);
            }
            if self.flushed {
                return Ok(Some(ReadOutcome::End));
            }
            let mut packet = ffmpeg::Packet::empty();
            match packet.read(&mut self.input) {
                Ok(()) if packet.stream() != self.stream_index => continue,
                Ok(()) => {
                    if let Err(error) = self.decoder.send_packet(&packet) {
                        return Ok(Some(ReadOutcome::Undecodable(format!(
                            "a packet of `{}` cannot be decoded: {error}",
                            self.uri
                        ))));
                    }
                }
                // A demuxer can resync past damaged data.
                Err(ffmpeg::Error::InvalidData) => {
                    return Ok(Some(ReadOutcome::Undecodable(format!(
                        "damaged data in `{}`",
                        self.uri
                    ))));
                }
                // The end, or an I/O error that every later read would repeat: drain the
                // decoder and stop.
                Err(_) => {
                    self.flushed = true;
                    let _ = self.decoder.send_eof();
                }
            }
        }
    }

    /// Converts `self.decoded` to BGR at its own size, upright, into `frame`.
    fn convert(&mut self, frame: &mut Mat) -> Result<(), ConvertError> {
        let (width, height, format) = (self.decoded.width(), self.decoded.height(), self.decoded.format());
        if (width, height) != self.last_size {
            if self.last_size != (0, 0) {
                tracing::warn!(
                    source = %self.uri,
                    from = ?self.last_size,
                    to = ?(width, height),
                    "the video's resolution changed; each picture is scaled whole to the channel's size"
                );
            }
            self.last_size = (width, height);
        }
        // A converter per picture, at the picture's own size and format: cheap next to the
        // decode, and it cannot go stale when the stream changes. (ffmpeg-next's converter
        // is not `Send`, so it could not live in a source that moves to its capture thread.)
        let mut scaler = ffmpeg::software::scaling::Context::get(
            format,
            width,
            height,
            ffmpeg::format::Pixel::BGR24,
            width,
            height,
            ffmpeg::software::scaling::Flags::BILINEAR,
        )
        .map_err(|error| ConvertError::Scaler {
            width,
            height,
            format: format!("{format:?}"),
            error,
        })?;
        if (self.bgr.width(), self.bgr.height()) != (width, height) {
            // The converter writes into a picture of its own size only.
            self.bgr = ffmpeg::frame::Video::empty();
        }
        scaler
            .run(&self.decoded, &mut self.bgr)
            .map_err(ConvertError::Scaling)?;
        let rows = i32::try_from(height).map_err(|_| ConvertError::TooLarge { width, height })?;
        let cols = i32::try_from(width).map_err(|_| ConvertError::TooLarge { width, height })?;
        let mut picture = Mat::new_rows_cols_with_default(rows, cols, core::CV_8UC3, core::Scalar::all(0.0))?;
        let stride = self.bgr.stride(0);
        let source = self.bgr.data(0);
        let row_bytes = width as usize * 3;
        let target = picture.data_bytes_mut()?;
        for row in 0..height as usize {
            target[row * row_bytes..][..row_bytes].copy_from_slice(&source[row * stride..][..row_bytes]);
        }
        let rotation = match self.quarter_turns {
            1 => Some(core::ROTATE_90_CLOCKWISE),
            2 => Some(core::ROTATE_180),
            3 => Some(core::ROTATE_90_COUNTERCLOCKWISE),
            _ => None,
        };
        match rotation {
            Some(code) => core::rotate(&picture, frame, code)?,
            None => *frame = picture,
        }
        Ok(())
    }
}

impl FrameSource for FfmpegFileSource {
    fn info(&self) -> SourceInfo {
        self.info
    }

    fn read(&mut self, frame: &mut Mat) -> Result<ReadOutcome, SourceError> {
        if let Some(outcome) = self.next_picture()? {
            return Ok(outcome);
        }
        if self.decoded.is_corrupt() || !self.decoded.decode_error_flags().is_empty() {
            // The decoder concealed damage: the picture is sent (it is what a player shows),
            // but said so.
            tracing::warn!(source = %self.uri, flags = ?self.decoded.decode_error_flags(), "the decoder reports a damaged picture");
        }
        match self.convert(frame) {
            Ok(()) => Ok(ReadOutcome::Frame),
            Err(reason) => Ok(ReadOutcome::Undecodable(format!("`{}`: {reason}", self.uri))),
        }
    }
}

/// Quarter turns clockwise that display a picture upright, from a display matrix (nine
/// 32-bit values, 16.16 fixed point; ISO/IEC 14496-12): the `ffmpeg` tool's rotation,
/// `atan2(b, a)` in degrees, rounded to a quarter turn.
fn quarter_turns(matrix: &[u8]) -> u8 {
    let value = |index: usize| {
        matrix
            .get(index * 4..index * 4 + 4)
            .and_then(|bytes| <[u8; 4]>::try_from(bytes).ok())
            .map_or(0.0, |bytes| f64::from(i32::from_ne_bytes(bytes)))
    };
    let degrees = value(1).atan2(value(0)).to_degrees();
    ((degrees / 90.0).round() as i64).rem_euclid(4) as u8
}

/// The rate from the first packets' timestamps (see [`median_rate`]).
fn rate_from_packet_times(path: &Path, stream_index: usize) -> Option<f64> {
    let mut input = ffmpeg::format::input(path).ok()?;
    let time_base = f64::from(input.stream(stream_index)?.time_base());
    let mut stamps_ms: Vec<f64> = Vec::with_capacity(RATE_PROBE_PACKETS);
    for (stream, packet) in input.packets() {
        if stream.index() != stream_index {
            continue;
        }
        if let Some(pts) = packet.pts().or(packet.dts()) {
            stamps_ms.push(pts as f64 * time_base * 1000.0);
        }
        if stamps_ms.len() >= RATE_PROBE_PACKETS {
            break;
        }
    }
    // Packets come in decode order; presentation order is sorted.
    stamps_ms.sort_by(f64::total_cmp);
    median_rate(&stamps_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(values: [i32; 9]) -> Vec<u8> {
        values.iter().flat_map(|value| value.to_ne_bytes()).collect()
    }

    #[test]
    fn display_matrices_give_quarter_turns() {
        let one = 0x0001_0000;
        assert_eq!(quarter_turns(&matrix([one, 0, 0, 0, one, 0, 0, 0, 0x4000_0000])), 0);
        assert_eq!(quarter_turns(&matrix([0, one, 0, -one, 0, 0, 0, 0, 0x4000_0000])), 1);
        assert_eq!(quarter_turns(&matrix([-one, 0, 0, 0, -one, 0, 0, 0, 0x4000_0000])), 2);
        assert_eq!(quarter_turns(&matrix([0, -one, 0, one, 0, 0, 0, 0, 0x4000_0000])), 3);
        assert_eq!(quarter_turns(&[]), 0, "a short matrix is no rotation");
    }

    /// A Motion-JPEG file (concatenated JPEGs, as IP cameras serve) whose pictures change size
    /// twice: 64×48, then 32×24, then 128×96, each a flat grey that grows with the frame
    /// number. OpenCV 4.6 reads all of them as 64×48, the small ones in a corner.
    #[test]
    fn a_resolution_change_mid_stream_gives_whole_pictures() {
        use opencv::core::{Scalar, Vector};
        let path = std::env::temp_dir().join(format!("framefleet-resize-{}.mjpeg", std::process::id()));
        let sizes = [(64, 48); 10].into_iter().chain([(32, 24); 10]).chain([(128, 96); 10]);
        let mut bytes = Vec::new();
        for (index, (width, height)) in sizes.clone().enumerate() {
            let image = Mat::new_rows_cols_with_default(height, width, core::CV_8UC3, Scalar::all((index * 8) as f64))
                .expect("image");
            let mut encoded = Vector::<u8>::new();
            opencv::imgcodecs::imencode(".jpg", &image, &mut encoded, &Vector::new()).expect("encode");
            bytes.extend_from_slice(encoded.as_slice());
        }
        std::fs::write(&path, bytes).expect("write");
        let mut source = FfmpegFileSource::open("test.mjpeg", &path, Some(10.0)).expect("open");
        assert_eq!((source.info().width, source.info().height), (64, 48));
        let mut frame = Mat::default();
        for (index, (width, height)) in sizes.enumerate() {
            assert_eq!(
                source.read(&mut frame).expect("read"),
                ReadOutcome::Frame,
                "frame {index}"
            );
            assert_eq!((frame.cols(), frame.rows()), (width, height), "frame {index}");
            // The whole picture is the new one: flat, at this frame's grey (JPEG rounding aside).
            let mut mean = Mat::default();
            let mut deviation = Mat::default();
            core::mean_std_dev(&frame, &mut mean, &mut deviation, &core::no_array()).expect("stats");
            let (mean, deviation) = (
                *mean.at::<f64>(0).expect("mean"),
                *deviation.at::<f64>(0).expect("deviation"),
            );
            assert!((mean - (index * 8) as f64).abs() < 3.0, "frame {index}: mean {mean}");
            assert!(
                deviation < 3.0,
                "frame {index}: not one flat picture (deviation {deviation})"
            );
        }
        assert_eq!(source.read(&mut frame).expect("end"), ReadOutcome::End);
        std::fs::remove_file(&path).ok();
    }
}
