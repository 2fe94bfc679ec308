//! The ingestor against real sources and a real coordinator and broker: an RTSP camera (a
//! GStreamer RTSP server on loopback) that goes away and comes back, damaged videos,
//! impossible resolutions, and channels that arrive and leave through the coordinator's
//! assignments while the ingestor runs.

use framefleet_loadtest::Fleet;
use framefleet_proto::v1::{
    DeregisterChannelRequest, FrameEncoding, FrameSchema, PipelineSpec, PixelFormat, RegisterChannelRequest,
    TopicStrategy,
};
use rdkafka::message::Message;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const SAMPLE_VIDEO: &str = "/usr/share/doc/opencv-doc/examples/data/vtest.avi";
const GOOD_VIDEO: &str = "/usr/share/doc/opencv-doc/examples/data/tree.avi";

/// The RTSP server process; killed when dropped, so a failing test leaves none behind.
struct RtspServer(Child);

impl RtspServer {
    fn kill(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

impl Drop for RtspServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `deploy/local/rtsp-test-server.py`, up and listening.
fn start_rtsp_server(port: u16) -> RtspServer {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/local/rtsp-test-server.py");
    let mut child = Command::new(script)
        .arg(port.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the RTSP server (scripts/setup.sh installs its Debian packages)");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the server's first line");
    assert!(line.starts_with("ready"), "RTSP server did not start: {line}");
    RtspServer(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_rtsp_camera_that_disconnects_resumes_and_the_gap_is_recorded() {
    let fleet = Fleet::start("rtsp").await.expect("start the coordinator");
    let port = framefleet_common::startup::free_loopback_port().expect("a free port");
    let mut server = start_rtsp_server(port);
    let channel_id = fleet.names.channel_id("rtsp");
    let url = format!("rtsp://127.0.0.1:{port}/cam");
    let config = fleet
        .ingestor_config(
            "ingestor-rtsp",
            &[(&channel_id, &url)],
            &["--stall-timeout-secs", "2", "--max-backoff-secs", "1"],
        )
        .expect("config");
    let shutdown = CancellationToken::new();
    let ingesting = tokio::spawn(framefleet_ingestor::run(config, shutdown.clone()));

    fleet
        .wait_for_ledger(&channel_id, Duration::from_secs(60), |ledger| {
            ledger.frames_captured >= 20
        })
        .await
        .expect("frames arrive from the camera");

    // The camera goes away (process killed: no goodbye) and comes back 4 s later.
    server.kill();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let during = fleet
        .wait_for_ledger(&channel_id, Duration::from_secs(10), |_| true)
        .await
        .expect("ledger during the outage");
    let mut server = start_rtsp_server(port);

    let ledger = fleet
        .wait_for_ledger(&channel_id, Duration::from_secs(60), |ledger| {
            ledger.source_gaps >= 1 && ledger.frames_captured >= during.frames_captured + 20
        })
        .await
        .expect("capture resumes after the camera returns, without restarting the ingestor");
    assert!(ledger.source_gap_ms >= 2_000, "the gap covers the outage: {ledger:?}");
    assert_eq!(ledger.source_state, "capturing");

    shutdown.cancel();
    let summary = ingesting.await.expect("ingestor task").expect("ingestor run");
    server.kill();
    let ledger = summary.ledger(&channel_id).expect("ledger");
    assert_eq!(ledger.frames_failed, 0, "{}", ledger.last_error);
    assert_eq!(
        ledger.frames_acknowledged, ledger.frames_captured,
        "every captured frame reached Kafka"
    );
    fleet.stop().await.expect("stop");
}

/// A copy of `source` with `damage` applied, in the temp dir.
fn damaged_copy(source: &str, name: &str, damage: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut bytes = std::fs::read(source).expect("read the sample video");
    damage(&mut bytes);
    let path = std::env::temp_dir().join(format!("framefleet-{name}-{}.avi", uuid_suffix()));
    std::fs::write(&path, bytes).expect("write the damaged copy");
    path
}

fn uuid_suffix() -> String {
    format!("{}-{}", std::process::id(), rand_u32())
}

fn rand_u32() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.subsec_nanos())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn damaged_videos_and_impossible_sizes_fail_alone_with_a_reason() {
    let fleet = Fleet::start("damaged").await.expect("start the coordinator");
    let truncated = damaged_copy(SAMPLE_VIDEO, "truncated", |bytes| bytes.truncate(bytes.len() / 3));
    let garbled = damaged_copy(SAMPLE_VIDEO, "garbled", |bytes| {
        // Overwrite a run of the middle with a pattern; the header stays intact.
        let start = bytes.len() / 2;
        for (offset, byte) in bytes[start..start + 200_000].iter_mut().enumerate() {
            *byte = (offset % 251) as u8;
        }
    });
    let channel = |name: &str| fleet.names.channel_id(name);
    let (good, short, noisy, zero, huge) = (
        channel("good"),
        channel("truncated"),
        channel("garbled"),
        channel("zero"),
        channel("huge"),
    );
    let (truncated_path, garbled_path) = (truncated.display().to_string(), garbled.display().to_string());
    let config = fleet
        .ingestor_config(
            "ingestor-damaged",
            &[
                (&good, GOOD_VIDEO),
                (&short, &truncated_path),
                (&noisy, &garbled_path),
                (&zero, "synthetic://0x480@25"),
                (&huge, "synthetic://100000x100000@25"),
            ],
            &[],
        )
        .expect("config");
    let summary = framefleet_ingestor::run(config, CancellationToken::new())
        .await
        .expect("the ingestor runs despite damaged channels");
    std::fs::remove_file(&truncated).ok();
    std::fs::remove_file(&garbled).ok();
    let ledger = |id: &str| summary.ledger(id).cloned().expect("ledger");

    let good_ledger = ledger(&good);
    assert!(
        good_ledger.frames_captured > 0 && good_ledger.last_error.is_empty(),
        "{good_ledger:?}"
    );
    assert_eq!(good_ledger.frames_acknowledged, good_ledger.frames_captured);

    // Whatever a damaged file still yields is delivered; what it lost is not invented.
    let full = framefleet_loadtest::count_frames_with_opencv(SAMPLE_VIDEO).expect("count the sample's frames");
    for id in [&short, &noisy] {
        let damaged = ledger(id);
        assert_eq!(damaged.frames_failed, 0, "{damaged:?}");
        assert_eq!(damaged.frames_acknowledged, damaged.frames_captured, "{damaged:?}");
        assert!(damaged.source_finished, "{damaged:?}");
        assert!(damaged.frames_captured <= full, "{damaged:?}");
    }
    let short_ledger = ledger(&short);
    assert!(
        short_ledger.frames_captured < full || !short_ledger.last_error.is_empty(),
        "a third of the file cannot hold every frame: {short_ledger:?}"
    );

    for (id, expected) in [(&zero, "width 0"), (&huge, "width 100000")] {
        let refused = ledger(id);
        assert!(refused.last_error.contains(expected), "{refused:?}");
        assert_eq!(refused.source_state, "failed");
        assert_eq!(refused.frames_captured, 0);
    }
    fleet.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn assigned_channels_start_and_stop_at_runtime_and_fan_out_to_every_topic() {
    let fleet = Fleet::start("assigned").await.expect("start the coordinator");
    // No channels of its own: it takes what the coordinator assigns.
    let config = fleet
        .ingestor_config("ingestor-assigned", &[], &["--pace", "realtime"])
        .expect("config");
    assert!(config.accepts_assignments());
    let shutdown = CancellationToken::new();
    let ingesting = tokio::spawn(framefleet_ingestor::run(config, shutdown.clone()));
    fleet
        .wait_for_status(Duration::from_secs(30), |status| {
            status.registered_ingestors.iter().any(|id| id == "ingestor-assigned")
        })
        .await
        .expect("the ingestor registers");

    let channel_id = fleet.names.channel_id("pattern");
    for pipeline in ["detect", "archive"] {
        fleet
            .create_pipeline(
                pipeline,
                PipelineSpec {
                    analysis: true,
                    ..PipelineSpec::default()
                },
            )
            .await
            .expect("a channel names registered pipelines");
    }
    let mut channels = fleet.channel_client().await.expect("connect");
    let registered = channels
        .register_channel(RegisterChannelRequest {
            channel_id: channel_id.clone(),
            source_uri: "synthetic://160x120@50".into(),
            schema: Some(FrameSchema {
                version: 1,
                width: 96,
                height: 64,
                channels: 3,
                pixel_format: PixelFormat::Rgb24.into(),
                encoding: FrameEncoding::Raw.into(),
                fps: 50.0,
            }),
            topic_strategy: TopicStrategy::FanOut.into(),
            pipelines: vec!["detect".into(), "archive".into()],
            ..RegisterChannelRequest::default()
        })
        .await
        .expect("register")
        .into_inner()
        .channel
        .expect("channel");
    assert_eq!(registered.topics.len(), 2);

    fleet
        .wait_for_ledger(&channel_id, Duration::from_secs(30), |ledger| {
            ledger.frames_acknowledged >= 40
        })
        .await
        .expect("the coordinator assigns the channel and the ingestor captures it");

    // Deregistering drains the channel: the ingestor stops capturing it, still running.
    channels
        .deregister_channel(DeregisterChannelRequest {
            channel_id: channel_id.clone(),
            ..DeregisterChannelRequest::default()
        })
        .await
        .expect("deregister");
    let at_stop = fleet
        .wait_for_ledger(&channel_id, Duration::from_secs(30), |ledger| ledger.source_finished)
        .await
        .expect("the capture stops when the channel is taken away");
    assert_eq!(at_stop.source_state, "stopped");
    assert!(
        !ingesting.is_finished(),
        "the ingestor keeps running for further assignments"
    );

    shutdown.cancel();
    let summary = ingesting.await.expect("ingestor task").expect("ingestor run");
    let ledger = summary.ledger(&channel_id).expect("ledger");
    assert_eq!(
        ledger.frames_captured, at_stop.frames_captured,
        "nothing captured after the stop"
    );
    assert_eq!(ledger.frames_acknowledged, ledger.frames_captured);

    // Every frame is in both pipelines' topics, raw and of the schema's size, 0..N in order.
    let expected = usize::try_from(ledger.frames_acknowledged).expect("count");
    for topic in &registered.topics {
        let brokers = fleet.infrastructure.kafka_brokers.clone();
        let topic_name = topic.clone();
        let records = tokio::task::spawn_blocking(move || {
            framefleet_loadtest::read_topic(
                &brokers,
                &topic_name,
                expected,
                Duration::from_secs(60),
                Duration::from_secs(1),
            )
        })
        .await
        .expect("reader")
        .expect("read the topic");
        assert_eq!(records.len(), expected, "{topic}");
        let sequences: BTreeSet<u64> = records
            .iter()
            .map(|record| {
                let headers = framefleet_loadtest::frame_headers(record).expect("headers");
                assert_eq!(
                    record.payload().map(<[u8]>::len),
                    Some(96 * 64 * 3),
                    "raw RGB of the schema size"
                );
                headers.sequence
            })
            .collect();
        assert_eq!(sequences, (0..expected as u64).collect::<BTreeSet<_>>(), "{topic}");
    }
    fleet.stop().await.expect("stop");
}
