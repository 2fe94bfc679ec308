//! How a command fails, and so which exit code the CLI gives.

/// Why a command failed: a gRPC status (its code decides the exit code), or anything else
/// with the exit code to use.
pub(crate) enum Failure {
    Status(tonic::Status),
    Other(anyhow::Error, u8),
}

impl From<tonic::Status> for Failure {
    fn from(status: tonic::Status) -> Self {
        Self::Status(status)
    }
}
