//! A loaded model: the manifest checked, the weights checked tensor by tensor against the
//! architecture and placed on the device, and the two steps of a detection — per-frame
//! preparation (resize to the input size, on the CPU) and one forward pass per batch.

use crate::architecture::{Architecture, LoadedTensors, Network, Target};
use crate::error::DetectError;
use crate::manifest::{ModelFiles, ModelManifest};
use crate::models;
use crate::preprocess::resize_linear;
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One detected object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    /// The model's class id: 1 + the label's index (0 is the background class, the Object
    /// Detection API's convention; COCO's "person" is 1).
    pub class_id: u32,
    pub label: String,
    /// Model confidence, 0–1.
    pub score: f32,
    /// `[x1, y1, x2, y2]`, each a fraction (0–1) of the frame's width or height.
    pub box_norm: [f32; 4],
}

/// A frame as packed 8-bit RGB, rows without padding.
#[derive(Debug, Clone, Copy)]
pub struct RgbFrame<'a> {
    pub width: usize,
    pub height: usize,
    pub pixels: &'a [u8],
}

/// A frame resized to the network's input, ready to batch.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedFrame(Vec<u8>);

impl PreparedFrame {
    /// The network's input: `height·width·3` bytes of RGB, row-major, no padding.
    pub fn pixels(&self) -> &[u8] {
        &self.0
    }
}

pub struct Detector {
    manifest: ModelManifest,
    architecture: &'static dyn Architecture,
    network: Box<dyn Network>,
    device: Device,
}

impl std::fmt::Debug for Detector {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Detector")
            .field("model", &self.manifest.name)
            .field("architecture", &self.architecture.name())
            .field("device", &self.device)
            .finish()
    }
}

/// Why a manifest does not fit an architecture this build knows.
#[derive(Debug, thiserror::Error)]
pub enum ManifestMismatch {
    #[error(transparent)]
    Unknown(DetectError),
    /// The input size or label count is not the architecture's.
    #[error("{0}")]
    Shape(String),
}

/// The architecture `manifest` names, if this build knows it and the manifest's input size and
/// label count are that architecture's. Checked before any weights are read: the coordinator
/// checks a pushed model with it, and [`Detector::load`] again.
pub fn architecture_of(manifest: &ModelManifest) -> Result<&'static dyn Architecture, ManifestMismatch> {
    let architecture = models::by_name(&manifest.architecture).map_err(ManifestMismatch::Unknown)?;
    let (width, height) = architecture.input_size();
    if manifest.input_size != [width as u32, height as u32] {
        return Err(ManifestMismatch::Shape(format!(
            "input_size {:?}, but {} takes {width}×{height}",
            manifest.input_size,
            architecture.name()
        )));
    }
    if manifest.labels.len() != architecture.num_classes() {
        return Err(ManifestMismatch::Shape(format!(
            "{} labels for a network with {} classes",
            manifest.labels.len(),
            architecture.num_classes()
        )));
    }
    Ok(architecture)
}

impl Detector {
    /// Loads the model at `path` (a model directory or its `manifest.json`) onto `device`.
    ///
    /// Errors: a file is missing or unreadable; the manifest is invalid or names an unknown
    /// architecture, an input size or label count the architecture does not have; the
    /// weights' sha256 differs; a tensor is missing, extra, of another shape or not f32.
    pub fn load(path: &Path, device: &Device) -> Result<Self, DetectError> {
        Self::load_for(path, &Target::new(device))
    }

    /// [`Self::load`] for a [`Target`]: e.g. the CPU with the GPU's tensor-op path, which the
    /// device check compares with the CPU kernels.
    pub fn load_for(path: &Path, target: &Target) -> Result<Self, DetectError> {
        let device = &target.device;
        let files = ModelFiles::read(path)?;
        let architecture = architecture_of(&files.manifest).map_err(|error| match error {
            ManifestMismatch::Unknown(error) => error,
            ManifestMismatch::Shape(message) => DetectError::Manifest {
                path: files.manifest_path.clone(),
                message,
            },
        })?;
        let tensors = candle_core::safetensors::load_buffer(&files.weights, &Device::Cpu).map_err(|error| {
            DetectError::Safetensors {
                path: files.weights_path.clone(),
                message: error.to_string(),
            }
        })?;
        let mut source = LoadedTensors::new(architecture.name(), tensors);
        let network = architecture.build(&mut source, target)?;
        source.finish()?;
        Ok(Self {
            manifest: files.manifest,
            architecture,
            network,
            device: device.clone(),
        })
    }

    /// A detector around a network built elsewhere (tests, or an embedder's own network);
    /// `manifest` describes it. [`Self::load`] is the checked way in.
    pub fn from_network(
        manifest: ModelManifest,
        architecture: &'static dyn Architecture,
        network: Box<dyn Network>,
        device: Device,
    ) -> Self {
        Self {
            manifest,
            architecture,
            network,
            device,
        }
    }

    pub fn manifest(&self) -> &ModelManifest {
        &self.manifest
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Network input size, `(width, height)`.
    pub fn input_size(&self) -> (usize, usize) {
        self.architecture.input_size()
    }

    /// Resizes one frame to the input size (OpenCV's bilinear resize, bit-exact). Runs on the
    /// calling thread; callers prepare frames in parallel.
    ///
    /// Errors: the frame is empty or its buffer is not `width·height·3` bytes.
    pub fn prepare(&self, frame: RgbFrame<'_>) -> Result<PreparedFrame, DetectError> {
        let expected = frame.width * frame.height * 3;
        if frame.width == 0 || frame.height == 0 || frame.pixels.len() != expected {
            return Err(DetectError::BadFrame {
                width: frame.width,
                height: frame.height,
                bytes: frame.pixels.len(),
                expected,
            });
        }
        let input = self.input_size();
        let mut resized = vec![0u8; input.0 * input.1 * 3];
        resize_linear(frame.pixels, (frame.width, frame.height), 3, input, &mut resized);
        Ok(PreparedFrame(resized))
    }

    /// One forward pass over `frames`; each frame's detections, best first, every one the
    /// model returns (callers apply their score threshold). Boxes are fractions of the input,
    /// which are fractions of the original frame too (the resize stretches the whole frame).
    ///
    /// Errors: a device or tensor error; the batch then has no results.
    pub fn detect(&self, frames: &[PreparedFrame]) -> Result<Vec<Vec<Detection>>, DetectError> {
        if frames.is_empty() {
            return Ok(Vec::new());
        }
        let (width, height) = self.input_size();
        let mut batch = Vec::with_capacity(frames.len() * width * height * 3);
        for frame in frames {
            batch.extend_from_slice(&frame.0);
        }
        let input = Tensor::from_vec(batch, (frames.len(), height, width, 3), &self.device)?;
        let raw = self.network.detect(&input)?;
        Ok(raw
            .into_iter()
            .map(|detections| {
                detections
                    .into_iter()
                    .map(|detection| Detection {
                        class_id: detection.class_index as u32 + 1,
                        label: self.manifest.labels[detection.class_index].clone(),
                        score: detection.score,
                        box_norm: detection.box_norm,
                    })
                    .collect()
            })
            .collect())
    }
}
