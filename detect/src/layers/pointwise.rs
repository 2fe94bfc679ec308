//! The CPU kernel of a 1×1 convolution on NHWC input: `[M, K] × [K, N]`, plus a bias, then
//! the activation (and a skip connection, when there is one), each output written once.
//!
//! Through candle this was a matrix product (gemm, into a zero-filled buffer) and then a
//! pass of ours for bias and ReLU6: the network's activations crossed memory three times.
//! Here the weights are packed at load into panels of [`PANEL`] output channels (`[K, 32]`
//! each; the last is 16 wide when that covers the rest, so a 16- or 144-channel layer
//! computes no padding, and zero-padded otherwise). For each block of rows the kernel keeps
//! a `rows × 32` tile of sums in vector registers while it walks K (one broadcast of an input
//! value, one fused multiply-add per vector), adds the bias, applies the activation, and
//! appends the finished rows to the output, which is never zero-filled. This is the
//! register-blocked micro-kernel of Goto & van de Geijn, "Anatomy of High-Performance Matrix
//! Multiplication" (ACM TOMS 2008), without packing the input: a 1×1 convolution's input
//! rows are already contiguous, and a block of them stays in L1 while every panel passes
//! over it.
//!
//! Compiled per instruction-set level and picked at run time ([`pulp::Arch`]): 8 rows × 2
//! AVX-512 vectors, or 2 rows × 4 AVX2 vectors; a plain loop elsewhere. Runs on the calling
//! thread (the worker runs frames in parallel, one forward pass each).

use super::conv::Activation;
use candle_core::{CpuStorage, Layout, Shape};
use pulp::Simd;

/// Output channels per packed panel: two AVX-512 vectors, four AVX2 ones.
pub const PANEL: usize = 32;
/// The narrower last panel, where the channels left over fit in it.
const NARROW_PANEL: usize = 16;

/// A 1×1 convolution's weights and bias packed for [`Pointwise1x1`].
#[derive(Debug, Clone, PartialEq)]
pub struct PackedPointwise {
    inputs: usize,
    outputs: usize,
    /// `N / 32` panels `[K, 32]` row-major, then, when N is not a multiple of 32, one
    /// `[K, 16]` or `[K, 32]` panel with the rest, zero past N.
    panels: Vec<f32>,
    /// Width of the last panel when it holds the rest (16 or 32), else 0.
    tail_width: usize,
    /// `[N]` padded as the panels are.
    bias: Vec<f32>,
}

impl PackedPointwise {
    /// `weights`: `[K, N]` row-major (TensorFlow's `[1, 1, K, N]` kernel); `bias`: `[N]`.
    ///
    /// Panics: when the slices are not of those sizes (the layer checks them when it loads).
    pub fn new(weights: &[f32], bias: &[f32], inputs: usize, outputs: usize) -> Self {
        assert_eq!(
            weights.len(),
            inputs * outputs,
            "weights of a {inputs}×{outputs} 1×1 convolution"
        );
        assert_eq!(bias.len(), outputs, "bias of {outputs} channels");
        let rest = outputs % PANEL;
        let tail_width = match rest {
            0 => 0,
            1..=NARROW_PANEL => NARROW_PANEL,
            _ => PANEL,
        };
        let full = outputs / PANEL;
        let mut panels = Vec::with_capacity(inputs * (full * PANEL + tail_width));
        let widths = std::iter::repeat_n(PANEL, full).chain((tail_width > 0).then_some(tail_width));
        let mut first_output = 0;
        for width in widths {
            for input in 0..inputs {
                for output in first_output..first_output + width {
                    panels.push(if output < outputs {
                        weights[input * outputs + output]
                    } else {
                        0.0
                    });
                }
            }
            first_output += width;
        }
        let mut padded_bias = bias.to_vec();
        padded_bias.resize(full * PANEL + tail_width, 0.0);
        Self {
            inputs,
            outputs,
            panels,
            tail_width,
            bias: padded_bias,
        }
    }

    fn padded_outputs(&self) -> usize {
        self.bias.len()
    }

    /// The full panels, then the last one (with its width), each with its first column.
    fn full_panels(&self) -> impl Iterator<Item = (&[f32], usize)> {
        self.panels
            .chunks_exact(self.inputs * PANEL)
            .take(self.outputs / PANEL)
            .enumerate()
            .map(|(index, panel)| (panel, index * PANEL))
    }

    fn tail_panel(&self) -> Option<(&[f32], usize)> {
        let start = self.outputs / PANEL * PANEL;
        (self.tail_width > 0).then(|| (&self.panels[start * self.inputs..], start))
    }
}

/// `[…, K]` → `[…, N]`: the 1×1 convolution with bias and activation.
#[derive(Debug, Clone, Copy)]
pub struct Pointwise1x1<'a> {
    pub weights: &'a PackedPointwise,
    pub activation: Activation,
}

// The second operand, when given, is added after the bias and activation (a linear
// bottleneck's skip connection): `activation(x·W + b) + residual`.
super::kernels::ops_with_optional_residual!(Pointwise1x1, "pointwise1x1-nhwc");

impl Pointwise1x1<'_> {
    fn run(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
        residual: Option<&[f32]>,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let input = super::kernels::contiguous_f32(storage, layout, "pointwise1x1-nhwc")?;
        let mut dims = layout.dims().to_vec();
        if dims.last() != Some(&self.weights.inputs) {
            candle_core::bail!(
                "1×1 convolution takes {} channels, input is {dims:?}",
                self.weights.inputs
            );
        }
        let rows = input.len() / self.weights.inputs.max(1);
        if residual.is_some_and(|residual| residual.len() != rows * self.weights.outputs) {
            candle_core::bail!("the skip connection is not of the 1×1 convolution's output shape");
        }
        let mut output = Vec::with_capacity(rows * self.weights.outputs);
        self.append_rows(input, residual, &mut output);
        if let Some(last) = dims.last_mut() {
            *last = self.weights.outputs;
        }
        Ok((CpuStorage::F32(output), Shape::from(dims)))
    }

    /// Appends the outputs of `input`'s rows (`[rows, K]`) to `output`; `residual`, when
    /// given, is the whole skip-connection tensor, read from `output.len()` on.
    pub(super) fn append_rows(&self, input: &[f32], residual: Option<&[f32]>, output: &mut Vec<f32>) {
        pulp::Arch::new().dispatch(Run {
            input,
            weights: self.weights,
            activation: self.activation,
            residual,
            output,
        });
    }

    pub(super) fn inputs(&self) -> usize {
        self.weights.inputs
    }

    pub(super) fn outputs(&self) -> usize {
        self.weights.outputs
    }
}

struct Run<'a> {
    input: &'a [f32],
    weights: &'a PackedPointwise,
    activation: Activation,
    /// `[rows, N]`, added to the output after the activation.
    residual: Option<&'a [f32]>,
    output: &'a mut Vec<f32>,
}

impl pulp::WithSimd for Run<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        // Rows per tile so that the sums (rows × 32 / lanes vectors) fill most of the
        // vector registers: 16 of 32 zmm, 8 of 16 ymm.
        match S::F32_LANES {
            16 => self.rows::<S, 8>(simd),
            8 => self.rows::<S, 2>(simd),
            _ => self.plain(),
        }
    }
}

impl Run<'_> {
    #[inline(always)]
    fn rows<S: Simd, const ROWS: usize>(mut self, simd: S) {
        let inputs = self.weights.inputs;
        let outputs = self.weights.outputs;
        let padded = self.weights.padded_outputs();
        let mut tile = vec![0f32; ROWS * padded];
        let mut blocks = self.input.chunks_exact(ROWS * inputs);
        for block in &mut blocks {
            self.block::<S, ROWS>(simd, block, &mut tile);
            for row in tile.chunks_exact(padded) {
                self.append(&row[..outputs]);
            }
        }
        // The rows left over in tiles of 4, 2, then 1.
        let mut rest = blocks.remainder();
        while !rest.is_empty() {
            let rows = rest.len() / inputs;
            let taken = if rows >= 4 {
                self.block::<S, 4>(simd, &rest[..4 * inputs], &mut tile);
                4
            } else if rows >= 2 {
                self.block::<S, 2>(simd, &rest[..2 * inputs], &mut tile);
                2
            } else {
                self.block::<S, 1>(simd, &rest[..inputs], &mut tile);
                1
            };
            for row in tile.chunks_exact(padded).take(taken) {
                self.append(&row[..outputs]);
            }
            rest = &rest[taken * inputs..];
        }
    }

    /// `ROWS` rows of output, every panel, into `tile` (rows `padded_outputs` apart).
    #[inline(always)]
    fn block<S: Simd, const ROWS: usize>(&self, simd: S, block: &[f32], tile: &mut [f32]) {
        let (bias, stride) = (&self.weights.bias, self.weights.padded_outputs());
        let narrow = self.weights.tail_width == NARROW_PANEL;
        let wide_tail = self.weights.tail_panel().filter(|_| !narrow);
        for (panel, column) in self.weights.full_panels().chain(wide_tail) {
            let (bias, tile) = (&bias[column..], &mut tile[column..]);
            tile_sums::<S, ROWS, PANEL>(simd, block, panel, bias, self.activation, tile, stride);
        }
        if let Some((panel, column)) = self.weights.tail_panel().filter(|_| narrow) {
            let (bias, tile) = (&bias[column..], &mut tile[column..]);
            tile_sums::<S, ROWS, NARROW_PANEL>(simd, block, panel, bias, self.activation, tile, stride);
        }
    }

    /// Appends one finished output row, plus its skip connection when there is one.
    #[inline(always)]
    fn append(&mut self, row: &[f32]) {
        match self.residual {
            Some(residual) => {
                let start = self.output.len();
                let skip = &residual[start..start + row.len()];
                self.output
                    .extend(row.iter().zip(skip).map(|(value, skip)| value + skip));
            }
            None => self.output.extend_from_slice(row),
        }
    }

    /// Machines without AVX2: one output at a time.
    fn plain(self) {
        let (inputs, outputs) = (self.weights.inputs, self.weights.outputs);
        let panels: Vec<(&[f32], usize, usize)> = self
            .weights
            .full_panels()
            .map(|(panel, column)| (panel, column, PANEL))
            .chain(
                self.weights
                    .tail_panel()
                    .map(|(panel, column)| (panel, column, self.weights.tail_width)),
            )
            .collect();
        for row in self.input.chunks_exact(inputs) {
            for output in 0..outputs {
                let Some(&(panel, column, width)) = panels.iter().find(|(_, column, width)| output < column + width)
                else {
                    continue;
                };
                let lane = output - column;
                let sum: f32 = row
                    .iter()
                    .zip(panel.chunks_exact(width))
                    .map(|(x, w)| x * w[lane])
                    .sum();
                let value = self.activation.apply(sum + self.weights.bias[output]);
                let skip = self.residual.map_or(0.0, |residual| residual[self.output.len()]);
                self.output.push(value + skip);
            }
        }
    }
}

/// `WIDTH` columns of `ROWS` rows of output into `tile` (its first column is the panel's,
/// rows `stride` values apart): the sums over K in registers, then bias and activation.
#[inline(always)]
fn tile_sums<S: Simd, const ROWS: usize, const WIDTH: usize>(
    simd: S,
    block: &[f32],
    panel: &[f32],
    bias: &[f32],
    activation: Activation,
    tile: &mut [f32],
    stride: usize,
) {
    /// Vectors per panel row at the narrowest level used (AVX2).
    const MAX_VECTORS: usize = PANEL / 8;
    let vectors = WIDTH / S::F32_LANES;
    let inputs = block.len() / ROWS;
    let rows: [&[f32]; ROWS] = std::array::from_fn(|row| &block[row * inputs..(row + 1) * inputs]);
    let mut sums = [[simd.splat_f32s(0.0); MAX_VECTORS]; ROWS];
    for (input, weights) in panel.chunks_exact(WIDTH).take(inputs).enumerate() {
        let (weights, _) = S::as_simd_f32s(weights);
        for (row, sums) in rows.iter().zip(sums.iter_mut()) {
            let x = simd.splat_f32s(row[input]);
            for (sum, &weight) in sums.iter_mut().zip(weights).take(vectors) {
                *sum = simd.mul_add_e_f32s(x, weight, *sum);
            }
        }
    }
    let (bias, _) = S::as_simd_f32s(&bias[..WIDTH]);
    for (row, sums) in sums.iter().enumerate() {
        let (out, _) = S::as_mut_simd_f32s(&mut tile[row * stride..row * stride + WIDTH]);
        for ((out, &sum), &bias) in out.iter_mut().zip(sums).zip(bias) {
            *out = activation.apply_simd(simd, simd.add_f32s(sum, bias));
        }
    }
}
