//! The `addrspace demo` scenario: a pseries guest with a passed-through
//! VFIO device behind a PHB maps DMA through its TCE table, creates and
//! removes a 64-bit dynamic window, is reset, and loses the device — with
//! the listener events, the simulated kernel's ioctls, `vfio_start` /
//! `vfio_stop` (seen as table moves) and the invariants of every step.

use std::io::Write;

use addrspace_core::recorder::{Event, EventLog, Recorder};
use addrspace_core::{ListenerConfig, Memory, Unregister};
use addrspace_spapr::{HResult, Liobn, Placement, RtasStatus, Tce};
use addrspace_vfio::{Ioctl, SimStats};

use crate::pseries::{DeviceSpec, InvariantReport, Machine, MachineConfig};

/// Outcome of the demo: what it checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoReport {
    /// Steps run.
    pub steps: usize,
    /// Invariant checks made (the machine's after every step, and the
    /// demo's own).
    pub checks: usize,
    /// Checks that failed.
    pub violations: usize,
}

/// The default window's LIOBN on PHB 0.
const DEFAULT: Liobn = Liobn(0x8000_0000);

fn print_events(out: &mut dyn Write, mem: &Memory, log: &EventLog) -> std::io::Result<()> {
    let mut events = log.take();
    events.retain(|e| !matches!(e.event, Event::Begin | Event::Commit));
    if events.is_empty() {
        return writeln!(out, "    listener events: none");
    }
    for e in events {
        let region = match &e.event {
            Event::RegionAdd(r) | Event::RegionDel(r) | Event::RegionNop(r) => mem
                .region(r.region)
                .map(|reg| format!(" ({})", reg.name()))
                .unwrap_or_default(),
            _ => String::new(),
        };
        let space = mem.address_space_name(e.address_space).unwrap_or("?");
        writeln!(out, "    {space:<20} {}{region}", e.event)?;
    }
    Ok(())
}

fn print_ioctls(out: &mut dyn Write, before: &SimStats, after: &SimStats) -> std::io::Result<()> {
    let calls: Vec<String> = Ioctl::ALL
        .iter()
        .filter_map(|&i| {
            let n = after.count(i) - before.count(i);
            (n > 0).then(|| format!("{i:?} x{n}"))
        })
        .collect();
    if calls.is_empty() {
        writeln!(out, "    ioctls: none")
    } else {
        writeln!(out, "    ioctls: {}", calls.join(", "))
    }
}

/// What one step printed and checked.
struct Tally {
    checks: usize,
    violations: usize,
    stats: SimStats,
}

impl Tally {
    /// Ends a step: listener events, ioctls, table moves, then the
    /// machine's invariants.
    fn end_step(
        &mut self,
        out: &mut dyn Write,
        m: &mut Machine,
        log: &EventLog,
    ) -> std::io::Result<()> {
        print_events(out, m.mem(), log)?;
        let stats = m.stats();
        print_ioctls(out, &self.stats, &stats)?;
        self.stats = stats;
        for mv in m.take_table_moves() {
            let hook = match mv.to {
                Placement::Userspace => "vfio_start",
                Placement::Kvm => "vfio_stop",
            };
            writeln!(
                out,
                "    {hook}: table {} moved {:?} -> {:?}, {} entries, {}",
                mv.liobn,
                mv.from,
                mv.to,
                mv.entries_after,
                if mv.preserved() { "preserved" } else { "LOST" }
            )?;
        }
        let report: InvariantReport = m.check();
        writeln!(out, "    invariants: {report}")?;
        self.checks += report.checks;
        self.violations += report.violations.len();
        Ok(())
    }

    fn check(&mut self, out: &mut dyn Write, what: &str, ok: bool) -> std::io::Result<()> {
        self.checks += 1;
        if !ok {
            self.violations += 1;
        }
        writeln!(
            out,
            "    check: {what}: {}",
            if ok { "ok" } else { "VIOLATED" }
        )
    }
}

/// Runs the demo, printing a readable log to `out`. The last line is
/// `invariants: <n> checks, <v> violations`.
pub fn run(out: &mut dyn Write) -> Result<DemoReport, Box<dyn std::error::Error>> {
    writeln!(
        out,
        "step 1: boot a pseries guest: 256 MiB RAM, PHB 0 with its default DMA window \
         (1 GiB of 4 KiB TCEs at 0), host group 1 free for passthrough"
    )?;
    let mut m = Machine::new(MachineConfig::new())?;
    let log = EventLog::new();
    let dma = m.phb(0)?.address_space();
    let memory = m.memory();
    for space in [memory, dma] {
        m.mem_mut().register_listener(
            space,
            ListenerConfig::new("trace"),
            Box::new(Recorder::new("trace", &log)),
        )?;
    }
    let mut t = Tally {
        checks: 0,
        violations: 0,
        stats: m.stats(),
    };
    t.end_step(out, &mut m, &log)?;

    writeln!(
        out,
        "step 2: hot-plug 0000:01:00.0 (group 1) behind PHB 0 in an sPAPR v2 container"
    )?;
    let device = m.plug(DeviceSpec::spapr(1, 0))?;
    let table = m.spapr().table(DEFAULT).ok_or("no default window")?.clone();
    t.end_step(out, &mut m, &log)?;
    t.check(
        out,
        "the table moved to userspace",
        table.placement() == Placement::Userspace,
    )?;

    writeln!(
        out,
        "step 3: the guest maps DMA: 4 x H_PUT_TCE, then H_PUT_TCE_INDIRECT of 16 entries"
    )?;
    for i in 0..4u64 {
        let status = HResult::of(&m.h_put_tce(DEFAULT, i << 12, Tce((0x100_0000 + (i << 12)) | 3)));
        writeln!(out, "    H_PUT_TCE {DEFAULT} {:#x} -> {status}", i << 12)?;
    }
    let list: Vec<Tce> = (0..16u64)
        .map(|i| Tce((0x200_0000 + (i << 12)) | 1))
        .collect();
    let status = HResult::of(&m.put_tce_list(DEFAULT, 0x10_0000, 0x300_0000, &list)?);
    writeln!(
        out,
        "    H_PUT_TCE_INDIRECT {DEFAULT} 0x100000 x16 -> {status}"
    )?;
    t.end_step(out, &mut m, &log)?;

    writeln!(
        out,
        "step 4: the guest creates a 64-bit dynamic window (64 KiB pages, 1 GiB) and maps into it"
    )?;
    let buid = m.buid(0)?;
    let query = m.rtas_query_pe_dma_window(buid)?;
    writeln!(
        out,
        "    ibm,query-pe-dma-window -> {} window(s) free, page mask {:#x}",
        query.windows_available, query.page_mask
    )?;
    let ddw = m.rtas_create_pe_dma_window(buid, 16, 30)?;
    writeln!(
        out,
        "    ibm,create-pe-dma-window -> {} at {:#x}",
        ddw.liobn, ddw.start
    )?;
    let list: Vec<Tce> = (0..8u64)
        .map(|i| Tce((0x400_0000 + (i << 16)) | 3))
        .collect();
    let status = HResult::of(&m.put_tce_list(ddw.liobn, ddw.start, 0x300_0000, &list)?);
    writeln!(out, "    H_PUT_TCE_INDIRECT {} x8 -> {status}", ddw.liobn)?;
    let status = HResult::of(&m.h_stuff_tce(ddw.liobn, ddw.start + 0x10_0000, Tce(0x500_0001), 4));
    writeln!(out, "    H_STUFF_TCE {} x4 -> {status}", ddw.liobn)?;
    t.end_step(out, &mut m, &log)?;

    writeln!(out, "step 5: the guest removes the 64-bit window")?;
    let status = RtasStatus::of(&m.rtas_remove_pe_dma_window(ddw.liobn));
    writeln!(
        out,
        "    ibm,remove-pe-dma-window {} -> {status}",
        ddw.liobn
    )?;
    t.end_step(out, &mut m, &log)?;

    writeln!(
        out,
        "step 6: machine reset (every window disabled, the default one re-enabled, in one commit)"
    )?;
    let moves_before = table.moves();
    m.reset()?;
    t.end_step(out, &mut m, &log)?;
    t.check(
        out,
        "no vfio_stop/vfio_start churn",
        table.moves() == moves_before,
    )?;
    t.check(
        out,
        "the guest table is empty",
        table.valid_entries().is_empty(),
    )?;

    writeln!(out, "step 7: hot-unplug the device (replay mode)")?;
    let fd = m
        .device_container(device)
        .and_then(|c| m.container(c))
        .map(|c| c.fd());
    m.unplug(device, Unregister::Replay)?;
    t.end_step(out, &mut m, &log)?;
    t.check(
        out,
        "the kernel dropped the container",
        fd.is_some_and(|fd| m.kernel().container(fd).is_none()),
    )?;
    t.check(
        out,
        "the table is back in KVM",
        table.placement() == Placement::Kvm,
    )?;

    writeln!(
        out,
        "invariants: {} checks, {} violations",
        t.checks, t.violations
    )?;
    Ok(DemoReport {
        steps: 7,
        checks: t.checks,
        violations: t.violations,
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
        assert_eq!(report.steps, 7);
        assert!(report.checks >= 50, "{text}");
        assert!(text.trim_end().ends_with(&format!(
            "invariants: {} checks, 0 violations",
            report.checks
        )));
        for seen in [
            "region_add",
            "region_del",
            "vfio_start: table 0x80000000",
            "vfio_stop: table 0x80000001",
            "SpaprTceCreate x1",
            "MapDma x",
            "UnmapDma x",
        ] {
            assert!(text.contains(seen), "{seen} missing from:\n{text}");
        }
    }
}
