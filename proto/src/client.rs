//! Connecting to the coordinator with deadlines, shared by every client binary.

use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("coordinator address `{address}` is not a valid URI: {reason}")]
    BadAddress { address: String, reason: String },
    #[error("coordinator at {address} is unreachable ({reason}); start it or pass --coordinator")]
    Unreachable { address: String, reason: String },
}

/// Connects to the coordinator, failing within `timeout` instead of hanging. Every later
/// call on the channel also carries `timeout` as its deadline.
pub async fn connect_coordinator(address: &str, timeout: Duration) -> Result<Channel, ConnectError> {
    connect(address, timeout, true).await
}

/// Like [`connect_coordinator`], for long-lived streams: only connecting is bounded by
/// `timeout`, calls carry no deadline (a deadline would cut a stream that is meant to stay
/// open).
pub async fn connect_coordinator_for_streams(address: &str, timeout: Duration) -> Result<Channel, ConnectError> {
    connect(address, timeout, false).await
}

async fn connect(address: &str, timeout: Duration, call_deadline: bool) -> Result<Channel, ConnectError> {
    let with_scheme = if address.contains("://") {
        address.to_owned()
    } else {
        format!("http://{address}")
    };
    let endpoint = Endpoint::from_shared(with_scheme).map_err(|error| ConnectError::BadAddress {
        address: address.to_owned(),
        reason: error.to_string(),
    })?;
    let mut endpoint = endpoint
        .connect_timeout(timeout)
        .tcp_keepalive(Some(Duration::from_secs(10)));
    if call_deadline {
        endpoint = endpoint.timeout(timeout);
    }
    let unreachable = |reason: String| ConnectError::Unreachable {
        address: address.to_owned(),
        reason,
    };
    match tokio::time::timeout(timeout, endpoint.connect()).await {
        Ok(Ok(channel)) => Ok(channel),
        Ok(Err(error)) => Err(unreachable(format!("{error}: {}", source_chain(&error)))),
        Err(_elapsed) => Err(unreachable(format!("no answer within {timeout:?}"))),
    }
}

fn source_chain(error: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut source = error.source();
    while let Some(cause) = source {
        parts.push(cause.to_string());
        source = cause.source();
    }
    parts.join(": ")
}
