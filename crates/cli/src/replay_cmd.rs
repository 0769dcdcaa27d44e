//! `addrspace replay`: runs a script of topology changes and guest
//! actions and prints what the listeners heard.

use std::io::Write;
use std::path::PathBuf;

use addrspace::replay::{Replay, Script, StepReport};
use clap::Args;
use serde::Serialize;

use crate::error::CliError;
use crate::json;
use crate::mtree_cmd::{load, load_hints, read};

/// Options of `addrspace replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The script.
    script: PathBuf,
    /// Run on the machine of this `info mtree -D` dump (for scripts
    /// without a `machine pseries` line).
    #[arg(long, value_name = "DUMP")]
    tree: Option<PathBuf>,
    /// The dump's `info mtree -f` text (see `mtree flat --hints`).
    #[arg(long, value_name = "FLAT", requires = "tree")]
    hints: Option<PathBuf>,
    /// Print one JSON document: every step with what it said and the
    /// events it caused.
    #[arg(long)]
    json: bool,
    /// Show only the events of this address space (repeatable; `expect`
    /// lines still see every event).
    #[arg(long = "as", value_name = "NAME")]
    spaces: Vec<String>,
}

/// The `--help` text after the options: the script format.
pub const FORMAT: &str = "SCRIPT FORMAT:
  One command per line; `#` starts a comment; quote names with spaces
  (\"PCI ROM\"). Numbers: 4096, 0x1000, 64K, 1G, 2^64. A region is named
  by its name, or NAME~K for the K-th of several with that name.

  machine pseries [ram=SIZE] [phbs=N]   first line: run on the pseries model
                                        (without it, --tree DUMP is needed)
  Topology (any machine):
    add ram|rom|mmio|container|reservation NAME SIZE in=PARENT at=ADDR [prio=N]
    add alias NAME SIZE target=REGION [offset=OFF] in=PARENT at=ADDR [prio=N]
    del NAME                 take a region out of its parent
    attach NAME in=PARENT at=ADDR [prio=N]
    move NAME ADDR | enable NAME | disable NAME | priority NAME N
    resize NAME SIZE | alias-offset NAME OFF | readonly NAME on|off
    begin ... commit         one transaction: listeners hear it at commit
  Guest and operator actions (pseries):
    plug spapr|spapr-v1|type1 GROUP [phb=N] [shared]
    unplug NTH [replay|detach]     the NTH plugged device (from 0)
    reset
    put-tce [phb=N] [slot=N] page=N target=PAGE|past-ram [perm=r|w|rw|none]
    put-indirect [phb=N] [slot=N] page=N targets=P,P,... [perm=...]
    stuff [phb=N] [slot=N] page=N target=PAGE count=N [perm=...]
    query [phb=N] | create-window [phb=N] page-shift=N window-shift=N
    remove-window [phb=N] slot=N | reset-windows [phb=N]
  Checks (a failed one stops the script, exit status 1):
    expect events N [AS]            the previous command made N adds+dels
                                    (in address space AS, else in all)
    expect map AS ADDR NAME|-       ADDR of address space AS is in NAME
    expect said TEXT                the previous command's answer has TEXT
    expect invariants               the pseries model's invariants hold
    fail COMMAND                    COMMAND must be refused

EXAMPLES:
  addrspace replay examples/pseries-hotplug.replay
  addrspace replay examples/pci-bar-toggle.replay \\
      --tree tests/data/conformance/qemu-7.2/x86_64-q35-booted.tree \\
      --hints tests/data/conformance/qemu-7.2/x86_64-q35-booted.flat
  addrspace replay examples/ddw.replay --json
  addrspace replay examples/pci-bar-toggle.replay --as memory \\
      --tree tests/data/conformance/qemu-7.2/x86_64-q35-booted.tree";

#[derive(Serialize)]
struct JsonStep<'a> {
    line: usize,
    command: &'a str,
    said: &'a str,
    events: Vec<JsonEvent<'a>>,
    ioctls: std::collections::BTreeMap<&'a str, u64>,
}

#[derive(Serialize)]
struct JsonEvent<'a> {
    address_space: &'a str,
    event: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    range: Option<json::Range>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
}

fn print_step(out: &mut dyn Write, file: &str, s: &StepReport) -> std::io::Result<()> {
    writeln!(out, "{file}:{}: {}", s.line, s.text)?;
    writeln!(out, "    -> {}", s.said)?;
    for e in &s.events {
        writeln!(out, "    {e}")?;
    }
    if !s.ioctls.is_empty() {
        let calls: Vec<String> = s.ioctls.iter().map(|(n, k)| format!("{n} x{k}")).collect();
        writeln!(out, "    ioctls: {}", calls.join(", "))?;
    }
    Ok(())
}

impl ReplayArgs {
    /// Runs the script, writing to `out`.
    pub fn run(self, out: &mut dyn Write) -> Result<(), CliError> {
        let name = self.script.display().to_string();
        let script = Script::parse(&name, &read(&self.script)?)?;
        let tree = match &self.tree {
            Some(path) => {
                let hints = load_hints(self.hints.as_deref(), Vec::new())?;
                Some(load(path, &hints)?.into_memory())
            }
            None => None,
        };
        let mut replay = Replay::new(&script, tree)?;
        let mem = replay.mem();
        for space in &self.spaces {
            if !mem
                .address_spaces()
                .any(|id| mem.address_space_name(id).is_ok_and(|n| n == space))
            {
                return Err(CliError::Usage(format!(
                    "--as {space:?}: the machine has no address space of that name"
                )));
            }
        }
        let bar = crate::progress::bar(script.steps.len() as u64, "replay");
        let mut reports = Vec::new();
        for step in &script.steps {
            let report = replay.step(step);
            bar.inc(1);
            let mut report = match report {
                Ok(r) => r,
                Err(e) => {
                    bar.finish_and_clear();
                    return Err(e.into());
                }
            };
            if !self.spaces.is_empty() {
                report
                    .events
                    .retain(|e| self.spaces.contains(&e.address_space));
            }
            if !self.json {
                print_step(out, &name, &report).map_err(CliError::Write)?;
            }
            reports.push(report);
        }
        bar.finish_and_clear();
        replay.finish()?;
        if self.json {
            let steps: Vec<JsonStep> = reports
                .iter()
                .map(|s| JsonStep {
                    line: s.line,
                    command: &s.text,
                    said: &s.said,
                    events: s
                        .events
                        .iter()
                        .map(|e| JsonEvent {
                            address_space: &e.address_space,
                            event: e.event,
                            range: e.range.as_ref().map(json::Range::from),
                            detail: e.detail.as_deref(),
                        })
                        .collect(),
                    ioctls: s.ioctls.iter().map(|(n, k)| (n.as_str(), *k)).collect(),
                })
                .collect();
            json::emit(out, &serde_json::json!({ "script": name, "steps": steps }))
        } else {
            let events: usize = reports.iter().map(|r| r.events.len()).sum();
            writeln!(
                out,
                "{name}: {} commands, {events} listener events",
                reports.len()
            )
            .map_err(CliError::Write)
        }
    }
}
