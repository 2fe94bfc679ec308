//! What a worker does with each frame and where the results go: from its flags (a worker that
//! serves no pipeline), or from one version of the pipeline it serves (`--pipeline`), as the
//! coordinator stores it. A batch carries the stages it was computed with to its results, so
//! a new version that takes over while a batch is computed never mixes two versions in that
//! batch's records.

use crate::processing::{ChannelProcessing, DetectStage, ProcessingConfig};
use framefleet_detect::{Detector, ModelManifest};
use framefleet_proto::v1::PipelineVersion;
use std::collections::HashMap;
use std::sync::Arc;

/// A worker's stages and outputs.
#[derive(Debug, Clone)]
pub struct Stages {
    pub processing: ProcessingConfig,
    pub results_topic: String,
    /// Results with at least one detection also go here.
    pub events_topic: Option<String>,
    /// The pipeline version these stages are; `None` for a worker serving no pipeline.
    pub pipeline: Option<ServedVersion>,
    /// The detect stages' model, loaded and checked.
    pub detector: Option<Arc<Detector>>,
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
            Some(loaded) => format!("loaded `{loaded}` (--model)"),
            None => "has no model".to_owned(),
        }
    )]
    ModelMismatch {
        pipeline: String,
        version: u32,
        /// `name@version (sha256 …)` as the pipeline version names it.
        wanted: String,
        /// `name (sha256 …)` of the loaded model.
        loaded: Option<String>,
    },
    /// The model the version names cannot be fetched or does not load (boxed: it is large).
    #[error(transparent)]
    Model(Box<crate::fleet_models::ModelFetchError>),
    #[error("pipeline `{pipeline}` version {version}: {reason}")]
    Unrunnable {
        pipeline: String,
        version: u32,
        reason: String,
    },
}

impl PipelineError {
    /// Whether trying again later may succeed (the model could not be fetched this time).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Model(error) if error.is_transient())
    }
}

impl From<crate::fleet_models::ModelFetchError> for PipelineError {
    fn from(error: crate::fleet_models::ModelFetchError) -> Self {
        Self::Model(Box::new(error))
    }
}

impl Stages {
    /// The stages of `version` for a worker whose detector (if any) is `detector`. Every
    /// channel that names the pipeline gets the same stages.
    ///
    /// Errors: the version has no spec, names a model other than the detector's (by name, and
    /// by SHA-256 where the version pins one), or holds settings this worker cannot run (the
    /// coordinator checked them; an older coordinator or a hand-edited etcd key might not have).
    pub fn from_pipeline(version: &PipelineVersion, detector: Option<Arc<Detector>>) -> Result<Self, PipelineError> {
        let mut stages = Self::without_detector(version, detector.as_ref().map(|detector| detector.manifest()))?;
        if stages.processing.uses_detector() {
            stages.detector = detector;
        }
        Ok(stages)
    }

    /// [`Self::from_pipeline`] for a worker whose model has `loaded` as its manifest; the
    /// stages hold no detector yet.
    fn without_detector(version: &PipelineVersion, loaded: Option<&ModelManifest>) -> Result<Self, PipelineError> {
        let pipeline = version.name.clone();
        let number = version.version;
        let spec = version.spec.as_ref().ok_or_else(|| PipelineError::NoSpec {
            pipeline: pipeline.clone(),
            version: number,
        })?;
        let detect = match &spec.detect {
            Some(detect) => {
                let runs_it = loaded.is_some_and(|manifest| {
                    manifest.name == detect.model
                        && (detect.model_sha256.is_empty()
                            || manifest.sha256.eq_ignore_ascii_case(&detect.model_sha256))
                });
                if !runs_it {
                    return Err(PipelineError::ModelMismatch {
                        pipeline,
                        version: number,
                        wanted: match detect.model_version {
                            0 => detect.model.clone(),
                            model_version => {
                                format!("{}@{model_version} (sha256 {})", detect.model, detect.model_sha256)
                            }
                        },
                        loaded: loaded.map(|manifest| format!("{} (sha256 {})", manifest.name, manifest.sha256)),
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
            detector: None,
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

    fn manifest(name: &str, sha256: &str) -> ModelManifest {
        ModelManifest {
            format_version: 1,
            name: name.into(),
            architecture: "ssdlite_mobilenet_v2".into(),
            input_size: [320, 320],
            labels: vec!["person".into()],
            weights: "model.safetensors".into(),
            sha256: sha256.into(),
            source: framefleet_detect::manifest::ModelSource {
                package: "p".into(),
                file: "f".into(),
                sha256: "0".into(),
            },
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
            model_version: 2,
            model_sha256: "aa".repeat(32),
        };
        let loaded = manifest("ssdlite", &"AA".repeat(32));
        let stages = Stages::without_detector(&version(Some(detect), true), Some(&loaded)).expect("stages");
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
        let ssdlite = manifest("ssdlite", &"aa".repeat(32));
        let error =
            Stages::without_detector(&version(Some(detect.clone()), true), Some(&ssdlite)).expect_err("mismatch");
        let message = error.to_string();
        assert!(message.contains("`yolo`") && message.contains("`ssdlite"), "{message}");
        let error = Stages::without_detector(&version(Some(detect), true), None).expect_err("no model");
        assert!(error.to_string().contains("has no model"), "{error}");
        let error = Stages::without_detector(&version(None, false), None).expect_err("no stage");
        assert!(error.to_string().contains("no stage"), "{error}");
    }

    #[test]
    fn the_same_model_name_with_other_weights_is_refused() {
        let detect = ProtoDetect {
            model: "ssdlite".into(),
            model_version: 2,
            model_sha256: "bb".repeat(32),
            ..ProtoDetect::default()
        };
        let other_weights = manifest("ssdlite", &"aa".repeat(32));
        let error =
            Stages::without_detector(&version(Some(detect), true), Some(&other_weights)).expect_err("sha differs");
        let message = error.to_string();
        assert!(
            message.contains("ssdlite@2") && message.contains(&"bb".repeat(32)),
            "{message}"
        );
    }
}
