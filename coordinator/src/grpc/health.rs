//! The coordinator's gRPC health (`grpc.health.v1`) follows whether it can reach etcd: every
//! answer it gives depends on the metadata store, so a coordinator cut off from etcd but not
//! from its clients reports NOT_SERVING, and clients with several coordinators
//! (`framefleet_proto::client`) send their calls to the others instead of failing half of them.
//! It serves again after the first successful probe.

use crate::leader::LEADER_KEY;
use crate::store::MetadataStore;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// The services whose status follows etcd; "" is the server as a whole.
pub const SERVICES: [&str; 7] = [
    "",
    "framefleet.v1.ChannelService",
    "framefleet.v1.SchemaService",
    "framefleet.v1.PipelineService",
    "framefleet.v1.ModelService",
    "framefleet.v1.AssignmentService",
    "framefleet.v1.FleetService",
];

/// How often etcd is probed, and how long one probe may take.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Reads per probe, sent at once: the etcd client spreads requests over the cluster's
/// members, so one member cut off fails single reads now and then while etcd as a whole
/// answers; a probe succeeds when any of its reads does.
const READS_PER_PROBE: usize = 3;
/// How long without a successful probe before the coordinator says it is not serving: one
/// slow probe during an etcd leader change should not send every client elsewhere.
const UNREACHABLE_AFTER: Duration = Duration::from_secs(3);

pub async fn set_all(reporter: &HealthReporter, status: ServingStatus) {
    for service in SERVICES {
        reporter.set_service_status(service, status).await;
    }
}

/// Probes etcd every [`PROBE_INTERVAL`] until shutdown and keeps the health status in step:
/// NOT_SERVING once no probe has succeeded for [`UNREACHABLE_AFTER`], SERVING after the next
/// one that does.
pub async fn follow_store<S: MetadataStore>(store: S, reporter: HealthReporter, shutdown: CancellationToken) {
    let mut last_success = tokio::time::Instant::now();
    let mut serving = true;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(PROBE_INTERVAL) => {}
        }
        let reads = (0..READS_PER_PROBE).map(|_| tokio::time::timeout(PROBE_INTERVAL, store.get(LEADER_KEY)));
        if futures::future::join_all(reads)
            .await
            .iter()
            .any(|read| matches!(read, Ok(Ok(_))))
        {
            last_success = tokio::time::Instant::now();
        }
        let should_serve = last_success.elapsed() < UNREACHABLE_AFTER;
        if should_serve != serving {
            serving = should_serve;
            if serving {
                tracing::info!("etcd reachable again: serving");
                set_all(&reporter, ServingStatus::Serving).await;
            } else {
                tracing::warn!(
                    unreachable_for = ?last_success.elapsed(),
                    "etcd unreachable: health NOT_SERVING until it answers"
                );
                set_all(&reporter, ServingStatus::NotServing).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use tonic_health::pb::health_server::Health;
    use tonic_health::pb::{HealthCheckRequest, health_check_response};
    use tonic_health::server::HealthService;

    async fn status(service: &HealthService, name: &str) -> i32 {
        service
            .check(tonic::Request::new(HealthCheckRequest { service: name.into() }))
            .await
            .expect("known service")
            .into_inner()
            .status
    }

    async fn wait_for(service: &HealthService, expected: health_check_response::ServingStatus) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while status(service, "").await != expected as i32 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "health never became {expected:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn not_serving_while_the_store_is_unreachable_and_serving_again_after() {
        use health_check_response::ServingStatus as Status;
        let store = MemoryStore::default();
        let reporter = HealthReporter::new();
        set_all(&reporter, ServingStatus::Serving).await;
        let service = HealthService::from_health_reporter(reporter.clone());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(follow_store(store.clone(), reporter, shutdown.clone()));

        // Reachable: stays serving across several probes.
        tokio::time::sleep(PROBE_INTERVAL * 3).await;
        assert_eq!(status(&service, "").await, Status::Serving as i32);

        store.set_reachable(false);
        wait_for(&service, Status::NotServing).await;
        for name in SERVICES {
            assert_eq!(status(&service, name).await, Status::NotServing as i32, "{name}");
        }
        store.set_reachable(true);
        wait_for(&service, Status::Serving).await;
        shutdown.cancel();
        task.await.expect("follow_store ends on shutdown");
    }
}
