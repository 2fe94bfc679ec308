use clap::Parser;
use framefleet_ingestor::config::IngestorConfig;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let config = IngestorConfig::parse();
    let _telemetry = match framefleet_common::telemetry::init("framefleet-ingestor") {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("error: cannot start telemetry: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = framefleet_common::shutdown::install_signal_handlers();
    match framefleet_ingestor::run(config, shutdown).await {
        Ok(summary) => {
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
            if failed.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
