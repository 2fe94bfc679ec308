//! `framefleet audit`'s report: each channel run's acknowledged frames (its ledger, kept in
//! etcd) against the outcomes Kafka holds for it ([`framefleet_common::audit`]).

use framefleet_common::audit::{Audit, ChannelFilter, RunTally};
use framefleet_proto::v1::FleetStatus;
use serde_json::json;
use std::fmt::Write as _;

pub struct AuditReport {
    pub text: String,
    pub json: String,
    /// Per run, the larger of: acknowledged frames (by its ledger) without an outcome, and
    /// frames found in the frame topics without one; summed over runs.
    pub missing: u64,
}

struct Row<'a> {
    channel_id: &'a str,
    epoch: u64,
    /// From the run's ledger; `None` for an earlier run of the channel (only each channel's
    /// latest ledger is kept in the status).
    acknowledged: Option<u64>,
    /// Frames the run captured, failed to deliver, and sent again: from its ledger, likewise.
    captured: Option<u64>,
    failed: Option<u64>,
    resent: Option<u64>,
    /// Whether that ledger is the run's last (its source finished, every frame settled).
    finished: Option<bool>,
    tally: RunTally,
}

impl Row<'_> {
    fn missing(&self) -> u64 {
        self.acknowledged
            .map_or(0, |acknowledged| acknowledged.saturating_sub(self.tally.frames()))
    }
}

/// `frame_topics`: whether the audit read the channels' frame topics too.
pub fn audit_report(status: &FleetStatus, audit: &Audit, channels: &ChannelFilter, frame_topics: bool) -> AuditReport {
    let mut rows: Vec<Row<'_>> = status
        .ledgers
        .iter()
        .filter(|ledger| channels.admits(&ledger.channel_id))
        .map(|ledger| Row {
            channel_id: &ledger.channel_id,
            epoch: ledger.ingestor_epoch,
            acknowledged: Some(ledger.frames_acknowledged),
            captured: Some(ledger.frames_captured),
            failed: Some(ledger.frames_failed),
            resent: Some(ledger.frames_resent),
            finished: Some(ledger.source_finished),
            tally: audit
                .runs
                .get(&(ledger.channel_id.clone(), ledger.ingestor_epoch))
                .cloned()
                .unwrap_or_default(),
        })
        .collect();
    for ((channel_id, epoch), tally) in &audit.runs {
        if !rows
            .iter()
            .any(|row| row.channel_id == channel_id && row.epoch == *epoch)
        {
            rows.push(Row {
                channel_id,
                epoch: *epoch,
                acknowledged: None,
                captured: None,
                failed: None,
                resent: None,
                finished: None,
                tally: tally.clone(),
            });
        }
    }
    rows.sort_by(|a, b| (a.channel_id, a.epoch).cmp(&(b.channel_id, b.epoch)));

    let mut text = format!(
        "{:<24} {:>20} {:>9} {:>10} {:>13} {:>10} {:>8}",
        "CHANNEL", "RUN (EPOCH)", "ACKED", "PROCESSED", "DEAD-LETTERED", "DUPLICATES", "MISSING"
    );
    if frame_topics {
        let _ = write!(text, " {:>9} {:>11}", "IN-KAFKA", "NO-OUTCOME");
    }
    text.push('\n');
    for row in &rows {
        let dash_or = |value: Option<u64>| value.map_or_else(|| "-".to_owned(), |value| value.to_string());
        let _ = write!(
            text,
            "{:<24} {:>20} {:>9} {:>10} {:>13} {:>10} {:>8}",
            row.channel_id,
            row.epoch,
            dash_or(row.acknowledged),
            row.tally.processed,
            row.tally.dead_lettered,
            row.tally.duplicates,
            dash_or(row.acknowledged.map(|_| row.missing())),
        );
        if frame_topics {
            let _ = write!(text, " {:>9} {:>11}", row.tally.in_kafka, row.tally.without_outcome);
        }
        text.push('\n');
    }
    let _ = writeln!(
        text,
        "{} records read; {} unreadable results; {} dead letters without frame headers (not counted to a channel)",
        audit.records_read, audit.unreadable_results, audit.unattributed_dead_letters
    );
    // Which pipeline version made the results: while a new version takes over, a frame
    // processed by both has a result of each (the later one counted as a duplicate).
    if audit.versions.keys().any(|label| !label.is_empty()) {
        let _ = writeln!(text, "{:<32} {:>9} {:>10}", "PIPELINE@VERSION", "RESULTS", "DUPLICATES");
        for (label, tally) in &audit.versions {
            let label = if label.is_empty() {
                "(no pipeline)"
            } else {
                label.as_str()
            };
            let _ = writeln!(text, "{label:<32} {:>9} {:>10}", tally.results, tally.duplicates);
        }
    }
    if rows.iter().any(|row| row.acknowledged.is_none()) {
        text.push_str("ACKED `-`: an earlier run of the channel; only each channel's latest ledger is kept\n");
    }
    // The ledger's acknowledged frames are in the topics too: the larger count covers both.
    let missing = rows
        .iter()
        .map(|row| row.missing().max(row.tally.without_outcome))
        .sum();
    let json = json!({
        "runs": rows.iter().map(|row| json!({
            "channel_id": row.channel_id,
            "ingestor_epoch": row.epoch,
            "frames_captured": row.captured,
            "frames_acknowledged": row.acknowledged,
            "frames_failed": row.failed,
            "frames_resent": row.resent,
            "source_finished": row.finished,
            "frames_processed": row.tally.processed,
            "frames_dead_lettered": row.tally.dead_lettered,
            "duplicates": row.tally.duplicates,
            "frames_missing": row.acknowledged.map(|_| row.missing()),
            "frames_in_kafka": frame_topics.then_some(row.tally.in_kafka),
            "frames_without_outcome": frame_topics.then_some(row.tally.without_outcome),
        })).collect::<Vec<_>>(),
        "records_read": audit.records_read,
        "unreadable_results": audit.unreadable_results,
        "unattributed_dead_letters": audit.unattributed_dead_letters,
        "versions": audit.versions.iter().map(|(label, tally)| json!({
            "version": label,
            "results": tally.results,
            "duplicates": tally.duplicates,
        })).collect::<Vec<_>>(),
        "frames_missing": missing,
    })
    .to_string();
    AuditReport { text, json, missing }
}

#[cfg(test)]
mod tests {
    use super::*;
    use framefleet_proto::v1::ChannelLedger;

    #[test]
    fn acknowledged_frames_without_an_outcome_are_missing_and_earlier_runs_are_listed_apart() {
        let status = FleetStatus {
            ledgers: vec![ChannelLedger {
                channel_id: "lobby".into(),
                ingestor_epoch: 2,
                frames_captured: 104,
                frames_acknowledged: 100,
                frames_failed: 4,
                frames_resent: 9,
                ..ChannelLedger::default()
            }],
            ..FleetStatus::default()
        };
        let mut audit = Audit::default();
        audit.runs.insert(
            ("lobby".into(), 2),
            RunTally {
                processed: 95,
                dead_lettered: 3,
                duplicates: 7,
                ..RunTally::default()
            },
        );
        audit.runs.insert(
            ("lobby".into(), 1),
            RunTally {
                processed: 40,
                ..RunTally::default()
            },
        );
        let report = audit_report(&status, &audit, &ChannelFilter::default(), false);
        assert_eq!(report.missing, 2);
        let rows: Vec<Vec<&str>> = report
            .text
            .lines()
            .skip(1)
            .take(2)
            .map(|line| line.split_whitespace().collect())
            .collect();
        assert_eq!(rows[0], ["lobby", "1", "-", "40", "0", "0", "-"]);
        assert_eq!(rows[1], ["lobby", "2", "100", "95", "3", "7", "2"]);
        let value: serde_json::Value = serde_json::from_str(&report.json).expect("json");
        assert_eq!(value["frames_missing"], 2);
        // The fault suite fails a row on these: what the cameras gave, against what Kafka took.
        let latest = &value["runs"][1];
        assert_eq!(
            (
                &latest["frames_captured"],
                &latest["frames_failed"],
                &latest["frames_resent"]
            ),
            (&serde_json::json!(104), &serde_json::json!(4), &serde_json::json!(9))
        );
        assert!(
            value["runs"][0]["frames_captured"].is_null(),
            "no ledger for the earlier run"
        );

        // A frame in the topic with no outcome counts whether or not a ledger says it was
        // acknowledged (here: the earlier run, whose ledger is gone).
        if let Some(tally) = audit.runs.get_mut(&("lobby".to_owned(), 1)) {
            tally.in_kafka = 41;
            tally.without_outcome = 1;
        }
        let report = audit_report(&status, &audit, &ChannelFilter::default(), true);
        assert_eq!(report.missing, 3, "2 for the latest run, 1 for the earlier");
        assert!(
            report
                .text
                .lines()
                .next()
                .is_some_and(|header| header.ends_with("IN-KAFKA  NO-OUTCOME")),
            "{}",
            report.text
        );
        let value: serde_json::Value = serde_json::from_str(&report.json).expect("json");
        assert_eq!(value["runs"][0]["frames_without_outcome"], 1);
    }
}
