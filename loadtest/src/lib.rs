//! A harness that runs framefleet fleets in one process against the real etcd and Kafka
//! broker started by `deploy/local/infra.sh`: the coordinator, ingestors and workers are
//! their crates' own `run` functions, configured through their real command lines. Every
//! fleet gets unique etcd prefixes, topics and groups, so tests run in parallel and twice
//! in a row without seeing each other.

pub mod baseline;
pub mod detect_baseline;
pub mod experiment;
pub mod plot;
pub mod process;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod written;

use anyhow::Context;
use clap::Parser;
use framefleet_ingestor::config::IngestorConfig;
use framefleet_proto::v1::channel_service_client::ChannelServiceClient;
use framefleet_proto::v1::fleet_service_client::FleetServiceClient;
use framefleet_proto::v1::{FleetStatus, GetFleetStatusRequest};
pub use framefleet_test_support::{
    FleetNames, Infrastructure, TestCoordinator, create_plain_topic, frame_headers, header_value, read_topic,
};
use framefleet_worker::config::WorkerConfig;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

struct RunningWorker {
    worker_id: String,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<framefleet_worker::WorkerSummary>>,
}

pub struct Fleet {
    pub infrastructure: Infrastructure,
    pub names: FleetNames,
    pub coordinator_address: String,
    coordinator: Option<TestCoordinator>,
    workers: Vec<RunningWorker>,
    /// Workers running as processes of their own, each in its CPU quota.
    worker_processes: Vec<(process::PinnedProcess, process::CpuQuota)>,
}

impl Fleet {
    /// Starts a coordinator on a free port.
    pub async fn start(label: &str) -> anyhow::Result<Self> {
        Self::start_on(label, Infrastructure::from_env()?).await
    }

    /// Starts a coordinator on a free port against the given etcd and broker (a test that
    /// stops its broker runs its own set, not the shared one).
    pub async fn start_on(label: &str, infrastructure: Infrastructure) -> anyhow::Result<Self> {
        Self::start_with(label, infrastructure, &[]).await
    }

    /// [`Self::start_on`] with more coordinator arguments (`--metrics-addr …`).
    pub async fn start_with(label: &str, infrastructure: Infrastructure, extra_args: &[&str]) -> anyhow::Result<Self> {
        let names = FleetNames::unique(label);
        let mut args = names.coordinator_args();
        args.extend(extra_args.iter().map(|arg| (*arg).to_owned()));
        let coordinator = TestCoordinator::start(&infrastructure, &args).await?;
        Ok(Self {
            coordinator_address: coordinator.address.clone(),
            infrastructure,
            names,
            coordinator: Some(coordinator),
            workers: Vec::new(),
            worker_processes: Vec::new(),
        })
    }

    pub fn worker_config(&self, worker_id: &str, extra_args: &[&str]) -> anyhow::Result<WorkerConfig> {
        Ok(WorkerConfig::try_parse_from(self.worker_args(worker_id, extra_args))?)
    }

    /// A worker's command line in this fleet (program name first).
    pub fn worker_args<'a>(&'a self, worker_id: &'a str, extra_args: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec!["framefleet-worker"];
        args.extend(self.fleet_worker_args(worker_id, &self.names.worker_group, &self.names.results_topic));
        // Quick to see new channels and to report, for tests that wait on either.
        args.extend(["--channel-refresh-ms", "300", "--report-interval-ms", "200"]);
        // Models fetched from the fleet stay with the fleet's test.
        args.extend(["--model-cache", self.names.model_cache.as_str()]);
        args.extend_from_slice(extra_args);
        args
    }

    /// The arguments (no program name) of a worker that drains this fleet's channels into a
    /// consumer group and results topic of its own, with the worker's defaults otherwise: the
    /// baselines' framefleet run, which must measure the worker, not a tuning.
    pub fn draining_worker_args(&self, worker_id: &str, group: &str, results_topic: &str) -> Vec<String> {
        self.fleet_worker_args(worker_id, group, results_topic)
            .map(str::to_owned)
            .to_vec()
    }

    /// What places a worker in this fleet: its id, the coordinator and broker, its group and
    /// results topic, the fleet's dead-letter topic, and only this fleet's channels (even when
    /// other tests share the coordinator's etcd).
    fn fleet_worker_args<'a>(&'a self, worker_id: &'a str, group: &'a str, results_topic: &'a str) -> [&'a str; 14] {
        [
            "--worker-id",
            worker_id,
            "--coordinator",
            &self.coordinator_address,
            "--kafka-brokers",
            &self.infrastructure.kafka_brokers,
            "--worker-group",
            group,
            "--results-topic",
            results_topic,
            "--dead-letter-topic",
            &self.names.dead_letter_topic,
            "--channel-prefix",
            &self.names.suffix,
        ]
    }

    /// Starts a worker in this process, or, with a `cpu_quota`, as a process of its own in
    /// that quota ([`Self::spawn_worker_process`]).
    pub fn spawn_worker_in(
        &mut self,
        worker_id: &str,
        extra_args: &[&str],
        cpu_quota: Option<f64>,
    ) -> anyhow::Result<()> {
        match cpu_quota {
            Some(cores) => self.spawn_worker_process(worker_id, extra_args, cores),
            None => self.spawn_worker(worker_id, extra_args),
        }
    }

    /// Starts a worker as a process of its own (the `framefleet-worker` binary of this build)
    /// inside a CPU quota of `cores` CPUs, so that several small workers on one machine stand
    /// for several nodes. Its output goes to `$FRAMEFLEET_RUN_DIR/logs/<worker id>.log`.
    pub fn spawn_worker_process(&mut self, worker_id: &str, extra_args: &[&str], cores: f64) -> anyhow::Result<()> {
        let program = process::worker_binary()?;
        let args: Vec<String> = self
            .worker_args(worker_id, extra_args)
            .into_iter()
            .skip(1)
            .map(str::to_owned)
            .collect();
        let quota = process::CpuQuota::create(&format!("framefleet-{worker_id}"), cores)?;
        let log = process::log_path(&format!("{worker_id}.log"))?;
        let child = process::PinnedProcess::spawn_in(worker_id, &quota, &program, &args, &log)?;
        self.worker_processes.push((child, quota));
        Ok(())
    }

    pub fn spawn_worker(&mut self, worker_id: &str, extra_args: &[&str]) -> anyhow::Result<()> {
        let config = self.worker_config(worker_id, extra_args)?;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(framefleet_worker::run(config, shutdown.clone()));
        self.workers.push(RunningWorker {
            worker_id: worker_id.to_owned(),
            shutdown,
            task,
        });
        Ok(())
    }

    /// Stops one worker the way SIGTERM does (finish the batch, commit, leave the group) and
    /// returns its summary.
    pub async fn stop_worker(&mut self, worker_id: &str) -> anyhow::Result<framefleet_worker::WorkerSummary> {
        let index = self
            .workers
            .iter()
            .position(|worker| worker.worker_id == worker_id)
            .with_context(|| format!("no running worker `{worker_id}`"))?;
        let worker = self.workers.remove(index);
        worker.shutdown.cancel();
        worker.task.await.context("worker task panicked")?
    }

    pub fn ingestor_config(
        &self,
        ingestor_id: &str,
        channels: &[(&str, &str)],
        extra_args: &[&str],
    ) -> anyhow::Result<IngestorConfig> {
        Ok(IngestorConfig::try_parse_from(self.ingestor_args(
            ingestor_id,
            channels,
            extra_args,
        ))?)
    }

    /// An ingestor's command line in this fleet (program name first), capturing `channels`
    /// (`(id, source URI)`).
    pub fn ingestor_args(&self, ingestor_id: &str, channels: &[(&str, &str)], extra_args: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = [
            "framefleet-ingestor",
            "--ingestor-id",
            ingestor_id,
            "--coordinator",
            &self.coordinator_address,
            "--kafka-brokers",
            &self.infrastructure.kafka_brokers,
            "--report-interval-ms",
            "200",
        ]
        .map(str::to_owned)
        .to_vec();
        for (id, source) in channels {
            args.push("--channel".to_owned());
            args.push(format!("{id}={source}"));
        }
        args.extend(extra_args.iter().map(|arg| (*arg).to_owned()));
        args
    }

    /// A connection to this fleet's coordinator (10-s deadline per call).
    async fn coordinator_channel(&self) -> anyhow::Result<framefleet_proto::client::CoordinatorChannel> {
        Ok(framefleet_proto::client::connect_coordinator(
            &self.coordinator_address,
            Duration::from_secs(10),
            &Default::default(),
        )
        .await?)
    }

    pub async fn fleet_client(
        &self,
    ) -> anyhow::Result<FleetServiceClient<framefleet_proto::client::CoordinatorChannel>> {
        Ok(FleetServiceClient::new(self.coordinator_channel().await?))
    }

    pub async fn channel_client(
        &self,
    ) -> anyhow::Result<ChannelServiceClient<framefleet_proto::client::CoordinatorChannel>> {
        Ok(ChannelServiceClient::new(self.coordinator_channel().await?))
    }

    /// Creates pipeline `name` at version 1 (or adds its next version) with `spec`; returns
    /// the version now current.
    pub async fn create_pipeline(
        &self,
        name: &str,
        spec: framefleet_proto::v1::PipelineSpec,
    ) -> anyhow::Result<framefleet_proto::v1::PipelineVersion> {
        framefleet_test_support::create_pipeline(&self.coordinator_address, name, spec).await
    }

    /// Pushes the model directory `dir` to this fleet's coordinator (`framefleet models push`);
    /// returns the version registered, or the newest when it holds these weights already.
    pub async fn push_model(&self, dir: &std::path::Path) -> anyhow::Result<framefleet_proto::v1::ModelVersion> {
        framefleet_test_support::push_model(&self.coordinator_address, dir).await
    }

    /// Registers this fleet's channel `name` (its id from [`FleetNames::channel_id`]) with a
    /// `width`×`height` RGB schema in `encoding`, for a test that writes the channel's records
    /// itself (`source_uri` says so); returns the channel as the coordinator stored it.
    pub async fn register_written_channel(
        &self,
        name: &str,
        source_uri: &str,
        size: (u32, u32),
        encoding: framefleet_proto::v1::FrameEncoding,
    ) -> anyhow::Result<framefleet_proto::v1::Channel> {
        self.register_written_channel_for(name, source_uri, size, encoding, &[])
            .await
    }

    /// [`Self::register_written_channel`] for a channel that names `pipelines` (registered).
    pub async fn register_written_channel_for(
        &self,
        name: &str,
        source_uri: &str,
        (width, height): (u32, u32),
        encoding: framefleet_proto::v1::FrameEncoding,
        pipelines: &[&str],
    ) -> anyhow::Result<framefleet_proto::v1::Channel> {
        let request = framefleet_proto::v1::RegisterChannelRequest {
            channel_id: self.names.channel_id(name),
            source_uri: source_uri.to_owned(),
            schema: Some(framefleet_proto::v1::FrameSchema {
                version: 1,
                width,
                height,
                channels: 3,
                pixel_format: framefleet_proto::v1::PixelFormat::Rgb24.into(),
                encoding: encoding.into(),
                fps: 10.0,
            }),
            pipelines: pipelines.iter().map(|name| (*name).to_owned()).collect(),
            ..Default::default()
        };
        self.channel_client()
            .await?
            .register_channel(request)
            .await?
            .into_inner()
            .channel
            .context("the coordinator returned no channel")
    }

    /// The ledger an ingestor last reported for `channel_id`, if any.
    pub fn reported_ledger(status: &FleetStatus, channel_id: &str) -> Option<framefleet_proto::v1::ChannelLedger> {
        status
            .ingestors
            .iter()
            .filter_map(|ingestor| ingestor.report.as_ref())
            .flat_map(|report| report.channels.iter())
            .find(|ledger| ledger.channel_id == channel_id)
            .cloned()
    }

    /// Polls the fleet status until an ingestor reports a ledger for `channel_id` that
    /// satisfies `done`; returns that ledger.
    pub async fn wait_for_ledger(
        &self,
        channel_id: &str,
        timeout: Duration,
        done: impl Fn(&framefleet_proto::v1::ChannelLedger) -> bool,
    ) -> anyhow::Result<framefleet_proto::v1::ChannelLedger> {
        let status = self
            .wait_for_status(timeout, |status| {
                Self::reported_ledger(status, channel_id).is_some_and(|ledger| done(&ledger))
            })
            .await?;
        Self::reported_ledger(&status, channel_id).context("the ledger vanished")
    }

    /// Polls the fleet status until `done` holds or `timeout` passes; returns the last status.
    pub async fn wait_for_status(
        &self,
        timeout: Duration,
        done: impl Fn(&FleetStatus) -> bool,
    ) -> anyhow::Result<FleetStatus> {
        let mut client = self.fleet_client().await?;
        let deadline = Instant::now() + timeout;
        loop {
            let status = client.get_fleet_status(GetFleetStatusRequest {}).await?.into_inner();
            if done(&status) {
                return Ok(status);
            }
            if Instant::now() > deadline {
                anyhow::bail!("fleet did not reach the expected state within {timeout:?}; last status: {status:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Every result record of this fleet's results topic, parsed, read from the beginning with
    /// a plain Kafka consumer until `expected` arrived (60 s at most), plus 2 s in which a
    /// duplicate beyond `expected` would show up.
    pub async fn read_results(&self, expected: usize) -> anyhow::Result<Vec<framefleet_proto::wire::FrameResult>> {
        let records = self
            .read_result_records(expected, Duration::from_secs(60), Duration::from_secs(2))
            .await?;
        Ok(records.into_iter().map(|(_, result)| result).collect())
    }

    /// Result records with their parsed results (for the record's own metadata, such as its
    /// timestamp), read like [`read_topic`] does.
    pub async fn read_result_records(
        &self,
        expected: usize,
        timeout: Duration,
        settle: Duration,
    ) -> anyhow::Result<Vec<(rdkafka::message::OwnedMessage, framefleet_proto::wire::FrameResult)>> {
        let brokers = self.infrastructure.kafka_brokers.clone();
        let topic = self.names.results_topic.clone();
        let records = tokio::task::spawn_blocking(move || read_topic(&brokers, &topic, expected, timeout, settle))
            .await
            .context("results reader panicked")??;
        records
            .into_iter()
            .map(|record| {
                use rdkafka::message::Message;
                let payload = record.payload().context("result record without a payload")?;
                let result = serde_json::from_slice(payload).context("result record is not a FrameResult")?;
                Ok((record, result))
            })
            .collect()
    }

    /// Stops the workers (draining) and then the coordinator.
    pub async fn stop(mut self) -> anyhow::Result<Vec<framefleet_worker::WorkerSummary>> {
        let mut summaries = Vec::new();
        for worker in &self.workers {
            worker.shutdown.cancel();
        }
        for worker in self.workers.drain(..) {
            summaries.push(worker.task.await.context("worker task panicked")??);
        }
        for (worker, quota) in self.worker_processes.drain(..) {
            worker.terminate(Duration::from_secs(30)).await?;
            drop(quota);
        }
        if let Some(coordinator) = self.coordinator.take() {
            coordinator.stop().await?;
        }
        // Models the workers fetched (absent when none did).
        let _ = std::fs::remove_dir_all(&self.names.model_cache);
        Ok(summaries)
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        // A failed test must not leave tasks consuming from the shared broker.
        for worker in &self.workers {
            worker.shutdown.cancel();
        }
        // The coordinator stops when its `TestCoordinator` drops.
    }
}

/// Counts a video's frames by decoding it with OpenCV, independently of the ingestor.
pub fn count_frames_with_opencv(path: &str) -> anyhow::Result<u64> {
    use opencv::prelude::*;
    let mut capture = opencv::videoio::VideoCapture::from_file(path, opencv::videoio::CAP_ANY)?;
    anyhow::ensure!(capture.is_opened()?, "OpenCV cannot open {path}");
    let mut frame = opencv::core::Mat::default();
    let mut frames = 0;
    while capture.read(&mut frame)? && !frame.empty() {
        frames += 1;
    }
    Ok(frames)
}
