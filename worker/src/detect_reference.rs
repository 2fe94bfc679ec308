//! The detector's reference frames, shared by its test against TensorFlow
//! (`tests/detect_vs_tensorflow.rs`) and its device check (`framefleet-detect-check`): the
//! JPEG frames and `reference.json` that `loadtest/python/detect_reference.py` wrote into
//! `tests/fixtures/detection`, decoded the way the worker decodes frames.

use crate::detect_input::{RgbImage, decode_rgb};
use anyhow::Context;
use framefleet_proto::v1::{FrameEncoding, FrameSchema, PixelFormat};
use std::path::{Path, PathBuf};

/// `reference.json`: the frames and TensorFlow's detections on them.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ReferenceSet {
    /// TensorFlow's version.
    pub tensorflow: String,
    pub frames: Vec<ReferenceFrame>,
    /// The folder the set was read from.
    #[serde(skip)]
    pub dir: PathBuf,
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct ReferenceFrame {
    pub file: String,
    pub width: u32,
    pub height: u32,
    pub detections: Vec<ReferenceDetection>,
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct ReferenceDetection {
    pub score: f32,
    /// `[ymin, xmin, ymax, xmax]`, normalised (TensorFlow's order).
    #[serde(rename = "box")]
    pub box_yx: [f32; 4],
}

impl ReferenceDetection {
    /// `(score, [x1, y1, x2, y2])`, as `framefleet_detect::agreement` compares boxes.
    pub fn scored_box(&self) -> (f32, [f32; 4]) {
        let [ymin, xmin, ymax, xmax] = self.box_yx;
        (self.score, [xmin, ymin, xmax, ymax])
    }
}

impl ReferenceSet {
    /// Reads `dir/reference.json`. Errors: the file is missing or not the set's JSON.
    pub fn read(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("reference.json");
        let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let mut set: Self =
            serde_json::from_slice(&bytes).with_context(|| format!("{} is not valid", path.display()))?;
        set.dir = dir.to_owned();
        Ok(set)
    }

    /// One frame decoded to RGB as the worker decodes a 640×480 JPEG channel's frames.
    pub fn decode(&self, frame: &ReferenceFrame) -> anyhow::Result<RgbImage> {
        let payload = std::fs::read(self.dir.join(&frame.file)).with_context(|| frame.file.clone())?;
        let schema = FrameSchema {
            version: 1,
            width: frame.width,
            height: frame.height,
            channels: 3,
            pixel_format: PixelFormat::Rgb24.into(),
            encoding: FrameEncoding::Jpeg.into(),
            fps: 25.0,
        };
        decode_rgb(&payload, &schema).with_context(|| frame.file.clone())
    }
}
