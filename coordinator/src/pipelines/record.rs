//! The stored form of pipelines. Records are JSON in etcd (`etcdctl get` is readable); field
//! names are part of the etcd format: rename with care.
//!
//! Keys: `pipelines/<name>` holds the pipeline with its current version (one read answers
//! "what runs now"); `pipeline-versions/<name>/<version>` holds every version, the current one
//! included, written in the same transaction.

use crate::channels::record::{decode, encode};
use crate::error::CoordinatorError;
use crate::store::StoredValue;
use framefleet_proto::v1::{DetectStage, Pipeline, PipelineSpec, PipelineVersion};
use serde::{Deserialize, Serialize};

pub const PIPELINE_KEY_PREFIX: &str = "pipelines/";
pub const PIPELINE_VERSION_KEY_PREFIX: &str = "pipeline-versions/";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineRecord {
    pub name: String,
    pub current: VersionRecord,
    pub created_unix_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionRecord {
    pub version: u32,
    pub spec: SpecRecord,
    pub created_unix_ms: i64,
    #[serde(default)]
    pub description: String,
}

/// A pipeline's stages and outputs with every default filled in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecRecord {
    pub analysis: bool,
    pub detect: Option<DetectRecord>,
    pub results_topic: String,
    #[serde(default)]
    pub events_topic: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectRecord {
    pub model: String,
    pub min_score: f32,
    #[serde(default)]
    pub labels: Vec<String>,
    pub max_detections: u32,
    pub every_nth_frame: u32,
    pub motion_gate: bool,
    /// The registered model version this pipeline version runs; 0 only in records written
    /// before models were registered (workers then run the model's newest version).
    #[serde(default)]
    pub model_version: u32,
    /// That version's weights' SHA-256; empty with `model_version` 0.
    #[serde(default)]
    pub model_sha256: String,
}

impl PipelineRecord {
    pub fn to_proto(&self, revision: i64) -> Pipeline {
        Pipeline {
            name: self.name.clone(),
            current: Some(self.current.to_proto(&self.name)),
            revision,
            created_unix_ms: self.created_unix_ms,
        }
    }

    pub fn encode(&self) -> Result<Vec<u8>, CoordinatorError> {
        encode(&pipeline_key(&self.name), self)
    }
}

impl VersionRecord {
    pub fn to_proto(&self, name: &str) -> PipelineVersion {
        PipelineVersion {
            name: name.to_owned(),
            version: self.version,
            spec: Some(self.spec.to_proto()),
            created_unix_ms: self.created_unix_ms,
            description: self.description.clone(),
        }
    }
}

impl SpecRecord {
    pub fn to_proto(&self) -> PipelineSpec {
        PipelineSpec {
            analysis: self.analysis,
            detect: self.detect.as_ref().map(|detect| DetectStage {
                model: detect.model.clone(),
                min_score: Some(detect.min_score),
                labels: detect.labels.clone(),
                max_detections: detect.max_detections,
                every_nth_frame: detect.every_nth_frame,
                motion_gate: Some(detect.motion_gate),
                model_version: detect.model_version,
                model_sha256: detect.model_sha256.clone(),
            }),
            results_topic: self.results_topic.clone(),
            events_topic: self.events_topic.clone(),
        }
    }
}

pub fn pipeline_key(name: &str) -> String {
    format!("{PIPELINE_KEY_PREFIX}{name}")
}

/// Versions are zero-padded so etcd lists them in version order.
pub fn version_key(name: &str, version: u32) -> String {
    format!("{PIPELINE_VERSION_KEY_PREFIX}{name}/{version:010}")
}

pub fn version_prefix(name: &str) -> String {
    format!("{PIPELINE_VERSION_KEY_PREFIX}{name}/")
}

pub fn decode_pipeline(stored: &StoredValue) -> Result<PipelineRecord, CoordinatorError> {
    decode(stored)
}

pub fn decode_version(stored: &StoredValue) -> Result<VersionRecord, CoordinatorError> {
    decode(stored)
}
