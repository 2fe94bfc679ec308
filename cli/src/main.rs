//! `framefleet`: the admin CLI. Every command is one or a few gRPC calls, the same ones
//! grpcurl makes; output is for people by default and JSON with `--json`.
//!
//! Exit codes: 0 success, 1 other failure, 2 usage error, 3 not found, 4 already exists,
//! 5 invalid argument, 6 coordinator or its dependencies unavailable, 7 `watch` timed out,
//! 8 failed precondition (stale revision, draining channel, unconfirmed size change),
//! 9 unauthenticated, 10 `audit` found acknowledged frames without an outcome, 130 `watch`
//! interrupted by Ctrl-C (after printing the summary so far).

mod args;
mod audit;
mod commands;
mod failure;
mod output;
mod render;
mod snapshot;

use clap::Parser;
use failure::Failure;
use framefleet_proto::client::CallError;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = args::Cli::parse();
    match commands::execute(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Status(status)) => {
            let error = CallError::new(format!("`framefleet {}`", command_words()), status);
            eprintln!("error: {error}");
            ExitCode::from(error.exit_code())
        }
        Err(Failure::Other(error, code)) => {
            eprintln!("error: {error:#}");
            ExitCode::from(code)
        }
    }
}

/// The subcommand as typed (`channels get`), without flags and their values.
fn command_words() -> String {
    let mut words = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg.starts_with("--") {
            // A global flag's value follows it unless it was written `--flag=value`.
            if !arg.contains('=') && !matches!(arg.as_str(), "--json" | "--until-drained") {
                args.next();
            }
            continue;
        }
        words.push(arg);
        if words.len() == 2 {
            break;
        }
    }
    words.join(" ")
}
