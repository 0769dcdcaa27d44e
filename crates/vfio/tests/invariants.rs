//! Random guest activity against a strict kernel, with the spec's
//! invariants checked after every step: the container's record of host
//! windows equals the kernel's, each enabled guest window has exactly one
//! host window at its bus offset, host TCEs equal the guest's entries page
//! for page, registered memory equals guest RAM, usage counts follow the
//! windows, and teardown (either mode) leaves nothing behind.

mod support;

use addrspace_core::{IommuPerm, Unregister};
use addrspace_vfio::{Container, IommuType, MemoryRange, SimKernel, VfioError};
use proptest::prelude::*;
use support::*;

#[derive(Clone, Debug)]
enum Op {
    Map {
        w: usize,
        page: u64,
        gpa_page: u64,
        write: bool,
    },
    Unmap {
        w: usize,
        page: u64,
    },
    Toggle {
        w: usize,
    },
    /// Machine reset: every window off and on again in one transaction.
    Reset,
    Replug,
}

/// Guest pages per window the test touches, and guest RAM pages plus a
/// few beyond its end.
const PAGES: u64 = 32;
const GPA_PAGES: u64 = RAM_SIZE / PAGE + 4;

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..2usize, 0..PAGES, 0..GPA_PAGES, any::<bool>())
            .prop_map(|(w, page, gpa_page, write)| Op::Map { w, page, gpa_page, write }),
        3 => (0..2usize, 0..PAGES).prop_map(|(w, page)| Op::Unmap { w, page }),
        1 => (0..2usize).prop_map(|w| Op::Toggle { w }),
        1 => Just(Op::Reset),
        1 => Just(Op::Replug),
    ]
}

fn apply(m: &mut Machine, c: &Container<SimKernel>, op: &Op) {
    match *op {
        Op::Map {
            w,
            page,
            gpa_page,
            write,
        } => {
            let perm = if write { IommuPerm::RW } else { IommuPerm::RO };
            m.guest_map(w, page * PAGE, gpa_page * PAGE, perm);
        }
        Op::Unmap { w, page } => {
            m.guest_unmap(w, page * PAGE);
        }
        Op::Toggle { w } => {
            if m.windows[w].enabled {
                m.disable_window(w).unwrap();
            } else {
                m.enable_window(w).unwrap();
            }
        }
        Op::Reset => {
            let enabled: Vec<usize> = (0..m.windows.len())
                .filter(|&w| m.windows[w].enabled)
                .collect();
            m.mem.begin();
            for &w in &enabled {
                m.disable_window(w).unwrap();
            }
            for &w in &enabled {
                m.enable_window(w).unwrap();
            }
            m.mem.commit().unwrap();
        }
        Op::Replug => {
            c.unplug(&mut m.mem).unwrap();
            c.plug(&mut m.mem, m.guest, Some(m.dma)).unwrap();
        }
    }
}

fn check(m: &Machine, sim: &SimKernel, c: &Container<SimKernel>) -> Result<(), TestCaseError> {
    let kernel: Vec<_> = sim
        .windows(c.fd())
        .iter()
        .map(|w| (w.start, w.size, w.page_shift, w.levels))
        .collect();
    let ours: Vec<_> = c
        .windows()
        .iter()
        .map(|w| (w.start, w.size, w.page_shift, w.levels))
        .collect();
    prop_assert_eq!(&ours, &kernel, "invariant 1: records equal the kernel's");
    let enabled: Vec<(u64, u64)> = m
        .windows
        .iter()
        .filter(|w| w.enabled)
        .map(|w| (w.bus, w.size))
        .collect();
    let host: Vec<(u64, u64)> = kernel.iter().map(|w| (w.0, w.1)).collect();
    prop_assert_eq!(
        host,
        enabled,
        "invariant 2: one host window per guest window"
    );
    prop_assert_eq!(sim.host_tces(c.fd()), m.expected_host_tces(), "invariant 3");
    let ram = MemoryRange {
        vaddr: m.ram_host,
        size: RAM_SIZE,
    };
    prop_assert_eq!(sim.registered_memory(c.fd()), vec![ram], "invariant 5");
    for w in &m.windows {
        let usage = m.mem.iommu_usage(w.region).unwrap();
        prop_assert_eq!(usage, (u32::from(w.enabled), w.enabled), "invariant 6");
        let hooks = w.iommu.hooks();
        for pair in hooks.windows(2) {
            prop_assert_ne!(pair[0], pair[1], "vfio_start and vfio_stop alternate");
        }
    }
    for err in c.take_errors() {
        prop_assert!(
            matches!(err, VfioError::NotGuestRam { .. }),
            "unexpected error: {}",
            err
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn host_state_follows_the_guest_through_any_sequence(
        ops in prop::collection::vec(op(), 1..40),
        detach in any::<bool>(),
    ) {
        let mut m = Machine::new();
        let ddw = m.new_window(SLOT1, 1 << 32, PAGE);
        m.enable_window(ddw).unwrap();
        let sim = sim();
        let locked = sim.locked_memory();
        let c = container(&sim, IommuType::SpaprV2, GA);
        c.plug(&mut m.mem, m.guest, Some(m.dma)).unwrap();
        check(&m, &sim, &c)?;
        for op in &ops {
            apply(&mut m, &c, op);
            check(&m, &sim, &c)?;
        }
        let mode = if detach { Unregister::Detach } else { Unregister::Replay };
        c.teardown(&mut m.mem, mode).unwrap();
        prop_assert!(sim.container(c.fd()).is_none());
        prop_assert!(sim.registrations().is_empty());
        prop_assert_eq!(sim.locked_memory(), locked);
        for w in &m.windows {
            prop_assert_eq!(m.mem.iommu_usage(w.region).unwrap(), (0, false));
        }
    }
}
