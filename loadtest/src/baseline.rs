//! framefleet against what people use today, in the same run on the same broker, one camera
//! at full speed (no pacing), a producer and a consumer running at the same time:
//!
//! - **framefleet**: the ingestor (capture, schema, JPEG, headers, idempotent acks=all) and one
//!   worker (decode, batch to tensors, analysis, result record, commit). The clock runs from
//!   the ingestor's start to the last frame's result.
//! - **json-base64**: the approach of the seed blog post and public demos. Each frame is
//!   JPEG-encoded with OpenCV, Base64-encoded into a JSON object, produced with a plain
//!   client; the consumer parses the JSON, decodes the Base64 and the JPEG back into an image.
//! - **raw-rdkafka**: the ceiling. The same JPEG bytes framefleet writes, encoded beforehand,
//!   produced and consumed by plain rdkafka clients that look at nothing.
//!
//! Bytes on the wire are each record's key, value and headers as the consumer receives them
//! (before batch compression, which neither baseline nor JPEG frames use).

use crate::report::Progress;
use crate::scenario::{BaselineScenario, Encoding};
use crate::{Fleet, Infrastructure, experiment, read_topic};
use anyhow::Context;
use base64::Engine as _;
use framefleet_ingestor::encode::{FrameEncoder, Quality};
use framefleet_ingestor::source::SyntheticSource;
use framefleet_proto::v1::{FrameEncoding, FrameSchema, PixelFormat};
use opencv::prelude::*;
use rdkafka::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Serialize)]
pub struct SystemRun {
    pub system: &'static str,
    pub frames: u64,
    /// Start of production to the last frame consumed (framefleet: its result computed).
    pub seconds: f64,
    pub frames_per_second: f64,
    /// Start of production to the last frame acknowledged by the broker.
    pub produce_seconds: f64,
    pub produce_frames_per_second: f64,
    pub bytes_per_frame: f64,
}

impl SystemRun {
    fn new(system: &'static str, frames: u64, seconds: f64, produce_seconds: f64, bytes: u64) -> Self {
        Self {
            system,
            frames,
            seconds,
            frames_per_second: frames as f64 / seconds.max(1e-6),
            produce_seconds,
            produce_frames_per_second: frames as f64 / produce_seconds.max(1e-6),
            bytes_per_frame: bytes as f64 / frames.max(1) as f64,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    /// framefleet frames/s ÷ theirs, end to end: above 1, framefleet is faster.
    pub frames_per_second: f64,
    /// The same for frames/s into Kafka (capture to acknowledged).
    pub produce_frames_per_second: f64,
    /// framefleet bytes per frame ÷ theirs: below 1, framefleet puts fewer bytes on the wire.
    pub bytes_per_frame: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BaselineRun {
    pub name: String,
    pub title: String,
    pub cameras: String,
    pub framefleet: SystemRun,
    pub json_base64: SystemRun,
    pub raw_rdkafka: SystemRun,
    pub framefleet_vs_json_base64: Ratio,
    pub framefleet_vs_raw_rdkafka: Ratio,
}

/// The message of the blog-post approach.
#[derive(Serialize, Deserialize)]
struct JsonFrame {
    camera_id: String,
    frame_number: u64,
    timestamp_ms: u128,
    /// Base64 of the JPEG file.
    image: String,
}

pub async fn run_baselines(
    infrastructure: &Infrastructure,
    scenario: &BaselineScenario,
    progress: &Progress,
) -> anyhow::Result<BaselineRun> {
    anyhow::ensure!(
        scenario.cameras.encoding == Encoding::Jpeg,
        "{}: the baselines compare JPEG frames (the blog approach's format)",
        scenario.name
    );
    progress.update(&format!("{:<12} framefleet: {} frames", scenario.name, scenario.frames));
    let framefleet = run_framefleet(infrastructure, scenario).await?;
    progress.update(&format!(
        "{:<12} json-base64: {} frames",
        scenario.name, scenario.frames
    ));
    let json_base64 = run_plain(infrastructure, scenario, PlainKind::JsonBase64).await?;
    progress.update(&format!(
        "{:<12} raw-rdkafka: {} frames",
        scenario.name, scenario.frames
    ));
    let raw_rdkafka = run_plain(infrastructure, scenario, PlainKind::Raw).await?;
    let ratio = |theirs: &SystemRun| Ratio {
        frames_per_second: framefleet.frames_per_second / theirs.frames_per_second,
        produce_frames_per_second: framefleet.produce_frames_per_second / theirs.produce_frames_per_second,
        bytes_per_frame: framefleet.bytes_per_frame / theirs.bytes_per_frame,
    };
    let run = BaselineRun {
        name: scenario.name.clone(),
        title: scenario.title.clone(),
        cameras: scenario.cameras.describe(),
        framefleet_vs_json_base64: ratio(&json_base64),
        framefleet_vs_raw_rdkafka: ratio(&raw_rdkafka),
        framefleet,
        json_base64,
        raw_rdkafka,
    };
    progress.finish(&format!(
        "{:<12} frames/s: framefleet {:.1}, json-base64 {:.1}, raw-rdkafka {:.1}; bytes/frame {:.0} / {:.0} / {:.0}",
        run.name,
        run.framefleet.frames_per_second,
        run.json_base64.frames_per_second,
        run.raw_rdkafka.frames_per_second,
        run.framefleet.bytes_per_frame,
        run.json_base64.bytes_per_frame,
        run.raw_rdkafka.bytes_per_frame,
    ));
    Ok(run)
}

fn record_bytes(record: &impl rdkafka::Message) -> u64 {
    use rdkafka::message::Headers;
    let headers: usize = record.headers().map_or(0, |headers| {
        headers
            .iter()
            .map(|header| header.key.len() + header.value.map_or(0, <[u8]>::len))
            .sum()
    });
    (record.payload().map_or(0, <[u8]>::len) + record.key().map_or(0, <[u8]>::len) + headers) as u64
}

async fn run_framefleet(infrastructure: &Infrastructure, scenario: &BaselineScenario) -> anyhow::Result<SystemRun> {
    let mut fleet = Fleet::start_on(&format!("{}-ff", scenario.name), infrastructure.clone()).await?;
    let channel_ids = experiment::channel_ids(&fleet, &scenario.cameras);
    experiment::start_workers(&mut fleet, &scenario.name, 1, &[]).await?;
    let started_us = framefleet_common::startup::unix_time_us();
    let started = Instant::now();
    let (summary, ended) = experiment::start_ingestor(
        &fleet,
        &scenario.name,
        &channel_ids,
        &scenario.cameras,
        &experiment::camera_args(&scenario.cameras, "max", scenario.frames),
        CancellationToken::new(),
    )?
    .await
    .context("ingestor task panicked")?;
    let produce_seconds = ended.duration_since(started).as_secs_f64();
    let acknowledged = experiment::acknowledged(&summary?)?;
    anyhow::ensure!(
        acknowledged == scenario.frames,
        "framefleet acknowledged {acknowledged} of {} frames",
        scenario.frames
    );
    fleet
        .wait_for_status(Duration::from_secs(600), |status| {
            experiment::topic_totals(status, &channel_ids).1 >= scenario.frames
        })
        .await
        .context("the worker did not consume every frame")?;
    let results = experiment::read_fleet_results(&fleet, scenario.frames).await?;
    let last_processed_us = results.processed_us.iter().copied().max().context("no results")?;
    let brokers = infrastructure.kafka_brokers.clone();
    let topic = format!("{}{}", framefleet_common::kafka::CHANNEL_TOPIC_PREFIX, channel_ids[0]);
    let expected = scenario.frames as usize;
    let records = tokio::task::spawn_blocking(move || {
        read_topic(&brokers, &topic, expected, Duration::from_secs(60), Duration::ZERO)
    })
    .await??;
    let bytes = records.iter().map(record_bytes).sum();
    fleet.stop().await?;
    Ok(SystemRun::new(
        "framefleet",
        scenario.frames,
        (last_processed_us - started_us) as f64 / 1e6,
        produce_seconds,
        bytes,
    ))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PlainKind {
    JsonBase64,
    Raw,
}

impl PlainKind {
    fn system(self) -> &'static str {
        match self {
            Self::JsonBase64 => "json-base64",
            Self::Raw => "raw-rdkafka",
        }
    }
}

async fn run_plain(
    infrastructure: &Infrastructure,
    scenario: &BaselineScenario,
    kind: PlainKind,
) -> anyhow::Result<SystemRun> {
    let cameras = &scenario.cameras;
    let topic = format!(
        "{}-{}-{}",
        scenario.name,
        kind.system(),
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    // Base64 of an uncompressed frame bounds every JPEG of it.
    let largest_record = (cameras.width as usize * cameras.height as usize * 3) * 4 / 3 + 4096;
    crate::create_plain_topic(&infrastructure.kafka_brokers, &topic, largest_record as u64).await?;
    let brokers = infrastructure.kafka_brokers.clone();
    let scenario = scenario.clone();
    tokio::task::spawn_blocking(move || run_plain_blocking(&brokers, &topic, largest_record, &scenario, kind))
        .await
        .context("baseline panicked")?
}

fn run_plain_blocking(
    brokers: &str,
    topic: &str,
    largest_record: usize,
    scenario: &BaselineScenario,
    kind: PlainKind,
) -> anyhow::Result<SystemRun> {
    let cameras = &scenario.cameras;
    let frames = scenario.frames;
    let system = kind.system();
    let source = SyntheticSource::new(cameras.width, cameras.height, cameras.fps)?;
    let schema = FrameSchema {
        version: 1,
        width: cameras.width,
        height: cameras.height,
        channels: 3,
        pixel_format: PixelFormat::Rgb24.into(),
        encoding: FrameEncoding::Jpeg.into(),
        fps: cameras.fps,
    };
    // The raw ceiling sends framefleet's own bytes, encoded before the clock starts.
    let prepared: Vec<Vec<u8>> = if kind == PlainKind::Raw {
        let mut encoder = FrameEncoder::new(&schema, Quality::default())?;
        let mut frame = Mat::default();
        (0..frames)
            .map(|number| {
                source.draw(number, &mut frame)?;
                Ok(encoder.encode(&frame)?)
            })
            .collect::<anyhow::Result<_>>()?
    } else {
        Vec::new()
    };

    let consumer_topic = topic.to_owned();
    let consumer_brokers = brokers.to_owned();
    let consuming =
        std::thread::spawn(move || consume_all(&consumer_brokers, &consumer_topic, frames, largest_record, kind));

    let producer: ThreadedProducer<DefaultProducerContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("message.max.bytes", (largest_record + 65_536).to_string())
        .create()?;
    let started = Instant::now();
    let mut frame = Mat::default();
    let jpeg_params = opencv::core::Vector::from_slice(&[
        opencv::imgcodecs::IMWRITE_JPEG_QUALITY,
        i32::from(Quality::default().jpeg),
    ]);
    let camera_id = format!("{}-cam0", scenario.name);
    for number in 0..frames {
        let payload = match kind {
            PlainKind::Raw => prepared[number as usize].clone(),
            PlainKind::JsonBase64 => {
                source.draw(number, &mut frame)?;
                let mut jpeg = opencv::core::Vector::<u8>::new();
                opencv::imgcodecs::imencode(".jpg", &frame, &mut jpeg, &jpeg_params)?;
                serde_json::to_vec(&JsonFrame {
                    camera_id: camera_id.clone(),
                    frame_number: number,
                    timestamp_ms: SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |since| since.as_millis()),
                    image: base64::engine::general_purpose::STANDARD.encode(jpeg.as_slice()),
                })?
            }
        };
        let mut record = BaseRecord::<(), Vec<u8>>::to(topic).payload(&payload);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                    back,
                )) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((error, _)) => anyhow::bail!("{system}: produce failed: {error}"),
            }
        }
    }
    producer.flush(Duration::from_secs(120))?;
    let produce_seconds = started.elapsed().as_secs_f64();
    let consumed = consuming
        .join()
        .map_err(|_| anyhow::anyhow!("{system} consumer panicked"))??;
    Ok(SystemRun::new(
        system,
        frames,
        consumed.last_at.duration_since(started).as_secs_f64(),
        produce_seconds,
        consumed.bytes,
    ))
}

struct Consumed {
    last_at: Instant,
    bytes: u64,
}

/// A plain group consumer, as the demos write it: subscribe, poll, handle each record.
fn consume_all(
    brokers: &str,
    topic: &str,
    frames: u64,
    largest_record: usize,
    kind: PlainKind,
) -> anyhow::Result<Consumed> {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("{topic}-consumer"))
        .set("auto.offset.reset", "earliest")
        .set("max.partition.fetch.bytes", (largest_record + 65_536).to_string())
        .create()?;
    consumer.subscribe(&[topic])?;
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut consumed = 0;
    let mut bytes = 0;
    let mut last_at = Instant::now();
    let mut image = Mat::default();
    while consumed < frames {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{topic}: consumed {consumed} of {frames} in 600 s"
        );
        let Some(result) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let record = result?;
        let payload = record.payload().context("a record without a payload")?;
        if kind == PlainKind::JsonBase64 {
            let frame: JsonFrame = serde_json::from_slice(payload)?;
            let jpeg = base64::engine::general_purpose::STANDARD.decode(frame.image)?;
            opencv::imgcodecs::imdecode_to(
                &opencv::core::Vector::from_slice(&jpeg),
                opencv::imgcodecs::IMREAD_COLOR,
                &mut image,
            )?;
            anyhow::ensure!(!image.empty(), "frame {} does not decode", frame.frame_number);
        }
        bytes += record_bytes(&record);
        consumed += 1;
        last_at = Instant::now();
    }
    Ok(Consumed { last_at, bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_divide_framefleet_by_the_baseline() {
        let run = SystemRun::new("x", 100, 2.0, 1.0, 5_000);
        assert_eq!(run.frames_per_second, 50.0);
        assert_eq!(run.produce_frames_per_second, 100.0);
        assert_eq!(run.bytes_per_frame, 50.0);
    }
}
