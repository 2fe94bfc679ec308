//! The coordinator binary refuses to start, quickly and with an error that names the
//! problem and the fix, when a dependency is unreachable or its port is taken.

use std::net::TcpListener;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A loopback port with nothing listening on it.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    port
}

fn run_coordinator(args: &[&str]) -> (Output, Duration) {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_framefleet-coordinator"))
        .args(args)
        .args(["--request-timeout-secs", "2"])
        // Tests may run with the local infrastructure's variables set; these cases must not use them.
        .env_remove("FRAMEFLEET_ETCD_ENDPOINTS")
        .env_remove("FRAMEFLEET_KAFKA_BROKERS")
        .env("RUST_LOG", "off")
        .output()
        .expect("run the coordinator binary");
    (output, started.elapsed())
}

/// The real etcd and broker of `deploy/local/infra.sh`, as (etcd endpoints, Kafka brokers).
fn infrastructure() -> (String, String) {
    let infrastructure = framefleet_test_support::Infrastructure::required();
    (infrastructure.etcd_endpoints, infrastructure.kafka_brokers)
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn unreachable_etcd_is_a_clear_error_not_a_hang() {
    let etcd = format!("http://127.0.0.1:{}", closed_port());
    let kafka = format!("127.0.0.1:{}", closed_port());
    let (output, elapsed) = run_coordinator(&[
        "--listen",
        "127.0.0.1:0",
        "--etcd-endpoints",
        &etcd,
        "--kafka-brokers",
        &kafka,
    ]);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(message.contains("etcd") && message.contains("infra.sh up"), "{message}");
    assert!(!message.contains("panicked"), "{message}");
    assert!(elapsed < Duration::from_secs(15), "took {elapsed:?}");
}

#[test]
fn port_already_taken_is_named() {
    let (etcd, kafka) = infrastructure();
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = taken.local_addr().expect("addr").to_string();
    let prefix = format!("/framefleet-test/port-taken-{}/", std::process::id());
    let (output, elapsed) = run_coordinator(&[
        "--listen",
        &address,
        "--etcd-endpoints",
        &etcd,
        "--etcd-prefix",
        &prefix,
        "--kafka-brokers",
        &kafka,
    ]);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(
        message.contains(&address) && message.contains("already in use"),
        "{message}"
    );
    assert!(elapsed < Duration::from_secs(20), "took {elapsed:?}");
}

#[test]
fn unreachable_broker_is_a_clear_error_not_a_hang() {
    let (etcd, _) = infrastructure();
    let kafka = format!("127.0.0.1:{}", closed_port());
    let prefix = format!("/framefleet-test/no-broker-{}/", std::process::id());
    let (output, elapsed) = run_coordinator(&[
        "--listen",
        "127.0.0.1:0",
        "--etcd-endpoints",
        &etcd,
        "--etcd-prefix",
        &prefix,
        "--kafka-brokers",
        &kafka,
    ]);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(
        message.contains(&kafka) && message.contains("--kafka-brokers"),
        "{message}"
    );
    assert!(elapsed < Duration::from_secs(20), "took {elapsed:?}");
}

/// Tracing export must never be what stops a service: with an OTLP endpoint that nothing
/// listens on, the coordinator still starts and serves.
#[test]
fn an_unreachable_otlp_endpoint_is_harmless() {
    let (etcd, kafka) = infrastructure();
    let ready_file = std::env::temp_dir().join(format!("framefleet-otlp-ready-{}", std::process::id()));
    std::fs::remove_file(&ready_file).ok();
    let prefix = format!("/framefleet-test/otlp-{}/", std::process::id());
    let mut child = Command::new(env!("CARGO_BIN_EXE_framefleet-coordinator"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--etcd-endpoints",
            &etcd,
            "--etcd-prefix",
            &prefix,
            "--kafka-brokers",
            &kafka,
        ])
        .arg("--ready-file")
        .arg(&ready_file)
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{}", closed_port()),
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the coordinator");
    let deadline = Instant::now() + Duration::from_secs(20);
    let address = loop {
        if let Ok(text) = std::fs::read_to_string(&ready_file)
            && !text.is_empty()
        {
            break text;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the coordinator exited with {status} instead of serving");
        }
        assert!(Instant::now() < deadline, "the coordinator did not become ready");
        std::thread::sleep(Duration::from_millis(100));
    };
    let connected = std::net::TcpStream::connect(address.trim());
    child.kill().ok();
    child.wait().ok();
    std::fs::remove_file(&ready_file).ok();
    assert!(connected.is_ok(), "the coordinator accepts connections at {address}");
}
