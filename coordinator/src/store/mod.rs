//! Durable metadata behind a trait: etcd in production and in integration tests, an
//! in-memory map in unit tests. Keys are relative to the store's prefix.

mod contract;
mod etcd;
mod etcd_members;
mod memory;

pub use contract::*;
pub use etcd::{EtcdAccess, EtcdStore, EtcdStoreConfig};
pub use memory::MemoryStore;
