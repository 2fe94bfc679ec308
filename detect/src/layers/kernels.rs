//! CPU kernels for the layers candle has no fast path for: the 3×3 depthwise convolution
//! (NHWC, "SAME" padding, stride 1 or 2, bias and ReLU6 fused) and the first layer's image
//! patches.
//!
//! NHWC keeps a pixel's channels contiguous, so a tap is one multiply-add over a vector of
//! channels. The depthwise kernel holds a block of channels' nine weights in vector registers
//! and walks the row four output pixels at a time: four independent sums hide the
//! multiply-add latency, and neighbouring pixels share the input vectors they read (with the
//! stride a compile-time constant, the compiler sees which loads coincide). Pixels whose taps
//! leave the image, and channels past the last whole vector, take a per-pixel path that skips
//! the taps in the padding. Each kernel is compiled per instruction-set level and picked at
//! run time ([`pulp::Arch`]), as the worker's analysis kernels are. Outputs are appended
//! row by row to a vector that is never zero-filled; a forward pass runs on the calling
//! thread (the worker runs frames in parallel, one pass each). Never called on
//! non-contiguous input: the layers make input contiguous first.

use super::conv::{Activation, same_padding};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, Layout, Shape};
use pulp::Simd;

/// Output pixels per step of the depthwise kernel's interior loop.
const PIXELS_PER_STEP: usize = 4;

pub(super) fn contiguous_f32<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(values) = storage else {
        candle_core::bail!("{op} needs f32 input, got {:?}", storage.dtype());
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&values[start..end]),
        None => candle_core::bail!("{op} needs contiguous input"),
    }
}

/// Implements candle's `CustomOp1` and `CustomOp2` for an op whose second operand, when
/// given, is a skip connection of the output's shape: both call the op's
/// `run(storage, layout, Option<&[f32]>)`.
macro_rules! ops_with_optional_residual {
    ($op:ident, $name:literal) => {
        impl candle_core::CustomOp1 for $op<'_> {
            fn name(&self) -> &'static str {
                $name
            }

            fn cpu_fwd(
                &self,
                storage: &candle_core::CpuStorage,
                layout: &candle_core::Layout,
            ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
                self.run(storage, layout, None)
            }
        }

        impl candle_core::CustomOp2 for $op<'_> {
            fn name(&self) -> &'static str {
                concat!($name, "-residual")
            }

            fn cpu_fwd(
                &self,
                storage: &candle_core::CpuStorage,
                layout: &candle_core::Layout,
                residual: &candle_core::CpuStorage,
                residual_layout: &candle_core::Layout,
            ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
                let residual =
                    $crate::layers::kernels::contiguous_f32(residual, residual_layout, concat!($name, " residual"))?;
                self.run(storage, layout, Some(residual))
            }
        }
    };
}
pub(super) use ops_with_optional_residual;

/// `[N, H, W, C]` → `[N, ceil(H/s), ceil(W/s), C]`.
#[derive(Debug, Clone, Copy)]
pub struct Depthwise3x3<'a> {
    /// `[3, 3, C]` row-major (tap, then channel), batch norm folded in.
    pub weights: &'a [f32],
    pub bias: &'a [f32],
    /// 1 or 2.
    pub stride: usize,
    pub activation: Activation,
}

impl candle_core::CustomOp1 for Depthwise3x3<'_> {
    fn name(&self) -> &'static str {
        "depthwise3x3-nhwc"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let input = contiguous_f32(storage, layout, self.name())?;
        let (batch, height, width, channels) = layout.shape().dims4()?;
        let geometry = self.geometry(height, width, channels)?;
        let mut output = Vec::with_capacity(batch * geometry.out_height * geometry.out_width * channels);
        self.for_each_row(input, batch, &geometry, |row| output.extend_from_slice(row));
        Ok((
            CpuStorage::F32(output),
            Shape::from((batch, geometry.out_height, geometry.out_width, channels)),
        ))
    }
}

impl Depthwise3x3<'_> {
    /// Convolves `batch` images of `input` laid out as `geometry` says and hands each output
    /// row (`[W_out, C]`) to `sink`, images and rows in order. The row stays in cache for
    /// whatever `sink` does next.
    pub(super) fn for_each_row(&self, input: &[f32], batch: usize, geometry: &Geometry, mut sink: impl FnMut(&[f32])) {
        let row_len = geometry.width * geometry.channels;
        let mut row = vec![0f32; geometry.out_width * geometry.channels];
        for picture in input.chunks_exact((geometry.height * row_len).max(1)).take(batch) {
            for out_y in 0..geometry.out_height {
                let rows = geometry
                    .input_rows(out_y)
                    .map(|y| y.map(|y| &picture[y * row_len..(y + 1) * row_len]));
                self.row(geometry, rows, &mut row);
                sink(&row);
            }
        }
    }

    /// Where the kernel reads and writes on an `height`×`width` input of `channels`.
    ///
    /// Errors: the input's channels are not the layer's, or the stride is not 1 or 2.
    pub(super) fn geometry(&self, height: usize, width: usize, channels: usize) -> candle_core::Result<Geometry> {
        if channels != self.bias.len() || self.weights.len() != 9 * channels {
            candle_core::bail!("depthwise layer has {} channels, input has {channels}", self.bias.len());
        }
        if !(1..=2).contains(&self.stride) {
            candle_core::bail!("depthwise kernel takes stride 1 or 2, not {}", self.stride);
        }
        let (out_height, pad_top) = same_padding(height, 3, self.stride);
        let (out_width, pad_left) = same_padding(width, 3, self.stride);
        // Output columns whose three taps all fall inside the image.
        let interior_start = pad_left.div_ceil(self.stride).min(out_width);
        let interior_end = if width + pad_left >= 3 {
            ((width + pad_left - 3) / self.stride + 1).clamp(interior_start, out_width)
        } else {
            interior_start
        };
        Ok(Geometry {
            height,
            width,
            channels,
            out_height,
            out_width,
            stride: self.stride,
            pad_top,
            pad_left,
            interior: interior_start..interior_end,
        })
    }

    /// Output row `out` (`[W_out, C]`) from the input rows of the three kernel rows (None
    /// where a row falls in the padding; [`Geometry::input_rows`] says which).
    pub(super) fn row(&self, geometry: &Geometry, rows: [Option<&[f32]>; 3], out: &mut [f32]) {
        pulp::Arch::new().dispatch(DepthwiseRow {
            kernel: self,
            geometry,
            rows,
            out,
        });
    }
}

pub(super) struct Geometry {
    height: usize,
    width: usize,
    channels: usize,
    pub(super) out_height: usize,
    pub(super) out_width: usize,
    stride: usize,
    pad_top: usize,
    pad_left: usize,
    interior: std::ops::Range<usize>,
}

impl Geometry {
    /// The input rows of output row `out_y`'s three kernel rows, None in the padding.
    pub(super) fn input_rows(&self, out_y: usize) -> [Option<usize>; 3] {
        std::array::from_fn(|ky| {
            (out_y * self.stride + ky)
                .checked_sub(self.pad_top)
                .filter(|&y| y < self.height)
        })
    }
}

/// One output row of [`Depthwise3x3`] as a pulp operation (a struct, not a closure, so its
/// body is compiled with the instruction set pulp enables).
struct DepthwiseRow<'a> {
    kernel: &'a Depthwise3x3<'a>,
    geometry: &'a Geometry,
    rows: [Option<&'a [f32]>; 3],
    out: &'a mut [f32],
}

/// The `S` vector at the start of `values` (which holds at least one).
#[inline(always)]
fn load<S: Simd>(values: &[f32]) -> S::f32s {
    S::as_simd_f32s(&values[..S::F32_LANES]).0[0]
}

#[inline(always)]
fn store<S: Simd>(values: &mut [f32], vector: S::f32s) {
    S::as_mut_simd_f32s(&mut values[..S::F32_LANES]).0[0] = vector;
}

impl pulp::WithSimd for DepthwiseRow<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        match self.geometry.stride {
            1 => self.row::<S, 1>(simd),
            _ => self.row::<S, 2>(simd),
        }
    }
}

impl DepthwiseRow<'_> {
    #[inline(always)]
    fn row<S: Simd, const STRIDE: usize>(mut self, simd: S) {
        let g = self.geometry;
        let lanes = S::F32_LANES;
        let vector_channels = g.channels / lanes * lanes;
        let (weights, bias) = (self.kernel.weights, self.kernel.bias);
        for start in (0..vector_channels).step_by(lanes) {
            let taps: [[S::f32s; 3]; 3] = std::array::from_fn(|ky| {
                std::array::from_fn(|kx| load::<S>(&weights[(ky * 3 + kx) * g.channels + start..]))
            });
            let bias = load::<S>(&bias[start..]);
            let mut out_x = g.interior.start;
            while out_x + PIXELS_PER_STEP <= g.interior.end {
                self.interior::<S, STRIDE, PIXELS_PER_STEP>(simd, &taps, bias, out_x, start);
                out_x += PIXELS_PER_STEP;
            }
            while out_x < g.interior.end {
                self.interior::<S, STRIDE, 1>(simd, &taps, bias, out_x, start);
                out_x += 1;
            }
            for out_x in (0..g.interior.start).chain(g.interior.end..g.out_width) {
                self.edge::<S>(simd, &taps, bias, out_x, start);
            }
        }
        if vector_channels < g.channels {
            for out_x in 0..g.out_width {
                self.remaining_channels(out_x, vector_channels..g.channels);
            }
        }
    }

    /// Output pixel `out_x`, channels `start..start + lanes`, skipping the column taps that
    /// fall in the padding.
    #[inline(always)]
    fn edge<S: Simd>(&mut self, simd: S, taps: &[[S::f32s; 3]; 3], bias: S::f32s, out_x: usize, start: usize) {
        let g = self.geometry;
        let mut sum = bias;
        for (row, taps) in self.rows.iter().zip(taps) {
            let Some(row) = row else { continue };
            for (kx, &tap) in taps.iter().enumerate() {
                let Some(column) = (out_x * g.stride + kx).checked_sub(g.pad_left).filter(|&x| x < g.width) else {
                    continue;
                };
                sum = simd.mul_add_e_f32s(load::<S>(&row[column * g.channels + start..]), tap, sum);
            }
        }
        let value = self.kernel.activation.apply_simd(simd, sum);
        store::<S>(&mut self.out[out_x * g.channels + start..], value);
    }

    /// `PIXELS` output pixels from `out_x` on, channels `start..start + lanes`, every column
    /// tap inside the image.
    #[inline(always)]
    fn interior<S: Simd, const STRIDE: usize, const PIXELS: usize>(
        &mut self,
        simd: S,
        taps: &[[S::f32s; 3]; 3],
        bias: S::f32s,
        out_x: usize,
        start: usize,
    ) {
        let channels = self.geometry.channels;
        let first_column = out_x * STRIDE - self.geometry.pad_left;
        let mut sums = [bias; PIXELS];
        for (row, taps) in self.rows.iter().zip(taps) {
            let Some(row) = row else { continue };
            for (pixel, sum) in sums.iter_mut().enumerate() {
                for (kx, &tap) in taps.iter().enumerate() {
                    let column = first_column + pixel * STRIDE + kx;
                    *sum = simd.mul_add_e_f32s(load::<S>(&row[column * channels + start..]), tap, *sum);
                }
            }
        }
        for (pixel, &sum) in sums.iter().enumerate() {
            let value = self.kernel.activation.apply_simd(simd, sum);
            store::<S>(&mut self.out[(out_x + pixel) * channels + start..], value);
        }
    }

    /// One output pixel's channels past the last whole vector, one value at a time, skipping
    /// taps in the padding.
    #[inline(always)]
    fn remaining_channels(&mut self, out_x: usize, channels: std::ops::Range<usize>) {
        let g = self.geometry;
        let columns: [Option<usize>; 3] =
            std::array::from_fn(|kx| (out_x * g.stride + kx).checked_sub(g.pad_left).filter(|&x| x < g.width));
        for channel in channels {
            let mut sum = self.kernel.bias[channel];
            for (ky, row) in self.rows.iter().enumerate() {
                let Some(row) = row else { continue };
                for (kx, column) in columns.iter().enumerate() {
                    let Some(x) = column else { continue };
                    let weight = self.kernel.weights[(ky * 3 + kx) * g.channels + channel];
                    sum = row[x * g.channels + channel].mul_add(weight, sum);
                }
            }
            self.out[out_x * g.channels + channel] = self.kernel.activation.apply(sum);
        }
    }
}

/// The patches of a 3×3, stride-2, "SAME" convolution over an 8-bit NHWC image, scaled to
/// the network's input range on the way (`value·scale + offset`; padding stays 0, as the
/// graph pads after scaling): `[N, H, W, C]` u8 → `[N, ceil(H/2), ceil(W/2), 9·C]` f32, each
/// pixel's patch in (ky, kx, channel) order, TensorFlow's HWIO kernel order. The stem's
/// convolution is then a 1×1 convolution over the patches, with no layout changes.
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
        let mut patches = Vec::with_capacity(batch * out_height * out_width * 9 * channels);
        let row_len = width * channels;
        // The three input rows of an output row, scaled once: a patch's row is then three
        // consecutive pixels of one of them.
        let mut scaled = vec![vec![0f32; row_len]; 3];
        for picture in image.chunks_exact((height * row_len).max(1)).take(batch) {
            for out_y in 0..out_height {
                let rows: [Option<usize>; 3] =
                    std::array::from_fn(|ky| (out_y * 2 + ky).checked_sub(pad_top).filter(|&y| y < height));
                for (row, scaled) in rows.iter().zip(scaled.iter_mut()) {
                    if let Some(y) = row {
                        for (value, &byte) in scaled.iter_mut().zip(&picture[y * row_len..(y + 1) * row_len]) {
                            *value = f32::from(byte) * self.scale + self.offset;
                        }
                    }
                }
                for out_x in 0..out_width {
                    let first = (out_x * 2).checked_sub(pad_left);
                    for (row, scaled) in rows.iter().zip(&scaled) {
                        match (row, first) {
                            (Some(_), Some(x)) if x + 3 <= width => {
                                patches.extend_from_slice(&scaled[x * channels..(x + 3) * channels]);
                            }
                            (Some(_), _) => {
                                for kx in 0..3 {
                                    match (out_x * 2 + kx).checked_sub(pad_left).filter(|&x| x < width) {
                                        Some(x) => patches.extend_from_slice(&scaled[x * channels..(x + 1) * channels]),
                                        None => patches.extend(std::iter::repeat_n(0f32, channels)),
                                    }
                                }
                            }
                            (None, _) => patches.extend(std::iter::repeat_n(0f32, 3 * channels)),
                        }
                    }
                }
            }
        }
        Ok((
            CpuStorage::F32(patches),
            Shape::from((batch, out_height, out_width, 9 * channels)),
        ))
    }
}
