//! The detector's one error type: what can go wrong loading a model file and running it.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("model manifest {path} is not valid: {message}")]
    Manifest { path: PathBuf, message: String },
    #[error(
        "model weights {path} have sha256 {actual}, but the manifest says {expected}: the file is truncated, corrupt or belongs to another model"
    )]
    Checksum {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("model architecture `{name}` is not known to this worker (known: {known})")]
    UnknownArchitecture { name: String, known: String },
    #[error("model weights {path} cannot be read as safetensors: {message}")]
    Safetensors { path: PathBuf, message: String },
    #[error("tensor `{name}` is missing from the model weights (architecture {architecture})")]
    MissingTensor { name: String, architecture: String },
    #[error("tensor `{name}` is not part of architecture {architecture}: the weights belong to another model")]
    UnexpectedTensor { name: String, architecture: String },
    #[error("tensor `{name}` has shape {actual:?}, architecture {architecture} needs {expected:?}")]
    TensorShape {
        name: String,
        architecture: String,
        expected: Vec<usize>,
        actual: Vec<usize>,
    },
    #[error("tensor `{name}` is {actual:?}, the detector needs f32")]
    TensorDtype { name: String, actual: candle_core::DType },
    #[error("{width}×{height} frame with {bytes} bytes is not packed RGB (needs {expected} bytes)")]
    BadFrame {
        width: usize,
        height: usize,
        bytes: usize,
        expected: usize,
    },
    #[error("tensor operation failed: {0}")]
    Tensor(#[from] candle_core::Error),
}
