//! Channel ledgers kept in etcd — the latest per channel (`ledgers/<channel id>`) and the last
//! of every run (`ledger-runs/<channel id>/<ingestor epoch>`) — so that what an ingestor reported
//! of a channel — captured, acknowledged, failed, its source's final state and last error —
//! outlives the ingestor. Reports arrive in memory ([`FleetRegistry`]); a background task of
//! each coordinator stores the ledgers of the reports it received whenever they change, at
//! most once per [`PERSIST_INTERVAL`] per channel.

use crate::error::CoordinatorError;
use crate::fleet::FleetRegistry;
use crate::store::{CommitOutcome, Condition, MetadataStore, Write};
use framefleet_proto::v1::ChannelLedger;
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

/// Stores each changed ledger under its run, and as the channel's latest unless a newer run's
/// ledger is there already: a coordinator may hold the last report of a run that was replaced
/// (an ingestor killed and started again: its report lingers), and another coordinator the
/// new run's, so "latest" must mean the newest run, not the last writer.
async fn persist_changed<S: MetadataStore>(
    store: &S,
    fleet: &FleetRegistry,
    stored: &mut HashMap<(String, u64), ChannelLedger>,
) -> Result<(), CoordinatorError> {
    let mut newest: HashMap<String, ChannelLedger> = HashMap::new();
    for ingestor in fleet.ingestors() {
        let Some(report) = ingestor.report else { continue };
        for ledger in report.channels {
            let ledger = ChannelLedger {
                ingestor_id: report.ingestor_id.clone(),
                ..ledger
            };
            if stored.get(&(ledger.channel_id.clone(), ledger.ingestor_epoch)) == Some(&ledger) {
                continue;
            }
            match newest.get(&ledger.channel_id) {
                Some(kept) if kept.ingestor_epoch > ledger.ingestor_epoch => {
                    // An older run: only its own key is written.
                    store_run(store, &ledger).await?;
                    stored.insert((ledger.channel_id.clone(), ledger.ingestor_epoch), ledger);
                }
                _ => {
                    if let Some(replaced) = newest.insert(ledger.channel_id.clone(), ledger) {
                        store_run(store, &replaced).await?;
                        stored.insert((replaced.channel_id.clone(), replaced.ingestor_epoch), replaced);
                    }
                }
            }
        }
    }
    for (channel_id, ledger) in newest {
        let mut record = ledger.clone();
        record.stored_unix_ms = framefleet_common::startup::unix_time_ms();
        let encoded = record.encode_to_vec();
        let current = store.get(&key(&channel_id)).await?;
        let newer_stored = current.as_ref().is_some_and(|current| {
            ChannelLedger::decode(current.value.as_slice())
                .is_ok_and(|current| current.ingestor_epoch > ledger.ingestor_epoch)
        });
        let mut writes = vec![Write::Put(run_key(&ledger), encoded.clone())];
        let condition = match &current {
            Some(current) => Condition::ModifiedAt(current.key.clone(), current.mod_revision),
            None => Condition::Absent(key(&channel_id)),
        };
        if !newer_stored {
            writes.push(Write::Put(key(&channel_id), encoded));
        }
        // A concurrent write by another coordinator fails the condition: the next pass
        // looks again.
        let conditions = if newer_stored { Vec::new() } else { vec![condition] };
        if matches!(store.commit(conditions, writes).await?, CommitOutcome::Committed { .. }) {
            stored.insert((channel_id, ledger.ingestor_epoch), ledger);
        }
    }
    Ok(())
}

fn run_key(ledger: &ChannelLedger) -> String {
    format!(
        "{RUN_LEDGER_KEY_PREFIX}{}/{:020}",
        ledger.channel_id, ledger.ingestor_epoch
    )
}

async fn store_run<S: MetadataStore>(store: &S, ledger: &ChannelLedger) -> Result<(), CoordinatorError> {
    let mut record = ledger.clone();
    record.stored_unix_ms = framefleet_common::startup::unix_time_ms();
    store
        .commit(
            Vec::<Condition>::new(),
            vec![Write::Put(run_key(ledger), record.encode_to_vec())],
        )
        .await?;
    Ok(())
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
    use framefleet_proto::v1::IngestorReport;

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

        // A killed run's report lingers beside its restart's (or reaches another coordinator):
        // the latest stays the newest run's, whoever writes last.
        let other = FleetRegistry::default();
        other
            .record_ingestor(IngestorReport {
                ingestor_id: "i0".into(),
                channels: vec![ChannelLedger {
                    channel_id: "cam".into(),
                    frames_captured: 7,
                    ingestor_epoch: 1,
                    ..ChannelLedger::default()
                }],
                accepts_assignments: false,
            })
            .expect("record");
        persist_changed(&store, &other, &mut HashMap::new())
            .await
            .expect("persist");
        let latest = list(&store).await.expect("list");
        assert_eq!((latest[0].ingestor_epoch, latest[0].frames_captured), (2, 300));
        let first_run = &super::runs(&store, "cam").await.expect("runs")[0];
        assert_eq!(first_run.frames_captured, 7, "the old run's own key is updated");
    }
}
