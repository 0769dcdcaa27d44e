//! The `addrspace` command: tools around the addrspace memory-map
//! framework.
//!
//! Each subcommand lives in its own module and returns a [`CliError`];
//! this file only parses the command line, sets up tracing, dispatches,
//! and turns errors into `error: ...` on stderr with exit status 2 for the
//! user's mistakes and 1 for failures (see [`CliError::exit_code`]). To
//! add a subcommand, add a variant to [`Command`] and a match arm in
//! [`run`].

mod alloc;
mod bench_cmd;
mod diff;
mod error;
mod json;
mod map_cmd;
mod mtree_cmd;
mod plot;
mod progress;
mod replay_cmd;
mod svg;

#[global_allocator]
static GLOBAL: alloc::Counting = alloc::Counting;

use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;

use clap::{ArgAction, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::error::CliError;

/// Memory-region trees, flat views and listeners for virtual machine
/// monitors.
#[derive(Debug, Parser)]
#[command(
    name = "addrspace",
    version,
    about,
    after_help = "EXAMPLES:
  addrspace demo
  addrspace mtree flat tests/data/conformance/qemu-7.2/x86_64-q35-S.tree
  addrspace mtree diff tests/data/conformance/qemu-7.2/x86_64-q35-S.tree \\
      tests/data/conformance/qemu-7.2/x86_64-q35-booted.tree
  addrspace replay examples/pseries-hotplug.replay
  addrspace map tests/data/conformance/qemu-7.2/x86_64-q35-S.tree --svg q35.svg
  addrspace bench scale --quick

Exit status: 0 on success, 1 when the work failed (a refused change, a
failed expectation, invariant violations), 2 for a usage mistake (a
missing or malformed file, an unknown name, a bad script line)."
)]
struct Cli {
    /// More tracing on stderr: -v info, -vv debug, -vvv trace (RUST_LOG,
    /// when set, wins).
    #[arg(short, long, action = ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Run the demo: a machine changing under listeners, with every event
    /// printed and invariants checked at the end (exit status 1 if any
    /// is violated).
    #[command(after_help = "EXAMPLES:
  addrspace demo
  addrspace demo | grep -A3 'step 4'")]
    Demo,
    /// Read QEMU `info mtree` dumps; print their trees, flat views, and
    /// what changes between two of them.
    #[command(subcommand)]
    Mtree(mtree_cmd::MtreeCommand),
    /// Run a script of topology changes and guest actions; print what the
    /// listeners hear.
    ///
    /// Without a `machine pseries` line the script runs on the machine of
    /// --tree DUMP. A recording listener sits on every address space; each
    /// command prints its answer and the events it caused. The format is
    /// below and in the book's CLI chapter.
    #[command(after_help = replay_cmd::FORMAT)]
    Replay(replay_cmd::ReplayArgs),
    /// Draw one address space's flat view as an SVG picture.
    #[command(after_help = map_cmd::EXAMPLES)]
    Map(map_cmd::MapArgs),
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
        Command::Replay(args) => args.run(out),
        Command::Map(args) => args.run(out),
        Command::Bench(cmd) => cmd.run(out),
    }
}

/// Tracing on stderr: `RUST_LOG` if set, else by the number of `-v`.
fn init_tracing(verbose: u8) {
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.is_empty() => EnvFilter::new(spec),
        _ => EnvFilter::new(match verbose {
            0 => "warn",
            1 => "info",
            2 => "debug",
            _ => "trace",
        }),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.verbose);
    let stdout = io::stdout();
    let mut out = stdout.lock();
    match run(cli.command, &mut out).and_then(|()| out.flush().map_err(CliError::Write)) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`addrspace ... | head`): not an error.
        Err(CliError::Write(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            let _ = out.flush();
            eprintln!("error: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                // thiserror's messages already include their source's text
                // when they wrap it; print only causes that add something.
                let text = cause.to_string();
                if !e.to_string().contains(&text) {
                    eprintln!("  caused by: {text}");
                }
                source = cause.source();
            }
            ExitCode::from(e.exit_code())
        }
    }
}
