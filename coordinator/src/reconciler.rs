//! What the leading coordinator does that no request asks for: give every active channel a
//! live ingestor, take channels away from ingestors whose registration expired, and finish
//! drains. Every write carries the leader's fencing token, so a coordinator that lost the
//! lead without noticing cannot assign anything.

use crate::channels::{ChannelRecord, ChannelRegistry, DrainRecord, Edit};
use crate::error::CoordinatorError;
use crate::kafka::offsets::{DrainProbe, PartitionOffsets, ReaderOffsets};
use crate::kafka::topics::TopicAdmin;
use crate::leader::Term;
use crate::members::Membership;
use crate::store::MetadataStore;
use framefleet_proto::Reader;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub struct Reconciler<S, T, P> {
    pub channels: Arc<ChannelRegistry<S, T>>,
    pub members: Arc<Membership<S>>,
    pub probe: Arc<P>,
    /// How long after a drain starts its watermarks are taken: an ingestor learns of the
    /// drain through its watch within milliseconds, but may still be flushing sends.
    pub drain_settle: Duration,
    pub interval: Duration,
    /// How often a drained channel's topics are read again, to withdraw "drained" once any
    /// client wrote to them after it was stated. Channels not yet drained are read every pass.
    pub drained_recheck: Duration,
    /// When drained channels were last read, for `drained_recheck`.
    pub last_drained_recheck: std::sync::Mutex<Option<std::time::Instant>>,
}

/// What one pass changed, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pass {
    pub assigned: Vec<(String, String)>,
    pub unassigned: Vec<String>,
    /// Channels found ended (source read to its end, ingestor gone) and left unassigned.
    pub ended: Vec<String>,
    /// Ended channels whose every frame the worker group has now committed.
    pub drained_after_end: Vec<String>,
    /// Drained channels whose topics grew again (a record written after the drain): workers
    /// consume them again until everything is committed once more.
    pub drain_withdrawn: Vec<String>,
    pub drain_marked: Vec<String>,
    pub deleted: Vec<String>,
}

impl<S: MetadataStore, T: TopicAdmin, P: DrainProbe> Reconciler<S, T, P> {
    /// Runs a pass every `interval` while this coordinator leads, until shutdown.
    pub async fn run(&self, mut term: watch::Receiver<Option<Term>>, shutdown: CancellationToken) {
        loop {
            let current = term.borrow_and_update().clone();
            if let Some(current) = current {
                match self.pass(&current).await {
                    Ok(pass) if pass != Pass::default() => tracing::info!(?pass, "reconciled"),
                    Ok(_) => {}
                    // A lost fence means leadership moved; the next pass runs under the new term.
                    Err(error) => tracing::warn!(%error, "reconcile pass failed"),
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = term.changed() => {}
                () = tokio::time::sleep(self.interval) => {}
            }
        }
    }

    pub async fn pass(&self, term: &Term) -> Result<Pass, CoordinatorError> {
        // A channel stays with any live ingestor (one that registered it itself included), but
        // only ingestors that accept assignments are given channels.
        let live: HashSet<String> = self.members.registered_ingestors().await?;
        let assignable: HashSet<String> = self.members.assignable_ingestors().await?;
        let records = self.channels.all_records().await?;
        // Sources that ended, as their stored ledgers say, and when that was stored.
        let ended_sources: std::collections::HashMap<String, i64> = crate::ledgers::list(self.channels.store())
            .await?
            .into_iter()
            .filter(|ledger| ledger.source_finished && ledger.source_state == "ended")
            .map(|ledger| (ledger.channel_id, ledger.stored_unix_ms))
            .collect();
        let mut load: BTreeMap<String, u64> = assignable.iter().map(|id| (id.clone(), 0)).collect();
        for (record, _) in &records {
            if record.is_active()
                && record.ended_unix_ms.is_none()
                && let Some(total) = load.get_mut(&record.ingestor_id)
            {
                *total = total.saturating_add(record.declared_bytes_per_second);
            }
        }
        let mut pass = Pass::default();
        let mut ended = Vec::new();
        // Topics a channel still capturing writes to: workers consume them in any case.
        let live_topics: HashSet<String> = records
            .iter()
            .filter(|(record, _)| record.is_active() && record.ended_unix_ms.is_none())
            .flat_map(|(record, _)| record.topics())
            .collect();
        for (record, _) in records {
            let channel_id = record.channel_id.clone();
            if !record.is_active() {
                self.advance_drain(term, record, &mut pass).await?;
                continue;
            }
            if record.ended_unix_ms.is_some() {
                ended.push(record);
                continue;
            }
            if live.contains(&record.ingestor_id) {
                continue;
            }
            // Its ingestor is gone. A file it read to the end (since the channel last changed)
            // is not handed to another ingestor, which would capture it again from the start.
            if ended_sources
                .get(&channel_id)
                .is_some_and(|stored| *stored >= record.updated_unix_ms)
            {
                self.mark_ended(term, &channel_id).await?;
                pass.ended.push(channel_id);
                continue;
            }
            // Least declared load first; ties by id, so every leader decides the same.
            let chosen = load
                .iter()
                .min_by(|a, b| a.1.cmp(b.1).then_with(|| a.0.cmp(b.0)))
                .map(|(id, _)| id.clone());
            match chosen {
                Some(ingestor) => {
                    self.assign(term, &channel_id, &ingestor).await?;
                    if let Some(total) = load.get_mut(&ingestor) {
                        *total = total.saturating_add(record.declared_bytes_per_second);
                    }
                    pass.assigned.push((channel_id, ingestor));
                }
                None if !record.ingestor_id.is_empty() => {
                    self.assign(term, &channel_id, "").await?;
                    pass.unassigned.push(channel_id);
                }
                None => {}
            }
        }
        self.settle_ended(term, ended, &live_topics, &mut pass).await?;
        Ok(pass)
    }

    async fn mark_ended(&self, term: &Term, channel_id: &str) -> Result<(), CoordinatorError> {
        self.channels
            .edit(channel_id, 0, vec![term.fence()], |record, _| {
                if !record.is_active() || record.ended_unix_ms.is_some() {
                    return Ok(Edit::Keep(()));
                }
                let mut ended = record.clone();
                ended.ingestor_id = String::new();
                ended.assigned_by = term.label();
                ended.ended_unix_ms = Some(framefleet_common::startup::unix_time_ms());
                Ok(Edit::Write(Box::new(ended), Vec::new(), ()))
            })
            .await?;
        tracing::info!(channel = %channel_id, term = term.revision, "source ended and its ingestor is gone; the channel is not assigned again until it changes");
        Ok(())
    }

    /// An ended channel's topics get no more frames from its ingestor, so once the worker
    /// group has committed up to their high watermarks it is drained, and workers let its
    /// partitions go (a topic other channels share only when all of them are). "Drained" is
    /// a fact about offsets when it is stated: any Kafka client may still write to the topics
    /// (a late producer retry, another tool, a camera brought back), so drained channels are
    /// read again every `drained_recheck`, and one whose topics grew is drained no longer —
    /// workers subscribe to it again and every new record gets its result or dead letter.
    async fn settle_ended(
        &self,
        term: &Term,
        ended: Vec<ChannelRecord>,
        live_topics: &HashSet<String>,
        pass: &mut Pass,
    ) -> Result<(), CoordinatorError> {
        let recheck_drained = self.drained_recheck_due();
        let probed: Vec<ChannelRecord> = ended
            .into_iter()
            .filter(|record| record.drained_unix_ms.is_none() || recheck_drained)
            .collect();
        if probed.is_empty() {
            return Ok(());
        }
        // Every topic of a channel has a reader, so the readers' marks cover all of them.
        let readers: Vec<Reader> = probed.iter().flat_map(ChannelRecord::readers).collect();
        // Kafka trouble with finished channels must not hold up assignments of live ones:
        // they are read again next pass.
        let (marks, committed) = match self.probe.offsets(readers).await {
            Ok(offsets) => offsets,
            Err(error) => {
                tracing::debug!(%error, "cannot tell yet whether ended channels are drained");
                return Ok(());
            }
        };
        for record in probed {
            // Once drained, a topic a live channel shares grows all the time and is consumed
            // anyway: only the topics workers let go can leave a late record without an outcome.
            let checked: Vec<String> = record
                .topics()
                .into_iter()
                .filter(|topic| record.drained_unix_ms.is_none() || !live_topics.contains(topic))
                .collect();
            let checked_marks: PartitionOffsets = marks
                .iter()
                .filter(|(topic, _, _)| checked.contains(topic))
                .cloned()
                .collect();
            let caught_up = every_reader_committed(&record.readers(), &checked_marks, &committed);
            if caught_up == record.drained_unix_ms.is_some() {
                continue;
            }
            let (ended_at, drained_at) = (record.ended_unix_ms, record.drained_unix_ms);
            self.channels
                .edit(&record.channel_id, 0, vec![term.fence()], |current, _| {
                    // Updated, claimed or settled since this pass read it: not this decision's.
                    if current.ended_unix_ms != ended_at || current.drained_unix_ms != drained_at {
                        return Ok(Edit::Keep(()));
                    }
                    let mut settled = current.clone();
                    settled.drained_unix_ms = caught_up.then(framefleet_common::startup::unix_time_ms);
                    Ok(Edit::Write(Box::new(settled), Vec::new(), ()))
                })
                .await?;
            if caught_up {
                let committed: Vec<_> = committed
                    .iter()
                    .flat_map(|reader| reader.committed.iter().map(move |offset| (&reader.pipeline, offset)))
                    .filter(|(_, (topic, _, _))| checked.contains(topic))
                    .collect();
                tracing::info!(channel = %record.channel_id, high_watermarks = ?checked_marks, ?committed, "ended channel drained; workers let its topics go");
                pass.drained_after_end.push(record.channel_id);
            } else {
                tracing::info!(channel = %record.channel_id, "records were written to a drained channel's topics; it is drained no longer, and workers consume them again");
                pass.drain_withdrawn.push(record.channel_id);
            }
        }
        Ok(())
    }

    fn drained_recheck_due(&self) -> bool {
        let mut last = self
            .last_drained_recheck
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let due = last.is_none_or(|at| at.elapsed() >= self.drained_recheck);
        if due {
            *last = Some(std::time::Instant::now());
        }
        due
    }

    async fn assign(&self, term: &Term, channel_id: &str, ingestor: &str) -> Result<(), CoordinatorError> {
        self.channels
            .edit(channel_id, 0, vec![term.fence()], |record, _| {
                if !record.is_active() || record.ingestor_id == ingestor {
                    return Ok(Edit::Keep(()));
                }
                let mut assigned = record.clone();
                assigned.ingestor_id = ingestor.to_owned();
                assigned.assigned_by = term.label();
                assigned.updated_unix_ms = framefleet_common::startup::unix_time_ms();
                Ok(Edit::Write(Box::new(assigned), Vec::new(), ()))
            })
            .await?;
        tracing::info!(channel = %channel_id, ingestor = %ingestor, term = term.revision, "assignment changed");
        Ok(())
    }

    async fn advance_drain(&self, term: &Term, record: ChannelRecord, pass: &mut Pass) -> Result<(), CoordinatorError> {
        let channel_id = record.channel_id.clone();
        let drain = record.drain.clone().unwrap_or(DrainRecord {
            started_unix_ms: record.updated_unix_ms,
            marks: None,
        });
        let Some(marks) = drain.marks.clone() else {
            let settled_at = drain
                .started_unix_ms
                .saturating_add(i64::try_from(self.drain_settle.as_millis()).unwrap_or(i64::MAX));
            if framefleet_common::startup::unix_time_ms() < settled_at {
                return Ok(());
            }
            let marks = self.probe.high_watermarks(record.topics()).await?;
            self.channels
                .edit(&channel_id, 0, vec![term.fence()], |current, _| {
                    let mut marked = current.clone();
                    marked.drain = Some(DrainRecord {
                        started_unix_ms: drain.started_unix_ms,
                        marks: Some(marks.clone()),
                    });
                    Ok(Edit::Write(Box::new(marked), Vec::new(), ()))
                })
                .await?;
            pass.drain_marked.push(channel_id);
            return Ok(());
        };
        let readers = record.readers();
        let (_, committed) = self.probe.offsets(readers.clone()).await?;
        if every_reader_committed(&readers, &marks, &committed) {
            self.channels
                .edit(&channel_id, 0, vec![term.fence()], |_, _| Ok(Edit::Delete(())))
                .await?;
            tracing::info!(channel = %channel_id, "drained and deleted");
            pass.deleted.push(channel_id);
        }
        Ok(())
    }
}

/// Whether every reader of a channel (each pipeline's group) has committed at least up to
/// every mark of the topics it reads: a channel is finished only when its slowest pipeline is.
fn every_reader_committed(readers: &[Reader], marks: &PartitionOffsets, committed: &[ReaderOffsets]) -> bool {
    readers.iter().all(|reader| {
        let reader_marks: PartitionOffsets = marks
            .iter()
            .filter(|(topic, _, _)| reader.topics.contains(topic))
            .cloned()
            .collect();
        let reader_committed = committed
            .iter()
            .find(|offsets| offsets.pipeline == reader.pipeline)
            .map_or(&[][..], |offsets| offsets.committed.as_slice());
        committed_up_to(&reader_marks, reader_committed)
    })
}

/// Whether the group has committed at least up to every mark (an empty partition needs no
/// commit).
fn committed_up_to(marks: &PartitionOffsets, committed: &[(String, i32, i64)]) -> bool {
    marks.iter().all(|(topic, partition, mark)| {
        *mark == 0
            || committed
                .iter()
                .any(|(t, p, offset)| t == topic && p == partition && offset >= mark)
    })
}
