//! Scenario files: what `framefleet-loadtest` runs. One TOML file per scenario under
//! `loadtest/scenarios/`, its `kind` says which experiment it is:
//!
//! - `lag`: the paper's experiment. Cameras generate in real time for `generation_secs`
//!   while `workers` process; accumulate / consume / lag are sampled every second until the
//!   backlog is drained.
//! - `scaling`: the same backlog drained by 1, 2, 4… workers; consume rate and efficiency
//!   against linear.
//! - `baselines`: a backlog of real video frames drained by framefleet's worker and by a
//!   hand-written Python/OpenCV consumer doing the same work, each alone on one core; raw
//!   rdkafka moving the same records as a transport-only line.
//!
//! Every camera of a scenario writes to its own topic (the dedicated topic strategy), so
//! `cameras.count` is also the number of topics.

use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read scenario {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("scenario {path} is not valid: {source}")]
    Parse { path: PathBuf, source: toml::de::Error },
    #[error("scenario {path}: {reason}")]
    Invalid { path: PathBuf, reason: InvalidScenario },
    #[error("no scenario files (*.toml) in {0}")]
    Empty(PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    Raw,
    Jpeg,
    Png,
}

impl Encoding {
    /// The ingestor's `--encoding` value.
    pub fn as_arg(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Jpeg => "jpeg",
            Self::Png => "png",
        }
    }
}

/// A fleet of identical synthetic cameras.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cameras {
    /// Cameras, and so topics.
    pub count: u32,
    /// Frames per second of each camera.
    pub fps: f64,
    pub width: u32,
    pub height: u32,
    #[serde(default = "default_encoding")]
    pub encoding: Encoding,
}

fn default_encoding() -> Encoding {
    Encoding::Jpeg
}

impl Cameras {
    pub fn describe(&self) -> String {
        format!(
            "{} × {}×{} {} @ {} fps",
            self.count,
            self.width,
            self.height,
            self.encoding.as_arg(),
            self.fps
        )
    }

    pub fn total_fps(&self) -> f64 {
        f64::from(self.count) * self.fps
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LagScenario {
    pub name: String,
    pub title: String,
    pub workers: u32,
    /// Seconds the cameras generate (the paper: 60).
    pub generation_secs: u64,
    /// Longest wait for the backlog to drain once generation stopped.
    #[serde(default = "default_drain_timeout")]
    pub drain_timeout_secs: u64,
    /// Extra `framefleet-worker` arguments, e.g. ["--analysis-max-side", "0"].
    #[serde(default)]
    pub worker_args: Vec<String>,
    /// When set, each worker is a process of its own (the `framefleet-worker` binary) limited
    /// to this many CPUs by a cgroup CPU quota, e.g. 0.1: N small workers on one machine stand
    /// for N nodes. Unset: workers run in the load test's process, unlimited.
    #[serde(default)]
    pub worker_cpu_quota: Option<f64>,
    pub cameras: Cameras,
}

/// What makes a scenario file unusable, in the words of its fields.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidScenario(String);

impl From<&str> for InvalidScenario {
    fn from(reason: &str) -> Self {
        Self(reason.to_owned())
    }
}

impl From<String> for InvalidScenario {
    fn from(reason: String) -> Self {
        Self(reason)
    }
}

fn check_quota(quota: Option<f64>) -> Result<(), InvalidScenario> {
    match quota {
        Some(cores) if !(0.01..=1024.0).contains(&cores) => {
            Err(format!("worker_cpu_quota {cores} is outside [0.01, 1024] CPUs").into())
        }
        _ => Ok(()),
    }
}

fn default_drain_timeout() -> u64 {
    600
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScalingScenario {
    pub name: String,
    pub title: String,
    /// Worker counts to measure, e.g. [1, 2, 4]; the first is the base of the efficiency.
    pub workers: Vec<u32>,
    /// Frames each camera writes before the workers start.
    pub frames_per_camera: u64,
    /// As in a lag scenario: each worker a process of its own limited to this many CPUs.
    #[serde(default)]
    pub worker_cpu_quota: Option<f64>,
    pub cameras: Cameras,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaselineScenario {
    pub name: String,
    pub title: String,
    /// Frames of the backlog every consumer drains.
    pub frames: u64,
    /// The video the ingestor replays (looped) into the backlog.
    pub video: PathBuf,
    /// One camera: the size and encoding the ingestor gives the video's frames; its fps is
    /// only declared, the backlog is written as fast as the broker takes it.
    pub cameras: Cameras,
}

impl BaselineScenario {
    /// What the backlog holds, e.g. `vtest.avi → 640×480 jpeg`.
    pub fn source(&self) -> String {
        format!(
            "{} → {}×{} jpeg",
            self.video.file_name().map_or_else(
                || self.video.display().to_string(),
                |name| name.to_string_lossy().into_owned()
            ),
            self.cameras.width,
            self.cameras.height
        )
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Scenario {
    Lag(LagScenario),
    Scaling(ScalingScenario),
    Baselines(BaselineScenario),
    /// The detector's baselines: the same backlog, detection on every frame
    /// (`crate::detect_baseline`).
    Detection(BaselineScenario),
}

impl Scenario {
    pub fn name(&self) -> &str {
        match self {
            Self::Lag(scenario) => &scenario.name,
            Self::Scaling(scenario) => &scenario.name,
            Self::Baselines(scenario) | Self::Detection(scenario) => &scenario.name,
        }
    }

    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, ScenarioError> {
        let scenario: Self = toml::from_str(text).map_err(|source| ScenarioError::Parse {
            path: path.to_owned(),
            source,
        })?;
        scenario.validate().map_err(|reason| ScenarioError::Invalid {
            path: path.to_owned(),
            reason,
        })?;
        Ok(scenario)
    }

    /// The `*.toml` files of a directory in name order, or the given files as they are.
    pub fn load_all(paths: &[PathBuf]) -> Result<Vec<Self>, ScenarioError> {
        let mut files = Vec::new();
        for path in paths {
            if path.is_dir() {
                let entries = std::fs::read_dir(path).map_err(|source| ScenarioError::Read {
                    path: path.clone(),
                    source,
                })?;
                let mut found: Vec<PathBuf> = entries
                    .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                    .filter(|file| file.extension().is_some_and(|extension| extension == "toml"))
                    .collect();
                if found.is_empty() {
                    return Err(ScenarioError::Empty(path.clone()));
                }
                found.sort();
                files.extend(found);
            } else {
                files.push(path.clone());
            }
        }
        files.iter().map(|file| Self::load(file)).collect()
    }

    fn validate(&self) -> Result<(), InvalidScenario> {
        let (name, cameras) = match self {
            Self::Lag(scenario) => {
                if scenario.workers == 0 {
                    return Err("workers must be at least 1".into());
                }
                if scenario.generation_secs == 0 {
                    return Err("generation_secs must be at least 1".into());
                }
                check_quota(scenario.worker_cpu_quota)?;
                (&scenario.name, &scenario.cameras)
            }
            Self::Scaling(scenario) => {
                if scenario.workers.is_empty() || scenario.workers.contains(&0) {
                    return Err("workers must list worker counts of at least 1, e.g. [1, 2, 4]".into());
                }
                if scenario.frames_per_camera == 0 {
                    return Err("frames_per_camera must be at least 1".into());
                }
                check_quota(scenario.worker_cpu_quota)?;
                (&scenario.name, &scenario.cameras)
            }
            Self::Baselines(scenario) | Self::Detection(scenario) => {
                if scenario.cameras.count != 1 {
                    return Err("baselines run one camera (cameras.count = 1)".into());
                }
                if scenario.frames == 0 {
                    return Err("frames must be at least 1".into());
                }
                if scenario.video.as_os_str().is_empty() {
                    return Err("video must name a video file".into());
                }
                (&scenario.name, &scenario.cameras)
            }
        };
        // The name becomes file names and Kafka topic names.
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(format!("name `{name}` must be letters, digits, - and _").into());
        }
        if cameras.count == 0 || cameras.count > 256 {
            return Err(format!("cameras.count {} is outside 1–256", cameras.count).into());
        }
        if !(cameras.fps > 0.0 && cameras.fps <= 1000.0) {
            return Err(format!("cameras.fps {} is outside (0, 1000]", cameras.fps).into());
        }
        for (side, value) in [("width", cameras.width), ("height", cameras.height)] {
            if !(16..=8192).contains(&value) {
                return Err(format!("cameras.{side} {value} is outside 16–8192").into());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        Scenario::parse(Path::new("test.toml"), text)
    }

    #[test]
    fn the_shipped_scenarios_parse() {
        let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let scenarios = Scenario::load_all(&[directory]).expect("shipped scenarios are valid");
        let names: Vec<&str> = scenarios.iter().map(Scenario::name).collect();
        for expected in ["paper-1x1", "paper-2x2", "paper-4x4", "scaling", "baselines"] {
            assert!(names.contains(&expected), "{expected} missing from {names:?}");
        }
    }

    #[test]
    fn a_lag_scenario_reads_its_cameras() {
        let scenario = parse(
            r#"
            kind = "lag"
            name = "x"
            title = "X"
            workers = 2
            generation_secs = 5
            worker_args = ["--batch-size", "4"]
            [cameras]
            count = 2
            fps = 12.5
            width = 320
            height = 240
            "#,
        )
        .expect("valid");
        let Scenario::Lag(lag) = scenario else {
            panic!("a lag scenario")
        };
        assert_eq!(lag.cameras.encoding, Encoding::Jpeg);
        assert_eq!(lag.cameras.total_fps(), 25.0);
        assert_eq!(lag.drain_timeout_secs, 600);
        assert_eq!(lag.worker_args, ["--batch-size", "4"]);
    }

    #[test]
    fn mistakes_are_named() {
        let unknown_kind = parse("kind = \"speed\"\nname = \"x\"\ntitle = \"x\"").expect_err("invalid");
        assert!(unknown_kind.to_string().contains("speed"), "{unknown_kind}");
        let typo = parse(
            "kind = \"lag\"\nname = \"x\"\ntitle = \"x\"\nworkers = 1\ngeneration_secs = 1\n\
             [cameras]\ncount = 1\nfps = 5\nwidth = 64\nheight = 64\nencodng = \"raw\"",
        )
        .expect_err("invalid");
        assert!(typo.to_string().contains("encodng"), "{typo}");
        let zero_workers = parse(
            "kind = \"scaling\"\nname = \"x\"\ntitle = \"x\"\nworkers = [1, 0]\nframes_per_camera = 5\n\
             [cameras]\ncount = 1\nfps = 5\nwidth = 64\nheight = 64",
        )
        .expect_err("invalid");
        assert!(zero_workers.to_string().contains("workers"), "{zero_workers}");
        let bad_name = parse(
            "kind = \"baselines\"\nname = \"a b\"\ntitle = \"x\"\nframes = 5\nvideo = \"v.avi\"\n\
             [cameras]\ncount = 1\nfps = 5\nwidth = 64\nheight = 64",
        )
        .expect_err("invalid");
        assert!(bad_name.to_string().contains("a b"), "{bad_name}");
        let huge = parse(
            "kind = \"baselines\"\nname = \"b\"\ntitle = \"x\"\nframes = 5\nvideo = \"v.avi\"\n\
             [cameras]\ncount = 1\nfps = 5\nwidth = 100000\nheight = 64",
        )
        .expect_err("invalid");
        assert!(huge.to_string().contains("width"), "{huge}");
    }
}
