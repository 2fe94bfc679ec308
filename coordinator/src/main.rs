use framefleet_coordinator::config::CoordinatorConfig;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    framefleet_common::startup::run_service("framefleet-coordinator", |config: CoordinatorConfig, shutdown| async {
        framefleet_coordinator::run(config, shutdown).await?;
        Ok(ExitCode::SUCCESS)
    })
    .await
}
