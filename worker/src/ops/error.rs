//! Why an analysis failed.

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("tensor operation failed: {0}")]
    Tensor(#[from] candle_core::Error),
    #[error("batch is empty")]
    EmptyBatch,
    #[error("frames in one batch must share a size: {0}")]
    MixedSizes(String),
    #[error("a {width}×{height} frame cannot be downscaled by {factor}")]
    TooSmall { width: usize, height: usize, factor: usize },
    #[error("a {width}×{height} image cannot be read from {values} values")]
    BadPlane { width: usize, height: usize, values: usize },
}
