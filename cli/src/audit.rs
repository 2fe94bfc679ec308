//! `framefleet audit`'s report: each channel run's acknowledged frames (its ledger, kept in
//! etcd) against the outcomes Kafka holds for it ([`framefleet_common::audit`]).

use framefleet_common::audit::{Audit, RunTally};
use framefleet_proto::v1::FleetStatus;
use serde_json::json;
use std::fmt::Write as _;

pub struct AuditReport {
    pub text: String,
    pub json: String,
    /// Acknowledged frames of runs with a ledger that have no outcome.
    pub missing: u64,
}

struct Row<'a> {
    channel_id: &'a str,
    epoch: u64,
    /// From the run's ledger; `None` for an earlier run of the channel (only each channel's
    /// latest ledger is kept in the status).
    acknowledged: Option<u64>,
    tally: RunTally,
}

impl Row<'_> {
    fn missing(&self) -> u64 {
        self.acknowledged
            .map_or(0, |acknowledged| acknowledged.saturating_sub(self.tally.frames()))
    }
}

pub fn audit_report(status: &FleetStatus, audit: &Audit, channel_prefix: &str) -> AuditReport {
    let mut rows: Vec<Row<'_>> = status
        .ledgers
        .iter()
        .filter(|ledger| ledger.channel_id.starts_with(channel_prefix))
        .map(|ledger| Row {
            channel_id: &ledger.channel_id,
            epoch: ledger.ingestor_epoch,
            acknowledged: Some(ledger.frames_acknowledged),
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
                tally: tally.clone(),
            });
        }
    }
    rows.sort_by(|a, b| (a.channel_id, a.epoch).cmp(&(b.channel_id, b.epoch)));

    let mut text = format!(
        "{:<24} {:>20} {:>9} {:>10} {:>13} {:>10} {:>8}\n",
        "CHANNEL", "RUN (EPOCH)", "ACKED", "PROCESSED", "DEAD-LETTERED", "DUPLICATES", "MISSING"
    );
    for row in &rows {
        let _ = writeln!(
            text,
            "{:<24} {:>20} {:>9} {:>10} {:>13} {:>10} {:>8}",
            row.channel_id,
            row.epoch,
            row.acknowledged
                .map_or_else(|| "-".to_owned(), |acked| acked.to_string()),
            row.tally.processed,
            row.tally.dead_lettered,
            row.tally.duplicates,
            row.acknowledged
                .map_or_else(|| "-".to_owned(), |_| row.missing().to_string()),
        );
    }
    let _ = writeln!(
        text,
        "{} records read; {} unreadable results; {} dead letters without frame headers (not counted to a channel)",
        audit.records_read, audit.unreadable_results, audit.unattributed_dead_letters
    );
    if rows.iter().any(|row| row.acknowledged.is_none()) {
        text.push_str("ACKED `-`: an earlier run of the channel; only each channel's latest ledger is kept\n");
    }
    let missing = rows.iter().map(Row::missing).sum();
    let json = json!({
        "runs": rows.iter().map(|row| json!({
            "channel_id": row.channel_id,
            "ingestor_epoch": row.epoch,
            "frames_acknowledged": row.acknowledged,
            "frames_processed": row.tally.processed,
            "frames_dead_lettered": row.tally.dead_lettered,
            "duplicates": row.tally.duplicates,
            "frames_missing": row.acknowledged.map(|_| row.missing()),
        })).collect::<Vec<_>>(),
        "records_read": audit.records_read,
        "unreadable_results": audit.unreadable_results,
        "unattributed_dead_letters": audit.unattributed_dead_letters,
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
                frames_acknowledged: 100,
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
            },
        );
        audit.runs.insert(
            ("lobby".into(), 1),
            RunTally {
                processed: 40,
                ..RunTally::default()
            },
        );
        let report = audit_report(&status, &audit, "");
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
    }
}
