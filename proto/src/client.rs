//! Connecting to the coordinator with deadlines, optional TLS and a bearer token, shared by
//! every client binary.

use std::path::PathBuf;
use std::time::Duration;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// A connection to the coordinator that sends the bearer token (when there is one) with
/// every call.
pub type CoordinatorChannel = InterceptedService<Channel, Credentials>;

/// A bearer token: prints as `***` in logs and `Debug` output, so configs can be logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(std::sync::Arc<str>);

impl Token {
    pub fn new(value: &str) -> Self {
        Self(std::sync::Arc::from(value.trim()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("***")
    }
}

/// A token that is empty once surrounding whitespace is trimmed.
#[derive(Debug, thiserror::Error)]
#[error("must not be empty")]
pub struct EmptyToken;

impl std::str::FromStr for Token {
    type Err = EmptyToken;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        if value.trim().is_empty() {
            return Err(EmptyToken);
        }
        Ok(Self::new(value))
    }
}

/// How to reach a coordinator beyond its address.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// Sent as `authorization: Bearer <token>`; mutating calls need it when the coordinator
    /// was started with a token.
    pub token: Option<Token>,
    /// PEM CA certificate that signed the coordinator's TLS certificate (for `https://`
    /// addresses; without it the system roots are not consulted, so it is required).
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate and key, for a coordinator that maps client certificates to
    /// roles (`--tls-client-ca`): the credential instead of a token.
    pub tls_identity: Option<(PathBuf, PathBuf)>,
}

#[derive(Clone, Default)]
pub struct Credentials {
    authorization: Option<MetadataValue<Ascii>>,
}

impl Interceptor for Credentials {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.authorization {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("coordinator address `{address}` is not a valid URI: {reason}")]
    BadAddress { address: String, reason: String },
    #[error("coordinator at {address} is unreachable ({reason}); start it or pass --coordinator")]
    Unreachable { address: String, reason: String },
    #[error("the auth token cannot be sent in a header: {0}")]
    BadToken(String),
    #[error("TLS settings: {0}")]
    Tls(String),
}

/// Connects to the coordinator, failing within `timeout` instead of hanging. Every later
/// call on the channel also carries `timeout` as its deadline.
pub async fn connect_coordinator(
    address: &str,
    timeout: Duration,
    options: &ClientOptions,
) -> Result<CoordinatorChannel, ConnectError> {
    connect(address, timeout, true, options).await
}

/// Like [`connect_coordinator`], for long-lived streams: only connecting is bounded by
/// `timeout`, calls carry no deadline (a deadline would cut a stream that is meant to stay
/// open).
pub async fn connect_coordinator_for_streams(
    address: &str,
    timeout: Duration,
    options: &ClientOptions,
) -> Result<CoordinatorChannel, ConnectError> {
    connect(address, timeout, false, options).await
}

async fn connect(
    address: &str,
    timeout: Duration,
    call_deadline: bool,
    options: &ClientOptions,
) -> Result<CoordinatorChannel, ConnectError> {
    let authorization = options
        .token
        .as_ref()
        .map(|token| {
            format!("Bearer {}", token.expose())
                .parse::<MetadataValue<Ascii>>()
                .map_err(|error| ConnectError::BadToken(error.to_string()))
        })
        .transpose()?;
    let addresses: Vec<&str> = address
        .split(',')
        .map(str::trim)
        .filter(|address| !address.is_empty())
        .collect();
    if addresses.len() > 1 {
        let endpoints = addresses
            .iter()
            .map(|address| Ok((address.to_string(), endpoint(address, timeout, call_deadline, options)?)))
            .collect::<Result<Vec<_>, ConnectError>>()?;
        let channel = failover_channel(endpoints, timeout).await?;
        return Ok(InterceptedService::new(channel, Credentials { authorization }));
    }
    let endpoint = endpoint(address, timeout, call_deadline, options)?;
    let unreachable = |reason: String| ConnectError::Unreachable {
        address: address.to_owned(),
        reason,
    };
    match tokio::time::timeout(timeout, endpoint.connect()).await {
        Ok(Ok(channel)) => Ok(InterceptedService::new(channel, Credentials { authorization })),
        Ok(Err(error)) => Err(unreachable(format!("{error}: {}", source_chain(&error)))),
        Err(_elapsed) => Err(unreachable(format!("no answer within {timeout:?}"))),
    }
}

/// HTTP/2 keep-alive pings to the coordinator: every interval, and a connection whose ping is
/// not answered within the timeout is closed.
const HTTP2_PING_INTERVAL: Duration = Duration::from_secs(3);
const HTTP2_PING_TIMEOUT: Duration = Duration::from_secs(3);

/// How often the coordinators of a list are probed for whether they serve.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Several coordinators (they all serve the API): calls are spread over those whose gRPC
/// health check answers SERVING, probed every [`PROBE_INTERVAL`]; one that goes away, or
/// reports NOT_SERVING because it cannot reach etcd, is left out until it serves again. When
/// none serves but some answer, calls go to those that answer rather than nowhere: a call
/// may still work, and waiting for none would fail it for sure. (A plain balanced list hands
/// calls to an endpoint that cannot connect, and each such call fails; probing only for TCP
/// kept sending calls to a coordinator cut off from etcd.) Waits up to `timeout` for the
/// first one to answer.
async fn failover_channel(endpoints: Vec<(String, Endpoint)>, timeout: Duration) -> Result<Channel, ConnectError> {
    use tonic::transport::channel::Change;
    let (channel, changes) = Channel::balance_channel::<String>(endpoints.len().max(1));
    let (first_up, mut first_up_seen) = tokio::sync::watch::channel(false);
    let addresses: Vec<String> = endpoints.iter().map(|(address, _)| address.clone()).collect();
    tokio::spawn(async move {
        let mut inserted = vec![false; endpoints.len()];
        // One connection per coordinator for the probes alone, so a probe never waits behind
        // (or holds up) the calls.
        let probes: Vec<Channel> = endpoints
            .iter()
            .map(|(_, endpoint)| endpoint.clone().timeout(PROBE_INTERVAL).connect_lazy())
            .collect();
        loop {
            let mut health = Vec::with_capacity(probes.len());
            for probe in &probes {
                health.push(probe_health(probe).await);
            }
            let wanted = if health.contains(&Health::Serving) {
                Health::Serving
            } else {
                Health::NotServing
            };
            for (((address, endpoint), inserted), health) in endpoints.iter().zip(inserted.iter_mut()).zip(&health) {
                let use_it = *health == wanted;
                let change = match (use_it, *inserted) {
                    (true, false) => Change::Insert(address.clone(), endpoint.clone()),
                    (false, true) => Change::Remove(address.clone()),
                    _ => continue,
                };
                *inserted = use_it;
                if changes.send(change).await.is_err() {
                    // The channel is gone: nobody needs the probes any more.
                    return;
                }
            }
            if inserted.iter().any(|up| *up) {
                first_up.send_replace(true);
            }
            tokio::select! {
                () = changes.closed() => return,
                () = tokio::time::sleep(PROBE_INTERVAL) => {}
            }
        }
    });
    let answered = tokio::time::timeout(timeout, first_up_seen.wait_for(|up| *up)).await;
    if !matches!(answered, Ok(Ok(_))) {
        return Err(ConnectError::Unreachable {
            address: addresses.join(","),
            reason: format!("none answered within {timeout:?}"),
        });
    }
    Ok(channel)
}

/// What one probe of a coordinator found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    Serving,
    /// It answered, with NOT_SERVING (it cannot reach etcd) or another status.
    NotServing,
    Down,
}

/// The gRPC health check of the coordinator behind `probe`, within [`PROBE_INTERVAL`]. One
/// without the health service counts as serving if it answers at all.
async fn probe_health(probe: &Channel) -> Health {
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
    let mut client = HealthClient::new(probe.clone());
    let check = client.check(HealthCheckRequest { service: String::new() });
    match tokio::time::timeout(PROBE_INTERVAL, check).await {
        Ok(Ok(response)) if response.get_ref().status == ServingStatus::Serving as i32 => Health::Serving,
        Ok(Ok(_)) => Health::NotServing,
        Ok(Err(status)) if status.code() == tonic::Code::Unimplemented => Health::Serving,
        Ok(Err(status)) if status.code() == tonic::Code::Unavailable || status.code() == tonic::Code::Unknown => {
            Health::Down
        }
        Ok(Err(_)) => Health::NotServing,
        Err(_elapsed) => Health::Down,
    }
}

/// One coordinator's endpoint with the client's timeouts and TLS settings.
fn endpoint(
    address: &str,
    timeout: Duration,
    call_deadline: bool,
    options: &ClientOptions,
) -> Result<Endpoint, ConnectError> {
    let with_scheme = if address.contains("://") {
        address.to_owned()
    } else {
        format!("http://{address}")
    };
    let endpoint = Endpoint::from_shared(with_scheme).map_err(|error| ConnectError::BadAddress {
        address: address.to_owned(),
        reason: error.to_string(),
    })?;
    // HTTP/2 pings on every connection, idle or not: a report stream or watch to a coordinator
    // that vanished without closing the connection (cut off the network, its host gone) is
    // noticed within ping interval + timeout and reopened, instead of hanging for the
    // kernel's TCP timeouts while the process's registration lapses.
    let mut endpoint = endpoint
        .connect_timeout(timeout)
        .tcp_keepalive(Some(Duration::from_secs(10)))
        .http2_keep_alive_interval(HTTP2_PING_INTERVAL)
        .keep_alive_timeout(HTTP2_PING_TIMEOUT)
        .keep_alive_while_idle(true);
    if call_deadline {
        endpoint = endpoint.timeout(timeout);
    }
    if address.starts_with("https://") || options.tls_ca.is_some() {
        let mut tls = ClientTlsConfig::new();
        let read = |what: &str, path: &PathBuf| {
            std::fs::read(path)
                .map_err(|error| ConnectError::Tls(format!("cannot read {what} file {}: {error}", path.display())))
        };
        if let Some(path) = &options.tls_ca {
            tls = tls.ca_certificate(Certificate::from_pem(read("CA", path)?));
        }
        if let Some((cert, key)) = &options.tls_identity {
            tls = tls.identity(tonic::transport::Identity::from_pem(
                read("client certificate", cert)?,
                read("client key", key)?,
            ));
        }
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|error| ConnectError::Tls(error.to_string()))?;
    }
    Ok(endpoint)
}

/// The causes below `error`, joined with `: `. Layers that repeat the text of the layer
/// above (hyper wraps "tcp connect error" in "tcp connect error") are said once.
fn source_chain(error: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut above = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if text != above && !above.ends_with(&text) {
            parts.push(text.clone());
        }
        above = text;
        source = cause.source();
    }
    parts.join(": ")
}

/// Why a long-lived stream to the coordinator (a report stream, an assignment watch) ended
/// before its owner stopped it; the owner opens it again.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Call(#[from] CallError),
    #[error("the coordinator ended the stream")]
    EndedByCoordinator,
    #[error("the stream's task failed: {0}")]
    Task(String),
    #[error("no answer to the final report within {0:?}")]
    NoFinalAnswer(std::time::Duration),
}

/// A call to the coordinator that failed, as every client (CLI, ingestor, worker) reports
/// it: what was being done, the gRPC code and the coordinator's message. One place decides
/// how a status reads, whether retrying may help, and which exit code the CLI gives it.
#[derive(Debug, thiserror::Error)]
#[error("{action} failed: {} ({})", .status.message(), code_name(.status.code()))]
pub struct CallError {
    pub action: String,
    pub status: tonic::Status,
}

/// The gRPC code as its specification spells it (`NOT_FOUND`), as grpcurl prints it.
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

impl CallError {
    pub fn new(action: impl Into<String>, status: tonic::Status) -> Self {
        Self {
            action: action.into(),
            status,
        }
    }

    /// `map_err` helper: `.map_err(CallError::doing("listing channels"))`.
    pub fn doing(action: impl Into<String>) -> impl FnOnce(tonic::Status) -> Self {
        let action = action.into();
        move |status| Self::new(action, status)
    }

    pub fn code(&self) -> tonic::Code {
        self.status.code()
    }

    /// The coordinator answered that what was asked for does not exist.
    pub fn is_not_found(&self) -> bool {
        self.code() == tonic::Code::NotFound
    }

    /// The coordinator could not be reached or did not answer in time: the same call may
    /// succeed later. Anything else is an answer, and asking again gets the same one.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.code(),
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::ResourceExhausted
        )
    }

    /// The CLI's exit status for this failure (see `framefleet --help`).
    pub fn exit_code(&self) -> u8 {
        match self.code() {
            tonic::Code::NotFound => 3,
            tonic::Code::AlreadyExists => 4,
            tonic::Code::InvalidArgument | tonic::Code::OutOfRange => 5,
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => 6,
            tonic::Code::FailedPrecondition => 8,
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => 9,
            _ => 1,
        }
    }
}

impl ConnectError {
    /// True when the caller's settings are wrong (address, token, TLS files), as opposed to
    /// a coordinator that cannot be reached: a usage error, not an outage.
    pub fn is_usage_error(&self) -> bool {
        !matches!(self, Self::Unreachable { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1
                .as_deref()
                .map(|layer| layer as &(dyn std::error::Error + 'static))
        }
    }

    #[test]
    fn a_failed_call_reads_the_same_everywhere() {
        let error = CallError::new(
            "registering channel `cam`",
            tonic::Status::not_found("channel `cam` not found"),
        );
        assert_eq!(
            error.to_string(),
            "registering channel `cam` failed: channel `cam` not found (NOT_FOUND)"
        );
        assert_eq!(error.exit_code(), 3);
        assert!(!error.is_transient());
        let outage = CallError::doing("status")(tonic::Status::unavailable("connection refused"));
        assert!(outage.is_transient());
        assert_eq!(outage.exit_code(), 6);
    }

    #[test]
    fn repeated_causes_are_said_once() {
        let error = Layer(
            "transport error",
            Some(Box::new(Layer(
                "tcp connect error",
                Some(Box::new(Layer(
                    "tcp connect error",
                    Some(Box::new(Layer("Connection refused (os error 111)", None))),
                ))),
            ))),
        );
        assert_eq!(
            format!("{error}: {}", source_chain(&error)),
            "transport error: tcp connect error: Connection refused (os error 111)"
        );
    }
}
