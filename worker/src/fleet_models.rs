//! Models shipped by the fleet: a worker serving a pipeline whose version names a registered
//! model fetches that model version's weights from Kafka (where the coordinator put them, see
//! `framefleet_common::kafka::model_chunks`), checks them against the registered SHA-256 and
//! keeps them with the registered manifest in a cache directory ([`cache_entry_name`]), so a
//! restart or a second pipeline version with the same model fetches nothing. Workers on one
//! host may share the cache. Nothing but the registered weights and manifest is ever run: a
//! damaged fetch is refused, and a cache entry that is not exactly them is fetched again.

use framefleet_common::kafka::KafkaConnection;
use framefleet_common::kafka::model_chunks::{ChunkReadError, read_chunks};
use framefleet_detect::Detector;
use framefleet_detect::manifest::{MANIFEST_FILE, ModelManifest, sha256_hex};
use framefleet_proto::client::{CallError, CoordinatorChannel};
use framefleet_proto::v1::model_service_client::ModelServiceClient;
use framefleet_proto::v1::{GetModelRequest, ModelVersion, PipelineVersion};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Why a worker cannot run a registered model version.
#[derive(Debug, thiserror::Error)]
pub enum ModelFetchError {
    #[error("model `{name}` version {version} is not registered at the coordinator")]
    NotRegistered { name: String, version: u32 },
    #[error("the cache entry {} is not model `{name}` version {version} as registered", entry.display())]
    StaleCacheEntry { name: String, version: u32, entry: PathBuf },
    #[error(transparent)]
    Coordinator(#[from] CallError),
    #[error(transparent)]
    Chunks(#[from] ChunkReadError),
    #[error(
        "the weights of model `{name}` version {version} read from Kafka have SHA-256 {actual} ({size} bytes), not the registered {expected}; they are not run"
    )]
    Checksum {
        name: String,
        version: u32,
        expected: String,
        actual: String,
        size: usize,
    },
    #[error("the registered manifest of model `{name}` version {version} is unusable: {reason}")]
    Manifest { name: String, version: u32, reason: String },
    #[error("cannot write the model cache at {path}: {source}")]
    Cache {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("model `{name}` version {version} does not load on this worker: {source}")]
    Load {
        name: String,
        version: u32,
        #[source]
        source: framefleet_detect::DetectError,
    },
    #[error("loading model `{name}` version {version} panicked")]
    Panicked { name: String, version: u32 },
}

impl ModelFetchError {
    /// Whether fetching again later may succeed: the coordinator or the broker did not answer,
    /// or the cache could not be written; not so for bytes or a manifest that are wrong, or a
    /// model that does not load.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Coordinator(error) => error.is_transient(),
            Self::Chunks(ChunkReadError::Kafka { .. } | ChunkReadError::Timeout { .. }) | Self::Cache { .. } => true,
            _ => false,
        }
    }
}

/// Fetches and loads registered models.
pub(crate) struct FleetModels {
    pub client: ModelServiceClient<CoordinatorChannel>,
    pub kafka: KafkaConnection,
    pub cache_dir: PathBuf,
    /// How long reading one model's chunks from Kafka may take.
    pub fetch_timeout: Duration,
}

impl FleetModels {
    /// The registered model version `record` loaded onto `device` (its registered `manifest`):
    /// from the cache when the entry is exactly it, else fetched from Kafka first.
    ///
    /// Errors: see [`ModelFetchError`]; the worker keeps what it runs on any of them.
    async fn load(
        &self,
        record: &ModelVersion,
        manifest: &ModelManifest,
        device: &candle_core::Device,
    ) -> Result<Arc<Detector>, ModelFetchError> {
        let name = &record.name;
        let dir = self.cache_dir.join(cache_entry_name(record));
        if dir.join(MANIFEST_FILE).exists() {
            match load_checked(&dir, record, manifest, device).await {
                Ok(detector) => {
                    tracing::info!(model = %name, version = record.version, cache = %dir.display(), "model loaded from the cache");
                    return Ok(detector);
                }
                // A damaged or foreign cache entry is fetched again; a model that does not
                // load from its registered bytes would not load after a fetch either.
                Err(
                    ModelFetchError::Load {
                        source:
                            framefleet_detect::DetectError::Checksum { .. }
                            | framefleet_detect::DetectError::Io { .. }
                            | framefleet_detect::DetectError::Manifest { .. },
                        ..
                    }
                    | ModelFetchError::StaleCacheEntry { .. },
                ) => {
                    tracing::warn!(model = %name, cache = %dir.display(), "the cached model is not the registered bytes; fetching it again");
                }
                Err(error) => return Err(error),
            }
        }
        let started = std::time::Instant::now();
        let weights = self.fetch(record).await?;
        write_cache_entry(&self.cache_dir, record, manifest, &weights)?;
        tracing::info!(model = %name, version = record.version, bytes = weights.len(), chunks = record.chunk_offsets.len(), elapsed_ms = started.elapsed().as_millis() as u64, "model fetched from Kafka");
        load_checked(&dir, record, manifest, device).await
    }

    /// The detector `version` of a pipeline runs on this worker: none without a detect stage;
    /// the `--model` one (`local`) when the worker has one ([`crate::stages::Stages::from_pipeline`]
    /// then checks that it is the model the version names); the `running` one when it is the
    /// same model version; else the registered model version, fetched and loaded.
    ///
    /// Errors: see [`ModelFetchError`].
    pub async fn detector_for(
        &mut self,
        version: &PipelineVersion,
        local: Option<&Arc<Detector>>,
        running: Option<&Arc<Detector>>,
        device: &candle_core::Device,
    ) -> Result<Option<Arc<Detector>>, ModelFetchError> {
        let Some(detect) = version.spec.as_ref().and_then(|spec| spec.detect.as_ref()) else {
            return Ok(None);
        };
        if let Some(local) = local {
            return Ok(Some(Arc::clone(local)));
        }
        let record = self.registered(&detect.model, detect.model_version).await?;
        let manifest = registered_manifest(&record)?;
        // The same registered manifest (and so the same weights, by their SHA-256): the model
        // loaded is this version's.
        if let Some(running) = running
            && running.manifest() == &manifest
        {
            return Ok(Some(Arc::clone(running)));
        }
        self.load(&record, &manifest, device).await.map(Some)
    }

    async fn registered(&mut self, name: &str, version: u32) -> Result<ModelVersion, ModelFetchError> {
        let request = GetModelRequest {
            name: name.to_owned(),
            version,
        };
        match self.client.get_model(request).await {
            Ok(record) => Ok(record.into_inner()),
            Err(status) => {
                let error = CallError::new(format!("reading model `{name}`"), status);
                if error.is_not_found() {
                    return Err(ModelFetchError::NotRegistered {
                        name: name.to_owned(),
                        version,
                    });
                }
                Err(error.into())
            }
        }
    }

    /// The registered weights, read from Kafka and checked against the registered SHA-256.
    async fn fetch(&self, record: &ModelVersion) -> Result<Vec<u8>, ModelFetchError> {
        let (kafka, record_for_read, timeout) = (self.kafka.clone(), record.clone(), self.fetch_timeout);
        let weights = tokio::task::spawn_blocking(move || {
            read_chunks(
                &kafka,
                &record_for_read.topic,
                record_for_read.partition,
                &record_for_read.chunk_offsets,
                timeout,
            )
        })
        .await
        .map_err(|_| ModelFetchError::Panicked {
            name: record.name.clone(),
            version: record.version,
        })??;
        check_weights(record, &weights)?;
        Ok(weights)
    }
}

/// Errors unless `weights` are `record`'s: its size and SHA-256.
fn check_weights(record: &ModelVersion, weights: &[u8]) -> Result<(), ModelFetchError> {
    let actual = sha256_hex(weights);
    if actual != record.sha256 || weights.len() as u64 != record.size_bytes {
        return Err(ModelFetchError::Checksum {
            name: record.name.clone(),
            version: record.version,
            expected: record.sha256.clone(),
            actual,
            size: weights.len(),
        });
    }
    Ok(())
}

/// The cache directory of a registered model version: its weights' SHA-256 and the start of
/// its manifest's, so two models with the same weights and different manifests (names, labels)
/// never share an entry.
pub fn cache_entry_name(record: &ModelVersion) -> String {
    let manifest_sha256 = sha256_hex(record.manifest_json.as_bytes());
    format!("{}-{}", record.sha256, &manifest_sha256[..16])
}

/// The registered manifest of `record`, checked as the detector will read it.
fn registered_manifest(record: &ModelVersion) -> Result<ModelManifest, ModelFetchError> {
    ModelManifest::from_json(record.manifest_json.as_bytes()).map_err(|reason| ModelFetchError::Manifest {
        name: record.name.clone(),
        version: record.version,
        reason,
    })
}

/// Writes the cache entry of `record` (the registered manifest and the weights) whole: into a
/// fresh directory first, renamed into place, so a worker stopped halfway leaves no half entry.
/// An entry already there is replaced only after it is moved aside, and one another worker of
/// the host put there meanwhile is kept (it was checked the same way).
fn write_cache_entry(
    cache_dir: &Path,
    record: &ModelVersion,
    manifest: &ModelManifest,
    weights: &[u8],
) -> Result<(), ModelFetchError> {
    // Unique among the workers of this host, in-process ones included.
    static ENTRIES_WRITTEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let attempt = ENTRIES_WRITTEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let unique = format!("{}-{attempt}", std::process::id());
    let cache_error = |path: &Path, source| ModelFetchError::Cache {
        path: path.to_owned(),
        source,
    };
    let entry_name = cache_entry_name(record);
    let entry = cache_dir.join(&entry_name);
    let partial = cache_dir.join(format!(".partial-{entry_name}-{unique}"));
    let written = std::fs::create_dir_all(&partial)
        .and_then(|()| std::fs::write(partial.join(MANIFEST_FILE), &record.manifest_json))
        // `from_json` checked that the weights' name is a plain file name.
        .and_then(|()| std::fs::write(partial.join(&manifest.weights), weights));
    if let Err(source) = written {
        let _ = std::fs::remove_dir_all(&partial);
        return Err(cache_error(&partial, source));
    }
    if entry.exists() {
        let aside = cache_dir.join(format!(".damaged-{entry_name}-{unique}"));
        match std::fs::rename(&entry, &aside) {
            Ok(()) => {
                let _ = std::fs::remove_dir_all(&aside);
            }
            // Another worker moved it first.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                let _ = std::fs::remove_dir_all(&partial);
                return Err(cache_error(&entry, source));
            }
        }
    }
    match std::fs::rename(&partial, &entry) {
        Ok(()) => Ok(()),
        // Another worker of the host put its entry there first: it is as good as ours.
        Err(_) if entry.join(MANIFEST_FILE).exists() => {
            let _ = std::fs::remove_dir_all(&partial);
            Ok(())
        }
        Err(source) => {
            let _ = std::fs::remove_dir_all(&partial);
            Err(cache_error(&entry, source))
        }
    }
}

/// Loads the model directory `dir` (on a blocking thread: it reads and hashes the weights)
/// and checks that its manifest is `record`'s registered `manifest`, weights' SHA-256 included
/// (the load checked the weights against that SHA-256).
async fn load_checked(
    dir: &Path,
    record: &ModelVersion,
    manifest: &ModelManifest,
    device: &candle_core::Device,
) -> Result<Arc<Detector>, ModelFetchError> {
    let (path, device) = (dir.to_owned(), device.clone());
    let detector = tokio::task::spawn_blocking(move || Detector::load(&path, &device))
        .await
        .map_err(|_| ModelFetchError::Panicked {
            name: record.name.clone(),
            version: record.version,
        })?
        .map_err(|source| ModelFetchError::Load {
            name: record.name.clone(),
            version: record.version,
            source,
        })?;
    if detector.manifest() != manifest || !manifest.sha256.eq_ignore_ascii_case(&record.sha256) {
        return Err(ModelFetchError::StaleCacheEntry {
            name: record.name.clone(),
            version: record.version,
            entry: dir.to_owned(),
        });
    }
    Ok(Arc::new(detector))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(weights: &[u8]) -> ModelVersion {
        ModelVersion {
            name: "ssd".into(),
            version: 2,
            sha256: sha256_hex(weights),
            size_bytes: weights.len() as u64,
            manifest_json: serde_json::json!({
                "format_version": 1,
                "name": "ssd",
                "architecture": "ssdlite_mobilenet_v2",
                "input_size": [300, 300],
                "labels": ["person"],
                "weights": "model.safetensors",
                "sha256": sha256_hex(weights),
                "source": {"package": "p", "file": "f", "sha256": "0"},
            })
            .to_string(),
            ..ModelVersion::default()
        }
    }

    #[test]
    fn weights_that_are_not_the_registered_bytes_are_refused() {
        let registered = record(b"the registered weights");
        assert!(check_weights(&registered, b"the registered weights").is_ok());
        let error = check_weights(&registered, b"the registered weightz").expect_err("one byte differs");
        assert!(error.to_string().contains("not run"), "{error}");
        let error = check_weights(&registered, b"the registered").expect_err("truncated");
        assert!(matches!(error, ModelFetchError::Checksum { size: 14, .. }), "{error}");
    }

    #[test]
    fn a_cache_entry_is_written_whole_and_replaced_when_damaged() {
        let cache = std::env::temp_dir().join(format!("framefleet-model-cache-{}", uuid::Uuid::new_v4().simple()));
        let weights = b"weights".as_slice();
        let registered = record(weights);
        let manifest = registered_manifest(&registered).expect("manifest");
        write_cache_entry(&cache, &registered, &manifest, weights).expect("written");
        let entry = cache.join(cache_entry_name(&registered));
        assert_eq!(std::fs::read(entry.join("model.safetensors")).unwrap(), weights);
        std::fs::write(entry.join("model.safetensors"), b"damaged").unwrap();
        write_cache_entry(&cache, &registered, &manifest, weights).expect("rewritten");
        assert_eq!(std::fs::read(entry.join("model.safetensors")).unwrap(), weights);
        let leftovers: Vec<_> = std::fs::read_dir(&cache)
            .unwrap()
            .flatten()
            .map(|entry| entry.file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "{leftovers:?}");
        std::fs::remove_dir_all(&cache).unwrap();
    }

    #[test]
    fn the_same_weights_under_another_manifest_get_an_entry_of_their_own() {
        let weights = b"weights".as_slice();
        let first = record(weights);
        let mut relabelled = record(weights);
        relabelled.manifest_json = relabelled.manifest_json.replace("\"person\"", "\"pedestrian\"");
        assert_ne!(cache_entry_name(&first), cache_entry_name(&relabelled));
        assert!(cache_entry_name(&first).starts_with(&first.sha256));
    }

    #[test]
    fn a_weights_name_that_leaves_the_entry_is_refused() {
        let weights = b"w".as_slice();
        let mut registered = record(weights);
        registered.manifest_json = registered.manifest_json.replace("model.safetensors", "../../escape");
        let error = registered_manifest(&registered).expect_err("escape");
        assert!(matches!(error, ModelFetchError::Manifest { .. }), "{error}");
    }
}
