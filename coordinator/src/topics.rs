//! Topic provisioning through the Kafka admin API. Topics are sized from the schema so a
//! frame never meets the broker's default 1 MiB record limit by surprise.

use crate::error::CoordinatorError;
use framefleet_common::kafka;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
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
}

pub struct KafkaTopicAdmin {
    admin: AdminClient<DefaultClientContext>,
    bootstrap_servers: String,
    timeout: Duration,
}

impl KafkaTopicAdmin {
    pub fn new(bootstrap_servers: &str, timeout: Duration) -> Result<Self, CoordinatorError> {
        let admin = kafka::base_config(bootstrap_servers).create().map_err(|error| {
            CoordinatorError::KafkaUnavailable(format!("cannot create the Kafka admin client: {error}"))
        })?;
        Ok(Self {
            admin,
            bootstrap_servers: bootstrap_servers.to_owned(),
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
                Err((topic, code)) => {
                    return Err(CoordinatorError::KafkaUnavailable(format!(
                        "creating topic `{topic}` failed: {code}"
                    )));
                }
            }
        }
        tracing::info!(topic = %spec.name, partitions = spec.partitions, max_message_bytes = %max_message_bytes, "topic ready");
        Ok(())
    }
}
