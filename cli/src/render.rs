//! Text and JSON renderings of API responses. Pure functions, so they are easy to test.

use framefleet_proto::v1::{Channel, FleetStatus, FrameEncoding, PixelFormat};
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::time::Duration;

pub struct Totals {
    pub captured: u64,
    pub acknowledged: u64,
    pub failed: u64,
    pub processed: u64,
    pub dead_lettered: u64,
    pub accumulate: u64,
    pub consume: u64,
    pub lag: u64,
    pub frames_per_second: f64,
    pub workers: usize,
    pub ingestors_finished: bool,
}

pub fn totals(status: &FleetStatus) -> Totals {
    let ledgers = status
        .ingestors
        .iter()
        .filter_map(|ingestor| ingestor.report.as_ref())
        .flat_map(|report| report.channels.iter());
    let (mut captured, mut acknowledged, mut failed) = (0, 0, 0);
    for ledger in ledgers {
        captured += ledger.frames_captured;
        acknowledged += ledger.frames_acknowledged;
        failed += ledger.frames_failed;
    }
    let workers = status.workers.iter().filter_map(|worker| worker.report.as_ref());
    Totals {
        captured,
        acknowledged,
        failed,
        processed: status.frames_processed,
        dead_lettered: workers.map(|report| report.frames_dead_lettered).sum(),
        accumulate: status.topics.iter().map(|topic| topic.accumulate).sum(),
        consume: status.topics.iter().map(|topic| topic.consume).sum(),
        lag: status.topics.iter().map(|topic| topic.lag).sum(),
        frames_per_second: status.frames_per_second,
        workers: status.workers.len(),
        ingestors_finished: !status.ingestors.is_empty()
            && status
                .ingestors
                .iter()
                .filter_map(|ingestor| ingestor.report.as_ref())
                .all(|report| report.channels.iter().all(|ledger| ledger.source_finished)),
    }
}

/// Every ingestor finished its sources, and Kafka says the worker group has committed
/// everything that was written.
pub fn is_drained(status: &FleetStatus) -> bool {
    let totals = totals(status);
    status.kafka_error.is_empty() && totals.ingestors_finished && totals.accumulate > 0 && totals.lag == 0
}

pub fn progress_line(status: &FleetStatus, elapsed: Duration) -> String {
    let totals = totals(status);
    let mut line = format!(
        "[{:>6.1}s] captured {:>6}  acked {:>6}  processed {:>6} ({:>6.1} frames/s, {} workers)  kafka: accumulate {:>6} consume {:>6} lag {:>6}",
        elapsed.as_secs_f64(),
        totals.captured,
        totals.acknowledged,
        totals.processed,
        totals.frames_per_second,
        totals.workers,
        totals.accumulate,
        totals.consume,
        totals.lag,
    );
    if totals.ingestors_finished {
        line.push_str("  (sources finished)");
    }
    if !status.kafka_error.is_empty() {
        let _ = write!(line, "  kafka error: {}", status.kafka_error);
    }
    line
}

pub fn status_report(status: &FleetStatus) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24} {:>10} {:>10} {:>8} {:>8} {:>8} {:>7} {:>5} {:>8} {:>8} {:>10}",
        "WORKER",
        "PROCESSED",
        "DEAD-LTR",
        "FRAMES/S",
        "P50-MS",
        "P99-MS",
        "LAG",
        "PARTS",
        "DEVICE",
        "SEEN-MS",
        "REGISTERED"
    );
    for worker in &status.workers {
        if let Some(report) = &worker.report {
            let _ = writeln!(
                out,
                "{:<24} {:>10} {:>10} {:>8.1} {:>8.1} {:>8.1} {:>7} {:>5} {:>8} {:>8} {:>10}",
                report.worker_id,
                report.frames_processed,
                report.frames_dead_lettered,
                report.frames_per_second,
                report.batch_latency_p50_ms,
                report.batch_latency_p99_ms,
                report.lag_frames,
                report.assigned_partitions,
                report.device,
                worker.last_seen_ms_ago,
                if worker.registered { "yes" } else { "no" }
            );
        }
    }
    let _ = writeln!(
        out,
        "\n{:<24} {:<24} {:>9} {:>9} {:>7} {:>8}",
        "INGESTOR", "CHANNEL", "CAPTURED", "ACKED", "FAILED", "FINISHED"
    );
    for ingestor in &status.ingestors {
        if let Some(report) = &ingestor.report {
            for ledger in &report.channels {
                let _ = writeln!(
                    out,
                    "{:<24} {:<24} {:>9} {:>9} {:>7} {:>8}",
                    report.ingestor_id,
                    ledger.channel_id,
                    ledger.frames_captured,
                    ledger.frames_acknowledged,
                    ledger.frames_failed,
                    ledger.source_finished
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "\n{:<40} {:>10} {:>10} {:>8}",
        "TOPIC", "ACCUMULATE", "CONSUME", "LAG"
    );
    for topic in &status.topics {
        let _ = writeln!(
            out,
            "{:<40} {:>10} {:>10} {:>8}",
            topic.topic, topic.accumulate, topic.consume, topic.lag
        );
    }
    if !status.kafka_error.is_empty() {
        let _ = writeln!(out, "kafka error: {}", status.kafka_error);
    }
    out
}

pub fn final_summary(status: &FleetStatus, elapsed: Duration) -> String {
    let totals = totals(status);
    let seconds = elapsed.as_secs_f64().max(f64::EPSILON);
    let mut out = String::from("== framefleet run summary ==\n");
    let rows = [
        ("frames captured", totals.captured.to_string()),
        ("frames acknowledged by Kafka", totals.acknowledged.to_string()),
        ("frames failed to deliver", totals.failed.to_string()),
        ("frames processed (results)", totals.processed.to_string()),
        ("frames dead-lettered", totals.dead_lettered.to_string()),
        (
            "kafka accumulate / consume",
            format!("{} / {}", totals.accumulate, totals.consume),
        ),
        ("kafka lag (frames)", totals.lag.to_string()),
        ("workers", totals.workers.to_string()),
        ("wall time", format!("{seconds:.1} s")),
        (
            "average throughput",
            format!("{:.1} frames/s", totals.processed as f64 / seconds),
        ),
    ];
    for (label, value) in rows {
        let _ = writeln!(out, "  {label:<30} {value}");
    }
    out.push('\n');
    out.push_str(&status_report(status));
    out
}

pub fn channels_table(channels: &[Channel]) -> String {
    let mut out = format!(
        "{:<24} {:<11} {:>5} {:<6} {:<36} {}\n",
        "CHANNEL", "SIZE", "FPS", "ENC", "TOPIC", "SOURCE"
    );
    for channel in channels {
        let (size, fps, encoding) = match &channel.schema {
            Some(schema) => (
                format!("{}x{}", schema.width, schema.height),
                format!("{:.1}", schema.fps),
                FrameEncoding::try_from(schema.encoding)
                    .map(|e| e.as_str_name().trim_start_matches("FRAME_ENCODING_").to_lowercase())
                    .unwrap_or_default(),
            ),
            None => Default::default(),
        };
        let _ = writeln!(
            out,
            "{:<24} {:<11} {:>5} {:<6} {:<36} {}",
            channel.channel_id, size, fps, encoding, channel.topic, channel.source_uri
        );
    }
    out
}

pub fn channels_json(channels: &[Channel]) -> String {
    let values: Vec<Value> = channels
        .iter()
        .map(|channel| {
            let schema = channel.schema.as_ref().map(|schema| {
                json!({
                    "version": schema.version,
                    "width": schema.width,
                    "height": schema.height,
                    "channels": schema.channels,
                    "pixel_format": PixelFormat::try_from(schema.pixel_format).map(|p| p.as_str_name()).unwrap_or("UNKNOWN"),
                    "encoding": FrameEncoding::try_from(schema.encoding).map(|e| e.as_str_name()).unwrap_or("UNKNOWN"),
                    "fps": schema.fps,
                })
            });
            json!({
                "channel_id": channel.channel_id,
                "source_uri": channel.source_uri,
                "topic": channel.topic,
                "created_unix_ms": channel.created_unix_ms,
                "revision": channel.revision,
                "schema": schema,
            })
        })
        .collect();
    Value::Array(values).to_string()
}

pub fn status_json(status: &FleetStatus, elapsed: Option<Duration>) -> String {
    let totals = totals(status);
    let workers: Vec<Value> = status
        .workers
        .iter()
        .filter_map(|worker| worker.report.as_ref().map(|report| (report, worker)))
        .map(|(report, worker)| {
            json!({
                "worker_id": report.worker_id,
                "frames_processed": report.frames_processed,
                "frames_dead_lettered": report.frames_dead_lettered,
                "frames_per_second": report.frames_per_second,
                "last_batch_ms": report.last_batch_ms,
                "device": report.device,
                "errors": report.errors,
                "batch_latency_p50_ms": report.batch_latency_p50_ms,
                "batch_latency_p99_ms": report.batch_latency_p99_ms,
                "lag_frames": report.lag_frames,
                "assigned_partitions": report.assigned_partitions,
                "rebalances": report.rebalances,
                "last_seen_ms_ago": worker.last_seen_ms_ago,
                "registered": worker.registered,
            })
        })
        .collect();
    let topics: Vec<Value> = status
        .topics
        .iter()
        .map(|topic| json!({"topic": topic.topic, "accumulate": topic.accumulate, "consume": topic.consume, "lag": topic.lag}))
        .collect();
    json!({
        "elapsed_s": elapsed.map(|e| e.as_secs_f64()),
        "captured": totals.captured,
        "acknowledged": totals.acknowledged,
        "failed": totals.failed,
        "processed": totals.processed,
        "dead_lettered": totals.dead_lettered,
        "frames_per_second": totals.frames_per_second,
        "accumulate": totals.accumulate,
        "consume": totals.consume,
        "lag": totals.lag,
        "drained": is_drained(status),
        "workers": workers,
        "topics": topics,
        "kafka_error": status.kafka_error,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use framefleet_proto::v1::{ChannelLedger, IngestorReport, IngestorStatus, TopicMetrics};

    fn status(finished: bool, lag: u64) -> FleetStatus {
        FleetStatus {
            ingestors: vec![IngestorStatus {
                report: Some(IngestorReport {
                    ingestor_id: "i1".into(),
                    channels: vec![ChannelLedger {
                        channel_id: "cam".into(),
                        frames_captured: 10,
                        frames_acknowledged: 10,
                        source_finished: finished,
                        ..ChannelLedger::default()
                    }],
                }),
                last_seen_ms_ago: 5,
            }],
            topics: vec![TopicMetrics {
                topic: "t".into(),
                accumulate: 10,
                consume: 10 - lag,
                lag,
            }],
            ..FleetStatus::default()
        }
    }

    #[test]
    fn drained_needs_finished_sources_and_zero_lag() {
        assert!(is_drained(&status(true, 0)));
        assert!(!is_drained(&status(false, 0)));
        assert!(!is_drained(&status(true, 3)));
        assert!(!is_drained(&FleetStatus::default()));
    }

    #[test]
    fn json_status_parses_and_carries_totals() {
        let value: Value = serde_json::from_str(&status_json(&status(true, 2), None)).expect("json");
        assert_eq!(value["captured"], 10);
        assert_eq!(value["lag"], 2);
        assert_eq!(value["drained"], false);
    }
}
