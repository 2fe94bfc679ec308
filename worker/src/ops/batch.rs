//! What the analysis takes and gives: its settings, the staged frames of a batch with their
//! channels, and each frame's scores and motion box.

use super::staging::StagedLuma;
use framefleet_proto::wire::{FrameScores, MotionBox};

/// How a frame is analysed; the same for every frame a worker processes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AnalysisSettings {
    /// Frames are area-downscaled by an integer factor until their longer side is at most
    /// this (0: analyse at full size). Blur, edges and motion then run on far fewer pixels.
    pub max_side: usize,
    /// Luma difference (0–255) from the background that counts a pixel as moving.
    pub motion_threshold: f32,
    /// Weight of each new frame in the running-average background, 0–1.
    pub background_rate: f32,
}

impl Default for AnalysisSettings {
    fn default() -> Self {
        Self {
            max_side: 480,
            motion_threshold: 25.0,
            background_rate: 0.05,
        }
    }
}

/// A frame ready for analysis: its luma at the analysis size and where that came from.
#[derive(Debug, Clone, PartialEq)]
pub struct StagedFrame {
    /// The frame's size as encoded, in pixels.
    pub full_size: (usize, usize),
    /// Full size ÷ analysis size (integer, ≥ 1).
    pub factor: usize,
    pub luma: StagedLuma,
}

/// One frame to analyse and the channel it belongs to (whose background model it uses).
#[derive(Debug, Clone, Copy)]
pub struct FrameInput<'a> {
    pub channel_id: &'a str,
    pub frame: &'a StagedFrame,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameAnalysis {
    pub scores: FrameScores,
    /// The box around every moving pixel, in full-frame pixel coordinates.
    pub motion_box: Option<MotionBox>,
}
