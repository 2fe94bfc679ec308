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
    let Ok(etcd) = std::env::var("FRAMEFLEET_ETCD_ENDPOINTS") else {
        panic!("FRAMEFLEET_ETCD_ENDPOINTS is not set: run through scripts/test.sh");
    };
    let Ok(kafka) = std::env::var("FRAMEFLEET_KAFKA_BROKERS") else {
        panic!("FRAMEFLEET_KAFKA_BROKERS is not set: run through scripts/test.sh");
    };
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
    let Ok(etcd) = std::env::var("FRAMEFLEET_ETCD_ENDPOINTS") else {
        panic!("FRAMEFLEET_ETCD_ENDPOINTS is not set: run through scripts/test.sh");
    };
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
