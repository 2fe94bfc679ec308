//! `WatchAssignments`: a listing of channels followed by every change, from etcd's watch on
//! the channel records. A client resumes after the revision of the last update it saw; when
//! etcd has compacted that history away, the client gets a fresh listing marked `reset`
//! instead of a silent gap.

use crate::channels::ChannelRecord;
use crate::channels::record::{CHANNEL_KEY_PREFIX, decode};
use crate::error::CoordinatorError;
use crate::store::{MetadataStore, StoredValue, WatchBatch, WatchEvent};
use framefleet_proto::v1::AssignmentUpdate;
use futures::StreamExt;
use tokio::sync::mpsc;

/// Updates buffered per watcher before the watcher's slowness holds up its own etcd watch.
const UPDATE_BUFFER: usize = 64;

/// Whose assignments a watcher wants.
#[derive(Debug, Clone)]
pub struct WatchScope {
    /// Empty: every channel.
    pub ingestor_id: String,
}

impl WatchScope {
    fn wants(&self, record: &ChannelRecord) -> bool {
        self.ingestor_id.is_empty() || (record.is_active() && record.ingestor_id == self.ingestor_id)
    }

    /// Whether a watcher may have been told to run the channel as it was before a change: a
    /// stop is only sent to ingestors that might be running it. An unreadable value says stop,
    /// which is harmless.
    fn may_have_had(&self, previous: &StoredValue) -> bool {
        match decode::<ChannelRecord>(previous) {
            Ok(record) => self.wants(&record),
            Err(_) => true,
        }
    }
}

/// Checks a resume point: a watcher may resume after any revision the store has reached
/// (0: from a fresh listing). A later one names history that has not happened, so the client
/// is confused about which cluster it talks to; it is refused rather than waited for.
pub async fn validate_after_revision<S: MetadataStore>(store: &S, after_revision: i64) -> Result<(), CoordinatorError> {
    if after_revision < 0 {
        return Err(CoordinatorError::invalid("after_revision", "must be ≥ 0"));
    }
    if after_revision > 0 {
        let current = store.snapshot(CHANNEL_KEY_PREFIX).await?.revision;
        if after_revision > current {
            return Err(CoordinatorError::OutOfRange {
                field: "after_revision",
                reason: format!(
                    "{after_revision} is beyond the store's current revision {current}; resume after a revision this cluster has sent, or 0 for a fresh listing"
                ),
            });
        }
    }
    Ok(())
}

/// Starts a watch; updates arrive on the returned receiver until the client goes away (the
/// receiver is dropped) or etcd fails (one `Err`, then the end).
/// The stream also ends (cleanly, so clients resume elsewhere) when `shutdown` is cancelled:
/// a graceful server shutdown waits for open streams.
pub fn spawn_watch<S: MetadataStore + Clone>(
    store: S,
    scope: WatchScope,
    after_revision: i64,
    shutdown: tokio_util::sync::CancellationToken,
) -> mpsc::Receiver<Result<AssignmentUpdate, CoordinatorError>> {
    let (sender, receiver) = mpsc::channel(UPDATE_BUFFER);
    tokio::spawn(async move {
        let outcome = tokio::select! {
            outcome = feed(&store, &scope, after_revision, &sender) => outcome,
            () = sender.closed() => Ok(()),
            () = shutdown.cancelled() => Ok(()),
        };
        if let Err(error) = outcome {
            tracing::info!(ingestor = %scope.ingestor_id, %error, "assignment watch ended");
            let _ = sender.send(Err(error)).await;
        }
    });
    receiver
}

async fn feed<S: MetadataStore>(
    store: &S,
    scope: &WatchScope,
    after_revision: i64,
    sender: &mpsc::Sender<Result<AssignmentUpdate, CoordinatorError>>,
) -> Result<(), CoordinatorError> {
    let mut seen = after_revision;
    if seen == 0 {
        seen = send_listing(store, scope, sender).await?;
    }
    loop {
        // Exact resume point: the first change after `seen`. (`seen` is at most the store's
        // revision, checked at the request, so this cannot overflow.)
        let mut batches = store.watch(CHANNEL_KEY_PREFIX, seen.saturating_add(1)).await?;
        loop {
            let Some(batch) = batches.next().await else {
                return Err(CoordinatorError::StoreUnavailable("etcd closed the watch".to_owned()));
            };
            match batch? {
                WatchBatch::Changes { revision, events } => {
                    seen = revision;
                    let update = changes(scope, revision, &events)?;
                    let nothing_for_this_watcher = update.channels.is_empty() && update.removed_channel_ids.is_empty();
                    if !nothing_for_this_watcher && sender.send(Ok(update)).await.is_err() {
                        return Ok(());
                    }
                }
                WatchBatch::Compacted { compact_revision } => {
                    tracing::info!(ingestor = %scope.ingestor_id, after = seen, compact_revision, "history compacted; re-listing");
                    seen = send_listing(store, scope, sender).await?;
                    break;
                }
            }
        }
    }
}

async fn send_listing<S: MetadataStore>(
    store: &S,
    scope: &WatchScope,
    sender: &mpsc::Sender<Result<AssignmentUpdate, CoordinatorError>>,
) -> Result<i64, CoordinatorError> {
    let listing = store.snapshot(CHANNEL_KEY_PREFIX).await?;
    let mut channels = Vec::new();
    for stored in &listing.values {
        let record: ChannelRecord = decode(stored)?;
        if scope.wants(&record) {
            channels.push(record.to_proto(stored.mod_revision));
        }
    }
    let update = AssignmentUpdate {
        revision: listing.revision,
        reset: true,
        channels,
        removed_channel_ids: Vec::new(),
    };
    // A closed receiver ends the task through `sender.closed()`.
    let _ = sender.send(Ok(update)).await;
    Ok(listing.revision)
}

fn changes(scope: &WatchScope, revision: i64, events: &[WatchEvent]) -> Result<AssignmentUpdate, CoordinatorError> {
    let mut update = AssignmentUpdate {
        revision,
        ..AssignmentUpdate::default()
    };
    for event in events {
        match event {
            WatchEvent::Put { value, previous } => {
                let record: ChannelRecord = decode(value)?;
                if scope.wants(&record) {
                    update.channels.push(record.to_proto(value.mod_revision));
                } else if previous.as_ref().is_some_and(|previous| scope.may_have_had(previous)) {
                    // A put with no previous value creates the channel: nobody ran it before.
                    update.removed_channel_ids.push(record.channel_id);
                }
            }
            WatchEvent::Delete { key, previous } => {
                // No previous value (its history was compacted): say stop to be safe.
                if previous.as_ref().is_none_or(|previous| scope.may_have_had(previous)) {
                    let channel_id = key.strip_prefix(CHANNEL_KEY_PREFIX).unwrap_or(key);
                    update.removed_channel_ids.push(channel_id.to_owned());
                }
            }
        }
    }
    Ok(update)
}
