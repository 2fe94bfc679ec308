use framefleet_ingestor::config::IngestorConfig;
use std::process::ExitCode;

fn main() -> ExitCode {
    // A capture child (see `framefleet_ingestor::isolation`) is this binary with one argument.
    if std::env::args().nth(1).as_deref() == Some(framefleet_ingestor::isolation::CHILD_COMMAND) {
        return framefleet_ingestor::isolation::child_main();
    }
    service()
}

#[tokio::main]
async fn service() -> ExitCode {
    framefleet_common::startup::run_service("framefleet-ingestor", |config: IngestorConfig, shutdown| async {
        let summary = framefleet_ingestor::run(config, shutdown).await?;
        let failed = summary.failed_channels();
        for ledger in &failed {
            eprintln!(
                "error: channel `{}`: {} (captured {}, acknowledged {}, failed {})",
                ledger.channel_id,
                ledger.last_error,
                ledger.frames_captured,
                ledger.frames_acknowledged,
                ledger.frames_failed
            );
        }
        Ok(if failed.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    })
    .await
}
