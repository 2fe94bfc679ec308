//! The framefleet coordinator: the control plane. It keeps channels in etcd, provisions
//! Kafka topics, collects fleet reports in memory and reads lag from Kafka. It holds no
//! durable state of its own, so any number can be restarted at any time.

pub mod channels;
pub mod config;
pub mod error;
pub mod fleet;
pub mod members;
pub mod service;
pub mod store;
pub mod topics;

use crate::channels::{ChannelRegistry, TopicDefaults};
use crate::config::CoordinatorConfig;
use crate::fleet::{FleetRegistry, KafkaInspector};
use crate::members::Membership;
use crate::service::{ChannelApi, FleetApi};
use crate::store::{EtcdStore, EtcdStoreConfig};
use crate::topics::{KafkaTopicAdmin, TopicAdmin, TopicSpec};
use anyhow::Context;
use framefleet_proto::v1::channel_service_server::ChannelServiceServer;
use framefleet_proto::v1::fleet_service_server::FleetServiceServer;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// gRPC requests above this size are refused before they are decoded.
const MAX_REQUEST_BYTES: usize = 4 << 20;
const RESULT_RECORD_MAX_BYTES: u64 = 1 << 20;

/// A coordinator that is accepting connections.
pub struct RunningCoordinator {
    pub local_addr: SocketAddr,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl RunningCoordinator {
    /// Waits until the server stops (after the shutdown token is cancelled).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.server.await.context("coordinator server task panicked")??;
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
    })
    .await
    .with_context(|| {
        "etcd is unreachable; start it with `deploy/local/infra.sh up` or pass --etcd-endpoints".to_owned()
    })?;

    let topic_admin = KafkaTopicAdmin::new(&config.kafka_brokers, timeout)?;
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
                config.kafka_brokers
            )
        })?;
    }
    let inspector = KafkaInspector::new(&config.kafka_brokers, &config.worker_group, timeout)?;

    let topic_defaults = TopicDefaults {
        partitions: config.topic_partitions,
        replication: config.topic_replication,
        retention_ms,
    };
    let members = Arc::new(Membership::new(store.clone(), config.member_ttl()));
    let channels = Arc::new(ChannelRegistry::new(
        store,
        topic_admin,
        topic_defaults,
        config.max_frame_bytes(),
    ));
    let fleet = Arc::new(FleetRegistry::default());

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

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    for service_name in ["framefleet.v1.ChannelService", "framefleet.v1.FleetService"] {
        health_reporter
            .set_service_status(service_name, tonic_health::ServingStatus::Serving)
            .await;
    }
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(framefleet_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    // grpcurl releases before 1.9 only speak the v1alpha reflection protocol.
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(framefleet_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let channel_api = ChannelServiceServer::new(ChannelApi {
        channels: Arc::clone(&channels),
    })
    .max_decoding_message_size(MAX_REQUEST_BYTES);
    let fleet_api = FleetServiceServer::new(FleetApi {
        fleet,
        members,
        channels,
        inspector: Arc::new(inspector),
    })
    .max_decoding_message_size(MAX_REQUEST_BYTES);

    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let server = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(channel_api)
        .add_service(fleet_api)
        .serve_with_incoming_shutdown(incoming, async move { shutdown.cancelled().await });
    let server = tokio::spawn(server);

    if let Some(path) = &config.ready_file {
        framefleet_common::startup::write_ready_file(path, local_addr)?;
    }
    tracing::info!(address = %local_addr, etcd = ?config.etcd_endpoints, kafka = %config.kafka_brokers, "coordinator serving");
    Ok(RunningCoordinator { local_addr, server })
}

pub async fn run(config: CoordinatorConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    start(config, shutdown).await?.wait().await?;
    tracing::info!("coordinator stopped");
    Ok(())
}
