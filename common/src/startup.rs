//! Helpers for the life of a process: the common `main` ([`run_service`]), announcing a
//! bound address so that scripts and tests never guess ports, and wall-clock time.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot write ready file {path}: {source}")]
    ReadyFile { path: String, source: std::io::Error },
}

/// Writes the bound address to `path` atomically (write then rename), so a reader never
/// sees a half-written address.
pub fn write_ready_file(path: &Path, address: SocketAddr) -> Result<(), StartupError> {
    let temporary = path.with_extension("tmp");
    let to_error = |source| StartupError::ReadyFile {
        path: path.display().to_string(),
        source,
    };
    std::fs::write(&temporary, address.to_string()).map_err(to_error)?;
    std::fs::rename(&temporary, path).map_err(to_error)
}

pub fn unix_time_us() -> i64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_micros()).unwrap_or(i64::MAX)
}

/// Another binary of this build, `name`, beside this program: cargo puts a profile's binaries
/// in one directory, and test binaries in its `deps/`. `None` when there is none.
pub fn sibling_binary(name: &str) -> Option<std::path::PathBuf> {
    let this = std::env::current_exe().ok()?;
    let directory = this.parent()?;
    [Some(directory), directory.parent()]
        .into_iter()
        .flatten()
        .map(|candidate| candidate.join(name))
        .find(|candidate| candidate.is_file())
}

/// A loopback port nothing listens on right now, for a process that must be told its port
/// (tests, scripts). Another process may take it before it is used; bind port 0 where the
/// program itself can.
pub fn free_loopback_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `<host name>-<pid>`: a default process id that stays unique where every process is pid 1
/// (containers: the host name is the container's or pod's name).
pub fn host_process_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{host}-{}", std::process::id())
}

pub fn unix_time_ms() -> i64 {
    unix_time_us() / 1000
}

/// The whole life of a service binary: configuration (flags, env, file), telemetry,
/// signal handling, then `run`. Every failure becomes one `error:` line on stderr and a
/// non-zero exit status; usage errors exit with 2.
pub async fn run_service<C, F, Fut>(service_name: &'static str, run: F) -> std::process::ExitCode
where
    C: clap::CommandFactory + clap::FromArgMatches,
    F: FnOnce(C, tokio_util::sync::CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<std::process::ExitCode>>,
{
    let config = match crate::config::parse::<C>() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return std::process::ExitCode::from(2);
        }
    };
    let _telemetry = match crate::telemetry::init(service_name) {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("error: cannot start telemetry: {error:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let shutdown = crate::shutdown::install_signal_handlers();
    match run(config, shutdown).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
