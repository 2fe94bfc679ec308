//! Motion: each channel's running-average background (OpenCV's `accumulateWeighted`), the
//! mask of pixels that differ from it (`absdiff` + `threshold`), the moving fraction and the
//! box around the moving pixels. A channel's frames depend on each other through the
//! background, so they are analysed in stream order; different channels are independent.

use super::batch::AnalysisSettings;
use super::staging::LumaPlane;
use candle_core::Tensor;
use framefleet_proto::wire::MotionBox;
use std::collections::HashMap;

/// The background model of every channel seen. A channel's model starts from its first frame
/// (so that frame shows no motion) and restarts when the channel's analysis size changes.
/// On the CPU the models are host planes; on a GPU they stay on the device between batches.
#[derive(Debug, Default)]
pub struct MotionState {
    pub(super) host: HashMap<String, LumaPlane>,
    pub(super) device: HashMap<String, Tensor>,
}

impl MotionState {
    pub fn channels(&self) -> usize {
        self.host.len() + self.device.len()
    }

    pub fn forget(&mut self, channel_id: &str) {
        self.host.remove(channel_id);
        self.device.remove(channel_id);
    }
}

/// The motion a frame shows against its channel's background.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Movement {
    /// Fraction of analysis pixels that moved, 0–1.
    pub fraction: f32,
    /// The box around every moving pixel, in full-frame pixel coordinates.
    pub motion_box: Option<MotionBox>,
}

/// Compares `blurred` (one frame's blurred luma) with `background` and updates the
/// background in place: background ← (1 − rate)·background + rate·blurred. A missing
/// background, or one of another size, is replaced by this frame (no motion).
pub fn detect_on_host(
    background: &mut Option<LumaPlane>,
    blurred: &LumaPlane,
    factor: usize,
    full_size: (usize, usize),
    settings: &AnalysisSettings,
) -> Movement {
    let model = match background {
        Some(model) if (model.width, model.height) == (blurred.width, blurred.height) => model,
        _ => {
            *background = Some(blurred.clone());
            return Movement {
                fraction: 0.0,
                motion_box: None,
            };
        }
    };
    // Compiled per instruction-set level like the filters (see `super::filters`).
    pulp::Arch::new().dispatch(CompareAndUpdate {
        model,
        blurred,
        factor,
        full_size,
        settings,
    })
}

/// [`compare_and_update`] as a pulp operation (a struct, not a closure: see
/// `super::filters::AnalysePlane`).
struct CompareAndUpdate<'a> {
    model: &'a mut LumaPlane,
    blurred: &'a LumaPlane,
    factor: usize,
    full_size: (usize, usize),
    settings: &'a AnalysisSettings,
}

impl pulp::WithSimd for CompareAndUpdate<'_> {
    type Output = Movement;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) -> Movement {
        compare_and_update(self.model, self.blurred, self.factor, self.full_size, self.settings)
    }
}

#[inline(always)]
fn compare_and_update(
    model: &mut LumaPlane,
    blurred: &LumaPlane,
    factor: usize,
    full_size: (usize, usize),
    settings: &AnalysisSettings,
) -> Movement {
    let width = blurred.width;
    let (keep, rate) = (1.0 - settings.background_rate, settings.background_rate);
    let mut moving_columns = vec![0_u8; width];
    let mut moving_rows = vec![0_u8; blurred.height];
    let mut moving = 0_usize;
    // Two simple loops over the row, so each one vectorises: the comparison with its integer
    // count and column profile (integer sums may be reordered, so they fold into the loop),
    // then the background update.
    for ((current, model_row), row_moves) in blurred
        .values
        .chunks_exact(width)
        .zip(model.values.chunks_exact_mut(width))
        .zip(moving_rows.iter_mut())
    {
        let mut row_moving = 0_u32;
        for ((column_moves, &value), &model_value) in moving_columns.iter_mut().zip(current).zip(model_row.iter()) {
            let moved = u8::from((value - model_value).abs() >= settings.motion_threshold);
            *column_moves |= moved;
            row_moving += u32::from(moved);
        }
        for (model_value, &value) in model_row.iter_mut().zip(current) {
            *model_value = *model_value * keep + value * rate;
        }
        *row_moves = u8::from(row_moving > 0);
        moving += row_moving as usize;
    }
    Movement {
        fraction: moving as f32 / blurred.values.len() as f32,
        motion_box: motion_box_from_profiles(&moving_columns, &moving_rows, factor, full_size),
    }
}

/// The box spanned by the first and last moving column and row at analysis size, scaled
/// back to full-frame pixels.
pub(super) fn motion_box_from_profiles(
    columns: &[u8],
    rows: &[u8],
    factor: usize,
    (width, height): (usize, usize),
) -> Option<MotionBox> {
    let span = |profile: &[u8]| {
        let first = profile.iter().position(|&moving| moving != 0)?;
        let last = profile.iter().rposition(|&moving| moving != 0)?;
        Some((first * factor, (last + 1) * factor))
    };
    let (left, right) = span(columns)?;
    let (top, bottom) = span(rows)?;
    let to_u32 = |value: usize| u32::try_from(value).unwrap_or(u32::MAX);
    Some(MotionBox {
        x: to_u32(left),
        y: to_u32(top),
        width: to_u32(right.min(width) - left),
        height: to_u32(bottom.min(height) - top),
    })
}
