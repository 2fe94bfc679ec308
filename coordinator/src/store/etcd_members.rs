//! Which etcd members the store's client sends requests to. tonic's balancer takes an
//! endpoint whose connection broke, or whose reconnect failed, as ready, and the next request
//! it routes there fails ("transport error"); an endpoint whose connection went silent (a
//! member cut off the network) takes requests until each times out. So a member is left out
//! of the client while it does not answer: every member is asked for its status each
//! [`PROBE_INTERVAL`] on a connection of its own, and one that misses [`MISSES_TO_LEAVE_OUT`]
//! answers in a row, or answers without a Raft leader (cut off from its peers), is removed
//! from the client's endpoints until it answers again. The client keeps every member while
//! none answers: there is nothing better to send requests to.

use etcd_client::{Client, ConnectOptions};
use std::collections::HashMap;
use std::sync::Weak;
use std::time::Duration;

/// How often each member is asked for its status, and how long its answer may take.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Consecutive missed answers after which a member is left out (one slow answer on a busy
/// machine is not a cut).
pub const MISSES_TO_LEAVE_OUT: u32 = 2;

/// Probes `endpoints` until `alive` has no strong reference left (the store is dropped),
/// adding and removing them on `client`.
pub fn spawn_prober(client: Client, endpoints: Vec<String>, options: ConnectOptions, alive: Weak<()>) {
    tokio::spawn(async move {
        let mut probes = Vec::new();
        for endpoint in endpoints {
            match Client::connect([endpoint.as_str()], Some(options.clone())).await {
                Ok(probe) => probes.push((endpoint, probe)),
                Err(error) => tracing::warn!(%endpoint, %error, "cannot probe etcd member; it stays in use"),
            }
        }
        let mut misses: HashMap<String, u32> = HashMap::new();
        let mut left_out: Vec<String> = Vec::new();
        let mut ticks = tokio::time::interval(PROBE_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if alive.strong_count() == 0 {
                return;
            }
            let answers = futures::future::join_all(probes.iter_mut().map(|(endpoint, probe)| async move {
                let answer = tokio::time::timeout(PROBE_INTERVAL, probe.status()).await;
                let serving = matches!(&answer, Ok(Ok(status)) if status.leader() != 0);
                (endpoint.clone(), serving)
            }))
            .await;
            for (endpoint, serving) in &answers {
                let count = misses.entry(endpoint.clone()).or_default();
                *count = if *serving { 0 } else { count.saturating_add(1) };
            }
            let serving = |endpoint: &String| misses.get(endpoint).copied().unwrap_or_default() < MISSES_TO_LEAVE_OUT;
            if !answers.iter().any(|(endpoint, _)| serving(endpoint)) {
                continue;
            }
            for (endpoint, _) in &answers {
                let out = left_out.contains(endpoint);
                if serving(endpoint) && out {
                    match client.add_endpoint(endpoint).await {
                        Ok(()) => {
                            left_out.retain(|other| other != endpoint);
                            tracing::info!(%endpoint, "etcd member answers again; back in use");
                        }
                        Err(error) => tracing::warn!(%endpoint, %error, "cannot put etcd member back in use"),
                    }
                } else if !serving(endpoint) && !out {
                    match client.remove_endpoint(endpoint).await {
                        Ok(()) => {
                            left_out.push(endpoint.clone());
                            tracing::warn!(%endpoint, misses = MISSES_TO_LEAVE_OUT, "etcd member does not answer (or has no leader); left out until it does");
                        }
                        Err(error) => tracing::warn!(%endpoint, %error, "cannot leave etcd member out"),
                    }
                }
            }
        }
    });
}
