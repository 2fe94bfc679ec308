//! The README's grpcurl and CLI examples, run as written against a coordinator on real etcd
//! and Kafka, so the documentation cannot drift from the API.

use clap::Parser;
use std::path::Path;
use std::process::Command;
use tokio_util::sync::CancellationToken;

const START: &str = "<!-- ci:examples -->";
const END: &str = "<!-- /ci:examples -->";

/// The shell lines of the fenced blocks between the markers.
fn example_script(readme: &str) -> String {
    let start = readme.find(START).expect("README has the examples marker");
    let end = readme[start..].find(END).expect("README closes the examples marker") + start;
    let mut script = String::new();
    let mut in_fence = false;
    for line in readme[start..end].lines() {
        if line.starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            script.push_str(line);
            script.push('\n');
        }
    }
    assert!(!script.trim().is_empty(), "no commands between the markers");
    script
}

#[tokio::test(flavor = "multi_thread")]
async fn readme_examples_run_against_a_real_coordinator() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).expect("README");
    let script = example_script(&readme);

    let etcd =
        std::env::var("FRAMEFLEET_ETCD_ENDPOINTS").expect("FRAMEFLEET_ETCD_ENDPOINTS: run through scripts/test.sh");
    let kafka =
        std::env::var("FRAMEFLEET_KAFKA_BROKERS").expect("FRAMEFLEET_KAFKA_BROKERS: run through scripts/test.sh");
    let prefix = format!("/framefleet-test/readme-{}/", uuid::Uuid::new_v4().simple());
    let config = framefleet_coordinator::config::CoordinatorConfig::try_parse_from([
        "framefleet-coordinator",
        "--listen",
        "127.0.0.1:0",
        "--etcd-endpoints",
        &etcd,
        "--kafka-brokers",
        &kafka,
        "--etcd-prefix",
        &prefix,
    ])
    .expect("config");
    let shutdown = CancellationToken::new();
    let coordinator = framefleet_coordinator::start(config, shutdown.clone())
        .await
        .expect("coordinator");
    let address = coordinator.local_addr.to_string();

    let cli = Path::new(env!("CARGO_BIN_EXE_framefleet"));
    let path = format!(
        "{}:{}",
        cli.parent().expect("binary directory").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = tokio::task::spawn_blocking(move || {
        Command::new("bash")
            .args(["-euo", "pipefail", "-c", &script])
            .env("COORD", &address)
            .env("PATH", path)
            .env_remove("FRAMEFLEET_AUTH_TOKEN")
            .output()
            .expect("run bash (is grpcurl installed? scripts/setup.sh installs it)")
    })
    .await
    .expect("script task");
    shutdown.cancel();
    coordinator.wait().await.expect("coordinator stops");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "README examples failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    // The calls really happened: the listing and status show what the examples registered.
    assert!(stdout.contains("framefleet.v1.ChannelService"), "{stdout}");
    assert!(stdout.contains("framefleet.pool."), "{stdout}");
    assert!(stdout.contains("framefleet.fanout.detect.door"), "{stdout}");
    assert!(stdout.contains("\"status\": \"SERVING\""), "{stdout}");
}
