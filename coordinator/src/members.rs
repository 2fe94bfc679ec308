//! Fleet membership in etcd. A process is registered while it keeps its report stream open:
//! the coordinator holds an etcd lease on its behalf, renews it as reports arrive and revokes
//! it when the stream ends, breaks or goes silent for the TTL. etcd, not coordinator memory,
//! says who is registered, so any coordinator (and `etcdctl`) sees the same fleet, and a
//! member whose coordinator dies disappears when the lease runs out.

use crate::error::CoordinatorError;
use crate::fleet::FleetRegistry;
use crate::store::{LeasedOutcome, MetadataStore};
use framefleet_proto::v1::{IngestorReport, WorkerReport};
use futures::{Stream, StreamExt};
use std::collections::HashSet;
use std::time::{Duration, Instant};

pub const WORKERS_PREFIX: &str = "members/workers/";
pub const INGESTORS_PREFIX: &str = "members/ingestors/";
/// etcd's own floor is 1 s; below 2 s a keep-alive round trip under load could miss it.
pub const MIN_MEMBER_TTL: Duration = Duration::from_secs(2);

#[derive(serde::Serialize, serde::Deserialize)]
struct MemberRecord {
    id: String,
    device: String,
    registered_at_unix_ms: i64,
    /// Workers never take assignments; an ingestor says so in its first report.
    #[serde(default)]
    accepts_assignments: bool,
}

/// What a report stream carries: one kind of process, identified by an id in every report.
pub trait MemberReport: Clone + Send + 'static {
    const KIND: &'static str;
    const KEY_PREFIX: &'static str;
    const ID_FIELD: &'static str;
    fn member_id(&self) -> &str;
    fn description(&self) -> &str;
    fn accepts_assignments(&self) -> bool {
        false
    }
    fn record_in(self, fleet: &FleetRegistry) -> Result<(), CoordinatorError>;
}

impl MemberReport for WorkerReport {
    const KIND: &'static str = "worker";
    const KEY_PREFIX: &'static str = WORKERS_PREFIX;
    const ID_FIELD: &'static str = "worker_id";
    fn member_id(&self) -> &str {
        &self.worker_id
    }
    fn description(&self) -> &str {
        &self.device
    }
    fn record_in(self, fleet: &FleetRegistry) -> Result<(), CoordinatorError> {
        fleet.record_worker(self)
    }
}

impl MemberReport for IngestorReport {
    const KIND: &'static str = "ingestor";
    const KEY_PREFIX: &'static str = INGESTORS_PREFIX;
    const ID_FIELD: &'static str = "ingestor_id";
    fn member_id(&self) -> &str {
        &self.ingestor_id
    }
    fn description(&self) -> &str {
        ""
    }
    fn accepts_assignments(&self) -> bool {
        self.accepts_assignments
    }
    fn record_in(self, fleet: &FleetRegistry) -> Result<(), CoordinatorError> {
        fleet.record_ingestor(self)
    }
}

pub struct Membership<S> {
    store: S,
    ttl: Duration,
}

/// How a report stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// The worker closed the stream: a clean shutdown.
    Closed,
    /// The connection broke (the process died or the network failed).
    Broken,
    /// No report for a whole TTL.
    Silent,
}

impl<S: MetadataStore> Membership<S> {
    pub fn new(store: S, ttl: Duration) -> Self {
        Self {
            store,
            ttl: ttl.max(MIN_MEMBER_TTL),
        }
    }

    /// Ids of the workers whose registration is alive in etcd.
    pub async fn registered_workers(&self) -> Result<HashSet<String>, CoordinatorError> {
        self.registered(WORKERS_PREFIX).await
    }

    /// Ids of the ingestors whose registration is alive in etcd.
    pub async fn registered_ingestors(&self) -> Result<HashSet<String>, CoordinatorError> {
        self.registered(INGESTORS_PREFIX).await
    }

    /// Ids of the registered ingestors that take channels from the coordinator.
    pub async fn assignable_ingestors(&self) -> Result<HashSet<String>, CoordinatorError> {
        Ok(self
            .store
            .list(INGESTORS_PREFIX)
            .await?
            .into_iter()
            .filter(|stored| {
                serde_json::from_slice::<MemberRecord>(&stored.value).is_ok_and(|member| member.accepts_assignments)
            })
            .filter_map(|stored| stored.key.strip_prefix(INGESTORS_PREFIX).map(str::to_owned))
            .collect())
    }

    async fn registered(&self, prefix: &str) -> Result<HashSet<String>, CoordinatorError> {
        Ok(self
            .store
            .list(prefix)
            .await?
            .into_iter()
            .filter_map(|stored| stored.key.strip_prefix(prefix).map(str::to_owned))
            .collect())
    }

    /// Serves one process's report stream from its first report to its end. The first report
    /// registers the process (`ALREADY_EXISTS` if a live process holds that id); every report
    /// is recorded in `fleet`; the registration is revoked however the stream ends.
    ///
    /// When the process closes the stream (a clean shutdown), its last report is handed to
    /// `store_final` before the registration is revoked and the stream is answered: an OK
    /// answer tells the process its final counts are durable. If `store_final` fails, the
    /// stream ends `UNAVAILABLE` and the process sends them again, to any coordinator.
    pub async fn serve_stream<Report, R>(
        &self,
        fleet: &FleetRegistry,
        reports: R,
        store_final: impl AsyncFnOnce(Report) -> Result<(), CoordinatorError>,
    ) -> Result<StreamEnd, CoordinatorError>
    where
        Report: MemberReport,
        R: Stream<Item = Result<Report, tonic::Status>> + Unpin + Send,
    {
        let mut reports = reports;
        let first = match tokio::time::timeout(self.ttl, reports.next()).await {
            Ok(Some(Ok(report))) => report,
            Ok(Some(Err(status))) if status.code() == tonic::Code::PermissionDenied => {
                return Err(CoordinatorError::PermissionDenied(status.message().to_owned()));
            }
            Ok(Some(Err(status))) => {
                return Err(CoordinatorError::invalid(
                    "reports",
                    format!("stream broke: {}", status.message()),
                ));
            }
            Ok(None) | Err(_) => {
                return Err(CoordinatorError::invalid(
                    "reports",
                    format!("no report within {:?} of opening the stream", self.ttl),
                ));
            }
        };
        let kind = Report::KIND;
        let member_id = first.member_id().to_owned();
        let member = MemberRecord {
            id: member_id.clone(),
            device: first.description().to_owned(),
            registered_at_unix_ms: framefleet_common::startup::unix_time_ms(),
            accepts_assignments: first.accepts_assignments(),
        };
        first.clone().record_in(fleet)?;
        let mut last = first;
        let key = format!("{}{member_id}", Report::KEY_PREFIX);
        let record =
            serde_json::to_vec(&member).map_err(|error| CoordinatorError::invalid("report", error.to_string()))?;
        let mut lease = match self.store.create_leased(&key, record.clone(), self.ttl).await? {
            LeasedOutcome::Created { lease, .. } => lease,
            LeasedOutcome::Exists(_) => {
                return Err(CoordinatorError::MemberInUse { kind, id: member_id });
            }
        };
        tracing::info!(kind, member = %member_id, ttl = ?self.ttl, "member registered");

        let renew_every = self.ttl / 3;
        let mut last_renewal = Instant::now();
        let end = loop {
            match tokio::time::timeout(self.ttl, reports.next()).await {
                Ok(Some(Ok(report))) => {
                    if report.member_id() != member_id {
                        let _ = self.store.revoke(lease).await;
                        return Err(CoordinatorError::invalid(
                            Report::ID_FIELD,
                            format!(
                                "changed from `{member_id}` to `{}` within one stream",
                                report.member_id()
                            ),
                        ));
                    }
                    if let Err(error) = report.clone().record_in(fleet) {
                        tracing::warn!(kind, member = %member_id, %error, "report refused");
                    }
                    last = report;
                }
                Ok(Some(Err(_))) => break StreamEnd::Broken,
                Ok(None) => break StreamEnd::Closed,
                Err(_) => break StreamEnd::Silent,
            }
            if last_renewal.elapsed() >= renew_every {
                match self.store.keep_alive(lease).await {
                    Ok(true) => last_renewal = Instant::now(),
                    // The lease ran out (etcd or this coordinator stalled for a TTL): register
                    // again rather than leave a live worker unlisted.
                    Ok(false) => match self.store.create_leased(&key, record.clone(), self.ttl).await {
                        Ok(LeasedOutcome::Created { lease: renewed, .. }) => {
                            lease = renewed;
                            last_renewal = Instant::now();
                        }
                        Ok(LeasedOutcome::Exists(_)) => {
                            tracing::warn!(kind, member = %member_id, "registration taken over by another process");
                        }
                        Err(error) => tracing::warn!(kind, member = %member_id, %error, "cannot register again"),
                    },
                    // Tried again with the next report (about a second), not a third of the TTL
                    // later: when the etcd member this coordinator talked to dies, the next
                    // attempt goes to another member before the lease runs out.
                    // Past two thirds of the TTL the lease may run out before the next try: this
                    // coordinator cannot keep the member registered (it is cut off from etcd), so
                    // the stream ends UNAVAILABLE and the client reopens it, through its health
                    // probes, on a coordinator that can.
                    Err(error) if last_renewal.elapsed() >= self.ttl * 2 / 3 => {
                        tracing::warn!(kind, member = %member_id, %error, "cannot renew the registration for 2/3 of its TTL; ending the stream so the member reports elsewhere");
                        return Err(CoordinatorError::StoreUnavailable(format!(
                            "this coordinator cannot renew the registration of {kind} {member_id} ({error}); report to another"
                        )));
                    }
                    Err(error) => {
                        tracing::warn!(kind, member = %member_id, %error, "cannot renew the registration; retrying with the next report")
                    }
                }
            }
        };
        let stored = match end {
            StreamEnd::Closed => store_final(last).await,
            StreamEnd::Broken | StreamEnd::Silent => Ok(()),
        };
        if let Err(error) = self.store.revoke(lease).await {
            tracing::warn!(kind, member = %member_id, %error, "cannot revoke the registration; it expires with its lease");
        }
        tracing::info!(kind, member = %member_id, ?end, "member deregistered");
        stored.map_err(|error| {
            tracing::warn!(kind, member = %member_id, %error, "cannot store the final report; the member is told to send it again");
            CoordinatorError::StoreUnavailable(format!("the final report of {kind} {member_id} was not stored ({error}); send it again"))
        })?;
        Ok(end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn report(member_id: &str) -> Result<WorkerReport, tonic::Status> {
        Ok(WorkerReport {
            worker_id: member_id.to_owned(),
            device: "cpu".to_owned(),
            ..WorkerReport::default()
        })
    }

    type Sender = tokio::sync::mpsc::UnboundedSender<Result<WorkerReport, tonic::Status>>;
    type Serving = tokio::task::JoinHandle<Result<StreamEnd, CoordinatorError>>;

    /// A report stream being served: the membership, the client's end and the serving task.
    fn open_stream(store: MemoryStore, ttl: Duration) -> (std::sync::Arc<Membership<MemoryStore>>, Sender, Serving) {
        let membership = std::sync::Arc::new(Membership::new(store, ttl));
        let fleet = std::sync::Arc::new(FleetRegistry::default());
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        let stream = tokio_stream::wrappers::UnboundedReceiverStream::new(receiver);
        let serving = tokio::spawn({
            let membership = membership.clone();
            async move { membership.serve_stream(&fleet, stream, async |_| Ok(())).await }
        });
        (membership, sender, serving)
    }

    #[tokio::test]
    async fn a_coordinator_that_cannot_renew_ends_the_stream_so_the_member_reports_elsewhere() {
        let store = MemoryStore::default();
        let ttl = Duration::from_millis(1500);
        let (membership, sender, serving) = open_stream(store.clone(), ttl);
        let reporting = tokio::spawn(async move {
            while sender.send(report("w1")).is_ok() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let deadline = Instant::now() + Duration::from_secs(2);
        while membership
            .registered_workers()
            .await
            .map_or(true, |workers| workers.is_empty())
        {
            assert!(Instant::now() < deadline, "never registered");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        store.set_reachable(false);
        let cut_at = Instant::now();
        let end = tokio::time::timeout(ttl * 2, serving)
            .await
            .expect("stream ended in time")
            .expect("task");
        assert!(matches!(end, Err(CoordinatorError::StoreUnavailable(_))), "{end:?}");
        assert!(cut_at.elapsed() < ttl, "ended after {:?}", cut_at.elapsed());
        reporting.abort();
    }

    #[tokio::test]
    async fn a_closed_stream_deregisters_and_a_taken_id_is_refused() {
        let (membership, sender, serving) = open_stream(MemoryStore::default(), Duration::from_secs(2));
        sender.send(report("w1")).expect("send");
        let deadline = Instant::now() + Duration::from_secs(2);
        while membership.registered_workers().await.expect("list").is_empty() {
            assert!(Instant::now() < deadline, "never registered");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        let duplicate = membership
            .serve_stream(
                &FleetRegistry::default(),
                futures::stream::iter([report("w1")]),
                async |_| Ok(()),
            )
            .await;
        assert!(
            matches!(duplicate, Err(CoordinatorError::MemberInUse { .. })),
            "{duplicate:?}"
        );

        drop(sender);
        let end = serving.await.expect("task").expect("stream");
        assert_eq!(end, StreamEnd::Closed);
        assert!(membership.registered_workers().await.expect("list").is_empty());
    }

    #[tokio::test]
    async fn a_silent_stream_is_deregistered_after_the_ttl() {
        let membership = Membership::new(MemoryStore::default(), Duration::from_secs(2));
        let fleet = FleetRegistry::default();
        let silent = futures::stream::iter([report("w2")]).chain(futures::stream::pending());
        let started = Instant::now();
        let end = membership
            .serve_stream(&fleet, silent, async |_| panic!("a silent stream has no final report"))
            .await
            .expect("stream");
        assert_eq!(end, StreamEnd::Silent);
        assert!(started.elapsed() >= Duration::from_secs(2));
        assert!(membership.registered_workers().await.expect("list").is_empty());
    }

    #[tokio::test]
    async fn a_closed_stream_is_answered_only_once_its_last_report_is_stored() {
        let membership = Membership::new(MemoryStore::default(), Duration::from_secs(2));
        let fleet = FleetRegistry::default();
        let numbered = |frames: u64| {
            report("w3").map(|report| WorkerReport {
                frames_processed: frames,
                ..report
            })
        };
        let reports = || futures::stream::iter([numbered(1), numbered(2), numbered(3)]);
        let mut handed = None;
        let end = membership
            .serve_stream(&fleet, reports(), async |last: WorkerReport| {
                handed = Some(last.frames_processed);
                Ok(())
            })
            .await
            .expect("stream");
        assert_eq!((end, handed), (StreamEnd::Closed, Some(3)));

        // The store refuses: the stream ends UNAVAILABLE, so the process sends it again, and
        // the registration is gone all the same.
        let refused = membership
            .serve_stream(&fleet, reports(), async |_| {
                Err(CoordinatorError::StoreUnavailable("cut off".into()))
            })
            .await;
        assert!(
            matches!(refused, Err(CoordinatorError::StoreUnavailable(_))),
            "{refused:?}"
        );
        assert!(membership.registered_workers().await.expect("list").is_empty());
    }
}
