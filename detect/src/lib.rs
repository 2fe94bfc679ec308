//! framefleet's object detection: pretrained detectors converted once from the files their
//! authors publish into safetensors plus a manifest, then run with candle on the CPU (our
//! kernels for what candle lacks a fast path for) or on CUDA (candle's ops).
//!
//! - [`manifest`]: what a model file is, checked by sha256 at load;
//! - [`graphdef`]: reading a TensorFlow frozen graph's weights, for the converter;
//! - [`architecture`]: the trait a detector family implements; [`models`] holds them;
//! - [`layers`], [`ssd`]: building blocks (NHWC convolutions, anchors, box decoding, NMS);
//! - [`preprocess`]: OpenCV-exact bilinear resize to the input size;
//! - [`detector`]: a loaded model, [`Detector::prepare`] per frame, [`Detector::detect`] per batch.
//!
//! Nothing here reads Kafka or knows about channels: the worker decides which frames run.

pub mod agreement;
pub mod architecture;
pub mod detector;
pub mod error;
pub mod graphdef;
pub mod layers;
pub mod manifest;
pub mod models;
pub mod preprocess;
pub mod ssd;

pub use detector::{Detection, Detector, ManifestMismatch, PreparedFrame, RgbFrame, architecture_of};
pub use error::DetectError;
pub use manifest::ModelManifest;

/// Deterministic test inputs shared by the crate's unit tests.
#[cfg(test)]
pub(crate) mod test_inputs {
    /// `count` pseudo-random bytes from `seed` (a 64-bit LCG, Knuth's MMIX constants).
    pub fn bytes(count: usize, seed: u64) -> Vec<u8> {
        let mut state = seed;
        (0..count)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (state >> 56) as u8
            })
            .collect()
    }
}
