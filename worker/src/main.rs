use framefleet_worker::config::WorkerConfig;
use std::process::ExitCode;

// Every batch allocates tensors of tens of MiB. glibc hands allocations that large back to
// the kernel on free, so each op page-faults fresh memory; mimalloc keeps and reuses it.
// Measured on 8 × 768×576 frames: 162 ms → 90 ms per batch on the CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    framefleet_common::startup::run_service("framefleet-worker", |config: WorkerConfig, shutdown| async {
        let summary = framefleet_worker::run(config, shutdown).await?;
        tracing::info!(
            processed = summary.frames_processed,
            dead_lettered = summary.frames_dead_lettered,
            batches = summary.batches,
            dead_letters_by_code = ?summary.dead_letters_by_code,
            "worker stopped"
        );
        Ok(ExitCode::SUCCESS)
    })
    .await
}
