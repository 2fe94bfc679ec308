//! Code every framefleet binary shares: configuration loading ([`config`]), the Kafka
//! client settings that matter for correctness ([`kafka`]), telemetry set-up
//! ([`telemetry`]), signal-driven shutdown ([`shutdown`]) and start-up helpers
//! ([`startup`]).
//!
//! This crate must never hold global configuration: everything is passed explicitly.

pub mod config;
pub mod kafka;
pub mod metrics;
pub mod shutdown;
pub mod startup;
pub mod telemetry;
