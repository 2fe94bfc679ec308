//! In-memory [`MetadataStore`] for unit tests; never the proof that a feature works.

use super::{CreateOutcome, MetadataStore, StoreError, StoredValue};
use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<MemoryState>,
}

#[derive(Default)]
struct MemoryState {
    revision: i64,
    entries: BTreeMap<String, StoredValue>,
}

impl MemoryStore {
    fn locked(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        // A panic while holding this lock can only come from a bug in a test; keep going.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
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
}
