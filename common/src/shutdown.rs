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
