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

use opencv::core::{Mat, Point, Rect, Scalar, Vector};
use opencv::prelude::*;
use opencv::{core, imgcodecs, imgproc, videoio};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Used when a file does not say its frame rate and its timestamps do not tell it either
/// (PAL's 25 frames/s, the most common CCTV rate).
pub const FALLBACK_FPS: f64 = 25.0;
/// A reported frame rate above this is taken as a container artefact, not a camera's rate:
/// Matroska/WebM recordings without a frame rate are reported by OpenCV as their timebase
/// (1 ms → 1000 frames/s). Faster sources need `?fps=` or `--fps`.
pub const MAX_PLAUSIBLE_FPS: f64 = 240.0;
/// Frames whose timestamps are read to derive a rate the file does not state.
const FPS_PROBE_FRAMES: usize = 50;
/// The largest side the coordinator accepts; larger is refused before any allocation.
pub const MAX_DIMENSION: u32 = 16_384;
const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "bmp", "tif", "tiff", "webp", "ppm", "pgm"];

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("source `{uri}` is not valid: {reason}")]
    InvalidUri { uri: String, reason: String },
    #[error("video source `{0}` does not exist; check the path")]
    NotFound(String),
    #[error("video source `{0}` cannot be opened by OpenCV (unsupported or corrupt file, or the stream refused?)")]
    CannotOpen(String),
    #[error("image directory `{0}` holds no readable image")]
    NoImages(String),
    #[error("video source `{uri}` reports an unusable frame size {width}×{height}")]
    BadFrameSize { uri: String, width: f64, height: f64 },
    #[error("opencv failed on `{uri}`: {error}")]
    OpenCv { uri: String, error: opencv::Error },
}

/// What a source says about itself before the first frame is read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SourceInfo {
    pub width: u32,
    pub height: u32,
    pub fps: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SourceSpec {
    /// A file or a directory of images; which one is decided when it is opened.
    Path {
        path: PathBuf,
        looping: bool,
        fps: Option<f64>,
    },
    Network {
        url: String,
    },
    Device {
        device: String,
    },
    Synthetic {
        width: u32,
        height: u32,
        fps: f64,
        /// Fault injection (`?crash_after=N`): the process reading the pattern aborts when it
        /// reaches frame N, as a decoder crash would; for testing capture supervision.
        crash_after: Option<u64>,
    },
}

impl SourceSpec {
    pub fn parse(uri: &str) -> Result<Self, SourceError> {
        let invalid = |reason: &str| SourceError::InvalidUri {
            uri: uri.to_owned(),
            reason: reason.to_owned(),
        };
        if let Some(rest) = uri.strip_prefix("synthetic://") {
            return parse_synthetic(rest).map_err(|reason| invalid(&reason));
        }
        if let Some(rest) = uri.strip_prefix("v4l2://") {
            let device = if rest.chars().all(|c| c.is_ascii_digit()) && !rest.is_empty() {
                format!("/dev/video{rest}")
            } else {
                rest.to_owned()
            };
            if !device.starts_with('/') {
                return Err(invalid("use v4l2://<index> or v4l2:///dev/videoN"));
            }
            return Ok(Self::Device { device });
        }
        if uri.starts_with("/dev/video") {
            return Ok(Self::Device { device: uri.to_owned() });
        }
        if let Some(rest) = uri.strip_prefix("file://") {
            let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
            if path.is_empty() {
                return Err(invalid("file:// needs a path"));
            }
            let mut looping = false;
            let mut fps = None;
            for pair in query.split('&').filter(|pair| !pair.is_empty()) {
                match pair.split_once('=').unwrap_or((pair, "true")) {
                    ("loop", value) => {
                        looping = parse_flag(value).ok_or_else(|| invalid("loop must be true or false"))?
                    }
                    ("fps", value) => {
                        let parsed: f64 = value.parse().map_err(|_| invalid("fps must be a number"))?;
                        fps = Some(check_fps(parsed).map_err(|reason| invalid(&reason))?);
                    }
                    (name, _) => return Err(invalid(&format!("unknown option `{name}` (loop, fps)"))),
                }
            }
            return Ok(Self::Path {
                path: PathBuf::from(path),
                looping,
                fps,
            });
        }
        let lower = uri.to_ascii_lowercase();
        if [
            "rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://",
        ]
        .iter()
        .any(|scheme| lower.starts_with(scheme))
        {
            return Ok(Self::Network { url: uri.to_owned() });
        }
        if let Some((scheme, _)) = uri.split_once("://") {
            return Err(invalid(&format!(
                "unknown scheme `{scheme}` (file, rtsp, rtsps, rtmp, http, https, v4l2, synthetic)"
            )));
        }
        if uri.is_empty() {
            return Err(invalid("empty"));
        }
        Ok(Self::Path {
            path: PathBuf::from(uri),
            looping: false,
            fps: None,
        })
    }

    /// Live sources deliver frames at their own pace and come back after an outage, so they
    /// are reconnected forever; files end.
    pub fn is_live(&self) -> bool {
        matches!(self, Self::Network { .. } | Self::Device { .. })
    }
}

fn parse_flag(value: &str) -> Option<bool> {
    match value {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

fn check_fps(fps: f64) -> Result<f64, String> {
    if fps.is_finite() && fps > 0.0 && fps <= 1000.0 {
        Ok(fps)
    } else {
        Err(format!("fps {fps} is outside 0–1000"))
    }
}

pub fn check_dimensions(width: u32, height: u32) -> Result<(), String> {
    for (name, value) in [("width", width), ("height", height)] {
        if value == 0 || value > MAX_DIMENSION {
            return Err(format!("{name} {value} is outside 1–{MAX_DIMENSION}"));
        }
    }
    Ok(())
}

fn parse_synthetic(rest: &str) -> Result<SourceSpec, String> {
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut crash_after = None;
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        match pair.split_once('=') {
            Some(("crash_after", value)) => {
                crash_after = Some(
                    value
                        .parse::<u64>()
                        .map_err(|_| format!("crash_after `{value}` is not a frame count"))?,
                );
            }
            _ => return Err(format!("unknown option `{pair}` (crash_after=N)")),
        }
    }
    let (size, fps) = match rest.split_once('@') {
        Some((size, fps)) => (
            size,
            fps.parse::<f64>().map_err(|_| format!("fps `{fps}` is not a number"))?,
        ),
        None => (rest, FALLBACK_FPS),
    };
    let (width, height) = size
        .split_once(['x', 'X'])
        .ok_or_else(|| "use synthetic://<width>x<height>[@fps], e.g. synthetic://640x480@25".to_owned())?;
    let width: u32 = width.parse().map_err(|_| format!("width `{width}` is not a number"))?;
    let height: u32 = height
        .parse()
        .map_err(|_| format!("height `{height}` is not a number"))?;
    check_dimensions(width, height)?;
    Ok(SourceSpec::Synthetic {
        width,
        height,
        fps: check_fps(fps)?,
        crash_after,
    })
}

/// What one read gave.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadOutcome {
    Frame,
    /// A frame, read after this many reads that gave nothing (damage in a file).
    FrameAfterSkipping(u32),
    /// The source returned something for this frame that could not be decoded; skip it.
    /// Many in a row mean the source is damaged.
    Undecodable(String),
    /// One item of a source whose items are independent (an image of a directory) could not
    /// be read; skip it. However many there are, the items after it are still read.
    UnreadableItem(String),
    /// A file or directory has no more frames.
    End,
    /// A live source gave no frame within the read timeout (stalled or disconnected).
    Stalled,
}

pub trait FrameSource: Send {
    fn info(&self) -> SourceInfo;
    fn read(&mut self, frame: &mut Mat) -> Result<ReadOutcome, SourceError>;
}

#[derive(Debug, Clone, Copy)]
pub struct OpenOptions {
    /// How long OpenCV may wait to open, and then for each frame of, a network stream.
    pub stall_timeout: Duration,
}

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
            // `ffmpeg_source`); what FFmpeg cannot open, OpenCV's other backends may.
            match crate::ffmpeg_source::FfmpegFileSource::open(uri, path, *fps) {
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

fn opencv_error(uri: &str) -> impl Fn(opencv::Error) -> SourceError + '_ {
    move |error| SourceError::OpenCv {
        uri: uri.to_owned(),
        error,
    }
}

/// Files, streams and devices through `cv::VideoCapture`.
struct VideoSource {
    uri: String,
    capture: videoio::VideoCapture,
    info: SourceInfo,
    live: bool,
    /// Frames the file says it holds; a failed read before them may be damage.
    declared_frames: Option<u64>,
    position: u64,
}

impl VideoSource {
    fn open(
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

/// Frames per second from timestamps in milliseconds, robust to a few odd intervals.
pub(crate) fn median_rate(stamps_ms: &[f64]) -> Option<f64> {
    let mut intervals: Vec<f64> = stamps_ms
        .windows(2)
        .map(|pair| pair[1] - pair[0])
        .filter(|interval| interval.is_finite() && *interval > 0.0)
        .collect();
    if intervals.len() < 2 {
        return None;
    }
    intervals.sort_by(f64::total_cmp);
    let median = intervals[intervals.len() / 2];
    let fps = 1000.0 / median;
    (fps > 0.0 && fps <= MAX_PLAUSIBLE_FPS).then_some(fps)
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

/// Every image of a directory, in name order. Hidden files (`.name`, which includes the
/// `._name.jpg` AppleDouble twins a Mac leaves beside every file) are not images of the
/// directory and are never read. Each image is independent: one that cannot be read is
/// counted and the next one read, however many there are.
struct ImageDirSource {
    files: Vec<PathBuf>,
    next: usize,
    info: SourceInfo,
}

/// Why one image of a directory is not a frame: its header declares a size beyond the limits
/// or cannot be read, or it does not decode.
fn read_image(path: &Path) -> Result<Mat, String> {
    // The size from the header first: an image claiming 100000×100000 pixels is refused
    // before gigabytes are allocated to decode it.
    let declared =
        imagesize::size(path).map_err(|error| format!("`{}` is not a readable image ({error})", path.display()))?;
    let within = |side: usize| (1..=MAX_DIMENSION as usize).contains(&side);
    if !(within(declared.width) && within(declared.height)) {
        return Err(format!(
            "`{}` declares {}×{} pixels, beyond the {MAX_DIMENSION}-pixel limit per side; not decoded",
            path.display(),
            declared.width,
            declared.height
        ));
    }
    match imgcodecs::imread(path, imgcodecs::IMREAD_COLOR) {
        Ok(image) if !image.empty() => Ok(image),
        _ => Err(format!("`{}` is not a readable image", path.display())),
    }
}

impl ImageDirSource {
    fn open(uri: &str, directory: &Path, fps: Option<f64>) -> Result<Self, SourceError> {
        let entries = std::fs::read_dir(directory).map_err(|_| SourceError::NotFound(uri.to_owned()))?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| {
                let hidden = path
                    .file_name()
                    .and_then(|name| name.to_str())
                    .is_none_or(|name| name.starts_with('.'));
                let image_extension = path
                    .extension()
                    .and_then(|extension| extension.to_str())
                    .is_some_and(|extension| IMAGE_EXTENSIONS.contains(&extension.to_ascii_lowercase().as_str()));
                !hidden && image_extension && path.is_file()
            })
            .collect();
        files.sort();
        // The first readable image sets the directory's size; later images are resized to it.
        let first = files
            .iter()
            .find_map(|path| read_image(path).ok())
            .ok_or_else(|| SourceError::NoImages(uri.to_owned()))?;
        let (width, height) = (first.cols(), first.rows());
        Ok(Self {
            files,
            next: 0,
            info: SourceInfo {
                width: u32::try_from(width).unwrap_or(1),
                height: u32::try_from(height).unwrap_or(1),
                fps: fps.unwrap_or(FALLBACK_FPS),
            },
        })
    }
}

impl FrameSource for ImageDirSource {
    fn info(&self) -> SourceInfo {
        self.info
    }

    fn read(&mut self, frame: &mut Mat) -> Result<ReadOutcome, SourceError> {
        let Some(path) = self.files.get(self.next) else {
            return Ok(ReadOutcome::End);
        };
        self.next += 1;
        match read_image(path) {
            Ok(image) => {
                *frame = image;
                Ok(ReadOutcome::Frame)
            }
            Err(reason) => Ok(ReadOutcome::UnreadableItem(reason)),
        }
    }
}

/// A deterministic test pattern: frame `n` is always the same picture, with `n` written in it,
/// so a load test can check what arrived.
pub struct SyntheticSource {
    info: SourceInfo,
    frame_number: u64,
    /// See [`SourceSpec::Synthetic`]'s `crash_after`.
    crash_after: Option<u64>,
}

impl SyntheticSource {
    pub fn new(width: u32, height: u32, fps: f64) -> Result<Self, SourceError> {
        check_dimensions(width, height).map_err(|reason| SourceError::InvalidUri {
            uri: format!("synthetic://{width}x{height}"),
            reason,
        })?;
        Ok(Self {
            info: SourceInfo { width, height, fps },
            frame_number: 0,
            crash_after: None,
        })
    }

    pub fn draw(&self, number: u64, frame: &mut Mat) -> opencv::Result<()> {
        let width = i32::try_from(self.info.width).unwrap_or(i32::MAX);
        let height = i32::try_from(self.info.height).unwrap_or(i32::MAX);
        if frame.rows() != height || frame.cols() != width || frame.typ() != core::CV_8UC3 {
            *frame = Mat::new_rows_cols_with_default(height, width, core::CV_8UC3, Scalar::all(0.0))?;
        }
        let shade = |step: u64| ((number.wrapping_mul(step)) % 256) as f64;
        frame.set_scalar(Scalar::new(shade(3), shade(5), shade(7), 0.0))?;
        // A moving block, so consecutive frames differ in content and not only in colour.
        let side = (height / 6).max(4).min(width);
        let travel = i64::from((width - side).max(1));
        let x = i32::try_from((number as i64 * 8) % travel).unwrap_or(0);
        imgproc::rectangle(
            frame,
            Rect::new(x, height / 2 - side / 2, side, side),
            Scalar::new(255.0, 255.0, 255.0, 0.0),
            imgproc::FILLED,
            imgproc::LINE_8,
            0,
        )?;
        let scale = f64::from(height) / 240.0;
        imgproc::put_text(
            frame,
            &format!("#{number}"),
            Point::new(width / 20, height / 4),
            imgproc::FONT_HERSHEY_SIMPLEX,
            scale,
            Scalar::new(255.0, 255.0, 255.0, 0.0),
            (height / 120).max(1),
            imgproc::LINE_8,
            false,
        )
    }
}

impl FrameSource for SyntheticSource {
    fn info(&self) -> SourceInfo {
        self.info
    }

    fn read(&mut self, frame: &mut Mat) -> Result<ReadOutcome, SourceError> {
        if self.crash_after == Some(self.frame_number) {
            tracing::error!(
                frame = self.frame_number,
                "crash_after reached: aborting this process (fault injection)"
            );
            std::process::abort();
        }
        self.draw(self.frame_number, frame)
            .map_err(opencv_error("synthetic://"))?;
        self.frame_number += 1;
        Ok(ReadOutcome::Frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_is_derived_from_timestamps_and_odd_intervals_do_not_move_it() {
        let stamps: Vec<f64> = (0..30).map(|n| f64::from(n) * 40.0).collect();
        assert_eq!(median_rate(&stamps), Some(25.0));
        // A 1 ms-timebase file at 30 frames/s: intervals of 33 and 34 ms, and one long gap.
        let mut stamps: Vec<f64> = (0..30).map(|n| (f64::from(n) * 1000.0 / 30.0).round()).collect();
        stamps[20] += 500.0;
        let fps = median_rate(&stamps).expect("a rate");
        assert!((29.0..=31.0).contains(&fps), "{fps}");
        assert_eq!(median_rate(&[0.0, 0.0, 0.0]), None, "no usable timestamps");
        assert_eq!(
            median_rate(&[0.0, 1.0, 2.0, 3.0]),
            None,
            "1000 frames/s is not plausible"
        );
    }

    #[test]
    fn uris_name_their_source() {
        assert_eq!(
            SourceSpec::parse("synthetic://640x480@30").expect("synthetic"),
            SourceSpec::Synthetic {
                width: 640,
                height: 480,
                fps: 30.0,
                crash_after: None,
            }
        );
        assert_eq!(
            SourceSpec::parse("synthetic://64x48@5?crash_after=10").expect("fault injection"),
            SourceSpec::Synthetic {
                width: 64,
                height: 48,
                fps: 5.0,
                crash_after: Some(10),
            }
        );
        assert!(SourceSpec::parse("synthetic://64x48?crash=1").is_err());
        assert!(matches!(
            SourceSpec::parse("rtsp://127.0.0.1:8554/cam").expect("rtsp"),
            SourceSpec::Network { .. }
        ));
        assert_eq!(
            SourceSpec::parse("v4l2://2").expect("v4l2"),
            SourceSpec::Device {
                device: "/dev/video2".into()
            }
        );
        assert_eq!(
            SourceSpec::parse("file:///v/a.avi?loop=true&fps=5").expect("file"),
            SourceSpec::Path {
                path: "/v/a.avi".into(),
                looping: true,
                fps: Some(5.0)
            }
        );
        // A plain path keeps a `?` as part of the name.
        assert_eq!(
            SourceSpec::parse("/v/what?.avi").expect("path"),
            SourceSpec::Path {
                path: "/v/what?.avi".into(),
                looping: false,
                fps: None
            }
        );
    }

    #[test]
    fn impossible_sizes_and_unknown_schemes_are_refused_with_the_reason() {
        for (uri, expected) in [
            ("synthetic://0x480", "width 0"),
            ("synthetic://100000x480", "width 100000"),
            ("synthetic://640x480@0", "fps 0"),
            ("synthetic://640", "synthetic://<width>x<height>"),
            ("gopher://cam", "unknown scheme `gopher`"),
            ("file:///a.avi?speed=2", "unknown option `speed`"),
        ] {
            let error = SourceSpec::parse(uri).expect_err(uri).to_string();
            assert!(error.contains(expected), "{uri}: {error}");
        }
    }

    #[test]
    fn the_synthetic_pattern_is_deterministic_and_changes_every_frame() {
        let source = SyntheticSource::new(160, 120, 25.0).expect("source");
        let draw = |number| {
            let mut frame = Mat::default();
            source.draw(number, &mut frame).expect("draw");
            frame.data_bytes().expect("bytes").to_vec()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        assert_eq!(draw(7).len(), 160 * 120 * 3);
    }

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
