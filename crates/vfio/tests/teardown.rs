//! Taking containers out of a machine: replay mode (one callback at a
//! time, unmapping before unregistering) and detach mode (the kernel frees
//! everything when the container is released).

mod support;

use addrspace_core::{IommuPerm, NotifierFlags, Unregister};
use addrspace_vfio::{Ioctl, IommuType, PeState, VfioError};
use support::*;

/// A plugged v2 container with two guest windows, a few mappings each.
fn busy() -> (
    Machine,
    std::sync::Arc<addrspace_vfio::SimKernel>,
    addrspace_vfio::Container<addrspace_vfio::SimKernel>,
    u64,
) {
    let mut m = Machine::new();
    let ddw = m.new_window(SLOT1, 1 << 32, PAGE);
    m.enable_window(ddw).unwrap();
    let sim = sim();
    let locked_before = sim.locked_memory();
    let c = container(&sim, IommuType::SpaprV2, GA);
    c.plug(&mut m.mem, m.guest, Some(m.dma)).unwrap();
    for i in 0..4 {
        m.guest_map(0, i * PAGE, i * 0x10_0000, IommuPerm::RW);
        m.guest_map(ddw, i * PAGE, i * 0x20_0000, IommuPerm::RO);
    }
    assert_eq!(sim.host_tces(c.fd()).len(), 8);
    (m, sim, c, locked_before)
}

#[test]
fn unplug_in_replay_mode_leaves_no_window_registration_or_locked_memory() {
    let (mut m, sim, c, locked_before) = busy();

    c.unplug(&mut m.mem).unwrap();

    assert!(sim.windows(c.fd()).is_empty());
    assert!(sim.registered_memory(c.fd()).is_empty());
    assert!(sim.registrations().is_empty());
    assert_eq!(sim.locked_memory(), locked_before);
    assert!(c.windows().is_empty() && c.registered_memory().is_empty());
    assert!(c.take_errors().is_empty());
    for w in &m.windows {
        assert_eq!(m.mem.iommu_usage(w.region).unwrap(), (0, false));
        assert_eq!(w.iommu.hooks(), vec!["start", "stop"]);
        assert_eq!(
            m.mem.iommu_notifier_flags(w.region).unwrap(),
            NotifierFlags::NONE
        );
    }
}

#[test]
fn replay_mode_issues_one_unmap_and_one_remove_per_section() {
    let (mut m, sim, c, _) = busy();
    sim.reset_stats();

    c.teardown(&mut m.mem, Unregister::Replay).unwrap();

    let stats = sim.stats();
    assert_eq!(stats.count(Ioctl::UnmapDma), 2);
    assert_eq!(stats.count(Ioctl::SpaprTceRemove), 2);
    assert_eq!(stats.count(Ioctl::SpaprUnregisterMemory), 1);
    assert_eq!(stats.total_failures(), 0);
    assert!(sim.container(c.fd()).is_none(), "container freed");
}

#[test]
fn detach_mode_issues_no_unmap_and_the_kernel_frees_everything() {
    let (mut m, sim, c, locked_before) = busy();
    sim.reset_stats();

    c.teardown(&mut m.mem, Unregister::Detach).unwrap();

    let stats = sim.stats();
    assert_eq!(stats.count(Ioctl::UnmapDma), 0);
    assert_eq!(stats.count(Ioctl::SpaprTceRemove), 0);
    assert_eq!(stats.count(Ioctl::SpaprUnregisterMemory), 0);
    assert_eq!(stats.count(Ioctl::GroupUnsetContainer), 1);
    assert_eq!(stats.count(Ioctl::CloseContainer), 1);
    assert!(sim.container(c.fd()).is_none());
    assert!(sim.registrations().is_empty());
    assert_eq!(sim.locked_memory(), locked_before);
    assert!(c.is_released());
    for w in &m.windows {
        assert_eq!(m.mem.iommu_usage(w.region).unwrap(), (0, false));
        assert_eq!(w.iommu.hooks(), vec!["start", "stop"]);
        assert_eq!(
            m.mem.iommu_notifier_flags(w.region).unwrap(),
            NotifierFlags::NONE
        );
    }
    assert!(m.mem.listeners_of(m.dma).unwrap().is_empty());
    assert!(m.mem.listeners_of(m.guest).unwrap().is_empty());
}

#[test]
fn guest_mappings_after_a_detach_teardown_reach_nobody() {
    let (mut m, sim, c, _) = busy();
    c.teardown(&mut m.mem, Unregister::Detach).unwrap();
    sim.reset_stats();

    assert_eq!(m.guest_map(0, 9 * PAGE, 0, IommuPerm::RW), 0);

    assert_eq!(sim.stats().total(), 0);
}

#[test]
fn teardown_gives_the_groups_back_to_the_platform() {
    let (mut m, sim, c, _) = busy();
    c.open_device(GA, DEV_A).unwrap();

    c.teardown(&mut m.mem, Unregister::Replay).unwrap();

    let group = &sim.snapshot().groups[&GA];
    assert!(!group.open);
    assert_eq!(group.container, None);
    assert_eq!(group.open_devices, 0);
    assert_eq!(group.pe, PeState::PlatformDefault);
}

#[test]
fn one_commit_removing_windows_and_ram_unmaps_before_unregistering() {
    let (mut m, sim, c, locked_before) = busy();

    m.mem.begin();
    m.mem.del_subregion(m.system, m.ram).unwrap();
    m.disable_window(0).unwrap();
    m.disable_window(1).unwrap();
    m.mem.commit().unwrap();

    // Strict mode refuses to unregister memory that is still mapped, so a
    // clean log means the unmapping came first.
    assert!(c.take_errors().is_empty());
    assert_eq!(sim.stats().total_failures(), 0);
    assert!(sim.registered_memory(c.fd()).is_empty());
    assert!(sim.windows(c.fd()).is_empty());
    assert_eq!(sim.locked_memory(), locked_before);
}

#[test]
fn ram_deleted_and_re_added_in_one_commit_keeps_its_registration() {
    let (mut m, sim, c, _) = busy();
    sim.reset_stats();

    m.mem.begin();
    m.mem.del_subregion(m.system, m.ram).unwrap();
    m.mem.add_subregion(m.system, 0, m.ram).unwrap();
    m.mem.set_readonly(m.ram, true).unwrap();
    m.mem.commit().unwrap();

    assert_eq!(sim.stats().count(Ioctl::SpaprUnregisterMemory), 0);
    assert_eq!(sim.stats().count(Ioctl::SpaprRegisterMemory), 0);
    assert_eq!(sim.registered_memory(c.fd()).len(), 1);
    assert!(c.guest_ram()[0].readonly);
}

#[test]
fn an_unplugged_container_plugs_again() {
    let (mut m, sim, c, _) = busy();
    c.unplug(&mut m.mem).unwrap();

    c.plug(&mut m.mem, m.guest, Some(m.dma)).unwrap();

    assert_eq!(sim.windows(c.fd()).len(), 2);
    assert_eq!(sim.host_tces(c.fd()), m.expected_host_tces());
    assert_eq!(sim.host_tces(c.fd()).len(), 8);
}

#[test]
fn a_plugged_container_refuses_release_and_a_second_plug() {
    let (mut m, _sim, c, _) = busy();

    assert!(matches!(c.release(), Err(VfioError::Plugged)));
    assert!(matches!(
        c.plug(&mut m.mem, m.guest, Some(m.dma)),
        Err(VfioError::AlreadyPlugged)
    ));
    c.unplug(&mut m.mem).unwrap();
    assert!(matches!(c.unplug(&mut m.mem), Err(VfioError::NotPlugged)));
    c.release().unwrap();
    assert!(matches!(c.attach_group(GB), Err(VfioError::Released)));
}
