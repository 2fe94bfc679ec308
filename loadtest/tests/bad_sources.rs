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

    let ledger = |id: &str| {
        summary
            .channels
            .iter()
            .find(|ledger| ledger.channel_id == id)
            .expect("ledger")
            .clone()
    };
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
