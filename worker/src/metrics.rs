//! The worker's Prometheus metrics (`--metrics-addr`, text format at `/metrics`), through the
//! `prometheus-client` crate. Names follow Prometheus conventions: `_total` counters, base
//! units (`_seconds`), a `framefleet_worker_` prefix, the worker id as a label.

use crate::consumer::ConsumerGauges;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabel {
    /// `capture_to_kafka` (ingestor: capture → record created), `kafka_to_worker` (the
    /// record waiting in Kafka and in the worker's buffers), `decode` (this frame's checks and
    /// decode), `worker` (consumed → analysed, batch included), `end_to_end` (capture →
    /// result acknowledged by Kafka).
    stage: &'static str,
}

/// One processed frame's times, unix µs, from its result.
#[derive(Debug, Clone, Copy)]
pub struct FrameTimes {
    capture_us: i64,
    produced_us: Option<i64>,
    consumed_us: i64,
    processed_us: i64,
    decode_us: u64,
}

impl FrameTimes {
    pub fn of(result: &framefleet_proto::wire::FrameResult) -> Self {
        Self {
            capture_us: result.capture_time_us,
            produced_us: result.produced_time_us,
            consumed_us: result.consumed_time_us,
            processed_us: result.processed_time_us,
            decode_us: result.decode_us,
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    /// A `DeadLetterCode` name (proto/framefleet/v1/records.proto).
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct DetectorLabel {
    /// `ran`, `gated` (motion gate) or `not_this_frame` (every-Nth-frame rate).
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct ObjectLabel {
    label: String,
}

/// What the detect stages did in a settled batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DetectTally {
    pub ran: u64,
    pub gated: u64,
    pub not_this_frame: u64,
    /// Detections reported in results, by label.
    pub objects: std::collections::BTreeMap<String, u64>,
}

impl DetectTally {
    pub fn of(results: &[&framefleet_proto::wire::FrameResult]) -> Self {
        let mut tally = Self::default();
        for result in results {
            if result.model.is_none() {
                continue;
            }
            if result.detector_ran {
                tally.ran += 1;
            } else if result.gated {
                tally.gated += 1;
            } else {
                tally.not_this_frame += 1;
            }
            for object in &result.detections {
                *tally.objects.entry(object.label.clone()).or_default() += 1;
            }
        }
        tally
    }
}

/// Every metric the worker exports. Cheap to update from the consume loop (atomics).
pub struct WorkerMetrics {
    registry: Registry,
    frames_processed: Counter,
    dead_letters: Family<CodeLabel, Counter>,
    batches: Counter,
    /// Compute start → every result of the batch acknowledged by Kafka.
    batch_latency: Histogram,
    /// Validation, decode and analysis of one batch.
    batch_compute: Histogram,
    /// Each stage of a processed frame's life.
    frame_stages: Family<StageLabel, Histogram>,
    detector_frames: Family<DetectorLabel, Counter>,
    detected_objects: Family<ObjectLabel, Counter>,
    consumer_lag: Gauge,
    assigned_partitions: Gauge,
    rebalances: Gauge,
    gauges: Arc<ConsumerGauges>,
}

impl WorkerMetrics {
    pub fn new(worker_id: &str, gauges: Arc<ConsumerGauges>) -> Self {
        let mut registry = Registry::with_prefix_and_labels(
            "framefleet_worker",
            [(
                std::borrow::Cow::Borrowed("worker_id"),
                std::borrow::Cow::Owned(worker_id.to_owned()),
            )]
            .into_iter(),
        );
        let metrics = Self {
            registry: Registry::default(),
            frames_processed: Counter::default(),
            dead_letters: Family::default(),
            batches: Counter::default(),
            // 1 ms … ≈ 33 s.
            batch_latency: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            batch_compute: Histogram::new(exponential_buckets(0.000_25, 2.0, 16)),
            // 0.25 ms … ≈ 131 s: a frame may wait minutes in a backlog.
            frame_stages: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.000_25, 2.0, 20))),
            detector_frames: Family::default(),
            detected_objects: Family::default(),
            consumer_lag: Gauge::default(),
            assigned_partitions: Gauge::default(),
            rebalances: Gauge::default(),
            gauges,
        };
        registry.register(
            "frames_processed",
            "Frames analysed with their result acknowledged by Kafka",
            metrics.frames_processed.clone(),
        );
        registry.register(
            "dead_letters",
            "Records written to the dead-letter topic, by DeadLetterCode",
            metrics.dead_letters.clone(),
        );
        registry.register(
            "batches",
            "Batches settled (every result acknowledged, offsets stored)",
            metrics.batches.clone(),
        );
        registry.register(
            "batch_latency_seconds",
            "From a batch's compute start to every one of its results acknowledged by Kafka",
            metrics.batch_latency.clone(),
        );
        registry.register(
            "batch_compute_seconds",
            "Validation, decode and analysis of one batch",
            metrics.batch_compute.clone(),
        );
        registry.register(
            "frame_stage_seconds",
            "Each stage of a processed frame's life (times from the frame's result; stages spanning hosts include their clock difference)",
            metrics.frame_stages.clone(),
        );
        registry.register(
            "detector_frames",
            "Frames of channels with a detect stage, by what the stage did (ran, gated by the motion gate, not_this_frame by its every-Nth-frame rate)",
            metrics.detector_frames.clone(),
        );
        registry.register(
            "detected_objects",
            "Detections written in results, by label",
            metrics.detected_objects.clone(),
        );
        registry.register(
            "consumer_lag_frames",
            "Frames between the stored offsets and the high watermarks of the partitions this worker owns (-1: not known yet)",
            metrics.consumer_lag.clone(),
        );
        registry.register(
            "assigned_partitions",
            "Partitions assigned to this worker",
            metrics.assigned_partitions.clone(),
        );
        registry.register(
            "rebalances",
            "Consumer group rebalances seen by this worker",
            metrics.rebalances.clone(),
        );
        Self { registry, ..metrics }
    }

    /// A settled batch's detect-stage tally.
    pub fn record_detections(&self, tally: &DetectTally) {
        for (outcome, count) in [
            ("ran", tally.ran),
            ("gated", tally.gated),
            ("not_this_frame", tally.not_this_frame),
        ] {
            if count > 0 {
                self.detector_frames
                    .get_or_create(&DetectorLabel { outcome })
                    .inc_by(count);
            }
        }
        for (label, count) in &tally.objects {
            self.detected_objects
                .get_or_create(&ObjectLabel { label: label.clone() })
                .inc_by(*count);
        }
    }

    /// A settled batch: its frames, its dead letters' codes and its timings.
    pub fn record_batch(
        &self,
        processed: u64,
        dead_letter_codes: &[framefleet_proto::v1::DeadLetterCode],
        compute: Duration,
        latency: Duration,
    ) {
        self.frames_processed.inc_by(processed);
        for code in dead_letter_codes {
            self.dead_letters
                .get_or_create(&CodeLabel {
                    code: code.as_str_name().to_owned(),
                })
                .inc();
        }
        self.batches.inc();
        self.batch_compute.observe(compute.as_secs_f64());
        self.batch_latency.observe(latency.as_secs_f64());
    }

    /// Processed frames whose results Kafka acknowledged at `acknowledged_us` (unix µs).
    pub fn record_frames(&self, frames: &[FrameTimes], acknowledged_us: i64) {
        let seconds = |from: i64, to: i64| (to - from).max(0) as f64 / 1e6;
        let observe = |stage: &'static str, value: f64| {
            self.frame_stages.get_or_create(&StageLabel { stage }).observe(value);
        };
        for frame in frames {
            if let Some(produced) = frame.produced_us {
                observe("capture_to_kafka", seconds(frame.capture_us, produced));
                observe("kafka_to_worker", seconds(produced, frame.consumed_us));
            }
            observe("decode", frame.decode_us as f64 / 1e6);
            observe("worker", seconds(frame.consumed_us, frame.processed_us));
            observe("end_to_end", seconds(frame.capture_us, acknowledged_us));
        }
    }

    /// The text exposition, with the consumer's gauges read now.
    pub fn render(&self) -> String {
        self.consumer_lag.set(self.gauges.lag_frames.load(Ordering::Relaxed));
        self.assigned_partitions
            .set(i64::try_from(self.gauges.assigned_partitions.load(Ordering::Relaxed)).unwrap_or(i64::MAX));
        self.rebalances
            .set(i64::try_from(self.gauges.rebalances.load(Ordering::Relaxed)).unwrap_or(i64::MAX));
        let mut text = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::warn!(%error, "encoding metrics failed");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use framefleet_proto::v1::DeadLetterCode;

    #[test]
    fn metrics_are_named_by_prometheus_conventions_and_count_what_was_recorded() {
        let gauges = Arc::new(ConsumerGauges::default());
        gauges.lag_frames.store(12, Ordering::Relaxed);
        let metrics = WorkerMetrics::new("w-1", Arc::clone(&gauges));
        metrics.record_batch(
            7,
            &[
                DeadLetterCode::TruncatedImage,
                DeadLetterCode::TruncatedImage,
                DeadLetterCode::KeyMismatch,
            ],
            Duration::from_millis(3),
            Duration::from_millis(40),
        );
        metrics.record_frames(
            &[FrameTimes {
                capture_us: 1_000_000,
                produced_us: Some(1_002_000),
                consumed_us: 1_010_000,
                processed_us: 1_030_000,
                decode_us: 700,
            }],
            1_050_000,
        );
        let text = metrics.render();
        for expected in [
            "framefleet_worker_frames_processed_total{worker_id=\"w-1\"} 7",
            "framefleet_worker_dead_letters_total{worker_id=\"w-1\",code=\"DEAD_LETTER_CODE_TRUNCATED_IMAGE\"} 2",
            "framefleet_worker_dead_letters_total{worker_id=\"w-1\",code=\"DEAD_LETTER_CODE_KEY_MISMATCH\"} 1",
            "framefleet_worker_batches_total{worker_id=\"w-1\"} 1",
            "framefleet_worker_batch_latency_seconds_count{worker_id=\"w-1\"} 1",
            "framefleet_worker_consumer_lag_frames{worker_id=\"w-1\"} 12",
            "# TYPE framefleet_worker_batch_compute_seconds histogram",
            "framefleet_worker_frame_stage_seconds_sum{worker_id=\"w-1\",stage=\"end_to_end\"} 0.05",
            "framefleet_worker_frame_stage_seconds_sum{worker_id=\"w-1\",stage=\"kafka_to_worker\"} 0.008",
            "framefleet_worker_frame_stage_seconds_count{worker_id=\"w-1\",stage=\"decode\"} 1",
        ] {
            assert!(text.contains(expected), "missing `{expected}` in\n{text}");
        }
    }
}
