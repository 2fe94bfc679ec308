//! In-memory [`MetadataStore`] for unit tests; never the proof that a feature works. It keeps
//! etcd's semantics that the coordinator relies on: one revision counter, create-if-absent,
//! leases that expire, transactions with conditions, and watches that can be compacted away.

use super::contract::{
    CommitOutcome, Condition, CreateOutcome, LeasedOutcome, Listing, MetadataStore, StoreError, StoredValue,
    WatchBatch, WatchEvent, WatchStream, Write,
};
use futures::StreamExt;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone)]
pub struct MemoryStore {
    state: Arc<Mutex<MemoryState>>,
    changed: Arc<tokio::sync::watch::Sender<i64>>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self {
            state: Arc::default(),
            changed: Arc::new(tokio::sync::watch::channel(0).0),
        }
    }
}

#[derive(Default)]
struct MemoryState {
    revision: i64,
    entries: BTreeMap<String, StoredValue>,
    next_lease: i64,
    /// Lease → (its key, TTL, expiry).
    leases: HashMap<i64, (String, Duration, Instant)>,
    /// Every committed change, oldest first, back to `compacted`.
    history: Vec<(i64, WatchEvent)>,
    compacted: i64,
    /// Set by [`MemoryStore::set_reachable`]: every call fails as etcd's would when cut off.
    unreachable: bool,
}

impl MemoryState {
    /// Drops the keys of leases that were not kept alive, as etcd would.
    fn expire(&mut self) {
        let now = Instant::now();
        let expired: Vec<i64> = self
            .leases
            .iter()
            .filter(|(_, (_, _, expiry))| *expiry <= now)
            .map(|(lease, _)| *lease)
            .collect();
        for lease in expired {
            if let Some((key, _, _)) = self.leases.remove(&lease) {
                self.revision += 1;
                self.delete(&key);
            }
        }
    }

    fn put(&mut self, key: &str, value: Vec<u8>) {
        let previous = self.entries.get(key).cloned();
        let stored = StoredValue {
            key: key.to_owned(),
            value,
            mod_revision: self.revision,
            create_revision: previous
                .as_ref()
                .map_or(self.revision, |previous| previous.create_revision),
        };
        self.entries.insert(key.to_owned(), stored.clone());
        self.history.push((
            self.revision,
            WatchEvent::Put {
                value: stored,
                previous,
            },
        ));
    }

    fn delete(&mut self, key: &str) {
        if let Some(previous) = self.entries.remove(key) {
            self.history.push((
                self.revision,
                WatchEvent::Delete {
                    key: key.to_owned(),
                    previous: Some(previous),
                },
            ));
        }
    }

    fn holds(&self, condition: &Condition) -> bool {
        match condition {
            Condition::Absent(key) => !self.entries.contains_key(key),
            Condition::ModifiedAt(key, revision) => self.entries.get(key).is_some_and(|v| v.mod_revision == *revision),
            Condition::CreatedAt(key, revision) => {
                self.entries.get(key).is_some_and(|v| v.create_revision == *revision)
            }
        }
    }

    fn batches_from(&self, from_revision: i64) -> Result<Vec<WatchBatch>, i64> {
        if from_revision <= self.compacted {
            return Err(self.compacted);
        }
        let mut batches: Vec<WatchBatch> = Vec::new();
        for (revision, event) in self.history.iter().filter(|(revision, _)| *revision >= from_revision) {
            match batches.last_mut() {
                Some(WatchBatch::Changes { revision: last, events }) if last == revision => events.push(event.clone()),
                _ => batches.push(WatchBatch::Changes {
                    revision: *revision,
                    events: vec![event.clone()],
                }),
            }
        }
        Ok(batches)
    }
}

impl MemoryStore {
    fn locked(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        // A panic while holding this lock can only come from a bug in a test; keep going.
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = state.revision;
        state.expire();
        if state.revision != before {
            self.changed.send_replace(state.revision);
        }
        state
    }

    /// Forgets history up to and including `revision`, like `etcdctl compact`.
    pub fn compact(&self, revision: i64) {
        let mut state = self.locked();
        state.compacted = state.compacted.max(revision);
        state.history.retain(|(at, _)| *at > revision);
    }

    /// The keys of expired leases vanish when the store is next touched; tests call this to
    /// let watchers see an expiry without another write.
    pub fn tick(&self) {
        drop(self.locked());
    }

    /// Makes every call fail with [`StoreError::Unavailable`] (false) or work again (true), as
    /// a coordinator cut off from etcd sees it.
    pub fn set_reachable(&self, reachable: bool) {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .unreachable = !reachable;
    }

    fn reachable(&self) -> Result<(), StoreError> {
        if self.locked().unreachable {
            return Err(StoreError::Unavailable("the memory store is set unreachable".into()));
        }
        Ok(())
    }

    fn notify(&self, revision: i64) {
        self.changed.send_replace(revision);
    }
}

impl MetadataStore for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<StoredValue>, StoreError> {
        self.reachable()?;
        Ok(self.locked().entries.get(key).cloned())
    }

    async fn list(&self, key_prefix: &str) -> Result<Vec<StoredValue>, StoreError> {
        self.reachable()?;
        Ok(self.snapshot(key_prefix).await?.values)
    }

    async fn snapshot(&self, key_prefix: &str) -> Result<Listing, StoreError> {
        self.reachable()?;
        let state = self.locked();
        let values = state
            .entries
            .range(key_prefix.to_owned()..)
            .take_while(|(key, _)| key.starts_with(key_prefix))
            .map(|(_, stored)| stored.clone())
            .collect();
        Ok(Listing {
            values,
            revision: state.revision,
        })
    }

    async fn commit(&self, conditions: Vec<Condition>, writes: Vec<Write>) -> Result<CommitOutcome, StoreError> {
        self.reachable()?;
        let mut state = self.locked();
        if !conditions.iter().all(|condition| state.holds(condition)) {
            return Ok(CommitOutcome::Conflict);
        }
        state.revision += 1;
        for write in writes {
            match write {
                Write::Put(key, value) => state.put(&key, value),
                Write::Delete(key) => state.delete(&key),
            }
        }
        let revision = state.revision;
        drop(state);
        self.notify(revision);
        Ok(CommitOutcome::Committed { revision })
    }

    async fn watch(&self, key_prefix: &str, from_revision: i64) -> Result<WatchStream, StoreError> {
        self.reachable()?;
        let store = self.clone();
        let prefix = key_prefix.to_owned();
        let changed = self.changed.subscribe();
        let stream = futures::stream::unfold(
            (store, prefix, changed, from_revision.max(1), false),
            |(store, prefix, mut changed, next, done)| async move {
                if done {
                    return None;
                }
                loop {
                    // Mark the current revision seen before reading, so a change made after the
                    // read wakes the wait below instead of being missed.
                    changed.borrow_and_update();
                    let batches = store.locked().batches_from(next);
                    match batches {
                        Err(compact_revision) => {
                            let item = Ok(WatchBatch::Compacted { compact_revision });
                            return Some((item, (store, prefix, changed, next, true)));
                        }
                        Ok(batches) => {
                            let relevant = batches.into_iter().find_map(|batch| match batch {
                                WatchBatch::Changes { revision, events } => {
                                    let events: Vec<WatchEvent> = events
                                        .into_iter()
                                        .filter(|event| event_key(event).starts_with(&prefix))
                                        .collect();
                                    Some((revision, events))
                                }
                                WatchBatch::Compacted { .. } => None,
                            });
                            if let Some((revision, events)) = relevant {
                                let item = Ok(WatchBatch::Changes { revision, events });
                                return Some((item, (store, prefix, changed, revision + 1, false)));
                            }
                        }
                    }
                    if changed.changed().await.is_err() {
                        return None;
                    }
                }
            },
        )
        .filter(|item| {
            // Revisions that touched other prefixes carry no events; etcd would not send them.
            let keep = !matches!(item, Ok(WatchBatch::Changes { events, .. }) if events.is_empty());
            async move { keep }
        });
        Ok(stream.boxed())
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<CreateOutcome, StoreError> {
        self.reachable()?;
        let mut state = self.locked();
        if let Some(existing) = state.entries.get(key) {
            return Ok(CreateOutcome::Exists(existing.clone()));
        }
        state.revision += 1;
        state.put(key, value);
        let mod_revision = state.revision;
        drop(state);
        self.notify(mod_revision);
        Ok(CreateOutcome::Created { mod_revision })
    }

    async fn create_leased(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<LeasedOutcome, StoreError> {
        self.reachable()?;
        let lease = {
            let mut state = self.locked();
            state.next_lease += 1;
            state.next_lease
        };
        match self.create(key, value).await? {
            CreateOutcome::Created { mod_revision } => {
                self.locked()
                    .leases
                    .insert(lease, (key.to_owned(), ttl, Instant::now() + ttl));
                Ok(LeasedOutcome::Created {
                    lease,
                    revision: mod_revision,
                })
            }
            CreateOutcome::Exists(stored) => Ok(LeasedOutcome::Exists(stored)),
        }
    }

    async fn keep_alive(&self, lease: i64) -> Result<bool, StoreError> {
        self.reachable()?;
        let mut state = self.locked();
        Ok(match state.leases.get_mut(&lease) {
            Some((_, ttl, expiry)) => {
                *expiry = Instant::now() + *ttl;
                true
            }
            None => false,
        })
    }

    async fn revoke(&self, lease: i64) -> Result<(), StoreError> {
        self.reachable()?;
        let mut state = self.locked();
        if let Some((key, _, _)) = state.leases.remove(&lease) {
            state.revision += 1;
            state.delete(&key);
            let revision = state.revision;
            drop(state);
            self.notify(revision);
        }
        Ok(())
    }
}

fn event_key(event: &WatchEvent) -> &str {
    match event {
        WatchEvent::Put { value, .. } => &value.key,
        WatchEvent::Delete { key, .. } => key,
    }
}
