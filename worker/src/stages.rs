//! What a worker does with each frame and where the results go: from its flags (a worker that
//! serves no pipeline), or from one version of the pipeline it serves (`--pipeline`), as the
//! coordinator stores it. A batch carries the stages it was computed with to its results, so
//! a new version that takes over while a batch is computed never mixes two versions in that
//! batch's records.

use crate::processing::{ChannelProcessing, DetectStage, ProcessingConfig};
use framefleet_proto::v1::PipelineVersion;
use std::collections::HashMap;

/// A worker's stages and outputs.
#[derive(Debug, Clone, PartialEq)]
pub struct Stages {
    pub processing: ProcessingConfig,
    pub results_topic: String,
    /// Results with at least one detection also go here.
    pub events_topic: Option<String>,
    /// The pipeline version these stages are; `None` for a worker serving no pipeline.
    pub pipeline: Option<ServedVersion>,
}

/// A pipeline and the version of it a worker runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedVersion {
    pub name: String,
    pub version: u32,
}

impl std::fmt::Display for ServedVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.name, self.version)
    }
}

/// Why a worker cannot run a pipeline version.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("pipeline `{pipeline}` version {version} has no spec")]
    NoSpec { pipeline: String, version: u32 },
    #[error(
        "pipeline `{pipeline}` version {version} runs model `{wanted}`, but this worker {}",
        match loaded {
            Some(loaded) => format!("loaded model `{loaded}` (--model)"),
            None => "has no model (pass --model DIR with that model)".to_owned(),
        }
    )]
    ModelMismatch {
        pipeline: String,
        version: u32,
        wanted: String,
        loaded: Option<String>,
    },
    #[error("pipeline `{pipeline}` version {version}: {reason}")]
    Unrunnable {
        pipeline: String,
        version: u32,
        reason: String,
    },
}

impl Stages {
    /// The stages of `version` for a worker whose detector (if any) is `loaded_model`, the
    /// model's name. Every channel that names the pipeline gets the same stages.
    ///
    /// Errors: the version has no spec, names a model other than the loaded one, or holds
    /// settings this worker cannot run (the coordinator checked them; an older coordinator
    /// or a hand-edited etcd key might not have).
    pub fn from_pipeline(version: &PipelineVersion, loaded_model: Option<&str>) -> Result<Self, PipelineError> {
        let pipeline = version.name.clone();
        let number = version.version;
        let spec = version.spec.as_ref().ok_or_else(|| PipelineError::NoSpec {
            pipeline: pipeline.clone(),
            version: number,
        })?;
        let detect = match &spec.detect {
            Some(detect) => {
                if loaded_model != Some(detect.model.as_str()) {
                    return Err(PipelineError::ModelMismatch {
                        pipeline,
                        version: number,
                        wanted: detect.model.clone(),
                        loaded: loaded_model.map(str::to_owned),
                    });
                }
                let defaults = DetectStage::default();
                Some(DetectStage {
                    min_score: detect.min_score.unwrap_or(defaults.min_score),
                    labels: detect.labels.clone(),
                    max_detections: match detect.max_detections {
                        0 => defaults.max_detections,
                        n => usize::try_from(n).unwrap_or(usize::MAX),
                    },
                    every_nth_frame: u64::from(detect.every_nth_frame.max(1)),
                    motion_gate: detect.motion_gate.unwrap_or(spec.analysis),
                })
            }
            None => None,
        };
        let defaults = ChannelProcessing {
            analysis: spec.analysis,
            detect,
        };
        defaults.validate("spec").map_err(|error| PipelineError::Unrunnable {
            pipeline: pipeline.clone(),
            version: number,
            reason: format!("{error:#}"),
        })?;
        if spec.results_topic.is_empty() {
            return Err(PipelineError::Unrunnable {
                pipeline,
                version: number,
                reason: "no results topic".to_owned(),
            });
        }
        Ok(Self {
            processing: ProcessingConfig {
                defaults,
                channels: HashMap::new(),
            },
            results_topic: spec.results_topic.clone(),
            events_topic: Some(spec.events_topic.clone()).filter(|topic| !topic.is_empty()),
            pipeline: Some(ServedVersion {
                name: pipeline,
                version: number,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use framefleet_proto::v1::{DetectStage as ProtoDetect, PipelineSpec};

    fn version(detect: Option<ProtoDetect>, analysis: bool) -> PipelineVersion {
        PipelineVersion {
            name: "people".into(),
            version: 3,
            spec: Some(PipelineSpec {
                analysis,
                detect,
                results_topic: "framefleet.results.people".into(),
                events_topic: String::new(),
            }),
            ..PipelineVersion::default()
        }
    }

    #[test]
    fn a_stored_version_becomes_the_stages_of_every_channel() {
        let detect = ProtoDetect {
            model: "ssdlite".into(),
            min_score: Some(0.4),
            labels: vec!["person".into()],
            max_detections: 0,
            every_nth_frame: 5,
            motion_gate: Some(false),
        };
        let stages = Stages::from_pipeline(&version(Some(detect), true), Some("ssdlite")).expect("stages");
        let stage = stages.processing.for_channel("any").detect.clone().expect("detect");
        assert_eq!(stage.min_score, 0.4);
        assert_eq!(stage.every_nth_frame, 5);
        assert_eq!(stage.max_detections, 100, "0 takes the default");
        assert!(!stage.motion_gate);
        assert_eq!(stages.results_topic, "framefleet.results.people");
        assert_eq!(stages.events_topic, None);
        assert_eq!(
            stages.pipeline.map(|served| served.to_string()).as_deref(),
            Some("people@3")
        );
    }

    #[test]
    fn a_version_whose_model_this_worker_lacks_is_refused_naming_both() {
        let detect = ProtoDetect {
            model: "yolo".into(),
            ..ProtoDetect::default()
        };
        let error = Stages::from_pipeline(&version(Some(detect.clone()), true), Some("ssdlite")).expect_err("mismatch");
        let message = error.to_string();
        assert!(message.contains("`yolo`") && message.contains("`ssdlite`"), "{message}");
        let error = Stages::from_pipeline(&version(Some(detect), true), None).expect_err("no model");
        assert!(error.to_string().contains("--model"), "{error}");
        let error = Stages::from_pipeline(&version(None, false), None).expect_err("no stage");
        assert!(error.to_string().contains("no stage"), "{error}");
    }
}
