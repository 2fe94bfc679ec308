//! One channel's capture thread (OpenCV reads block, so each channel has its own). It opens
//! the source, reads, converts every frame to the channel schema and queues it for Kafka.
//! Camera faults stay inside the channel: a live source that stalls or refuses is reopened
//! with exponential backoff and no attempt limit, and the time without frames is recorded
//! as a gap; undecodable frames are counted and skipped; a file ends on its own terms.

use crate::encode::FrameEncoder;
use crate::ledger::{ChannelLedger, SourceState};
use crate::queue::{FrameQueue, Pushed};
use crate::source::{self, OpenOptions, ReadOutcome, SourceError, SourceSpec};
use opencv::core::Mat;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// After this many undecodable frames in a row a file is taken as damaged from there on.
const MAX_CONSECUTIVE_UNDECODABLE: u32 = 100;
pub(crate) const INITIAL_BACKOFF: Duration = Duration::from_millis(250);

pub struct EncodedFrame {
    pub payload: Vec<u8>,
    pub capture_time_us: i64,
    /// Per channel and ingestor epoch, from 0, with no holes: a hole downstream is a loss.
    pub sequence: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Pace {
    /// Files and synthetic sources are read as fast as they decode and encode.
    Max,
    /// Files and synthetic sources are read at their frame rate, like a camera.
    Realtime,
}

#[derive(Debug, Clone, Copy)]
pub struct CaptureOptions {
    pub pace: Pace,
    pub max_frames: Option<u64>,
    /// No frame from a live source for this long is a stall: reconnect.
    pub stall_timeout: Duration,
    pub max_backoff: Duration,
    /// Keep retrying a file or directory that cannot be opened (it may appear later), as
    /// for live sources. Off when the operator named the file and waits for the result.
    pub retry_files: bool,
}

pub struct CaptureJob {
    pub source_uri: String,
    pub spec: SourceSpec,
    /// The channel's frame rate (its schema's): what `--pace realtime` plays files at, so
    /// `--fps` and `?fps=` govern pacing as they govern the schema. 0: the source's own.
    pub fps: f64,
    pub encoder: FrameEncoder,
    pub options: CaptureOptions,
    pub queue: Arc<FrameQueue<EncodedFrame>>,
    pub ledger: Arc<ChannelLedger>,
    pub stop: CancellationToken,
}

/// How a run of reads on one opened source ended.
enum ReadsEnded {
    Stopped,
    LimitReached,
    End,
    Damaged(String),
    Stalled,
    Failed(String),
}

/// Runs until the source ends, `max_frames` is reached or `stop` is cancelled; closes the
/// queue so the delivery task knows no more frames come.
pub fn capture_loop(mut job: CaptureJob) {
    let final_state = capture(&mut job);
    job.ledger.set_state(final_state);
    job.queue.close();
    tracing::info!(source = %job.source_uri, frames = job.ledger.captured(), state = final_state.as_str(), "capture ended");
}

fn capture(job: &mut CaptureJob) -> SourceState {
    let retry = job.spec.is_live() || job.options.retry_files;
    let open_options = OpenOptions {
        stall_timeout: job.options.stall_timeout,
    };
    let mut backoff = INITIAL_BACKOFF;
    // Set while the source is away: when it went away, for the gap's length.
    let mut gap_since: Option<Instant> = None;
    let mut frame = Mat::default();
    let mut sequence: u64 = job.ledger.next_sequence();
    let mut paced_from: Option<(Instant, u64)> = None;

    while !job.stop.is_cancelled() {
        job.ledger.set_state(if gap_since.is_some() {
            SourceState::Reconnecting
        } else {
            SourceState::Opening
        });
        let mut source = match source::open(&job.source_uri, &job.spec, open_options) {
            Ok(source) => source,
            Err(error) => {
                if !retry || matches!(error, SourceError::InvalidUri { .. }) {
                    tracing::error!(source = %job.source_uri, %error, "cannot open the source");
                    job.ledger.record_error(error.to_string());
                    return SourceState::Failed;
                }
                tracing::warn!(source = %job.source_uri, retry_in = ?backoff, %error, "cannot open the source; retrying");
                job.ledger.record_error(format!("{error}; retrying in {backoff:?}"));
                gap_since.get_or_insert_with(Instant::now);
                if !sleep_unless_stopped(&job.stop, backoff) {
                    break;
                }
                backoff = (backoff * 2).min(job.options.max_backoff);
                continue;
            }
        };
        if let Some(since) = gap_since.take() {
            let gap = since.elapsed();
            job.ledger.record_gap(gap);
            job.ledger.clear_error();
            tracing::info!(source = %job.source_uri, ?gap, "source back; capture resumes");
        }
        backoff = INITIAL_BACKOFF;
        job.ledger.set_state(SourceState::Capturing);
        let info = source.info();
        let paced = job.options.pace == Pace::Realtime && !job.spec.is_live();
        let fps = if job.fps > 0.0 { job.fps } else { info.fps };
        let frame_interval = Duration::from_secs_f64(1.0 / fps.max(0.001));

        let mut consecutive_undecodable = 0;
        let ended = loop {
            if job.stop.is_cancelled() {
                break ReadsEnded::Stopped;
            }
            if job.options.max_frames.is_some_and(|limit| sequence >= limit) {
                break ReadsEnded::LimitReached;
            }
            match source.read(&mut frame) {
                Ok(ReadOutcome::Frame) => consecutive_undecodable = 0,
                Ok(ReadOutcome::FrameAfterSkipping(skipped)) => {
                    consecutive_undecodable = 0;
                    for _ in 0..skipped {
                        job.ledger
                            .record_undecodable(format!("a frame of `{}` could not be read", job.source_uri));
                    }
                }
                Ok(ReadOutcome::Undecodable(reason)) => {
                    job.ledger.record_undecodable(reason.clone());
                    consecutive_undecodable += 1;
                    if consecutive_undecodable >= MAX_CONSECUTIVE_UNDECODABLE {
                        break ReadsEnded::Damaged(reason);
                    }
                    continue;
                }
                Ok(ReadOutcome::UnreadableItem(reason)) => {
                    tracing::warn!(source = %job.source_uri, %reason, "unreadable item skipped");
                    job.ledger.record_undecodable(reason);
                    continue;
                }
                Ok(ReadOutcome::End) => break ReadsEnded::End,
                Ok(ReadOutcome::Stalled) => break ReadsEnded::Stalled,
                Err(error) => break ReadsEnded::Failed(error.to_string()),
            }
            let capture_time_us = framefleet_common::startup::unix_time_us();
            job.ledger.record_frame_read();
            match job.encoder.encode(&frame) {
                Ok(payload) => {
                    let encoded = EncodedFrame {
                        payload,
                        capture_time_us,
                        sequence,
                    };
                    match job.queue.push(encoded, &job.stop) {
                        Pushed::Queued => {}
                        Pushed::QueuedDroppingOldest => job.ledger.record_dropped(),
                        // Stopped while waiting for room: the frame was never accepted.
                        Pushed::Refused => break ReadsEnded::Stopped,
                    }
                    job.ledger.sequence_used(sequence);
                    sequence += 1;
                    job.ledger.record_captured();
                }
                // A frame the encoder cannot convert is a bad frame of the source, not a
                // reason to stop the channel.
                Err(error) => job.ledger.record_undecodable(error.to_string()),
            }
            if paced {
                let (start, first) = *paced_from.get_or_insert((Instant::now(), sequence));
                let due = start + frame_interval.mul_f64((sequence - first) as f64);
                if let Some(wait) = due.checked_duration_since(Instant::now())
                    && !sleep_unless_stopped(&job.stop, wait)
                {
                    break ReadsEnded::Stopped;
                }
            }
        };
        match ended {
            ReadsEnded::Stopped => return SourceState::Stopped,
            ReadsEnded::LimitReached => return SourceState::Ended,
            ReadsEnded::End if looping(&job.spec) => continue,
            ReadsEnded::End => return SourceState::Ended,
            ReadsEnded::Damaged(reason) => {
                let message = format!(
                    "source `{}` is damaged: {MAX_CONSECUTIVE_UNDECODABLE} undecodable frames in a row (last: {reason}); \
                     the channel ends here",
                    job.source_uri
                );
                tracing::error!(source = %job.source_uri, undecodable_in_a_row = MAX_CONSECUTIVE_UNDECODABLE, last = %reason, "source is damaged; the channel ends here");
                job.ledger.record_error(message);
                return SourceState::Ended;
            }
            ReadsEnded::Failed(reason) if !retry => {
                job.ledger.record_error(reason);
                return SourceState::Failed;
            }
            ReadsEnded::Stalled | ReadsEnded::Failed(_) => {
                // The gap began with the last frame, not when the read gave up.
                let unix_now_ms = u64::try_from(framefleet_common::startup::unix_time_ms()).unwrap_or_default();
                let without_frames = Duration::from_millis(unix_now_ms.saturating_sub(job.ledger.last_frame_unix_ms()));
                gap_since = Some(Instant::now().checked_sub(without_frames).unwrap_or_else(Instant::now));
                let message = format!(
                    "source `{}` stalled (no frame for {:?}); reconnecting",
                    job.source_uri, job.options.stall_timeout
                );
                tracing::warn!(source = %job.source_uri, stall_timeout = ?job.options.stall_timeout, "source stalled; reconnecting");
                job.ledger.record_error(message);
                paced_from = None;
            }
        }
    }
    SourceState::Stopped
}

fn looping(spec: &SourceSpec) -> bool {
    matches!(spec, SourceSpec::Path { looping: true, .. })
}

/// Sleeps in short steps so a stop is noticed; false if stopped.
pub(crate) fn sleep_unless_stopped(stop: &CancellationToken, duration: Duration) -> bool {
    let deadline = Instant::now() + duration;
    loop {
        if stop.is_cancelled() {
            return false;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}
