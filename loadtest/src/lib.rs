//! A harness that runs framefleet fleets in one process against the real etcd and Kafka
//! broker started by `deploy/local/infra.sh`: the coordinator, ingestors and workers are
//! their crates' own `run` functions, configured through their real command lines. Every
//! fleet gets unique etcd prefixes, topics and groups, so tests run in parallel and twice
//! in a row without seeing each other.

pub mod baseline;
pub mod experiment;
pub mod plot;
pub mod process;
pub mod report;
pub mod runner;
pub mod scenario;

use anyhow::Context;
use clap::Parser;
use framefleet_coordinator::RunningCoordinator;
use framefleet_coordinator::config::CoordinatorConfig;
use framefleet_ingestor::config::IngestorConfig;
use framefleet_proto::v1::fleet_service_client::FleetServiceClient;
use framefleet_proto::v1::{FleetStatus, GetFleetStatusRequest};
use framefleet_worker::config::WorkerConfig;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Addresses of the real services, from the environment `deploy/local/infra.sh up` prints.
#[derive(Debug, Clone)]
pub struct Infrastructure {
    pub etcd_endpoints: String,
    pub kafka_brokers: String,
}

impl Infrastructure {
    pub fn from_env() -> anyhow::Result<Self> {
        let read = |name: &str| {
            std::env::var(name).with_context(|| {
                format!("{name} is not set: run the tests through scripts/test.sh, or `eval \"$(deploy/local/infra.sh up)\"` first")
            })
        };
        Ok(Self {
            etcd_endpoints: read("FRAMEFLEET_ETCD_ENDPOINTS")?,
            kafka_brokers: read("FRAMEFLEET_KAFKA_BROKERS")?,
        })
    }
}

/// Names no other fleet uses.
#[derive(Debug, Clone)]
pub struct FleetNames {
    pub suffix: String,
    pub etcd_prefix: String,
    pub worker_group: String,
    pub results_topic: String,
    pub dead_letter_topic: String,
}

impl FleetNames {
    pub fn unique(label: &str) -> Self {
        let suffix = format!("{label}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        Self {
            etcd_prefix: format!("/framefleet-test/{suffix}/"),
            worker_group: format!("workers-{suffix}"),
            results_topic: format!("results-{suffix}"),
            dead_letter_topic: format!("dead-letter-{suffix}"),
            suffix,
        }
    }

    pub fn channel_id(&self, name: &str) -> String {
        format!("{}-{name}", self.suffix)
    }
}

struct RunningWorker {
    worker_id: String,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<framefleet_worker::WorkerSummary>>,
}

pub struct Fleet {
    pub infrastructure: Infrastructure,
    pub names: FleetNames,
    pub coordinator_address: String,
    coordinator: Option<RunningCoordinator>,
    coordinator_shutdown: CancellationToken,
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
        let names = FleetNames::unique(label);
        let config = CoordinatorConfig::try_parse_from([
            "framefleet-coordinator",
            "--listen",
            "127.0.0.1:0",
            "--etcd-endpoints",
            &infrastructure.etcd_endpoints,
            "--etcd-prefix",
            &names.etcd_prefix,
            "--kafka-brokers",
            &infrastructure.kafka_brokers,
            "--worker-group",
            &names.worker_group,
            "--results-topic",
            &names.results_topic,
            "--dead-letter-topic",
            &names.dead_letter_topic,
        ])?;
        let coordinator_shutdown = CancellationToken::new();
        let coordinator = framefleet_coordinator::start(config, coordinator_shutdown.clone()).await?;
        Ok(Self {
            coordinator_address: format!("http://{}", coordinator.local_addr),
            infrastructure,
            names,
            coordinator: Some(coordinator),
            coordinator_shutdown,
            workers: Vec::new(),
            worker_processes: Vec::new(),
        })
    }

    pub fn worker_config(&self, worker_id: &str, extra_args: &[&str]) -> anyhow::Result<WorkerConfig> {
        Ok(WorkerConfig::try_parse_from(self.worker_args(worker_id, extra_args))?)
    }

    /// The command line of a worker of this fleet, program name first.
    /// A worker's command line in this fleet (program name first).
    pub fn worker_args<'a>(&'a self, worker_id: &'a str, extra_args: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec![
            "framefleet-worker",
            "--worker-id",
            worker_id,
            "--coordinator",
            &self.coordinator_address,
            "--kafka-brokers",
            &self.infrastructure.kafka_brokers,
            "--group",
            &self.names.worker_group,
            "--results-topic",
            &self.names.results_topic,
            "--dead-letter-topic",
            &self.names.dead_letter_topic,
            // Only this fleet's channels, even when other tests share the coordinator's etcd.
            "--channel-prefix",
            &self.names.suffix,
            "--channel-refresh-ms",
            "300",
            "--report-interval-ms",
            "200",
        ];
        args.extend_from_slice(extra_args);
        args
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

    pub async fn fleet_client(
        &self,
    ) -> anyhow::Result<FleetServiceClient<framefleet_proto::client::CoordinatorChannel>> {
        let channel = framefleet_proto::client::connect_coordinator(
            &self.coordinator_address,
            Duration::from_secs(10),
            &Default::default(),
        )
        .await?;
        Ok(FleetServiceClient::new(channel))
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
        self.coordinator_shutdown.cancel();
        if let Some(coordinator) = self.coordinator.take() {
            coordinator.wait().await?;
        }
        Ok(summaries)
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        // A failed test must not leave tasks consuming from the shared broker.
        for worker in &self.workers {
            worker.shutdown.cancel();
        }
        self.coordinator_shutdown.cancel();
    }
}

/// Creates a one-partition topic outside framefleet (for the plain-client baselines) that
/// accepts records of `max_payload_bytes`.
pub async fn create_plain_topic(brokers: &str, topic: &str, max_payload_bytes: u64) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<_> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let limit = framefleet_common::kafka::topic_max_message_bytes(max_payload_bytes).to_string();
    let new_topic = NewTopic::new(topic, 1, TopicReplication::Fixed(1)).set("max.message.bytes", &limit);
    let results = admin
        .create_topics(
            [&new_topic],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await?;
    for result in results {
        result.map_err(|(topic, code)| anyhow::anyhow!("cannot create {topic}: {code}"))?;
    }
    Ok(())
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

/// The value of a record's header `name`, as any Kafka client sees it.
pub fn header_value<'a>(record: &'a rdkafka::message::OwnedMessage, name: &str) -> Option<&'a [u8]> {
    use rdkafka::message::{Headers, Message};
    record.headers()?.iter().find(|header| header.key == name)?.value
}

/// The framefleet headers of a frame record, parsed as the worker parses them.
pub fn frame_headers(
    record: &rdkafka::message::OwnedMessage,
) -> Result<framefleet_proto::wire::FrameHeaders, framefleet_proto::wire::HeaderError> {
    use rdkafka::message::{Headers, Message};
    framefleet_proto::wire::FrameHeaders::parse(
        record
            .headers()
            .into_iter()
            .flat_map(|headers| headers.iter())
            .map(|header| (header.key, header.value)),
    )
}

/// Reads a topic from the beginning of every partition with a plain Kafka consumer (manual
/// assignment, no group, nothing committed), until `expected` records arrived or `timeout`
/// passed, then `settle` longer so a duplicate beyond `expected` would show. Blocking: call it
/// from `spawn_blocking`.
pub fn read_topic(
    brokers: &str,
    topic: &str,
    expected: usize,
    timeout: Duration,
    settle: Duration,
) -> anyhow::Result<Vec<rdkafka::message::OwnedMessage>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("reader-{topic}"))
        .set("enable.auto.commit", "false")
        .set("max.partition.fetch.bytes", "16777216")
        .set("fetch.max.bytes", "67108864")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut assignment = rdkafka::TopicPartitionList::new();
    for partition in metadata.topics().iter().flat_map(|topic| topic.partitions()) {
        assignment.add_partition_offset(topic, partition.id(), rdkafka::Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let mut records = Vec::new();
    let deadline = Instant::now() + timeout;
    while records.len() < expected && Instant::now() < deadline {
        if let Some(result) = consumer.poll(Duration::from_millis(300)) {
            records.push(result?.detach());
        }
    }
    let settled = Instant::now() + settle;
    while Instant::now() < settled {
        if let Some(result) = consumer.poll(Duration::from_millis(200)) {
            let record = result?.detach();
            if record.payload().is_some() || record.key().is_some() {
                records.push(record);
            }
        }
    }
    Ok(records)
}
