//! The ingestor binary fails fast, with a one-line reason and a non-zero exit, when its
//! coordinator cannot be reached or its arguments are wrong.

use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn unreachable_coordinator_is_named() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let coordinator = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_framefleet-ingestor"))
        .args([
            "--coordinator",
            &coordinator,
            "--request-timeout-secs",
            "2",
            "--channel",
            "cam=/nonexistent.avi",
        ])
        .env("RUST_LOG", "off")
        .output()
        .expect("run the ingestor");
    assert!(!output.status.success());
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(
        message.contains(&coordinator) && message.contains("--coordinator"),
        "{message}"
    );
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[test]
fn malformed_channel_argument_is_a_usage_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_framefleet-ingestor"))
        .args(["--channel", "no-equals-sign"])
        .output()
        .expect("run the ingestor");
    assert_eq!(output.status.code(), Some(2), "clap's usage error code");
    assert!(String::from_utf8_lossy(&output.stderr).contains("ID=SOURCE"));
}
