//! Assembles the tonic server: the six framefleet services, gRPC health (following etcd) and
//! reflection (for grpcurl), the authentication layer, TLS when configured (client
//! certificates too), and the request size limit; serves until the shutdown token is cancelled.

use super::auth::AuthLayer;
use super::auth::credentials::Keyring;
use super::health;
use super::models::ModelApi;
use super::pipelines::PipelineApi;
use super::service::{AssignmentApi, ChannelApi, FleetApi, SchemaApi};
use crate::channels::ChannelRegistry;
use crate::kafka::model_bytes::KafkaModelBytes;
use crate::kafka::topics::KafkaTopicAdmin;
use crate::models::ModelRegistry;
use crate::pipelines::PipelineRegistry;
use crate::store::EtcdStore;
use anyhow::Context;
use framefleet_proto::v1::assignment_service_server::AssignmentServiceServer;
use framefleet_proto::v1::channel_service_server::ChannelServiceServer;
use framefleet_proto::v1::fleet_service_server::FleetServiceServer;
use framefleet_proto::v1::model_service_server::ModelServiceServer;
use framefleet_proto::v1::pipeline_service_server::PipelineServiceServer;
use framefleet_proto::v1::schema_service_server::SchemaServiceServer;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// gRPC requests above this size are refused before they are decoded.
const MAX_REQUEST_BYTES: usize = 4 << 20;

/// What the server serves, and how.
pub struct ServerParts {
    pub listener: tokio::net::TcpListener,
    pub store: EtcdStore,
    pub channels: Arc<ChannelRegistry<EtcdStore, KafkaTopicAdmin>>,
    pub pipelines: Arc<PipelineRegistry<EtcdStore>>,
    pub models: Arc<ModelRegistry<EtcdStore, KafkaModelBytes>>,
    /// Largest model weights a push may carry.
    pub max_model_bytes: u64,
    pub fleet: FleetApi<EtcdStore, KafkaTopicAdmin>,
    /// Every credential accepted; `None`: authentication is off.
    pub keyring: Option<Arc<Keyring>>,
    /// PEM certificate and key; plaintext without them.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// PEM CA whose client certificates are accepted (optional per client: tokens still work).
    pub tls_client_ca: Option<PathBuf>,
}

/// The running server and the task that keeps its health status in step with etcd.
pub struct Serving {
    pub server: JoinHandle<Result<(), tonic::transport::Error>>,
    pub health: JoinHandle<()>,
}

/// Starts serving `parts.listener` until `shutdown`.
///
/// Errors: unreadable TLS files or an invalid certificate or key; reflection descriptors that
/// do not decode.
pub async fn serve(parts: ServerParts, shutdown: CancellationToken) -> anyhow::Result<Serving> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health::set_all(&health_reporter, tonic_health::ServingStatus::Serving).await;
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
        channels: Arc::clone(&parts.channels),
    })
    .max_decoding_message_size(MAX_REQUEST_BYTES);
    let schema_api = SchemaServiceServer::new(SchemaApi {
        channels: parts.channels,
    })
    .max_decoding_message_size(MAX_REQUEST_BYTES);
    let pipeline_api = PipelineServiceServer::new(PipelineApi {
        pipelines: parts.pipelines,
    })
    .max_decoding_message_size(MAX_REQUEST_BYTES);
    // A push streams its weights in messages of at most MAX_REQUEST_BYTES each.
    let model_api = ModelServiceServer::new(ModelApi {
        models: parts.models,
        max_model_bytes: parts.max_model_bytes,
    })
    .max_decoding_message_size(MAX_REQUEST_BYTES);
    let assignment_api = AssignmentServiceServer::new(AssignmentApi {
        store: parts.store.clone(),
        shutdown: shutdown.clone(),
    })
    .max_decoding_message_size(MAX_REQUEST_BYTES);
    let fleet_api = FleetServiceServer::new(parts.fleet).max_decoding_message_size(MAX_REQUEST_BYTES);

    let mut builder = tonic::transport::Server::builder();
    if let Some((cert, key)) = &parts.tls {
        let read =
            |path: &PathBuf| std::fs::read(path).with_context(|| format!("cannot read TLS file {}", path.display()));
        let identity = tonic::transport::Identity::from_pem(read(cert)?, read(key)?);
        let mut tls = tonic::transport::ServerTlsConfig::new().identity(identity);
        if let Some(ca) = &parts.tls_client_ca {
            tls = tls
                .client_ca_root(tonic::transport::Certificate::from_pem(read(ca)?))
                .client_auth_optional(true);
        }
        builder = builder
            .tls_config(tls)
            .context("invalid TLS certificate, key or client CA")?;
    }
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(parts.listener);
    let server_shutdown = shutdown.clone();
    let server = builder
        .layer(AuthLayer::new(parts.keyring))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(channel_api)
        .add_service(schema_api)
        .add_service(pipeline_api)
        .add_service(model_api)
        .add_service(assignment_api)
        .add_service(fleet_api)
        .serve_with_incoming_shutdown(incoming, async move { server_shutdown.cancelled().await });
    Ok(Serving {
        server: tokio::spawn(server),
        health: tokio::spawn(health::follow_store(parts.store, health_reporter, shutdown)),
    })
}
