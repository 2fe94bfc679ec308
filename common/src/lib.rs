//! Code every framefleet binary shares: the end-to-end audit read from Kafka ([`audit`]),
//! configuration loading ([`config`]), the Kafka
//! client settings that matter for correctness ([`kafka`]), telemetry set-up
//! ([`telemetry`]) and frame traces ([`frame_trace`]), signal-driven shutdown ([`shutdown`]) and start-up helpers
//! ([`startup`]).
//!
//! This crate must never hold global configuration: everything is passed explicitly.

pub mod audit;
pub mod config;
pub mod frame_trace;
pub mod kafka;
pub mod metrics;
pub mod shutdown;
pub mod startup;
pub mod telemetry;
