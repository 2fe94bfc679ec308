//! Checks of a pushed model: its name and its manifest (`manifest.json` as
//! `framefleet-model-convert` writes it). The coordinator reads only the fields it stores and
//! compares; a worker reads the whole manifest when it loads the model.

use crate::channels::validate::topic_safe_name;
use crate::error::CoordinatorError;

pub const MAX_MODEL_NAME_LEN: usize = 128;
/// A manifest is a few hundred bytes; this leaves room for long label lists.
const MAX_MANIFEST_BYTES: usize = 64 * 1024;
const MAX_DESCRIPTION_LEN: usize = 1_024;

/// A model name: letters, digits, `-`, `_` and `.`, 1 to 128 characters, not starting with
/// `.` (names become etcd keys and log fields).
pub fn name(field: &'static str, name: &str) -> Result<(), CoordinatorError> {
    topic_safe_name(field, name, MAX_MODEL_NAME_LEN, &['-', '_', '.'])?;
    if name.starts_with('.') {
        return Err(CoordinatorError::invalid(field, "must not start with `.`"));
    }
    Ok(())
}

/// A name prefix for listing: empty, or what a name may start with.
pub fn name_prefix(prefix: &str) -> Result<(), CoordinatorError> {
    if prefix.is_empty() {
        return Ok(());
    }
    name("name_prefix", prefix)
}

pub fn description(description: &str) -> Result<(), CoordinatorError> {
    if description.len() > MAX_DESCRIPTION_LEN || description.chars().any(|c| c.is_control() && c != '\n') {
        return Err(CoordinatorError::invalid(
            "header.description",
            format!("must be at most {MAX_DESCRIPTION_LEN} bytes without control characters other than newlines"),
        ));
    }
    Ok(())
}

/// What the coordinator takes from a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestFacts {
    pub architecture: String,
    /// The weights' SHA-256 the manifest declares, lowercase hex.
    pub sha256: String,
}

/// Reads the facts of `manifest_json` for a model pushed as `model_name`, checked as a worker
/// will check it before it reads the weights: the manifest format
/// ([`framefleet_detect::ModelManifest::from_json`]), an architecture workers can build, with
/// its input size and label count ([`framefleet_detect::architecture_of`]).
///
/// Errors: INVALID_ARGUMENT naming `header.manifest_json` (not a manifest of this format, an
/// unknown architecture, a sha256 that is not 64 hex digits) or `header.name` (the manifest
/// names another model).
pub fn manifest(model_name: &str, manifest_json: &str) -> Result<ManifestFacts, CoordinatorError> {
    const FIELD: &str = "header.manifest_json";
    if manifest_json.len() > MAX_MANIFEST_BYTES {
        return Err(CoordinatorError::invalid(
            FIELD,
            format!("must be at most {MAX_MANIFEST_BYTES} bytes"),
        ));
    }
    let manifest = framefleet_detect::ModelManifest::from_json(manifest_json.as_bytes())
        .map_err(|reason| CoordinatorError::invalid(FIELD, format!("is not a model manifest: {reason}")))?;
    if manifest.name != model_name {
        return Err(CoordinatorError::invalid(
            "header.name",
            format!("the manifest names model `{}`; push it under that name", manifest.name),
        ));
    }
    framefleet_detect::architecture_of(&manifest)
        .map_err(|error| CoordinatorError::invalid(FIELD, format!("no worker can run it: {error}")))?;
    let sha256 = manifest.sha256.to_ascii_lowercase();
    if sha256.len() != 64 || !sha256.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return Err(CoordinatorError::invalid(FIELD, "`sha256` must be 64 hex digits"));
    }
    Ok(ManifestFacts {
        architecture: manifest.architecture,
        sha256,
    })
}
