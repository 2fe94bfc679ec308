use super::*;
use crate::architecture::TensorSource;
use candle_core::Device;
use proptest::prelude::*;

/// Hands out deterministic pseudo-random values for every tensor (batch-norm variances
/// positive), so layers can be built without a model file.
struct Synthetic(u64);

impl TensorSource for Synthetic {
    fn get(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>, DetectError> {
        let count: usize = shape.iter().product();
        Ok((0..count)
            .map(|_| {
                self.0 = self
                    .0
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let unit = (self.0 >> 40) as f32 / (1u64 << 24) as f32;
                if name.ends_with("moving_variance") {
                    0.5 + unit
                } else {
                    unit * 2.0 - 1.0
                }
            })
            .collect())
    }
}

fn input(batch: usize, height: usize, width: usize, channels: usize, seed: u64) -> Tensor {
    let mut source = Synthetic(seed);
    let values = source
        .get("x", &[batch * height * width * channels])
        .expect("synthetic");
    let scaled: Vec<f32> = values.iter().map(|value| value * 3.0).collect();
    Tensor::from_vec(scaled, (batch, height, width, channels), &Device::Cpu).expect("tensor")
}

fn max_difference(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .and_then(|d| d.abs())
        .and_then(|d| d.flatten_all())
        .and_then(|d| d.max(0))
        .and_then(|d| d.to_scalar::<f32>())
        .expect("difference")
}

#[test]
fn same_padding_matches_tensorflow() {
    // (input, stride) → (output, padding before); TF pads the odd pixel after.
    assert_eq!(same_padding(300, 3, 2), (150, 0));
    assert_eq!(same_padding(19, 3, 2), (10, 1));
    assert_eq!(same_padding(10, 3, 2), (5, 0));
    assert_eq!(same_padding(5, 3, 2), (3, 1));
    assert_eq!(same_padding(3, 3, 2), (2, 1));
    assert_eq!(same_padding(2, 3, 2), (1, 0));
    assert_eq!(same_padding(19, 3, 1), (19, 1));
    assert_eq!(same_padding(1, 3, 1), (1, 1));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// The CPU kernel against the tensor-op path (the GPU's) at odd and even sizes, both
    /// strides, channel counts around the vector widths.
    #[test]
    fn depthwise_kernel_matches_the_tensor_ops(
        batch in 1usize..3,
        height in 1usize..12,
        width in 1usize..12,
        channels in prop::sample::select(vec![1usize, 3, 8, 16, 17, 33, 64]),
        stride in 1usize..3,
        seed in any::<u64>(),
    ) {
        let layer = Depthwise::with_batch_norm(&mut Synthetic(seed), "dw", channels, stride, &Target::new(&Device::Cpu)).expect("layer");
        let x = input(batch, height, width, channels, seed ^ 1);
        let kernel = layer.forward(&x).expect("kernel");
        let reference = layer.forward_tensor_ops(&x).expect("tensor ops");
        prop_assert!(max_difference(&kernel, &reference) < 1e-5);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// The packed 1×1 kernel against candle's matrix product plus bias, at row counts around
    /// its 8-row tiles and channel counts around its 32-channel panels, with and without a
    /// skip connection.
    #[test]
    fn pointwise_kernel_matches_the_tensor_ops(
        batch in 1usize..3,
        height in 1usize..7,
        width in 1usize..7,
        inputs in prop::sample::select(vec![1usize, 3, 16, 33]),
        outputs in prop::sample::select(vec![6usize, 12, 16, 24, 32, 40, 48, 96]),
        relu6 in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let activation = if relu6 { Activation::Relu6 } else { Activation::Linear };
        let build = |target: &Target| Pointwise::with_batch_norm(&mut Synthetic(seed), "pw", inputs, outputs, activation, target).expect("layer");
        let (kernel, reference) = (build(&Target::new(&Device::Cpu)), build(&Target::cpu_tensor_ops()));
        let x = input(batch, height, width, inputs, seed ^ 5);
        let expected = reference.forward(&x).expect("tensor ops");
        prop_assert!(max_difference(&kernel.forward(&x).expect("kernel"), &expected) < 1e-4);
        let skip = input(batch, height, width, outputs, seed ^ 9);
        let with_skip = kernel.forward_plus(&x, &skip).expect("kernel + skip");
        prop_assert!(max_difference(&with_skip, &(expected + &skip).expect("sum")) < 1e-4);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// The fused depthwise → 1×1 pass (with and without a skip connection) against the two
    /// layers as tensor ops.
    #[test]
    fn fused_depthwise_and_pointwise_match_the_tensor_ops(
        batch in 1usize..3,
        height in 1usize..9,
        width in 1usize..9,
        channels in prop::sample::select(vec![3usize, 16, 48]),
        outputs in prop::sample::select(vec![6usize, 16, 40]),
        stride in 1usize..3,
        seed in any::<u64>(),
    ) {
        let build = |target: &Target| {
            let mut source = Synthetic(seed);
            let depthwise = Depthwise::with_batch_norm(&mut source, "dw", channels, stride, target).expect("dw");
            let pointwise = Pointwise::with_batch_norm(&mut source, "pw", channels, outputs, Activation::Linear, target).expect("pw");
            (depthwise, pointwise)
        };
        let (depthwise, pointwise) = build(&Target::new(&Device::Cpu));
        let (depthwise_ops, pointwise_ops) = build(&Target::cpu_tensor_ops());
        let x = input(batch, height, width, channels, seed ^ 7);
        let expected = pointwise_ops.forward(&depthwise_ops.forward(&x).expect("dw")).expect("pw");
        prop_assert!(max_difference(&depthwise.forward_then(&x, &pointwise, None).expect("fused"), &expected) < 1e-4);
        let skip = input(batch, height.div_ceil(stride), width.div_ceil(stride), outputs, seed ^ 11);
        let fused = depthwise.forward_then(&x, &pointwise, Some(&skip)).expect("fused + skip");
        prop_assert!(max_difference(&fused, &(expected + &skip).expect("sum")) < 1e-4);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// The fused inverted residual (expansion rows made on demand) against its three layers
    /// as tensor ops, with the skip connection where the shape allows it.
    #[test]
    fn fused_inverted_residual_matches_the_tensor_ops(
        batch in 1usize..3,
        height in 1usize..9,
        width in 1usize..9,
        inputs in prop::sample::select(vec![3usize, 16]),
        expanded in prop::sample::select(vec![5usize, 16, 48]),
        stride in 1usize..3,
        seed in any::<u64>(),
    ) {
        let build = |target: &Target| {
            let mut source = Synthetic(seed);
            let expand = Pointwise::with_batch_norm(&mut source, "expand", inputs, expanded, Activation::Relu6, target).expect("expand");
            let depthwise = Depthwise::with_batch_norm(&mut source, "dw", expanded, stride, target).expect("dw");
            let project = Pointwise::with_batch_norm(&mut source, "project", expanded, inputs, Activation::Linear, target).expect("project");
            (expand, depthwise, project)
        };
        let (expand, depthwise, project) = build(&Target::new(&Device::Cpu));
        let (expand_ops, depthwise_ops, project_ops) = build(&Target::cpu_tensor_ops());
        let x = input(batch, height, width, inputs, seed ^ 3);
        let residual = stride == 1;
        let fused = depthwise.forward_between(&expand, &x, &project, residual).expect("fused");
        let mut expected = project_ops.forward(&depthwise_ops.forward(&expand_ops.forward(&x).expect("expand")).expect("dw")).expect("project");
        if residual {
            expected = (expected + &x).expect("skip");
        }
        prop_assert!(max_difference(&fused, &expected) < 1e-4);
    }
}

#[test]
fn depthwise_kernel_matches_a_per_pixel_convolution() {
    // Stride 2 on an even input: TensorFlow pads nothing before and one pixel after.
    let channels = 2;
    let layer =
        Depthwise::with_batch_norm(&mut Synthetic(7), "dw", channels, 2, &Target::new(&Device::Cpu)).expect("layer");
    let x = input(1, 4, 4, channels, 3);
    let out = layer.forward(&x).expect("forward");
    assert_eq!(out.dims(), &[1, 2, 2, channels]);
    let pixels: Vec<f32> = x.flatten_all().and_then(|x| x.to_vec1()).expect("values");
    let outputs: Vec<f32> = out.flatten_all().and_then(|x| x.to_vec1()).expect("values");
    for out_y in 0..2 {
        for out_x in 0..2 {
            for channel in 0..channels {
                let mut sum = layer.bias_values[channel];
                for ky in 0..3 {
                    for kx in 0..3 {
                        let (y, x) = (out_y * 2 + ky, out_x * 2 + kx);
                        if y < 4 && x < 4 {
                            sum += pixels[(y * 4 + x) * channels + channel]
                                * layer.weight_values[(ky * 3 + kx) * channels + channel];
                        }
                    }
                }
                let expected = sum.clamp(0.0, 6.0);
                let actual = outputs[(out_y * 2 + out_x) * channels + channel];
                assert!(
                    (actual - expected).abs() < 1e-5,
                    "({out_y},{out_x},{channel}): {actual} vs {expected}"
                );
            }
        }
    }
}

#[test]
fn batch_norm_folding_equals_convolution_then_normalisation() {
    let (inputs, outputs) = (5, 3);
    let layer = Pointwise::with_batch_norm(
        &mut Synthetic(11),
        "pw",
        inputs,
        outputs,
        Activation::Linear,
        &Target::new(&Device::Cpu),
    )
    .expect("layer");
    let mut source = Synthetic(11);
    let weights = source.get("pw/weights", &[1, 1, inputs, outputs]).expect("w");
    let gamma = source.get("pw/BatchNorm/gamma", &[outputs]).expect("g");
    let beta = source.get("pw/BatchNorm/beta", &[outputs]).expect("b");
    let mean = source.get("pw/BatchNorm/moving_mean", &[outputs]).expect("m");
    let variance = source.get("pw/BatchNorm/moving_variance", &[outputs]).expect("v");
    let x = input(1, 2, 2, inputs, 5);
    let actual: Vec<f32> = layer
        .forward(&x)
        .and_then(|y| Ok(y.flatten_all()?.to_vec1()?))
        .expect("forward");
    let pixels: Vec<f32> = x.flatten_all().and_then(|x| x.to_vec1()).expect("values");
    for pixel in 0..4 {
        for output in 0..outputs {
            let convolved: f32 = (0..inputs)
                .map(|input| pixels[pixel * inputs + input] * weights[input * outputs + output])
                .sum();
            let normalised = (convolved - mean[output]) / (variance[output] + BATCH_NORM_EPSILON as f32).sqrt()
                * gamma[output]
                + beta[output];
            let got = actual[pixel * outputs + output];
            assert!((got - normalised).abs() < 1e-4, "{got} vs {normalised}");
        }
    }
}

fn image(batch: usize, height: usize, width: usize, seed: u64) -> Tensor {
    let bytes = crate::test_inputs::bytes(batch * height * width * 3, seed);
    Tensor::from_vec(bytes, (batch, height, width, 3), &Device::Cpu).expect("image")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// The CPU stem (patches × kernel, scaling fused) against candle's conv2d on the scaled
    /// image, at odd and even sizes (TensorFlow pads the odd pixel after).
    #[test]
    fn stem_patches_match_candle_conv2d(
        batch in 1usize..3,
        height in 1usize..10,
        width in 1usize..10,
        seed in any::<u64>(),
    ) {
        let layer = Stem::with_batch_norm(&mut Synthetic(seed), "stem", 3, 8, &Target::new(&Device::Cpu)).expect("layer");
        let picture = image(batch, height, width, seed);
        let (scale, offset) = (2.0 / 255.0, -1.0);
        let fused = layer.forward(&picture, scale, offset).expect("patches");
        prop_assert_eq!(fused.dims(), &[batch, height.div_ceil(2), width.div_ceil(2), 8]);
        let scaled = picture.to_dtype(candle_core::DType::F32).and_then(|x| x.affine(f64::from(scale), f64::from(offset))).expect("scaled");
        let reference = layer.forward_tensor_ops(&scaled).expect("conv2d");
        prop_assert!(max_difference(&fused, &reference) < 1e-5);
    }
}
