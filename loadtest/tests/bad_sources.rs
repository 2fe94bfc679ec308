//! A channel whose source is missing or not a video fails alone, with a reason that names
//! it; the other channels of the same ingestor are delivered in full.

use framefleet_loadtest::Fleet;

const GOOD_VIDEO: &str = "/usr/share/doc/opencv-doc/examples/data/tree.avi";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_source_does_not_disturb_the_good_one() {
    let fleet = Fleet::start("bad-sources").await.expect("start the coordinator");
    let not_a_video = std::env::temp_dir().join(format!("framefleet-not-a-video-{}.avi", fleet.names.suffix));
    std::fs::write(&not_a_video, b"this is text, not a video").expect("write the fake video");

    let good = fleet.names.channel_id("good");
    let missing = fleet.names.channel_id("missing");
    let garbage = fleet.names.channel_id("garbage");
    let not_a_video_path = not_a_video.display().to_string();
    let config = fleet
        .ingestor_config(
            "ingestor-bad-sources",
            &[
                (&good, GOOD_VIDEO),
                (&missing, "/nonexistent/lobby.avi"),
                (&garbage, &not_a_video_path),
            ],
            &["--max-frames", "20"],
        )
        .expect("config");
    let summary = framefleet_ingestor::run(config, tokio_util::sync::CancellationToken::new())
        .await
        .expect("the ingestor runs despite bad channels");
    std::fs::remove_file(&not_a_video).ok();

    let ledger = |id: &str| summary.ledger(id).expect("ledger").clone();
    let good_ledger = ledger(&good);
    assert_eq!((good_ledger.frames_captured, good_ledger.frames_acknowledged), (20, 20));
    assert!(good_ledger.last_error.is_empty(), "{}", good_ledger.last_error);

    let missing_ledger = ledger(&missing);
    assert!(
        missing_ledger.last_error.contains("/nonexistent/lobby.avi")
            && missing_ledger.last_error.contains("does not exist"),
        "{}",
        missing_ledger.last_error
    );
    assert_eq!(missing_ledger.frames_captured, 0);

    let garbage_ledger = ledger(&garbage);
    assert!(
        garbage_ledger.last_error.contains(&not_a_video_path),
        "{}",
        garbage_ledger.last_error
    );
    assert_eq!(garbage_ledger.frames_captured, 0);

    assert_eq!(summary.failed_channels().len(), 2);
    fleet.stop().await.expect("stop");
}

fn ledger_of(summary: &framefleet_ingestor::IngestSummary, id: &str) -> framefleet_proto::v1::ChannelLedger {
    summary.ledger(id).expect("ledger").clone()
}

/// A decoder that crashes (here a source that aborts its process, as OpenCV's FFmpeg reader
/// segfaults on some real files) takes down its own capture process, not the ingestor: the
/// channel fails with the signal in its error and a crash counted, every frame it captured
/// before is delivered, and the other channel is captured in full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_decoder_fails_its_channel_alone() {
    assert!(
        framefleet_ingestor::isolation::ingestor_binary().is_some(),
        "the framefleet-ingestor binary of this build runs the capture processes"
    );
    let fleet = Fleet::start("crashing-source").await.expect("start the coordinator");
    let good = fleet.names.channel_id("good");
    let crashing = fleet.names.channel_id("crashing");
    let config = fleet
        .ingestor_config(
            "ingestor-crashing",
            &[
                (&good, "synthetic://64x48@30"),
                (&crashing, "synthetic://64x48@30?crash_after=5"),
            ],
            &["--max-frames", "40"],
        )
        .expect("config");
    let summary = framefleet_ingestor::run(config, tokio_util::sync::CancellationToken::new())
        .await
        .expect("the ingestor survives a crashing capture");

    let good_ledger = ledger_of(&summary, &good);
    assert_eq!((good_ledger.frames_captured, good_ledger.frames_acknowledged), (40, 40));
    assert_eq!(good_ledger.capture_crashes, 0);
    assert!(good_ledger.last_error.is_empty(), "{}", good_ledger.last_error);

    let crashed = ledger_of(&summary, &crashing);
    assert_eq!(crashed.capture_crashes, 1);
    assert_eq!(crashed.source_state, "failed");
    assert!(
        crashed.last_error.contains("crashed") && crashed.last_error.contains("SIGABRT"),
        "{}",
        crashed.last_error
    );
    // Every frame the ingestor took from its capture process is delivered. The one frame the
    // process may still have held (its one-frame queue to the pipe) dies with it: it was
    // never accepted, so nothing accepted is lost.
    assert_eq!(
        crashed.frames_acknowledged, crashed.frames_captured,
        "the frames received before the crash are delivered"
    );
    assert!(
        (4..=5).contains(&crashed.frames_captured),
        "frames 0–3 at least came through: {crashed:?}"
    );
    assert_eq!(summary.failed_channels().len(), 1);
    fleet.stop().await.expect("stop");
}

/// A PNG header (signature and IHDR) that declares `width`×`height` RGB pixels and holds none.
fn png_header_only(width: u32, height: u32) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend_from_slice(&13_u32.to_be_bytes());
    png.extend_from_slice(b"IHDR");
    png.extend_from_slice(&width.to_be_bytes());
    png.extend_from_slice(&height.to_be_bytes());
    png.extend_from_slice(&[8, 2, 0, 0, 0]);
    png.extend_from_slice(&[0; 4]);
    png
}

/// An image directory as users copy them: `._name.jpg` AppleDouble twins from a Mac (sorted
/// first), more non-images than the damaged-video limit before the first image, and one image
/// whose header declares a size far beyond the limits. Every real image is captured; the
/// twins are not read at all; the rest are counted undecodable with their file names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_directory_captures_every_image_whatever_else_it_holds() {
    use opencv::core::{Mat, Scalar, Vector};
    let fleet = Fleet::start("image-dir").await.expect("start the coordinator");
    let directory = std::env::temp_dir().join(format!("framefleet-images-{}", fleet.names.suffix));
    std::fs::create_dir_all(&directory).expect("directory");
    const IMAGES: u64 = 12;
    for index in 0..IMAGES {
        let image = Mat::new_rows_cols_with_default(48, 64, opencv::core::CV_8UC3, Scalar::all((index * 20) as f64))
            .expect("image");
        let path = directory.join(format!("frame_{index:03}.jpg"));
        opencv::imgcodecs::imwrite(&path, &image, &Vector::new()).expect("write image");
        // An AppleDouble twin: metadata, not pixels.
        let mut apple_double = vec![0x00, 0x05, 0x16, 0x07, 0x00, 0x02, 0x00, 0x00];
        apple_double.extend_from_slice(&[0; 4000]);
        std::fs::write(directory.join(format!("._frame_{index:03}.jpg")), apple_double).expect("twin");
    }
    const NOT_IMAGES: u64 = 120;
    for index in 0..NOT_IMAGES {
        std::fs::write(directory.join(format!("a_note_{index:03}.jpg")), b"not an image").expect("note");
    }
    std::fs::write(directory.join("frame_005b.png"), png_header_only(100_000, 100_000)).expect("bomb");

    let channel = fleet.names.channel_id("dir");
    let source = directory.display().to_string();
    let config = fleet
        .ingestor_config("ingestor-image-dir", &[(&channel, &source)], &[])
        .expect("config");
    let summary = framefleet_ingestor::run(config, tokio_util::sync::CancellationToken::new())
        .await
        .expect("run");
    std::fs::remove_dir_all(&directory).ok();

    let ledger = ledger_of(&summary, &channel);
    assert_eq!(
        (ledger.frames_captured, ledger.frames_acknowledged),
        (IMAGES, IMAGES),
        "{ledger:?}"
    );
    assert_eq!(ledger.frames_undecodable, NOT_IMAGES + 1, "{ledger:?}");
    assert_eq!(ledger.source_state, "ended");
    assert!(ledger.last_error.is_empty(), "{}", ledger.last_error);
    // The oversized image sorts after every note, so it is the last undecodable one.
    assert!(
        ledger.last_undecodable.contains("frame_005b.png") && ledger.last_undecodable.contains("100000×100000"),
        "{}",
        ledger.last_undecodable
    );
    assert!(summary.failed_channels().is_empty());
    fleet.stop().await.expect("stop");
}
