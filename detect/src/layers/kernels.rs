//! CPU kernels for the layers candle has no fast path for: the 3×3 depthwise convolution
//! (NHWC, "SAME" padding, any stride, bias and activation fused) and a bias-plus-activation
//! pass done in place after a matrix product.
//!
//! NHWC keeps a pixel's channels contiguous, so each of the nine taps is one multiply-add
//! over a run of channels that the compiler vectorises. Each kernel is compiled per
//! instruction-set level and picked at run time ([`pulp::Arch`]), as the worker's analysis
//! kernels are, so one binary uses AVX-512 or AVX2 where it finds them. Output rows run in
//! parallel on the current rayon pool. Never called on non-contiguous input: the ops copy
//! such input first.

use super::{Activation, same_padding};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, Layout, Shape};
use rayon::prelude::*;
use std::sync::Arc;

/// Output rows handed to one rayon task: enough work to amortise the task, few enough that
/// two cores share a 19×19 layer.
const ROWS_PER_TASK: usize = 2;

fn contiguous_f32<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(values) = storage else {
        candle_core::bail!("{op} needs f32 input, got {:?}", storage.dtype());
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&values[start..end]),
        None => candle_core::bail!("{op} needs contiguous input"),
    }
}

#[inline(always)]
fn activate(values: &mut [f32], activation: Activation) {
    if activation == Activation::Relu6 {
        for value in values {
            *value = value.clamp(0.0, 6.0);
        }
    }
}

/// `[N, H, W, C]` → `[N, ceil(H/s), ceil(W/s), C]`.
#[derive(Debug, Clone)]
pub struct Depthwise3x3 {
    /// `[3, 3, C]` row-major (tap, then channel), batch norm folded in.
    pub weights: Arc<Vec<f32>>,
    pub bias: Arc<Vec<f32>>,
    pub stride: usize,
    pub activation: Activation,
}

impl candle_core::CustomOp1 for Depthwise3x3 {
    fn name(&self) -> &'static str {
        "depthwise3x3-nhwc"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let input = contiguous_f32(storage, layout, self.name())?;
        let (batch, height, width, channels) = layout.shape().dims4()?;
        if channels != self.bias.len() || self.weights.len() != 9 * channels {
            candle_core::bail!("depthwise layer has {} channels, input has {channels}", self.bias.len());
        }
        let (out_height, pad_top) = same_padding(height, 3, self.stride);
        let (out_width, pad_left) = same_padding(width, 3, self.stride);
        let out_row_len = out_width * channels;
        let mut output = vec![0f32; batch * out_height * out_row_len];
        let geometry = Geometry {
            height,
            width,
            channels,
            out_width,
            stride: self.stride,
            pad_top,
            pad_left,
        };
        output
            .par_chunks_mut(out_row_len * ROWS_PER_TASK)
            .enumerate()
            .for_each(|(task, rows)| {
                for (offset, out_row) in rows.chunks_mut(out_row_len).enumerate() {
                    let row = task * ROWS_PER_TASK + offset;
                    let (image, out_y) = (row / out_height, row % out_height);
                    let image_len = height * width * channels;
                    pulp::Arch::new().dispatch(DepthwiseRow {
                        input: &input[image * image_len..(image + 1) * image_len],
                        weights: &self.weights,
                        bias: &self.bias,
                        geometry: &geometry,
                        out_y,
                        out_row,
                        activation: self.activation,
                    });
                }
            });
        Ok((
            CpuStorage::F32(output),
            Shape::from((batch, out_height, out_width, channels)),
        ))
    }
}

struct Geometry {
    height: usize,
    width: usize,
    channels: usize,
    out_width: usize,
    stride: usize,
    pad_top: usize,
    pad_left: usize,
}

/// One output row of [`Depthwise3x3`] as a pulp operation (a struct, not a closure, so its
/// body is compiled with the instruction set pulp enables).
struct DepthwiseRow<'a> {
    input: &'a [f32],
    weights: &'a [f32],
    bias: &'a [f32],
    geometry: &'a Geometry,
    out_y: usize,
    out_row: &'a mut [f32],
    activation: Activation,
}

impl pulp::WithSimd for DepthwiseRow<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let g = self.geometry;
        let channels = g.channels;
        // Input rows and columns of each tap, or None where the tap falls in the padding.
        let rows: [Option<usize>; 3] = std::array::from_fn(|ky| {
            (self.out_y * g.stride + ky)
                .checked_sub(g.pad_top)
                .filter(|&y| y < g.height)
        });
        for out_x in 0..g.out_width {
            let columns: [Option<usize>; 3] =
                std::array::from_fn(|kx| (out_x * g.stride + kx).checked_sub(g.pad_left).filter(|&x| x < g.width));
            // (input offset, tap offset) of every tap inside the image.
            let mut taps = [(0usize, 0usize); 9];
            let mut tap_count = 0;
            for (ky, row) in rows.iter().enumerate() {
                let Some(y) = row else { continue };
                for (kx, column) in columns.iter().enumerate() {
                    let Some(x) = column else { continue };
                    taps[tap_count] = ((y * g.width + x) * channels, (ky * 3 + kx) * channels);
                    tap_count += 1;
                }
            }
            let taps = &taps[..tap_count];
            let out = &mut self.out_row[out_x * channels..(out_x + 1) * channels];
            // Channels in blocks whose sums stay in registers across the taps, so each output
            // is written once: 64 (four independent AVX-512 sums, which hides the add
            // latency), then 16, then one at a time.
            let mut start = 0;
            while start + 64 <= channels {
                channel_block::<64>(self.input, self.weights, self.bias, taps, start, out);
                start += 64;
            }
            while start + 16 <= channels {
                channel_block::<16>(self.input, self.weights, self.bias, taps, start, out);
                start += 16;
            }
            for (channel, value) in out.iter_mut().enumerate().skip(start) {
                let mut sum = self.bias[channel];
                for &(input, tap) in taps {
                    sum += self.input[input + channel] * self.weights[tap + channel];
                }
                *value = sum;
            }
            activate(out, self.activation);
        }
    }
}

/// The sums of channels `start..start + N` of one output pixel over its taps.
#[inline(always)]
fn channel_block<const N: usize>(
    input: &[f32],
    weights: &[f32],
    bias: &[f32],
    taps: &[(usize, usize)],
    start: usize,
    out: &mut [f32],
) {
    let mut sums: [f32; N] = std::array::from_fn(|lane| bias[start + lane]);
    for &(pixel, tap) in taps {
        let values = &input[pixel + start..pixel + start + N];
        let kernel = &weights[tap + start..tap + start + N];
        for ((sum, value), weight) in sums.iter_mut().zip(values).zip(kernel) {
            *sum += value * weight;
        }
    }
    out[start..start + N].copy_from_slice(&sums);
}

/// Adds a per-channel bias to the last dimension and applies an activation, in place.
#[derive(Debug, Clone)]
pub struct BiasActivation {
    pub bias: Arc<Vec<f32>>,
    pub activation: Activation,
}

impl candle_core::InplaceOp1 for BiasActivation {
    fn name(&self) -> &'static str {
        "bias-activation"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let channels = self.bias.len();
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("bias-activation needs contiguous input");
        };
        let CpuStorage::F32(values) = storage else {
            candle_core::bail!("bias-activation needs f32 input");
        };
        if layout.dims().last() != Some(&channels) {
            candle_core::bail!("bias has {channels} channels, tensor is {:?}", layout.dims());
        }
        const PIXELS_PER_TASK: usize = 64;
        values[start..end]
            .par_chunks_mut(channels * PIXELS_PER_TASK)
            .for_each(|pixels| {
                pulp::Arch::new().dispatch(BiasPixels {
                    pixels,
                    bias: &self.bias,
                    activation: self.activation,
                })
            });
        Ok(())
    }
}

struct BiasPixels<'a> {
    pixels: &'a mut [f32],
    bias: &'a [f32],
    activation: Activation,
}

impl pulp::WithSimd for BiasPixels<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        for pixel in self.pixels.chunks_exact_mut(self.bias.len()) {
            for (value, bias) in pixel.iter_mut().zip(self.bias) {
                *value += bias;
            }
            activate(pixel, self.activation);
        }
    }
}

/// The patches of a 3×3, stride-2, "SAME" convolution over an 8-bit NHWC image, scaled to
/// the network's input range on the way (`value·scale + offset`; padding stays 0, as the
/// graph pads after scaling): `[N, H, W, C]` u8 → `[N·ceil(H/2)·ceil(W/2), 9·C]` f32, each
/// row in (ky, kx, channel) order, TensorFlow's HWIO kernel order. The stem's convolution is
/// then one matrix product, with no layout changes.
#[derive(Debug, Clone, Copy)]
pub struct ImagePatches3x3 {
    pub scale: f32,
    pub offset: f32,
}

impl candle_core::CustomOp1 for ImagePatches3x3 {
    fn name(&self) -> &'static str {
        "image-patches3x3-s2"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::U8(values) = storage else {
            candle_core::bail!("image patches need u8 input, got {:?}", storage.dtype());
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("image patches need contiguous input");
        };
        let image = &values[start..end];
        let (batch, height, width, channels) = layout.shape().dims4()?;
        let (out_height, pad_top) = same_padding(height, 3, 2);
        let (out_width, pad_left) = same_padding(width, 3, 2);
        let row_len = 9 * channels;
        let mut patches = vec![0f32; batch * out_height * out_width * row_len];
        patches
            .par_chunks_mut(out_width * row_len)
            .enumerate()
            .for_each(|(row, out_row)| {
                let (index, out_y) = (row / out_height, row % out_height);
                let picture = &image[index * height * width * channels..(index + 1) * height * width * channels];
                for (out_x, patch) in out_row.chunks_exact_mut(row_len).enumerate() {
                    for ky in 0..3 {
                        let Some(y) = (out_y * 2 + ky).checked_sub(pad_top).filter(|&y| y < height) else {
                            continue;
                        };
                        for kx in 0..3 {
                            let Some(x) = (out_x * 2 + kx).checked_sub(pad_left).filter(|&x| x < width) else {
                                continue;
                            };
                            let pixel = &picture[(y * width + x) * channels..(y * width + x + 1) * channels];
                            let target = &mut patch[(ky * 3 + kx) * channels..(ky * 3 + kx + 1) * channels];
                            for (value, &byte) in target.iter_mut().zip(pixel) {
                                *value = f32::from(byte) * self.scale + self.offset;
                            }
                        }
                    }
                }
            });
        Ok((
            CpuStorage::F32(patches),
            Shape::from((batch * out_height * out_width, row_len)),
        ))
    }
}
