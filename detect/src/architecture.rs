//! A detector family behind one trait, so that a second family (YOLOv8's export format,
//! MTCNN faces) is a new file under `models/`, not a fork of the worker.
//!
//! An architecture names every tensor it needs with its shape. The converter takes exactly
//! those from a source graph; the loader refuses weights that lack one, have it in another
//! shape, or carry tensors the architecture does not know.

use crate::error::DetectError;
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;

/// One raw detection in network-input coordinates, normalised to 0–1, before labels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RawDetection {
    /// Index into the model's labels (background excluded).
    pub class_index: usize,
    pub score: f32,
    /// `[x1, y1, x2, y2]`, each 0–1 of the input's width or height.
    pub box_norm: [f32; 4],
}

/// A network with its weights on a device, ready to run.
pub trait Network: Send + Sync {
    /// Runs a batch. `input` is `[N, height, width, 3]` RGB as `u8`, already resized to the
    /// architecture's input size, on the network's device. Returns every detection the model
    /// itself would return for each image (after its own non-maximum suppression, before any
    /// score threshold of the caller), best first.
    fn detect(&self, input: &Tensor) -> Result<Vec<Vec<RawDetection>>, DetectError>;
}

/// Where a network's layers run: the device, and whether the CPU kernels of ours are used
/// there (on a CPU they are, unless a check wants the tensor-op path that GPUs take).
#[derive(Debug, Clone)]
pub struct Target {
    pub device: Device,
    pub cpu_kernels: bool,
}

impl Target {
    /// `device`, with our kernels wherever it is a CPU.
    pub fn new(device: &Device) -> Self {
        Self {
            device: device.clone(),
            cpu_kernels: device.is_cpu(),
        }
    }

    /// The CPU, with every layer as candle tensor ops: the GPU's path, for checking it here.
    pub fn cpu_tensor_ops() -> Self {
        Self {
            device: Device::Cpu,
            cpu_kernels: false,
        }
    }
}

/// Where an architecture's builder gets its tensors: the loaded weights, or a recorder that
/// lists what the builder asks for (so the tensor list and the network cannot disagree).
pub trait TensorSource {
    /// The values of tensor `name`, which must have exactly `shape`, row-major.
    fn get(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>, DetectError>;
}

pub trait Architecture: Sync {
    /// The name manifests use, e.g. `ssdlite_mobilenet_v2`.
    fn name(&self) -> &'static str;
    /// Network input size in pixels, `(width, height)`.
    fn input_size(&self) -> (usize, usize);
    /// Classes the network scores, background excluded.
    fn num_classes(&self) -> usize;
    /// Builds the network on `device`, taking each tensor from `source`.
    fn build(&self, source: &mut dyn TensorSource, target: &Target) -> Result<Box<dyn Network>, DetectError>;

    /// Every tensor the architecture needs, `(name, shape)`, in the order the builder asks.
    fn tensors(&self) -> Vec<(String, Vec<usize>)> {
        let mut recorder = RecordingSource::default();
        // The recorder answers every request, so the build cannot fail for want of a tensor;
        // only a tensor op on zeros could, which would be a bug in the architecture.
        if let Err(error) = self.build(&mut recorder, &Target::new(&Device::Cpu)) {
            panic!("architecture {} cannot be built from zeros: {error}", self.name());
        }
        recorder.requested
    }
}

#[derive(Default)]
struct RecordingSource {
    requested: Vec<(String, Vec<usize>)>,
}

impl TensorSource for RecordingSource {
    fn get(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>, DetectError> {
        self.requested.push((name.to_owned(), shape.to_vec()));
        Ok(vec![0.0; shape.iter().product()])
    }
}

/// Tensors loaded from a safetensors file, handed out once each; [`Self::finish`] refuses
/// any the architecture did not ask for.
pub struct LoadedTensors {
    architecture: String,
    tensors: HashMap<String, Tensor>,
}

impl LoadedTensors {
    pub fn new(architecture: &str, tensors: HashMap<String, Tensor>) -> Self {
        Self {
            architecture: architecture.to_owned(),
            tensors,
        }
    }

    /// Errors: a tensor was left over (the weights belong to another model).
    pub fn finish(self) -> Result<(), DetectError> {
        let mut left: Vec<&String> = self.tensors.keys().collect();
        left.sort();
        match left.first() {
            Some(name) => Err(DetectError::UnexpectedTensor {
                name: (*name).clone(),
                architecture: self.architecture,
            }),
            None => Ok(()),
        }
    }
}

impl TensorSource for LoadedTensors {
    fn get(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>, DetectError> {
        let tensor = self.tensors.remove(name).ok_or_else(|| DetectError::MissingTensor {
            name: name.to_owned(),
            architecture: self.architecture.clone(),
        })?;
        if tensor.dims() != shape {
            return Err(DetectError::TensorShape {
                name: name.to_owned(),
                architecture: self.architecture.clone(),
                expected: shape.to_vec(),
                actual: tensor.dims().to_vec(),
            });
        }
        if tensor.dtype() != DType::F32 {
            return Err(DetectError::TensorDtype {
                name: name.to_owned(),
                actual: tensor.dtype(),
            });
        }
        Ok(tensor.flatten_all()?.to_vec1::<f32>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::by_name;

    fn tensors_of(architecture: &dyn Architecture) -> HashMap<String, Tensor> {
        architecture
            .tensors()
            .into_iter()
            .map(|(name, shape)| {
                let tensor = Tensor::zeros(shape, DType::F32, &Device::Cpu).expect("zeros");
                (name, tensor)
            })
            .collect()
    }

    fn build(architecture: &dyn Architecture, tensors: HashMap<String, Tensor>) -> Result<(), DetectError> {
        let mut source = LoadedTensors::new(architecture.name(), tensors);
        architecture.build(&mut source, &Target::new(&Device::Cpu))?;
        source.finish()
    }

    #[test]
    fn weights_are_refused_naming_the_tensor_that_is_wrong() {
        let architecture = by_name("ssdlite_mobilenet_v2").expect("known");
        assert!(build(architecture, tensors_of(architecture)).is_ok());
        let name = "BoxPredictor_3/ClassPredictor/weights";

        let mut missing = tensors_of(architecture);
        missing.remove(name);
        let error = build(architecture, missing).expect_err("missing");
        assert!(
            matches!(&error, DetectError::MissingTensor { name: missing, .. } if missing == name),
            "{error}"
        );

        let mut reshaped = tensors_of(architecture);
        reshaped.insert(
            name.to_owned(),
            Tensor::zeros((1, 1, 256, 7), DType::F32, &Device::Cpu).expect("zeros"),
        );
        let error = build(architecture, reshaped).expect_err("shape");
        assert!(
            error.to_string().contains(name) && error.to_string().contains("[1, 1, 256, 7]"),
            "{error}"
        );

        let mut retyped = tensors_of(architecture);
        retyped.insert(
            name.to_owned(),
            Tensor::zeros((1, 1, 256, 12), DType::F16, &Device::Cpu).expect("zeros"),
        );
        assert!(matches!(
            build(architecture, retyped),
            Err(DetectError::TensorDtype { .. })
        ));

        let mut extra = tensors_of(architecture);
        extra.insert(
            "model.22.dfl.conv.weight".to_owned(),
            Tensor::zeros(1, DType::F32, &Device::Cpu).expect("zeros"),
        );
        let error = build(architecture, extra).expect_err("extra");
        assert!(error.to_string().contains("model.22.dfl.conv.weight"), "{error}");

        let error = by_name("yolov8n").err().expect("unknown");
        assert!(error.to_string().contains("ssdlite_mobilenet_v2"), "{error}");
    }
}
