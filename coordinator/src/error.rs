//! Domain errors of the coordinator and the one place they become gRPC statuses.

use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error("invalid `{field}`: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    #[error("{kind} `{id}` not found")]
    NotFound { kind: &'static str, id: String },
    #[error("{kind} `{id}` already exists with a different definition")]
    AlreadyExists { kind: &'static str, id: String },
    #[error(
        "invalid `channel_id`: `{channel_id}` would get Kafka topics that collide with those of channel `{existing}` (Kafka treats `.` and `_` in topic names alike)"
    )]
    TopicCollision { channel_id: String, existing: String },
    #[error(
        "{owner} would get Kafka topic `{topic}`, which Kafka takes for `{existing_topic}` of {existing_owner} (it treats `.` and `_` in topic names alike)"
    )]
    DerivedTopicCollision {
        owner: String,
        topic: String,
        existing_owner: String,
        existing_topic: String,
    },
    #[error("`{field}` is out of range: {reason}")]
    OutOfRange { field: &'static str, reason: String },
    #[error("{kind} `{id}` is registered by another live process; give this one another id")]
    MemberInUse { kind: &'static str, id: String },
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("channel `{channel_id}` is {}'s; only that ingestor or an admin may change it", if owner.is_empty() { "no ingestor".to_owned() } else { format!("ingestor `{owner}`") })]
    NotOwner { channel_id: String, owner: String },
    #[error("{0}")]
    PermissionDenied(String),
    #[error("metadata store unavailable: {0}")]
    StoreUnavailable(String),
    #[error("metadata store timed out: {0}")]
    StoreTimeout(String),
    #[error("kafka unavailable: {0}")]
    KafkaUnavailable(String),
    #[error("stored record `{key}` is corrupt: {reason}")]
    CorruptRecord { key: String, reason: String },
}

impl CoordinatorError {
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field,
            reason: reason.into(),
        }
    }
}

/// An `expected_revision` check: 0 means any revision; any other value must be the stored
/// record's (`kind` `id`'s) current revision, FAILED_PRECONDITION otherwise.
pub fn check_revision(kind: &'static str, id: &str, expected: i64, actual: i64) -> Result<(), CoordinatorError> {
    if expected != 0 && expected != actual {
        return Err(CoordinatorError::FailedPrecondition(format!(
            "{kind} `{id}` is at revision {actual}, not the expected {expected}; read it again"
        )));
    }
    Ok(())
}

impl From<CoordinatorError> for Status {
    fn from(error: CoordinatorError) -> Self {
        let message = error.to_string();
        match error {
            CoordinatorError::InvalidArgument { .. } => Status::invalid_argument(message),
            CoordinatorError::NotFound { .. } => Status::not_found(message),
            CoordinatorError::OutOfRange { .. } => Status::out_of_range(message),
            CoordinatorError::AlreadyExists { .. }
            | CoordinatorError::MemberInUse { .. }
            | CoordinatorError::TopicCollision { .. }
            | CoordinatorError::DerivedTopicCollision { .. } => Status::already_exists(message),
            CoordinatorError::FailedPrecondition(_) => Status::failed_precondition(message),
            CoordinatorError::NotOwner { .. } | CoordinatorError::PermissionDenied(_) => {
                Status::permission_denied(message)
            }
            CoordinatorError::StoreTimeout(_) => Status::deadline_exceeded(message),
            CoordinatorError::StoreUnavailable(_) | CoordinatorError::KafkaUnavailable(_) => {
                Status::unavailable(message)
            }
            CoordinatorError::CorruptRecord { .. } => Status::internal(message),
        }
    }
}

/// The field an INVALID_ARGUMENT names; panics on any other error (the registries' tests).
#[cfg(test)]
pub(crate) fn invalid_field(error: CoordinatorError) -> &'static str {
    match error {
        CoordinatorError::InvalidArgument { field, .. } => field,
        other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_has_its_grpc_code() {
        let cases = [
            (
                CoordinatorError::invalid("channel_id", "empty"),
                tonic::Code::InvalidArgument,
            ),
            (
                CoordinatorError::NotFound {
                    kind: "channel",
                    id: "a".into(),
                },
                tonic::Code::NotFound,
            ),
            (
                CoordinatorError::AlreadyExists {
                    kind: "channel",
                    id: "a".into(),
                },
                tonic::Code::AlreadyExists,
            ),
            (
                CoordinatorError::FailedPrecondition("revision moved".into()),
                tonic::Code::FailedPrecondition,
            ),
            (
                CoordinatorError::StoreUnavailable("down".into()),
                tonic::Code::Unavailable,
            ),
            (
                CoordinatorError::StoreTimeout("slow".into()),
                tonic::Code::DeadlineExceeded,
            ),
            (
                CoordinatorError::KafkaUnavailable("down".into()),
                tonic::Code::Unavailable,
            ),
            (
                CoordinatorError::NotOwner {
                    channel_id: "a".into(),
                    owner: "ingestor-1".into(),
                },
                tonic::Code::PermissionDenied,
            ),
            (
                CoordinatorError::PermissionDenied("role observer …".into()),
                tonic::Code::PermissionDenied,
            ),
        ];
        for (error, code) in cases {
            assert_eq!(Status::from(error).code(), code);
        }
    }

    #[test]
    fn invalid_argument_names_the_field() {
        let status = Status::from(CoordinatorError::invalid("schema.width", "must be at least 1"));
        assert!(status.message().contains("schema.width"), "{}", status.message());
    }
}
