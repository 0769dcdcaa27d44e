//! The `addrspace` command: tools around the addrspace memory-map
//! framework.
//!
//! Each subcommand lives in its own module and returns a [`CliError`];
//! this file only parses the command line, dispatches, and turns errors
//! into `error: ...` on stderr with exit status 1. To add a subcommand,
//! add a variant to [`Command`] and a match arm in [`run`].

mod alloc;
mod bench_cmd;
mod error;
mod mtree_cmd;

#[global_allocator]
static GLOBAL: alloc::Counting = alloc::Counting;

use std::io::{self, Write};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::error::CliError;

/// Memory-region trees, flat views and listeners for virtual machine
/// monitors.
#[derive(Debug, Parser)]
#[command(name = "addrspace", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Run the demo: a machine changing under listeners, with every event
    /// printed and invariants checked at the end (exit status 1 if any
    /// is violated).
    Demo,
    /// Read QEMU `info mtree` dumps; print their trees and flat views.
    #[command(subcommand)]
    Mtree(mtree_cmd::MtreeCommand),
    /// Measure commit, lookup and memory costs.
    #[command(subcommand)]
    Bench(bench_cmd::BenchCommand),
}

/// Runs one command, writing its output to `out`.
fn run(command: Command, out: &mut dyn Write) -> Result<(), CliError> {
    match command {
        Command::Demo => {
            let report = addrspace::demo::run(out).map_err(|e| CliError::Demo(e.to_string()))?;
            if report.violations > 0 {
                return Err(CliError::DemoViolations(report.violations));
            }
            Ok(())
        }
        Command::Mtree(cmd) => cmd.run(out),
        Command::Bench(cmd) => cmd.run(out),
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(io::stderr)
        .init();
    let cli = Cli::parse();
    let stdout = io::stdout();
    let mut out = stdout.lock();
    match run(cli.command, &mut out).and_then(|()| out.flush().map_err(CliError::Write)) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`addrspace ... | head`): not an error.
        Err(CliError::Write(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
