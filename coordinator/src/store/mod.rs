//! Durable metadata behind a trait: etcd in production and in integration tests, an
//! in-memory map in unit tests. Keys are relative to the store's prefix.

mod etcd;
mod memory;

pub use etcd::{EtcdStore, EtcdStoreConfig};
pub use memory::MemoryStore;

use std::future::Future;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredValue {
    pub key: String,
    pub value: Vec<u8>,
    /// Revision of the last change to this key (the fencing token for later updates).
    pub mod_revision: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Unavailable(String),
}

impl From<StoreError> for crate::error::CoordinatorError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(reason) => Self::StoreUnavailable(reason),
        }
    }
}

/// Outcome of a create-if-absent write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateOutcome {
    Created {
        mod_revision: i64,
    },
    /// The key already existed; nothing was written. Carries what is stored.
    Exists(StoredValue),
}

/// Outcome of a create-if-absent write attached to a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeasedOutcome {
    /// Written; the key lives as long as this lease is kept alive.
    Created { lease: i64 },
    /// The key already existed (held by someone else's lease); nothing was written.
    Exists(StoredValue),
}

pub trait MetadataStore: Send + Sync + 'static {
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<StoredValue>, StoreError>> + Send;

    /// All keys that start with `key_prefix`, in key order.
    fn list(&self, key_prefix: &str) -> impl Future<Output = Result<Vec<StoredValue>, StoreError>> + Send;

    /// Writes `value` only if `key` does not exist, atomically.
    fn create(&self, key: &str, value: Vec<u8>) -> impl Future<Output = Result<CreateOutcome, StoreError>> + Send;

    /// Writes `value` only if `key` does not exist, attached to a new lease of `ttl`: the key
    /// is deleted when the lease is revoked or not kept alive for `ttl`.
    fn create_leased(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> impl Future<Output = Result<LeasedOutcome, StoreError>> + Send;

    /// Renews `lease` for another TTL. `Ok(false)` when it has already expired.
    fn keep_alive(&self, lease: i64) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Ends `lease` now, deleting its keys. Revoking an expired lease is not an error.
    fn revoke(&self, lease: i64) -> impl Future<Output = Result<(), StoreError>> + Send;
}
