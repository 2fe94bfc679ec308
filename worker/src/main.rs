use clap::Parser;
use framefleet_worker::config::WorkerConfig;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let config = WorkerConfig::parse();
    let _telemetry = match framefleet_common::telemetry::init("framefleet-worker") {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("error: cannot start telemetry: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = framefleet_common::shutdown::install_signal_handlers();
    match framefleet_worker::run(config, shutdown).await {
        Ok(summary) => {
            tracing::info!(
                processed = summary.frames_processed,
                dead_lettered = summary.frames_dead_lettered,
                batches = summary.batches,
                "worker stopped"
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
