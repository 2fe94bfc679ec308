//! The consume loop: gathers records into batches, hands one batch at a time to the compute
//! pool while the next is gathered, sends each computed batch's results and stores offsets as
//! acknowledgements settle.
//!
//! Memory is bounded by bytes at two places, and fetching is never paused: the records
//! gathered here stop being taken from librdkafka at `--max-buffered-mib`, and librdkafka's
//! own prefetch queue is bounded by `queued.max.messages.kbytes` (set from the same flag), so
//! when the worker falls behind librdkafka simply stops fetching. (Pausing partitions instead
//! discards the prefetched records on every resume; a worker that fell behind once then kept
//! refetching and drained at a third of its speed.)

use crate::Worker;
use crate::compute::{self, BatchContext, Outcome};
use crate::ops::MotionState;
use crate::record::ConsumedFrame;
use crate::sink::PendingBatch;
use crate::stages::Stages;
use anyhow::Context;
use futures::StreamExt;
use futures::future::OptionFuture;
use futures::stream::FuturesOrdered;
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Pause after a consumer error so a broker outage does not become a busy loop.
const CONSUMER_ERROR_BACKOFF: Duration = Duration::from_millis(500);
/// Even with the gathering buffer full, the consumer is polled at least this often, so a
/// worker whose results cannot be delivered (broker down) still serves its group's rebalances
/// and never exceeds `max.poll.interval.ms`; each such poll may gather one record over the
/// bound.
const LONGEST_POLL_GAP: Duration = Duration::from_secs(10);

/// A record librdkafka cannot hand over (a codec it was built without, a corrupt batch) is
/// refetched forever and never reaches this loop, so it can be neither processed nor
/// dead-lettered, and committing past it would lose whatever frames it holds. When such
/// errors keep coming for this long, the worker stops with the reason instead of stalling
/// silently. (Every standard codec is built in, so this is a corrupt or future record.)
const UNREADABLE_RECORD_LIMIT: Duration = Duration::from_secs(60);
/// Quiet time after which a run of unreadable-record errors is taken to have ended.
const UNREADABLE_RECORD_QUIET: Duration = Duration::from_secs(10);

/// Consumption errors that mean a record the broker holds cannot be read by this client, as
/// opposed to a broker or network problem that passes.
fn unreadable_record(error: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as Code;
    matches!(
        error,
        rdkafka::error::KafkaError::MessageConsumption(
            Code::NotImplemented | Code::BadCompression | Code::InvalidRecord | Code::InvalidMessage | Code::BadMessage
        )
    )
}

/// Follows runs of [`unreadable_record`] errors.
#[derive(Default)]
struct UnreadableRun {
    since: Option<Instant>,
    last: Option<Instant>,
}

impl UnreadableRun {
    /// Records one error; true once the run has lasted [`UNREADABLE_RECORD_LIMIT`].
    fn record(&mut self, now: Instant) -> bool {
        if self
            .last
            .is_none_or(|last| now.duration_since(last) > UNREADABLE_RECORD_QUIET)
        {
            self.since = Some(now);
        }
        self.last = Some(now);
        self.since
            .is_some_and(|since| now.duration_since(since) >= UNREADABLE_RECORD_LIMIT)
    }
}

/// A batch handed to the compute pool, with what it needs back.
type ComputingBatch = tokio::task::JoinHandle<ComputedBatch>;

/// A computed batch: its frames, their outcomes, the background models lent to it, and the
/// stages it ran (whose outputs its results go to, whatever version runs by then).
struct ComputedBatch {
    frames: Vec<ConsumedFrame>,
    outcomes: Vec<Outcome>,
    motion: MotionState,
    stages: Arc<Stages>,
}

/// Records consumed but not yet handed to compute, in consumption order.
#[derive(Default)]
struct Gathering {
    frames: VecDeque<ConsumedFrame>,
    bytes: usize,
    /// When the oldest gathered record must be dispatched even if its batch is not full.
    deadline: Option<tokio::time::Instant>,
}

impl Gathering {
    fn push(&mut self, frame: ConsumedFrame, batch_wait: Duration) {
        if self.frames.is_empty() {
            self.deadline = Some(tokio::time::Instant::now() + batch_wait);
        }
        self.bytes += frame.size_bytes();
        self.frames.push_back(frame);
    }

    /// Drops the records of `partitions`; returns how many were dropped.
    fn forget_partitions(&mut self, partitions: &[(String, i32)]) -> usize {
        let before = self.frames.len();
        self.frames.retain(|frame| {
            !partitions
                .iter()
                .any(|(topic, partition)| *topic == frame.topic && *partition == frame.partition)
        });
        self.bytes = self.frames.iter().map(ConsumedFrame::size_bytes).sum();
        if self.frames.is_empty() {
            self.deadline = None;
        }
        before - self.frames.len()
    }

    fn take(&mut self, count: usize, batch_wait: Duration) -> Vec<ConsumedFrame> {
        let taken: Vec<ConsumedFrame> = self.frames.drain(..count.min(self.frames.len())).collect();
        self.bytes -= taken.iter().map(ConsumedFrame::size_bytes).sum::<usize>();
        self.deadline = (!self.frames.is_empty()).then(|| tokio::time::Instant::now() + batch_wait);
        taken
    }
}

impl Worker {
    pub(crate) async fn consume_until(&mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut refresh = tokio::time::interval(Duration::from_millis(self.config.channel_refresh_ms.max(100)));
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let batch_size = self.config.batch_size.max(1);
        let batch_wait = Duration::from_millis(self.config.batch_max_wait_ms);
        let max_in_flight = self.config.max_in_flight_batches.max(1);
        let max_buffered_bytes = self.config.max_buffered_bytes();
        // Batches whose results are on their way to Kafka. Ordered, so offsets are stored in
        // consumption order even when acknowledgements arrive out of order.
        let mut in_flight: FuturesOrdered<PendingBatch> = FuturesOrdered::new();
        let mut computing: Option<(ComputingBatch, Instant)> = None;
        let mut gathering = Gathering::default();
        let mut last_poll = Instant::now();
        let mut unreadable = UnreadableRun::default();
        loop {
            // A rebalance runs inside a poll of the consumer, which may be a poll that returned
            // no record (the recv branch below then loses the select): records gathered from
            // partitions this worker just lost are left to their new owner instead of
            // processed twice. Checked on every turn, not only when a record arrives: a
            // worker that had gathered its whole backlog otherwise processed every record of
            // a partition it had lost (measured: 200 of 200, each one twice in the group).
            let revoked = self.consumer.context().take_revoked();
            if !revoked.is_empty() {
                let dropped = gathering.forget_partitions(&revoked);
                tracing::info!(
                    partitions = revoked.len(),
                    dropped,
                    "left gathered records of revoked partitions to their new owner"
                );
            }
            let can_dispatch = computing.is_none() && in_flight.len() < max_in_flight;
            let deadline_passed = gathering
                .deadline
                .is_some_and(|deadline| deadline <= tokio::time::Instant::now());
            if can_dispatch && !gathering.frames.is_empty() && (gathering.frames.len() >= batch_size || deadline_passed)
            {
                let frames = gathering.take(batch_size, batch_wait);
                computing = Some(self.start_compute(frames).await);
            }
            // A full batch may always wait, so a single record larger than the bound still
            // gets processed.
            let room = gathering.bytes < max_buffered_bytes
                || gathering.frames.len() < batch_size
                || last_poll.elapsed() >= LONGEST_POLL_GAP;
            // Re-evaluated: a batch may have been dispatched above.
            let wait_for_deadline = computing.is_none() && in_flight.len() < max_in_flight;
            let gathering_deadline = gathering.deadline;
            tokio::select! {
                // Checked first so a stop request wins over a ready message.
                biased;
                _ = shutdown.cancelled() => break,
                Some(settled) = in_flight.next(), if !in_flight.is_empty() => self.settle(settled?),
                Some(computed) = OptionFuture::from(computing.as_mut().map(|(handle, _)| handle)), if computing.is_some() => {
                    let started = computing.take().map(|(_, started)| started).unwrap_or_else(Instant::now);
                    let computed = computed.context("batch processing panicked")?;
                    self.motion = Some(computed.motion);
                    in_flight.push_back(self.send_batch(computed.frames, computed.outcomes, started, &computed.stages).await?);
                }
                _ = sleep_until_some(gathering_deadline), if wait_for_deadline && gathering_deadline.is_some() => {}
                _ = refresh.tick() => {
                    if let Err(error) = self.refresh_channels().await {
                        tracing::warn!(error = format!("{error:#}"), "cannot refresh channels");
                    }
                }
                // Not polled while enough is gathered: librdkafka's bounded queue holds the
                // rest and its fetcher waits.
                _ = tokio::time::sleep(LONGEST_POLL_GAP), if !room => {}
                message = self.consumer.recv(), if room => {
                    last_poll = Instant::now();
                    match message {
                        // The rebalance this poll ran may have taken the record's partition.
                        Ok(message) if !self.consumer.context().owns(message.topic(), message.partition()) => {
                            tracing::debug!(topic = message.topic(), partition = message.partition(), offset = message.offset(), "skipped a record of a partition this worker no longer owns");
                        }
                        Ok(message) => gathering.push(ConsumedFrame::from_message(&message), batch_wait),
                        Err(error) if unreadable_record(&error) => {
                            tracing::error!(%error, "a record cannot be read by this worker; its partition is stuck on it");
                            self.counters.errors.fetch_add(1, Ordering::Relaxed);
                            if unreadable.record(Instant::now()) {
                                anyhow::bail!(
                                    "a partition has held a record this worker cannot read for {UNREADABLE_RECORD_LIMIT:?} ({error}); stopping rather than skipping it, so no frame is lost: inspect the record with kcat and remove it, or dead-letter it by hand"
                                );
                            }
                            tokio::time::sleep(CONSUMER_ERROR_BACKOFF).await;
                        }
                        Err(error) => {
                            tracing::warn!(%error, "consumer error");
                            self.counters.errors.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(CONSUMER_ERROR_BACKOFF).await;
                        }
                    }
                }
            }
        }
        // Stop taking work, but finish what was started: its results are written and its
        // offsets stored. Frames gathered but not started are left for redelivery.
        if let Some((handle, started)) = computing.take() {
            let computed = handle.await.context("batch processing panicked")?;
            self.motion = Some(computed.motion);
            in_flight.push_back(
                self.send_batch(computed.frames, computed.outcomes, started, &computed.stages)
                    .await?,
            );
        }
        while let Some(settled) = in_flight.next().await {
            self.settle(settled?);
        }
        Ok(())
    }

    /// Validates, decodes and analyses a batch on the compute pool (tensor work must not run
    /// on the async reactor).
    async fn start_compute(&mut self, frames: Vec<ConsumedFrame>) -> (ComputingBatch, Instant) {
        self.learn_unknown_channels(&frames).await;
        let started = Instant::now();
        let catalog = Arc::clone(&self.catalog);
        let device = self.device.clone();
        let worker_id = self.worker_id.clone();
        let max_payload_bytes = self.config.kafka.max_frame_bytes();
        let analysis = self.config.analysis_settings();
        let pool = Arc::clone(&self.compute_pool);
        let stages = Arc::clone(&self.stages);
        let mut motion = self.motion.take().unwrap_or_default();
        let handle = tokio::task::spawn_blocking(move || {
            let context = BatchContext {
                device: &device,
                worker_id: &worker_id,
                max_payload_bytes,
                analysis,
                processing: &stages.processing,
                pipeline: stages.pipeline.as_ref(),
                detector: stages.detector.as_deref(),
            };
            let outcomes = pool.install(|| compute::process_batch(&frames, &catalog, &context, &mut motion));
            ComputedBatch {
                frames,
                outcomes,
                motion,
                stages,
            }
        });
        (handle, started)
    }
}

/// Sleeps until `deadline`, or forever when there is none.
async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_lasting_run_of_unreadable_records_stops_the_worker() {
        let start = Instant::now();
        let mut run = UnreadableRun::default();
        let mut at = start;
        // One error every 0.5 s (librdkafka's refetch) for just under the limit: keep going.
        while at.duration_since(start) < UNREADABLE_RECORD_LIMIT - Duration::from_secs(1) {
            assert!(!run.record(at));
            at += Duration::from_millis(500);
        }
        // Quiet for longer than the quiet time: a new run starts from zero.
        at += UNREADABLE_RECORD_QUIET + Duration::from_secs(1);
        assert!(!run.record(at));
        let restart = at;
        while at.duration_since(restart) < UNREADABLE_RECORD_LIMIT {
            assert!(!run.record(at));
            at += Duration::from_millis(500);
        }
        assert!(run.record(at), "a minute of the same stuck record stops the worker");
        assert!(unreadable_record(&rdkafka::error::KafkaError::MessageConsumption(
            rdkafka::types::RDKafkaErrorCode::NotImplemented
        )));
        assert!(!unreadable_record(&rdkafka::error::KafkaError::MessageConsumption(
            rdkafka::types::RDKafkaErrorCode::BrokerTransportFailure
        )));
    }
}
