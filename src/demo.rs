//! The `addrspace demo` scenario: a small PC changing under two listeners.

use std::io::Write;

use addrspace_core::recorder::{EventLog, Recorder};
use addrspace_core::{Error, ListenerConfig, Memory, Unregister};

use crate::pc::PcMachine;

/// Outcome of the demo: what it checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoReport {
    /// Steps run.
    pub steps: usize,
    /// Invariant checks made after the steps.
    pub checks: usize,
    /// Checks that failed.
    pub violations: usize,
}

fn print_events(out: &mut dyn Write, mem: &Memory, log: &EventLog) -> std::io::Result<()> {
    for e in log.take() {
        let region = match &e.event {
            addrspace_core::recorder::Event::RegionAdd(r)
            | addrspace_core::recorder::Event::RegionDel(r)
            | addrspace_core::recorder::Event::RegionNop(r)
            | addrspace_core::recorder::Event::LogStart(r, ..)
            | addrspace_core::recorder::Event::LogStop(r, ..) => mem
                .region(r.region)
                .map(|reg| format!(" ({})", reg.name()))
                .unwrap_or_default(),
            _ => String::new(),
        };
        writeln!(out, "    {:<6} {}{}", e.listener, e.event, region)?;
    }
    Ok(())
}

/// Runs the demo, printing a readable log to `out`. The last line is
/// `invariants: <n> checks, <v> violations`.
pub fn run(out: &mut dyn Write) -> Result<DemoReport, Box<dyn std::error::Error>> {
    let mut pc = PcMachine::new(0x800_0000)?;
    let log = EventLog::new();
    let mut checks = 0;
    let mut violations = 0;
    let mut check = |out: &mut dyn Write, what: &str, ok: bool| -> std::io::Result<()> {
        checks += 1;
        if !ok {
            violations += 1;
        }
        writeln!(
            out,
            "  check: {what}: {}",
            if ok { "ok" } else { "VIOLATED" }
        )
    };

    writeln!(
        out,
        "step 1: register a memslot-style listener and a vhost-style listener (wants region_nop)"
    )?;
    let kvm = pc.mem.register_listener(
        pc.memory,
        ListenerConfig::new("kvm").priority(10),
        Box::new(Recorder::new("kvm", &log)),
    )?;
    let vhost = pc.mem.register_listener(
        pc.memory,
        ListenerConfig::new("vhost").wants_nop(),
        Box::new(Recorder::new("vhost", &log)),
    )?;
    print_events(out, &pc.mem, &log)?;

    writeln!(out, "step 2: firmware programs a NIC BAR at 0xfebc0000")?;
    let bar = pc.plug_bar("e1000-mmio", 0xfebc_0000, 0x20000, PcMachine::null_device())?;
    print_events(out, &pc.mem, &log)?;

    writeln!(
        out,
        "step 3: firmware opens PAM shadow RAM over the BIOS at 0xf0000"
    )?;
    pc.open_pam(true)?;
    print_events(out, &pc.mem, &log)?;

    writeln!(out, "step 4: the display starts VGA dirty tracking")?;
    pc.vga_logging(true)?;
    print_events(out, &pc.mem, &log)?;

    writeln!(out, "step 5: one transaction moves the BAR and closes PAM")?;
    pc.mem.transaction(|mem| {
        mem.set_address(bar, 0xfeb0_0000)?;
        mem.set_enabled(pc.pam_ram, false)
    })?;
    print_events(out, &pc.mem, &log)?;

    writeln!(
        out,
        "step 6: a bad request (system memory inside its own PCI space) is refused and changes nothing"
    )?;
    let before = pc.mem.view(pc.memory)?;
    let refused = pc.mem.add_subregion(pc.pci, 0, pc.system);
    match &refused {
        Err(e) => writeln!(out, "    refused: {e}")?,
        Ok(()) => writeln!(out, "    accepted?!")?,
    }
    let quiet = log.take().is_empty();
    let unchanged = *before == *pc.mem.view(pc.memory)?;
    check(
        out,
        "the cycle was refused",
        matches!(refused, Err(Error::Cycle { .. })),
    )?;
    check(
        out,
        "nothing changed and no listener heard anything",
        quiet && unchanged,
    )?;

    writeln!(out, "step 7: hot-unplug the NIC")?;
    pc.unplug_bar(bar)?;
    print_events(out, &pc.mem, &log)?;

    let view = pc.mem.view(pc.memory)?;
    check(
        out,
        "BIOS visible at 0xffff0",
        view.lookup(0xffff0).map(|r| r.region) == Some(pc.bios),
    )?;
    check(
        out,
        "BIOS is read-only",
        view.lookup(0xffff0).is_some_and(|r| r.readonly),
    )?;
    check(
        out,
        "no BAR left at 0xfeb00000",
        view.lookup(0xfeb0_0000).is_none(),
    )?;
    check(
        out,
        "VGA window logged",
        view.lookup(0xa0000)
            .is_some_and(|r| !r.dirty_log_mask.is_empty()),
    )?;

    writeln!(
        out,
        "step 8: unregister both (replay mode for kvm, detach for vhost)"
    )?;
    pc.mem.unregister_listener(kvm, Unregister::Replay)?;
    pc.mem.unregister_listener(vhost, Unregister::Detach)?;
    let events = log.take();
    let dels = events
        .iter()
        .filter(|e| e.event.name() == "region_del")
        .count();
    writeln!(out, "    kvm heard {dels} region_del, vhost heard nothing")?;
    check(out, "replay deleted every range", dels == view.ranges.len())?;
    check(
        out,
        "detach sent nothing to vhost",
        events.iter().all(|e| e.listener == "kvm"),
    )?;

    writeln!(out, "invariants: {checks} checks, {violations} violations")?;
    Ok(DemoReport {
        steps: 8,
        checks,
        violations,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn demo_runs_clean_and_ends_with_the_summary_line() {
        let mut out = Vec::new();
        let report = super::run(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(report.violations, 0, "{text}");
        assert!(report.checks >= 6);
        assert!(text.trim_end().ends_with(&format!(
            "invariants: {} checks, 0 violations",
            report.checks
        )));
        assert!(text.contains("region_add"));
        assert!(text.contains("log_start"));
    }
}
