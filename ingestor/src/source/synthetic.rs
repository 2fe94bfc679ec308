//! A deterministic test pattern, drawn with OpenCV.

use crate::source::frame_source::{FrameSource, ReadOutcome, SourceError, SourceInfo, opencv_error};
use crate::source::spec::check_dimensions;
use opencv::core::{self, Mat, Point, Rect, Scalar};
use opencv::imgproc;
use opencv::prelude::*;

/// A deterministic test pattern: frame `n` is always the same picture, with `n` written in it,
/// so a load test can check what arrived.
pub struct SyntheticSource {
    info: SourceInfo,
    frame_number: u64,
    /// See [`SourceSpec::Synthetic`]'s `crash_after`.
    pub(super) crash_after: Option<u64>,
}

impl SyntheticSource {
    pub fn new(width: u32, height: u32, fps: f64) -> Result<Self, SourceError> {
        check_dimensions(width, height).map_err(|reason| SourceError::InvalidUri {
            uri: format!("synthetic://{width}x{height}"),
            reason: reason.to_string(),
        })?;
        Ok(Self {
            info: SourceInfo { width, height, fps },
            frame_number: 0,
            crash_after: None,
        })
    }

    pub fn draw(&self, number: u64, frame: &mut Mat) -> opencv::Result<()> {
        let width = i32::try_from(self.info.width).unwrap_or(i32::MAX);
        let height = i32::try_from(self.info.height).unwrap_or(i32::MAX);
        if frame.rows() != height || frame.cols() != width || frame.typ() != core::CV_8UC3 {
            *frame = Mat::new_rows_cols_with_default(height, width, core::CV_8UC3, Scalar::all(0.0))?;
        }
        let shade = |step: u64| ((number.wrapping_mul(step)) % 256) as f64;
        frame.set_scalar(Scalar::new(shade(3), shade(5), shade(7), 0.0))?;
        // A moving block, so consecutive frames differ in content and not only in colour.
        let side = (height / 6).max(4).min(width);
        let travel = i64::from((width - side).max(1));
        let x = i32::try_from((number as i64 * 8) % travel).unwrap_or(0);
        imgproc::rectangle(
            frame,
            Rect::new(x, height / 2 - side / 2, side, side),
            Scalar::new(255.0, 255.0, 255.0, 0.0),
            imgproc::FILLED,
            imgproc::LINE_8,
            0,
        )?;
        let scale = f64::from(height) / 240.0;
        imgproc::put_text(
            frame,
            &format!("#{number}"),
            Point::new(width / 20, height / 4),
            imgproc::FONT_HERSHEY_SIMPLEX,
            scale,
            Scalar::new(255.0, 255.0, 255.0, 0.0),
            (height / 120).max(1),
            imgproc::LINE_8,
            false,
        )
    }
}

impl FrameSource for SyntheticSource {
    fn info(&self) -> SourceInfo {
        self.info
    }

    fn read(&mut self, frame: &mut Mat) -> Result<ReadOutcome, SourceError> {
        if self.crash_after == Some(self.frame_number) {
            tracing::error!(
                frame = self.frame_number,
                "crash_after reached: aborting this process (fault injection)"
            );
            std::process::abort();
        }
        self.draw(self.frame_number, frame)
            .map_err(opencv_error("synthetic://"))?;
        self.frame_number += 1;
        Ok(ReadOutcome::Frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_synthetic_pattern_is_deterministic_and_changes_every_frame() {
        let source = SyntheticSource::new(160, 120, 25.0).expect("source");
        let draw = |number| {
            let mut frame = Mat::default();
            source.draw(number, &mut frame).expect("draw");
            frame.data_bytes().expect("bytes").to_vec()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        assert_eq!(draw(7).len(), 160 * 120 * 3);
    }
}
