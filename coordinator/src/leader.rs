//! Leader election between coordinators on etcd. The leader key is created under a lease
//! only if absent; its create revision is the leader's term and the fencing token of every
//! write the leader makes (`Condition::CreatedAt`), so a deposed leader that has not noticed
//! yet cannot change anything. Every coordinator serves the API; only the leader assigns
//! channels to ingestors and finishes drains.

use crate::error::CoordinatorError;
use crate::store::{Condition, LeasedOutcome, MetadataStore};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub const LEADER_KEY: &str = "leader";

/// One leadership: who, and the leader key's create revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    pub leader_id: String,
    pub revision: i64,
}

impl Term {
    /// The precondition that this term is still the current one.
    pub fn fence(&self) -> Condition {
        Condition::CreatedAt(LEADER_KEY.to_owned(), self.revision)
    }

    pub fn label(&self) -> String {
        format!("{}@{}", self.leader_id, self.revision)
    }
}

pub struct Election<S> {
    store: S,
    coordinator_id: String,
    ttl: Duration,
    current: watch::Sender<Option<Term>>,
}

impl<S: MetadataStore + Clone> Election<S> {
    pub fn new(store: S, coordinator_id: String, ttl: Duration) -> Self {
        Self {
            store,
            coordinator_id,
            ttl,
            current: watch::channel(None).0,
        }
    }

    /// The term this coordinator leads, if it leads.
    pub fn subscribe(&self) -> watch::Receiver<Option<Term>> {
        self.current.subscribe()
    }

    /// The id of whichever coordinator leads now, read from etcd.
    pub async fn leader_id(&self) -> Result<String, CoordinatorError> {
        Ok(self
            .store
            .get(LEADER_KEY)
            .await?
            .map(|stored| String::from_utf8_lossy(&stored.value).into_owned())
            .unwrap_or_default())
    }

    /// Campaigns until shutdown: leads while the lease is renewed, campaigns again when the
    /// key is gone, resigns (revokes the lease) on shutdown so a successor need not wait.
    pub async fn run(&self, shutdown: CancellationToken) {
        let retry_every = self.ttl / 3;
        while !shutdown.is_cancelled() {
            match self
                .store
                .create_leased(LEADER_KEY, self.coordinator_id.clone().into_bytes(), self.ttl)
                .await
            {
                Ok(LeasedOutcome::Created { lease, revision }) => {
                    let term = Term {
                        leader_id: self.coordinator_id.clone(),
                        revision,
                    };
                    tracing::info!(coordinator = %self.coordinator_id, term = revision, "leading");
                    self.current.send_replace(Some(term));
                    self.hold(lease, &shutdown).await;
                    self.current.send_replace(None);
                    if shutdown.is_cancelled() {
                        if let Err(error) = self.store.revoke(lease).await {
                            tracing::warn!(%error, "cannot resign; the leader key expires with its lease");
                        }
                        tracing::info!(coordinator = %self.coordinator_id, "resigned");
                        return;
                    }
                    tracing::warn!(coordinator = %self.coordinator_id, "leadership lost");
                }
                Ok(LeasedOutcome::Exists(_)) => {}
                Err(error) => tracing::warn!(%error, "leader election: etcd unavailable"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(retry_every) => {}
            }
        }
    }

    /// Renews the lease every TTL/3 until shutdown or until leadership cannot be proven: a
    /// renewal refused, or none succeeded for 2/3 of the TTL (the lease may be about to run out,
    /// and a successor could take over before this coordinator hears of it). A renewal that
    /// hangs — etcd cut off, so the request only times out after seconds — counts as failed at
    /// that point, not when it finally returns. Times are taken when a renewal is sent, which
    /// is before etcd restarts the lease's clock, so this coordinator always steps down first.
    async fn hold(&self, lease: i64, shutdown: &CancellationToken) {
        let renew_every = self.ttl / 3;
        let mut last_renewed = Instant::now();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(renew_every) => {}
            }
            let step_down_at = tokio::time::Instant::from_std(last_renewed + renew_every * 2);
            let sent = Instant::now();
            match tokio::time::timeout_at(step_down_at, self.store.keep_alive(lease)).await {
                Ok(Ok(true)) => last_renewed = sent,
                Ok(Ok(false)) => return,
                Ok(Err(error)) => {
                    tracing::warn!(%error, "cannot renew leadership");
                    if last_renewed.elapsed() >= renew_every * 2 {
                        return;
                    }
                }
                Err(_elapsed) => {
                    tracing::warn!("leadership renewals unanswered for 2/3 of the lease; stepping down");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    async fn wait_for(receiver: &mut watch::Receiver<Option<Term>>, leading: bool) -> Option<Term> {
        tokio::time::timeout(
            Duration::from_secs(5),
            receiver.wait_for(|term| term.is_some() == leading),
        )
        .await
        .expect("leadership change in time")
        .expect("election alive")
        .clone()
    }

    #[tokio::test]
    async fn one_leads_and_the_other_takes_over_when_it_resigns() {
        let store = MemoryStore::default();
        let ttl = Duration::from_secs(2);
        let first = std::sync::Arc::new(Election::new(store.clone(), "c1".into(), ttl));
        let second = std::sync::Arc::new(Election::new(store.clone(), "c2".into(), ttl));
        let (stop_first, stop_second) = (CancellationToken::new(), CancellationToken::new());
        let mut first_term = first.subscribe();
        let mut second_term = second.subscribe();
        let first_task = tokio::spawn({
            let (election, stop) = (first.clone(), stop_first.clone());
            async move { election.run(stop).await }
        });
        let term = wait_for(&mut first_term, true).await.expect("c1 leads");
        let second_task = tokio::spawn({
            let (election, stop) = (second.clone(), stop_second.clone());
            async move { election.run(stop).await }
        });
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert!(second_term.borrow().is_none(), "two leaders at once");
        assert_eq!(second.leader_id().await.expect("leader"), "c1");

        stop_first.cancel();
        first_task.await.expect("task");
        let successor = wait_for(&mut second_term, true).await.expect("c2 leads");
        assert!(successor.revision > term.revision, "terms grow");
        stop_second.cancel();
        second_task.await.expect("task");
    }

    #[tokio::test]
    async fn a_leader_cut_off_from_the_store_steps_down_before_its_lease_runs_out() {
        let store = MemoryStore::default();
        let ttl = Duration::from_secs(3);
        let election = std::sync::Arc::new(Election::new(store.clone(), "c1".into(), ttl));
        let mut term = election.subscribe();
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let (election, stop) = (election.clone(), stop.clone());
            async move { election.run(stop).await }
        });
        wait_for(&mut term, true).await.expect("c1 leads");
        store.set_reachable(false);
        let cut_at = Instant::now();
        wait_for(&mut term, false).await;
        // Renewals go every TTL/3 and it steps down once none succeeded for 2/3 of the TTL: at
        // most 2/3 of the TTL after the cut, before a successor can hold the key (the lease runs
        // a full TTL from its last renewal). The margin is for timers on a loaded machine.
        assert!(
            cut_at.elapsed() < ttl * 2 / 3 + Duration::from_millis(500),
            "stepped down after {:?}",
            cut_at.elapsed()
        );
        stop.cancel();
        task.await.expect("task");
    }
}
