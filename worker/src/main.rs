use clap::Parser;

// Every batch allocates tensors of tens of MiB. glibc hands allocations that large back to
// the kernel on free, so each op page-faults fresh memory; mimalloc keeps and reuses it.
// Measured on 8 × 768×576 frames: 162 ms → 90 ms per batch on the CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
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
