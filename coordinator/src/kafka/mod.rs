//! The coordinator's Kafka adapters: topic provisioning ([`topics`]), the offsets it reads
//! ([`offsets`]) and model weights ([`model_bytes`]). The domain modules use them through the
//! traits `TopicAdmin`, `DrainProbe` and `ModelBytes`, which tests implement in memory.

pub mod model_bytes;
pub mod offsets;
pub mod topics;
