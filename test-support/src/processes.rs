//! framefleet's own binaries as real processes, for tests of what only a process shows (its
//! arguments, its logs, its exit code).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The path of `name` (framefleet-coordinator, framefleet-ingestor, framefleet-worker,
/// framefleet) built beside the running test.
pub fn binary(name: &str) -> PathBuf {
    framefleet_common::startup::sibling_binary(name).unwrap_or_else(|| panic!("{name} of this build"))
}

/// Starts `program args…` with `env` and debug logging, stdout and stderr into `log`.
pub fn spawn_logged(program: &str, args: &[String], env: &[(&str, &str)], log: &Path) -> Child {
    let file = std::fs::File::create(log).expect("log file");
    Command::new(binary(program))
        .args(args)
        .env_remove("FRAMEFLEET_AUTH_TOKEN")
        .envs(env.iter().copied())
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("log file"))
        .stderr(file)
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {program}: {error}"))
}

/// The running process's arguments, as `/proc` shows them to every local user.
pub fn argv(child: &Child) -> String {
    std::fs::read(format!("/proc/{}/cmdline", child.id()))
        .map(|bytes| String::from_utf8_lossy(&bytes).replace('\0', " "))
        .unwrap_or_default()
}

/// Stops `child` with SIGTERM and waits up to a minute for it to exit.
pub fn stop(mut child: Child) {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "a process did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `framefleet --coordinator COORDINATOR args…` with `env` (and no token from the test's own
/// environment): its exit code, and stdout and stderr together.
pub fn cli(coordinator: &str, args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let output = Command::new(binary("framefleet"))
        .args(["--coordinator", coordinator])
        .args(args)
        .env_remove("FRAMEFLEET_AUTH_TOKEN")
        .envs(env.iter().copied())
        .output()
        .expect("run the CLI");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), text)
}
