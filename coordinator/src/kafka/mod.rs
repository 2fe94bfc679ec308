//! The coordinator's Kafka adapters: topic provisioning ([`topics`]) and the offsets it reads
//! ([`offsets`]). The domain modules use them through the traits `TopicAdmin` and `DrainProbe`,
//! which tests implement in memory.

pub mod offsets;
pub mod topics;
