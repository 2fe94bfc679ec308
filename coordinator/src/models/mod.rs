//! The model registry: converted detectors that the fleet ships to its workers. A model's
//! manifest and the place of its weights are stored in etcd, versioned like pipelines; the
//! weights themselves go to a Kafka topic of the fleet's own ([`ModelBytes`]), because etcd
//! refuses values over 1.5 MiB and every worker already reads Kafka. The weights are checked
//! against the manifest's SHA-256 before anything is stored, and stored before the version is
//! registered, so a registered version's bytes are always there.

pub mod record;
pub mod validate;

use crate::error::CoordinatorError;
use crate::store::{CommitOutcome, Condition, MetadataStore, Write};
use framefleet_proto::v1::ModelVersion;
use record::{ChunkLocation, MODEL_KEY_PREFIX, ModelRecord, decode_model, model_key, version_key, version_prefix};
use sha2::{Digest, Sha256};
use std::future::Future;

/// Reads and writes race other coordinators; a write that lost a race is decided again on
/// fresh data this many times at most.
const MAX_WRITE_ATTEMPTS: usize = 8;

/// Where model weights are kept.
pub trait ModelBytes: Send + Sync + 'static {
    /// Stores `weights` (whose SHA-256 is `sha256`) and says where they are.
    ///
    /// Errors: KafkaUnavailable when the broker does not acknowledge every chunk.
    fn store(
        &self,
        sha256: &str,
        weights: &[u8],
    ) -> impl Future<Output = Result<ChunkLocation, CoordinatorError>> + Send;
}

pub struct ModelRegistry<S, B> {
    store: S,
    bytes: B,
}

/// A model version as pushed.
pub struct PushedModel<'a> {
    pub name: &'a str,
    pub manifest_json: &'a str,
    pub description: &'a str,
    pub weights: &'a [u8],
}

impl<S: MetadataStore, B: ModelBytes> ModelRegistry<S, B> {
    pub fn new(store: S, bytes: B) -> Self {
        Self { store, bytes }
    }

    /// Registers the model's next version (or its first); `false` when the weights and manifest
    /// are the newest version's (nothing is stored).
    ///
    /// Errors: INVALID_ARGUMENT naming the field (a bad name or manifest, no weights, weights
    /// whose SHA-256 is not the manifest's); KafkaUnavailable when the weights cannot be stored.
    pub async fn push(&self, pushed: &PushedModel<'_>) -> Result<(ModelVersion, bool), CoordinatorError> {
        let name = pushed.name;
        validate::name("header.name", name)?;
        validate::description(pushed.description)?;
        let facts = validate::manifest(name, pushed.manifest_json)?;
        if pushed.weights.is_empty() {
            return Err(CoordinatorError::invalid("chunk", "no weights were sent"));
        }
        let actual = sha256_hex(pushed.weights);
        if actual != facts.sha256 {
            return Err(CoordinatorError::invalid(
                "chunk",
                format!(
                    "the weights' SHA-256 is {actual}, but the manifest says {}: they are not the weights it describes, or they were damaged on the way",
                    facts.sha256
                ),
            ));
        }
        let same_as =
            |record: &ModelRecord| record.sha256 == facts.sha256 && record.manifest_json == pushed.manifest_json;
        let key = model_key(name);
        if let Some(stored) = self.store.get(&key).await? {
            let current = decode_model(&stored)?;
            if same_as(&current) {
                return Ok((current.to_proto(), false));
            }
        }
        // Before the version exists: no reader may find a version whose bytes are missing.
        let location = self.bytes.store(&facts.sha256, pushed.weights).await?;
        for _ in 0..MAX_WRITE_ATTEMPTS {
            let current = match self.store.get(&key).await? {
                Some(stored) => Some((decode_model(&stored)?, stored.mod_revision)),
                None => None,
            };
            if let Some((current, _)) = &current
                && same_as(current)
            {
                // Another push of the same model won the race.
                return Ok((current.to_proto(), false));
            }
            let record = ModelRecord {
                name: name.to_owned(),
                version: current
                    .as_ref()
                    .map_or(1, |(record, _)| record.version.saturating_add(1)),
                sha256: facts.sha256.clone(),
                size_bytes: pushed.weights.len() as u64,
                architecture: facts.architecture.clone(),
                manifest_json: pushed.manifest_json.to_owned(),
                location: location.clone(),
                created_unix_ms: framefleet_common::startup::unix_time_ms(),
                description: pushed.description.to_owned(),
            };
            let new_version_key = version_key(name, record.version);
            let conditions = vec![
                Condition::Absent(new_version_key.clone()),
                match &current {
                    Some((_, revision)) => Condition::ModifiedAt(key.clone(), *revision),
                    None => Condition::Absent(key.clone()),
                },
            ];
            let writes = vec![
                Write::Put(key.clone(), record.encode(&key)?),
                Write::Put(new_version_key.clone(), record.encode(&new_version_key)?),
            ];
            match self.store.commit(conditions, writes).await? {
                CommitOutcome::Committed { .. } => {
                    tracing::info!(model = %name, version = record.version, sha256 = %record.sha256, bytes = record.size_bytes, "model version registered");
                    return Ok((record.to_proto(), true));
                }
                CommitOutcome::Conflict => continue,
            }
        }
        Err(CoordinatorError::FailedPrecondition(format!(
            "model `{name}` kept changing; gave up after {MAX_WRITE_ATTEMPTS} attempts"
        )))
    }

    /// One version of a model; version 0 is the newest.
    pub async fn get(&self, name: &str, version: u32) -> Result<ModelVersion, CoordinatorError> {
        validate::name("name", name)?;
        registered_version(&self.store, name, version)
            .await?
            .map(|record| record.to_proto())
            .ok_or_else(|| CoordinatorError::NotFound {
                kind: if version == 0 { "model" } else { "model version" },
                id: if version == 0 {
                    name.to_owned()
                } else {
                    format!("{name}@{version}")
                },
            })
    }

    /// Every model whose name starts with `name_prefix` (its newest version), in name order.
    pub async fn list(&self, name_prefix: &str) -> Result<Vec<ModelVersion>, CoordinatorError> {
        validate::name_prefix(name_prefix)?;
        self.store
            .list(&format!("{MODEL_KEY_PREFIX}{name_prefix}"))
            .await?
            .iter()
            .map(|stored| Ok(decode_model(stored)?.to_proto()))
            .collect()
    }

    /// Every version of a model, oldest first.
    pub async fn list_versions(&self, name: &str) -> Result<Vec<ModelVersion>, CoordinatorError> {
        self.get(name, 0).await?;
        self.store
            .list(&version_prefix(name))
            .await?
            .iter()
            .map(|stored| Ok(decode_model(stored)?.to_proto()))
            .collect()
    }
}

/// Version `version` of model `name` (0: the newest), or `None` when the model or that version
/// is not registered. The pipeline registry resolves a detect stage's model with it.
pub async fn registered_version<S: MetadataStore>(
    store: &S,
    name: &str,
    version: u32,
) -> Result<Option<ModelRecord>, CoordinatorError> {
    let key = if version == 0 {
        model_key(name)
    } else {
        version_key(name, version)
    };
    store.get(&key).await?.map(|stored| decode_model(&stored)).transpose()
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests;
