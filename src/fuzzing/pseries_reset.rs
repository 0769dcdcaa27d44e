//! Reset sequences on the pseries model: hot-plug and unplug (both
//! unregister modes), machine resets, dynamic DMA window calls and storms
//! of TCE hypercalls, on one or two PHBs with several containers each,
//! against a simulated VFIO host in strict mode.
//!
//! After every step the body runs the machine's invariant checker
//! ([`Machine::check`]) and panics with its report and the steps so far if
//! anything is off: a stale or missing host mapping, a window the host
//! and the guest disagree on, an IOMMU usage count that does not match
//! the listeners, pinned memory that nothing maps. Guest calls must
//! answer (errors are answers), and an unplug must always succeed. At the
//! end every device is unplugged in one mode, after which no container
//! may remain and every IOMMU region's usage must be zero.

use addrspace_core::Unregister;
use addrspace_spapr::PhbConfig;

use super::Bytes;
use crate::pseries::{Action, DeviceSpec, HostGroup, Machine, MachineConfig, PAST_RAM};

/// Steps decoded from one input at most.
const MAX_STEPS: usize = 48;

fn mode(b: &mut Bytes<'_>) -> Unregister {
    if b.flag() {
        Unregister::Replay
    } else {
        Unregister::Detach
    }
}

fn device(b: &mut Bytes<'_>, phbs: u32) -> DeviceSpec {
    let group = 1 + b.below(5) as u32;
    let phb = b.below(phbs as usize) as u32;
    let spec = match b.below(9) {
        0..=5 => DeviceSpec::spapr(group, phb),
        6 | 7 => DeviceSpec::spapr_v1(group, phb),
        _ => DeviceSpec::type1(group),
    };
    if b.flag() {
        spec.shared()
    } else {
        spec
    }
}

fn target(b: &mut Bytes<'_>) -> u64 {
    match b.below(13) {
        0 => PAST_RAM,
        _ => u64::from(b.byte()) | (u64::from(b.byte() & 0x0f) << 8),
    }
}

fn action(b: &mut Bytes<'_>, phbs: u32) -> Action {
    let phb = b.below(phbs as usize) as u32;
    // Slot 0 holds the default window; slot 1 a dynamic one, if any.
    let slot = usize::from(b.below(4) == 0);
    match b.below(25) {
        0..=3 => Action::Plug(device(b, phbs)),
        4 | 5 => Action::Unplug {
            nth: b.below(8),
            mode: mode(b),
        },
        6 => Action::Reset,
        7..=12 => Action::PutTce {
            phb,
            slot,
            page: b.below(64) as u64,
            target: target(b),
            perm: b.below(4) as u8,
        },
        13..=15 => {
            let n = 1 + b.below(12);
            Action::PutIndirect {
                phb,
                slot,
                page: b.below(64) as u64,
                targets: (0..n).map(|_| target(b)).collect(),
                perm: b.below(4) as u8,
            }
        }
        16 | 17 => Action::Stuff {
            phb,
            slot,
            page: b.below(64) as u64,
            target: target(b),
            perm: b.below(4) as u8,
            count: b.below(12) as u64,
        },
        18 => Action::Query { phb },
        19..=21 => Action::CreateWindow {
            phb,
            page_shift: b.pick(&[12, 13, 16, 21, 24]),
            window_shift: 14 + b.below(20) as u32,
        },
        22 | 23 => Action::RemoveWindow { phb, slot },
        _ => Action::ResetWindows { phb },
    }
}

/// Decodes `data` into a machine shape and a sequence of steps, runs
/// them and checks every invariant after each; panics with the checker's
/// report and the steps so far when one breaks.
pub fn run(data: &[u8]) {
    let mut b = Bytes::new(data);
    let phbs = 1 + b.below(2) as u32;
    // Host groups 1 to 4 support dynamic windows; 5 does not (a v2
    // container refuses it).
    let config = MachineConfig::new()
        .phbs((0..phbs).map(PhbConfig::new).collect())
        .group(HostGroup::new(5).ddw(false));
    let mut m = Machine::new(config).expect("the fuzzed machine shape builds");
    let mut log: Vec<String> = Vec::new();
    while !b.is_empty() && log.len() < MAX_STEPS {
        let action = action(&mut b, phbs);
        let outcome = m.apply(&action);
        if !matches!(action, Action::Plug(_)) {
            // Only a plug may be refused; guest calls answer, and an
            // unplug always takes the device out.
            assert!(
                outcome.is_ok(),
                "{action:?}: {outcome:?}\nafter:\n{}",
                log.join("\n")
            );
        }
        log.push(format!("{action:?} -> {outcome:?}"));
        let report = m.check();
        assert!(report.is_clean(), "{report}\nafter:\n{}", log.join("\n"));
    }
    let final_mode = mode(&mut b);
    let devices: Vec<_> = m.devices().map(|(id, _)| id).collect();
    for id in devices {
        m.unplug(id, final_mode)
            .unwrap_or_else(|e| panic!("teardown unplug failed: {e}\nafter:\n{}", log.join("\n")));
    }
    let report = m.check();
    assert!(
        report.is_clean(),
        "{report}\nafter teardown ({final_mode:?}) of:\n{}",
        log.join("\n")
    );
    assert_eq!(m.containers().count(), 0, "containers left after teardown");
    for phb in m.spapr().phbs() {
        for liobn in phb.liobns() {
            let region = phb
                .iommu_region(liobn)
                .expect("a PHB's window has a region");
            assert_eq!(
                m.mem().iommu_usage(region).expect("live region"),
                (0, false),
                "IOMMU usage left on {liobn:?} after teardown"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::run;

    #[test]
    fn empty_and_short_inputs_run() {
        run(&[]);
        run(&[1]);
        run(&[1, 0, 0, 0]);
    }

    #[test]
    fn plugs_windows_and_puts_run_clean() {
        // Two PHBs; then bytes that decode to plugs, window calls, puts
        // and resets in turn.
        let data: Vec<u8> = std::iter::once(1)
            .chain((0u8..=255).map(|x| x.wrapping_mul(37)))
            .collect();
        run(&data);
    }
}
