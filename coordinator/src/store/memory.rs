//! In-memory [`MetadataStore`] for unit tests; never the proof that a feature works.

use super::{CreateOutcome, LeasedOutcome, MetadataStore, StoreError, StoredValue};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<MemoryState>,
}

#[derive(Default)]
struct MemoryState {
    revision: i64,
    entries: BTreeMap<String, StoredValue>,
    next_lease: i64,
    /// Lease → (its key, TTL, expiry).
    leases: HashMap<i64, (String, Duration, Instant)>,
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
                self.entries.remove(&key);
            }
        }
    }
}

impl MemoryStore {
    fn locked(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        // A panic while holding this lock can only come from a bug in a test; keep going.
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        state.expire();
        state
    }
}

impl MetadataStore for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<StoredValue>, StoreError> {
        Ok(self.locked().entries.get(key).cloned())
    }

    async fn list(&self, key_prefix: &str) -> Result<Vec<StoredValue>, StoreError> {
        let state = self.locked();
        Ok(state
            .entries
            .range(key_prefix.to_owned()..)
            .take_while(|(key, _)| key.starts_with(key_prefix))
            .map(|(_, stored)| stored.clone())
            .collect())
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<CreateOutcome, StoreError> {
        let mut state = self.locked();
        if let Some(existing) = state.entries.get(key) {
            return Ok(CreateOutcome::Exists(existing.clone()));
        }
        state.revision += 1;
        let mod_revision = state.revision;
        state.entries.insert(
            key.to_owned(),
            StoredValue {
                key: key.to_owned(),
                value,
                mod_revision,
            },
        );
        Ok(CreateOutcome::Created { mod_revision })
    }

    async fn create_leased(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<LeasedOutcome, StoreError> {
        let lease = {
            let mut state = self.locked();
            state.next_lease += 1;
            state.next_lease
        };
        match self.create(key, value).await? {
            CreateOutcome::Created { .. } => {
                self.locked()
                    .leases
                    .insert(lease, (key.to_owned(), ttl, Instant::now() + ttl));
                Ok(LeasedOutcome::Created { lease })
            }
            CreateOutcome::Exists(stored) => Ok(LeasedOutcome::Exists(stored)),
        }
    }

    async fn keep_alive(&self, lease: i64) -> Result<bool, StoreError> {
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
        let mut state = self.locked();
        if let Some((key, _, _)) = state.leases.remove(&lease) {
            state.entries.remove(&key);
        }
        Ok(())
    }
}
