//! Per-channel accounting: every captured frame ends up acknowledged by Kafka, failed (with
//! the reason), or dropped by the queue policy; source trouble is counted as gaps and
//! undecodable frames. The counts go to the coordinator and to the metrics endpoint.

use framefleet_proto::v1;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SourceState {
    Opening = 0,
    Capturing = 1,
    Reconnecting = 2,
    Ended = 3,
    Failed = 4,
    Stopped = 5,
}

impl SourceState {
    /// The state [`Self::as_str`] names; `None` for any other text.
    pub fn parse(name: &str) -> Option<Self> {
        [
            Self::Opening,
            Self::Capturing,
            Self::Reconnecting,
            Self::Ended,
            Self::Failed,
            Self::Stopped,
        ]
        .into_iter()
        .find(|state| state.as_str() == name)
    }

    fn from_u8(value: u8) -> Self {
        match value {
            1 => Self::Capturing,
            2 => Self::Reconnecting,
            3 => Self::Ended,
            4 => Self::Failed,
            5 => Self::Stopped,
            _ => Self::Opening,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Opening => "opening",
            Self::Capturing => "capturing",
            Self::Reconnecting => "reconnecting",
            Self::Ended => "ended",
            Self::Failed => "failed",
            Self::Stopped => "stopped",
        }
    }
}

#[derive(Debug)]
pub struct ChannelLedger {
    pub channel_id: String,
    captured: AtomicU64,
    acknowledged: AtomicU64,
    failed: AtomicU64,
    failed_possibly_persisted: AtomicU64,
    resent: AtomicU64,
    dropped: AtomicU64,
    undecodable: AtomicU64,
    capture_crashes: AtomicU64,
    gaps: AtomicU64,
    gap_ms: AtomicU64,
    bytes_acknowledged: AtomicU64,
    queued: AtomicU64,
    /// Unix ms of the last frame read from the source; 0 before the first.
    last_frame_unix_ms: AtomicU64,
    state: AtomicU8,
    finished: AtomicBool,
    last_error: Mutex<String>,
    last_undecodable: Mutex<String>,
    /// Capture → every copy acknowledged by Kafka, per acknowledged frame, seconds.
    capture_to_acked: Histogram,
    /// The sequence number the channel's next frame gets. It lives here, not in a capture
    /// job, so that a channel stopped and started again in the same run (taken away and
    /// claimed back) goes on numbering: (channel, epoch, sequence) names one frame.
    next_sequence: AtomicU64,
}

/// Buckets of the capture → acknowledged histogram: 1 ms to ≈ 65 s.
fn capture_to_acked_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.001, 2.0, 17)
}

/// Every channel ledger of this ingestor, kept after the channel stops so the counts stay
/// cumulative, shared by its capture, delivery, reports and
/// metrics; `epoch` (this run's start, unix ms, as in each frame's `ff-epoch`) goes into every
/// reported ledger, so the coordinator keeps one per channel and run.
#[derive(Clone, Default)]
pub struct Ledgers {
    channels: Arc<Mutex<BTreeMap<String, Arc<ChannelLedger>>>>,
    epoch: u64,
}

impl Ledgers {
    pub fn new(epoch: u64) -> Self {
        Self {
            channels: Arc::default(),
            epoch,
        }
    }

    pub fn get_or_create(&self, channel_id: &str) -> Arc<ChannelLedger> {
        let mut ledgers = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(
            ledgers
                .entry(channel_id.to_owned())
                .or_insert_with(|| Arc::new(ChannelLedger::new(channel_id))),
        )
    }

    pub fn get(&self, channel_id: &str) -> Option<Arc<ChannelLedger>> {
        self.channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(channel_id)
            .cloned()
    }

    /// Every channel's ledger, by channel id.
    pub fn all(&self) -> Vec<Arc<ChannelLedger>> {
        self.channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    pub fn snapshots(&self) -> Vec<framefleet_proto::v1::ChannelLedger> {
        self.channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|ledger| framefleet_proto::v1::ChannelLedger {
                ingestor_epoch: self.epoch,
                ..ledger.snapshot()
            })
            .collect()
    }
}

impl Default for ChannelLedger {
    fn default() -> Self {
        Self {
            channel_id: String::new(),
            captured: AtomicU64::default(),
            acknowledged: AtomicU64::default(),
            failed: AtomicU64::default(),
            failed_possibly_persisted: AtomicU64::default(),
            resent: AtomicU64::default(),
            dropped: AtomicU64::default(),
            undecodable: AtomicU64::default(),
            capture_crashes: AtomicU64::default(),
            gaps: AtomicU64::default(),
            gap_ms: AtomicU64::default(),
            bytes_acknowledged: AtomicU64::default(),
            queued: AtomicU64::default(),
            last_frame_unix_ms: AtomicU64::default(),
            state: AtomicU8::default(),
            finished: AtomicBool::default(),
            last_error: Mutex::default(),
            last_undecodable: Mutex::default(),
            capture_to_acked: Histogram::new(capture_to_acked_buckets()),
            next_sequence: AtomicU64::default(),
        }
    }
}

/// How a failed delivery may have ended on the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persisted {
    /// Refused before it was written (too large, unknown topic, …): no consumer sees it.
    No,
    /// Timed out after it was sent: it may be in the log.
    Possibly,
}

impl ChannelLedger {
    pub fn new(channel_id: &str) -> Self {
        Self {
            channel_id: channel_id.to_owned(),
            ..Self::default()
        }
    }

    /// The sequence number for the channel's next frame in this run.
    pub fn next_sequence(&self) -> u64 {
        self.next_sequence.load(Ordering::Acquire)
    }

    /// A frame numbered `sequence` was taken: the next one is numbered after it.
    pub fn sequence_used(&self, sequence: u64) {
        self.next_sequence.fetch_max(sequence + 1, Ordering::AcqRel);
    }

    /// A frame was encoded and queued for Kafka: from here on it is accounted for as
    /// acknowledged, failed or dropped.
    pub fn record_captured(&self) {
        self.captured.fetch_add(1, Ordering::Relaxed);
    }

    /// The source delivered a frame (the stall watch and gap lengths count from here).
    pub fn record_frame_read(&self) {
        self.last_frame_unix_ms.store(
            u64::try_from(framefleet_common::startup::unix_time_ms()).unwrap_or_default(),
            Ordering::Relaxed,
        );
    }

    /// Kafka acknowledged every copy of a frame of `bytes`, captured at `capture_time_us`
    /// (unix µs).
    pub fn record_acknowledged(&self, bytes: usize, capture_time_us: i64) {
        self.acknowledged.fetch_add(1, Ordering::Relaxed);
        self.bytes_acknowledged.fetch_add(bytes as u64, Ordering::Relaxed);
        let elapsed_us = (framefleet_common::startup::unix_time_us() - capture_time_us).max(0);
        self.capture_to_acked.observe(elapsed_us as f64 / 1e6);
    }

    /// The capture → acknowledged histogram (a handle on the same counts).
    pub fn capture_to_acked(&self) -> Histogram {
        self.capture_to_acked.clone()
    }

    pub fn record_failed(&self, reason: String, persisted: Persisted) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        if persisted == Persisted::Possibly {
            self.failed_possibly_persisted.fetch_add(1, Ordering::Relaxed);
        }
        tracing::warn!(channel = %self.channel_id, %reason, ?persisted, "frame not delivered");
        self.set_error(reason);
    }

    /// A copy of a frame failed to deliver for a passing reason and is sent again.
    pub fn record_resent(&self, reason: &str) {
        self.resent.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(channel = %self.channel_id, %reason, "frame sent again");
    }

    pub fn record_dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_undecodable(&self, reason: String) {
        self.undecodable.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(channel = %self.channel_id, %reason, "undecodable frame skipped");
        *self.last_undecodable.lock().unwrap_or_else(PoisonError::into_inner) = reason;
    }

    /// The channel's capture process died (a decoder crash); see [`crate::isolation`].
    pub fn record_capture_crash(&self) {
        self.capture_crashes.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes on what a capture process reported of the source (undecodable frames, gaps,
    /// state, errors): `current` is its latest report, `previous` the one before (zeros for
    /// a new process), so counts add up across restarts.
    pub fn adopt_source_report(&self, previous: &v1::ChannelLedger, current: &v1::ChannelLedger) {
        let grow = |counter: &AtomicU64, before: u64, now: u64| {
            counter.fetch_add(now.saturating_sub(before), Ordering::Relaxed);
        };
        grow(
            &self.undecodable,
            previous.frames_undecodable,
            current.frames_undecodable,
        );
        grow(&self.gaps, previous.source_gaps, current.source_gaps);
        grow(&self.gap_ms, previous.source_gap_ms, current.source_gap_ms);
        if current.last_error != previous.last_error {
            self.set_error(current.last_error.clone());
        }
        if current.last_undecodable != previous.last_undecodable {
            *self.last_undecodable.lock().unwrap_or_else(PoisonError::into_inner) = current.last_undecodable.clone();
        }
        if let Some(state) = SourceState::parse(&current.source_state) {
            self.set_state(state);
        }
    }

    pub fn record_gap(&self, length: Duration) {
        self.gaps.fetch_add(1, Ordering::Relaxed);
        self.gap_ms
            .fetch_add(u64::try_from(length.as_millis()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    pub fn set_queued(&self, frames: usize) {
        self.queued.store(frames as u64, Ordering::Relaxed);
    }

    /// Remembers a channel-level problem (bad source, outage) without counting a frame.
    pub fn record_error(&self, reason: String) {
        self.set_error(reason);
    }

    pub fn clear_error(&self) {
        self.set_error(String::new());
    }

    fn set_error(&self, reason: String) {
        *self.last_error.lock().unwrap_or_else(PoisonError::into_inner) = reason;
    }

    pub fn set_state(&self, state: SourceState) {
        self.state.store(state as u8, Ordering::Release);
    }

    pub fn state(&self) -> SourceState {
        SourceState::from_u8(self.state.load(Ordering::Acquire))
    }

    pub fn mark_finished(&self) {
        self.finished.store(true, Ordering::Release);
    }

    pub fn reopen(&self) {
        self.finished.store(false, Ordering::Release);
        self.set_state(SourceState::Opening);
    }

    pub fn is_finished(&self) -> bool {
        self.finished.load(Ordering::Acquire)
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

    pub fn last_frame_unix_ms(&self) -> u64 {
        self.last_frame_unix_ms.load(Ordering::Relaxed)
    }

    pub fn snapshot(&self) -> v1::ChannelLedger {
        v1::ChannelLedger {
            channel_id: self.channel_id.clone(),
            frames_captured: self.captured(),
            frames_acknowledged: self.acknowledged(),
            frames_failed: self.failed(),
            bytes_acknowledged: self.bytes_acknowledged.load(Ordering::Relaxed),
            frames_dropped: self.dropped.load(Ordering::Relaxed),
            source_finished: self.is_finished(),
            last_error: self.last_error.lock().unwrap_or_else(PoisonError::into_inner).clone(),
            last_undecodable: self
                .last_undecodable
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            source_gaps: self.gaps.load(Ordering::Relaxed),
            source_gap_ms: self.gap_ms.load(Ordering::Relaxed),
            frames_undecodable: self.undecodable.load(Ordering::Relaxed),
            capture_crashes: self.capture_crashes.load(Ordering::Relaxed),
            frames_failed_possibly_persisted: self.failed_possibly_persisted.load(Ordering::Relaxed),
            frames_resent: self.resent.load(Ordering::Relaxed),
            source_state: self.state().as_str().to_owned(),
            frames_queued: self.queued.load(Ordering::Relaxed),
            // Filled in by `Ledgers` (the epoch) and by the coordinator when it stores the
            // ledger.
            ingestor_id: String::new(),
            stored_unix_ms: 0,
            ingestor_epoch: 0,
        }
    }
}

/// The ingestor's Prometheus metrics, through `prometheus-client`: every ledger counter per
/// channel (`framefleet_ingestor_*{ingestor, channel}`), read from the ledgers at each scrape,
/// and each channel's `framefleet_ingestor_frame_capture_to_acked_seconds` histogram.
pub fn render_metrics(ingestor_id: &str, ledgers: &[&ChannelLedger]) -> String {
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(LedgerCollector {
        ingestor_id: ingestor_id.to_owned(),
        ledgers: ledgers.iter().map(|ledger| ledger.snapshot()).collect(),
        capture_to_acked: ledgers.iter().map(|ledger| ledger.capture_to_acked()).collect(),
    }));
    let mut text = String::new();
    if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &registry) {
        tracing::warn!(%error, "encoding metrics failed");
    }
    text
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct ChannelLabels {
    ingestor: String,
    channel: String,
}

/// Ledger snapshots as Prometheus families: the values are the ledgers' own cumulative
/// counts, so they are exported as they are (constant metrics), not re-counted.
#[derive(Debug)]
struct LedgerCollector {
    ingestor_id: String,
    ledgers: Vec<v1::ChannelLedger>,
    /// One per ledger, in the same order.
    capture_to_acked: Vec<Histogram>,
}

impl prometheus_client::collector::Collector for LedgerCollector {
    fn encode(&self, mut encoder: prometheus_client::encoding::DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::MetricType;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        type Value = fn(&v1::ChannelLedger) -> f64;
        let counters: [(&str, &str, Value); 11] = [
            ("frames_captured", "Frames read from the source", |l| {
                l.frames_captured as f64
            }),
            ("frames_acknowledged", "Frames acknowledged by Kafka (acks=all)", |l| {
                l.frames_acknowledged as f64
            }),
            ("frames_failed", "Frames Kafka did not acknowledge", |l| {
                l.frames_failed as f64
            }),
            (
                "frames_failed_possibly_persisted",
                "Failed frames that may still be in the log",
                |l| l.frames_failed_possibly_persisted as f64,
            ),
            (
                "frames_resent",
                "Copies of frames sent again after a passing delivery failure",
                |l| l.frames_resent as f64,
            ),
            (
                "frames_dropped",
                "Frames dropped by the drop-oldest queue policy",
                |l| l.frames_dropped as f64,
            ),
            ("frames_undecodable", "Source frames that could not be decoded", |l| {
                l.frames_undecodable as f64
            }),
            ("capture_crashes", "Times the channel's capture process died", |l| {
                l.capture_crashes as f64
            }),
            ("source_gaps", "Times the source stopped and capture resumed", |l| {
                l.source_gaps as f64
            }),
            ("source_gap_seconds", "Time without frames in source gaps", |l| {
                l.source_gap_ms as f64 / 1000.0
            }),
            ("bytes_acknowledged", "Payload bytes acknowledged by Kafka", |l| {
                l.bytes_acknowledged as f64
            }),
        ];
        let gauges: [(&str, &str, Value); 2] = [
            ("frames_queued", "Frames encoded and waiting for Kafka", |l| {
                l.frames_queued as f64
            }),
            (
                "source_finished",
                "1 when the source ended and every frame settled",
                |l| f64::from(u8::from(l.source_finished)),
            ),
        ];
        let labels: Vec<ChannelLabels> = self
            .ledgers
            .iter()
            .map(|ledger| ChannelLabels {
                ingestor: self.ingestor_id.clone(),
                channel: ledger.channel_id.clone(),
            })
            .collect();
        for (name, help, value) in counters {
            let name = format!("framefleet_ingestor_{name}");
            let mut family = encoder.encode_descriptor(&name, help, None, MetricType::Counter)?;
            for (ledger, labels) in self.ledgers.iter().zip(&labels) {
                ConstCounter::new(value(ledger)).encode(family.encode_family(labels)?)?;
            }
        }
        for (name, help, value) in gauges {
            let name = format!("framefleet_ingestor_{name}");
            let mut family = encoder.encode_descriptor(&name, help, None, MetricType::Gauge)?;
            for (ledger, labels) in self.ledgers.iter().zip(&labels) {
                ConstGauge::new(value(ledger)).encode(family.encode_family(labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "framefleet_ingestor_frame_capture_to_acked_seconds",
            "Capture to every copy acknowledged by Kafka, per frame",
            None,
            MetricType::Histogram,
        )?;
        for (histogram, labels) in self.capture_to_acked.iter().zip(&labels) {
            histogram.encode(family.encode_family(labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_carry_every_counter_per_channel() {
        let ledger = ChannelLedger::new("cam-\"1\"");
        ledger.record_captured();
        ledger.record_dropped();
        ledger.record_failed("timed out".into(), Persisted::Possibly);
        ledger.record_acknowledged(10, framefleet_common::startup::unix_time_us() - 20_000);
        let text = render_metrics("ing-1", &[&ledger]);
        assert!(
            text.contains(
                "framefleet_ingestor_frame_capture_to_acked_seconds_bucket{le=\"0.016\",ingestor=\"ing-1\",channel=\"cam-\\\"1\\\"\"} 0"
            ) && text.contains(
                "framefleet_ingestor_frame_capture_to_acked_seconds_bucket{le=\"0.032\",ingestor=\"ing-1\",channel=\"cam-\\\"1\\\"\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("framefleet_ingestor_frames_captured_total{ingestor=\"ing-1\",channel=\"cam-\\\"1\\\"\"} 1")
        );
        assert!(
            text.contains("framefleet_ingestor_frames_dropped_total{ingestor=\"ing-1\",channel=\"cam-\\\"1\\\"\"} 1")
        );
        assert!(
            text.contains("frames_failed_possibly_persisted_total{ingestor=\"ing-1\",channel=\"cam-\\\"1\\\"\"} 1")
        );
        assert_eq!(ledger.snapshot().last_error, "timed out");
        ledger.record_gap(Duration::from_millis(1500));
        ledger.record_capture_crash();
        let text = render_metrics("ing-1", &[&ledger]);
        assert!(
            text.contains("# TYPE framefleet_ingestor_source_gap_seconds counter"),
            "{text}"
        );
        assert!(
            text.contains(
                "framefleet_ingestor_source_gap_seconds_total{ingestor=\"ing-1\",channel=\"cam-\\\"1\\\"\"} 1.5"
            ),
            "{text}"
        );
        assert!(text.contains("framefleet_ingestor_capture_crashes_total{"), "{text}");
    }
}
