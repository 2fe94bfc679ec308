//! The framefleet worker: a stateless member of the worker consumer group. It consumes the
//! channel topics the coordinator knows, processes frames in batches on the selected
//! device, writes one result (or dead letter) per frame, and stores a frame's offset only
//! after that record is acknowledged by Kafka: at-least-once, never at-most-once.

pub mod catalog;
pub mod compute;
pub mod config;
mod consume_loop;
pub mod consumer;
pub mod decode;
pub mod detect_input;
pub mod detect_reference;
pub mod detect_stage;
pub mod device_check;
mod discovery;
pub mod fleet_models;
pub mod metrics;
pub mod ops;
pub mod processing;
pub mod record;
#[cfg(test)]
mod record_properties;
pub mod report;
mod sink;
pub mod stages;

use crate::catalog::Catalog;
use crate::config::WorkerConfig;
use crate::report::{Reporter, WorkerCounters};
use anyhow::Context;
use framefleet_common::kafka;
use framefleet_proto::v1::channel_service_client::ChannelServiceClient;
use framefleet_proto::v1::model_service_client::ModelServiceClient;
use framefleet_proto::v1::pipeline_service_client::PipelineServiceClient;
use framefleet_proto::v1::schema_service_client::SchemaServiceClient;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, Producer};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// librdkafka's `fetch.queue.backoff.ms` for the worker's consumer (see where it is set).
const FETCH_QUEUE_BACKOFF_MS: u32 = 10;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerSummary {
    pub frames_processed: u64,
    pub frames_dead_lettered: u64,
    pub batches: u64,
    /// `DeadLetterCode` name → dead letters written with it.
    pub dead_letters_by_code: std::collections::BTreeMap<String, u64>,
}

type WorkerConsumer = StreamConsumer<consumer::WorkerConsumerContext>;

struct Worker {
    config: WorkerConfig,
    worker_id: String,
    device: candle_core::Device,
    consumer: WorkerConsumer,
    producer: FutureProducer,
    channel_client: ChannelServiceClient<framefleet_proto::client::CoordinatorChannel>,
    schema_client: SchemaServiceClient<framefleet_proto::client::CoordinatorChannel>,
    pipeline_client: PipelineServiceClient<framefleet_proto::client::CoordinatorChannel>,
    /// Replaced whole on every refresh, so a batch can take it to its blocking thread without
    /// copying every channel.
    catalog: Arc<Catalog>,
    subscribed_topics: Vec<String>,
    last_unknown_channel_lookup: Option<Instant>,
    counters: Arc<WorkerCounters>,
    metrics: Arc<metrics::WorkerMetrics>,
    /// Each channel's background model; lent to the blocking thread for every batch.
    motion: Option<ops::MotionState>,
    /// Threads that decode and analyse frames (`--compute-threads`).
    compute_pool: Arc<rayon::ThreadPool>,
    /// What is done with each frame and where results go; replaced whole when the pipeline
    /// this worker serves gets a new version.
    stages: Arc<stages::Stages>,
    /// A version of the served pipeline this worker could not run, so it is not tried again
    /// on every refresh.
    refused_version: Option<u32>,
    /// A version of the served pipeline whose model could not be fetched for want of an
    /// answer, and when to try it again.
    pipeline_retry: Option<discovery::PipelineRetry>,
    /// The `--model` detector, loaded and checked at start.
    local_model: Option<Arc<framefleet_detect::Detector>>,
    /// Models the served pipeline's versions name, fetched from the fleet.
    models: fleet_models::FleetModels,
}

pub async fn run(config: WorkerConfig, shutdown: CancellationToken) -> anyhow::Result<WorkerSummary> {
    config.validate()?;
    let worker_id = config.worker_id();
    let timeout = Duration::from_secs(config.request_timeout_secs.max(1));
    // Read once: the token's file or variable is the same for every connection.
    let client_options = config.coordinator.client_options()?;
    let device = ops::select_device(&config.device)?;
    let device_name = ops::describe_device(&device);
    tracing::info!(worker = %worker_id, device = %device_name, "device selected");
    // Before anything is consumed: a bad model file must not cost a single frame.
    let local_model = match &config.model {
        Some(path) => {
            let detector = framefleet_detect::Detector::load(path, &device)
                .with_context(|| format!("cannot load the model at {}", path.display()))?;
            let manifest = detector.manifest();
            tracing::info!(model = %manifest.name, architecture = %manifest.architecture, sha256 = %manifest.sha256, labels = ?manifest.labels, "detector loaded");
            Some(Arc::new(detector))
        }
        None => None,
    };

    let coordinator =
        framefleet_proto::client::connect_coordinator(&config.coordinator.address, timeout, &client_options).await?;
    let channel_client = ChannelServiceClient::new(coordinator.clone());
    let schema_client = SchemaServiceClient::new(coordinator.clone());
    let pipeline_client = PipelineServiceClient::new(coordinator.clone());
    let kafka_connection = config.kafka.connection()?;
    let mut models = fleet_models::FleetModels {
        client: ModelServiceClient::new(coordinator),
        kafka: kafka_connection.clone(),
        cache_dir: config.model_cache_dir(),
        fetch_timeout: Duration::from_secs(config.model_fetch_timeout_secs.max(1)),
    };
    // Before anything is consumed: a pipeline this worker cannot run must not cost a frame.
    let stages = match &config.pipeline {
        Some(name) => {
            let version = discovery::current_version(&mut pipeline_client.clone(), name).await?;
            let detector = models
                .detector_for(&version, local_model.as_ref(), None, &device)
                .await
                .with_context(|| format!("cannot run pipeline `{name}` version {}", version.version))?;
            let stages = stages::Stages::from_pipeline(&version, detector)?;
            tracing::info!(pipeline = %name, version = version.version, results_topic = %stages.results_topic, "serving pipeline");
            stages
        }
        None => {
            let processing = config.processing()?;
            stages::Stages {
                detector: local_model.clone().filter(|_| processing.uses_detector()),
                processing,
                results_topic: config.results_topic.clone(),
                events_topic: config.events_topic.clone(),
                pipeline: None,
            }
        }
    };

    // Each pipeline commits its own offsets, so a slow one holds back no other.
    let group = kafka::consumer_group(&config.worker_group, config.pipeline.as_deref());
    let mut consumer_config = kafka::worker_consumer_config(&kafka_connection, &group, config.kafka.max_frame_bytes());
    consumer_config
        .set("client.id", &worker_id)
        // Statistics feed the lag this worker reports.
        .set("statistics.interval.ms", config.report_interval_ms.max(100).to_string())
        // librdkafka's prefetch is the other half of the worker's buffer: bounded in bytes,
        // so a worker that falls behind stops fetching instead of pausing its partitions.
        .set(
            "queued.max.messages.kbytes",
            (config.max_buffered_bytes() / 1024).clamp(1024, 2_097_151).to_string(),
        )
        // Once that queue has been full, librdkafka waits this long before it fetches the
        // partition again (default 1000 ms, "may need to be decreased if the queue thresholds
        // are set low"). With ours, a worker draining a backlog of 640×480 JPEGs filled it
        // every ≈ 250 frames and then sat idle for ≈ 830 ms: 236–272 frames/s on one core
        // where its CPU allowed ≈ 800. With 10 ms it drained at 740 on the same core.
        .set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS.to_string());
    if let Some(instance_id) = &config.group_instance_id {
        // Static membership: a restart within the session timeout gets its partitions back
        // without a rebalance. The member does not leave the group on shutdown.
        consumer_config.set("group.instance.id", instance_id);
    }
    let gauges = Arc::new(consumer::ConsumerGauges::default());
    gauges.lag_frames.store(-1, Ordering::Relaxed);
    let consumer: WorkerConsumer = consumer_config
        .create_with_context(consumer::WorkerConsumerContext::new(Arc::clone(&gauges)))
        .context("cannot create the Kafka consumer")?;
    let mut producer_config = kafka::producer_config(&kafka_connection, config.kafka.max_frame_bytes());
    producer_config.set("client.id", &worker_id);
    let producer: FutureProducer = producer_config.create().context("cannot create the Kafka producer")?;
    kafka::check_reachable(&kafka_connection, timeout).await?;

    let compute_threads = config.compute_threads();
    let compute_pool = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(compute_threads)
            .thread_name(|index| format!("compute-{index}"))
            .build()
            .context("cannot start the compute threads")?,
    );
    tracing::info!(threads = compute_threads, "compute pool started");

    let counters = Arc::new(WorkerCounters::default());
    if let Some(served) = &stages.pipeline {
        counters.set_pipeline(report::PipelineState::running(served));
    }
    let reporter_stop = CancellationToken::new();
    let worker_metrics = Arc::new(metrics::WorkerMetrics::new(&worker_id, Arc::clone(&gauges)));
    if let Some(addr) = config.metrics_addr {
        let scraped = Arc::clone(&worker_metrics);
        framefleet_common::metrics::serve(addr, Arc::new(move || scraped.render()), reporter_stop.clone())
            .await
            .with_context(|| format!("cannot serve metrics on {addr}"))?;
    }
    // Without its reports the coordinator would count this worker gone: a report task that
    // dies stops the worker (its supervisor restarts it) rather than leaving it unseen.
    let reporter = framefleet_common::shutdown::spawn_essential(
        "coordinator reports",
        Reporter {
            coordinator: config.coordinator.address.clone(),
            client_options,
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
        reporter_stop.clone(),
        shutdown.clone(),
    );

    let mut worker = Worker {
        config,
        worker_id,
        device,
        consumer,
        producer,
        channel_client,
        schema_client,
        pipeline_client,
        catalog: Arc::new(Catalog::default()),
        subscribed_topics: Vec::new(),
        last_unknown_channel_lookup: None,
        counters: Arc::clone(&counters),
        metrics: worker_metrics,
        motion: Some(ops::MotionState::default()),
        compute_pool,
        stages: Arc::new(stages),
        refused_version: None,
        pipeline_retry: None,
        local_model,
        models,
    };
    let outcome = worker.consume_until(shutdown).await;
    worker.leave().await;
    reporter_stop.cancel();
    reporter
        .await
        .context("reporter watcher panicked")?
        .context("reporter task panicked")?;
    outcome?;
    Ok(WorkerSummary {
        frames_processed: counters.frames_processed.load(Ordering::Relaxed),
        frames_dead_lettered: counters.frames_dead_lettered.load(Ordering::Relaxed),
        batches: counters.batches.load(Ordering::Relaxed),
        dead_letters_by_code: counters.dead_letters_by_code(),
    })
}

impl Worker {
    /// Commits what was stored, leaves the group and flushes results.
    async fn leave(&mut self) {
        if !self.subscribed_topics.is_empty() {
            let consumer = &self.consumer;
            match framefleet_common::shutdown::blocking(|| consumer.commit_consumer_state(CommitMode::Sync)) {
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
