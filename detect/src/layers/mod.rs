//! Convolution layers of mobile detectors on NHWC `f32` tensors (`[N, H, W, C]`), with
//! batch normalisation folded into each convolution's weights and bias at load time (what
//! every inference runtime does; the network's arithmetic is otherwise TensorFlow's).
//!
//! On the CPU every layer is a kernel of ours: the 1×1 convolutions (and the first layer, as
//! image patches times its kernel) a register-tiled product with bias, activation and skip
//! connection applied before anything is stored ([`pointwise`]), the depthwise convolution
//! and the patches in [`kernels`] (candle's grouped `conv2d` runs one group after another,
//! hundreds of convolutions per layer). On other devices the same layers are candle tensor
//! ops, which the CPU tests also run as the reference for the kernels.

pub mod conv;
pub mod fused;
pub mod kernels;
pub mod pointwise;

use crate::architecture::{Target, TensorSource};
use crate::error::DetectError;
use candle_core::Tensor;
pub use conv::{Activation, same_padding};

/// ε of the Object Detection API's batch norms (`FusedBatchNorm`'s `epsilon` attribute in
/// the frozen graphs; TF-slim's default for MobileNet).
pub const BATCH_NORM_EPSILON: f64 = 0.001;

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

/// Adds `bias` (`[C]`) to the last dimension of `x` and applies `activation`, as candle ops.
fn add_bias(x: Tensor, bias: &Tensor, activation: Activation) -> Result<Tensor, DetectError> {
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
    activation: Activation,
    /// The weights packed for the CPU kernel, when the layer runs there.
    packed: Option<pointwise::PackedPointwise>,
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

    /// `weights` `[C_in, C_out]`, `bias` `[C_out]`.
    fn new(
        weights: Vec<f32>,
        bias: Vec<f32>,
        inputs: usize,
        outputs: usize,
        activation: Activation,
        target: &Target,
    ) -> Result<Self, DetectError> {
        let packed = (target.cpu_kernels && target.device.is_cpu())
            .then(|| pointwise::PackedPointwise::new(&weights, &bias, inputs, outputs));
        Ok(Self {
            weight: Tensor::from_vec(weights, (inputs, outputs), &target.device)?,
            bias: Tensor::from_slice(&bias, outputs, &target.device)?,
            activation,
            packed,
        })
    }

    fn cpu_kernel(&self) -> Option<pointwise::Pointwise1x1<'_>> {
        self.packed.as_ref().map(|weights| pointwise::Pointwise1x1 {
            weights,
            activation: self.activation,
        })
    }

    /// `[N, H, W, C_in]` → `[N, H, W, C_out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, DetectError> {
        if let Some(kernel) = self.cpu_kernel() {
            return Ok(x.contiguous()?.apply_op1_no_bwd(&kernel)?);
        }
        add_bias(self.product(x)?, &self.bias, self.activation)
    }

    /// `self.forward(x) + residual` (a linear bottleneck's skip connection; `residual` has the
    /// output's shape), on the CPU added as each output row is stored.
    pub fn forward_plus(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor, DetectError> {
        if let Some(kernel) = self.cpu_kernel() {
            return Ok(x.contiguous()?.apply_op2_no_bwd(&residual.contiguous()?, &kernel)?);
        }
        Ok((self.forward(x)? + residual)?)
    }

    /// The bare matrix product `[N, H, W, C_out]`, bias and activation still to apply.
    fn product(&self, x: &Tensor) -> Result<Tensor, DetectError> {
        let (batch, height, width, channels) = x.dims4()?;
        let rows = x.reshape((batch * height * width, channels))?;
        let product = rows.matmul(&self.weight)?;
        Ok(product.reshape((batch, height, width, self.weight.dim(1)?))?)
    }
}

/// A 3×3 depthwise convolution with "SAME" padding, folded batch norm and ReLU6.
pub struct Depthwise {
    /// `[9, C]`: tap (ky·3 + kx), then channel.
    weight: Tensor,
    bias: Tensor,
    /// The same, for the CPU kernel.
    weight_values: Vec<f32>,
    bias_values: Vec<f32>,
    stride: usize,
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
            weight_values: weights,
            bias_values: bias,
            stride,
            cpu_kernels: target.cpu_kernels,
        })
    }

    fn cpu_kernel(&self) -> kernels::Depthwise3x3<'_> {
        kernels::Depthwise3x3 {
            weights: &self.weight_values,
            bias: &self.bias_values,
            stride: self.stride,
            activation: Activation::Relu6,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor, DetectError> {
        if self.cpu_kernels && x.device().is_cpu() {
            return Ok(x.contiguous()?.apply_op1_no_bwd(&self.cpu_kernel())?);
        }
        self.forward_tensor_ops(x)
    }

    /// An inverted residual's `project(self(expand(x)))`, plus `x` when `residual`. On the CPU
    /// one pass ([`fused::InvertedResidual`]): neither the expansion nor this layer's output
    /// reaches memory.
    pub fn forward_between(
        &self,
        expand: &Pointwise,
        x: &Tensor,
        project: &Pointwise,
        residual: bool,
    ) -> Result<Tensor, DetectError> {
        if let (true, Some(expand_kernel), Some(project_kernel)) = (
            self.cpu_kernels && x.device().is_cpu(),
            expand.cpu_kernel(),
            project.cpu_kernel(),
        ) {
            let fused = fused::InvertedResidual {
                expand: expand_kernel,
                depthwise: self.cpu_kernel(),
                project: project_kernel,
                residual,
            };
            return Ok(x.contiguous()?.apply_op1_no_bwd(&fused)?);
        }
        self.forward_then(&expand.forward(x)?, project, residual.then_some(x))
    }

    /// `then.forward(&self.forward(x))`, plus `residual` (the output's shape) when given. On
    /// the CPU one pass ([`fused::DepthwisePointwise`]): this layer's output never reaches
    /// memory.
    pub fn forward_then(&self, x: &Tensor, then: &Pointwise, residual: Option<&Tensor>) -> Result<Tensor, DetectError> {
        if let (true, Some(pointwise)) = (self.cpu_kernels && x.device().is_cpu(), then.cpu_kernel()) {
            let fused = fused::DepthwisePointwise {
                depthwise: self.cpu_kernel(),
                pointwise,
            };
            let x = x.contiguous()?;
            return Ok(match residual {
                Some(residual) => x.apply_op2_no_bwd(&residual.contiguous()?, &fused)?,
                None => x.apply_op1_no_bwd(&fused)?,
            });
        }
        let filtered = self.forward(x)?;
        match residual {
            Some(residual) => then.forward_plus(&filtered, residual),
            None => then.forward(&filtered),
        }
    }

    /// The same convolution as candle tensor ops (nine shifted, strided views of the padded
    /// input, each scaled by its tap): the path on GPUs, and the CPU kernel's reference.
    pub fn forward_tensor_ops(&self, x: &Tensor) -> Result<Tensor, DetectError> {
        let stride = self.stride;
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
/// image's patches ([`kernels::ImagePatches3x3`]) through the 1×1 kernel (the patches are a
/// `9·C_in`-channel image); elsewhere candle's `conv2d`.
pub struct Stem {
    /// `[C_out, C_in, 3, 3]`, candle's layout.
    weight: Tensor,
    bias: Tensor,
    /// The kernel as a `[9·C_in, C_out]` 1×1 convolution over the patches, for the CPU.
    patches: Option<Pointwise>,
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
        let hwio = Tensor::from_slice(&weights, (3, 3, inputs, outputs), &target.device)?;
        let patches = (target.cpu_kernels && target.device.is_cpu())
            .then(|| Pointwise::new(weights, bias.clone(), 9 * inputs, outputs, Activation::Relu6, target))
            .transpose()?;
        Ok(Self {
            weight: hwio.permute((3, 2, 0, 1))?.contiguous()?,
            bias: Tensor::from_slice(&bias, outputs, &target.device)?,
            patches,
        })
    }

    /// `image`: `[N, H, W, C_in]` u8; the layer sees `value·scale + offset`.
    pub fn forward(&self, image: &Tensor, scale: f32, offset: f32) -> Result<Tensor, DetectError> {
        if let Some(patches_kernel) = &self.patches {
            let patches = image
                .contiguous()?
                .apply_op1_no_bwd(&kernels::ImagePatches3x3 { scale, offset })?;
            return patches_kernel.forward(&patches);
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
        add_bias(nhwc, &self.bias, Activation::Relu6)
    }
}

#[cfg(test)]
mod tests;
