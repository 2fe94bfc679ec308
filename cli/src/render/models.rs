//! Registered models and their versions as tables and JSON.

use framefleet_proto::v1::ModelVersion;
use serde_json::{Value, json};
use std::fmt::Write as _;

pub fn model_value(model: &ModelVersion) -> Value {
    json!({
        "name": model.name,
        "version": model.version,
        "sha256": model.sha256,
        "size_bytes": model.size_bytes,
        "architecture": model.architecture,
        "topic": model.topic,
        "partition": model.partition,
        "chunks": model.chunk_offsets.len(),
        "created_unix_ms": model.created_unix_ms,
        "description": model.description,
    })
}

pub fn model_pushed_json(model: &ModelVersion, created: bool) -> String {
    json!({"created": created, "model": model_value(model)}).to_string()
}

pub fn models_json(models: &[ModelVersion]) -> String {
    Value::Array(models.iter().map(model_value).collect()).to_string()
}

pub fn models_table(models: &[ModelVersion]) -> String {
    let mut out = format!(
        "{:<32} {:>4} {:>10} {:<24} SHA256\n",
        "NAME", "VER", "MIB", "ARCHITECTURE"
    );
    for model in models {
        let _ = writeln!(
            out,
            "{:<32} {:>4} {:>10.1} {:<24} {}",
            model.name,
            model.version,
            model.size_bytes as f64 / f64::from(1u32 << 20),
            model.architecture,
            model.sha256
        );
        if !model.description.is_empty() {
            let _ = writeln!(out, "{:<32} {}", "", model.description.replace('\n', " "));
        }
    }
    out
}
