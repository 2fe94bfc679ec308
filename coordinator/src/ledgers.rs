//! Channel ledgers kept in etcd — the latest per channel (`ledgers/<channel id>`) and the last
//! of every run (`ledger-runs/<channel id>/<ingestor epoch>`) — so that what an ingestor reported
//! of a channel — captured, acknowledged, failed, its source's final state and last error —
//! outlives the ingestor. Reports arrive in memory ([`FleetRegistry`]); a background task of
//! each coordinator stores the ledgers of the reports it received whenever they change, at
//! most once per [`PERSIST_INTERVAL`] per channel.

use crate::error::CoordinatorError;
use crate::fleet::FleetRegistry;
use crate::store::{CommitOutcome, Condition, MetadataStore, Write};
use framefleet_proto::v1::{ChannelLedger, IngestorReport};
use prost::Message;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const LEDGER_KEY_PREFIX: &str = "ledgers/";
/// The last ledger of each run of each channel.
pub const RUN_LEDGER_KEY_PREFIX: &str = "ledger-runs/";
/// How often reports are looked at for changed ledgers.
pub const PERSIST_INTERVAL: Duration = Duration::from_secs(1);

fn key(channel_id: &str) -> String {
    format!("{LEDGER_KEY_PREFIX}{channel_id}")
}

/// Stores changed ledgers until `stop`.
pub fn spawn_keeper<S: MetadataStore + Clone + Send + Sync + 'static>(
    store: S,
    fleet: Arc<FleetRegistry>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut stored: HashMap<(String, u64), ChannelLedger> = HashMap::new();
        let mut ticks = tokio::time::interval(PERSIST_INTERVAL);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = ticks.tick() => {}
            }
            if let Err(error) = persist_changed(&store, &fleet, &mut stored).await {
                tracing::warn!(%error, "storing channel ledgers failed; will retry");
            }
        }
        // A last look, so the final reports of ingestors that just finished are kept.
        if let Err(error) = persist_changed(&store, &fleet, &mut stored).await {
            tracing::warn!(%error, "storing the last channel ledgers failed");
        }
    })
}

/// Stores each changed ledger under its run, and as the channel's latest — each only if what
/// is stored there is not further along ([`progress`]). A coordinator may hold a stale report:
/// the last one of a run that was replaced (an ingestor killed and started again), or of a
/// run whose ingestor moved to another coordinator while this one was cut off. "Latest" must
/// mean the furthest report of the newest run, not the last writer.
async fn persist_changed<S: MetadataStore>(
    store: &S,
    fleet: &FleetRegistry,
    stored: &mut HashMap<(String, u64), ChannelLedger>,
) -> Result<(), CoordinatorError> {
    let mut newest: HashMap<String, ChannelLedger> = HashMap::new();
    let mut changed: Vec<ChannelLedger> = Vec::new();
    for ingestor in fleet.ingestors() {
        let Some(report) = ingestor.report else { continue };
        for ledger in attributed(report) {
            if stored.get(&(ledger.channel_id.clone(), ledger.ingestor_epoch)) == Some(&ledger) {
                continue;
            }
            if newest
                .get(&ledger.channel_id)
                .is_none_or(|kept| progress(kept) <= progress(&ledger))
            {
                newest.insert(ledger.channel_id.clone(), ledger.clone());
            }
            changed.push(ledger);
        }
    }
    for ledger in changed {
        let run_done = store_if_further(store, &run_key(&ledger), &ledger).await?;
        let latest_done = if newest.get(&ledger.channel_id) == Some(&ledger) {
            store_if_further(store, &key(&ledger.channel_id), &ledger).await?
        } else {
            true
        };
        // A write that lost a race with another coordinator is looked at again next pass.
        if run_done && latest_done {
            stored.insert((ledger.channel_id.clone(), ledger.ingestor_epoch), ledger);
        }
    }
    Ok(())
}

/// Writes a report stream's last report's ledgers — each under its run, and as the channel's
/// latest unless a further one is stored there — before the stream is answered, so that an
/// ingestor that exits after an OK answer leaves its final counts in etcd (the keeper's next
/// pass may never come: this coordinator can be cut off or stopped first). A write that loses a
/// race with another coordinator is read and tried again, up to [`FINAL_WRITE_ATTEMPTS`] times.
///
/// Errors: the store's, or `StoreUnavailable` when every attempt lost a race.
pub async fn store_final<S: MetadataStore>(store: &S, report: IngestorReport) -> Result<(), CoordinatorError> {
    for ledger in attributed(report) {
        for key in [run_key(&ledger), key(&ledger.channel_id)] {
            let mut attempts = 0;
            while !store_if_further(store, &key, &ledger).await? {
                attempts += 1;
                if attempts == FINAL_WRITE_ATTEMPTS {
                    return Err(CoordinatorError::StoreUnavailable(format!(
                        "`{key}` changed under each of {FINAL_WRITE_ATTEMPTS} writes"
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Conditional writes of a final ledger tried before giving up (each loses only to a write of
/// the same key by another coordinator in between).
const FINAL_WRITE_ATTEMPTS: u32 = 5;

/// A report's ledgers, each naming the ingestor that reported it (the ingestor sends its id
/// once per report, not per ledger).
fn attributed(report: IngestorReport) -> impl Iterator<Item = ChannelLedger> {
    let ingestor_id = report.ingestor_id;
    report.channels.into_iter().map(move |ledger| ChannelLedger {
        ingestor_id: ingestor_id.clone(),
        ..ledger
    })
}

/// How far along a report is: the newer run first, then (reports of one run only grow) the
/// more frames counted, then finished.
fn progress(ledger: &ChannelLedger) -> (u64, u64, u64, bool) {
    (
        ledger.ingestor_epoch,
        ledger.frames_captured,
        ledger.frames_acknowledged + ledger.frames_failed + ledger.frames_dropped,
        ledger.source_finished,
    )
}

/// Writes `ledger` under `key` unless the stored one is further along; false when another
/// writer changed the key meanwhile (nothing written).
async fn store_if_further<S: MetadataStore>(
    store: &S,
    key: &str,
    ledger: &ChannelLedger,
) -> Result<bool, CoordinatorError> {
    let current = store.get(key).await?;
    let condition = match &current {
        Some(current) => {
            if ChannelLedger::decode(current.value.as_slice()).is_ok_and(|stored| progress(&stored) > progress(ledger))
            {
                return Ok(true);
            }
            Condition::ModifiedAt(current.key.clone(), current.mod_revision)
        }
        None => Condition::Absent(key.to_owned()),
    };
    let mut record = ledger.clone();
    record.stored_unix_ms = framefleet_common::startup::unix_time_ms();
    let outcome = store
        .commit(
            vec![condition],
            vec![Write::Put(key.to_owned(), record.encode_to_vec())],
        )
        .await?;
    Ok(matches!(outcome, CommitOutcome::Committed { .. }))
}

fn run_key(ledger: &ChannelLedger) -> String {
    format!(
        "{RUN_LEDGER_KEY_PREFIX}{}/{:020}",
        ledger.channel_id, ledger.ingestor_epoch
    )
}

/// The last ledger of every run of `channel_id`, oldest run first.
pub async fn runs<S: MetadataStore>(store: &S, channel_id: &str) -> Result<Vec<ChannelLedger>, CoordinatorError> {
    let mut ledgers = Vec::new();
    for value in store.list(&format!("{RUN_LEDGER_KEY_PREFIX}{channel_id}/")).await? {
        if let Ok(ledger) = ChannelLedger::decode(value.value.as_slice()) {
            ledgers.push(ledger);
        }
    }
    ledgers.sort_by_key(|ledger| ledger.ingestor_epoch);
    Ok(ledgers)
}

/// Every stored ledger, by channel id order.
pub async fn list<S: MetadataStore>(store: &S) -> Result<Vec<ChannelLedger>, CoordinatorError> {
    let mut ledgers = Vec::new();
    for value in store.list(LEDGER_KEY_PREFIX).await? {
        match ChannelLedger::decode(value.value.as_slice()) {
            Ok(ledger) => ledgers.push(ledger),
            Err(error) => tracing::warn!(key = %value.key, %error, "an unreadable stored ledger is skipped"),
        }
    }
    ledgers.sort_by(|a, b| a.channel_id.cmp(&b.channel_id));
    Ok(ledgers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    #[tokio::test]
    async fn a_ledger_is_kept_after_its_report_and_stored_again_only_when_it_changes() {
        let store = MemoryStore::default();
        let fleet = FleetRegistry::default();
        let report = |captured: u64, finished: bool| IngestorReport {
            ingestor_id: "i1".into(),
            channels: vec![ChannelLedger {
                channel_id: "cam".into(),
                frames_captured: captured,
                source_finished: finished,
                ingestor_epoch: if finished { 2 } else { 1 },
                ..ChannelLedger::default()
            }],
            accepts_assignments: false,
        };
        let mut stored = HashMap::new();
        fleet.record_ingestor(report(10, false)).expect("record");
        persist_changed(&store, &fleet, &mut stored).await.expect("persist");
        let first = list(&store).await.expect("list");
        assert_eq!(first.len(), 1);
        assert_eq!((first[0].frames_captured, first[0].ingestor_id.as_str()), (10, "i1"));
        // Unchanged: not written again (the stored time stays).
        persist_changed(&store, &fleet, &mut stored).await.expect("persist");
        assert_eq!(
            list(&store).await.expect("list")[0].stored_unix_ms,
            first[0].stored_unix_ms
        );
        fleet.record_ingestor(report(300, true)).expect("record");
        persist_changed(&store, &fleet, &mut stored).await.expect("persist");
        let last = list(&store).await.expect("list");
        assert_eq!((last[0].frames_captured, last[0].source_finished), (300, true));
        // Each run keeps its own last ledger; the latest is the newest run's.
        let runs = runs(&store, "cam").await.expect("runs");
        let by_run: Vec<(u64, u64)> = runs.iter().map(|l| (l.ingestor_epoch, l.frames_captured)).collect();
        assert_eq!(by_run, [(1, 10), (2, 300)]);

        // Stale reports — a killed run's lingering beside its restart's, or an older report of
        // the newest run held by a coordinator that was cut off — reach the store through
        // another coordinator: neither the latest nor a run's own ledger goes back.
        for (epoch, captured) in [(1, 7), (2, 200)] {
            let other = FleetRegistry::default();
            other
                .record_ingestor(IngestorReport {
                    ingestor_id: "i0".into(),
                    channels: vec![ChannelLedger {
                        channel_id: "cam".into(),
                        frames_captured: captured,
                        ingestor_epoch: epoch,
                        ..ChannelLedger::default()
                    }],
                    accepts_assignments: false,
                })
                .expect("record");
            persist_changed(&store, &other, &mut HashMap::new())
                .await
                .expect("persist");
        }
        let latest = list(&store).await.expect("list");
        assert_eq!((latest[0].ingestor_epoch, latest[0].frames_captured), (2, 300));
        let by_run: Vec<(u64, u64)> = super::runs(&store, "cam")
            .await
            .expect("runs")
            .iter()
            .map(|l| (l.ingestor_epoch, l.frames_captured))
            .collect();
        assert_eq!(by_run, [(1, 10), (2, 300)]);
    }
}
