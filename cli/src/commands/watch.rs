//! `framefleet watch`: live progress, and `--until-drained` for scripts.

use super::channels::all_channels;
use super::clients::{Channels, Fleet};
use crate::failure::Failure;
use crate::output::{out, outln};
use crate::render;
use framefleet_proto::client::CallError;
use framefleet_proto::v1::{FleetStatus, GetFleetStatusRequest};
use std::time::{Duration, Instant};

/// `framefleet watch`'s flags.
#[derive(Debug, Clone, Copy)]
pub(super) struct WatchSettings {
    pub(super) json: bool,
    pub(super) until_drained: bool,
    /// Give up (exit 7) after this long.
    pub(super) timeout: Option<Duration>,
    pub(super) interval: Duration,
}

/// Prints the fleet's progress every interval until Ctrl-C (exit 130, after the summary so
/// far), the timeout (exit 7), or, with `until_drained`, every watched channel drained.
pub(super) async fn watch(fleet: &mut Fleet, channels: &mut Channels, settings: &WatchSettings) -> Result<(), Failure> {
    let WatchSettings {
        json,
        until_drained,
        timeout,
        interval,
    } = *settings;
    let started = Instant::now();
    let mut ticker = tokio::time::interval(interval);
    let mut last: Option<FleetStatus> = None;
    let mut interrupted = false;
    let mut drain =
        render::DrainTracker::since(u64::try_from(framefleet_common::startup::unix_time_ms()).unwrap_or_default());
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = tokio::signal::ctrl_c() => {
                interrupted = true;
                break;
            }
        }
        let polled = fleet
            .get_fleet_status(GetFleetStatusRequest {})
            .await
            .map(tonic::Response::into_inner);
        let Some(status) = missed_poll_or("fleet status", polled)? else {
            continue;
        };
        let elapsed = started.elapsed();
        let Some(listed) = missed_poll_or("listing channels", all_channels(channels).await)? else {
            continue;
        };
        let drained = until_drained && drain.drained(&status, &listed);
        let status = if drained {
            // Every frame is committed; the worker counts come from reports, which reach the
            // coordinator a report interval later. The last line and the summary wait for one
            // report from every registered worker made after this moment, so they include
            // every result.
            reports_after_drain(fleet).await.unwrap_or(status)
        } else {
            status
        };
        if json {
            outln!("{}", render::status_json(&status, &listed, Some(elapsed)));
        } else if until_drained {
            outln!(
                "{}  [until drained: {} channels]",
                render::progress_line(&status, elapsed),
                drain.tracked()
            );
        } else {
            outln!("{}", render::progress_line(&status, elapsed));
        }
        last = Some(status);
        if drained {
            break;
        }
        if timeout.is_some_and(|limit| elapsed >= limit) {
            if let Some(status) = &last {
                eprint!("{}", render::status_report(status));
            }
            return Err(Failure::Other(
                anyhow::anyhow!("not drained after {:.0} s", elapsed.as_secs_f64()),
                7,
            ));
        }
    }
    if let (Some(status), false) = (&last, json) {
        outln!();
        // The channels' topics, for the per-channel accounting; a summary without them is
        // still worth printing.
        let listed = all_channels(channels).await.unwrap_or_default();
        out!("{}", render::final_summary(status, started.elapsed(), &listed));
    }
    if interrupted {
        // 130 (128 + SIGINT) tells a calling script that the user interrupted the run.
        return Err(Failure::Other(anyhow::anyhow!("interrupted"), 130));
    }
    Ok(())
}

/// One call of a watch's poll: its answer, `None` after a transient failure (printed; a
/// missed poll is not worth stopping the watch for), or the failure that ends the watch.
fn missed_poll_or<T>(what: &str, outcome: Result<T, tonic::Status>) -> Result<Option<T>, Failure> {
    match outcome {
        Ok(answer) => Ok(Some(answer)),
        Err(status) => {
            let error = CallError::new(what, status);
            if !error.is_transient() {
                return Err(error.status.into());
            }
            eprintln!("{error}");
            Ok(None)
        }
    }
}

/// The fleet status once every registered worker has reported since this call (a few
/// seconds at most); `None` when that does not happen in time or the status cannot be read.
async fn reports_after_drain(fleet: &mut Fleet) -> Option<FleetStatus> {
    const LONGEST_WAIT: Duration = Duration::from_secs(5);
    let since = Instant::now();
    while since.elapsed() < LONGEST_WAIT {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let status = fleet
            .get_fleet_status(GetFleetStatusRequest {})
            .await
            .ok()?
            .into_inner();
        let waited_ms = u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX);
        let fresh = status
            .workers
            .iter()
            .filter(|worker| worker.registered)
            .all(|worker| worker.last_seen_ms_ago < waited_ms);
        if fresh {
            return Some(status);
        }
    }
    None
}
