//! The framefleet worker: a stateless member of the worker consumer group. It consumes the
//! channel topics the coordinator knows, processes frames in batches on the selected
//! device, writes one result (or dead letter) per frame, and stores a frame's offset only
//! after that record is acknowledged by Kafka: at-least-once, never at-most-once.

pub mod batch;
pub mod config;
pub mod consumer;
pub mod decode;
pub mod ops;
pub mod report;

use crate::batch::{BatchContext, Catalog, ConsumedFrame, Outcome};
use crate::config::WorkerConfig;
use crate::report::{Reporter, WorkerCounters};
use anyhow::Context;
use framefleet_common::kafka;
use framefleet_proto::v1::channel_service_client::ChannelServiceClient;
use framefleet_proto::v1::schema_service_client::SchemaServiceClient;
use framefleet_proto::v1::{Channel, GetSchemaRequest, ListChannelsRequest, TopicStrategy};
use framefleet_proto::wire::{self, HEADER_DEAD_LETTER_REASON};
use futures::StreamExt;
use futures::future::OptionFuture;
use futures::stream::FuturesOrdered;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Pause after a consumer error so a broker outage does not become a busy loop.
const CONSUMER_ERROR_BACKOFF: Duration = Duration::from_millis(500);
/// At most one extra channel lookup per this interval for frames of unknown channels, so a
/// topic full of garbage cannot turn into a flood of coordinator calls.
const UNKNOWN_CHANNEL_LOOKUP_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerSummary {
    pub frames_processed: u64,
    pub frames_dead_lettered: u64,
    pub batches: u64,
}

type WorkerConsumer = StreamConsumer<consumer::WorkerConsumerContext>;

/// A batch whose results were sent; resolves when Kafka has acknowledged all of them.
type PendingBatch = Pin<Box<dyn Future<Output = anyhow::Result<SettledBatch>> + Send>>;

struct SettledBatch {
    next_offsets: Vec<(String, i32, i64)>,
    processed: u64,
    dead_lettered: u64,
    compute_time: Duration,
    /// When its computation started: settling it ends the batch's latency.
    started: Instant,
}

struct Worker {
    config: WorkerConfig,
    worker_id: String,
    device: candle_core::Device,
    consumer: WorkerConsumer,
    producer: FutureProducer,
    channel_client: ChannelServiceClient<framefleet_proto::client::CoordinatorChannel>,
    schema_client: SchemaServiceClient<framefleet_proto::client::CoordinatorChannel>,
    /// Replaced whole on every refresh, so a batch can take it to its blocking thread without
    /// copying every channel.
    catalog: Arc<Catalog>,
    subscribed_topics: Vec<String>,
    last_unknown_channel_lookup: Option<Instant>,
    counters: Arc<WorkerCounters>,
    /// Each channel's background model; lent to the blocking thread for every batch.
    motion: Option<ops::MotionState>,
}

pub async fn run(config: WorkerConfig, shutdown: CancellationToken) -> anyhow::Result<WorkerSummary> {
    config.validate()?;
    let worker_id = config.worker_id();
    let timeout = Duration::from_secs(config.request_timeout_secs.max(1));
    let device = ops::select_device(&config.device)?;
    let device_name = ops::describe_device(&device);
    tracing::info!(worker = %worker_id, device = %device_name, "device selected");

    let coordinator =
        framefleet_proto::client::connect_coordinator(&config.coordinator, timeout, &config.client_options()).await?;
    let channel_client = ChannelServiceClient::new(coordinator.clone());
    let schema_client = SchemaServiceClient::new(coordinator);

    let mut consumer_config =
        kafka::worker_consumer_config(&config.kafka_brokers, &config.group, config.max_frame_bytes());
    consumer_config
        .set("client.id", &worker_id)
        // Statistics feed the lag this worker reports.
        .set("statistics.interval.ms", config.report_interval_ms.max(100).to_string());
    if let Some(instance_id) = &config.group_instance_id {
        // Static membership: a restart within the session timeout gets its partitions back
        // without a rebalance. The member does not leave the group on shutdown.
        consumer_config.set("group.instance.id", instance_id);
    }
    let gauges = Arc::new(consumer::ConsumerGauges::default());
    gauges.lag_frames.store(-1, Ordering::Relaxed);
    let consumer: WorkerConsumer = consumer_config
        .create_with_context(consumer::WorkerConsumerContext {
            gauges: Arc::clone(&gauges),
        })
        .context("cannot create the Kafka consumer")?;
    let mut producer_config = kafka::producer_config(&config.kafka_brokers, config.max_frame_bytes());
    producer_config.set("client.id", &worker_id);
    let producer: FutureProducer = producer_config.create().context("cannot create the Kafka producer")?;
    kafka::check_reachable(&producer, &config.kafka_brokers, timeout).await?;

    let counters = Arc::new(WorkerCounters::default());
    let reporter_stop = CancellationToken::new();
    let reporter = tokio::spawn(
        Reporter {
            coordinator: config.coordinator.clone(),
            client_options: config.client_options(),
            connect_timeout: timeout,
            worker_id: worker_id.clone(),
            device: device_name,
            counters: Arc::clone(&counters),
            gauges,
        }
        .run(
            Duration::from_millis(config.report_interval_ms.max(100)),
            reporter_stop.clone(),
        ),
    );

    let mut worker = Worker {
        config,
        worker_id,
        device,
        consumer,
        producer,
        channel_client,
        schema_client,
        catalog: Arc::new(Catalog::default()),
        subscribed_topics: Vec::new(),
        last_unknown_channel_lookup: None,
        counters: Arc::clone(&counters),
        motion: Some(ops::MotionState::default()),
    };
    let outcome = worker.consume_until(shutdown).await;
    worker.leave().await;
    reporter_stop.cancel();
    reporter.await.context("reporter task panicked")?;
    outcome?;
    Ok(WorkerSummary {
        frames_processed: counters.frames_processed.load(Ordering::Relaxed),
        frames_dead_lettered: counters.frames_dead_lettered.load(Ordering::Relaxed),
        batches: counters.batches.load(Ordering::Relaxed),
    })
}

/// A batch handed to the blocking thread pool, with what it needs back.
type ComputingBatch = tokio::task::JoinHandle<(Vec<ConsumedFrame>, Vec<Outcome>, ops::MotionState)>;

impl Worker {
    /// The consume loop. Polling Kafka never waits for compute: frames for the next batches
    /// are gathered while the current one runs on the blocking pool, and once enough are
    /// waiting the assigned partitions are paused, not left unpolled, so librdkafka's
    /// `max.poll.interval.ms` never sees a busy worker as a dead one.
    async fn consume_until(&mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut refresh = tokio::time::interval(Duration::from_millis(self.config.channel_refresh_ms.max(100)));
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let batch_size = self.config.batch_size.max(1);
        let batch_wait = Duration::from_millis(self.config.batch_max_wait_ms);
        let max_in_flight = self.config.max_in_flight_batches.max(1);
        // Batches whose results are on their way to Kafka. Ordered, so offsets are stored in
        // consumption order even when acknowledgements arrive out of order.
        let mut in_flight: FuturesOrdered<PendingBatch> = FuturesOrdered::new();
        let mut computing: Option<(ComputingBatch, Instant)> = None;
        let mut gathering: std::collections::VecDeque<ConsumedFrame> = std::collections::VecDeque::new();
        let mut gathering_deadline: Option<tokio::time::Instant> = None;
        let mut paused = false;
        // Pausing discards librdkafka's prefetched records, which then have to be fetched
        // again, so fetching stops only when several batches are waiting and starts again
        // once at most one remains, rather than flapping at every batch.
        let pause_at = batch_size.saturating_mul(self.config.max_buffered_batches.max(2));
        let resume_below = batch_size.saturating_mul(2);
        loop {
            let can_dispatch = computing.is_none() && in_flight.len() < max_in_flight;
            let deadline_passed = gathering_deadline.is_some_and(|deadline| deadline <= tokio::time::Instant::now());
            if can_dispatch && !gathering.is_empty() && (gathering.len() >= batch_size || deadline_passed) {
                let take = gathering.len().min(batch_size);
                let frames: Vec<ConsumedFrame> = gathering.drain(..take).collect();
                gathering_deadline = (!gathering.is_empty()).then(|| tokio::time::Instant::now() + batch_wait);
                computing = Some(self.start_compute(frames).await);
            }
            if !paused && gathering.len() >= pause_at {
                self.set_paused(true);
                paused = true;
            } else if paused && gathering.len() < resume_below {
                self.set_paused(false);
                paused = false;
            }
            // Re-evaluated: a batch may have been dispatched above.
            let wait_for_deadline = computing.is_none() && in_flight.len() < max_in_flight;
            tokio::select! {
                // Checked first so a stop request wins over a ready message.
                biased;
                _ = shutdown.cancelled() => break,
                Some(settled) = in_flight.next(), if !in_flight.is_empty() => self.settle(settled?),
                Some(computed) = OptionFuture::from(computing.as_mut().map(|(handle, _)| handle)), if computing.is_some() => {
                    let started = computing.take().map(|(_, started)| started).unwrap_or_else(Instant::now);
                    let (frames, outcomes, motion) = computed.context("batch processing panicked")?;
                    self.motion = Some(motion);
                    in_flight.push_back(self.send_batch(frames, outcomes, started).await?);
                }
                _ = sleep_until_some(gathering_deadline), if wait_for_deadline && gathering_deadline.is_some() => {}
                _ = refresh.tick() => {
                    if let Err(error) = self.refresh_channels().await {
                        tracing::warn!("cannot refresh channels: {error:#}");
                    }
                }
                message = self.consumer.recv() => match message {
                    Ok(message) => {
                        if gathering.is_empty() {
                            gathering_deadline = Some(tokio::time::Instant::now() + batch_wait);
                        }
                        gathering.push_back(to_consumed(&message));
                        if paused {
                            // Partitions assigned since the pause are not paused yet.
                            self.set_paused(true);
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "consumer error");
                        self.counters.errors.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(CONSUMER_ERROR_BACKOFF).await;
                    }
                },
            }
        }
        // Stop taking work, but finish what was started: its results are written and its
        // offsets stored. Frames gathered but not started are left for redelivery.
        if let Some((handle, started)) = computing.take() {
            let (frames, outcomes, motion) = handle.await.context("batch processing panicked")?;
            self.motion = Some(motion);
            in_flight.push_back(self.send_batch(frames, outcomes, started).await?);
        }
        while let Some(settled) = in_flight.next().await {
            self.settle(settled?);
        }
        Ok(())
    }

    /// Pauses (or resumes) fetching from every assigned partition. Polling goes on either
    /// way, which is what keeps the worker in its group while it catches up.
    fn set_paused(&self, paused: bool) {
        let assignment = match self.consumer.assignment() {
            Ok(assignment) => assignment,
            Err(error) => {
                tracing::warn!(%error, "cannot read the assignment to pause or resume it");
                return;
            }
        };
        let outcome = if paused {
            self.consumer.pause(&assignment)
        } else {
            self.consumer.resume(&assignment)
        };
        if let Err(error) = outcome {
            tracing::warn!(%error, paused, "cannot pause or resume fetching");
        }
    }

    /// Validates, decodes and analyses a batch on the blocking pool (tensor work must not run
    /// on the async reactor).
    async fn start_compute(&mut self, frames: Vec<ConsumedFrame>) -> (ComputingBatch, Instant) {
        self.learn_unknown_channels(&frames).await;
        let started = Instant::now();
        let catalog = Arc::clone(&self.catalog);
        let device = self.device.clone();
        let worker_id = self.worker_id.clone();
        let max_payload_bytes = self.config.max_frame_bytes();
        let analysis = self.config.analysis_settings();
        let mut motion = self.motion.take().unwrap_or_default();
        let handle = tokio::task::spawn_blocking(move || {
            let context = BatchContext {
                device: &device,
                worker_id: &worker_id,
                max_payload_bytes,
                analysis,
            };
            let outcomes = batch::process_batch(&frames, &catalog, &context, &mut motion);
            (frames, outcomes, motion)
        });
        (handle, started)
    }

    /// Sends a computed batch's results and dead letters. Returns a future that resolves
    /// once Kafka has acknowledged every one of them.
    async fn send_batch(
        &mut self,
        frames: Vec<ConsumedFrame>,
        outcomes: Vec<Outcome>,
        started: Instant,
    ) -> anyhow::Result<PendingBatch> {
        let compute_time = started.elapsed();
        let mut deliveries = Vec::with_capacity(frames.len());
        for (frame, outcome) in frames.iter().zip(&outcomes) {
            deliveries.push((frame.source(), self.send_outcome(frame, outcome).await?));
        }
        let processed = outcomes
            .iter()
            .filter(|outcome| matches!(outcome, Outcome::Result(_)))
            .count() as u64;
        let settled = SettledBatch {
            next_offsets: next_offsets(&frames),
            processed,
            dead_lettered: outcomes.len() as u64 - processed,
            compute_time,
            started,
        };
        Ok(Box::pin(async move {
            for (source, delivery) in deliveries {
                match delivery.await {
                    Ok(Ok(_)) => {}
                    Ok(Err((error, _))) => anyhow::bail!(
                        "result for {source} was not acknowledged ({error}); stopping without storing its offset so it is processed again"
                    ),
                    Err(_) => anyhow::bail!("producer closed before acknowledging the result for {source}"),
                }
            }
            Ok(settled)
        }))
    }

    /// Everything in the batch is acknowledged: store its offsets and count it.
    fn settle(&self, settled: SettledBatch) {
        self.store_offsets(&settled.next_offsets);
        self.counters
            .frames_processed
            .fetch_add(settled.processed, Ordering::Relaxed);
        self.counters
            .frames_dead_lettered
            .fetch_add(settled.dead_lettered, Ordering::Relaxed);
        self.counters.batches.fetch_add(1, Ordering::Relaxed);
        self.counters.record_batch_latency(settled.started.elapsed());
        self.counters.last_batch_us.store(
            u64::try_from(settled.compute_time.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    async fn send_outcome(
        &self,
        frame: &ConsumedFrame,
        outcome: &Outcome,
    ) -> anyhow::Result<rdkafka::producer::DeliveryFuture> {
        let (topic, payload, headers) = match outcome {
            Outcome::Result(result) => {
                let payload = Cow::Owned(serde_json::to_vec(result).context("encoding a result")?);
                let mut headers = OwnedHeaders::new().insert(Header {
                    key: wire::HEADER_CHANNEL,
                    value: Some(result.channel_id.as_str()),
                });
                if let Some(traceparent) = frame.header(wire::HEADER_TRACEPARENT) {
                    headers = headers.insert(Header {
                        key: wire::HEADER_TRACEPARENT,
                        value: Some(traceparent),
                    });
                }
                (&self.config.results_topic, payload, headers)
            }
            Outcome::DeadLetter { reason } => {
                tracing::warn!(topic = %frame.topic, partition = frame.partition, offset = frame.offset, %reason, "dead-lettering frame");
                let mut headers = OwnedHeaders::new();
                for (name, value) in &frame.headers {
                    headers = headers.insert(Header {
                        key: name.as_str(),
                        value: Some(value.as_slice()),
                    });
                }
                let source = frame.source();
                headers = headers
                    .insert(Header {
                        key: HEADER_DEAD_LETTER_REASON,
                        value: Some(reason.as_str()),
                    })
                    .insert(Header {
                        key: "ff-source",
                        value: Some(source.as_str()),
                    });
                (
                    &self.config.dead_letter_topic,
                    Cow::Borrowed(frame.payload.as_slice()),
                    headers,
                )
            }
        };
        let mut record = FutureRecord::to(topic).payload(payload.as_ref()).headers(headers);
        if let Some(key) = &frame.key {
            record = record.key(key.as_slice());
        }
        kafka::send_when_queue_has_room(&self.producer, record)
            .await
            .with_context(|| format!("cannot produce to `{topic}`"))
    }

    fn store_offsets(&self, next_offsets: &[(String, i32, i64)]) {
        let mut partitions = TopicPartitionList::new();
        for (topic, partition, next_offset) in next_offsets {
            if let Err(error) = partitions.add_partition_offset(topic, *partition, Offset::Offset(*next_offset)) {
                tracing::warn!(%error, topic, partition, "cannot record an offset to store");
            }
        }
        // After a rebalance a partition may no longer be ours; its new owner will process
        // those frames again (at-least-once), so a refused store is expected, not fatal.
        if let Err(error) = self.consumer.store_offsets(&partitions) {
            tracing::info!(%error, "offsets not stored (partition revoked?); frames will be redelivered");
        }
    }

    /// Re-reads the channel list (every page) and subscribes to every topic the channels
    /// write to. A fan-out channel contributes only its `--pipeline` topic (its first when no
    /// pipeline is set): the other topics belong to other pipelines' consumers.
    async fn refresh_channels(&mut self) -> anyhow::Result<()> {
        let mut channels: Vec<Channel> = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = self
                .channel_client
                .list_channels(ListChannelsRequest {
                    id_prefix: self.config.channel_prefix.clone(),
                    page_size: 1000,
                    page_token,
                    ..ListChannelsRequest::default()
                })
                .await
                .map_err(|status| anyhow::anyhow!("listing channels failed: {}", status.message()))?
                .into_inner();
            channels.extend(page.channels);
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        let mut topics: Vec<String> = channels
            .iter()
            .flat_map(|channel| consumed_topics(channel, self.config.pipeline.as_deref()))
            .collect();
        topics.sort();
        topics.dedup();
        let mut catalog = Catalog {
            channels: HashMap::new(),
            schemas: self.catalog.schemas.clone(),
        };
        for channel in channels {
            catalog.insert_channel(channel);
        }
        self.catalog = Arc::new(catalog);
        if topics != self.subscribed_topics && !topics.is_empty() {
            let topic_names: Vec<&str> = topics.iter().map(String::as_str).collect();
            self.consumer
                .subscribe(&topic_names)
                .context("subscribing to channel topics")?;
            tracing::info!(topics = ?topics, "subscribed");
            self.subscribed_topics = topics;
        }
        Ok(())
    }

    /// A frame from a channel registered after the last refresh, or written with a schema
    /// version this worker has not seen, must not be dead-lettered as unknown: look it up
    /// before deciding.
    async fn learn_unknown_channels(&mut self, frames: &[ConsumedFrame]) {
        let recently_looked_up = self
            .last_unknown_channel_lookup
            .is_some_and(|at| at.elapsed() < UNKNOWN_CHANNEL_LOOKUP_INTERVAL);
        if recently_looked_up {
            return;
        }
        // Only the two headers that name the catalog entry are read: this runs for every batch,
        // and the full header parse happens once per frame in `process_batch` anyway.
        let mut unknown_channel = false;
        let mut missing_versions: Vec<(String, u32)> = Vec::new();
        for frame in frames {
            let Some(channel_id) = frame.header_text(wire::HEADER_CHANNEL) else {
                continue;
            };
            unknown_channel |= !self.catalog.channels.contains_key(channel_id);
            let version = frame
                .header_text(wire::HEADER_SCHEMA_VERSION)
                .and_then(|text| text.parse::<u32>().ok());
            if let Some(version) = version
                && self.catalog.schema(channel_id, version).is_none()
            {
                missing_versions.push((channel_id.to_owned(), version));
            }
        }
        missing_versions.sort();
        missing_versions.dedup();
        if !unknown_channel && missing_versions.is_empty() {
            return;
        }
        self.last_unknown_channel_lookup = Some(Instant::now());
        if unknown_channel && let Err(error) = self.refresh_channels().await {
            tracing::warn!("cannot refresh channels: {error:#}");
        }
        let mut learned = Vec::new();
        for (channel_id, version) in missing_versions {
            if version == 0 || self.catalog.schema(&channel_id, version).is_some() {
                continue;
            }
            let request = GetSchemaRequest {
                channel_id: channel_id.clone(),
                version,
            };
            match self.schema_client.get_schema(request).await {
                Ok(schema) => learned.push(((channel_id, version), schema.into_inner())),
                // NOT_FOUND: the frame really names a version that does not exist; it will be
                // dead-lettered with that reason.
                Err(status) => tracing::debug!(channel = %channel_id, version, "schema lookup: {}", status.message()),
            }
        }
        if !learned.is_empty() {
            let mut catalog = (*self.catalog).clone();
            for ((channel_id, version), schema) in learned {
                catalog.schemas.entry(channel_id).or_default().insert(version, schema);
            }
            self.catalog = Arc::new(catalog);
        }
    }

    /// Commits what was stored, leaves the group and flushes results.
    async fn leave(&mut self) {
        if !self.subscribed_topics.is_empty() {
            match self.consumer.commit_consumer_state(CommitMode::Sync) {
                Ok(()) => tracing::info!("offsets committed"),
                // Nothing stored since the last auto-commit is the common, harmless case.
                Err(error) => tracing::debug!(%error, "final commit"),
            }
            self.consumer.unsubscribe();
        }
        let producer = self.producer.clone();
        let flushed = tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(30))).await;
        if !matches!(flushed, Ok(Ok(()))) {
            tracing::warn!("producer flush did not complete");
        }
    }
}

/// Sleeps until `deadline`, or forever when there is none.
async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Per partition, the offset after the last frame of the batch (what Kafka should resume
/// from). Frames of one partition arrive in order, so the highest offset covers the others.
fn next_offsets(frames: &[ConsumedFrame]) -> Vec<(String, i32, i64)> {
    let mut highest: BTreeMap<(&str, i32), i64> = BTreeMap::new();
    for frame in frames {
        let entry = highest
            .entry((frame.topic.as_str(), frame.partition))
            .or_insert(frame.offset);
        *entry = (*entry).max(frame.offset);
    }
    highest
        .into_iter()
        .map(|((topic, partition), offset)| (topic.to_owned(), partition, offset + 1))
        .collect()
}

fn to_consumed(message: &rdkafka::message::BorrowedMessage<'_>) -> ConsumedFrame {
    let headers = message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|header| {
                    (
                        header.key.to_owned(),
                        header.value.map(<[u8]>::to_vec).unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    ConsumedFrame {
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
        key: message.key().map(<[u8]>::to_vec),
        payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        headers,
    }
}

/// The topics of `channel` this worker consumes.
fn consumed_topics(channel: &Channel, pipeline: Option<&str>) -> Vec<String> {
    let topics = if channel.topics.is_empty() {
        vec![channel.topic.clone()]
    } else {
        channel.topics.clone()
    };
    if channel.topic_strategy != i32::from(TopicStrategy::FanOut) {
        return topics;
    }
    let chosen = pipeline
        .and_then(|pipeline| {
            channel
                .pipelines
                .iter()
                .position(|name| name == pipeline)
                .and_then(|index| topics.get(index).cloned())
        })
        .or_else(|| {
            if pipeline.is_none() {
                topics.first().cloned()
            } else {
                None
            }
        });
    chosen.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(topic: &str, partition: i32, offset: i64) -> ConsumedFrame {
        ConsumedFrame {
            topic: topic.to_owned(),
            partition,
            offset,
            key: None,
            payload: Vec::new(),
            headers: Vec::new(),
        }
    }

    #[test]
    fn offsets_to_store_resume_after_the_last_frame_of_each_partition() {
        let frames = [
            frame("a", 0, 7),
            frame("b", 1, 3),
            frame("a", 0, 8),
            frame("a", 1, 2),
            frame("b", 1, 4),
        ];
        assert_eq!(
            next_offsets(&frames),
            vec![("a".to_owned(), 0, 9), ("a".to_owned(), 1, 3), ("b".to_owned(), 1, 5)]
        );
    }
}
