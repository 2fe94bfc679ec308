//! Signal-driven shutdown. The first Ctrl-C or SIGTERM cancels the returned token so each
//! service can stop taking work, drain and exit; a second signal exits at once. A background
//! task the service cannot do without ([`spawn_essential`]) cancels the same root token when
//! it ends early, so the service stops (and its supervisor restarts it) instead of running
//! half-broken. Blocking calls made from async code (librdkafka's synchronous commits) go
//! through [`blocking`], which keeps them off the runtime's other tasks.

use std::future::Future;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Spawns `task`, which should run until `stop` is cancelled; if it ends before that — it
/// returned, or it panicked — `root` is cancelled so the whole service stops. The handle gives
/// the task's result (a panic as a `JoinError`).
pub fn spawn_essential<T: Send + 'static>(
    name: &'static str,
    task: impl Future<Output = T> + Send + 'static,
    stop: CancellationToken,
    root: CancellationToken,
) -> JoinHandle<Result<T, tokio::task::JoinError>> {
    let inner = tokio::spawn(task);
    tokio::spawn(async move {
        let result = inner.await;
        if !stop.is_cancelled() {
            match &result {
                Err(error) => tracing::error!(task = name, %error, "background task failed; stopping"),
                Ok(_) => tracing::error!(task = name, "background task ended early; stopping"),
            }
            root.cancel();
        }
        result
    })
}

/// Runs `call`, which blocks (a synchronous Kafka commit, say), without stalling the tasks of
/// the async runtime it may be called from: on a multi-threaded runtime the worker thread
/// hands its other tasks over first ([`tokio::task::block_in_place`]); elsewhere (no runtime,
/// or a single-threaded one, where nothing can take them) it is simply called.
pub fn blocking<T>(call: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(call)
        }
        _ => call(),
    }
}

/// Exit status for a forced stop by a second signal (128 + SIGINT).
const FORCED_EXIT_CODE: i32 = 130;

/// Returns a token that is cancelled on the first SIGINT/SIGTERM.
pub fn install_signal_handlers() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel_on_signal = token.clone();
    tokio::spawn(async move {
        // The listeners are created once and kept: a second signal that arrives while the
        // first is being handled is still counted, never lost between two registrations.
        let mut signals = Signals::new();
        signals.next().await;
        tracing::info!("shutdown requested; draining (signal again to force)");
        cancel_on_signal.cancel();
        signals.next().await;
        tracing::warn!("second signal; exiting without draining");
        std::process::exit(FORCED_EXIT_CODE);
    });
    token
}

struct Signals {
    #[cfg(unix)]
    streams: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let streams = match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
                (Ok(interrupt), Ok(terminate)) => Some((interrupt, terminate)),
                (Err(error), _) | (_, Err(error)) => {
                    tracing::warn!(%error, "cannot listen for SIGINT/SIGTERM; only Ctrl-C stops this process");
                    None
                }
            };
            Self { streams }
        }
        #[cfg(not(unix))]
        {
            Self {}
        }
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        if let Some((interrupt, terminate)) = &mut self.streams {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_essential_task_that_panics_or_ends_early_stops_the_service() {
        let (root, stop) = (CancellationToken::new(), CancellationToken::new());
        let handle = spawn_essential("panics", async { panic!("boom") }, stop.clone(), root.clone());
        assert!(
            handle.await.expect("watcher").is_err(),
            "the panic is the task's result"
        );
        assert!(root.is_cancelled());

        let (root, stop) = (CancellationToken::new(), CancellationToken::new());
        let handle = spawn_essential("returns", async { 7 }, stop.clone(), root.clone());
        assert_eq!(handle.await.expect("watcher").expect("task"), 7);
        assert!(root.is_cancelled(), "returning before stop is a failure too");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_essential_task_stopped_on_purpose_leaves_the_service_running() {
        let (root, stop) = (CancellationToken::new(), CancellationToken::new());
        let waiting = stop.clone();
        let handle = spawn_essential(
            "stops",
            async move { waiting.cancelled().await },
            stop.clone(),
            root.clone(),
        );
        stop.cancel();
        handle.await.expect("watcher").expect("task");
        assert!(!root.is_cancelled());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_blocking_call_leaves_the_other_tasks_running() {
        // One runtime thread: were the call made in place, the ticker could not run while it
        // blocks; handed over, it ticks meanwhile.
        use std::sync::atomic::{AtomicUsize, Ordering};
        let ticks = std::sync::Arc::new(AtomicUsize::new(0));
        let counted = std::sync::Arc::clone(&ticks);
        let ticker = tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                counted.fetch_add(1, Ordering::Relaxed);
            }
        });
        // Spawned, so that the call runs on the runtime's one worker thread, as a consumer's
        // rebalance callback does (the test's own body runs outside the workers).
        let during = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            blocking(|| {
                std::thread::sleep(std::time::Duration::from_millis(300));
                ticks.load(Ordering::Relaxed)
            })
        })
        .await
        .expect("blocking task");
        ticker.abort();
        assert!(
            during >= 5,
            "the runtime's other task ran {during} times during the call"
        );
    }

    #[test]
    fn a_blocking_call_without_a_runtime_is_a_plain_call() {
        assert_eq!(blocking(|| 5), 5);
    }
}
