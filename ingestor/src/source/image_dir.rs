//! Every image of a directory, in name order.

use crate::source::frame_source::{FrameSource, ReadOutcome, SourceError, SourceInfo};
use crate::source::spec::{FALLBACK_FPS, MAX_DIMENSION};
use opencv::core::Mat;
use opencv::imgcodecs;
use opencv::prelude::*;
use std::path::{Path, PathBuf};

const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "bmp", "tif", "tiff", "webp", "ppm", "pgm"];

/// Every image of a directory, in name order. Hidden files (`.name`, which includes the
/// `._name.jpg` AppleDouble twins a Mac leaves beside every file) are not images of the
/// directory and are never read. Each image is independent: one that cannot be read is
/// counted and the next one read, however many there are.
pub(super) struct ImageDirSource {
    files: Vec<PathBuf>,
    next: usize,
    info: SourceInfo,
}

/// Why one image of a directory is not a frame.
#[derive(Debug, thiserror::Error)]
pub enum UnreadableImage {
    #[error("`{path}` is not a readable image ({reason})")]
    Header { path: PathBuf, reason: String },
    #[error("`{path}` declares {width}×{height} pixels, beyond the {MAX_DIMENSION}-pixel limit per side; not decoded")]
    TooLarge { path: PathBuf, width: usize, height: usize },
    #[error("`{0}` is not a readable image")]
    Undecodable(PathBuf),
}

/// Reads one image: its header declares a size within the limits, and it decodes.
fn read_image(path: &Path) -> Result<Mat, UnreadableImage> {
    // The size from the header first: an image claiming 100000×100000 pixels is refused
    // before gigabytes are allocated to decode it.
    let declared = imagesize::size(path).map_err(|error| UnreadableImage::Header {
        path: path.to_owned(),
        reason: error.to_string(),
    })?;
    let within = |side: usize| (1..=MAX_DIMENSION as usize).contains(&side);
    if !(within(declared.width) && within(declared.height)) {
        return Err(UnreadableImage::TooLarge {
            path: path.to_owned(),
            width: declared.width,
            height: declared.height,
        });
    }
    match imgcodecs::imread(path, imgcodecs::IMREAD_COLOR) {
        Ok(image) if !image.empty() => Ok(image),
        _ => Err(UnreadableImage::Undecodable(path.to_owned())),
    }
}

impl ImageDirSource {
    pub(super) fn open(uri: &str, directory: &Path, fps: Option<f64>) -> Result<Self, SourceError> {
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
            Err(reason) => Ok(ReadOutcome::UnreadableItem(reason.to_string())),
        }
    }
}
