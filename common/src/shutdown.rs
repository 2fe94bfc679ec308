//! Signal-driven shutdown. The first Ctrl-C or SIGTERM cancels the returned token so each
//! service can stop taking work, drain and exit; a second signal exits at once.

use tokio_util::sync::CancellationToken;

/// Exit status for a forced stop by a second signal (128 + SIGINT).
const FORCED_EXIT_CODE: i32 = 130;

/// Returns a token that is cancelled on the first SIGINT/SIGTERM.
pub fn install_signal_handlers() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel_on_signal = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested; draining (signal again to force)");
        cancel_on_signal.cancel();
        wait_for_signal().await;
        tracing::warn!("second signal; exiting without draining");
        std::process::exit(FORCED_EXIT_CODE);
    });
    token
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops this process");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
