use super::*;
use crate::error::invalid_field;
use crate::store::MemoryStore;
use std::sync::Mutex;

/// Weights kept in memory, at made-up offsets; counts what was stored.
#[derive(Default)]
struct MemoryBytes {
    stored: Mutex<Vec<String>>,
}

impl ModelBytes for MemoryBytes {
    async fn store(&self, sha256: &str, weights: &[u8]) -> Result<ChunkLocation, CoordinatorError> {
        let mut stored = self.stored.lock().expect("lock");
        stored.push(sha256.to_owned());
        let first = i64::try_from(stored.len() * 100).expect("offset");
        Ok(ChunkLocation {
            topic: "framefleet.models".into(),
            partition: 0,
            offsets: (0..weights.len().div_ceil(4))
                .map(|chunk| first + chunk as i64)
                .collect(),
        })
    }
}

fn registry() -> ModelRegistry<MemoryStore, MemoryBytes> {
    ModelRegistry::new(MemoryStore::default(), MemoryBytes::default())
}

fn manifest(name: &str, weights: &[u8]) -> String {
    serde_json::json!({
        "format_version": 1,
        "name": name,
        "architecture": "ssdlite_mobilenet_v2",
        "input_size": [300, 300],
        "labels": ["person"],
        "weights": "model.safetensors",
        "sha256": sha256_hex(weights),
        "source": {"package": "p==1", "file": "f", "sha256": "0"},
    })
    .to_string()
}

fn pushed<'a>(name: &'a str, manifest_json: &'a str, weights: &'a [u8]) -> PushedModel<'a> {
    PushedModel {
        name,
        manifest_json,
        description: "",
        weights,
    }
}

#[tokio::test]
async fn a_push_registers_the_next_version_and_the_same_weights_again_add_none() {
    let registry = registry();
    let (weights_1, weights_2) = (b"first weights".as_slice(), b"second weights".as_slice());
    let (manifest_1, manifest_2) = (manifest("ssd", weights_1), manifest("ssd", weights_2));
    let (first, created) = registry.push(&pushed("ssd", &manifest_1, weights_1)).await.unwrap();
    assert!(created);
    assert_eq!((first.version, first.size_bytes), (1, weights_1.len() as u64));
    assert_eq!(first.sha256, sha256_hex(weights_1));
    assert_eq!(first.architecture, "ssdlite_mobilenet_v2");
    let (again, created) = registry.push(&pushed("ssd", &manifest_1, weights_1)).await.unwrap();
    assert!(!created);
    assert_eq!(again.version, 1);
    assert_eq!(
        registry.bytes.stored.lock().unwrap().len(),
        1,
        "the same weights are not stored twice"
    );
    let (second, created) = registry.push(&pushed("ssd", &manifest_2, weights_2)).await.unwrap();
    assert!(created);
    assert_eq!(second.version, 2);
    assert_eq!(registry.get("ssd", 0).await.unwrap().version, 2);
    assert_eq!(registry.get("ssd", 1).await.unwrap().sha256, sha256_hex(weights_1));
    let versions: Vec<u32> = registry
        .list_versions("ssd")
        .await
        .unwrap()
        .iter()
        .map(|model| model.version)
        .collect();
    assert_eq!(versions, [1, 2]);
    assert_eq!(registry.list("").await.unwrap().len(), 1);
}

#[tokio::test]
async fn weights_that_are_not_the_manifests_are_refused_before_anything_is_stored() {
    let registry = registry();
    let manifest_json = manifest("ssd", b"the real weights");
    let error = registry
        .push(&pushed("ssd", &manifest_json, b"other bytes"))
        .await
        .expect_err("damaged");
    assert!(error.to_string().contains("SHA-256"), "{error}");
    assert_eq!(invalid_field(error), "chunk");
    assert!(registry.bytes.stored.lock().unwrap().is_empty());
    assert!(matches!(
        registry.get("ssd", 0).await,
        Err(CoordinatorError::NotFound { .. })
    ));
}

#[tokio::test]
async fn bad_manifests_and_names_are_refused_naming_the_field() {
    let registry = registry();
    let weights = b"w".as_slice();
    let good = manifest("ssd", weights);
    for (name, manifest_json, field) in [
        ("other", good.as_str(), "header.name"),
        ("ssd", "not json", "header.manifest_json"),
        ("ssd", r#"{"name": "ssd", "architecture": "x"}"#, "header.manifest_json"),
        (
            "ssd",
            r#"{"name": "ssd", "architecture": "x", "sha256": "abc"}"#,
            "header.manifest_json",
        ),
        ("", good.as_str(), "header.name"),
        ("a/b", good.as_str(), "header.name"),
        (".hidden", good.as_str(), "header.name"),
        (
            "ssd",
            good.replace("ssdlite_mobilenet_v2", "yolo_v9").as_str(),
            "header.manifest_json",
        ),
        (
            "ssd",
            good.replace("[300,300]", "[320,320]").as_str(),
            "header.manifest_json",
        ),
        (
            "ssd",
            good.replace("\"format_version\":1", "\"format_version\":2").as_str(),
            "header.manifest_json",
        ),
    ] {
        let error = registry
            .push(&pushed(name, manifest_json, weights))
            .await
            .expect_err(manifest_json);
        assert_eq!(invalid_field(error), field, "{name} {manifest_json}");
    }
    let error = registry.push(&pushed("ssd", &good, b"")).await.expect_err("no weights");
    assert_eq!(invalid_field(error), "chunk");
}
