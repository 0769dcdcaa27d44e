//! The other backends: sPAPR v1 (one fixed window) and Type1v2 (guest
//! RAM mapped at its guest physical address).

mod support;

use addrspace_core::{IommuPerm, Unregister};
use addrspace_vfio::{Ioctl, IommuType, TcePerms, VfioError};
use support::*;

#[test]
fn v1_enables_its_fixed_window_on_attach() {
    let sim = sim();
    let c = container(&sim, IommuType::SpaprV1, GA);

    let windows = c.windows();
    assert_eq!(windows.len(), 1);
    assert_eq!(
        (windows[0].start, windows[0].size, windows[0].page_shift),
        (0, 0x8000_0000, 12)
    );
    let snapshot = sim.snapshot();
    let spapr = snapshot.spapr(c.fd()).unwrap();
    assert!(spapr.enabled && !spapr.v2);
}

#[test]
fn v1_maps_guest_pages_into_the_fixed_window_without_windows_of_its_own() {
    let mut m = Machine::new();
    m.guest_map(0, 0, 0x30_0000, IommuPerm::RW);
    let sim = sim();
    let c = container(&sim, IommuType::SpaprV1, GA);

    c.plug(&mut m.mem, m.guest, Some(m.dma)).unwrap();
    m.guest_map(0, 4 * PAGE, 0x40_0000, IommuPerm::RO);

    let stats = sim.stats();
    assert_eq!(stats.count(Ioctl::SpaprTceCreate), 0);
    assert_eq!(stats.count(Ioctl::SpaprRegisterMemory), 0);
    // 64 KiB guest pages land as sixteen 4 KiB host TCEs each.
    let tces = sim.host_tces(c.fd());
    assert_eq!(tces.len(), 32);
    assert_eq!(tces[&(4 * PAGE + 0x1000)].vaddr, m.ram_host + 0x40_1000);
    assert_eq!(tces[&(4 * PAGE)].perms, TcePerms::READ_ONLY);
    assert_eq!(c.iommu_sections(), vec![(0, WINDOW)]);
}

#[test]
fn v1_refuses_a_section_outside_the_fixed_window() {
    let mut m = Machine::new();
    let high = m.new_window(SLOT1, WINDOW, PAGE);
    m.enable_window(high).unwrap();
    let sim = sim();
    let c = container(&sim, IommuType::SpaprV1, GA);

    let err = c.plug(&mut m.mem, m.guest, Some(m.dma)).unwrap_err();

    let VfioError::Memory(addrspace_core::Error::ListenerRefused { failures }) = err else {
        panic!("{err}");
    };
    assert_eq!(failures.len(), 1);
    assert!(failures[0]
        .message
        .contains("lies outside the fixed window [0x0, +0x80000000)"));
    assert!(sim.host_tces(c.fd()).is_empty());
}

#[test]
fn v1_unplug_unmaps_each_section_and_keeps_the_fixed_window() {
    let mut m = Machine::new();
    let sim = sim();
    let c = container(&sim, IommuType::SpaprV1, GA);
    c.plug(&mut m.mem, m.guest, Some(m.dma)).unwrap();
    m.guest_map(0, PAGE, 0, IommuPerm::RW);
    sim.reset_stats();

    c.unplug(&mut m.mem).unwrap();

    assert_eq!(sim.stats().count(Ioctl::UnmapDma), 1);
    assert_eq!(sim.stats().count(Ioctl::SpaprTceRemove), 0);
    assert!(sim.host_tces(c.fd()).is_empty());
    assert_eq!(c.windows().len(), 1);
    c.release().unwrap();
    assert_eq!(sim.locked_memory(), 0);
}

#[test]
fn type1_maps_guest_ram_at_its_guest_physical_address() {
    let mut m = Machine::new();
    let sim = sim();
    let c = container(&sim, IommuType::Type1V2, GA);

    c.plug(&mut m.mem, m.guest, None).unwrap();

    let mappings = sim.type1_mappings(c.fd());
    assert_eq!(mappings.len(), 1);
    assert_eq!(
        (mappings[0].iova, mappings[0].size, mappings[0].vaddr),
        (0, RAM_SIZE, m.ram_host)
    );
    assert_eq!(mappings[0].perms, TcePerms::READ_WRITE);
    assert_eq!(sim.locked_memory(), RAM_SIZE);
    assert!(m.mem.listeners_of(m.dma).unwrap().is_empty());
}

#[test]
fn type1_follows_ram_changes_and_unmaps_on_teardown() {
    let mut m = Machine::new();
    let sim = sim();
    let c = container(&sim, IommuType::Type1V2, GA);
    c.plug(&mut m.mem, m.guest, None).unwrap();

    m.mem.set_readonly(m.ram, true).unwrap();
    assert_eq!(sim.type1_mappings(c.fd())[0].perms, TcePerms::READ_ONLY);

    sim.reset_stats();
    c.teardown(&mut m.mem, Unregister::Replay).unwrap();
    assert_eq!(sim.stats().count(Ioctl::UnmapDma), 1);
    assert_eq!(sim.locked_memory(), 0);
    assert!(sim.container(c.fd()).is_none());
}

#[test]
fn type1_takes_no_dma_address_space() {
    let mut m = Machine::new();
    let sim = sim();
    let c = container(&sim, IommuType::Type1V2, GA);

    let err = c.plug(&mut m.mem, m.guest, Some(m.dma)).unwrap_err();

    assert!(matches!(err, VfioError::DmaSpace { needed: false, .. }));
}
