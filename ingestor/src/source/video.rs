//! Files, streams and devices through OpenCV's `cv::VideoCapture`.

use crate::source::frame_source::{FrameSource, OpenOptions, ReadOutcome, SourceError, SourceInfo, opencv_error};
use crate::source::spec::{FALLBACK_FPS, MAX_DIMENSION, MAX_PLAUSIBLE_FPS, median_rate};
use opencv::core::{Mat, Vector};
use opencv::prelude::*;
use opencv::videoio;

/// Frames whose timestamps are read to derive a rate the file does not state.
const FPS_PROBE_FRAMES: usize = 50;

/// Files, streams and devices through `cv::VideoCapture`.
pub(super) struct VideoSource {
    uri: String,
    capture: videoio::VideoCapture,
    info: SourceInfo,
    live: bool,
    /// Frames the file says it holds; a failed read before them may be damage.
    declared_frames: Option<u64>,
    position: u64,
}

impl VideoSource {
    pub(super) fn open(
        uri: &str,
        target: &str,
        backend: i32,
        live: bool,
        fps_override: Option<f64>,
        options: OpenOptions,
    ) -> Result<Self, SourceError> {
        let error = opencv_error(uri);
        let timeout_ms = i32::try_from(options.stall_timeout.as_millis())
            .unwrap_or(i32::MAX)
            .max(1);
        // Without these, FFmpeg waits for a dead RTSP server for ~30 s per read; with them a
        // stall is noticed after `stall_timeout` and the channel reconnects.
        let params = Vector::<i32>::from_slice(&[
            videoio::CAP_PROP_OPEN_TIMEOUT_MSEC,
            timeout_ms,
            videoio::CAP_PROP_READ_TIMEOUT_MSEC,
            timeout_ms,
        ]);
        let mut capture = if live {
            videoio::VideoCapture::from_file_with_params(target, backend, &params).map_err(&error)?
        } else {
            videoio::VideoCapture::from_file(target, backend).map_err(&error)?
        };
        if !capture.is_opened().map_err(&error)? {
            return Err(SourceError::CannotOpen(uri.to_owned()));
        }
        // Play a file's rotation metadata the way players do (a phone's portrait video arrives
        // upright), whatever this OpenCV build defaults to; backends without it ignore this.
        let _ = capture.set(videoio::CAP_PROP_ORIENTATION_AUTO, 1.0);
        let width = capture.get(videoio::CAP_PROP_FRAME_WIDTH).map_err(&error)?;
        let height = capture.get(videoio::CAP_PROP_FRAME_HEIGHT).map_err(&error)?;
        let fps = capture.get(videoio::CAP_PROP_FPS).map_err(&error)?;
        let frame_count = capture.get(videoio::CAP_PROP_FRAME_COUNT).map_err(&error)?;
        let valid_dimension = |value: f64| value.is_finite() && (1.0..=f64::from(MAX_DIMENSION)).contains(&value);
        if !(valid_dimension(width) && valid_dimension(height)) {
            return Err(SourceError::BadFrameSize {
                uri: uri.to_owned(),
                width,
                height,
            });
        }
        let fps = match fps_override {
            Some(fps) => fps,
            None if fps.is_finite() && fps > 0.0 && fps <= MAX_PLAUSIBLE_FPS => fps,
            None if live => FALLBACK_FPS,
            None => {
                let derived = rate_from_timestamps(&mut capture);
                tracing::info!(
                    source = uri,
                    reported = fps,
                    ?derived,
                    "frame rate not stated; derived from timestamps"
                );
                // The probe read frames: start again from the first.
                capture = videoio::VideoCapture::from_file(target, backend).map_err(&error)?;
                if !capture.is_opened().map_err(&error)? {
                    return Err(SourceError::CannotOpen(uri.to_owned()));
                }
                derived.unwrap_or(FALLBACK_FPS)
            }
        };
        Ok(Self {
            uri: uri.to_owned(),
            capture,
            // Checked above to lie in 1..=MAX_DIMENSION, so the casts are exact.
            info: SourceInfo {
                width: width as u32,
                height: height as u32,
                fps,
            },
            live,
            declared_frames: (!live && frame_count.is_finite() && frame_count >= 1.0).then_some(frame_count as u64),
            position: 0,
        })
    }
}

impl FrameSource for VideoSource {
    fn info(&self) -> SourceInfo {
        self.info
    }

    fn read(&mut self, frame: &mut Mat) -> Result<ReadOutcome, SourceError> {
        if self.read_frame(frame)? {
            return Ok(ReadOutcome::Frame);
        }
        if self.live {
            return Ok(ReadOutcome::Stalled);
        }
        // A file's declared frame count is a hint (sample files declare hundreds of frames
        // more than they hold), so a failed read is the end unless a frame follows soon.
        let declared_more = self.declared_frames.is_some_and(|total| self.position < total);
        if declared_more {
            for skipped in 1..=MAX_READ_SKIPS {
                if self.read_frame(frame)? {
                    return Ok(ReadOutcome::FrameAfterSkipping(skipped));
                }
            }
        }
        Ok(ReadOutcome::End)
    }
}

/// The frame rate of a file from its frames' presentation timestamps: the median interval
/// between consecutive frames of the first [`FPS_PROBE_FRAMES`]. `None` when the file has too
/// few frames or no usable timestamps.
fn rate_from_timestamps(capture: &mut videoio::VideoCapture) -> Option<f64> {
    let mut frame = Mat::default();
    let mut stamps_ms = Vec::with_capacity(FPS_PROBE_FRAMES);
    for _ in 0..FPS_PROBE_FRAMES {
        if !capture.read(&mut frame).unwrap_or(false) {
            break;
        }
        if let Ok(position) = capture.get(videoio::CAP_PROP_POS_MSEC) {
            stamps_ms.push(position);
        }
    }
    median_rate(&stamps_ms)
}

/// Failed reads tried past before a file is taken to have ended.
const MAX_READ_SKIPS: u32 = 25;

impl VideoSource {
    /// One read; false when no frame came.
    fn read_frame(&mut self, frame: &mut Mat) -> Result<bool, SourceError> {
        let read = match self.capture.read(frame) {
            Ok(read) => read,
            // A network stream that breaks mid-read is a stall to reconnect from.
            Err(_) if self.live => return Ok(false),
            Err(error) => return Err(opencv_error(&self.uri)(error)),
        };
        self.position += 1;
        Ok(read && !frame.empty())
    }
}
