//! Where a channel's frames come from. A source URI names one of: a video file (optionally
//! looping), a directory of images, an RTSP/HTTP stream, a V4L2 device, or a synthetic test
//! pattern. All but the synthetic pattern are read through OpenCV.
//!
//! | URI | source |
//! |---|---|
//! | `/videos/lobby.avi`, `file:///videos/lobby.avi?loop=true` | video file (`loop` restarts it at the end) |
//! | `/images/`, `file:///images?fps=5&loop=true` | every image of a directory, in name order |
//! | `rtsp://…`, `rtsps://…`, `rtmp://…`, `http(s)://…` | network stream (FFmpeg) |
//! | `/dev/video0`, `v4l2:///dev/video0`, `v4l2://0` | V4L2 device |
//! | `synthetic://1920x1080@30` | test pattern with the frame number drawn in it |
//!
//! One file per kind of source: [`video`] (OpenCV's `VideoCapture`: streams, devices, files
//! FFmpeg cannot open), [`ffmpeg_file`] (files through FFmpeg, which sees resolution changes),
//! [`image_dir`] and [`synthetic`]; [`spec`] parses the URIs and [`frame_source`] holds what
//! they share. This module only picks one for a URI.

pub mod ffmpeg_file;
pub mod frame_source;
pub mod image_dir;
pub mod spec;
pub mod synthetic;
pub mod video;

pub use frame_source::{FrameSource, OpenOptions, ReadOutcome, SourceError, SourceInfo};
pub use spec::{FALLBACK_FPS, MAX_DIMENSION, MAX_PLAUSIBLE_FPS, OutOfRange, SourceSpec, check_dimensions};
pub use synthetic::SyntheticSource;

use ffmpeg_file::FfmpegFileSource;
use image_dir::ImageDirSource;
use opencv::videoio;
use std::path::Path;
use video::VideoSource;

pub fn open(uri: &str, spec: &SourceSpec, options: OpenOptions) -> Result<Box<dyn FrameSource>, SourceError> {
    match spec {
        SourceSpec::Synthetic {
            width,
            height,
            fps,
            crash_after,
        } => {
            let mut source = SyntheticSource::new(*width, *height, *fps)?;
            source.crash_after = *crash_after;
            Ok(Box::new(source))
        }
        SourceSpec::Path { path, fps, .. } if path.is_dir() => Ok(Box::new(ImageDirSource::open(uri, path, *fps)?)),
        SourceSpec::Path { path, fps, .. } => {
            if !path.exists() {
                return Err(SourceError::NotFound(uri.to_owned()));
            }
            // FFmpeg directly sees resolution changes that OpenCV hides (see
            // `ffmpeg_file`); what FFmpeg cannot open, OpenCV's other backends may.
            match FfmpegFileSource::open(uri, path, *fps) {
                Ok(source) => Ok(Box::new(source)),
                Err(SourceError::CannotOpen(_)) => {
                    VideoSource::open(uri, &path.to_string_lossy(), videoio::CAP_ANY, false, *fps, options)
                        .map(|source| Box::new(source) as Box<dyn FrameSource>)
                }
                Err(error) => Err(error),
            }
        }
        SourceSpec::Network { url } => VideoSource::open(uri, url, videoio::CAP_FFMPEG, true, None, options)
            .map(|source| Box::new(source) as Box<dyn FrameSource>),
        SourceSpec::Device { device } => {
            if !Path::new(device).exists() {
                return Err(SourceError::NotFound(uri.to_owned()));
            }
            VideoSource::open(uri, device, videoio::CAP_V4L2, true, None, options)
                .map(|source| Box::new(source) as Box<dyn FrameSource>)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opencv::core::{self, Mat, Rect, Scalar};
    use opencv::imgproc;
    use opencv::prelude::*;
    use std::time::Duration;

    /// An MP4 whose track says "display rotated by 90°", as phones write portrait video:
    /// written by OpenCV's VideoWriter, then the track header's display matrix set to a
    /// quarter turn (ISO/IEC 14496-12 `tkhd`).
    fn rotated_mp4(path: &Path) {
        let size = core::Size::new(64, 48);
        let fourcc = videoio::VideoWriter::fourcc('m', 'p', '4', 'v').expect("fourcc");
        let mut writer = videoio::VideoWriter::new(path, fourcc, 10.0, size, true).expect("writer");
        assert!(writer.is_opened().expect("opened"), "OpenCV cannot write MP4 here");
        for _ in 0..10 {
            // Left half white, right half black.
            let mut frame = Mat::new_rows_cols_with_default(48, 64, core::CV_8UC3, Scalar::all(0.0)).expect("frame");
            imgproc::rectangle(
                &mut frame,
                Rect::new(0, 0, 32, 48),
                Scalar::all(255.0),
                imgproc::FILLED,
                imgproc::LINE_8,
                0,
            )
            .expect("draw");
            writer.write(&frame).expect("write");
        }
        writer.release().expect("release");
        let mut bytes = std::fs::read(path).expect("read back");
        let at = bytes
            .windows(4)
            .position(|window| window == b"tkhd")
            .expect("a tkhd box");
        assert_eq!(bytes[at + 4], 0, "version 0 track header");
        let matrix = at + 4 + 40;
        let quarter_turn: [i32; 9] = [0, 0x0001_0000, 0, -0x0001_0000, 0, 0, 0, 0, 0x4000_0000];
        for (index, value) in quarter_turn.iter().enumerate() {
            bytes[matrix + index * 4..matrix + index * 4 + 4].copy_from_slice(&value.to_be_bytes());
        }
        std::fs::write(path, bytes).expect("write the rotated file");
    }

    #[test]
    fn a_portrait_phone_video_arrives_upright() {
        let path = std::env::temp_dir().join(format!("framefleet-rotated-{}.mp4", std::process::id()));
        rotated_mp4(&path);
        let uri = path.display().to_string();
        let spec = SourceSpec::parse(&uri).expect("spec");
        let mut source = open(
            &uri,
            &spec,
            OpenOptions {
                stall_timeout: Duration::from_secs(5),
            },
        )
        .expect("open");
        assert_eq!((source.info().width, source.info().height), (48, 64), "portrait size");
        let mut frame = Mat::default();
        assert_eq!(source.read(&mut frame).expect("read"), ReadOutcome::Frame);
        std::fs::remove_file(&path).ok();
        assert_eq!((frame.cols(), frame.rows()), (48, 64));
        // The white half was on the left; turned a quarter, it is on top or at the bottom.
        let mean = |rect: Rect| core::mean(&Mat::roi(&frame, rect).expect("roi"), &core::no_array()).expect("mean")[0];
        let (top, bottom) = (mean(Rect::new(0, 0, 48, 32)), mean(Rect::new(0, 32, 48, 32)));
        let (left, right) = (mean(Rect::new(0, 0, 24, 64)), mean(Rect::new(24, 0, 24, 64)));
        assert!((top - bottom).abs() > 200.0, "top {top}, bottom {bottom}");
        assert!((left - right).abs() < 30.0, "left {left}, right {right}");
    }
}
