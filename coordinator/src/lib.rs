//! The framefleet coordinator: the control plane. It keeps channels in etcd, provisions
//! Kafka topics, collects fleet reports in memory and reads lag from Kafka. It holds no
//! durable state of its own, so any number can be restarted at any time.

pub mod assignments;
pub mod channels;
pub mod config;
pub mod error;
pub mod fleet;
pub mod grpc;
pub mod kafka;
pub mod leader;
pub mod ledgers;
pub mod members;
pub mod metrics;
pub mod models;
pub mod pipelines;
pub mod reconciler;
pub mod store;

use crate::channels::ChannelRegistry;
use crate::config::CoordinatorConfig;
use crate::fleet::FleetRegistry;
use crate::grpc::server::ServerParts;
use crate::grpc::service::FleetApi;
use crate::kafka::model_bytes::KafkaModelBytes;
use crate::kafka::offsets::KafkaInspector;
use crate::kafka::topics::{KafkaTopicAdmin, Placement, TopicAdmin, TopicSpec};
use crate::leader::Election;
use crate::members::Membership;
use crate::models::ModelRegistry;
use crate::pipelines::PipelineRegistry;
use crate::reconciler::Reconciler;
use crate::store::{EtcdStore, EtcdStoreConfig};
use anyhow::Context;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const RESULT_RECORD_MAX_BYTES: u64 = 1 << 20;
/// How old the fleet status behind `/metrics` may be.
const METRICS_REFRESH: Duration = Duration::from_secs(2);

/// A coordinator that is accepting connections.
pub struct RunningCoordinator {
    pub local_addr: SocketAddr,
    pub coordinator_id: String,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    background: Vec<JoinHandle<()>>,
}

impl RunningCoordinator {
    /// Waits until the server stops (after the shutdown token is cancelled) and leadership
    /// is handed back.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.server.await.context("coordinator server task panicked")??;
        for task in self.background {
            task.await.context("coordinator background task panicked")?;
        }
        Ok(())
    }
}

/// Connects to etcd and Kafka, provisions the shared topics, binds the listener and starts
/// serving. Returns once connections are accepted.
pub async fn start(config: CoordinatorConfig, shutdown: CancellationToken) -> anyhow::Result<RunningCoordinator> {
    let timeout = config.request_timeout();
    let store = EtcdStore::connect(EtcdStoreConfig {
        endpoints: config.etcd_endpoints.clone(),
        key_prefix: config.etcd_prefix.clone(),
        request_timeout: timeout,
        access: config.etcd_access()?,
    })
    .await
    .with_context(|| {
        "etcd is unreachable; start it with `deploy/local/infra.sh up` or pass --etcd-endpoints".to_owned()
    })?;

    let kafka_connection = config.kafka.connection()?;
    let topic_admin = KafkaTopicAdmin::new(&kafka_connection, timeout)?;
    let retention_ms = i64::from(config.topic_retention_hours) * 3_600_000;
    for (topic, max_payload_bytes) in [
        (&config.results_topic, RESULT_RECORD_MAX_BYTES),
        // Dead letters carry the original frame, so they need room for the largest one.
        (&config.dead_letter_topic, config.max_frame_bytes()),
    ] {
        let spec = TopicSpec {
            name: topic.clone(),
            partitions: config.topic_partitions.max(1),
            replication: config.topic_replication,
            max_payload_bytes,
            retention_ms,
        };
        topic_admin.ensure_topic(&spec).await.with_context(|| {
            format!(
                "Kafka at {} is unreachable; start it with `deploy/local/infra.sh up` or pass --kafka-brokers",
                config.kafka.brokers
            )
        })?;
    }
    // One partition keeps a model's chunks in order; kept forever, because registered model
    // versions name their chunks' offsets. A topic that exists already keeps its own settings
    // (brokers such as nisshi cannot change them): docs/api.md#models says what it needs.
    let models_topic = TopicSpec {
        name: config.models_topic.clone(),
        partitions: 1,
        replication: config.topic_replication,
        max_payload_bytes: framefleet_common::kafka::model_chunks::MODEL_CHUNK_BYTES as u64,
        retention_ms: -1,
    };
    topic_admin.ensure_topic(&models_topic).await?;
    let model_bytes = KafkaModelBytes::new(&kafka_connection, &config.models_topic, timeout)?;
    let inspector = KafkaInspector::new(&kafka_connection, &config.worker_group, timeout)?;

    let placement = Placement {
        partitions: config.topic_partitions,
        replication: config.topic_replication,
        retention_ms,
        pool_topics: config.pool_topics.max(1),
        pool_partitions: config.pool_partitions,
        max_frame_bytes: config.max_frame_bytes(),
    };
    let keyring = config.keyring()?;
    let coordinator_id = config.coordinator_id();
    let members = Arc::new(Membership::new(store.clone(), config.member_ttl()));
    let channels = Arc::new(ChannelRegistry::new(store.clone(), topic_admin, placement));
    let fleet = Arc::new(FleetRegistry::default());
    let inspector = Arc::new(inspector);
    let election = Arc::new(Election::new(
        store.clone(),
        coordinator_id.clone(),
        config.member_ttl(),
    ));
    let reconciler = Reconciler {
        channels: Arc::clone(&channels),
        members: Arc::clone(&members),
        probe: Arc::clone(&inspector),
        drain_settle: Duration::from_secs(config.drain_settle_secs),
        interval: Duration::from_millis(500),
        drained_recheck: Duration::from_secs(2),
        last_drained_recheck: std::sync::Mutex::default(),
    };

    let listener = tokio::net::TcpListener::bind(config.listen).await.map_err(|error| {
        if error.kind() == std::io::ErrorKind::AddrInUse {
            anyhow::anyhow!(
                "address {} is already in use; stop the other process or pick another with --listen (port 0 picks a free one)",
                config.listen
            )
        } else {
            anyhow::anyhow!("cannot listen on {}: {error}", config.listen)
        }
    })?;
    let local_addr = listener.local_addr()?;

    let credentials_reloader = keyring.as_ref().map(|keyring| keyring.spawn_reloader(shutdown.clone()));
    let ledger_keeper = ledgers::spawn_keeper(store.clone(), Arc::clone(&fleet), shutdown.clone());
    let fleet_status = FleetApi {
        store: store.clone(),
        fleet,
        members,
        channels: Arc::clone(&channels),
        inspector,
        election: Arc::clone(&election),
        coordinator_id: coordinator_id.clone(),
        kafka: framefleet_proto::v1::KafkaSettings {
            bootstrap_servers: config.kafka.brokers.clone(),
            worker_group: config.worker_group.clone(),
            results_topic: config.results_topic.clone(),
            dead_letter_topic: config.dead_letter_topic.clone(),
        },
    };
    let mut metrics_tasks = Vec::new();
    if let Some(addr) = config.metrics_addr {
        let (latest, refresher) = metrics::spawn_refresher(fleet_status.clone(), METRICS_REFRESH, shutdown.clone());
        let term = election.subscribe();
        framefleet_common::metrics::serve(
            addr,
            Arc::new(move || {
                let latest = latest.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let status = latest.as_ref().map(|(status, read_at)| (status, read_at.elapsed()));
                metrics::render(term.borrow().is_some(), status)
            }),
            shutdown.clone(),
        )
        .await
        .with_context(|| format!("cannot serve metrics on {addr}"))?;
        metrics_tasks.push(refresher);
    }
    let serving = grpc::server::serve(
        ServerParts {
            listener,
            pipelines: Arc::new(PipelineRegistry::new(
                store.clone(),
                vec![
                    config.results_topic.clone(),
                    config.dead_letter_topic.clone(),
                    config.models_topic.clone(),
                ],
            )),
            models: Arc::new(ModelRegistry::new(store.clone(), model_bytes)),
            max_model_bytes: config.max_model_mib << 20,
            store,
            channels,
            fleet: fleet_status,
            keyring: keyring.clone(),
            tls: config.tls_cert.clone().zip(config.tls_key.clone()),
            tls_client_ca: config.tls_client_ca.clone(),
        },
        shutdown.clone(),
    )
    .await?;

    let election_task = tokio::spawn({
        let (election, shutdown) = (Arc::clone(&election), shutdown.clone());
        async move { election.run(shutdown).await }
    });
    let reconciler_task = tokio::spawn({
        let term = election.subscribe();
        async move { reconciler.run(term, shutdown).await }
    });

    if let Some(path) = &config.ready_file {
        framefleet_common::startup::write_ready_file(path, local_addr)?;
    }
    tracing::info!(
        address = %local_addr,
        coordinator = %coordinator_id,
        etcd = ?config.etcd_endpoints,
        kafka = %config.kafka.brokers,
        tls = config.tls_cert.is_some(),
        auth = keyring.is_some(),
        "coordinator serving"
    );
    Ok(RunningCoordinator {
        local_addr,
        coordinator_id,
        server: serving.server,
        background: [election_task, reconciler_task, ledger_keeper, serving.health]
            .into_iter()
            .chain(metrics_tasks)
            .chain(credentials_reloader)
            .collect(),
    })
}

pub async fn run(config: CoordinatorConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    start(config, shutdown).await?.wait().await?;
    tracing::info!("coordinator stopped");
    Ok(())
}
