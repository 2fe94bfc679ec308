//! Topic provisioning through the Kafka admin API. Topics are sized from the schema so a
//! frame never meets the broker's default 1 MiB record limit by surprise.

use crate::error::CoordinatorError;
use framefleet_common::kafka;
use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;
use std::future::Future;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub replication: i32,
    /// Largest record payload the topic must accept.
    pub max_payload_bytes: u64,
    pub retention_ms: i64,
}

impl TopicSpec {
    /// The topic's `max.message.bytes`: the largest payload plus room for headers, and never
    /// less than one full producer batch (the limit applies to batches).
    pub fn max_message_bytes(&self) -> u64 {
        kafka::topic_max_message_bytes(self.max_payload_bytes)
    }
}

pub trait TopicAdmin: Send + Sync + 'static {
    /// Creates the topic, or does nothing if it already exists.
    fn ensure_topic(&self, spec: &TopicSpec) -> impl Future<Output = Result<(), CoordinatorError>> + Send;

    /// Sets an existing topic's `max.message.bytes` (and retention, which a non-incremental
    /// config change would otherwise reset) to what `spec` asks for.
    fn resize_topic(&self, spec: &TopicSpec) -> impl Future<Output = Result<(), CoordinatorError>> + Send;
}

pub struct KafkaTopicAdmin {
    admin: AdminClient<DefaultClientContext>,
    bootstrap_servers: String,
    timeout: Duration,
}

impl KafkaTopicAdmin {
    pub fn new(kafka: &kafka::KafkaConnection, timeout: Duration) -> Result<Self, CoordinatorError> {
        let admin = kafka::base_config(kafka).create().map_err(|error| {
            CoordinatorError::KafkaUnavailable(format!("cannot create the Kafka admin client: {error}"))
        })?;
        Ok(Self {
            admin,
            bootstrap_servers: kafka.brokers.clone(),
            timeout,
        })
    }
}

impl TopicAdmin for KafkaTopicAdmin {
    async fn ensure_topic(&self, spec: &TopicSpec) -> Result<(), CoordinatorError> {
        let max_message_bytes = spec.max_message_bytes().to_string();
        let retention_ms = spec.retention_ms.to_string();
        let new_topic = NewTopic::new(&spec.name, spec.partitions, TopicReplication::Fixed(spec.replication))
            .set("max.message.bytes", &max_message_bytes)
            .set("retention.ms", &retention_ms);
        let options = AdminOptions::new()
            .request_timeout(Some(self.timeout))
            .operation_timeout(Some(self.timeout));
        let unreachable = || {
            CoordinatorError::KafkaUnavailable(format!(
                "broker at {} did not answer within {:?} while creating topic `{}`",
                self.bootstrap_servers, self.timeout, spec.name
            ))
        };
        // The admin call has its own timeouts, but an unreachable bootstrap server can stall
        // before any request is sent; the outer deadline covers that.
        let results = tokio::time::timeout(
            self.timeout + Duration::from_secs(1),
            self.admin.create_topics([&new_topic], &options),
        )
        .await
        .map_err(|_| unreachable())?
        .map_err(|error| match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::OperationTimedOut) | Some(RDKafkaErrorCode::BrokerTransportFailure) => unreachable(),
            _ => CoordinatorError::KafkaUnavailable(format!("creating topic `{}` failed: {error}", spec.name)),
        })?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, RDKafkaErrorCode::OperationTimedOut | RDKafkaErrorCode::RequestTimedOut)) => {
                    return Err(CoordinatorError::KafkaUnavailable(format!(
                        "broker at {} timed out creating topic `{topic}`",
                        self.bootstrap_servers
                    )));
                }
                Err((topic, code)) => return Err(creation_refused(&self.bootstrap_servers, &topic, code)),
            }
        }
        tracing::info!(topic = %spec.name, partitions = spec.partitions, max_message_bytes = %max_message_bytes, "topic ready");
        Ok(())
    }

    async fn resize_topic(&self, spec: &TopicSpec) -> Result<(), CoordinatorError> {
        let max_message_bytes = spec.max_message_bytes().to_string();
        let retention_ms = spec.retention_ms.to_string();
        let change = AlterConfig::new(ResourceSpecifier::Topic(&spec.name))
            .set("max.message.bytes", &max_message_bytes)
            .set("retention.ms", &retention_ms);
        let options = AdminOptions::new()
            .request_timeout(Some(self.timeout))
            .operation_timeout(Some(self.timeout));
        let failed = |reason: String| {
            CoordinatorError::KafkaUnavailable(format!("resizing topic `{}` failed: {reason}", spec.name))
        };
        let results = tokio::time::timeout(
            self.timeout + Duration::from_secs(1),
            self.admin.alter_configs([&change], &options),
        )
        .await
        .map_err(|_| failed(format!("no answer within {:?}", self.timeout)))?
        .map_err(|error| match error {
            // `rdkafka_error_code()` says None for admin errors; the code is inside.
            rdkafka::error::KafkaError::AdminOp(RDKafkaErrorCode::UnsupportedFeature) => unsupported(&spec.name),
            other => failed(other.to_string()),
        })?;
        for result in results {
            match result {
                Ok(_) => {}
                Err((_, RDKafkaErrorCode::UnsupportedFeature)) => return Err(unsupported(&spec.name)),
                Err((_, code)) => return Err(failed(code.to_string())),
            }
        }
        tracing::info!(topic = %spec.name, max_message_bytes = %max_message_bytes, "topic resized");
        Ok(())
    }
}

/// Some Kafka-protocol brokers (Nisshi among them) cannot change a topic's config. Then a
/// larger frame size cannot be taken by the channel's own topics: say how to get there.
fn unsupported(topic: &str) -> CoordinatorError {
    CoordinatorError::FailedPrecondition(format!(
        "the broker cannot change the config of topic `{topic}` (AlterConfigs unsupported), so it cannot take \
         larger frames; move the channel to the shared pool first (pool topics take frames up to the \
         coordinator's --max-frame-mib)"
    ))
}

/// Where a channel's frames go: the topic names and how each is sized.
#[derive(Debug, Clone)]
pub struct Placement {
    pub partitions: i32,
    pub replication: i32,
    pub retention_ms: i64,
    /// Topics of the shared pool.
    pub pool_topics: u32,
    /// Partitions of each pool topic: channels are keyed by id, so more partitions spread
    /// a pool topic's channels over more workers.
    pub pool_partitions: i32,
    /// The coordinator's frame limit; pool topics accept any channel, so they are sized to it.
    pub max_frame_bytes: u64,
}

impl Placement {
    pub fn dedicated(&self, channel_id: &str, max_payload_bytes: u64) -> TopicSpec {
        self.spec(
            format!("{}{channel_id}", kafka::CHANNEL_TOPIC_PREFIX),
            self.partitions,
            max_payload_bytes,
        )
    }

    pub fn fan_out(&self, channel_id: &str, pipeline: &str, max_payload_bytes: u64) -> TopicSpec {
        self.spec(
            format!("{}{pipeline}.{channel_id}", kafka::FANOUT_TOPIC_PREFIX),
            self.partitions,
            max_payload_bytes,
        )
    }

    pub fn pool_topic(&self, index: u32) -> TopicSpec {
        self.spec(
            format!("{}{index}", kafka::POOL_TOPIC_PREFIX),
            self.pool_partitions,
            self.max_frame_bytes,
        )
    }

    /// The pool topic with the least declared load; `load_of` gives a topic's current load in
    /// bytes/s. Ties go to the lowest index, so placement is deterministic.
    pub fn least_loaded_pool_topic(&self, load_of: impl Fn(&str) -> u64) -> TopicSpec {
        (0..self.pool_topics.max(1))
            .map(|index| self.pool_topic(index))
            .min_by_key(|spec| load_of(&spec.name))
            .unwrap_or_else(|| self.pool_topic(0))
    }

    fn spec(&self, name: String, partitions: i32, max_payload_bytes: u64) -> TopicSpec {
        TopicSpec {
            name,
            partitions: partitions.max(1),
            replication: self.replication,
            max_payload_bytes,
            retention_ms: self.retention_ms,
        }
    }
}

/// A broker's answer to a topic creation, as the error the caller should see: a request the
/// cluster cannot satisfy as configured (too few brokers for the replication factor, a
/// refused config, no permission) is a failed precondition to fix, not an outage to retry.
fn creation_refused(bootstrap_servers: &str, topic: &str, code: RDKafkaErrorCode) -> CoordinatorError {
    use RDKafkaErrorCode as Code;
    match code {
        Code::InvalidTopic => CoordinatorError::invalid(
            "channel_id",
            format!("the broker refuses `{topic}` as a topic name ({code})"),
        ),
        Code::InvalidReplicationFactor
        | Code::InvalidPartitions
        | Code::InvalidConfig
        | Code::InvalidRequest
        | Code::PolicyViolation
        | Code::TopicAuthorizationFailed
        | Code::ClusterAuthorizationFailed
        | Code::UnsupportedVersion => CoordinatorError::FailedPrecondition(format!(
            "the broker at {bootstrap_servers} refuses to create topic `{topic}`: {code}; check the coordinator's topic settings (--topic-partitions, --topic-replication, --topic-retention-hours) against the cluster"
        )),
        _ => CoordinatorError::KafkaUnavailable(format!("creating topic `{topic}` failed: {code}")),
    }
}

#[cfg(test)]
mod refusal_tests {
    use super::*;

    #[test]
    fn a_refused_topic_is_a_precondition_or_an_argument_not_an_outage() {
        let code = |error: CoordinatorError| tonic::Status::from(error).code();
        assert_eq!(
            code(creation_refused(
                "b:9092",
                "t",
                RDKafkaErrorCode::InvalidReplicationFactor
            )),
            tonic::Code::FailedPrecondition
        );
        assert_eq!(
            code(creation_refused(
                "b:9092",
                "t",
                RDKafkaErrorCode::TopicAuthorizationFailed
            )),
            tonic::Code::FailedPrecondition
        );
        assert_eq!(
            code(creation_refused("b:9092", "t", RDKafkaErrorCode::InvalidTopic)),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            code(creation_refused("b:9092", "t", RDKafkaErrorCode::NotController)),
            tonic::Code::Unavailable
        );
    }
}
