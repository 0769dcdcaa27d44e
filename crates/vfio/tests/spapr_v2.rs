//! sPAPR v2 containers plugged into a machine: host windows follow the
//! guest's IOMMU windows and host TCEs follow the guest's TCEs.

mod support;

use addrspace_core::{IommuPerm, Unregister};
use addrspace_vfio::{HostTce, Ioctl, IommuType, MemoryRange, TcePerms, VfioError};
use support::*;

#[test]
fn plug_creates_the_host_window_at_the_sections_bus_address() {
    let (m, sim, c) = plugged_v2();
    let windows = sim.windows(c.fd());
    assert_eq!(windows.len(), 1);
    assert_eq!(
        (windows[0].start, windows[0].size, windows[0].page_shift),
        (0, WINDOW, 16)
    );
    let ours = c.windows();
    assert_eq!(ours.len(), 1);
    assert_eq!(
        (
            ours[0].start,
            ours[0].size,
            ours[0].page_shift,
            ours[0].levels
        ),
        (0, WINDOW, 16, windows[0].levels)
    );
    assert_eq!(m.mem.iommu_usage(m.windows[0].region).unwrap(), (1, true));
    assert_eq!(m.windows[0].iommu.hooks(), vec!["start"]);
}

#[test]
fn plug_registers_guest_ram_by_host_address() {
    let (m, sim, c) = plugged_v2();
    let ram = MemoryRange {
        vaddr: m.ram_host,
        size: RAM_SIZE,
    };
    assert_eq!(sim.registered_memory(c.fd()), vec![ram]);
    assert_eq!(c.registered_memory(), vec![ram]);
    assert_eq!(c.guest_ram().len(), 1);
    assert_eq!(c.guest_ram()[0].host, m.ram_host);
}

#[test]
fn plug_replays_mappings_the_guest_made_before() {
    let mut m = Machine::new();
    m.guest_map(0, 0, 0x10_0000, IommuPerm::RW);
    m.guest_map(0, 3 * PAGE, 0x20_0000, IommuPerm::RO);
    m.guest_map(0, WINDOW - PAGE, RAM_SIZE - PAGE, IommuPerm::RW);
    let sim = sim();
    let c = container(&sim, IommuType::SpaprV2, GA);

    c.plug(&mut m.mem, m.guest, Some(m.dma)).unwrap();

    assert_eq!(sim.host_tces(c.fd()).len(), 3);
    assert_eq!(sim.host_tces(c.fd()), m.expected_host_tces());
    assert_eq!(c.stats().maps, 3);
}

#[test]
fn guest_mappings_after_plug_reach_the_host_page_for_page() {
    let (m, sim, c) = plugged_v2();

    assert_eq!(m.guest_map(0, 0x10 * PAGE, 0x40_0000, IommuPerm::RW), 1);
    m.guest_map(0, 0x11 * PAGE, 0x50_0000, IommuPerm::RO);
    m.guest_map(0, 0x12 * PAGE, 0x60_0000, IommuPerm::RW);
    m.guest_unmap(0, 0x12 * PAGE);

    let tces = sim.host_tces(c.fd());
    assert_eq!(tces, m.expected_host_tces());
    assert_eq!(
        tces[&(0x11 * PAGE)],
        HostTce {
            vaddr: m.ram_host + 0x50_0000,
            perms: TcePerms::READ_ONLY
        }
    );
    assert_eq!(c.stats().unmaps, 1);
    assert!(c.take_errors().is_empty());
}

#[test]
fn a_guest_remapping_replaces_the_host_entry() {
    let (m, sim, c) = plugged_v2();
    m.guest_map(0, PAGE, 0x40_0000, IommuPerm::RW);
    m.guest_map(0, PAGE, 0x80_0000, IommuPerm::RO);
    assert_eq!(sim.host_tces(c.fd()), m.expected_host_tces());
    assert_eq!(sim.host_tces(c.fd())[&PAGE].vaddr, m.ram_host + 0x80_0000);
}

#[test]
fn a_tce_pointing_outside_guest_ram_never_reaches_the_host() {
    let (m, sim, c) = plugged_v2();

    m.guest_map(0, PAGE, RAM_SIZE + 0x100_0000, IommuPerm::RW);

    assert!(sim.host_tces(c.fd()).is_empty());
    assert_eq!(c.stats().refused, 1);
    assert_eq!(c.stats().maps, 0);
    let errors = c.take_errors();
    assert!(
        matches!(
            errors[..],
            [VfioError::NotGuestRam { iova: PAGE, gpa, .. }] if gpa == RAM_SIZE + 0x100_0000
        ),
        "{errors:?}"
    );
}

#[test]
fn a_tce_redirected_outside_guest_ram_drops_the_old_host_mapping() {
    let (m, sim, c) = plugged_v2();
    m.guest_map(0, PAGE, 0x40_0000, IommuPerm::RW);

    m.guest_map(0, PAGE, RAM_SIZE, IommuPerm::RW);

    assert!(sim.host_tces(c.fd()).is_empty(), "no stale DMA mapping");
    assert_eq!(c.stats().refused, 1);
}

#[test]
fn disabling_the_guest_window_removes_the_host_window_and_enabling_recreates_it() {
    let (mut m, sim, c) = plugged_v2();
    m.guest_map(0, 5 * PAGE, 0x10_0000, IommuPerm::RW);

    m.disable_window(0).unwrap();
    assert!(sim.windows(c.fd()).is_empty());
    assert!(c.windows().is_empty());
    assert!(sim.host_tces(c.fd()).is_empty());

    m.guest_map(0, 6 * PAGE, 0x20_0000, IommuPerm::RW);
    m.enable_window(0).unwrap();
    assert_eq!(sim.windows(c.fd()).len(), 1);
    assert_eq!(sim.host_tces(c.fd()), m.expected_host_tces());
    assert_eq!(sim.host_tces(c.fd()).len(), 2);
    assert!(c.take_errors().is_empty());
}

#[test]
fn a_second_guest_window_gets_the_second_slot() {
    let (mut m, sim, c) = plugged_v2();
    let ddw = m.new_window(SLOT1, 1 << 32, PAGE);

    m.enable_window(ddw).unwrap();
    m.guest_map(ddw, 7 * PAGE, 0x30_0000, IommuPerm::RW);

    let starts: Vec<u64> = sim.windows(c.fd()).iter().map(|w| w.start).collect();
    assert_eq!(starts, vec![0, SLOT1]);
    assert_eq!(
        c.windows().iter().map(|w| w.start).collect::<Vec<_>>(),
        starts
    );
    assert_eq!(sim.host_tces(c.fd()), m.expected_host_tces());
    assert!(sim.host_tces(c.fd()).contains_key(&(SLOT1 + 7 * PAGE)));
}

#[test]
fn a_window_for_the_second_slot_lands_there_while_the_first_is_free() {
    let (mut m, sim, c) = plugged_v2();
    let ddw = m.new_window(SLOT1, WINDOW, PAGE);
    m.enable_window(ddw).unwrap();
    m.guest_map(ddw, PAGE, 0x10_0000, IommuPerm::RW);
    // The guest removes its default window; the 64-bit one stays.
    m.disable_window(0).unwrap();
    sim.reset_stats();

    // Re-rendered (here: toggled) while slot 0 is free.
    m.disable_window(ddw).unwrap();
    m.enable_window(ddw).unwrap();

    let starts: Vec<u64> = sim.windows(c.fd()).iter().map(|w| w.start).collect();
    assert_eq!(starts, vec![SLOT1]);
    assert_eq!(c.windows()[0].start, SLOT1);
    assert_eq!(sim.host_tces(c.fd()), m.expected_host_tces());
    // The first CREATE landed in slot 0 and held it while the second
    // went to slot 1.
    assert_eq!(sim.stats().count(Ioctl::SpaprTceCreate), 2);
    assert_eq!(sim.stats().count(Ioctl::SpaprTceRemove), 2);
}

#[test]
fn a_window_at_an_address_no_slot_has_is_removed_and_refused() {
    let mut m = Machine::new();
    m.disable_window(0).unwrap();
    let odd = m.new_window(1 << 32, WINDOW, PAGE);
    m.enable_window(odd).unwrap();
    let sim = sim();
    let c = container(&sim, IommuType::SpaprV2, GA);
    let locked = sim.locked_memory();

    let err = c.plug(&mut m.mem, m.guest, Some(m.dma)).unwrap_err();

    let VfioError::Memory(addrspace_core::Error::ListenerRefused { failures }) = err else {
        panic!("{err}");
    };
    assert_eq!(
        failures[0].message,
        "the host window for bus address 0x100000000 was created at 0x800000000000000"
    );
    assert!(sim.windows(c.fd()).is_empty());
    assert!(sim.registered_memory(c.fd()).is_empty());
    assert_eq!(sim.locked_memory(), locked);
    assert!(c.plugged().is_none());
    assert_eq!(
        m.mem.iommu_usage(m.windows[odd].region).unwrap(),
        (0, false)
    );
}

#[test]
fn huge_guest_pages_get_the_largest_host_page_below_them() {
    let mut m = Machine::new();
    m.disable_window(0).unwrap();
    let huge = m.new_window(0, WINDOW, 1 << 24);
    m.enable_window(huge).unwrap();
    let sim = sim();
    sim.back_with_huge_pages(m.ram_host, RAM_SIZE, 24);
    let c = container(&sim, IommuType::SpaprV2, GA);
    c.plug(&mut m.mem, m.guest, Some(m.dma)).unwrap();

    m.guest_map(huge, 1 << 24, 2 << 24, IommuPerm::RW);

    assert_eq!(c.windows()[0].page_shift, 24);
    assert_eq!(sim.windows(c.fd())[0].page_shift, 24);
    assert_eq!(sim.host_tces(c.fd()), m.expected_host_tces());
}

#[test]
fn a_section_not_in_whole_host_pages_is_refused() {
    let mut m = Machine::new();
    m.disable_window(0).unwrap();
    let odd = m.new_window(0x1000, WINDOW, 0x1000);
    m.enable_window(odd).unwrap();
    let sim = sim();
    let c = container(&sim, IommuType::SpaprV2, GA);

    let err = c.plug(&mut m.mem, m.guest, Some(m.dma)).unwrap_err();

    assert!(
        err.to_string()
            .contains("not aligned to the host page size"),
        "{err}"
    );
    assert!(sim.windows(c.fd()).is_empty());
    assert_eq!(sim.stats().count(Ioctl::SpaprTceCreate), 0);
}

#[test]
fn two_containers_on_one_dma_space_each_mirror_the_guest() {
    let mut m = Machine::new();
    let sim = sim();
    let a = container(&sim, IommuType::SpaprV2, GA);
    let b = container(&sim, IommuType::SpaprV2, GB);
    a.plug(&mut m.mem, m.guest, Some(m.dma)).unwrap();
    b.plug(&mut m.mem, m.guest, Some(m.dma)).unwrap();

    assert_eq!(m.guest_map(0, 2 * PAGE, 0x70_0000, IommuPerm::RW), 2);

    assert_eq!(m.mem.iommu_usage(m.windows[0].region).unwrap(), (2, true));
    assert_eq!(sim.host_tces(a.fd()), m.expected_host_tces());
    assert_eq!(sim.host_tces(b.fd()), m.expected_host_tces());
    let regs = sim.registrations();
    assert_eq!(regs.len(), 1, "one process-wide registration, shared");
    assert_eq!(regs[0].users, 2);

    a.teardown(&mut m.mem, Unregister::Replay).unwrap();
    m.guest_map(0, 3 * PAGE, 0x71_0000, IommuPerm::RW);
    assert_eq!(sim.host_tces(b.fd()), m.expected_host_tces());
    assert_eq!(m.mem.iommu_usage(m.windows[0].region).unwrap(), (1, true));
    assert_eq!(m.windows[0].iommu.hooks(), vec!["start"]);
}

#[test]
fn ram_hot_added_after_plug_is_registered_and_mappable() {
    let (mut m, sim, c) = plugged_v2();
    let extra = m
        .mem
        .create_ram("hotplug", u128::from(2 * RAM_ALIGN))
        .unwrap();
    let host = m.mem.region(extra).unwrap().backing().unwrap().host_addr();
    let offset = host.next_multiple_of(RAM_ALIGN) - host;
    let alias = m
        .mem
        .create_alias("hotplug-ram", extra, offset, u128::from(RAM_ALIGN))
        .unwrap();
    m.mem.add_subregion(m.system, RAM_SIZE, alias).unwrap();

    m.guest_map(0, PAGE, RAM_SIZE + PAGE, IommuPerm::RW);

    assert_eq!(sim.registered_memory(c.fd()).len(), 2);
    let tces = sim.host_tces(c.fd());
    assert_eq!(tces[&PAGE].vaddr, host + offset + PAGE);
    assert_eq!(c.stats().refused, 0);
}
