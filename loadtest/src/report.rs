//! What a load run leaves behind: latency statistics, the machine it ran on, the progress
//! line while it runs.

use serde::Serialize;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Percentiles of a set of latencies; the samples stay for the histogram plot.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LatencySummary {
    pub count: usize,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    #[serde(skip)]
    pub samples_ms: Vec<f64>,
}

impl LatencySummary {
    pub fn from_samples(mut samples_ms: Vec<f64>) -> Self {
        samples_ms.retain(|sample| sample.is_finite());
        samples_ms.sort_by(f64::total_cmp);
        if samples_ms.is_empty() {
            return Self::default();
        }
        // Nearest rank: the smallest sample with at least q of the samples at or below it.
        let percentile = |q: f64| {
            let rank = (q * samples_ms.len() as f64).ceil() as usize;
            samples_ms[rank.clamp(1, samples_ms.len()) - 1]
        };
        Self {
            count: samples_ms.len(),
            mean_ms: samples_ms.iter().sum::<f64>() / samples_ms.len() as f64,
            p50_ms: percentile(0.50),
            p95_ms: percentile(0.95),
            p99_ms: percentile(0.99),
            max_ms: samples_ms[samples_ms.len() - 1],
            samples_ms,
        }
    }
}

/// The machine and build a run's figures belong to.
#[derive(Debug, Clone, Serialize)]
pub struct MachineDescription {
    pub cpu_model: String,
    pub cpus: usize,
    pub memory_gib: f64,
    pub os: String,
    pub kernel: String,
    /// `dev` (the workspace's dev profile: opt-level 1 for framefleet, 2 for dependencies) or
    /// `release`.
    pub build_profile: &'static str,
    /// The broker's storage as `deploy/local/infra.sh` started it (memory or postgres).
    pub broker_storage: String,
    pub broker: String,
    pub git_commit: String,
}

impl MachineDescription {
    pub fn collect(broker_storage: &str) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|line| line.strip_prefix("model name").and_then(|rest| rest.split(':').nth(1)))
            .map_or_else(|| "unknown".to_owned(), |model| model.trim().to_owned());
        let memory_gib = std::fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find_map(|line| line.strip_prefix("MemTotal:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
        let os = std::fs::read_to_string("/etc/os-release")
            .unwrap_or_default()
            .lines()
            .find_map(|line| line.strip_prefix("PRETTY_NAME="))
            .map_or_else(|| "unknown".to_owned(), |name| name.trim_matches('"').to_owned());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| "unknown".to_owned(), |release| release.trim().to_owned());
        let command_output = |program: &str, args: &[&str]| {
            std::process::Command::new(program)
                .args(args)
                .output()
                .ok()
                .filter(|output| output.status.success())
                .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
                .filter(|text| !text.is_empty())
                .unwrap_or_else(|| "unknown".to_owned())
        };
        Self {
            cpu_model,
            cpus: std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
            memory_gib: (memory_gib * 10.0).round() / 10.0,
            os,
            kernel,
            build_profile: if cfg!(debug_assertions) { "dev" } else { "release" },
            broker_storage: broker_storage.to_owned(),
            broker: command_output("nisshi", &["--version"]),
            git_commit: command_output("git", &["rev-parse", "--short", "HEAD"]),
        }
    }

    /// One line for figure captions and tables.
    pub fn label(&self) -> String {
        format!(
            "{} CPUs ({}), broker storage: {}, {} build",
            self.cpus, self.cpu_model, self.broker_storage, self.build_profile
        )
    }
}

/// A status line that rewrites itself on a terminal and prints every few seconds into a log.
pub struct Progress {
    terminal: bool,
    last_logged: Mutex<Option<Instant>>,
}

impl Default for Progress {
    fn default() -> Self {
        Self {
            terminal: std::io::stderr().is_terminal(),
            last_logged: Mutex::new(None),
        }
    }
}

impl Progress {
    const LOG_EVERY: Duration = Duration::from_secs(5);

    pub fn update(&self, line: &str) {
        if self.terminal {
            eprint!("\r\x1b[K{line}");
            return;
        }
        let Ok(mut last) = self.last_logged.lock() else {
            return;
        };
        if last.is_none_or(|at| at.elapsed() >= Self::LOG_EVERY) {
            eprintln!("{line}");
            *last = Some(Instant::now());
        }
    }

    /// Ends the status line with a line that stays.
    pub fn finish(&self, line: &str) {
        if self.terminal {
            eprintln!("\r\x1b[K{line}");
        } else {
            eprintln!("{line}");
        }
        if let Ok(mut last) = self.last_logged.lock() {
            *last = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let summary = LatencySummary::from_samples((1..=100).rev().map(f64::from).collect());
        assert_eq!(summary.count, 100);
        assert_eq!(summary.p50_ms, 50.0);
        assert_eq!(summary.p95_ms, 95.0);
        assert_eq!(summary.p99_ms, 99.0);
        assert_eq!(summary.max_ms, 100.0);
        assert_eq!(summary.mean_ms, 50.5);
        let one = LatencySummary::from_samples(vec![7.0, f64::NAN]);
        assert_eq!((one.count, one.p50_ms, one.p99_ms), (1, 7.0, 7.0));
        assert_eq!(LatencySummary::from_samples(Vec::new()).count, 0);
    }
}
