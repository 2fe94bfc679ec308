//! A model directory read for `ModelService.PushModel`: its `manifest.json` as text and the
//! weights file the manifest names, cut into the push's messages. The coordinator checks the
//! weights against the manifest's SHA-256; this side only finds the files.

use framefleet_proto::v1::push_model_request::Part;
use framefleet_proto::v1::{PushModelHeader, PushModelRequest};
use std::path::{Path, PathBuf};

/// The manifest's file name inside a model directory (as `framefleet-model-convert` writes it).
pub const MANIFEST_FILE: &str = "manifest.json";
/// Weight bytes per push message: under the coordinator's 4 MiB request limit.
pub const PUSH_CHUNK_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ModelUploadError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a model manifest: {reason}")]
    Manifest { path: PathBuf, reason: String },
}

/// What a push sends.
#[derive(Debug, Clone)]
pub struct ModelUpload {
    /// The manifest's `name`.
    pub name: String,
    pub manifest_json: String,
    pub weights: Vec<u8>,
}

impl ModelUpload {
    /// Reads the model at `path`: a model directory, or its `manifest.json`.
    ///
    /// Errors: a file cannot be read; the manifest is not JSON, has no `name`, or its
    /// `weights` is not a file name beside it.
    pub fn read(path: &Path) -> Result<Self, ModelUploadError> {
        let manifest_path = if path.is_dir() {
            path.join(MANIFEST_FILE)
        } else {
            path.to_owned()
        };
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| ModelUploadError::Io {
                path: path.to_owned(),
                source,
            })
        };
        let invalid = |reason: String| ModelUploadError::Manifest {
            path: manifest_path.clone(),
            reason,
        };
        let manifest_json = String::from_utf8(read(&manifest_path)?).map_err(|_| invalid("not UTF-8".to_owned()))?;
        let manifest: serde_json::Value =
            serde_json::from_str(&manifest_json).map_err(|error| invalid(error.to_string()))?;
        let field = |key: &str| {
            manifest
                .get(key)
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| invalid(format!("no `{key}`")))
        };
        let name = field("name")?;
        let weights_file = field("weights")?;
        if weights_file.is_empty() || weights_file.contains(['/', '\\']) || weights_file.starts_with('.') {
            return Err(invalid(format!(
                "`weights` {weights_file:?} must be a file name beside the manifest"
            )));
        }
        let weights_path = manifest_path
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join(weights_file);
        Ok(Self {
            name,
            manifest_json,
            weights: read(&weights_path)?,
        })
    }

    /// The push's messages: the header, then the weights in [`PUSH_CHUNK_BYTES`] chunks.
    pub fn requests(&self, pushed_name: &str, description: &str) -> Vec<PushModelRequest> {
        let header = PushModelRequest {
            part: Some(Part::Header(PushModelHeader {
                name: pushed_name.to_owned(),
                manifest_json: self.manifest_json.clone(),
                description: description.to_owned(),
            })),
        };
        std::iter::once(header)
            .chain(self.weights.chunks(PUSH_CHUNK_BYTES).map(|chunk| PushModelRequest {
                part: Some(Part::Chunk(chunk.to_vec())),
            }))
            .collect()
    }
}

/// Pushes `upload` as model `name` (`ModelService.PushModel`).
///
/// Errors: the coordinator's status (INVALID_ARGUMENT naming the field when the weights are
/// not the manifest's, PERMISSION_DENIED without the admin role, UNAVAILABLE).
pub async fn push(
    client: &mut framefleet_proto::v1::model_service_client::ModelServiceClient<
        framefleet_proto::client::CoordinatorChannel,
    >,
    upload: &ModelUpload,
    name: &str,
    description: &str,
) -> Result<framefleet_proto::v1::PushModelResponse, tonic::Status> {
    let requests = upload.requests(name, description);
    Ok(client.push_model(tokio_stream::iter(requests)).await?.into_inner())
}
