//! The fleet's state as people and scripts read it: totals, "drained", the progress line, the
//! status report, the end-to-end accounting and the run summary, as text and JSON. Pure
//! functions, so they are easy to test.

use framefleet_proto::v1::{Channel, ChannelState, FleetStatus};
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
    pub sources_finished: bool,
}

/// The fleet's counts as every screen shows them (progress line, status, run summary): what
/// ingestors captured and Kafka acknowledged from the ledgers the coordinator keeps in etcd
/// (the same figures `audit` checks, and they outlive ingestors), what was written to and
/// committed on the topics from Kafka's offsets, and what workers wrote from their reports.
pub fn totals(status: &FleetStatus) -> Totals {
    let (mut captured, mut acknowledged, mut failed) = (0, 0, 0);
    for ledger in &status.ledgers {
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
        // A topic read by several pipelines has a row for each, with the same accumulate.
        accumulate: status
            .topics
            .iter()
            .map(|topic| (topic.topic.as_str(), topic.accumulate))
            .collect::<std::collections::BTreeMap<_, _>>()
            .values()
            .sum(),
        consume: status.topics.iter().map(|topic| topic.consume).sum(),
        lag: status.topics.iter().map(|topic| topic.lag).sum(),
        frames_per_second: status.frames_per_second,
        // Workers whose registration is gone (stopped, killed) keep their last report for a
        // while so their frames stay counted, but they are not part of the fleet any more.
        workers: status.workers.iter().filter(|worker| worker.registered).count(),
        // At least one channel, and every one finished: "all of none" is not "finished".
        sources_finished: !status.ledgers.is_empty() && status.ledgers.iter().all(|ledger| ledger.source_finished),
    }
}

/// The one meaning of "drained" on every screen (`status`, `watch`, the run summary), for
/// the registered `channels`: Kafka could be read, no topic shows lag, at least one of them
/// has a stored ledger and each such ledger says its source finished, and no active channel
/// is still waiting for its first ledger. Decided from durable facts only: the ledgers the
/// coordinator keeps in etcd and Kafka's committed offsets, never from in-memory reports that
/// expire. (A deleted channel's ledger does not count: its drain finished before deletion.)
pub fn is_drained(status: &FleetStatus, channels: &[Channel]) -> bool {
    if !status.kafka_error.is_empty() || status.topics.iter().any(|topic| topic.lag > 0) {
        return false;
    }
    let ledger_of = |channel: &Channel| {
        status
            .ledgers
            .iter()
            .find(|ledger| ledger.channel_id == channel.channel_id)
    };
    let mut any_ledger = false;
    for channel in channels {
        match ledger_of(channel) {
            Some(ledger) if !ledger.source_finished => return false,
            Some(_) => any_ledger = true,
            None if channel.state == ChannelState::Active as i32 => return false,
            None => {}
        }
    }
    any_ledger
}

/// What `watch --until-drained` waits for: [`is_drained`], once the channels it waits for
/// exist — never drained on channels of earlier runs alone.
#[derive(Debug, Default)]
pub struct DrainTracker {
    /// Channels this watch waits for: those whose source had not ended when it started or
    /// that started since (a stored ledger not finished, an active channel not captured yet,
    /// or a run that began after the watch did, even one that also ended between two polls).
    tracked: std::collections::BTreeSet<String>,
    /// When the watch started (unix ms): a ledger of a run that began at or after it is the
    /// new run's.
    since_unix_ms: u64,
}

impl DrainTracker {
    /// A tracker for a watch that started at `since_unix_ms`; 0 counts no run as new by its
    /// start time alone.
    pub fn since(since_unix_ms: u64) -> Self {
        Self {
            since_unix_ms,
            ..Self::default()
        }
    }

    /// Takes in one poll; true when the fleet [`is_drained`] and this watch has channels to
    /// wait for (a fleet whose every channel had finished before the watch started has not
    /// drained a new run yet).
    pub fn drained(&mut self, status: &FleetStatus, channels: &[framefleet_proto::v1::Channel]) -> bool {
        for ledger in &status.ledgers {
            let began_since = self.since_unix_ms > 0 && ledger.ingestor_epoch >= self.since_unix_ms;
            if !ledger.source_finished || began_since {
                self.tracked.insert(ledger.channel_id.clone());
            }
        }
        for channel in channels {
            let active = channel.state == ChannelState::Active as i32;
            let reported = status
                .ledgers
                .iter()
                .any(|ledger| ledger.channel_id == channel.channel_id);
            if active && !reported {
                self.tracked.insert(channel.channel_id.clone());
            }
        }
        !self.tracked.is_empty() && is_drained(status, channels)
    }

    /// How many channels this watch waits for.
    pub fn tracked(&self) -> usize {
        self.tracked.len()
    }
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
    if totals.sources_finished {
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
        "{:<24} {:<20} {:>10} {:>10} {:>8} {:>8} {:>8} {:>7} {:>5} {:>8} {:>8} {:>10}",
        "WORKER",
        "PIPELINE",
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
    let mut gone = Vec::new();
    for worker in &status.workers {
        if !worker.registered {
            if let Some(report) = &worker.report {
                gone.push(format!("{} ({} processed)", report.worker_id, report.frames_processed));
            }
            continue;
        }
        if let Some(report) = &worker.report {
            let _ = writeln!(
                out,
                "{:<24} {:<20} {:>10} {:>10} {:>8.1} {:>8.1} {:>8.1} {:>7} {:>5} {:>8} {:>8} {:>10}",
                report.worker_id,
                if report.pipeline.is_empty() {
                    "-".to_owned()
                } else {
                    format!("{}@{}", report.pipeline, report.pipeline_version)
                },
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
    if !gone.is_empty() {
        let _ = writeln!(out, "left the fleet: {}", gone.join(", "));
    }
    // A worker that cannot run its pipeline's newest version keeps the one it runs: say why.
    for worker in status.workers.iter().filter(|worker| worker.registered) {
        if let Some(report) = worker
            .report
            .as_ref()
            .filter(|report| !report.pipeline_error.is_empty())
        {
            let _ = writeln!(
                out,
                "{} runs {}@{}, not the newest version: {}",
                report.worker_id, report.pipeline, report.pipeline_version, report.pipeline_error
            );
        }
    }
    // Dead letters by code over the whole fleet, so an operator sees what kind of bad input
    // arrives, not only how much.
    let mut by_code: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
    for report in status.workers.iter().filter_map(|worker| worker.report.as_ref()) {
        for (code, count) in &report.dead_letters_by_code {
            *by_code.entry(code.as_str()).or_default() += count;
        }
    }
    if !by_code.is_empty() {
        let listed: Vec<String> = by_code
            .iter()
            .map(|(code, count)| format!("{} {count}", code.trim_start_matches("DEAD_LETTER_CODE_")))
            .collect();
        let _ = writeln!(out, "dead letters by code: {}", listed.join(", "));
    }
    let _ = writeln!(
        out,
        "\n{:<24} {:<24} {:<12} {:>9} {:>9} {:>7} {:>7} {:>7} {:>8}",
        "INGESTOR", "CHANNEL", "STATE", "CAPTURED", "ACKED", "FAILED", "UNDEC", "CRASHES", "FINISHED"
    );
    let mut problems = Vec::new();
    for ingestor in &status.ingestors {
        if let Some(report) = &ingestor.report {
            for ledger in &report.channels {
                let _ = writeln!(
                    out,
                    "{:<24} {:<24} {:<12} {:>9} {:>9} {:>7} {:>7} {:>7} {:>8}",
                    report.ingestor_id,
                    ledger.channel_id,
                    source_state(ledger),
                    ledger.frames_captured,
                    ledger.frames_acknowledged,
                    ledger.frames_failed,
                    ledger.frames_undecodable,
                    ledger.capture_crashes,
                    ledger.source_finished
                );
                if !ledger.last_error.is_empty() {
                    problems.push(format!("  {}: {}", ledger.channel_id, ledger.last_error));
                }
                if !ledger.last_undecodable.is_empty() {
                    problems.push(format!(
                        "  {}: last undecodable: {}",
                        ledger.channel_id, ledger.last_undecodable
                    ));
                }
            }
        }
    }
    // A failed channel must not read like an empty success: say why, under the table.
    for problem in problems {
        let _ = writeln!(out, "{problem}");
    }
    let _ = writeln!(
        out,
        "\n{:<40} {:<16} {:>10} {:>10} {:>8} {:>8} {:>8} {:>8}",
        "TOPIC", "PIPELINE", "ACCUMULATE", "CONSUME", "LAG", "LAG-S", "IN/S", "OUT/S"
    );
    for topic in &status.topics {
        let _ = writeln!(
            out,
            "{:<40} {:<16} {:>10} {:>10} {:>8} {:>8.1} {:>8.1} {:>8.1}",
            topic.topic,
            if topic.pipeline.is_empty() {
                "-"
            } else {
                topic.pipeline.as_str()
            },
            topic.accumulate,
            topic.consume,
            topic.lag,
            topic.lag_seconds,
            topic.accumulate_per_second,
            topic.consume_per_second
        );
    }
    if !status.channels.is_empty() {
        let _ = writeln!(
            out,
            "\n{:<24} {:<24} {:>9} {:>9} {:>8} {:>7} {:>10}",
            "CHANNEL", "INGESTOR", "CAPTURED", "ACKED", "DROPPED", "FAILED", "CAPTURE/S"
        );
        for channel in &status.channels {
            let _ = writeln!(
                out,
                "{:<24} {:<24} {:>9} {:>9} {:>8} {:>7} {:>10.1}",
                channel.channel_id,
                channel.ingestor_id,
                channel.frames_captured,
                channel.frames_acknowledged,
                channel.frames_dropped,
                channel.frames_failed,
                channel.captured_per_second
            );
        }
    }
    let leader = if status.leader_id.is_empty() {
        "none"
    } else {
        status.leader_id.as_str()
    };
    let _ = writeln!(
        out,
        "\nleader: {leader}   answered by: {}   registered ingestors: {}",
        status.coordinator_id,
        if status.registered_ingestors.is_empty() {
            "none".to_owned()
        } else {
            status.registered_ingestors.join(", ")
        }
    );
    if !status.kafka_error.is_empty() {
        let _ = writeln!(out, "kafka error: {}", status.kafka_error);
    }
    out
}

/// Per channel, end to end, from durable sources only: what the ingestor had acknowledged by
/// Kafka (its ledger as kept in etcd) against what the worker group has committed on the
/// channel's topics (every committed frame has a result or a dead letter). A channel whose
/// topic other channels share (the pool) has no count of its own there.
pub fn accounting_table(status: &FleetStatus, channels: &[Channel]) -> String {
    use std::collections::HashMap;
    let mut users: HashMap<&str, usize> = HashMap::new();
    for channel in channels {
        for topic in channel.all_topics() {
            *users.entry(topic.as_str()).or_default() += 1;
        }
    }
    let consume: HashMap<&str, u64> = status
        .topics
        .iter()
        .map(|topic| (topic.topic.as_str(), topic.consume))
        .collect();
    let mut out = format!(
        "{:<24} {:<12} {:>9} {:>9} {:>7} {:>10} {:>11}\n",
        "CHANNEL", "SOURCE", "CAPTURED", "ACKED", "FAILED", "COMMITTED", "OUTSTANDING"
    );
    for ledger in &status.ledgers {
        let committed = channels
            .iter()
            .find(|channel| channel.channel_id == ledger.channel_id)
            .and_then(|channel| {
                // Each frame goes to every topic of the channel: the least committed one counts.
                channel
                    .all_topics()
                    .iter()
                    .map(String::as_str)
                    .map(|topic| {
                        (users.get(topic).copied() == Some(1))
                            .then(|| consume.get(topic).copied())
                            .flatten()
                    })
                    .collect::<Option<Vec<u64>>>()
                    .and_then(|committed| committed.into_iter().min())
            });
        let (committed, outstanding) = match committed {
            Some(committed) => (
                committed.to_string(),
                ledger.frames_acknowledged.saturating_sub(committed).to_string(),
            ),
            None => ("shared".to_owned(), "-".to_owned()),
        };
        let _ = writeln!(
            out,
            "{:<24} {:<12} {:>9} {:>9} {:>7} {:>10} {:>11}",
            ledger.channel_id,
            source_state(ledger),
            ledger.frames_captured,
            ledger.frames_acknowledged,
            ledger.frames_failed,
            committed,
            outstanding
        );
    }
    out
}

/// A ledger's source state, `-` when the ingestor has not said.
fn source_state(ledger: &framefleet_proto::v1::ChannelLedger) -> &str {
    if ledger.source_state.is_empty() {
        "-"
    } else {
        &ledger.source_state
    }
}

pub fn final_summary(status: &FleetStatus, elapsed: Duration, channels: &[Channel]) -> String {
    let totals = totals(status);
    let seconds = elapsed.as_secs_f64().max(f64::EPSILON);
    let mut out = String::from("== framefleet run summary ==\n");
    let rows = [
        ("frames captured", totals.captured.to_string()),
        ("frames acknowledged by Kafka", totals.acknowledged.to_string()),
        ("frames failed to deliver", totals.failed.to_string()),
        ("results written", totals.processed.to_string()),
        ("dead letters written", totals.dead_lettered.to_string()),
        // Workers report what they wrote, Kafka what the group committed: the difference is
        // frames processed again after a rebalance (at-least-once), not extra frames.
        (
            "written again after rebalances",
            (totals.processed + totals.dead_lettered)
                .saturating_sub(totals.consume)
                .to_string(),
        ),
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
    if !status.ledgers.is_empty() {
        out.push_str("\nEnd to end per channel (ledgers kept in etcd; offsets committed in Kafka):\n");
        out.push_str(&accounting_table(status, channels));
    }
    out.push('\n');
    out.push_str(&status_report(status));
    out
}

pub fn status_json(status: &FleetStatus, registered: &[Channel], elapsed: Option<Duration>) -> String {
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
                "pipeline": report.pipeline,
                "pipeline_version": report.pipeline_version,
                "pipeline_error": report.pipeline_error,
                "errors": report.errors,
                "batch_latency_p50_ms": report.batch_latency_p50_ms,
                "batch_latency_p99_ms": report.batch_latency_p99_ms,
                "lag_frames": report.lag_frames,
                "assigned_partitions": report.assigned_partitions,
                "rebalances": report.rebalances,
                "dead_letters_by_code": report.dead_letters_by_code,
                "last_seen_ms_ago": worker.last_seen_ms_ago,
                "registered": worker.registered,
            })
        })
        .collect();
    let topics: Vec<Value> = status
        .topics
        .iter()
        .map(|topic| {
            json!({
                "topic": topic.topic,
                "pipeline": topic.pipeline,
                "accumulate": topic.accumulate,
                "consume": topic.consume,
                "lag": topic.lag,
                "lag_seconds": topic.lag_seconds,
                "accumulate_per_second": topic.accumulate_per_second,
                "consume_per_second": topic.consume_per_second,
            })
        })
        .collect();
    let channels: Vec<Value> = status
        .channels
        .iter()
        .map(|channel| {
            json!({
                "channel_id": channel.channel_id,
                "ingestor_id": channel.ingestor_id,
                "frames_captured": channel.frames_captured,
                "frames_acknowledged": channel.frames_acknowledged,
                "frames_dropped": channel.frames_dropped,
                "frames_failed": channel.frames_failed,
                "captured_per_second": channel.captured_per_second,
            })
        })
        .collect();
    // Each channel's source as its ingestor last reported it: state, errors, damage.
    let sources: Vec<Value> = status
        .ingestors
        .iter()
        .filter_map(|ingestor| ingestor.report.as_ref())
        .flat_map(|report| report.channels.iter().map(move |ledger| (report, ledger)))
        .map(|(report, ledger)| {
            json!({
                "ingestor_id": report.ingestor_id,
                "channel_id": ledger.channel_id,
                "source_state": ledger.source_state,
                "source_finished": ledger.source_finished,
                "frames_captured": ledger.frames_captured,
                "frames_acknowledged": ledger.frames_acknowledged,
                "frames_failed": ledger.frames_failed,
                "frames_undecodable": ledger.frames_undecodable,
                "capture_crashes": ledger.capture_crashes,
                "source_gaps": ledger.source_gaps,
                "source_gap_ms": ledger.source_gap_ms,
                "last_error": ledger.last_error,
                "last_undecodable": ledger.last_undecodable,
            })
        })
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
        "drained": is_drained(status, registered),
        "workers": workers,
        "topics": topics,
        "channels": channels,
        "sources": sources,
        "leader_id": status.leader_id,
        "coordinator_id": status.coordinator_id,
        "registered_ingestors": status.registered_ingestors,
        "kafka_error": status.kafka_error,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use framefleet_proto::v1::{ChannelLedger, IngestorReport, IngestorStatus, TopicMetrics};

    /// Channel `cam` on topic `t`: 10 frames captured and acknowledged, as its ingestor
    /// reported and the coordinator stored.
    fn status(finished: bool, lag: u64) -> FleetStatus {
        let ledger = ChannelLedger {
            channel_id: "cam".into(),
            frames_captured: 10,
            frames_acknowledged: 10,
            source_finished: finished,
            ..ChannelLedger::default()
        };
        FleetStatus {
            ingestors: vec![IngestorStatus {
                report: Some(IngestorReport {
                    ingestor_id: "i1".into(),
                    channels: vec![ledger.clone()],
                    accepts_assignments: true,
                }),
                last_seen_ms_ago: 5,
            }],
            ledgers: vec![ledger],
            topics: vec![TopicMetrics {
                topic: "t".into(),
                accumulate: 10,
                consume: 10 - lag,
                lag,
                ..TopicMetrics::default()
            }],
            ..FleetStatus::default()
        }
    }

    fn channel(id: &str, topic: &str) -> framefleet_proto::v1::Channel {
        framefleet_proto::v1::Channel {
            channel_id: id.into(),
            topic: topic.into(),
            state: framefleet_proto::v1::ChannelState::Active.into(),
            ..Default::default()
        }
    }

    fn ledger(id: &str, finished: bool) -> ChannelLedger {
        ChannelLedger {
            channel_id: id.into(),
            source_finished: finished,
            ..ChannelLedger::default()
        }
    }

    #[test]
    fn until_drained_waits_for_the_new_run_not_the_old_one() {
        let mut tracker = DrainTracker::default();
        let lag = |topic: &str, lag: u64| TopicMetrics {
            topic: topic.into(),
            accumulate: 300,
            consume: 300 - lag,
            lag,
            ..TopicMetrics::default()
        };
        // History: channel `old` finished and drained. A new channel `new` is registered but
        // its ingestor has not reported yet.
        let mut fleet = FleetStatus {
            ledgers: vec![ledger("old", true)],
            topics: vec![lag("t-old", 0), lag("t-new", 0)],
            ..FleetStatus::default()
        };
        let channels = [channel("old", "t-old"), channel("new", "t-new")];
        assert!(!tracker.drained(&fleet, &channels), "the new run has not even started");
        assert_eq!(tracker.tracked(), 1);
        fleet.ledgers.push(ledger("new", false));
        fleet.topics[1] = lag("t-new", 40);
        assert!(!tracker.drained(&fleet, &channels));
        fleet.ledgers[1].source_finished = true;
        assert!(!tracker.drained(&fleet, &channels), "ended but 40 frames not committed");
        fleet.topics[1] = lag("t-new", 0);
        assert!(tracker.drained(&fleet, &channels));
        // A record written into the old, untracked channel's topic: not drained until it has
        // its outcome.
        fleet.topics[0] = lag("t-old", 1);
        assert!(!tracker.drained(&fleet, &channels), "the old topic lags");
        fleet.topics[0] = lag("t-old", 0);
        assert!(tracker.drained(&fleet, &channels));
        // Nothing at all to wait for is not "drained".
        assert!(!DrainTracker::default().drained(&FleetStatus::default(), &[]));
    }

    #[test]
    fn a_run_that_began_and_ended_between_two_polls_is_waited_for() {
        let watch_started = 1_000_000;
        let finished_run = |epoch: u64| ChannelLedger {
            ingestor_epoch: epoch,
            ..ledger("quick", true)
        };
        let channels = [channel("quick", "t")];
        let lagging = FleetStatus {
            ledgers: vec![finished_run(watch_started + 300)],
            topics: vec![TopicMetrics {
                topic: "t".into(),
                accumulate: 30,
                lag: 30,
                ..TopicMetrics::default()
            }],
            ..FleetStatus::default()
        };
        let mut tracker = DrainTracker::since(watch_started);
        assert!(!tracker.drained(&lagging, &channels), "30 frames not committed");
        assert_eq!(tracker.tracked(), 1, "the run began after the watch: it is the new run");
        let drained = FleetStatus {
            topics: vec![TopicMetrics {
                topic: "t".into(),
                accumulate: 30,
                consume: 30,
                ..TopicMetrics::default()
            }],
            ..lagging.clone()
        };
        assert!(tracker.drained(&drained, &channels));
        // A run that ended before the watch started is history, not the new run.
        let old = FleetStatus {
            ledgers: vec![finished_run(watch_started - 1)],
            ..drained
        };
        assert!(!DrainTracker::since(watch_started).drained(&old, &channels));
    }

    #[test]
    fn drained_needs_finished_sources_and_zero_lag() {
        let cam = [channel("cam", "t")];
        assert!(is_drained(&status(true, 0), &cam));
        assert!(!is_drained(&status(false, 0), &cam));
        assert!(!is_drained(&status(true, 3), &cam));
        assert!(!is_drained(&FleetStatus::default(), &[]));
        let mut unreadable = status(true, 0);
        unreadable.kafka_error = "broker down".into();
        assert!(!is_drained(&unreadable, &cam), "lag unknown is not lag 0");
        // A second active channel whose ingestor has not stored a ledger yet.
        assert!(!is_drained(
            &status(true, 0),
            &[channel("cam", "t"), channel("new", "t2")]
        ));
    }

    #[test]
    fn totals_come_from_the_stored_ledgers_not_the_last_reports() {
        let mut fleet = status(true, 0);
        // The report is a second older than what the coordinator has stored since; another
        // channel's ingestor is gone, its ledger kept.
        fleet.ledgers[0].frames_acknowledged = 12;
        fleet.ledgers.push(ChannelLedger {
            channel_id: "gone".into(),
            frames_captured: 5,
            frames_acknowledged: 5,
            frames_failed: 1,
            source_finished: true,
            ..ChannelLedger::default()
        });
        let totals = totals(&fleet);
        assert_eq!((totals.captured, totals.acknowledged, totals.failed), (15, 17, 1));
        let json: Value = serde_json::from_str(&status_json(&fleet, &[], None)).expect("json");
        assert_eq!(json["acknowledged"], 17);
        assert!(progress_line(&fleet, Duration::from_secs(1)).contains("acked     17"));
    }

    #[test]
    fn the_status_report_says_why_a_channel_failed() {
        let mut failed = status(true, 0);
        if let Some(report) = failed.ingestors[0].report.as_mut() {
            let ledger = &mut report.channels[0];
            ledger.source_state = "failed".into();
            ledger.capture_crashes = 1;
            ledger.frames_undecodable = 4;
            ledger.last_error = "capture process of `x.mp4` crashed (killed by signal 11 (SIGSEGV))".into();
            ledger.last_undecodable = "`a.jpg` is not a readable image".into();
        }
        failed.workers = vec![framefleet_proto::v1::WorkerStatus {
            report: Some(framefleet_proto::v1::WorkerReport {
                worker_id: "w1".into(),
                frames_dead_lettered: 3,
                dead_letters_by_code: [
                    ("DEAD_LETTER_CODE_TRUNCATED_IMAGE".to_owned(), 2),
                    ("DEAD_LETTER_CODE_KEY_MISMATCH".to_owned(), 1),
                ]
                .into_iter()
                .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }];
        let report = status_report(&failed);
        assert!(
            report.contains("dead letters by code: KEY_MISMATCH 1, TRUNCATED_IMAGE 2"),
            "{report}"
        );
        assert!(report.contains("failed"), "{report}");
        assert!(report.contains("cam: capture process of `x.mp4` crashed"), "{report}");
        assert!(report.contains("cam: last undecodable: `a.jpg`"), "{report}");
        let row = report
            .lines()
            .find(|line| line.starts_with("i1 "))
            .expect("the channel's row");
        let columns: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            columns,
            ["i1", "cam", "failed", "10", "10", "0", "4", "1", "true"],
            "{row}"
        );
    }

    #[test]
    fn end_to_end_accounting_per_channel_from_durable_sources() {
        let mut fleet = FleetStatus {
            ledgers: vec![
                ChannelLedger {
                    channel_id: "lobby".into(),
                    frames_captured: 100,
                    frames_acknowledged: 100,
                    source_state: "ended".into(),
                    ..ChannelLedger::default()
                },
                ChannelLedger {
                    channel_id: "door".into(),
                    frames_acknowledged: 50,
                    ..ChannelLedger::default()
                },
            ],
            topics: vec![
                TopicMetrics {
                    topic: "t-lobby".into(),
                    consume: 97,
                    ..TopicMetrics::default()
                },
                TopicMetrics {
                    topic: "pool".into(),
                    consume: 80,
                    ..TopicMetrics::default()
                },
            ],
            ..FleetStatus::default()
        };
        let channels = [
            channel("lobby", "t-lobby"),
            channel("door", "pool"),
            channel("gate", "pool"),
        ];
        let table = accounting_table(&fleet, &channels);
        let row = |id: &str| -> Vec<String> {
            table
                .lines()
                .find(|line| line.starts_with(id))
                .expect("row")
                .split_whitespace()
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(row("lobby"), ["lobby", "ended", "100", "100", "0", "97", "3"]);
        assert_eq!(row("door"), ["door", "-", "0", "50", "0", "shared", "-"]);
        fleet.ledgers.clear();
        assert!(!final_summary(&fleet, Duration::from_secs(1), &channels).contains("End to end per channel"));
    }

    #[test]
    fn a_worker_that_left_is_not_counted_or_listed_as_part_of_the_fleet() {
        let mut fleet = status(true, 0);
        let worker = |id: &str, registered: bool| framefleet_proto::v1::WorkerStatus {
            report: Some(framefleet_proto::v1::WorkerReport {
                worker_id: id.into(),
                frames_processed: 5,
                ..Default::default()
            }),
            registered,
            ..Default::default()
        };
        fleet.workers = vec![worker("alive", true), worker("killed", false)];
        assert_eq!(totals(&fleet).workers, 1);
        let report = status_report(&fleet);
        assert!(report.lines().any(|line| line.starts_with("alive ")), "{report}");
        assert!(!report.lines().any(|line| line.starts_with("killed ")), "{report}");
        assert!(report.contains("left the fleet: killed (5 processed)"), "{report}");
        assert!(progress_line(&fleet, Duration::from_secs(1)).contains("1 workers"));
    }

    #[test]
    fn a_channel_with_no_stored_ledger_yet_has_not_finished() {
        let mut fresh = status(true, 0);
        fresh.ledgers.clear();
        assert!(!totals(&fresh).sources_finished);
        assert!(!progress_line(&fresh, Duration::from_secs(1)).contains("sources finished"));
        assert!(!is_drained(&fresh, &[channel("cam", "t")]));
    }

    #[test]
    fn json_status_parses_and_carries_totals() {
        let value: Value =
            serde_json::from_str(&status_json(&status(true, 2), &[channel("cam", "t")], None)).expect("json");
        assert_eq!(value["captured"], 10);
        assert_eq!(value["lag"], 2);
        assert_eq!(value["drained"], false);
        assert_eq!(value["sources"][0]["channel_id"], "cam");
        assert_eq!(value["sources"][0]["source_finished"], true);
        assert_eq!(value["sources"][0]["capture_crashes"], 0);
    }
}
