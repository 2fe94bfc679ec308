//! How many frames/s and MB/s one ingestor sustains into the broker, against plain rdkafka
//! producing the same bytes, in the same run on the same broker.
//!
//! For each case (640×480 and 1920×1080 synthetic channels, raw and JPEG):
//! - **framefleet**: a real coordinator and `framefleet_ingestor::run` with one synthetic
//!   channel at `--pace max`: capture, conversion, encoding, headers, delivery with acks=all;
//!   timed from start to every frame acknowledged.
//! - **plain rdkafka**: the same payloads, encoded beforehand, produced by a `FutureProducer`
//!   with only `bootstrap.servers`, `acks=all`, room for the frame size and, for raw frames,
//!   the same lz4 compression the ingestor uses (so both put the same bytes on the wire).
//! - **encode only**: the time to draw and encode those payloads, with no Kafka: the part of
//!   the ingestor's time that plain rdkafka does not pay.
//!
//! Writes `<out>/ingest-bench.csv` and `.json` and prints a table with the ratio.

use anyhow::Context;
use clap::Parser;
use framefleet_ingestor::encode::{FrameEncoder, Quality};
use framefleet_ingestor::source::{FrameSource, SyntheticSource};
use framefleet_loadtest::{Fleet, Infrastructure};
use framefleet_proto::v1::{FrameEncoding, FrameSchema, PixelFormat};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(about = "Ingestor throughput against plain rdkafka producing the same bytes")]
struct Args {
    /// Frames per case for 640×480 (1920×1080 cases use a quarter of it).
    #[arg(long, default_value_t = 400)]
    frames: u64,
    /// Where the CSV and JSON go.
    #[arg(long, default_value = "loadtest/results")]
    out: PathBuf,
    /// The ingestor's `--capture-isolation`: `process` (its default) or `thread`.
    #[arg(long, default_value = "process")]
    capture_isolation: String,
}

struct Case {
    width: u32,
    height: u32,
    encoding: FrameEncoding,
}

struct Measured {
    frames: u64,
    bytes: u64,
    seconds: f64,
}

impl Measured {
    fn frames_per_second(&self) -> f64 {
        self.frames as f64 / self.seconds
    }
    fn megabytes_per_second(&self) -> f64 {
        self.bytes as f64 / self.seconds / 1e6
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let infrastructure = Infrastructure::from_env()?;
    let storage = std::env::var("FRAMEFLEET_BROKER_STORAGE").unwrap_or_else(|_| "unknown".into());
    let cases = [
        Case {
            width: 640,
            height: 480,
            encoding: FrameEncoding::Raw,
        },
        Case {
            width: 640,
            height: 480,
            encoding: FrameEncoding::Jpeg,
        },
        Case {
            width: 1920,
            height: 1080,
            encoding: FrameEncoding::Raw,
        },
        Case {
            width: 1920,
            height: 1080,
            encoding: FrameEncoding::Jpeg,
        },
    ];
    let mut csv =
        String::from("case,system,frames,bytes,seconds,frames_per_second,megabytes_per_second,broker_storage\n");
    let mut json_cases = Vec::new();
    println!(
        "{:<16} {:>12} {:>10} {:>12} {:>10} {:>10}",
        "case", "system", "frames/s", "MB/s", "ratio fps", "ratio MB/s"
    );
    for case in &cases {
        let frames = if case.width > 1000 {
            (args.frames / 4).max(10)
        } else {
            args.frames
        };
        let label = format!(
            "{}x{}-{}",
            case.width,
            case.height,
            if case.encoding == FrameEncoding::Raw {
                "raw"
            } else {
                "jpeg"
            }
        );
        let framefleet = run_framefleet(&infrastructure, case, frames, &args.capture_isolation)
            .await
            .with_context(|| format!("{label}: framefleet"))?;
        let (plain, encode_only) = run_plain(&infrastructure, case, frames)
            .await
            .with_context(|| format!("{label}: plain rdkafka"))?;
        let fps_ratio = framefleet.frames_per_second() / plain.frames_per_second();
        let bytes_ratio = framefleet.megabytes_per_second() / plain.megabytes_per_second();
        for (system, measured) in [
            ("framefleet", &framefleet),
            ("plain-rdkafka", &plain),
            ("encode-only", &encode_only),
        ] {
            let _ = writeln!(
                csv,
                "{label},{system},{},{},{:.3},{:.1},{:.1},{storage}",
                measured.frames,
                measured.bytes,
                measured.seconds,
                measured.frames_per_second(),
                measured.megabytes_per_second()
            );
        }
        println!(
            "{label:<16} {:>12} {:>10.1} {:>12.1}\n{:<16} {:>12} {:>10.1} {:>12.1} {:>10.2} {:>10.2}",
            "framefleet",
            framefleet.frames_per_second(),
            framefleet.megabytes_per_second(),
            "",
            "plain-rdkafka",
            plain.frames_per_second(),
            plain.megabytes_per_second(),
            fps_ratio,
            bytes_ratio
        );
        println!(
            "{:<16} {:>12} {:>10.1} {:>12.1}",
            "",
            "encode-only",
            encode_only.frames_per_second(),
            encode_only.megabytes_per_second()
        );
        json_cases.push(serde_json::json!({
            "case": label,
            "framefleet": {"frames": framefleet.frames, "bytes": framefleet.bytes, "seconds": framefleet.seconds,
                "frames_per_second": framefleet.frames_per_second(), "megabytes_per_second": framefleet.megabytes_per_second()},
            "plain_rdkafka": {"frames": plain.frames, "bytes": plain.bytes, "seconds": plain.seconds,
                "frames_per_second": plain.frames_per_second(), "megabytes_per_second": plain.megabytes_per_second()},
            "encode_only_frames_per_second": encode_only.frames_per_second(),
            "ratio_frames_per_second": fps_ratio,
            "ratio_megabytes_per_second": bytes_ratio,
        }));
    }
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(args.out.join("ingest-bench.csv"), csv)?;
    let summary = serde_json::json!({
        "broker_storage": storage,
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cases": json_cases,
    });
    std::fs::write(
        args.out.join("ingest-bench.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    println!("broker storage: {storage}; results in {}", args.out.display());
    Ok(())
}

async fn run_framefleet(
    infrastructure: &Infrastructure,
    case: &Case,
    frames: u64,
    capture_isolation: &str,
) -> anyhow::Result<Measured> {
    let fleet = Fleet::start_on("bench", infrastructure.clone()).await?;
    let channel_id = fleet.names.channel_id("bench");
    let source = format!("synthetic://{}x{}@30", case.width, case.height);
    let encoding = if case.encoding == FrameEncoding::Raw {
        "raw"
    } else {
        "jpeg"
    };
    let frames_text = frames.to_string();
    let config = fleet.ingestor_config(
        "ingestor-bench",
        &[(&channel_id, &source)],
        &[
            "--pace",
            "max",
            "--max-frames",
            &frames_text,
            "--encoding",
            encoding,
            "--queue-frames",
            "256",
            "--capture-isolation",
            capture_isolation,
        ],
    )?;
    let started = Instant::now();
    let summary = framefleet_ingestor::run(config, CancellationToken::new()).await?;
    let seconds = started.elapsed().as_secs_f64();
    let ledger = summary.channels.first().context("no ledger")?;
    anyhow::ensure!(
        ledger.frames_acknowledged == frames && ledger.frames_failed == 0,
        "not every frame was acknowledged: {ledger:?}"
    );
    fleet.stop().await?;
    Ok(Measured {
        frames,
        bytes: ledger.bytes_acknowledged,
        seconds,
    })
}

async fn run_plain(infrastructure: &Infrastructure, case: &Case, frames: u64) -> anyhow::Result<(Measured, Measured)> {
    // The same payloads the ingestor produced: the same pattern through the same encoder.
    let schema = FrameSchema {
        version: 1,
        width: case.width,
        height: case.height,
        channels: 3,
        pixel_format: PixelFormat::Rgb24.into(),
        encoding: case.encoding.into(),
        fps: 30.0,
    };
    let encoding_started = Instant::now();
    let payloads = tokio::task::spawn_blocking({
        let (width, height) = (case.width, case.height);
        move || -> anyhow::Result<Vec<Vec<u8>>> {
            let mut source = SyntheticSource::new(width, height, 30.0)?;
            let mut encoder = FrameEncoder::new(&schema, Quality::default())?;
            let mut frame = opencv::core::Mat::default();
            (0..frames)
                .map(|_| {
                    source.read(&mut frame)?;
                    Ok(encoder.encode(&frame)?)
                })
                .collect()
        }
    })
    .await??;
    let encode_seconds = encoding_started.elapsed().as_secs_f64();
    let largest = payloads.iter().map(Vec::len).max().unwrap_or(0);
    let topic = format!("plain-bench-{}", uuid::Uuid::new_v4().simple());
    framefleet_loadtest::create_plain_topic(&infrastructure.kafka_brokers, &topic, largest as u64).await?;
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &infrastructure.kafka_brokers)
        .set("acks", "all")
        .set("message.max.bytes", (largest + 65_536).to_string())
        .set(
            "compression.codec",
            if case.encoding == FrameEncoding::Raw {
                "lz4"
            } else {
                "none"
            },
        )
        .create()?;
    let started = Instant::now();
    let mut deliveries = Vec::with_capacity(payloads.len());
    for payload in &payloads {
        let record = FutureRecord::<(), _>::to(&topic).payload(payload.as_slice());
        deliveries.push(framefleet_common::kafka::send_when_queue_has_room(&producer, record).await?);
    }
    for delivery in deliveries {
        delivery
            .await
            .context("producer closed")?
            .map_err(|(error, _)| anyhow::anyhow!("delivery failed: {error}"))?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let bytes = payloads.iter().map(|payload| payload.len() as u64).sum();
    Ok((
        Measured { frames, bytes, seconds },
        Measured {
            frames,
            bytes,
            seconds: encode_seconds,
        },
    ))
}
