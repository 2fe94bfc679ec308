//! A 3×3 depthwise convolution and the 1×1 convolution after it as one CPU operation: each
//! output row of the depthwise kernel goes through the 1×1 kernel while it is still in
//! cache, so the depthwise output — in an inverted residual six times wider than the block's
//! output — never goes to memory and back. Every inverted residual, extra stage and
//! predictor of SSDLite-MobileNetV2 ends this way.

use super::kernels::{Depthwise3x3, contiguous_f32};
use super::pointwise::Pointwise1x1;
use candle_core::{CpuStorage, Layout, Shape};

/// Depthwise output pixels handed to the 1×1 kernel at once, at least.
const PIXELS_PER_FLUSH: usize = 32;

/// The 1×1 convolution after a depthwise one, fed a depthwise output row at a time: rows of a
/// small map are gathered until there are enough pixels for the 1×1 kernel's 8-row tiles to
/// run full; a wide row goes through at once.
struct ProjectedRows<'a> {
    pointwise: Pointwise1x1<'a>,
    /// The skip connection, the whole output's worth.
    residual: Option<&'a [f32]>,
    /// Depthwise output values of the rows gathered so far.
    pending: Vec<f32>,
    flush_at: usize,
    output: Vec<f32>,
}

impl<'a> ProjectedRows<'a> {
    /// For depthwise rows of `row_len` values of `channels` each and an output of `length`.
    fn new(
        pointwise: Pointwise1x1<'a>,
        residual: Option<&'a [f32]>,
        channels: usize,
        row_len: usize,
        length: usize,
    ) -> Self {
        let flush_at = PIXELS_PER_FLUSH * channels;
        Self {
            pointwise,
            residual,
            pending: Vec::with_capacity(flush_at + row_len),
            flush_at,
            output: Vec::with_capacity(length),
        }
    }

    fn push(&mut self, row: &[f32]) {
        if self.pending.is_empty() && row.len() >= self.flush_at {
            self.pointwise.append_rows(row, self.residual, &mut self.output);
            return;
        }
        self.pending.extend_from_slice(row);
        if self.pending.len() >= self.flush_at {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if !self.pending.is_empty() {
            self.pointwise
                .append_rows(&self.pending, self.residual, &mut self.output);
            self.pending.clear();
        }
    }

    /// Every row's output, in order.
    fn finish(mut self) -> Vec<f32> {
        self.flush();
        self.output
    }
}

/// `[N, H, W, C]` → `[N, ceil(H/s), ceil(W/s), C_out]`: `pointwise(depthwise(x))`, plus a
/// skip connection of the output's shape when applied as a [`candle_core::CustomOp2`].
#[derive(Debug, Clone, Copy)]
pub struct DepthwisePointwise<'a> {
    pub depthwise: Depthwise3x3<'a>,
    pub pointwise: Pointwise1x1<'a>,
}

impl DepthwisePointwise<'_> {
    fn run(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
        residual: Option<&[f32]>,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let input = contiguous_f32(storage, layout, "depthwise-pointwise")?;
        let (batch, height, width, channels) = layout.shape().dims4()?;
        if self.pointwise.inputs() != channels {
            candle_core::bail!(
                "1×1 convolution takes {} channels, the depthwise layer gives {channels}",
                self.pointwise.inputs()
            );
        }
        let geometry = self.depthwise.geometry(height, width, channels)?;
        let outputs = self.pointwise.outputs();
        let length = batch * geometry.out_height * geometry.out_width * outputs;
        if residual.is_some_and(|residual| residual.len() != length) {
            candle_core::bail!("the skip connection is not of the output's shape");
        }
        let mut projected = ProjectedRows::new(
            self.pointwise,
            residual,
            channels,
            geometry.out_width * channels,
            length,
        );
        self.depthwise
            .for_each_row(input, batch, &geometry, |row| projected.push(row));
        Ok((
            CpuStorage::F32(projected.finish()),
            Shape::from((batch, geometry.out_height, geometry.out_width, outputs)),
        ))
    }
}

super::kernels::ops_with_optional_residual!(DepthwisePointwise, "depthwise3x3-pointwise-nhwc");

/// A whole inverted residual on the CPU: 1×1 expansion, depthwise 3×3, 1×1 projection and,
/// with `residual`, the skip connection from the block's input. The expanded rows are
/// computed as the depthwise kernel first needs them and kept in a ring of three, so neither
/// the expanded tensor (the block's largest) nor the depthwise output ever reaches memory.
#[derive(Debug, Clone, Copy)]
pub struct InvertedResidual<'a> {
    pub expand: Pointwise1x1<'a>,
    pub depthwise: Depthwise3x3<'a>,
    pub project: Pointwise1x1<'a>,
    /// Add the block's input to its output (same shape).
    pub residual: bool,
}

impl candle_core::CustomOp1 for InvertedResidual<'_> {
    fn name(&self) -> &'static str {
        "inverted-residual-nhwc"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let input = contiguous_f32(storage, layout, self.name())?;
        let (batch, height, width, channels) = layout.shape().dims4()?;
        let expanded = self.expand.outputs();
        if self.expand.inputs() != channels || self.project.inputs() != expanded {
            candle_core::bail!(
                "inverted residual of {}→{}→{} channels on an input of {channels}",
                self.expand.inputs(),
                expanded,
                self.project.outputs()
            );
        }
        let geometry = self.depthwise.geometry(height, width, expanded)?;
        let outputs = self.project.outputs();
        let length = batch * geometry.out_height * geometry.out_width * outputs;
        if self.residual && input.len() != length {
            candle_core::bail!("a skip connection needs the block's input and output of one shape");
        }
        let filtered_len = geometry.out_width * expanded;
        let mut projected = ProjectedRows::new(
            self.project,
            self.residual.then_some(input),
            expanded,
            filtered_len,
            length,
        );
        let mut filtered = vec![0f32; filtered_len];
        // (input row, its expansion) of the rows the depthwise kernel reads now.
        let mut ring: [(Option<usize>, Vec<f32>); 3] =
            std::array::from_fn(|_| (None, Vec::with_capacity(width * expanded)));
        let row_len = width * channels;
        for picture in input.chunks_exact((height * row_len).max(1)).take(batch) {
            for slot in &mut ring {
                slot.0 = None;
            }
            for out_y in 0..geometry.out_height {
                let needed = geometry.input_rows(out_y);
                for y in needed.into_iter().flatten() {
                    if ring.iter().any(|(row, _)| *row == Some(y)) {
                        continue;
                    }
                    let Some(slot) = ring
                        .iter_mut()
                        .find(|(row, _)| !row.is_some_and(|row| needed.contains(&Some(row))))
                    else {
                        candle_core::bail!("inverted residual: no free row in the ring");
                    };
                    slot.1.clear();
                    self.expand
                        .append_rows(&picture[y * row_len..(y + 1) * row_len], None, &mut slot.1);
                    slot.0 = Some(y);
                }
                let rows = needed.map(|y| {
                    y.and_then(|y| ring.iter().find(|(row, _)| *row == Some(y)))
                        .map(|(_, values)| values.as_slice())
                });
                self.depthwise.row(&geometry, rows, &mut filtered);
                projected.push(&filtered);
            }
        }
        Ok((
            CpuStorage::F32(projected.finish()),
            Shape::from((batch, geometry.out_height, geometry.out_width, outputs)),
        ))
    }
}
