//! `framefleet-loadtest`: runs the scenario files under `loadtest/scenarios/` (or the ones
//! named) through a real fleet on the broker and etcd of `deploy/local/infra.sh`, and writes
//! CSV, PNG and JSON results. `scripts/loadtest.sh` starts everything and runs it.

use anyhow::Context;
use clap::Parser;
use framefleet_loadtest::Infrastructure;
use framefleet_loadtest::report::{MachineDescription, Progress};
use framefleet_loadtest::runner::{markdown, run_all};
use framefleet_loadtest::scenario::Scenario;
use std::path::PathBuf;
use std::process::ExitCode;

// The workers run in this process; they allocate tens of MiB per batch (see the worker's main).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "framefleet-loadtest",
    about = "Runs load scenarios (the paper's accumulate/consume/lag experiment, worker scaling, baselines) through a real framefleet fleet and writes CSV, PNG and JSON results",
    after_help = "Needs FRAMEFLEET_ETCD_ENDPOINTS and FRAMEFLEET_KAFKA_BROKERS, as printed by `deploy/local/infra.sh up --storage memory`; scripts/loadtest.sh does all of it."
)]
struct Args {
    /// Scenario files, or directories of them (every *.toml, in name order).
    #[arg(default_value = "loadtest/scenarios")]
    scenarios: Vec<PathBuf>,

    /// Where CSV, PNG and JSON results go; files of the same name are replaced.
    #[arg(long, default_value = "loadtest/results")]
    results: PathBuf,

    /// Replace every lag scenario's generation_secs (for a quick look; the paper uses 60).
    #[arg(long)]
    generation_secs: Option<u64>,

    /// Print the scenarios and exit.
    #[arg(long)]
    list: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    // The fleet runs in this process: its services log warnings and errors only, so the
    // progress line stays readable. RUST_LOG overrides.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    match run(args).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("framefleet-loadtest: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut scenarios = Scenario::load_all(&args.scenarios)?;
    if let Some(seconds) = args.generation_secs {
        anyhow::ensure!(seconds > 0, "--generation-secs must be at least 1");
        for scenario in &mut scenarios {
            if let Scenario::Lag(lag) = scenario {
                lag.generation_secs = seconds;
            }
        }
    }
    if args.list {
        for scenario in &scenarios {
            println!("{scenario:?}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let infrastructure = Infrastructure::from_env()?;
    let storage = std::env::var("FRAMEFLEET_BROKER_STORAGE").unwrap_or_else(|_| "unknown".into());
    let machine = MachineDescription::collect(&storage);
    eprintln!(
        "{} scenarios on {}; results in {}",
        scenarios.len(),
        machine.label(),
        args.results.display()
    );
    let progress = Progress::default();
    tokio::select! {
        summary = run_all(&infrastructure, &scenarios, &args.results, machine, &progress) => {
            let summary = summary?;
            println!("{}", markdown(&summary));
            println!("results: {}", args.results.display());
            Ok(ExitCode::SUCCESS)
        }
        signal = tokio::signal::ctrl_c() => {
            signal.context("cannot listen for Ctrl-C")?;
            // Dropping the run stops its fleet (workers and coordinator are cancelled).
            eprintln!("\ninterrupted: the scenarios that finished are in {}", args.results.display());
            Ok(ExitCode::from(130))
        }
    }
}
