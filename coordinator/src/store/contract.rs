//! What a metadata store is: the [`MetadataStore`] trait the coordinator's domain uses, and
//! the values, conditions, writes and watch events it deals in. Implemented for etcd
//! ([`super::EtcdStore`]) and in memory for tests ([`super::MemoryStore`]).

use futures::stream::BoxStream;
use std::future::Future;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredValue {
    pub key: String,
    pub value: Vec<u8>,
    /// Revision of the last change to this key (the fencing token for later updates).
    pub mod_revision: i64,
    /// Revision at which this key was created; a leader key's create revision is its term.
    pub create_revision: i64,
}

/// Every key under a prefix as of one store revision; a watch from `revision + 1` sees every
/// change after this listing and nothing before it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    pub values: Vec<StoredValue>,
    pub revision: i64,
}

/// A precondition of [`MetadataStore::commit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// The key does not exist.
    Absent(String),
    /// The key was last changed at exactly this revision (it exists and nobody wrote since).
    ModifiedAt(String, i64),
    /// The key exists and was created at this revision: the holder of a leader key created at
    /// that revision still holds it.
    CreatedAt(String, i64),
}

/// A write of [`MetadataStore::commit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    Put(String, Vec<u8>),
    Delete(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitOutcome {
    Committed {
        revision: i64,
    },
    /// A condition did not hold; nothing was written.
    Conflict,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    Put {
        value: StoredValue,
        previous: Option<StoredValue>,
    },
    Delete {
        key: String,
        previous: Option<StoredValue>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchBatch {
    /// Changes committed at `revision` (one transaction), in order.
    Changes { revision: i64, events: Vec<WatchEvent> },
    /// The requested start revision is gone; re-list and watch again from the listing.
    Compacted { compact_revision: i64 },
}

pub type WatchStream = BoxStream<'static, Result<WatchBatch, StoreError>>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Unavailable(String),
    /// The store did not answer within the request deadline.
    #[error("{0}")]
    Timeout(String),
}

impl From<StoreError> for crate::error::CoordinatorError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(reason) => Self::StoreUnavailable(reason),
            StoreError::Timeout(reason) => Self::StoreTimeout(reason),
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
    /// Written; the key lives as long as this lease is kept alive. `revision` is the key's
    /// create revision, usable as a fencing token ([`Condition::CreatedAt`]).
    Created { lease: i64, revision: i64 },
    /// The key already existed (held by someone else's lease); nothing was written.
    Exists(StoredValue),
}

pub trait MetadataStore: Send + Sync + 'static {
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<StoredValue>, StoreError>> + Send;

    /// All keys that start with `key_prefix`, in key order.
    fn list(&self, key_prefix: &str) -> impl Future<Output = Result<Vec<StoredValue>, StoreError>> + Send;

    /// Like [`Self::list`], with the revision the listing was read at.
    fn snapshot(&self, key_prefix: &str) -> impl Future<Output = Result<Listing, StoreError>> + Send;

    /// Applies every write if and only if every condition holds, as one transaction.
    fn commit(
        &self,
        conditions: Vec<Condition>,
        writes: Vec<Write>,
    ) -> impl Future<Output = Result<CommitOutcome, StoreError>> + Send;

    /// Changes under `key_prefix` from `from_revision` on (inclusive). The stream ends with an
    /// error when the store becomes unreachable.
    fn watch(
        &self,
        key_prefix: &str,
        from_revision: i64,
    ) -> impl Future<Output = Result<WatchStream, StoreError>> + Send;

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
