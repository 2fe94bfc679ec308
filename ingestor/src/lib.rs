//! The framefleet ingestor. It registers with the coordinator (a report stream under an etcd
//! lease), registers the channels it was configured with (claiming them), and captures
//! whatever the coordinator's assignment watch says is its own: channels start, restart and
//! stop at runtime as assignments change. Each channel reads its source in its own capture
//! process (see [`isolation`]; a thread with `--capture-isolation thread`),
//! converts frames to the channel schema and produces every frame to each of the channel's
//! topics, keeping a ledger of what happened to each one.

pub mod capture;
pub mod config;
pub mod encode;
pub mod isolation;
pub mod ledger;
pub mod membership;
pub mod producer;
pub mod queue;
pub mod source;

use crate::capture::{CaptureJob, CaptureOptions, EncodedFrame};
use crate::config::{CaptureIsolation, IngestorConfig, LocalChannel};
use crate::encode::{FrameEncoder, Quality};
use crate::ledger::SourceState;
use crate::membership::{Coordinator, Ledgers};
use crate::producer::{ChannelStream, Producers};
use crate::queue::FrameQueue;
use crate::source::{OpenOptions, SourceSpec};
use anyhow::Context;
use framefleet_common::kafka;
use framefleet_proto::client::CoordinatorChannel;
use framefleet_proto::v1::channel_service_client::ChannelServiceClient;
use framefleet_proto::v1::{
    AssignmentUpdate, Channel, DeregisterChannelRequest, FrameEncoding, FrameSchema, PixelFormat,
    RegisterChannelRequest, UpdateChannelRequest,
};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How often the channel file is looked at for changes.
const CONFIG_POLL: Duration = Duration::from_secs(2);
const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

/// What happened to every channel by the time the ingestor stopped.
#[derive(Debug, Clone)]
pub struct IngestSummary {
    pub channels: Vec<framefleet_proto::v1::ChannelLedger>,
}

impl IngestSummary {
    pub fn failed_channels(&self) -> Vec<&framefleet_proto::v1::ChannelLedger> {
        self.channels
            .iter()
            .filter(|ledger| {
                ledger.frames_failed > 0
                    || ledger.source_state == SourceState::Failed.as_str()
                    || !ledger.last_error.is_empty()
            })
            .collect()
    }
}

pub async fn run(config: IngestorConfig, shutdown: CancellationToken) -> anyhow::Result<IngestSummary> {
    let config = Arc::new(config);
    let ingestor_id = config.ingestor_id();
    let timeout = config.request_timeout();
    let accepts_assignments = config.accepts_assignments();
    // Without assignments and without a channel file, the ingestor's work is the channels it
    // was given: it ends when they have.
    let exit_when_done = !accepts_assignments && config.channel_file.is_none();

    let unary =
        framefleet_proto::client::connect_coordinator(&config.coordinator, timeout, &config.client_options()).await?;
    let mut channel_client = ChannelServiceClient::new(unary.clone());
    let producers = Producers::new(&config.kafka_brokers, config.raw_compression, config.max_frame_bytes())
        .context("cannot create the Kafka producer")?;
    kafka::check_reachable(producers.any(), &config.kafka_brokers, timeout).await?;

    let ledgers = Ledgers::default();
    let coordinator = Arc::new(Coordinator {
        address: config.coordinator.clone(),
        options: config.client_options(),
        timeout,
        ingestor_id: ingestor_id.clone(),
    });
    let background_stop = CancellationToken::new();
    let reporter = tokio::spawn(Arc::clone(&coordinator).report(
        ledgers.clone(),
        accepts_assignments,
        Duration::from_millis(config.report_interval_ms.max(100)),
        background_stop.clone(),
    ));
    if let Some(addr) = config.metrics_addr {
        let metrics_ledgers = ledgers.clone();
        let metrics_id = ingestor_id.clone();
        framefleet_common::metrics::serve(
            addr,
            Arc::new(move || ledger::render_metrics(&metrics_id, &metrics_ledgers.snapshots())),
            background_stop.clone(),
        )
        .await
        .with_context(|| format!("cannot serve metrics on {addr}"))?;
    }
    // A claimed channel stays with its ingestor only while that one is registered: wait for
    // the report stream to register us before claiming anything.
    wait_until_registered(&coordinator, unary, timeout).await;

    let (updates_sender, mut updates) = mpsc::channel::<AssignmentUpdate>(16);
    let watcher = tokio::spawn(Arc::clone(&coordinator).watch_assignments(updates_sender, background_stop.clone()));

    let (finished_sender, mut finished) = mpsc::unbounded_channel();
    let mut supervisor = Supervisor {
        config: Arc::clone(&config),
        ingestor_epoch: u64::try_from(framefleet_common::startup::unix_time_ms()).unwrap_or_default(),
        producers: producers.clone(),
        ledgers: ledgers.clone(),
        quality: HashMap::new(),
        running: HashMap::new(),
        ended: HashMap::new(),
        finished: finished_sender,
        generation: 0,
        capture_binary: match config.capture_isolation {
            CaptureIsolation::Process => {
                let binary = isolation::ingestor_binary();
                if binary.is_none() {
                    tracing::warn!(
                        "no framefleet-ingestor binary found to run capture processes from (set {}); capturing in threads, so a decoder crash stops every channel",
                        isolation::INGESTOR_BINARY_ENV
                    );
                }
                binary
            }
            CaptureIsolation::Thread => None,
        },
    };
    let mut local = LocalChannels {
        config: Arc::clone(&config),
        ingestor_id: ingestor_id.clone(),
        registered: HashMap::new(),
        file_seen: None,
    };
    for channel in config.flag_channels() {
        local.register(&mut channel_client, &mut supervisor, channel).await;
    }
    local.reload_file(&mut channel_client, &mut supervisor).await;

    let mut config_poll = tokio::time::interval(CONFIG_POLL);
    config_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if exit_when_done && local.all_finished(&ledgers) {
            tracing::info!("every channel has ended");
            break;
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(update) = updates.recv() => supervisor.apply(update).await,
            Some((channel_id, generation)) = finished.recv() => supervisor.on_finished(&channel_id, generation),
            _ = config_poll.tick(), if config.channel_file.is_some() => local.reload_file(&mut channel_client, &mut supervisor).await,
        }
    }

    supervisor.stop_all().await;
    if let Err(error) = producers.flush(FLUSH_TIMEOUT).await {
        tracing::error!("flushing the Kafka producer failed: {error}");
    }
    // The reporter sends the final counts as it closes its stream.
    background_stop.cancel();
    reporter.await.context("reporter task panicked")?;
    watcher.await.context("assignment watch task panicked")?;
    let summary = IngestSummary {
        channels: ledgers.snapshots(),
    };
    for ledger in &summary.channels {
        tracing::info!(
            channel = %ledger.channel_id,
            captured = ledger.frames_captured,
            acknowledged = ledger.frames_acknowledged,
            failed = ledger.frames_failed,
            dropped = ledger.frames_dropped,
            gaps = ledger.source_gaps,
            state = %ledger.source_state,
            "channel finished"
        );
    }
    Ok(summary)
}

async fn wait_until_registered(coordinator: &Coordinator, channel: CoordinatorChannel, timeout: Duration) {
    let mut fleet = framefleet_proto::v1::fleet_service_client::FleetServiceClient::new(channel);
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if let Ok(status) = fleet
            .get_fleet_status(framefleet_proto::v1::GetFleetStatusRequest {})
            .await
            .map(tonic::Response::into_inner)
            && status.registered_ingestors.contains(&coordinator.ingestor_id)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tracing::warn!(ingestor = %coordinator.ingestor_id, "not registered with the coordinator yet; claiming channels anyway");
}

/// What makes a running channel's capture obsolete when it changes.
#[derive(Debug, Clone, PartialEq)]
struct ChannelKey {
    source_uri: String,
    schema_version: u32,
    topics: Vec<String>,
}

impl ChannelKey {
    fn of(channel: &Channel) -> Self {
        Self {
            source_uri: channel.source_uri.clone(),
            schema_version: channel.schema.as_ref().map(|schema| schema.version).unwrap_or_default(),
            topics: channel_topics(channel),
        }
    }
}

fn channel_topics(channel: &Channel) -> Vec<String> {
    if channel.topics.is_empty() {
        vec![channel.topic.clone()]
    } else {
        channel.topics.clone()
    }
}

struct RunningChannel {
    key: ChannelKey,
    generation: u64,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// The channels this ingestor captures, kept equal to what the assignment watch says.
struct Supervisor {
    config: Arc<IngestorConfig>,
    ingestor_epoch: u64,
    producers: Producers,
    ledgers: Ledgers,
    /// Encoder settings of channels configured here; assigned channels use the defaults.
    quality: HashMap<String, Quality>,
    running: HashMap<String, RunningChannel>,
    /// Channels whose source ended (or failed): not restarted until their record changes.
    ended: HashMap<String, ChannelKey>,
    finished: mpsc::UnboundedSender<(String, u64)>,
    generation: u64,
    /// The binary that capture processes run from; `None`: capture threads.
    capture_binary: Option<std::path::PathBuf>,
}

impl Supervisor {
    async fn apply(&mut self, update: AssignmentUpdate) {
        if update.reset {
            let listed: HashSet<&str> = update
                .channels
                .iter()
                .map(|channel| channel.channel_id.as_str())
                .collect();
            let gone: Vec<String> = self
                .running
                .keys()
                .filter(|id| !listed.contains(id.as_str()))
                .cloned()
                .collect();
            for channel_id in gone {
                self.stop(&channel_id).await;
            }
            self.ended.retain(|id, _| listed.contains(id.as_str()));
        }
        for channel_id in &update.removed_channel_ids {
            self.stop(channel_id).await;
            self.ended.remove(channel_id);
        }
        for channel in update.channels {
            let key = ChannelKey::of(&channel);
            if self
                .running
                .get(&channel.channel_id)
                .is_some_and(|running| running.key == key)
                || self.ended.get(&channel.channel_id) == Some(&key)
            {
                continue;
            }
            self.stop(&channel.channel_id).await;
            self.start(channel, key);
        }
    }

    fn start(&mut self, channel: Channel, key: ChannelKey) {
        let channel_id = channel.channel_id.clone();
        let ledger = self.ledgers.get_or_create(&channel_id);
        ledger.reopen();
        ledger.clear_error();
        let prepared = match self.prepare(&channel, &key) {
            Ok(prepared) => prepared,
            Err(reason) => {
                tracing::error!(channel = %channel_id, "{reason}");
                ledger.record_error(reason);
                ledger.set_state(SourceState::Failed);
                ledger.mark_finished();
                self.ended.insert(channel_id, key);
                return;
            }
        };
        self.generation += 1;
        let generation = self.generation;
        let stop = CancellationToken::new();
        let queue = Arc::new(FrameQueue::<EncodedFrame>::new(
            self.config.queue_frames,
            self.config.queue_policy,
        ));
        let producer = self.producers.for_encoding(prepared.encoder.encoding()).clone();
        let options = self.capture_options();
        tracing::info!(channel = %channel_id, source = %channel.source_uri, topics = ?key.topics, isolated = self.capture_binary.is_some(), "capturing");
        let run_capture: Box<dyn FnOnce() + Send> = match &self.capture_binary {
            Some(binary) => {
                let request = isolation::CaptureRequest::new(
                    &channel_id,
                    &channel.source_uri,
                    &prepared.schema,
                    prepared.quality,
                    &options,
                );
                let (binary, spec, queue, ledger, stop) = (
                    binary.clone(),
                    prepared.spec,
                    Arc::clone(&queue),
                    Arc::clone(&ledger),
                    stop.clone(),
                );
                Box::new(move || isolation::supervise(&binary, &request, &spec, &queue, &ledger, &stop))
            }
            None => {
                let job = CaptureJob {
                    source_uri: channel.source_uri.clone(),
                    spec: prepared.spec,
                    fps: prepared.schema.fps,
                    encoder: prepared.encoder,
                    options,
                    queue: Arc::clone(&queue),
                    ledger: Arc::clone(&ledger),
                    stop: stop.clone(),
                };
                Box::new(move || capture::capture_loop(job))
            }
        };
        let finished = self.finished.clone();
        let task = tokio::spawn(async move {
            let capture_ledger = Arc::clone(&ledger);
            let capture = tokio::task::spawn_blocking(run_capture);
            let delivery = tokio::spawn(producer::deliver_channel(
                producer,
                prepared.stream,
                queue,
                Arc::clone(&ledger),
            ));
            if let Err(error) = capture.await {
                capture_ledger.record_error(format!("capture thread panicked: {error}"));
                capture_ledger.set_state(SourceState::Failed);
            }
            if let Err(error) = delivery.await {
                ledger.record_error(format!("delivery task panicked: {error}"));
            }
            ledger.mark_finished();
            let _ = finished.send((ledger.channel_id.clone(), generation));
        });
        self.running.insert(
            channel_id,
            RunningChannel {
                key,
                generation,
                stop,
                task,
            },
        );
    }

    fn prepare(&self, channel: &Channel, key: &ChannelKey) -> Result<PreparedChannel, String> {
        let schema = channel
            .schema
            .as_ref()
            .ok_or_else(|| format!("channel `{}` has no schema", channel.channel_id))?;
        if schema.raw_frame_bytes() > self.config.max_frame_bytes() as u64 {
            return Err(format!(
                "channel `{}` frames are {} bytes, over this ingestor's --max-frame-mib {}",
                channel.channel_id,
                schema.raw_frame_bytes(),
                self.config.max_frame_mib
            ));
        }
        let spec = SourceSpec::parse(&channel.source_uri).map_err(|error| error.to_string())?;
        let quality = self
            .quality
            .get(&channel.channel_id)
            .copied()
            .unwrap_or_else(|| self.config.default_quality());
        let encoder =
            FrameEncoder::new(schema, quality).map_err(|error| format!("channel `{}`: {error}", channel.channel_id))?;
        let max_payload = kafka::max_frame_payload_bytes(schema.raw_frame_bytes());
        Ok(PreparedChannel {
            spec,
            encoder,
            schema: *schema,
            quality,
            stream: ChannelStream {
                channel_id: channel.channel_id.clone(),
                topics: key.topics.clone(),
                schema_version: schema.version,
                ingestor_epoch: self.ingestor_epoch,
                max_payload_bytes: usize::try_from(max_payload).unwrap_or(usize::MAX),
            },
        })
    }

    fn capture_options(&self) -> CaptureOptions {
        CaptureOptions {
            pace: self.config.pace,
            max_frames: self.config.max_frames,
            stall_timeout: Duration::from_secs(self.config.stall_timeout_secs.max(1)),
            max_backoff: Duration::from_secs(self.config.max_backoff_secs.max(1)),
            retry_files: self.config.accepts_assignments(),
        }
    }

    /// Stops a channel's capture and waits until every frame it captured is settled.
    async fn stop(&mut self, channel_id: &str) {
        if let Some(running) = self.running.remove(channel_id) {
            tracing::info!(channel = %channel_id, "stopping capture");
            running.stop.cancel();
            if let Err(error) = running.task.await {
                tracing::error!(channel = %channel_id, "channel task failed: {error}");
            }
        }
    }

    fn on_finished(&mut self, channel_id: &str, generation: u64) {
        let Some(running) = self.running.get(channel_id) else {
            return;
        };
        if running.generation != generation {
            return;
        }
        if let Some(running) = self.running.remove(channel_id) {
            self.ended.insert(channel_id.to_owned(), running.key);
        }
    }

    async fn stop_all(&mut self) {
        for running in self.running.values() {
            running.stop.cancel();
        }
        let ids: Vec<String> = self.running.keys().cloned().collect();
        for channel_id in ids {
            self.stop(&channel_id).await;
        }
    }
}

struct PreparedChannel {
    spec: SourceSpec,
    encoder: FrameEncoder,
    schema: FrameSchema,
    quality: Quality,
    stream: ChannelStream,
}

/// Channels this ingestor registers (and claims) itself: the `--channel` flags and the
/// channel file.
struct LocalChannels {
    config: Arc<IngestorConfig>,
    ingestor_id: String,
    /// Registered channels and the spec they were registered with.
    registered: HashMap<String, LocalChannel>,
    /// The channel file's modification time and channels when last read.
    file_seen: Option<(SystemTime, Vec<LocalChannel>)>,
}

impl LocalChannels {
    fn all_finished(&self, ledgers: &Ledgers) -> bool {
        self.config
            .flag_channels()
            .iter()
            .all(|channel| ledgers.get(&channel.id).is_some_and(|ledger| ledger.is_finished()))
    }

    async fn register(
        &mut self,
        client: &mut ChannelServiceClient<CoordinatorChannel>,
        supervisor: &mut Supervisor,
        channel: LocalChannel,
    ) {
        let ledger = supervisor.ledgers.get_or_create(&channel.id);
        supervisor.quality.insert(
            channel.id.clone(),
            Quality {
                jpeg: channel.jpeg_quality.unwrap_or(self.config.jpeg_quality).clamp(1, 100),
                png_compression: channel.png_compression.unwrap_or(self.config.png_compression).min(9),
            },
        );
        match self.register_channel(client, &channel).await {
            Ok(registered) => {
                if registered.ingestor_id != self.ingestor_id {
                    tracing::warn!(channel = %channel.id, owner = %registered.ingestor_id, "channel registered but captured elsewhere");
                }
                self.registered.insert(channel.id.clone(), channel);
            }
            Err(reason) => {
                // One bad channel must not stop the others.
                tracing::error!(channel = %channel.id, "{reason}");
                ledger.record_error(reason);
                ledger.set_state(SourceState::Failed);
                ledger.mark_finished();
            }
        }
    }

    async fn register_channel(
        &self,
        client: &mut ChannelServiceClient<CoordinatorChannel>,
        channel: &LocalChannel,
    ) -> Result<Channel, String> {
        let spec = SourceSpec::parse(&channel.source).map_err(|error| error.to_string())?;
        let width = channel.width.or(self.config.width);
        let height = channel.height.or(self.config.height);
        let fps = channel.fps.or(self.config.fps);
        let (width, height, fps) = match (width, height, fps) {
            (Some(width), Some(height), Some(fps)) => (width, height, fps),
            _ => {
                // Ask the source for what was not configured.
                let uri = channel.source.clone();
                let probe_spec = spec.clone();
                let options = OpenOptions {
                    stall_timeout: Duration::from_secs(self.config.stall_timeout_secs.max(1)),
                };
                let info = tokio::task::spawn_blocking(move || {
                    source::open(&uri, &probe_spec, options).map(|source| source.info())
                })
                .await
                .map_err(|error| format!("probing the source panicked: {error}"))?
                .map_err(|error| format!("{error} (to register it without opening it, give width, height and fps)"))?;
                (
                    width.unwrap_or(info.width),
                    height.unwrap_or(info.height),
                    fps.unwrap_or(info.fps),
                )
            }
        };
        source::check_dimensions(width, height).map_err(|reason| format!("channel `{}`: {reason}", channel.id))?;
        let pixel_format = PixelFormat::from(channel.pixel_format.unwrap_or(self.config.pixel_format));
        let encoding = FrameEncoding::from(channel.encoding.unwrap_or(self.config.encoding));
        let schema = FrameSchema {
            version: 1,
            width,
            height,
            channels: if pixel_format == PixelFormat::Gray8 { 1 } else { 3 },
            pixel_format: pixel_format.into(),
            encoding: encoding.into(),
            fps,
        };
        let strategy = channel.topic_strategy.unwrap_or(self.config.topic_strategy);
        let pipelines = if channel.pipelines.is_empty() {
            self.config.pipelines.clone()
        } else {
            channel.pipelines.clone()
        };
        let response = client
            .register_channel(RegisterChannelRequest {
                channel_id: channel.id.clone(),
                source_uri: channel.source.clone(),
                schema: Some(schema),
                topic_strategy: framefleet_proto::v1::TopicStrategy::from(strategy).into(),
                pipelines,
                declared_bytes_per_second: 0,
                ingestor_id: self.ingestor_id.clone(),
            })
            .await
            .map_err(|status| format!("registering channel `{}` failed: {}", channel.id, status.message()))?
            .into_inner();
        let registered = response
            .channel
            .ok_or_else(|| "the coordinator answered a registration without the channel".to_owned())?;
        tracing::info!(
            channel = %channel.id, topics = ?registered.topics, width, height, fps,
            created = response.created, "channel registered"
        );
        Ok(registered)
    }

    /// Registers channels added to the channel file, updates changed sources and drains
    /// channels taken out of it.
    async fn reload_file(
        &mut self,
        client: &mut ChannelServiceClient<CoordinatorChannel>,
        supervisor: &mut Supervisor,
    ) {
        let Some(path) = self.config.channel_file.clone() else {
            return;
        };
        let modified = std::fs::metadata(&path).and_then(|metadata| metadata.modified()).ok();
        if let (Some(modified), Some((seen, _))) = (modified, &self.file_seen)
            && modified == *seen
        {
            return;
        }
        let channels = match config::read_channel_file(&path) {
            Ok(channels) => channels,
            Err(error) => {
                tracing::error!("{error}; keeping the channels as they are");
                if let Some(modified) = modified {
                    let previous = self.file_seen.take().map(|(_, channels)| channels).unwrap_or_default();
                    self.file_seen = Some((modified, previous));
                }
                return;
            }
        };
        let previous = self.file_seen.take().map(|(_, channels)| channels).unwrap_or_default();
        self.apply_file(client, supervisor, &path, &previous, &channels).await;
        self.file_seen = Some((modified.unwrap_or(SystemTime::UNIX_EPOCH), channels));
    }

    async fn apply_file(
        &mut self,
        client: &mut ChannelServiceClient<CoordinatorChannel>,
        supervisor: &mut Supervisor,
        path: &std::path::Path,
        previous: &[LocalChannel],
        current: &[LocalChannel],
    ) {
        for channel in current {
            match previous.iter().find(|old| old.id == channel.id) {
                Some(old) if old == channel && self.registered.contains_key(&channel.id) => {}
                Some(old) if self.registered.contains_key(&channel.id) && only_source_changed(old, channel) => {
                    let request = UpdateChannelRequest {
                        channel_id: channel.id.clone(),
                        source_uri: Some(channel.source.clone()),
                        ..UpdateChannelRequest::default()
                    };
                    match client.update_channel(request).await {
                        Ok(_) => {
                            tracing::info!(channel = %channel.id, source = %channel.source, "channel source changed");
                            self.registered.insert(channel.id.clone(), channel.clone());
                        }
                        Err(status) => {
                            tracing::error!(channel = %channel.id, "updating the source failed: {}", status.message())
                        }
                    }
                }
                Some(_) if self.registered.contains_key(&channel.id) => tracing::warn!(
                    channel = %channel.id,
                    "{}: only a source change is applied at runtime; change the schema with `framefleet schemas add`",
                    path.display()
                ),
                _ => self.register(client, supervisor, channel.clone()).await,
            }
        }
        for old in previous {
            if current.iter().any(|channel| channel.id == old.id) || self.registered.remove(&old.id).is_none() {
                continue;
            }
            // Draining lets the workers finish the frames already in Kafka before the channel
            // is deleted; the assignment watch stops the capture.
            match client
                .deregister_channel(DeregisterChannelRequest {
                    channel_id: old.id.clone(),
                    ..DeregisterChannelRequest::default()
                })
                .await
            {
                Ok(_) => tracing::info!(channel = %old.id, "channel removed from {}; draining", path.display()),
                Err(status) => tracing::error!(channel = %old.id, "deregistering failed: {}", status.message()),
            }
        }
    }
}

fn only_source_changed(old: &LocalChannel, new: &LocalChannel) -> bool {
    let mut same_source = new.clone();
    same_source.source = old.source.clone();
    &same_source == old && old.source != new.source
}
