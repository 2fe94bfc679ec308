//! What every convolution shares, on any device: TensorFlow's SAME padding and the activation
//! after the bias.

/// TensorFlow's "SAME" padding for one spatial dimension: output size `ceil(input / stride)`,
/// and the padding before it (the rest goes after: a stride-2 layer on an even input pads
/// 0 before and 1 after).
pub fn same_padding(input: usize, kernel: usize, stride: usize) -> (usize, usize) {
    let output = input.div_ceil(stride);
    let total = ((output - 1) * stride + kernel).saturating_sub(input);
    (output, total / 2)
}

/// What follows a convolution's bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `min(max(x, 0), 6)`.
    Relu6,
    /// None (a linear bottleneck's projection, a predictor's output).
    Linear,
}

impl Activation {
    /// The activation of one value.
    #[inline(always)]
    pub fn apply(self, value: f32) -> f32 {
        match self {
            Self::Relu6 => value.clamp(0.0, 6.0),
            Self::Linear => value,
        }
    }

    /// The activation of a vector of values, for the CPU kernels.
    #[inline(always)]
    pub fn apply_simd<S: pulp::Simd>(self, simd: S, value: S::f32s) -> S::f32s {
        match self {
            Self::Relu6 => simd.min_f32s(simd.max_f32s(value, simd.splat_f32s(0.0)), simd.splat_f32s(6.0)),
            Self::Linear => value,
        }
    }
}
