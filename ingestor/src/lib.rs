//! The framefleet ingestor: opens each channel's source with OpenCV, registers the channel
//! with the coordinator, converts frames to the channel schema and produces every frame to
//! the channel's Kafka topic, keeping a ledger of what happened to each one.

pub mod capture;
pub mod config;
pub mod ledger;
pub mod producer;

use crate::capture::{CaptureJob, FrameConversion, OpenedSource};
use crate::config::IngestorConfig;
use crate::ledger::ChannelLedger;
use crate::producer::ChannelStream;
use anyhow::Context;
use framefleet_common::kafka;
use framefleet_proto::v1::channel_service_client::ChannelServiceClient;
use framefleet_proto::v1::fleet_service_client::FleetServiceClient;
use framefleet_proto::v1::{FrameEncoding, FrameSchema, IngestorReport, PixelFormat, RegisterChannelRequest};
use rdkafka::producer::{FutureProducer, Producer};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What happened to every channel by the time the ingestor stopped.
#[derive(Debug, Clone)]
pub struct IngestSummary {
    pub channels: Vec<framefleet_proto::v1::ChannelLedger>,
}

impl IngestSummary {
    pub fn failed_channels(&self) -> Vec<&framefleet_proto::v1::ChannelLedger> {
        self.channels
            .iter()
            .filter(|ledger| ledger.frames_failed > 0 || !ledger.last_error.is_empty())
            .collect()
    }
}

struct PreparedChannel {
    source: OpenedSource,
    stream: ChannelStream,
    conversion: FrameConversion,
    /// A decoded frame's size; no encoded frame of the channel is larger.
    raw_frame_bytes: u64,
}

pub async fn run(config: IngestorConfig, shutdown: CancellationToken) -> anyhow::Result<IngestSummary> {
    let ingestor_id = config.ingestor_id();
    let timeout = Duration::from_secs(config.request_timeout_secs.max(1));
    // A new epoch per process start: (epoch, sequence) stays unique across restarts.
    let ingestor_epoch = u64::try_from(framefleet_common::startup::unix_time_ms()).unwrap_or_default();

    let coordinator =
        framefleet_proto::client::connect_coordinator(&config.coordinator, timeout, &config.client_options()).await?;
    let mut channel_client = ChannelServiceClient::new(coordinator.clone());
    let fleet_client = FleetServiceClient::new(coordinator);

    let ledgers: Vec<Arc<ChannelLedger>> = config
        .channels
        .iter()
        .map(|channel| Arc::new(ChannelLedger::new(&channel.channel_id)))
        .collect();

    let mut prepared = Vec::new();
    for (channel, ledger) in config.channels.iter().zip(&ledgers) {
        match prepare_channel(&config, channel, &mut channel_client, ingestor_epoch).await {
            Ok(ready) => prepared.push((ready, Arc::clone(ledger))),
            Err(error) => {
                // One bad channel must not stop the others.
                tracing::error!(channel = %channel.channel_id, "{error:#}");
                ledger.record_error(format!("{error:#}"));
                ledger.mark_finished();
            }
        }
    }

    let max_frame_bytes = prepared
        .iter()
        .map(|(ready, _)| usize::try_from(ready.raw_frame_bytes).unwrap_or(usize::MAX))
        .max()
        .unwrap_or(1 << 20);
    let producer: FutureProducer = kafka::producer_config(&config.kafka_brokers, max_frame_bytes)
        .create()
        .context("cannot create the Kafka producer")?;
    if !prepared.is_empty() {
        kafka::check_reachable(&producer, &config.kafka_brokers, timeout).await?;
    }

    let reporter_stop = CancellationToken::new();
    let reporter = tokio::spawn(report_periodically(
        fleet_client.clone(),
        ingestor_id.clone(),
        ledgers.clone(),
        Duration::from_millis(config.report_interval_ms.max(100)),
        reporter_stop.clone(),
    ));

    let mut channel_tasks = Vec::new();
    for (ready, ledger) in prepared {
        let (frame_sender, frame_receiver) = tokio::sync::mpsc::channel(config.queue_frames.max(1));
        let job = CaptureJob {
            source: ready.source,
            conversion: ready.conversion,
            pace: config.pace,
            max_frames: config.max_frames,
            frames: frame_sender,
            ledger: Arc::clone(&ledger),
            stop: shutdown.clone(),
        };
        let capture_ledger = Arc::clone(&ledger);
        let capture = tokio::task::spawn_blocking(move || {
            if let Err(error) = capture::capture_loop(job) {
                tracing::error!("{error}");
                capture_ledger.record_error(error.to_string());
            }
        });
        let delivery = tokio::spawn(producer::deliver_channel(
            producer.clone(),
            ready.stream,
            frame_receiver,
            Arc::clone(&ledger),
        ));
        channel_tasks.push((capture, delivery, ledger));
    }

    for (capture, delivery, ledger) in channel_tasks {
        if let Err(error) = capture.await {
            ledger.record_error(format!("capture thread panicked: {error}"));
        }
        if let Err(error) = delivery.await {
            ledger.record_error(format!("delivery task panicked: {error}"));
        }
        ledger.mark_finished();
    }
    // Every delivery was awaited above; flush anyway so nothing queued is left behind.
    let flush_producer = producer.clone();
    tokio::task::spawn_blocking(move || flush_producer.flush(Duration::from_secs(30)))
        .await
        .context("producer flush task panicked")?
        .context("flushing the Kafka producer failed")?;

    reporter_stop.cancel();
    reporter.await.context("reporter task panicked")?;
    let summary = IngestSummary {
        channels: ledgers.iter().map(|ledger| ledger.snapshot()).collect(),
    };
    send_report(&mut fleet_client.clone(), &ingestor_id, &ledgers).await;
    for ledger in &summary.channels {
        tracing::info!(
            channel = %ledger.channel_id,
            captured = ledger.frames_captured,
            acknowledged = ledger.frames_acknowledged,
            failed = ledger.frames_failed,
            "channel finished"
        );
    }
    Ok(summary)
}

async fn prepare_channel(
    config: &IngestorConfig,
    channel: &config::ChannelSource,
    channel_client: &mut ChannelServiceClient<framefleet_proto::client::CoordinatorChannel>,
    ingestor_epoch: u64,
) -> anyhow::Result<PreparedChannel> {
    let source_uri = channel.source.clone();
    let source = tokio::task::spawn_blocking(move || capture::open_video_file(&source_uri))
        .await
        .context("opening the source panicked")??;
    let width = config.width.unwrap_or(source.info.width);
    let height = config.height.unwrap_or(source.info.height);
    let schema = FrameSchema {
        version: 1,
        width,
        height,
        channels: 3,
        // A JPEG decodes to RGB whatever order OpenCV held the pixels in.
        pixel_format: PixelFormat::Rgb24.into(),
        encoding: FrameEncoding::Jpeg.into(),
        fps: source.info.fps,
    };
    let raw_frame_bytes = schema.raw_frame_bytes();
    let response = channel_client
        .register_channel(RegisterChannelRequest {
            channel_id: channel.channel_id.clone(),
            source_uri: channel.source.clone(),
            schema: Some(schema),
            ..RegisterChannelRequest::default()
        })
        .await
        .map_err(|status| {
            anyhow::anyhow!(
                "registering channel `{}` failed: {}",
                channel.channel_id,
                status.message()
            )
        })?
        .into_inner();
    let registered = response
        .channel
        .context("the coordinator answered a registration without the channel")?;
    let schema_version = registered.schema.as_ref().map(|schema| schema.version).unwrap_or(1);
    tracing::info!(
        channel = %channel.channel_id,
        topic = %registered.topic,
        width, height, fps = source.info.fps,
        created = response.created,
        "channel ready"
    );
    Ok(PreparedChannel {
        raw_frame_bytes,
        source,
        stream: ChannelStream {
            channel_id: channel.channel_id.clone(),
            topic: registered.topic,
            schema_version,
            ingestor_epoch,
        },
        conversion: FrameConversion {
            width,
            height,
            jpeg_quality: config.jpeg_quality,
        },
    })
}

async fn report_periodically(
    mut client: FleetServiceClient<framefleet_proto::client::CoordinatorChannel>,
    ingestor_id: String,
    ledgers: Vec<Arc<ChannelLedger>>,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => send_report(&mut client, &ingestor_id, &ledgers).await,
        }
    }
}

async fn send_report(
    client: &mut FleetServiceClient<framefleet_proto::client::CoordinatorChannel>,
    ingestor_id: &str,
    ledgers: &[Arc<ChannelLedger>],
) {
    let report = IngestorReport {
        ingestor_id: ingestor_id.to_owned(),
        channels: ledgers.iter().map(|ledger| ledger.snapshot()).collect(),
    };
    if let Err(status) = client.report_ingestor(report).await {
        // Reports are best effort: frames keep flowing while the coordinator is away.
        tracing::debug!(code = ?status.code(), "report to coordinator failed: {}", status.message());
    }
}
