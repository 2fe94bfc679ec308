//! Helpers for the first seconds of a process: deadlines on dependencies, and announcing a
//! bound address so that scripts and tests never guess ports.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("{what} did not answer within {seconds} s; {hint}")]
    Deadline { what: String, seconds: u64, hint: String },
    #[error("cannot write ready file {path}: {source}")]
    ReadyFile { path: String, source: std::io::Error },
}

/// Runs `future` with a deadline so that an unreachable dependency becomes an error naming
/// it and the fix, not a hang.
pub async fn with_deadline<T>(
    what: &str,
    hint: &str,
    deadline: Duration,
    future: impl Future<Output = T>,
) -> Result<T, StartupError> {
    tokio::time::timeout(deadline, future)
        .await
        .map_err(|_| StartupError::Deadline {
            what: what.to_owned(),
            seconds: deadline.as_secs(),
            hint: hint.to_owned(),
        })
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

pub fn unix_time_ms() -> i64 {
    unix_time_us() / 1000
}
