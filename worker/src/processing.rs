//! What each channel's frames go through. The analysis (luma statistics, motion) runs on
//! every frame unless the channel turns it off (`analysis = false`: a detect-only channel,
//! whose frames are decoded once, for the detector; a frame its detector skips is checked
//! without a decode — payload, schema, a raw frame's length — so damage inside its
//! compressed image goes unseen); the detect stage runs the worker's model
//! on a channel's frames when the channel has one, with its own score threshold, label
//! filter, cap, every-Nth-frame rate and motion gate (Frigate's design: the detector is
//! skipped where nothing moved; such frames are marked `gated` in their result and counted,
//! never dropped). The gate needs the analysis.
//!
//! The worker's flags give every channel's defaults; `--processing FILE` (TOML) may replace
//! them and set channels apart:
//!
//! ```toml
//! [defaults]                # every channel not listed below
//! detect = { min_score = 0.5, motion_gate = true }
//!
//! [channels.lobby]          # analysis only
//!
//! [channels.gate]
//! detect = { min_score = 0.4, labels = ["person"], every_nth_frame = 5, motion_gate = false }
//!
//! [channels.door]           # detection only, on every frame
//! analysis = false
//! detect = { motion_gate = false }
//! ```
//!
//! A channel entry replaces the defaults whole (an entry without `detect` has no detect
//! stage); settings left out of a `detect` table take the built-in defaults below.

use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

/// The detect stage of a channel.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectStage {
    /// Detections scoring below this (0–1) are left out of results.
    pub min_score: f32,
    /// Only these labels are kept (empty: every label of the model).
    pub labels: Vec<String>,
    /// At most this many detections per frame, best first.
    pub max_detections: usize,
    /// The detector runs on frames whose sequence number is a multiple of this (1: every
    /// frame); the others carry the analysis only.
    pub every_nth_frame: u64,
    /// Skip the detector on frames in which the analysis saw no motion.
    pub motion_gate: bool,
}

impl Default for DetectStage {
    fn default() -> Self {
        Self {
            min_score: 0.5,
            labels: Vec::new(),
            max_detections: 100,
            every_nth_frame: 1,
            motion_gate: true,
        }
    }
}

impl DetectStage {
    /// Refuses settings that would make the stage meaningless.
    pub fn validate(&self, context: &str) -> anyhow::Result<()> {
        if !(0.0..=1.0).contains(&self.min_score) {
            anyhow::bail!("{context}: min_score must be in [0, 1], got {}", self.min_score);
        }
        if self.every_nth_frame == 0 {
            anyhow::bail!("{context}: every_nth_frame must be at least 1");
        }
        if self.max_detections == 0 {
            anyhow::bail!("{context}: max_detections must be at least 1");
        }
        Ok(())
    }

    /// Whether the detector should run on frame `sequence` given whether it moved; `Err` says
    /// why not (`Skip::Gated` or `Skip::NotThisFrame`).
    pub fn decide(&self, sequence: u64, moved: bool) -> Result<(), Skip> {
        if !sequence.is_multiple_of(self.every_nth_frame) {
            return Err(Skip::NotThisFrame);
        }
        if self.motion_gate && !moved {
            return Err(Skip::Gated);
        }
        Ok(())
    }
}

/// Why the detector did not run on a frame of a channel that has a detect stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// The motion gate: no motion in the frame.
    Gated,
    /// The every-Nth-frame rate.
    NotThisFrame,
}

/// A channel's stages.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelProcessing {
    /// The luma analysis (statistics, motion); on unless set to false.
    #[serde(default = "analysis_on")]
    pub analysis: bool,
    pub detect: Option<DetectStage>,
}

fn analysis_on() -> bool {
    true
}

impl Default for ChannelProcessing {
    fn default() -> Self {
        Self {
            analysis: true,
            detect: None,
        }
    }
}

impl ChannelProcessing {
    /// Refuses a channel with no stage, and a motion gate without the analysis it reads.
    pub fn validate(&self, context: &str) -> anyhow::Result<()> {
        match &self.detect {
            Some(stage) => {
                stage.validate(&format!("{context}.detect"))?;
                if stage.motion_gate && !self.analysis {
                    anyhow::bail!(
                        "{context}: the detect stage's motion gate needs the analysis; set motion_gate = false (--motion-gate false) or keep the analysis"
                    );
                }
            }
            None if !self.analysis => {
                anyhow::bail!("{context}: no stage left (analysis = false and no detect stage)")
            }
            None => {}
        }
        Ok(())
    }
}

/// Every channel's processing: defaults and per-channel entries.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessingConfig {
    #[serde(default)]
    pub defaults: ChannelProcessing,
    #[serde(default)]
    pub channels: HashMap<String, ChannelProcessing>,
}

/// The file's shape: `defaults` optional, so a file listing channels only keeps the flags'.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProcessingFile {
    defaults: Option<ChannelProcessing>,
    #[serde(default)]
    channels: HashMap<String, ChannelProcessing>,
}

impl ProcessingConfig {
    /// The flags' defaults, with `file` (when given) read over them.
    ///
    /// Errors: the file cannot be read, is not TOML of this shape (unknown keys included), or
    /// a stage's settings are out of range.
    pub fn load(defaults: ChannelProcessing, file: Option<&Path>) -> anyhow::Result<Self> {
        let mut config = Self {
            defaults,
            channels: HashMap::new(),
        };
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|error| anyhow::anyhow!("cannot read --processing file {}: {error}", path.display()))?;
            let parsed: ProcessingFile = toml::from_str(&text)
                .map_err(|error| anyhow::anyhow!("--processing file {}: {error}", path.display()))?;
            if let Some(defaults) = parsed.defaults {
                config.defaults = defaults;
            }
            config.channels = parsed.channels;
        }
        config.defaults.validate("defaults")?;
        for (channel, processing) in &config.channels {
            processing.validate(&format!("channels.{channel}"))?;
        }
        Ok(config)
    }

    pub fn for_channel(&self, channel_id: &str) -> &ChannelProcessing {
        self.channels.get(channel_id).unwrap_or(&self.defaults)
    }

    /// Whether any channel may need the detector (the worker then needs `--model`).
    pub fn uses_detector(&self) -> bool {
        self.defaults.detect.is_some() || self.channels.values().any(|channel| channel.detect.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TOML file under the system temp directory, removed when dropped.
    struct TempFile(std::path::PathBuf);

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn write(text: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!("processing-{}.toml", uuid::Uuid::new_v4()));
        std::fs::write(&path, text).expect("temp file");
        TempFile(path)
    }

    #[test]
    fn a_file_replaces_defaults_and_sets_channels_apart() {
        let file = write(
            r#"
            [defaults]
            detect = { min_score = 0.4 }
            [channels.lobby]
            [channels.gate]
            detect = { every_nth_frame = 5, motion_gate = false, labels = ["person"] }
            "#,
        );
        let config = ProcessingConfig::load(ChannelProcessing::default(), Some(&file.0)).expect("valid");
        assert_eq!(
            config.for_channel("street").detect.as_ref().map(|d| d.min_score),
            Some(0.4)
        );
        assert_eq!(config.for_channel("lobby").detect, None);
        let gate = config.for_channel("gate").detect.clone().expect("gate detects");
        assert_eq!(
            (gate.every_nth_frame, gate.motion_gate, gate.min_score),
            (5, false, 0.5)
        );
        assert!(config.uses_detector());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_with_the_place() {
        let typo = write("[defaults]\ndetect = { min_scor = 0.4 }\n");
        let error = ProcessingConfig::load(ChannelProcessing::default(), Some(&typo.0)).expect_err("typo");
        assert!(error.to_string().contains("min_scor"), "{error}");
        let zero = write("[channels.cam]\ndetect = { every_nth_frame = 0 }\n");
        let error = ProcessingConfig::load(ChannelProcessing::default(), Some(&zero.0)).expect_err("zero");
        assert!(error.to_string().contains("channels.cam.detect"), "{error}");
    }

    #[test]
    fn a_channel_may_drop_the_analysis_but_not_every_stage_nor_the_gate_it_feeds() {
        let file = write("[channels.door]\nanalysis = false\ndetect = { motion_gate = false }\n");
        let config = ProcessingConfig::load(ChannelProcessing::default(), Some(&file.0)).expect("valid");
        assert!(!config.for_channel("door").analysis);
        assert!(config.for_channel("street").analysis, "analysis is on by default");
        let gated = write("[channels.door]\nanalysis = false\ndetect = {}\n");
        let error = ProcessingConfig::load(ChannelProcessing::default(), Some(&gated.0)).expect_err("gate");
        assert!(
            error
                .to_string()
                .contains("channels.door: the detect stage's motion gate"),
            "{error}"
        );
        let empty = write("[channels.door]\nanalysis = false\n");
        let error = ProcessingConfig::load(ChannelProcessing::default(), Some(&empty.0)).expect_err("no stage");
        assert!(error.to_string().contains("no stage left"), "{error}");
    }

    #[test]
    fn the_gate_and_the_rate_decide_in_that_order() {
        let stage = DetectStage {
            every_nth_frame: 2,
            ..DetectStage::default()
        };
        assert_eq!(stage.decide(0, true), Ok(()));
        assert_eq!(stage.decide(1, true), Err(Skip::NotThisFrame));
        assert_eq!(stage.decide(2, false), Err(Skip::Gated));
        let ungated = DetectStage {
            motion_gate: false,
            ..DetectStage::default()
        };
        assert_eq!(ungated.decide(7, false), Ok(()));
    }
}
