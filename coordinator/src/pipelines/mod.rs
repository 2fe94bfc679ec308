//! The pipeline registry: what the workers serving a pipeline do with each frame (its stages)
//! and where its results go, stored in etcd and versioned like frame schemas. A new version is
//! written with the pipeline's record in one transaction, conditional on the record being
//! unchanged since it was read, so two coordinators adding versions at once cannot both
//! write version N.

pub mod record;
pub mod validate;

use crate::channels::record::encode;
use crate::channels::validate::colliding_topic;
use crate::error::{CoordinatorError, check_revision};
use crate::store::{CommitOutcome, Condition, MetadataStore, Write};
use framefleet_proto::v1::{Pipeline, PipelineSpec, PipelineVersion};
use record::{
    DetectRecord, PIPELINE_KEY_PREFIX, PipelineRecord, SpecRecord, VersionRecord, decode_pipeline, decode_version,
    pipeline_key, version_key, version_prefix,
};

/// Reads and writes race other coordinators; a write that lost a race is decided again on
/// fresh data this many times at most.
const MAX_WRITE_ATTEMPTS: usize = 8;

pub struct PipelineRegistry<S> {
    store: S,
    /// Topics the fleet writes itself, which no pipeline may take.
    reserved_topics: Vec<String>,
}

/// A version to add to a pipeline (or its first).
pub struct NewVersion<'a> {
    pub name: &'a str,
    pub spec: Option<&'a PipelineSpec>,
    /// 0: whatever the pipeline's revision is.
    pub expected_revision: i64,
    pub description: &'a str,
}

impl<S: MetadataStore> PipelineRegistry<S> {
    /// `reserved_topics`: the fleet's own topics (default results, dead letters, models).
    pub fn new(store: S, reserved_topics: Vec<String>) -> Self {
        Self { store, reserved_topics }
    }

    /// Creates the pipeline at version 1 or adds its next version; `false` when the spec is
    /// the current version's (nothing is written).
    ///
    /// Errors: INVALID_ARGUMENT naming the field; FAILED_PRECONDITION when `expected_revision`
    /// is not the pipeline's (or the pipeline does not exist yet and it is not 0).
    pub async fn create_version(&self, request: &NewVersion<'_>) -> Result<(Pipeline, bool), CoordinatorError> {
        validate::name(request.name)?;
        crate::channels::validate::expected_revision(request.expected_revision)?;
        validate::description(request.description)?;
        let mut spec = validate::spec(request.name, request.spec)?;
        let name = request.name;
        let key = pipeline_key(name);
        if let Some(detect) = &mut spec.detect {
            self.resolve_model(detect).await?;
        }
        let existing = self
            .store
            .get(&key)
            .await?
            .map(|stored| decode_pipeline(&stored))
            .transpose()?;
        self.refuse_reserved_topics(&spec, existing.as_ref().map(|record| &record.current.spec))?;
        self.refuse_colliding_topics(name, &spec).await?;
        for _ in 0..MAX_WRITE_ATTEMPTS {
            let stored = self.store.get(&key).await?;
            let current = match &stored {
                Some(stored) => {
                    check_revision("pipeline", name, request.expected_revision, stored.mod_revision)?;
                    let record = decode_pipeline(stored)?;
                    if record.current.spec == spec {
                        return Ok((record.to_proto(stored.mod_revision), false));
                    }
                    // Readers of the results (and `audit --pipeline`) find them in one place,
                    // whichever version made them.
                    if record.current.spec.results_topic != spec.results_topic {
                        return Err(CoordinatorError::invalid(
                            "spec.results_topic",
                            format!(
                                "pipeline `{name}` writes its results to `{}`; a new version keeps that topic (create a pipeline of another name for another topic)",
                                record.current.spec.results_topic
                            ),
                        ));
                    }
                    Some((record, stored.mod_revision))
                }
                None if request.expected_revision != 0 => {
                    return Err(CoordinatorError::FailedPrecondition(format!(
                        "pipeline `{name}` does not exist, so it has no revision {}; pass 0 to create it",
                        request.expected_revision
                    )));
                }
                None => None,
            };
            let now = framefleet_common::startup::unix_time_ms();
            let version = VersionRecord {
                version: current
                    .as_ref()
                    .map_or(1, |(record, _)| record.current.version.saturating_add(1)),
                spec: spec.clone(),
                created_unix_ms: now,
                description: request.description.to_owned(),
            };
            let record = PipelineRecord {
                name: name.to_owned(),
                current: version.clone(),
                created_unix_ms: current.as_ref().map_or(now, |(record, _)| record.created_unix_ms),
            };
            let new_version_key = version_key(name, version.version);
            let mut conditions = vec![Condition::Absent(new_version_key.clone())];
            conditions.push(match &current {
                Some((_, revision)) => Condition::ModifiedAt(key.clone(), *revision),
                None => Condition::Absent(key.clone()),
            });
            let writes = vec![
                Write::Put(key.clone(), record.encode()?),
                Write::Put(new_version_key.clone(), encode(&new_version_key, &version)?),
            ];
            match self.store.commit(conditions, writes).await? {
                CommitOutcome::Committed { revision } => {
                    tracing::info!(pipeline = %name, version = version.version, "pipeline version added");
                    return Ok((record.to_proto(revision), true));
                }
                CommitOutcome::Conflict if request.expected_revision != 0 => {
                    return Err(CoordinatorError::FailedPrecondition(format!(
                        "pipeline `{name}` changed since revision {}; read it again",
                        request.expected_revision
                    )));
                }
                // Another coordinator wrote the pipeline between our read and write: decide
                // again on what it wrote.
                CommitOutcome::Conflict => continue,
            }
        }
        Err(CoordinatorError::FailedPrecondition(format!(
            "pipeline `{name}` kept changing; gave up after {MAX_WRITE_ATTEMPTS} attempts"
        )))
    }

    /// Pins the detect stage to a registered model version: the one it names, or the model's
    /// newest. A new model version then runs only once a pipeline version names it.
    ///
    /// Errors: FAILED_PRECONDITION when the model or version is not registered;
    /// INVALID_ARGUMENT when `model_sha256` is given and is not that version's.
    async fn resolve_model(&self, detect: &mut DetectRecord) -> Result<(), CoordinatorError> {
        let Some(model) = crate::models::registered_version(&self.store, &detect.model, detect.model_version).await?
        else {
            let what = match detect.model_version {
                0 => format!("model `{}`", detect.model),
                version => format!("model `{}` version {version}", detect.model),
            };
            return Err(CoordinatorError::FailedPrecondition(format!(
                "`spec.detect.model`: {what} is not registered; push it first (`framefleet models push {} MODEL_DIR`)",
                detect.model
            )));
        };
        if !detect.model_sha256.is_empty() && detect.model_sha256 != model.sha256 {
            return Err(CoordinatorError::invalid(
                "spec.detect.model_sha256",
                format!(
                    "model `{}` version {} has SHA-256 {}, not {}",
                    model.name, model.version, model.sha256, detect.model_sha256
                ),
            ));
        }
        detect.model_version = model.version;
        detect.model_sha256 = model.sha256;
        Ok(())
    }

    /// The fleet's own topics (results and dead letters of workers serving no pipeline, model
    /// weights) are no pipeline's: INVALID_ARGUMENT naming the field. A topic the pipeline's
    /// current version already writes (a pipeline created before the check) stays allowed, so
    /// the pipeline can still get new versions.
    fn refuse_reserved_topics(&self, spec: &SpecRecord, current: Option<&SpecRecord>) -> Result<(), CoordinatorError> {
        let kept = |topic: &str| current.is_some_and(|current| spec_topics(current).contains(&topic));
        for (field, topic) in [
            ("spec.results_topic", &spec.results_topic),
            ("spec.events_topic", &spec.events_topic),
        ] {
            if kept(topic) {
                continue;
            }
            if let Some((_, reserved)) = colliding_topic(
                &[topic.as_str()],
                self.reserved_topics.iter().map(String::as_str),
                |_, _| false,
            ) {
                return Err(CoordinatorError::invalid(
                    field,
                    format!("`{topic}` is the fleet's own topic `{reserved}` (Kafka treats `.` and `_` alike)"),
                ));
            }
        }
        Ok(())
    }

    /// A pipeline's results and events topics are its own: one that another pipeline's current
    /// version writes to, or that Kafka would take for it (`.` and `_` alike), is refused with
    /// ALREADY_EXISTS naming that pipeline. Checked before anything is written.
    async fn refuse_colliding_topics(&self, name: &str, spec: &SpecRecord) -> Result<(), CoordinatorError> {
        let own = spec_topics(spec);
        for stored in self.store.list(PIPELINE_KEY_PREFIX).await? {
            let other = decode_pipeline(&stored)?;
            if other.name == name {
                continue;
            }
            if let Some((topic, existing)) = colliding_topic(&own, spec_topics(&other.current.spec), |_, _| false) {
                return Err(CoordinatorError::DerivedTopicCollision {
                    owner: format!("pipeline `{name}`"),
                    topic: topic.to_owned(),
                    existing_owner: format!("pipeline `{}`", other.name),
                    existing_topic: existing.to_owned(),
                });
            }
        }
        Ok(())
    }

    /// One version of a pipeline; version 0 is the current one.
    pub async fn get(&self, name: &str, version: u32) -> Result<PipelineVersion, CoordinatorError> {
        let (record, _) = self.get_record(name).await?;
        if version == 0 || version == record.current.version {
            return Ok(record.current.to_proto(name));
        }
        match self.store.get(&version_key(name, version)).await? {
            Some(stored) => Ok(decode_version(&stored)?.to_proto(name)),
            None => Err(CoordinatorError::NotFound {
                kind: "pipeline version",
                id: format!("{name}@{version}"),
            }),
        }
    }

    /// Every pipeline whose name starts with `name_prefix`, in name order.
    pub async fn list(&self, name_prefix: &str) -> Result<Vec<Pipeline>, CoordinatorError> {
        validate::name_prefix(name_prefix)?;
        self.store
            .list(&format!("{PIPELINE_KEY_PREFIX}{name_prefix}"))
            .await?
            .iter()
            .map(|stored| Ok(decode_pipeline(stored)?.to_proto(stored.mod_revision)))
            .collect()
    }

    /// Every version of a pipeline, oldest first.
    pub async fn list_versions(&self, name: &str) -> Result<Vec<PipelineVersion>, CoordinatorError> {
        self.get_record(name).await?;
        self.store
            .list(&version_prefix(name))
            .await?
            .iter()
            .map(|stored| Ok(decode_version(stored)?.to_proto(name)))
            .collect()
    }

    async fn get_record(&self, name: &str) -> Result<(PipelineRecord, i64), CoordinatorError> {
        validate::name(name)?;
        let stored = self
            .store
            .get(&pipeline_key(name))
            .await?
            .ok_or_else(|| CoordinatorError::NotFound {
                kind: "pipeline",
                id: name.to_owned(),
            })?;
        Ok((decode_pipeline(&stored)?, stored.mod_revision))
    }
}

/// The topics a pipeline version writes to.
fn spec_topics(spec: &SpecRecord) -> Vec<&str> {
    [spec.results_topic.as_str(), spec.events_topic.as_str()]
        .into_iter()
        .filter(|topic| !topic.is_empty())
        .collect()
}

#[cfg(test)]
mod tests;
