//! The stored form of models. Records are JSON in etcd; field names are part of the etcd
//! format: rename with care.
//!
//! Keys: `models/<name>` holds the model's newest version (one read answers "what would a new
//! pipeline version run"); `model-versions/<name>/<version>` holds every version, the newest
//! included, written in the same transaction. The weights are not in etcd (its values are
//! limited to 1.5 MiB): the records say where in Kafka they are.

use crate::channels::record::{decode, encode};
use crate::error::CoordinatorError;
use crate::store::StoredValue;
use framefleet_proto::v1::ModelVersion;
use serde::{Deserialize, Serialize};

pub const MODEL_KEY_PREFIX: &str = "models/";
pub const MODEL_VERSION_KEY_PREFIX: &str = "model-versions/";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRecord {
    pub name: String,
    pub version: u32,
    pub sha256: String,
    pub size_bytes: u64,
    pub architecture: String,
    pub manifest_json: String,
    pub location: ChunkLocation,
    pub created_unix_ms: i64,
    #[serde(default)]
    pub description: String,
}

/// Where a model's weights are in Kafka: one partition, chunks at these offsets in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkLocation {
    pub topic: String,
    pub partition: i32,
    pub offsets: Vec<i64>,
}

impl ModelRecord {
    pub fn to_proto(&self) -> ModelVersion {
        ModelVersion {
            name: self.name.clone(),
            version: self.version,
            sha256: self.sha256.clone(),
            size_bytes: self.size_bytes,
            architecture: self.architecture.clone(),
            manifest_json: self.manifest_json.clone(),
            topic: self.location.topic.clone(),
            partition: self.location.partition,
            chunk_offsets: self.location.offsets.clone(),
            created_unix_ms: self.created_unix_ms,
            description: self.description.clone(),
        }
    }

    pub fn encode(&self, key: &str) -> Result<Vec<u8>, CoordinatorError> {
        encode(key, self)
    }
}

pub fn model_key(name: &str) -> String {
    format!("{MODEL_KEY_PREFIX}{name}")
}

/// Versions are zero-padded so etcd lists them in version order.
pub fn version_key(name: &str, version: u32) -> String {
    format!("{MODEL_VERSION_KEY_PREFIX}{name}/{version:010}")
}

pub fn version_prefix(name: &str) -> String {
    format!("{MODEL_VERSION_KEY_PREFIX}{name}/")
}

pub fn decode_model(stored: &StoredValue) -> Result<ModelRecord, CoordinatorError> {
    decode(stored)
}
