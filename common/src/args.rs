//! Command-line arguments every service takes alike, flattened into each one's configuration
//! (`#[command(flatten)]`): one flag name, one type and one environment variable per setting
//! across the coordinator, ingestor, worker and CLI.

use crate::kafka::KafkaConnection;
use crate::kafka::security::{KafkaSecurity, KafkaSecurityArgs, KafkaSecurityError};
use crate::secrets::SecretError;
use framefleet_proto::client::ClientOptions;
use std::path::PathBuf;

/// How a process reaches the coordinator.
#[derive(Debug, Clone, clap::Args)]
pub struct CoordinatorArgs {
    /// Coordinator gRPC address (`https://…` for a TLS coordinator); several, comma-separated,
    /// are tried in turn.
    #[arg(
        id = "coordinator",
        long = "coordinator",
        global = true,
        env = "FRAMEFLEET_COORDINATOR",
        default_value = "http://127.0.0.1:50051"
    )]
    pub address: String,

    /// File holding the bearer token for the coordinator (every call, once the coordinator
    /// was started with credentials); or set FRAMEFLEET_AUTH_TOKEN. No flag takes the token itself: every local user can read a
    /// process's arguments.
    #[arg(long, global = true, env = "FRAMEFLEET_AUTH_TOKEN_FILE")]
    pub auth_token_file: Option<PathBuf>,

    /// PEM CA certificate of a TLS coordinator (`https://` address).
    #[arg(long, global = true, env = "FRAMEFLEET_TLS_CA")]
    pub tls_ca: Option<PathBuf>,

    /// PEM client certificate: the credential, for a coordinator that maps client
    /// certificates to roles (needs --tls-client-key).
    #[arg(long, global = true, env = "FRAMEFLEET_TLS_CLIENT_CERT", requires = "tls_client_key")]
    pub tls_client_cert: Option<PathBuf>,

    /// PEM private key of --tls-client-cert.
    #[arg(long, global = true, env = "FRAMEFLEET_TLS_CLIENT_KEY", requires = "tls_client_cert")]
    pub tls_client_key: Option<PathBuf>,
}

impl CoordinatorArgs {
    /// The token ([`crate::secrets::bearer_token`]) and CA to call the coordinator with.
    ///
    /// Errors: the token given both ways, or an unreadable, empty or non-UTF-8 one.
    pub fn client_options(&self) -> Result<ClientOptions, SecretError> {
        Ok(ClientOptions {
            token: crate::secrets::bearer_token(self.auth_token_file.as_deref())?,
            tls_ca: self.tls_ca.clone(),
            tls_identity: self.tls_client_cert.clone().zip(self.tls_client_key.clone()),
        })
    }
}

/// How a process reaches Kafka, and the frame size every service of a fleet agrees on.
#[derive(Debug, Clone, clap::Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers (host:port, comma-separated).
    #[arg(
        id = "kafka_brokers",
        long = "kafka-brokers",
        env = "FRAMEFLEET_KAFKA_BROKERS",
        default_value = "127.0.0.1:9092"
    )]
    pub brokers: String,

    #[command(flatten)]
    pub security: KafkaSecurityArgs,

    /// Largest decoded frame (width × height × channels), in MiB: the coordinator refuses a
    /// schema above it and sizes topics for it, an ingestor never produces a larger frame, a
    /// worker dead-letters one (`PAYLOAD_TOO_LARGE`). At least 1; give every service of a fleet
    /// the same.
    #[arg(long, env = "FRAMEFLEET_MAX_FRAME_MIB", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_frame_mib: u32,
}

impl KafkaArgs {
    /// The brokers and the checked security settings every Kafka client of the process uses.
    ///
    /// Errors: as [`KafkaSecurity::new`]'s.
    pub fn connection(&self) -> Result<KafkaConnection, KafkaSecurityError> {
        Ok(KafkaConnection::new(&self.brokers, KafkaSecurity::new(&self.security)?))
    }

    /// `--max-frame-mib` in bytes.
    pub fn max_frame_bytes(&self) -> usize {
        usize::try_from(self.max_frame_mib)
            .unwrap_or(usize::MAX)
            .saturating_mul(1 << 20)
    }
}
