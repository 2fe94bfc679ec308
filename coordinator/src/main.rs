use clap::Parser;
use framefleet_coordinator::config::CoordinatorConfig;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let config = CoordinatorConfig::parse();
    let _telemetry = match framefleet_common::telemetry::init("framefleet-coordinator") {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("error: cannot start telemetry: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = framefleet_common::shutdown::install_signal_handlers();
    match framefleet_coordinator::run(config, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
