//! Convolution layers of mobile detectors on NHWC `f32` tensors (`[N, H, W, C]`), with
//! batch normalisation folded into each convolution's weights and bias at load time (what
//! every inference runtime does; the network's arithmetic is otherwise TensorFlow's).
//!
//! On the CPU the depthwise convolution and the bias/ReLU6 step are kernels of ours
//! ([`kernels`]): candle's grouped `conv2d` runs one group after another, hundreds of
//! convolutions per layer. On other devices the same layers are candle tensor ops, which the
//! CPU tests also run as the reference for the kernels.

pub mod kernels;

use crate::architecture::TensorSource;
use crate::error::DetectError;
use candle_core::{Device, Tensor};

/// ε of the Object Detection API's batch norms (`FusedBatchNorm`'s `epsilon` attribute in
/// the frozen graphs; TF-slim's default for MobileNet).
pub const BATCH_NORM_EPSILON: f64 = 0.001;

/// TensorFlow's "SAME" padding for one spatial dimension: output size `ceil(input / stride)`,
/// and the padding before it (the rest goes after: a stride-2 layer on an even input pads
/// 0 before and 1 after).
pub fn same_padding(input: usize, kernel: usize, stride: usize) -> (usize, usize) {
    let output = input.div_ceil(stride);
    let total = ((output - 1) * stride + kernel).saturating_sub(input);
    (output, total / 2)
}

/// Reads `{prefix}/BatchNorm/{gamma,beta,moving_mean,moving_variance}` and folds them into
/// `weights` (any layout whose last dimension, or whose `channels`-sized innermost group, is
/// the output channel) and a bias: `w·γ/√(σ²+ε)` and `β − μ·γ/√(σ²+ε)`, computed in f64.
fn fold_batch_norm(
    source: &mut dyn TensorSource,
    prefix: &str,
    weights: &mut [f32],
    channels: usize,
) -> Result<Vec<f32>, DetectError> {
    let gamma = source.get(&format!("{prefix}/BatchNorm/gamma"), &[channels])?;
    let beta = source.get(&format!("{prefix}/BatchNorm/beta"), &[channels])?;
    let mean = source.get(&format!("{prefix}/BatchNorm/moving_mean"), &[channels])?;
    let variance = source.get(&format!("{prefix}/BatchNorm/moving_variance"), &[channels])?;
    let scale: Vec<f64> = gamma
        .iter()
        .zip(&variance)
        .map(|(&gamma, &variance)| f64::from(gamma) / (f64::from(variance) + BATCH_NORM_EPSILON).sqrt())
        .collect();
    for (index, weight) in weights.iter_mut().enumerate() {
        *weight = (f64::from(*weight) * scale[index % channels]) as f32;
    }
    Ok((0..channels)
        .map(|channel| (f64::from(beta[channel]) - f64::from(mean[channel]) * scale[channel]) as f32)
        .collect())
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

/// What follows a convolution's bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `min(max(x, 0), 6)`.
    Relu6,
    /// None (a linear bottleneck's projection, a predictor's output).
    Linear,
}

/// Adds `bias` (`[C]`) to the last dimension of `x` and applies `activation`. On the CPU in
/// place, on a fresh tensor of ours; elsewhere as candle ops.
fn add_bias(
    x: Tensor,
    bias: &Tensor,
    bias_values: &std::sync::Arc<Vec<f32>>,
    activation: Activation,
    cpu_kernels: bool,
) -> Result<Tensor, DetectError> {
    if cpu_kernels && x.device().is_cpu() && x.is_contiguous() {
        x.inplace_op1(&kernels::BiasActivation {
            bias: std::sync::Arc::clone(bias_values),
            activation,
        })?;
        return Ok(x);
    }
    let biased = x.broadcast_add(bias)?;
    Ok(match activation {
        Activation::Relu6 => biased.clamp(0f32, 6f32)?,
        Activation::Linear => biased,
    })
}

/// A 1×1 convolution: a matrix product over `[N·H·W, C_in]`.
pub struct Pointwise {
    /// `[C_in, C_out]` (TensorFlow's HWIO kernel with H = W = 1).
    weight: Tensor,
    bias: Tensor,
    bias_values: std::sync::Arc<Vec<f32>>,
    activation: Activation,
    cpu_kernels: bool,
}

impl Pointwise {
    /// `{prefix}/weights` `[1, 1, C_in, C_out]` with `{prefix}/BatchNorm/*` folded in.
    pub fn with_batch_norm(
        source: &mut dyn TensorSource,
        prefix: &str,
        inputs: usize,
        outputs: usize,
        activation: Activation,
        target: &Target,
    ) -> Result<Self, DetectError> {
        let mut weights = source.get(&format!("{prefix}/weights"), &[1, 1, inputs, outputs])?;
        let bias = fold_batch_norm(source, prefix, &mut weights, outputs)?;
        Self::new(weights, bias, inputs, outputs, activation, target)
    }

    /// `{prefix}/weights` `[1, 1, C_in, C_out]` and `{prefix}/biases` `[C_out]` (a box or
    /// class predictor: no batch norm, no activation).
    pub fn with_bias(
        source: &mut dyn TensorSource,
        prefix: &str,
        inputs: usize,
        outputs: usize,
        target: &Target,
    ) -> Result<Self, DetectError> {
        let weights = source.get(&format!("{prefix}/weights"), &[1, 1, inputs, outputs])?;
        let bias = source.get(&format!("{prefix}/biases"), &[outputs])?;
        Self::new(weights, bias, inputs, outputs, Activation::Linear, target)
    }

    fn new(
        weights: Vec<f32>,
        bias: Vec<f32>,
        inputs: usize,
        outputs: usize,
        activation: Activation,
        target: &Target,
    ) -> Result<Self, DetectError> {
        Ok(Self {
            weight: Tensor::from_vec(weights, (inputs, outputs), &target.device)?,
            bias: Tensor::from_slice(&bias, outputs, &target.device)?,
            bias_values: std::sync::Arc::new(bias),
            activation,
            cpu_kernels: target.cpu_kernels,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor, DetectError> {
        let (batch, height, width, channels) = x.dims4()?;
        let rows = x.reshape((batch * height * width, channels))?;
        let product = rows.matmul(&self.weight)?;
        let product = product.reshape((batch, height, width, self.weight.dim(1)?))?;
        add_bias(
            product,
            &self.bias,
            &self.bias_values,
            self.activation,
            self.cpu_kernels,
        )
    }
}

/// A 3×3 depthwise convolution with "SAME" padding, folded batch norm and ReLU6.
pub struct Depthwise {
    /// `[9, C]`: tap (ky·3 + kx), then channel.
    weight: Tensor,
    bias: Tensor,
    cpu: kernels::Depthwise3x3,
    cpu_kernels: bool,
}

impl Depthwise {
    /// `{prefix}/depthwise_weights` `[3, 3, C, 1]` with `{prefix}/BatchNorm/*` folded in.
    pub fn with_batch_norm(
        source: &mut dyn TensorSource,
        prefix: &str,
        channels: usize,
        stride: usize,
        target: &Target,
    ) -> Result<Self, DetectError> {
        let mut weights = source.get(&format!("{prefix}/depthwise_weights"), &[3, 3, channels, 1])?;
        let bias = fold_batch_norm(source, prefix, &mut weights, channels)?;
        Ok(Self {
            weight: Tensor::from_slice(&weights, (9, channels), &target.device)?,
            bias: Tensor::from_slice(&bias, channels, &target.device)?,
            cpu: kernels::Depthwise3x3 {
                weights: std::sync::Arc::new(weights),
                bias: std::sync::Arc::new(bias),
                stride,
                activation: Activation::Relu6,
            },
            cpu_kernels: target.cpu_kernels,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor, DetectError> {
        if self.cpu_kernels && x.device().is_cpu() {
            return Ok(x.apply_op1_no_bwd(&self.cpu)?);
        }
        self.forward_tensor_ops(x)
    }

    /// The same convolution as candle tensor ops (nine shifted, strided views of the padded
    /// input, each scaled by its tap): the path on GPUs, and the CPU kernel's reference.
    pub fn forward_tensor_ops(&self, x: &Tensor) -> Result<Tensor, DetectError> {
        let stride = self.cpu.stride;
        let (batch, height, width, channels) = x.dims4()?;
        let (out_height, pad_top) = same_padding(height, 3, stride);
        let (out_width, pad_left) = same_padding(width, 3, stride);
        // Padded so that every tap's strided view exists and, for stride 2, the padded sizes
        // are even (the view is then a reshape into pairs of rows and columns).
        let padded_height = stride * (out_height + 2 / stride);
        let padded_width = stride * (out_width + 2 / stride);
        let padded = x
            .pad_with_zeros(1, pad_top, padded_height - height - pad_top)?
            .pad_with_zeros(2, pad_left, padded_width - width - pad_left)?;
        let pairs = padded.reshape((
            batch,
            padded_height / stride,
            stride,
            padded_width / stride,
            stride,
            channels,
        ))?;
        let mut sum: Option<Tensor> = None;
        for ky in 0..3 {
            for kx in 0..3 {
                let view = pairs
                    .narrow(1, ky / stride, out_height)?
                    .narrow(2, ky % stride, 1)?
                    .narrow(3, kx / stride, out_width)?
                    .narrow(4, kx % stride, 1)?
                    .reshape((batch, out_height, out_width, channels))?;
                let tap = self.weight.get(ky * 3 + kx)?;
                let term = view.broadcast_mul(&tap)?;
                sum = Some(match sum {
                    Some(sum) => (sum + term)?,
                    None => term,
                });
            }
        }
        let sum = sum.ok_or_else(|| candle_core::Error::Msg("depthwise kernel has no taps".to_owned()))?;
        Ok(sum.broadcast_add(&self.bias)?.clamp(0f32, 6f32)?)
    }
}

/// A full 3×3 convolution with stride 2, "SAME" padding, folded batch norm and ReLU6: a
/// network's first layer, on the 8-bit image scaled to the network's range. On the CPU the
/// image's patches ([`kernels::ImagePatches3x3`]) times the kernel; elsewhere candle's
/// `conv2d` (which on the CPU spent as long again on layout copies).
pub struct Stem {
    /// `[C_out, C_in, 3, 3]`, candle's layout.
    weight: Tensor,
    /// `[9·C_in, C_out]`: TensorFlow's HWIO kernel as a matrix.
    weight_matrix: Tensor,
    bias: Tensor,
    bias_values: std::sync::Arc<Vec<f32>>,
    cpu_kernels: bool,
}

impl Stem {
    /// `{prefix}/weights` `[3, 3, C_in, C_out]` with `{prefix}/BatchNorm/*` folded in.
    pub fn with_batch_norm(
        source: &mut dyn TensorSource,
        prefix: &str,
        inputs: usize,
        outputs: usize,
        target: &Target,
    ) -> Result<Self, DetectError> {
        let mut weights = source.get(&format!("{prefix}/weights"), &[3, 3, inputs, outputs])?;
        let bias = fold_batch_norm(source, prefix, &mut weights, outputs)?;
        let hwio = Tensor::from_vec(weights, (3, 3, inputs, outputs), &target.device)?;
        Ok(Self {
            weight: hwio.permute((3, 2, 0, 1))?.contiguous()?,
            weight_matrix: hwio.reshape((9 * inputs, outputs))?,
            bias: Tensor::from_slice(&bias, outputs, &target.device)?,
            bias_values: std::sync::Arc::new(bias),
            cpu_kernels: target.cpu_kernels,
        })
    }

    /// `image`: `[N, H, W, C_in]` u8; the layer sees `value·scale + offset`.
    pub fn forward(&self, image: &Tensor, scale: f32, offset: f32) -> Result<Tensor, DetectError> {
        if self.cpu_kernels && image.device().is_cpu() {
            let (batch, height, width, _) = image.dims4()?;
            let patches = image.apply_op1_no_bwd(&kernels::ImagePatches3x3 { scale, offset })?;
            let product = patches.matmul(&self.weight_matrix)?;
            let product =
                product.reshape((batch, height.div_ceil(2), width.div_ceil(2), self.weight_matrix.dim(1)?))?;
            return add_bias(product, &self.bias, &self.bias_values, Activation::Relu6, true);
        }
        let scaled = image
            .to_dtype(candle_core::DType::F32)?
            .affine(f64::from(scale), f64::from(offset))?;
        self.forward_tensor_ops(&scaled)
    }

    /// The convolution of an already scaled f32 `[N, H, W, C_in]` input with candle's
    /// `conv2d`: the path on GPUs and the CPU path's reference.
    pub fn forward_tensor_ops(&self, x: &Tensor) -> Result<Tensor, DetectError> {
        let (_, height, width, _) = x.dims4()?;
        let (out_height, pad_top) = same_padding(height, 3, 2);
        let (out_width, pad_left) = same_padding(width, 3, 2);
        let pad_bottom = (out_height - 1) * 2 + 3 - height - pad_top;
        let pad_right = (out_width - 1) * 2 + 3 - width - pad_left;
        let nchw = x
            .permute((0, 3, 1, 2))?
            .pad_with_zeros(2, pad_top, pad_bottom)?
            .pad_with_zeros(3, pad_left, pad_right)?;
        let convolved = nchw.conv2d(&self.weight, 0, 2, 1, 1)?;
        let nhwc = convolved.permute((0, 2, 3, 1))?.contiguous()?;
        add_bias(nhwc, &self.bias, &self.bias_values, Activation::Relu6, self.cpu_kernels)
    }
}

#[cfg(test)]
mod tests;
