//! Kernel failures become typed errors naming the call and the errno, and
//! leave no window, registration or mapping behind.

mod support;

use std::sync::atomic::Ordering;

use addrspace_core::{Error, IommuPerm, ListenerFailure};
use addrspace_vfio::{Errno, Ioctl, IommuType, KernelCall, VfioError};
use support::*;

/// The listener refusals inside a plug or commit error.
fn refusals(err: VfioError) -> Vec<ListenerFailure> {
    match err {
        VfioError::Memory(Error::ListenerRefused { failures }) => failures,
        other => panic!("not a listener refusal: {other}"),
    }
}

/// Locked memory of guest RAM's registration.
const RAM_CHARGE: u64 = RAM_SIZE;

#[test]
fn a_locked_memory_limit_too_low_for_the_window_refuses_the_plug() {
    let mut m = Machine::new();
    let sim = sim();
    let c = container(&sim, IommuType::SpaprV2, GA);
    let locked = sim.locked_memory();
    sim.set_locked_memory_limit(locked + RAM_CHARGE + PAGE);

    let failures = refusals(c.plug(&mut m.mem, m.guest, Some(m.dma)).unwrap_err());

    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].name, "vfio");
    assert!(
        failures[0].message.starts_with("VFIO_IOMMU_SPAPR_TCE_CREATE (page shift 16, window size 0x40000000, levels 5) failed: ENOMEM"),
        "{}",
        failures[0].message
    );
    // One attempt per level count, 1 to the kernel's 5.
    assert_eq!(sim.stats().failures(Ioctl::SpaprTceCreate), 5);
    assert!(sim.windows(c.fd()).is_empty());
    assert!(sim.registered_memory(c.fd()).is_empty());
    assert_eq!(sim.locked_memory(), locked);
    assert!(c.plugged().is_none());
    assert!(m.mem.listeners_of(m.guest).unwrap().is_empty());
    assert_eq!(m.mem.iommu_usage(m.windows[0].region).unwrap(), (0, false));
}

#[test]
fn a_locked_memory_limit_too_low_for_ram_refuses_the_registration() {
    let mut m = Machine::new();
    let sim = sim();
    let c = container(&sim, IommuType::SpaprV2, GA);
    sim.set_locked_memory_limit(0);

    let failures = refusals(c.plug(&mut m.mem, m.guest, Some(m.dma)).unwrap_err());

    assert_eq!(failures[0].name, "vfio-prereg");
    assert_eq!(
        failures[0].message,
        format!(
            "VFIO_IOMMU_SPAPR_REGISTER_MEMORY (vaddr {:#x}, size {RAM_SIZE:#x}) failed: \
             ENOMEM (12): cannot allocate memory",
            m.ram_host
        )
    );
    assert_eq!(sim.stats().count(Ioctl::SpaprTceCreate), 0);
    assert!(sim.registrations().is_empty());
    assert!(c.guest_ram().is_empty());
}

#[test]
fn a_window_refused_in_a_commit_leaves_the_others_alone() {
    let (mut m, sim, c) = plugged_v2();
    m.guest_map(0, PAGE, 0, IommuPerm::RW);
    sim.set_locked_memory_limit(sim.locked_memory());
    let ddw = m.new_window(SLOT1, 1 << 32, PAGE);

    let err = m.enable_window(ddw).unwrap_err();

    let Error::ListenerRefused { failures } = err else {
        panic!("{err}");
    };
    assert!(
        failures[0].message.contains("ENOMEM"),
        "{}",
        failures[0].message
    );
    assert_eq!(
        failures[0].range,
        Some((SLOT1, u128::from(SLOT1) + (1 << 32)))
    );
    assert_eq!(sim.windows(c.fd()).len(), 1);
    assert_eq!(c.windows().len(), 1);
    assert_eq!(
        m.mem.iommu_usage(m.windows[ddw].region).unwrap(),
        (0, false)
    );
    assert_eq!(sim.host_tces(c.fd()), m.expected_host_tces());
}

#[test]
fn a_refused_notifier_takes_the_new_window_down() {
    let mut m = Machine::new();
    m.windows[0]
        .iommu
        .refuse_flags
        .store(true, Ordering::Relaxed);
    let sim = sim();
    let c = container(&sim, IommuType::SpaprV2, GA);

    let failures = refusals(c.plug(&mut m.mem, m.guest, Some(m.dma)).unwrap_err());

    assert!(
        failures[0].message.contains("the table cannot leave KVM"),
        "{}",
        failures[0].message
    );
    assert_eq!(sim.stats().count(Ioctl::SpaprTceCreate), 1);
    assert_eq!(
        sim.stats().count(Ioctl::SpaprTceRemove),
        2,
        "setup and undo"
    );
    assert!(sim.windows(c.fd()).is_empty());
    assert!(sim.registrations().is_empty());
}

#[test]
fn a_mapping_the_kernel_refuses_during_replay_takes_the_window_down() {
    let mut m = Machine::new();
    // Not guest RAM: refused before the kernel, and not a kernel failure.
    m.guest_map(0, 0, RAM_SIZE, IommuPerm::RW);
    // Not a multiple of the 64 KiB IOMMU page: MAP_DMA answers EINVAL.
    m.guest_map(0, PAGE, 0x1000, IommuPerm::RW);
    m.guest_map(0, 2 * PAGE, 0x2_0000, IommuPerm::RW);
    let sim = sim();
    let c = container(&sim, IommuType::SpaprV2, GA);

    let failures = refusals(c.plug(&mut m.mem, m.guest, Some(m.dma)).unwrap_err());

    assert!(
        failures[0].message.starts_with("replaying the mappings of window 0x0 failed 1 time(s); first: VFIO_IOMMU_MAP_DMA (iova 0x10000, size 0x10000, vaddr"),
        "{}",
        failures[0].message
    );
    assert!(failures[0]
        .message
        .ends_with("EINVAL (22): invalid argument"));
    assert!(sim.windows(c.fd()).is_empty());
    assert!(sim.host_tces(c.fd()).is_empty());
    assert!(sim.registrations().is_empty());
}

#[test]
fn a_mapping_the_kernel_refuses_after_plug_is_logged_with_its_values() {
    let (m, sim, c) = plugged_v2();

    m.guest_map(0, PAGE, 0x1000, IommuPerm::RW);

    assert!(sim.host_tces(c.fd()).is_empty());
    let stats = c.stats();
    assert_eq!((stats.kernel_failures, stats.maps), (1, 0));
    let errors = c.take_errors();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].errno(), Some(Errno::EINVAL));
    assert_eq!(
        errors[0].kernel_call(),
        Some(&KernelCall::MapDma {
            iova: PAGE,
            size: PAGE,
            vaddr: m.ram_host + 0x1000,
            flags: 3
        })
    );
    assert!(c.take_errors().is_empty(), "taken");
    assert_eq!(c.stats().errors, 1, "still counted");
}

#[test]
fn the_error_log_keeps_only_the_newest_errors() {
    let (m, _sim, c) = plugged_v2();

    for i in 0..100 {
        m.guest_map(0, i * PAGE, RAM_SIZE + i * PAGE, IommuPerm::RW);
    }

    assert_eq!(c.stats().refused, 100);
    let errors = c.take_errors();
    assert_eq!(errors.len(), addrspace_vfio::ERROR_LOG_CAPACITY);
    assert!(
        matches!(errors.last(), Some(VfioError::NotGuestRam { iova, .. }) if *iova == 99 * PAGE)
    );
}
