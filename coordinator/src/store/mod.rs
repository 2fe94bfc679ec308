//! Durable metadata behind a trait: etcd in production and in integration tests, an
//! in-memory map in unit tests. Keys are relative to the store's prefix.

mod etcd;
mod memory;

pub use etcd::{EtcdStore, EtcdStoreConfig};
pub use memory::MemoryStore;

use std::future::Future;

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

pub trait MetadataStore: Send + Sync + 'static {
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<StoredValue>, StoreError>> + Send;

    /// All keys that start with `key_prefix`, in key order.
    fn list(&self, key_prefix: &str) -> impl Future<Output = Result<Vec<StoredValue>, StoreError>> + Send;

    /// Writes `value` only if `key` does not exist, atomically.
    fn create(&self, key: &str, value: Vec<u8>) -> impl Future<Output = Result<CreateOutcome, StoreError>> + Send;
}
