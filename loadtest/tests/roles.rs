//! Roles with the real binaries: a coordinator with a credentials file, an ingestor and a worker
//! each with its own role's token, and the CLI as an observer. The roles allow what the
//! services really call (the run drains), an observer's write is refused (exit 9, naming the
//! role), and a second ingestor's credential cannot take over the first one's channel. Against
//! real etcd and the real broker.

use framefleet_test_support::processes::{cli, spawn_logged, stop};
use framefleet_test_support::{FleetNames, Infrastructure, TestCoordinator};
use std::time::{Duration, Instant};

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn each_service_runs_with_its_own_role_and_no_more() {
    let infrastructure = Infrastructure::required();
    let names = FleetNames::unique("roles");
    let dir = std::env::temp_dir().join(format!("framefleet-{}", names.suffix));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let ingestor_id = format!("ingestor-{}", names.suffix);
    let credentials = format!(
        "[[credentials]]\nname = \"camera-host\"\nrole = \"ingestor\"\ningestor_id = \"{ingestor_id}\"\ntoken_sha256 = \"{}\"\n\
         [[credentials]]\nname = \"intruder\"\nrole = \"ingestor\"\ningestor_id = \"intruder-{}\"\ntoken_sha256 = \"{}\"\n\
         [[credentials]]\nname = \"workers\"\nrole = \"worker\"\ntoken_sha256 = \"{}\"\n\
         [[credentials]]\nname = \"grafana\"\nrole = \"observer\"\ntoken_sha256 = \"{}\"\n",
        sha256_hex("ingestor-token"),
        names.suffix,
        sha256_hex("intruder-token"),
        sha256_hex("worker-token"),
        sha256_hex("observer-token"),
    );
    std::fs::write(dir.join("credentials.toml"), credentials).expect("credentials file");
    let mut args = names.coordinator_args();
    args.extend([
        "--credentials-file".to_owned(),
        dir.join("credentials.toml").to_string_lossy().into_owned(),
    ]);
    let coordinator = TestCoordinator::start(&infrastructure, &args)
        .await
        .expect("coordinator");
    let address = coordinator.address.clone();
    let common = |extra: &[String]| infrastructure.client_args(&address, extra);
    let channel = names.channel_id("cam");
    let worker = spawn_logged(
        "framefleet-worker",
        &common(&names.worker_args()),
        &[("FRAMEFLEET_AUTH_TOKEN", "worker-token")],
        &dir.join("worker.log"),
    );
    let watch = {
        let address = address.clone();
        tokio::task::spawn_blocking(move || {
            cli(
                &address,
                &["watch", "--until-drained", "--timeout-secs", "120"],
                &[("FRAMEFLEET_AUTH_TOKEN", "observer-token")],
            )
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut ingestor = spawn_logged(
        "framefleet-ingestor",
        &common(&[
            format!("--ingestor-id={ingestor_id}"),
            format!("--channel={channel}=synthetic://64x48@10"),
            "--max-frames=30".to_owned(),
            "--pace=max".to_owned(),
        ]),
        &[("FRAMEFLEET_AUTH_TOKEN", "ingestor-token")],
        &dir.join("ingestor.log"),
    );
    let ingested = tokio::task::spawn_blocking(move || ingestor.wait())
        .await
        .expect("join")
        .expect("ingestor");
    let log = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    assert!(ingested.success(), "the ingestor failed: {}", log("ingestor.log"));
    let (drained, output) = watch.await.expect("watch");
    assert_eq!(drained, 0, "the observer's watch: {output}");
    let (status, output) = cli(
        &address,
        &["--json", "status"],
        &[("FRAMEFLEET_AUTH_TOKEN", "observer-token")],
    );
    assert_eq!(status, 0, "{output}");
    assert!(output.contains(&channel), "{output}");

    // An observer cannot write.
    let (refused, output) = cli(
        &address,
        &["schemas", "add", &channel, "--width", "32", "--height", "24"],
        &[("FRAMEFLEET_AUTH_TOKEN", "observer-token")],
    );
    assert_eq!(refused, 9, "{output}");
    assert!(output.contains("role observer (credential `grafana`)"), "{output}");

    // Another ingestor's credential cannot claim the channel: it does not start there.
    let mut intruder = spawn_logged(
        "framefleet-ingestor",
        &common(&[
            format!("--ingestor-id=intruder-{}", names.suffix),
            format!("--channel={channel}=synthetic://64x48@10"),
            "--max-frames=30".to_owned(),
            "--pace=max".to_owned(),
        ]),
        &[("FRAMEFLEET_AUTH_TOKEN", "intruder-token")],
        &dir.join("intruder.log"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !log("intruder.log").contains("may not call ChannelService/RegisterChannel") {
        assert!(
            Instant::now() < deadline,
            "no refusal in the intruder's log: {}",
            log("intruder.log")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        log("intruder.log").contains(&format!("is ingestor `{ingestor_id}`'s")),
        "{}",
        log("intruder.log")
    );
    let _ = intruder.kill();
    let _ = intruder.wait();
    let (status, output) = cli(
        &address,
        &["--json", "channels", "get", &channel],
        &[("FRAMEFLEET_AUTH_TOKEN", "observer-token")],
    );
    assert_eq!(status, 0, "{output}");
    assert!(output.contains(&format!("\"owner\":\"{ingestor_id}\"")), "{output}");
    // The owner never changes; a claim would move `ingestor_id` to the intruder.
    assert!(
        !output.contains("\"ingestor_id\":\"intruder-"),
        "the intruder claimed the channel: {output}"
    );

    stop(worker);
    coordinator.stop().await.expect("clean stop");
    std::fs::remove_dir_all(&dir).expect("clean up");
}
