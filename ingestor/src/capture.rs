//! Camera capture with OpenCV. Each channel reads on its own OS thread (OpenCV reads block),
//! converts every frame to the channel's schema (resize, JPEG) and hands it to the async
//! producer through a bounded queue: when Kafka falls behind, the camera read waits rather
//! than dropping frames.

use crate::config::Pace;
use crate::ledger::ChannelLedger;
use opencv::core::{Mat, Size, Vector};
use opencv::prelude::*;
use opencv::{imgcodecs, imgproc, videoio};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Used when a file does not say its frame rate.
const FALLBACK_FPS: f64 = 25.0;

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("video source `{0}` does not exist; check the path")]
    NotFound(String),
    #[error("video source `{0}` cannot be opened by OpenCV (unsupported or corrupt file?)")]
    CannotOpen(String),
    #[error("video source `{source_uri}` reports an unusable frame size {width}×{height}")]
    BadFrameSize {
        source_uri: String,
        width: f64,
        height: f64,
    },
    #[error("opencv failed on `{source_uri}`: {error}")]
    OpenCv { source_uri: String, error: opencv::Error },
}

/// What a source says about itself before the first frame is read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SourceInfo {
    pub width: u32,
    pub height: u32,
    pub fps: f64,
}

pub struct EncodedFrame {
    pub payload: Vec<u8>,
    pub capture_time_us: i64,
}

pub struct FrameConversion {
    pub width: u32,
    pub height: u32,
    pub jpeg_quality: u8,
}

pub struct OpenedSource {
    pub source_uri: String,
    capture: videoio::VideoCapture,
    pub info: SourceInfo,
}

/// Opens a video file and reads its size and frame rate.
pub fn open_video_file(source_uri: &str) -> Result<OpenedSource, CaptureError> {
    let path = source_uri.strip_prefix("file://").unwrap_or(source_uri);
    if !Path::new(path).exists() {
        return Err(CaptureError::NotFound(source_uri.to_owned()));
    }
    let opencv_error = |error| CaptureError::OpenCv {
        source_uri: source_uri.to_owned(),
        error,
    };
    let capture = videoio::VideoCapture::from_file(path, videoio::CAP_ANY).map_err(opencv_error)?;
    if !capture.is_opened().map_err(opencv_error)? {
        return Err(CaptureError::CannotOpen(source_uri.to_owned()));
    }
    let width = capture.get(videoio::CAP_PROP_FRAME_WIDTH).map_err(opencv_error)?;
    let height = capture.get(videoio::CAP_PROP_FRAME_HEIGHT).map_err(opencv_error)?;
    let fps = capture.get(videoio::CAP_PROP_FPS).map_err(opencv_error)?;
    let valid_dimension = |value: f64| value.is_finite() && (1.0..=16_384.0).contains(&value);
    if !(valid_dimension(width) && valid_dimension(height)) {
        return Err(CaptureError::BadFrameSize {
            source_uri: source_uri.to_owned(),
            width,
            height,
        });
    }
    let fps = if fps.is_finite() && fps > 0.0 && fps <= 1000.0 {
        fps
    } else {
        FALLBACK_FPS
    };
    Ok(OpenedSource {
        source_uri: source_uri.to_owned(),
        capture,
        // Checked above to lie in 1..=16384, so the casts are exact.
        info: SourceInfo {
            width: width as u32,
            height: height as u32,
            fps,
        },
    })
}

pub struct CaptureJob {
    pub source: OpenedSource,
    pub conversion: FrameConversion,
    pub pace: Pace,
    pub max_frames: Option<u64>,
    pub frames: mpsc::Sender<EncodedFrame>,
    pub ledger: Arc<ChannelLedger>,
    pub stop: CancellationToken,
}

/// Reads frames until the source ends, `max_frames` is reached or `stop` is cancelled.
/// Runs on a dedicated thread; dropping the sender tells the producer the channel ended.
pub fn capture_loop(mut job: CaptureJob) -> Result<(), CaptureError> {
    let source_uri = job.source.source_uri.clone();
    let opencv_error = |error| CaptureError::OpenCv {
        source_uri: source_uri.clone(),
        error,
    };
    let target_size = Size::new(
        i32::try_from(job.conversion.width).unwrap_or(i32::MAX),
        i32::try_from(job.conversion.height).unwrap_or(i32::MAX),
    );
    let needs_resize = (job.source.info.width, job.source.info.height) != (job.conversion.width, job.conversion.height);
    let encode_params =
        Vector::<i32>::from_slice(&[imgcodecs::IMWRITE_JPEG_QUALITY, i32::from(job.conversion.jpeg_quality)]);
    let frame_interval = Duration::from_secs_f64(1.0 / job.source.info.fps);
    let started = Instant::now();

    let mut frame = Mat::default();
    let mut resized = Mat::default();
    let mut frames_read: u64 = 0;
    while !job.stop.is_cancelled() {
        if job.max_frames.is_some_and(|limit| frames_read >= limit) {
            break;
        }
        if !job.source.capture.read(&mut frame).map_err(opencv_error)? || frame.empty() {
            break;
        }
        let capture_time_us = framefleet_common::startup::unix_time_us();
        frames_read += 1;
        job.ledger.record_captured();

        let to_encode = if needs_resize {
            imgproc::resize(&frame, &mut resized, target_size, 0.0, 0.0, imgproc::INTER_AREA).map_err(opencv_error)?;
            &resized
        } else {
            &frame
        };
        let mut encoded = Vector::<u8>::new();
        if !imgcodecs::imencode(".jpg", to_encode, &mut encoded, &encode_params).map_err(opencv_error)? {
            job.ledger
                .record_failed(format!("jpeg encoding of frame {frames_read} failed"));
            continue;
        }
        let encoded_frame = EncodedFrame {
            payload: encoded.to_vec(),
            capture_time_us,
        };
        // Blocking send: a full queue makes the camera read wait (the "block" policy).
        if job.frames.blocking_send(encoded_frame).is_err() {
            break;
        }
        if job.pace == Pace::Realtime {
            let due = started + frame_interval.mul_f64(frames_read as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
    }
    tracing::info!(source = %job.source.source_uri, frames = frames_read, "capture ended");
    Ok(())
}
