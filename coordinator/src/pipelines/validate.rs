//! Field validation of pipeline requests. Every refusal names the field, as the request
//! spells it (`spec.detect.min_score`).

use super::record::{DetectRecord, SpecRecord};
use crate::channels::validate::{pipeline_name, topic_collision_key, topic_safe_name};
use crate::error::CoordinatorError;
use framefleet_proto::v1::{DetectStage, PipelineSpec};

const MAX_LABELS: usize = 256;
const MAX_LABEL_LEN: usize = 64;
const MAX_DETECTIONS: u32 = 1_000;
const MAX_EVERY_NTH_FRAME: u32 = 1_000_000;
const MAX_DESCRIPTION_LEN: usize = 1_024;
/// Apache Kafka's longest topic name.
const MAX_TOPIC_LEN: usize = 249;

const DEFAULT_MIN_SCORE: f32 = 0.5;
const DEFAULT_MAX_DETECTIONS: u32 = 100;

/// The topic a pipeline's results go to when its spec names none.
pub fn default_results_topic(name: &str) -> String {
    format!("framefleet.results.{name}")
}

pub fn name(name: &str) -> Result<(), CoordinatorError> {
    pipeline_name("name", name)
}

/// A name prefix for listing: empty, or what a name may start with.
pub fn name_prefix(prefix: &str) -> Result<(), CoordinatorError> {
    if prefix.is_empty() {
        return Ok(());
    }
    pipeline_name("name_prefix", prefix)
}

pub fn description(description: &str) -> Result<(), CoordinatorError> {
    if description.len() > MAX_DESCRIPTION_LEN {
        return Err(CoordinatorError::invalid(
            "description",
            format!("must be at most {MAX_DESCRIPTION_LEN} bytes"),
        ));
    }
    if description.chars().any(|c| c.is_control() && c != '\n') {
        return Err(CoordinatorError::invalid(
            "description",
            "must not contain control characters other than newlines",
        ));
    }
    Ok(())
}

/// Checks a spec and returns its stored form, defaults filled in.
pub fn spec(name: &str, spec: Option<&PipelineSpec>) -> Result<SpecRecord, CoordinatorError> {
    let spec = spec.ok_or_else(|| CoordinatorError::invalid("spec", "is required"))?;
    if !spec.analysis && spec.detect.is_none() {
        return Err(CoordinatorError::invalid(
            "spec",
            "needs at least one stage: `analysis`, `detect` or both",
        ));
    }
    let detect = spec
        .detect
        .as_ref()
        .map(|detect| detect_stage(detect, spec.analysis))
        .transpose()?;
    let results_topic = if spec.results_topic.is_empty() {
        default_results_topic(name)
    } else {
        topic("spec.results_topic", &spec.results_topic)?;
        spec.results_topic.clone()
    };
    if !spec.events_topic.is_empty() {
        topic("spec.events_topic", &spec.events_topic)?;
        if topic_collision_key(&spec.events_topic) == topic_collision_key(&results_topic) {
            return Err(CoordinatorError::invalid(
                "spec.events_topic",
                format!("must differ from the results topic `{results_topic}` (Kafka treats `.` and `_` alike)"),
            ));
        }
        if detect.is_none() {
            return Err(CoordinatorError::invalid(
                "spec.events_topic",
                "events are results with a detection: it needs a `detect` stage",
            ));
        }
    }
    Ok(SpecRecord {
        analysis: spec.analysis,
        detect,
        results_topic,
        events_topic: spec.events_topic.clone(),
    })
}

fn detect_stage(detect: &DetectStage, analysis: bool) -> Result<DetectRecord, CoordinatorError> {
    crate::models::validate::name("spec.detect.model", &detect.model)?;
    let min_score = detect.min_score.unwrap_or(DEFAULT_MIN_SCORE);
    if !(0.0..=1.0).contains(&min_score) {
        return Err(CoordinatorError::invalid(
            "spec.detect.min_score",
            format!("{min_score} is outside [0, 1]"),
        ));
    }
    if detect.labels.len() > MAX_LABELS {
        return Err(CoordinatorError::invalid(
            "spec.detect.labels",
            format!("at most {MAX_LABELS} labels"),
        ));
    }
    for label in &detect.labels {
        if label.is_empty() || label.len() > MAX_LABEL_LEN || label.chars().any(char::is_control) {
            return Err(CoordinatorError::invalid(
                "spec.detect.labels",
                format!("{label:?}: a label is 1..={MAX_LABEL_LEN} bytes without control characters"),
            ));
        }
    }
    let mut labels = detect.labels.clone();
    labels.sort();
    labels.dedup();
    if labels.len() != detect.labels.len() {
        return Err(CoordinatorError::invalid("spec.detect.labels", "labels must be unique"));
    }
    let max_detections = match detect.max_detections {
        0 => DEFAULT_MAX_DETECTIONS,
        n if n > MAX_DETECTIONS => {
            return Err(CoordinatorError::invalid(
                "spec.detect.max_detections",
                format!("{n} is over {MAX_DETECTIONS}"),
            ));
        }
        n => n,
    };
    if detect.every_nth_frame > MAX_EVERY_NTH_FRAME {
        return Err(CoordinatorError::invalid(
            "spec.detect.every_nth_frame",
            format!("{} is over {MAX_EVERY_NTH_FRAME}", detect.every_nth_frame),
        ));
    }
    let motion_gate = match detect.motion_gate {
        Some(true) if !analysis => {
            return Err(CoordinatorError::invalid(
                "spec.detect.motion_gate",
                "the motion gate needs `spec.analysis` (the analysis is what sees motion)",
            ));
        }
        Some(gate) => gate,
        None => analysis,
    };
    Ok(DetectRecord {
        model: detect.model.clone(),
        min_score,
        labels: detect.labels.clone(),
        max_detections,
        every_nth_frame: detect.every_nth_frame.max(1),
        motion_gate,
        // Resolved against the model registry by the caller.
        model_version: detect.model_version,
        model_sha256: detect.model_sha256.to_ascii_lowercase(),
    })
}

/// A topic name Apache Kafka accepts (1 to 249 of letters, digits, `.`, `_` and `-`, and not
/// `.` or `..`) outside the channels' frame topics (`framefleet.frames.*`, `framefleet.fanout.*`,
/// `framefleet.pool.*`) as Kafka compares names: results written there would reach workers as
/// frames.
fn topic(field: &'static str, topic: &str) -> Result<(), CoordinatorError> {
    topic_safe_name(field, topic, MAX_TOPIC_LEN, &['-', '_', '.'])?;
    if topic == "." || topic == ".." {
        return Err(CoordinatorError::invalid(field, "`.` and `..` are not topic names"));
    }
    let key = topic_collision_key(topic);
    for prefix in FRAME_TOPIC_PREFIXES {
        if key.starts_with(&topic_collision_key(prefix)) {
            return Err(CoordinatorError::invalid(
                field,
                format!("`{topic}` is among the channels' frame topics (`{prefix}*`, Kafka treats `.` and `_` alike)"),
            ));
        }
    }
    Ok(())
}

/// Where the coordinator puts channels' frames.
const FRAME_TOPIC_PREFIXES: [&str; 3] = [
    framefleet_common::kafka::CHANNEL_TOPIC_PREFIX,
    framefleet_common::kafka::FANOUT_TOPIC_PREFIX,
    framefleet_common::kafka::POOL_TOPIC_PREFIX,
];
