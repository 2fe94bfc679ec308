//! Coordinator configuration: flags, with `FRAMEFLEET_*` environment variables as fallback.

use clap::Parser;
use framefleet_common::args::KafkaArgs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "framefleet-coordinator",
    version,
    about = "framefleet control plane (gRPC on etcd)"
)]
pub struct CoordinatorConfig {
    /// Address to serve gRPC on; port 0 picks a free port (see --ready-file).
    #[arg(long, env = "FRAMEFLEET_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// Comma-separated etcd endpoints.
    #[arg(
        long,
        env = "FRAMEFLEET_ETCD_ENDPOINTS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:2379"
    )]
    pub etcd_endpoints: Vec<String>,

    /// PEM CA certificate that signed etcd's server certificate: connect over TLS (give the
    /// endpoints as `https://…` or without a scheme).
    #[arg(long, env = "FRAMEFLEET_ETCD_CA")]
    pub etcd_ca: Option<PathBuf>,

    /// PEM client certificate for an etcd started with `--client-cert-auth` (needs
    /// --etcd-key and --etcd-ca).
    #[arg(long, env = "FRAMEFLEET_ETCD_CERT", requires_all = ["etcd_key", "etcd_ca"])]
    pub etcd_cert: Option<PathBuf>,

    /// PEM private key of --etcd-cert.
    #[arg(long, env = "FRAMEFLEET_ETCD_KEY", requires = "etcd_cert")]
    pub etcd_key: Option<PathBuf>,

    /// etcd user (etcd's own authentication); its password comes from FRAMEFLEET_ETCD_PASSWORD
    /// or --etcd-password-file, never from a flag.
    #[arg(long, env = "FRAMEFLEET_ETCD_USER")]
    pub etcd_user: Option<String>,

    /// File holding the etcd user's password (surrounding whitespace ignored).
    #[arg(long, env = "FRAMEFLEET_ETCD_PASSWORD_FILE", requires = "etcd_user")]
    pub etcd_password_file: Option<PathBuf>,

    /// Every etcd key lives under this prefix.
    #[arg(long, env = "FRAMEFLEET_ETCD_PREFIX", default_value = "/framefleet/v1/")]
    pub etcd_prefix: String,

    #[command(flatten)]
    pub kafka: KafkaArgs,

    /// Consumer group of the worker fleet, whose committed offsets give consume and lag.
    #[arg(long, env = "FRAMEFLEET_WORKER_GROUP", default_value = framefleet_common::kafka::DEFAULT_WORKER_GROUP)]
    pub worker_group: String,

    #[arg(long, env = "FRAMEFLEET_RESULTS_TOPIC", default_value = framefleet_common::kafka::DEFAULT_RESULTS_TOPIC)]
    pub results_topic: String,

    #[arg(long, env = "FRAMEFLEET_DEAD_LETTER_TOPIC", default_value = framefleet_common::kafka::DEFAULT_DEAD_LETTER_TOPIC)]
    pub dead_letter_topic: String,

    /// Topic the weights of pushed models go to (one partition, kept forever).
    #[arg(long, env = "FRAMEFLEET_MODELS_TOPIC", default_value = framefleet_common::kafka::model_chunks::DEFAULT_MODELS_TOPIC)]
    pub models_topic: String,

    /// Largest model weights a push may carry, in MiB (a push holds them in memory until their
    /// SHA-256 is checked).
    #[arg(long, env = "FRAMEFLEET_MAX_MODEL_MIB", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub max_model_mib: u64,

    /// Partitions of each new channel topic. Frames are keyed by channel, so one channel uses
    /// one partition; more only help topics shared by several channels.
    #[arg(long, env = "FRAMEFLEET_TOPIC_PARTITIONS", default_value_t = 1)]
    pub topic_partitions: i32,

    /// Replication factor of new topics (1 for a single local broker, 3 in production).
    #[arg(long, env = "FRAMEFLEET_TOPIC_REPLICATION", default_value_t = 1)]
    pub topic_replication: i32,

    /// How long frames stay in a topic, in hours.
    #[arg(long, env = "FRAMEFLEET_TOPIC_RETENTION_HOURS", default_value_t = 24)]
    pub topic_retention_hours: u32,

    /// Deadline for each etcd or Kafka request, in seconds.
    #[arg(long, env = "FRAMEFLEET_REQUEST_TIMEOUT_SECS", default_value_t = 5)]
    pub request_timeout_secs: u64,

    /// Seconds a worker or ingestor stays registered in etcd after its last sign of life
    /// (at least 2).
    #[arg(long, env = "FRAMEFLEET_MEMBER_TTL_SECS", default_value_t = 5)]
    pub member_ttl_secs: u64,

    /// Serve Prometheus metrics on this address (`/metrics`), e.g. 127.0.0.1:9466.
    #[arg(long, env = "FRAMEFLEET_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,

    /// Write the bound address here once the server accepts connections.
    #[arg(long, env = "FRAMEFLEET_READY_FILE")]
    pub ready_file: Option<PathBuf>,

    /// This coordinator's name in leader election and status; default: host name and pid.
    #[arg(long, env = "FRAMEFLEET_COORDINATOR_ID")]
    pub coordinator_id: Option<String>,

    /// Topics in the shared pool (TOPIC_STRATEGY_SHARED_POOL).
    #[arg(long, env = "FRAMEFLEET_POOL_TOPICS", default_value_t = 4)]
    pub pool_topics: u32,

    /// Partitions of each pool topic.
    #[arg(long, env = "FRAMEFLEET_POOL_PARTITIONS", default_value_t = 4)]
    pub pool_partitions: i32,

    /// Seconds after a deregistration before the drain takes the topics' watermarks (time for
    /// the ingestor to stop and flush).
    #[arg(long, env = "FRAMEFLEET_DRAIN_SETTLE_SECS", default_value_t = 3)]
    pub drain_settle_secs: u64,

    /// File holding a shared bearer token with the admin role (surrounding whitespace
    /// ignored); or set FRAMEFLEET_AUTH_TOKEN. Once any credential is configured, every
    /// framefleet RPC needs one. No flag takes the token itself: every local user can read a
    /// process's arguments.
    #[arg(long, env = "FRAMEFLEET_AUTH_TOKEN_FILE")]
    pub auth_token_file: Option<PathBuf>,

    /// TOML file of [[credentials]]: name, role (admin, ingestor, worker, observer),
    /// token_sha256 and/or cert_sha256, and an ingestor's ingestor_id. Read again whenever it
    /// changes. Format: docs/operations.md#roles.
    #[arg(long, env = "FRAMEFLEET_CREDENTIALS_FILE")]
    pub credentials_file: Option<PathBuf>,

    /// PEM certificate chain: serve gRPC over TLS (needs --tls-key).
    #[arg(long, env = "FRAMEFLEET_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "FRAMEFLEET_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA certificate: clients may authenticate with a certificate it signed, mapped to a
    /// role by its SHA-256 fingerprint in --credentials-file (needs --tls-cert).
    #[arg(long, env = "FRAMEFLEET_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
}

impl CoordinatorConfig {
    pub fn member_ttl(&self) -> Duration {
        Duration::from_secs(self.member_ttl_secs).max(crate::members::MIN_MEMBER_TTL)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs.max(1))
    }

    pub fn max_frame_bytes(&self) -> u64 {
        u64::try_from(self.kafka.max_frame_bytes()).unwrap_or(u64::MAX)
    }

    pub fn coordinator_id(&self) -> String {
        self.coordinator_id
            .clone()
            .unwrap_or_else(framefleet_common::startup::host_process_id)
    }

    /// How to reach etcd beyond its endpoints: TLS (CA, client identity) and a user.
    ///
    /// Errors: an unreadable certificate or key file, a user without a password, a password
    /// given both ways or empty.
    pub fn etcd_access(&self) -> anyhow::Result<crate::store::EtcdAccess> {
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|error| anyhow::anyhow!("cannot read {}: {error}", path.display()))
        };
        let ca = self.etcd_ca.as_ref().map(read).transpose()?;
        let identity = match (&self.etcd_cert, &self.etcd_key) {
            (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
            _ => None,
        };
        let user = match &self.etcd_user {
            Some(user) => {
                let password = framefleet_common::secrets::secret(
                    framefleet_common::secrets::ETCD_PASSWORD,
                    self.etcd_password_file.as_deref(),
                )?
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "--etcd-user {user} needs a password: FRAMEFLEET_ETCD_PASSWORD or --etcd-password-file"
                    )
                })?;
                Some((user.clone(), password))
            }
            None => None,
        };
        Ok(crate::store::EtcdAccess { ca, identity, user })
    }

    /// Every credential the coordinator accepts (the shared token from FRAMEFLEET_AUTH_TOKEN or
    /// --auth-token-file, and --credentials-file's); `None`: authentication is off.
    ///
    /// Errors: the token's source or the credentials file is unreadable or invalid.
    pub fn keyring(&self) -> anyhow::Result<Option<std::sync::Arc<crate::grpc::auth::credentials::Keyring>>> {
        let shared = framefleet_common::secrets::bearer_token(self.auth_token_file.as_deref())?;
        Ok(crate::grpc::auth::credentials::Keyring::load(
            shared,
            self.credentials_file.clone(),
        )?)
    }
}

#[cfg(test)]
mod tests {
    /// clap checks the flags (unique ids and names, valid relations) only when a command is
    /// built; this builds it in every test run rather than in the first process that starts.
    #[test]
    fn the_flags_are_consistent() {
        <super::CoordinatorConfig as clap::CommandFactory>::command().debug_assert();
    }
}
