//! A consumer measured as a process of its own: started pinned to CPU cores with `taskset`,
//! or inside a CPU quota (a cgroup of its own, [`CpuQuota`]), its CPU time (user + system, every thread, from `/proc/<pid>/stat`) sampled while
//! it runs, so that the CPU it spent within any window of its run can be read afterwards.
//! Output goes to a log file; nothing here looks at what the process does.

use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// `/proc` reports CPU time in USER_HZ ticks, 100 a second on every Linux ABI we run on.
const TICKS_PER_SECOND: u64 = 100;
/// A tenth of a tick's worth of error at the window's edges, for a few hundred samples a run.
const SAMPLE_EVERY: Duration = Duration::from_millis(10);

/// The process's CPU time, seconds, at a moment (unix microseconds).
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    pub unix_us: i64,
    pub cpu_seconds: f64,
}

/// CPU samples of one process, in time order.
#[derive(Debug, Clone, Default)]
pub struct CpuProfile {
    samples: Vec<CpuSample>,
}

impl CpuProfile {
    pub fn new(samples: Vec<CpuSample>) -> Self {
        debug_assert!(samples.windows(2).all(|pair| pair[0].unix_us <= pair[1].unix_us));
        Self { samples }
    }

    /// CPU seconds at `unix_us`, linear between the samples around it (clamped to the first
    /// and last sample outside them).
    pub fn cpu_at(&self, unix_us: i64) -> f64 {
        let next_index = self.samples.partition_point(|sample| sample.unix_us < unix_us);
        let previous = next_index.checked_sub(1).map(|index| self.samples[index]);
        match (previous, self.samples.get(next_index).copied()) {
            (Some(before), Some(after)) if after.unix_us > before.unix_us => {
                let share = (unix_us - before.unix_us) as f64 / (after.unix_us - before.unix_us) as f64;
                before.cpu_seconds + share * (after.cpu_seconds - before.cpu_seconds)
            }
            (_, Some(sample)) | (Some(sample), None) => sample.cpu_seconds,
            (None, None) => 0.0,
        }
    }

    /// CPU seconds spent from `from_us` to `to_us`.
    pub fn cpu_between(&self, from_us: i64, to_us: i64) -> f64 {
        self.cpu_at(to_us) - self.cpu_at(from_us)
    }
}

/// utime + stime of `/proc/<pid>/stat`; None once the process is gone.
fn read_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from its closing one.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().collect();
    // fields[0] is field 3 (state), so utime (field 14) and stime (15) are at 11 and 12.
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some((user + system) as f64 / TICKS_PER_SECOND as f64)
}

pub struct PinnedProcess {
    label: String,
    log: PathBuf,
    child: tokio::process::Child,
    stop_sampling: Arc<AtomicBool>,
    sampler: Option<std::thread::JoinHandle<Vec<CpuSample>>>,
}

impl PinnedProcess {
    /// Starts `program args…` on the CPUs of `cpu_list` (taskset's syntax: `0`, `0-3`), its
    /// stdout and stderr into `log`.
    pub fn spawn(label: &str, cpu_list: &str, program: &Path, args: &[String], log: &Path) -> anyhow::Result<Self> {
        Self::spawn_with(label, &["taskset", "--cpu-list", cpu_list], program, args, log)
    }

    /// Starts `program args…` inside `quota`'s cgroup, from its first instruction on.
    pub fn spawn_in(
        label: &str,
        quota: &CpuQuota,
        program: &Path,
        args: &[String],
        log: &Path,
    ) -> anyhow::Result<Self> {
        let procs = quota.procs_file();
        let procs = procs.to_string_lossy();
        // The shell moves itself into the group, then becomes the program.
        Self::spawn_with(
            label,
            &["sh", "-c", "echo $$ > \"$0\" && exec \"$@\"", &procs],
            program,
            args,
            log,
        )
    }

    /// Starts `launcher… program args…`; the launcher must exec the program, so the pid is the
    /// program's.
    fn spawn_with(label: &str, launcher: &[&str], program: &Path, args: &[String], log: &Path) -> anyhow::Result<Self> {
        let log_file = std::fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        let child = tokio::process::Command::new(launcher[0])
            .args(&launcher[1..])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {} under {}", program.display(), launcher[0]))?;
        let pid = child.id().context("the process exited at once")?;
        let stop_sampling = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&stop_sampling);
        let sampler = std::thread::Builder::new()
            .name(format!("cpu-{label}"))
            .spawn(move || {
                let mut samples = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let Some(cpu_seconds) = read_cpu_seconds(pid) else {
                        break;
                    };
                    samples.push(CpuSample {
                        unix_us: framefleet_common::startup::unix_time_us(),
                        cpu_seconds,
                    });
                    std::thread::sleep(SAMPLE_EVERY);
                }
                samples
            })?;
        Ok(Self {
            label: label.to_owned(),
            log: log.to_owned(),
            child,
            stop_sampling,
            sampler: Some(sampler),
        })
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Whether the process has exited successfully; an error when it failed (it will not
    /// deliver what is awaited).
    pub fn has_exited(&mut self) -> anyhow::Result<bool> {
        match self.child.try_wait()? {
            Some(status) if !status.success() => {
                anyhow::bail!("{} exited with {status}; see {}", self.label, self.log.display())
            }
            status => Ok(status.is_some()),
        }
    }

    /// Stops sampling and returns what was sampled.
    pub fn cpu_profile(&mut self) -> CpuProfile {
        self.stop_sampling.store(true, Ordering::Relaxed);
        let samples = self
            .sampler
            .take()
            .and_then(|sampler| sampler.join().ok())
            .unwrap_or_default();
        CpuProfile::new(samples)
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub async fn wait(mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let status = tokio::time::timeout(timeout, self.child.wait())
            .await
            .with_context(|| format!("{} did not exit within {timeout:?}", self.label))??;
        anyhow::ensure!(
            status.success(),
            "{} exited with {status}; see {}",
            self.label,
            self.log.display()
        );
        Ok(status)
    }

    /// SIGTERM (the graceful stop: drain, commit, leave the group), then SIGKILL after `grace`.
    pub async fn terminate(mut self, grace: Duration) -> anyhow::Result<ExitStatus> {
        if let Some(pid) = self.child.id() {
            // The shell's kill: no signal crate, and `unsafe` is forbidden here.
            tokio::process::Command::new("sh")
                .args(["-c", "kill -TERM \"$1\"", "sh", &pid.to_string()])
                .status()
                .await?;
        }
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => Ok(status?),
            Err(_) => {
                self.child.start_kill()?;
                Ok(self.child.wait().await?)
            }
        }
    }
}

/// A CPU quota for the processes started in it: a cgroup of its own with `cores` CPUs' worth
/// of time per period, on the cgroup v2 `cpu` controller (`cpu.max`) where the machine has
/// it, else on the v1 `cpu` controller (`cpu.cfs_quota_us`). Needs root; the group is removed
/// when this is dropped (after its processes exited).
#[derive(Debug)]
pub struct CpuQuota {
    directory: PathBuf,
}

/// The scheduler period the quota is a share of: the kernel's default, 100 ms.
const QUOTA_PERIOD_US: u64 = 100_000;

impl CpuQuota {
    pub fn create(name: &str, cores: f64) -> anyhow::Result<Self> {
        anyhow::ensure!(cores > 0.0, "a CPU quota must be positive, got {cores}");
        let quota_us = ((cores * QUOTA_PERIOD_US as f64).round() as u64).max(1_000);
        let v2_controllers = std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers").unwrap_or_default();
        let (directory, file, value) = if v2_controllers.split_whitespace().any(|controller| controller == "cpu") {
            (
                Path::new("/sys/fs/cgroup").join(name),
                "cpu.max",
                format!("{quota_us} {QUOTA_PERIOD_US}"),
            )
        } else {
            (
                Path::new("/sys/fs/cgroup/cpu").join(name),
                "cpu.cfs_quota_us",
                quota_us.to_string(),
            )
        };
        std::fs::create_dir_all(&directory).with_context(|| {
            format!(
                "cannot create the cgroup {} for a CPU quota (needs root and a cgroup CPU controller)",
                directory.display()
            )
        })?;
        let quota = Self { directory };
        if file == "cpu.cfs_quota_us" {
            std::fs::write(quota.directory.join("cpu.cfs_period_us"), QUOTA_PERIOD_US.to_string())
                .context("cannot set the cgroup's CPU period")?;
        }
        std::fs::write(quota.directory.join(file), &value)
            .with_context(|| format!("cannot write {value} to {}", quota.directory.join(file).display()))?;
        Ok(quota)
    }

    pub fn procs_file(&self) -> PathBuf {
        self.directory.join("cgroup.procs")
    }
}

impl Drop for CpuQuota {
    fn drop(&mut self) {
        // Fails while a process is still inside; a leftover empty group costs nothing.
        let _ = std::fs::remove_dir(&self.directory);
    }
}

/// Where a process's output goes: `$FRAMEFLEET_RUN_DIR/logs/<name>` (the system's temporary
/// directory when no run directory is set).
pub fn log_path(name: &str) -> anyhow::Result<PathBuf> {
    let directory = std::env::var_os("FRAMEFLEET_RUN_DIR")
        .map_or_else(std::env::temp_dir, PathBuf::from)
        .join("logs");
    std::fs::create_dir_all(&directory).with_context(|| format!("cannot create {}", directory.display()))?;
    Ok(directory.join(name))
}

/// The `framefleet-worker` binary of this build: cargo puts a profile's binaries in one
/// directory, and a test binary sits in its `deps/`.
pub fn worker_binary() -> anyhow::Result<PathBuf> {
    framefleet_common::startup::sibling_binary("framefleet-worker").with_context(|| {
        format!(
            "no framefleet-worker beside {}: build it with the same profile (`cargo build -p framefleet-worker`; scripts/loadtest.sh does)",
            std::env::current_exe().unwrap_or_default().display()
        )
    })
}

impl Drop for PinnedProcess {
    fn drop(&mut self) {
        self.stop_sampling.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_between_interpolates_between_samples() {
        let profile = CpuProfile::new(vec![
            CpuSample {
                unix_us: 1_000,
                cpu_seconds: 1.0,
            },
            CpuSample {
                unix_us: 2_000,
                cpu_seconds: 2.0,
            },
            CpuSample {
                unix_us: 4_000,
                cpu_seconds: 2.5,
            },
        ]);
        assert_eq!(profile.cpu_at(500), 1.0, "before the first sample");
        assert_eq!(profile.cpu_at(1_500), 1.5);
        assert_eq!(profile.cpu_at(3_000), 2.25);
        assert_eq!(profile.cpu_at(9_000), 2.5, "after the last sample");
        assert_eq!(profile.cpu_between(1_500, 3_000), 0.75);
        assert_eq!(CpuProfile::default().cpu_at(1), 0.0);
    }

    #[test]
    fn a_process_cpu_time_is_read_from_proc() {
        let seconds = read_cpu_seconds(std::process::id()).expect("this process has a stat file");
        assert!(seconds >= 0.0);
        assert_eq!(read_cpu_seconds(u32::MAX), None);
    }
}
