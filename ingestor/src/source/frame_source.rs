//! What every kind of source shares: the trait, what a read gives, and the errors.

use opencv::core::Mat;
use std::time::Duration;

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

pub(super) fn opencv_error(uri: &str) -> impl Fn(opencv::Error) -> SourceError + '_ {
    move |error| SourceError::OpenCv {
        uri: uri.to_owned(),
        error,
    }
}
