//! Per-channel accounting: every captured frame ends up acknowledged by Kafka or failed
//! (with the reason), and the counts are reported to the coordinator.

use framefleet_proto::v1;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct ChannelLedger {
    pub channel_id: String,
    captured: AtomicU64,
    acknowledged: AtomicU64,
    failed: AtomicU64,
    bytes_acknowledged: AtomicU64,
    finished: AtomicBool,
    last_error: Mutex<String>,
}

impl ChannelLedger {
    pub fn new(channel_id: &str) -> Self {
        Self {
            channel_id: channel_id.to_owned(),
            ..Self::default()
        }
    }

    pub fn record_captured(&self) {
        self.captured.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_acknowledged(&self, bytes: usize) {
        self.acknowledged.fetch_add(1, Ordering::Relaxed);
        self.bytes_acknowledged.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub fn record_failed(&self, reason: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(channel = %self.channel_id, %reason, "frame not delivered");
        *self
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = reason;
    }

    pub fn record_error(&self, reason: String) {
        *self
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = reason;
    }

    pub fn mark_finished(&self) {
        self.finished.store(true, Ordering::Release);
    }

    pub fn captured(&self) -> u64 {
        self.captured.load(Ordering::Relaxed)
    }

    pub fn acknowledged(&self) -> u64 {
        self.acknowledged.load(Ordering::Relaxed)
    }

    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    pub fn snapshot(&self) -> v1::ChannelLedger {
        v1::ChannelLedger {
            channel_id: self.channel_id.clone(),
            frames_captured: self.captured(),
            frames_acknowledged: self.acknowledged(),
            frames_failed: self.failed(),
            bytes_acknowledged: self.bytes_acknowledged.load(Ordering::Relaxed),
            // The ingestor blocks the camera read when its queue is full; it never drops.
            frames_dropped: 0,
            source_finished: self.finished.load(Ordering::Acquire),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        }
    }
}
