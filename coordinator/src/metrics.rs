//! The coordinator's Prometheus metrics (`--metrics-addr`, text format at `/metrics`): the
//! paper's per-topic metrics (accumulate, consume, lag in frames and seconds), per-channel
//! ingest counts and fleet totals, from the same fleet status `GetFleetStatus` answers,
//! refreshed every few seconds in the background so a scrape never waits on Kafka.
//! Names: a `framefleet_` prefix, base units; values are the status's, so they are gauges.
//! Two gauges do not come from that status: `coordinator_is_leader` is this process's own
//! belief (its election term), so a coordinator cut off from etcd shows 0 as soon as it steps
//! down rather than the last status it could read; `coordinator_status_age_seconds` says how old
//! the status behind the other gauges is, so a scrape can tell stale figures from fresh ones.

use crate::grpc::service::FleetApi;
use crate::kafka::topics::TopicAdmin;
use crate::store::MetadataStore;
use framefleet_proto::v1::FleetStatus;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TopicLabel {
    topic: String,
    /// The reader (a pipeline's consumer group); empty for the workers serving none.
    pipeline: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabel {
    channel_id: String,
    ingestor_id: String,
}

type IntGauges<L> = Family<L, Gauge>;
type FloatGauges<L> = Family<L, Gauge<f64, AtomicU64>>;

/// The last fleet status and when it was read, shared between the refresher and the scrape
/// endpoint.
pub type LatestStatus = Arc<Mutex<Option<(FleetStatus, Instant)>>>;

/// Keeps `latest` at most `interval` old until `stop`.
pub fn spawn_refresher<S, T>(
    api: FleetApi<S, T>,
    interval: Duration,
    stop: CancellationToken,
) -> (LatestStatus, tokio::task::JoinHandle<()>)
where
    S: MetadataStore + Clone + Send + Sync + 'static,
    T: TopicAdmin + Send + Sync + 'static,
{
    let latest: LatestStatus = Arc::default();
    let shared = Arc::clone(&latest);
    let task = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            match api.status().await {
                Ok(status) => {
                    *shared.lock().unwrap_or_else(PoisonError::into_inner) = Some((status, Instant::now()));
                }
                Err(error) => tracing::warn!(%error, "fleet status for metrics failed"),
            }
        }
    });
    (latest, task)
}

fn gauge(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The Prometheus text format of `leading` (whether this coordinator holds a term now) and,
/// once there is one, of the last fleet status and its age (`status_age`).
pub fn render(leading: bool, status: Option<(&FleetStatus, Duration)>) -> String {
    let mut registry = Registry::with_prefix("framefleet");
    let leader = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
    leader.set(i64::from(leading));
    registry.register(
        "coordinator_is_leader",
        "1 while this coordinator holds the leader term (its own view, not read from etcd)",
        leader,
    );
    if let Some((status, age)) = status {
        register_status(&mut registry, status, age);
    }
    let mut text = String::new();
    if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &registry) {
        tracing::warn!(%error, "encoding metrics failed");
    }
    text
}

fn register_status(registry: &mut Registry, status: &FleetStatus, age: Duration) {
    let status_age = Gauge::<f64, AtomicU64>::default();
    status_age.set(age.as_secs_f64());
    registry.register(
        "coordinator_status_age_seconds",
        "Age of the fleet status the other gauges come from (grows while etcd or Kafka cannot be read)",
        status_age,
    );
    let accumulate = IntGauges::<TopicLabel>::default();
    let consume = IntGauges::<TopicLabel>::default();
    let lag = IntGauges::<TopicLabel>::default();
    let lag_seconds = FloatGauges::<TopicLabel>::default();
    let accumulate_rate = FloatGauges::<TopicLabel>::default();
    let consume_rate = FloatGauges::<TopicLabel>::default();
    for topic in &status.topics {
        let label = TopicLabel {
            topic: topic.topic.clone(),
            pipeline: topic.pipeline.clone(),
        };
        accumulate.get_or_create(&label).set(gauge(topic.accumulate));
        consume.get_or_create(&label).set(gauge(topic.consume));
        lag.get_or_create(&label).set(gauge(topic.lag));
        lag_seconds.get_or_create(&label).set(topic.lag_seconds);
        accumulate_rate.get_or_create(&label).set(topic.accumulate_per_second);
        consume_rate.get_or_create(&label).set(topic.consume_per_second);
    }
    let captured = IntGauges::<ChannelLabel>::default();
    let acknowledged = IntGauges::<ChannelLabel>::default();
    let failed = IntGauges::<ChannelLabel>::default();
    let dropped = IntGauges::<ChannelLabel>::default();
    // The ledgers kept in etcd, as `status`, `watch` and `audit` count: they outlive the
    // ingestor, and every coordinator serves the same ones.
    for ledger in &status.ledgers {
        let label = ChannelLabel {
            channel_id: ledger.channel_id.clone(),
            ingestor_id: ledger.ingestor_id.clone(),
        };
        captured.get_or_create(&label).set(gauge(ledger.frames_captured));
        acknowledged
            .get_or_create(&label)
            .set(gauge(ledger.frames_acknowledged));
        failed.get_or_create(&label).set(gauge(ledger.frames_failed));
        dropped.get_or_create(&label).set(gauge(ledger.frames_dropped));
    }
    let workers = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
    workers.set(i64::try_from(status.workers.iter().filter(|worker| worker.registered).count()).unwrap_or(i64::MAX));
    let processed = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
    processed.set(gauge(status.frames_processed));
    let fleet_rate = Gauge::<f64, AtomicU64>::default();
    fleet_rate.set(status.frames_per_second);
    let kafka_up = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
    kafka_up.set(i64::from(status.kafka_error.is_empty()));

    registry.register(
        "topic_accumulate_frames",
        "Frames written to the topic (sum of partition high watermarks)",
        accumulate,
    );
    registry.register(
        "topic_consume_frames",
        "Frames the worker group has committed on the topic",
        consume,
    );
    registry.register("topic_lag_frames", "accumulate - consume", lag);
    registry.register(
        "topic_lag_seconds",
        "Lag over the declared frame rate of the topic's active channels",
        lag_seconds,
    );
    registry.register(
        "topic_accumulate_frames_per_second",
        "Frames written per second, between two statuses",
        accumulate_rate,
    );
    registry.register(
        "topic_consume_frames_per_second",
        "Frames committed per second, between two statuses",
        consume_rate,
    );
    registry.register(
        "channel_captured_frames",
        "Frames the channel's ingestor captured (its ledger as stored in etcd)",
        captured,
    );
    registry.register(
        "channel_acknowledged_frames",
        "Frames of the channel Kafka acknowledged (its ledger as stored in etcd)",
        acknowledged,
    );
    registry.register(
        "channel_failed_frames",
        "Frames of the channel that failed to deliver",
        failed,
    );
    registry.register(
        "channel_dropped_frames",
        "Frames of the channel dropped by the drop-oldest policy",
        dropped,
    );
    registry.register("fleet_workers", "Registered workers", workers);
    registry.register(
        "fleet_frames_processed",
        "Frames processed, summed over the workers' reports",
        processed,
    );
    registry.register(
        "fleet_frames_per_second",
        "Frames processed per second over the fleet",
        fleet_rate,
    );
    registry.register(
        "kafka_up",
        "1 when the last status could read Kafka's offsets",
        kafka_up,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use framefleet_proto::v1::{ChannelLedger, TopicMetrics};

    #[test]
    fn the_papers_metrics_per_topic_and_channel() {
        let status = FleetStatus {
            topics: vec![TopicMetrics {
                topic: "framefleet.frames.cam".into(),
                accumulate: 100,
                consume: 90,
                lag: 10,
                lag_seconds: 0.4,
                ..TopicMetrics::default()
            }],
            ledgers: vec![ChannelLedger {
                channel_id: "cam".into(),
                ingestor_id: "i1".into(),
                frames_captured: 100,
                frames_acknowledged: 100,
                ..ChannelLedger::default()
            }],
            leader_id: "c1".into(),
            ..FleetStatus::default()
        };
        let text = render(true, Some((&status, Duration::from_millis(1500))));
        for expected in [
            "framefleet_topic_accumulate_frames{topic=\"framefleet.frames.cam\",pipeline=\"\"} 100",
            "framefleet_topic_consume_frames{topic=\"framefleet.frames.cam\",pipeline=\"\"} 90",
            "framefleet_topic_lag_frames{topic=\"framefleet.frames.cam\",pipeline=\"\"} 10",
            "framefleet_topic_lag_seconds{topic=\"framefleet.frames.cam\",pipeline=\"\"} 0.4",
            "framefleet_channel_acknowledged_frames{channel_id=\"cam\",ingestor_id=\"i1\"} 100",
            "framefleet_coordinator_is_leader 1",
            "framefleet_kafka_up 1",
            "framefleet_coordinator_status_age_seconds 1.5",
        ] {
            assert!(text.contains(expected), "missing `{expected}` in\n{text}");
        }
    }

    #[test]
    fn leadership_is_this_coordinators_own_view_even_without_a_status() {
        // The status names this coordinator as leader (read from etcd before it was cut off),
        // but it no longer holds a term: the gauge follows the term.
        let status = FleetStatus {
            leader_id: "c1".into(),
            ..FleetStatus::default()
        };
        let text = render(false, Some((&status, Duration::from_secs(30))));
        assert!(text.contains("framefleet_coordinator_is_leader 0"), "{text}");
        assert!(text.contains("framefleet_coordinator_status_age_seconds 30"), "{text}");
        let text = render(true, None);
        assert!(text.contains("framefleet_coordinator_is_leader 1"), "{text}");
        assert!(!text.contains("framefleet_topic_"), "{text}");
    }
}
