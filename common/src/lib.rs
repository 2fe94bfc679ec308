//! Code every framefleet binary shares: the end-to-end audit read from Kafka ([`audit`]),
//! configuration loading ([`config`]), the Kafka
//! client settings that matter for correctness ([`kafka`]), telemetry set-up
//! ([`telemetry`]) and frame traces ([`frame_trace`]), signal-driven shutdown ([`shutdown`]), start-up helpers
//! ([`startup`]) and the report stream to the coordinator ([`report_stream`]).
//!
//! This crate must never hold global configuration: everything is passed explicitly.

pub mod args;
pub mod audit;
pub mod config;
pub mod frame_trace;
pub mod kafka;
pub mod metrics;
pub mod model_upload;
pub mod report_stream;
pub mod secrets;
pub mod shutdown;
pub mod startup;
pub mod telemetry;
