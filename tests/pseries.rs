//! Scenarios on the pseries machine: VFIO devices hot-plugged behind a
//! PHB, the guest mapping DMA through its TCE tables, dynamic windows,
//! resets and unplugs, checked against the simulated kernel (strict mode).

use addrspace::pseries::{DeviceSpec, Machine, MachineConfig};
use addrspace::Unregister;
use addrspace_spapr::{HResult, Liobn, Placement, RtasStatus, Tce};
use addrspace_vfio::{Ioctl, IommuType, TcePerms};

const DEFAULT: Liobn = Liobn(0x8000_0000);
const SECOND: Liobn = Liobn(0x8000_0001);
const SLOT1: u64 = 1 << 59;

fn machine() -> Machine {
    Machine::new(MachineConfig::new()).unwrap()
}

#[track_caller]
fn assert_clean(m: &Machine) {
    let report = m.check();
    assert!(report.is_clean(), "{report}");
}

/// Eight entries in the default window: pages 0x10_0000 + i * 4 KiB at
/// entries 3 * i, permissions cycling RO, WO, RW.
fn fill_default(m: &Machine) {
    for i in 0..8u64 {
        let perm = [1, 2, 3][i as usize % 3];
        m.h_put_tce(DEFAULT, i * 0x3000, Tce((0x10_0000 + (i << 12)) | perm))
            .unwrap();
    }
}

fn usage(m: &Machine, liobn: Liobn) -> (u32, bool) {
    let region = m.phb(0).unwrap().iommu_region(liobn).unwrap();
    m.mem().iommu_usage(region).unwrap()
}

#[test]
fn plug_starts_vfio_use_and_moves_the_table_to_userspace_with_its_entries() {
    let mut m = machine();
    fill_default(&m);
    let table = m.spapr().table(DEFAULT).unwrap().clone();
    let before = table.entries();
    assert_eq!(table.placement(), Placement::Kvm);

    m.plug(DeviceSpec::spapr(1, 0)).unwrap();

    assert_eq!(usage(&m, DEFAULT), (1, true));
    assert_eq!(table.placement(), Placement::Userspace);
    let moves = m.take_table_moves();
    assert_eq!(moves.len(), 1);
    assert!(moves[0].preserved());
    assert_eq!(moves[0].entries_before, 8);
    assert_eq!(table.entries(), before);
    let (_, container, _) = m.containers().next().unwrap();
    let host = m.kernel().host_tces(container.fd());
    assert_eq!(host.len(), 8, "the replay mapped every entry");
    assert_clean(&m);
}

#[test]
fn hypercalls_reach_host_mappings() {
    let mut m = machine();
    m.plug(DeviceSpec::spapr(1, 0)).unwrap();
    let fd = m.containers().next().unwrap().1.fd();

    m.h_put_tce(DEFAULT, 0x5000, Tce(0x42_0000 | Tce::WRITE))
        .unwrap();
    let list = [Tce(0x80_0000 | 1), Tce(0x80_1000 | 3), Tce(0x80_2000 | 3)];
    m.put_tce_list(DEFAULT, 0x10_0000, 0x20_0000, &list)
        .unwrap()
        .unwrap();
    m.h_stuff_tce(DEFAULT, 0x20_0000, Tce(0x90_0000 | 1), 4)
        .unwrap();

    let host = m.kernel().host_tces(fd);
    assert_eq!(host.len(), 1 + 3 + 4);
    let at = |bus: u64| host[&bus];
    assert_eq!(at(0x5000).vaddr, m.ram_host() + 0x42_0000);
    assert_eq!(at(0x5000).perms, TcePerms::READ_WRITE);
    assert_eq!(at(0x10_0000).perms, TcePerms::READ_ONLY);
    assert_eq!(at(0x10_2000).vaddr, m.ram_host() + 0x80_2000);
    assert_eq!(at(0x20_3000).vaddr, m.ram_host() + 0x90_0000);
    assert_clean(&m);

    // Clearing an entry unmaps its page; a TCE past RAM is refused and
    // maps nothing.
    m.h_put_tce(DEFAULT, 0x5000, Tce(0)).unwrap();
    let past = m.h_put_tce(DEFAULT, 0x6000, Tce(m.ram_size() | 3));
    assert_eq!(HResult::of(&past), HResult::PARAMETER);
    let host = m.kernel().host_tces(fd);
    assert!(!host.contains_key(&0x5000) && !host.contains_key(&0x6000));
    assert_eq!(m.stats().count(Ioctl::MapDma), 8);
    assert_clean(&m);
}

#[test]
fn reset_removes_and_recreates_windows_without_churn_and_leaves_no_stale_mapping() {
    let mut m = machine();
    m.plug(DeviceSpec::spapr(1, 0)).unwrap();
    let fd = m.containers().next().unwrap().1.fd();
    let buid = m.buid(0).unwrap();
    let ddw = m.rtas_create_pe_dma_window(buid, 16, 30).unwrap();
    assert_eq!((ddw.liobn, ddw.start), (SECOND, SLOT1));
    fill_default(&m);
    m.h_put_tce(SECOND, SLOT1 + 0x3_0000, Tce(0x100_0000 | 3))
        .unwrap();
    assert_eq!(m.kernel().host_tces(fd).len(), 8 + 1);
    m.take_table_moves();
    let before = m.stats();

    m.reset().unwrap();

    let after = m.stats();
    let delta = |i| after.count(i) - before.count(i);
    assert!(m.take_table_moves().iter().all(|mv| mv.liobn == SECOND));
    assert_eq!(
        usage(&m, DEFAULT),
        (1, true),
        "the default window kept its user"
    );
    assert_eq!(
        m.spapr().table(DEFAULT).unwrap().placement(),
        Placement::Userspace
    );
    assert_eq!(delta(Ioctl::SpaprTceCreate), 0, "the default window stayed");
    assert_eq!(delta(Ioctl::SpaprTceRemove), 1, "the 64-bit window went");
    let windows = m.kernel().windows(fd);
    assert_eq!(windows.len(), 1);
    assert_eq!((windows[0].start, windows[0].size), (0, 0x4000_0000));
    assert!(m.kernel().host_tces(fd).is_empty(), "no stale mapping");
    assert_clean(&m);
}

#[test]
fn reset_recreates_a_default_window_the_guest_had_replaced() {
    let mut m = machine();
    m.plug(DeviceSpec::spapr(1, 0)).unwrap();
    let fd = m.containers().next().unwrap().1.fd();
    let buid = m.buid(0).unwrap();
    m.rtas_remove_pe_dma_window(DEFAULT).unwrap();
    let ddw = m.rtas_create_pe_dma_window(buid, 16, 28).unwrap();
    assert_eq!(ddw.start, 0, "with no window left the new one goes at 0");
    m.h_put_tce(ddw.liobn, 0x1_0000, Tce(0x20_0000 | 3))
        .unwrap();

    m.reset().unwrap();

    let windows = m.kernel().windows(fd);
    assert_eq!(windows.len(), 1);
    assert_eq!((windows[0].start, windows[0].page_shift), (0, 12));
    assert!(m.kernel().host_tces(fd).is_empty());
    assert_eq!(usage(&m, DEFAULT), (1, true));
    assert_eq!(usage(&m, SECOND), (0, false));
    assert_clean(&m);
}

#[test]
fn dynamic_windows_follow_the_guest_into_both_host_slots() {
    let mut m = machine();
    m.plug(DeviceSpec::spapr(1, 0)).unwrap();
    let fd = m.containers().next().unwrap().1.fd();
    let buid = m.buid(0).unwrap();
    assert_eq!(
        m.rtas_query_pe_dma_window(buid).unwrap().windows_available,
        1
    );

    // A 64-bit window of 16 MiB pages next to the default one.
    let big = m.rtas_create_pe_dma_window(buid, 24, 32).unwrap();
    assert_eq!(big.start, SLOT1);
    m.h_put_tce(big.liobn, SLOT1 + (2 << 24), Tce(0x200_0000 | 3))
        .unwrap();
    let host = m.kernel().window_tces(fd, SLOT1).unwrap();
    assert_eq!(host.len(), 1, "one 16 MiB host page");
    assert_eq!(host[&(SLOT1 + (2 << 24))].vaddr, m.ram_host() + 0x200_0000);
    assert_eq!(
        m.rtas_query_pe_dma_window(buid).unwrap().windows_available,
        0
    );
    let full = m.rtas_create_pe_dma_window(buid, 16, 30);
    assert_eq!(RtasStatus::of(&full), RtasStatus::HW_ERROR);
    assert_clean(&m);

    // The default window goes; a 2 MiB-page window takes bus 0 and host
    // slot 0, mapped in 64 KiB host pages.
    m.rtas_remove_pe_dma_window(DEFAULT).unwrap();
    assert_eq!(usage(&m, DEFAULT), (0, false));
    let mid = m.rtas_create_pe_dma_window(buid, 21, 30).unwrap();
    assert_eq!((mid.liobn, mid.start), (DEFAULT, 0));
    m.h_put_tce(mid.liobn, 0x20_0000, Tce(0x40_0000 | 1))
        .unwrap();
    let host = m.kernel().window_tces(fd, 0).unwrap();
    assert_eq!(host.len(), 32);
    assert_clean(&m);

    // Removing both brings back the default window, empty.
    m.rtas_remove_pe_dma_window(mid.liobn).unwrap();
    m.rtas_remove_pe_dma_window(big.liobn).unwrap();
    let windows = m.kernel().windows(fd);
    assert_eq!(windows.len(), 1);
    assert_eq!((windows[0].start, windows[0].page_shift), (0, 12));
    assert!(m.phb(0).unwrap().is_default_window(DEFAULT));
    assert!(m.kernel().host_tces(fd).is_empty());
    assert_clean(&m);
}

#[test]
fn unplug_stops_vfio_use_and_leaves_no_window_no_registration_and_no_locked_memory() {
    for mode in [Unregister::Replay, Unregister::Detach] {
        let mut m = machine();
        let locked_before = m.kernel().locked_memory();
        let dev = m.plug(DeviceSpec::spapr(1, 0)).unwrap();
        let fd = m.containers().next().unwrap().1.fd();
        let buid = m.buid(0).unwrap();
        m.rtas_create_pe_dma_window(buid, 16, 30).unwrap();
        fill_default(&m);
        assert!(!m.kernel().registered_memory(fd).is_empty());
        assert!(m.kernel().locked_memory() > locked_before);
        let before = m.stats();

        m.unplug(dev, mode).unwrap();

        let after = m.stats();
        let delta = |i| after.count(i) - before.count(i);
        assert_eq!(usage(&m, DEFAULT), (0, false), "{mode:?}");
        assert_eq!(usage(&m, SECOND), (0, false), "{mode:?}");
        for liobn in [DEFAULT, SECOND] {
            let table = m.spapr().table(liobn).unwrap();
            assert_eq!(table.placement(), Placement::Kvm, "{mode:?}");
        }
        assert_eq!(
            m.spapr().table(DEFAULT).unwrap().valid_entries().len(),
            8,
            "the guest keeps its entries"
        );
        assert!(m.kernel().container(fd).is_none(), "{mode:?}");
        assert!(m.kernel().registrations().is_empty(), "{mode:?}");
        assert_eq!(m.kernel().locked_memory(), locked_before, "{mode:?}");
        match mode {
            Unregister::Replay => {
                assert_eq!(delta(Ioctl::UnmapDma), 2, "one per window section");
                assert_eq!(delta(Ioctl::SpaprTceRemove), 2);
                assert_eq!(delta(Ioctl::SpaprUnregisterMemory), 1);
            }
            Unregister::Detach => {
                assert_eq!(delta(Ioctl::UnmapDma), 0);
                assert_eq!(delta(Ioctl::SpaprTceRemove), 0);
                assert_eq!(delta(Ioctl::SpaprUnregisterMemory), 0);
            }
        }
        assert_clean(&m);
    }
}

#[test]
fn two_containers_on_one_phb_both_follow_the_guest() {
    let mut m = machine();
    let a = m.plug(DeviceSpec::spapr(1, 0)).unwrap();
    let b = m.plug(DeviceSpec::spapr(2, 0)).unwrap();
    assert_ne!(m.device_container(a), m.device_container(b));
    assert_eq!(usage(&m, DEFAULT), (2, true));
    assert_eq!(m.take_table_moves().len(), 1, "one vfio_start for both");

    fill_default(&m);
    let fds: Vec<_> = m.containers().map(|(_, c, _)| c.fd()).collect();
    assert_eq!(m.kernel().host_tces(fds[0]), m.kernel().host_tces(fds[1]));
    assert_clean(&m);

    m.unplug(a, Unregister::Replay).unwrap();

    assert_eq!(usage(&m, DEFAULT), (1, true));
    assert!(
        m.take_table_moves().is_empty(),
        "no vfio_stop while one is left"
    );
    assert_eq!(m.kernel().host_tces(fds[1]).len(), 8);
    assert_clean(&m);
}

#[test]
fn a_group_leaving_a_shared_container_leaves_the_others_mapped() {
    let mut m = machine();
    let a = m.plug(DeviceSpec::spapr(1, 0)).unwrap();
    let b = m.plug(DeviceSpec::spapr(2, 0).shared()).unwrap();
    assert_eq!(m.device_container(a), m.device_container(b));
    assert_eq!(usage(&m, DEFAULT), (1, true));
    fill_default(&m);

    m.unplug(a, Unregister::Replay).unwrap();

    let container = m.containers().next().unwrap().1;
    assert_eq!(container.groups().len(), 1);
    assert_eq!(m.kernel().host_tces(container.fd()).len(), 8);
    assert_clean(&m);
}

#[test]
fn a_v1_container_maps_through_its_fixed_window_and_refuses_a_64_bit_one() {
    let mut m = machine();
    let locked_before = m.kernel().locked_memory();
    let dev = m.plug(DeviceSpec::spapr_v1(1, 0)).unwrap();
    let container = m.containers().next().unwrap().1;
    assert_eq!(container.iommu_type(), IommuType::SpaprV1);
    let fd = container.fd();
    let fixed = container.windows();
    assert_eq!(fixed.len(), 1);
    assert_eq!((fixed[0].start, fixed[0].page_shift), (0, 12));
    assert_clean(&m);

    fill_default(&m);
    assert_eq!(m.kernel().host_tces(fd).len(), 8);
    assert!(m.kernel().registered_memory(fd).is_empty());
    let buid = m.buid(0).unwrap();
    let refused = m.rtas_create_pe_dma_window(buid, 16, 30);
    assert_eq!(RtasStatus::of(&refused), RtasStatus::HW_ERROR);
    assert_eq!(m.phb(0).unwrap().active_windows().len(), 1);
    assert_clean(&m);

    // v1 takes one group: a shared plug gets a container of its own.
    let other = m.plug(DeviceSpec::spapr_v1(2, 0).shared()).unwrap();
    assert_ne!(m.device_container(dev), m.device_container(other));
    assert_eq!(usage(&m, DEFAULT), (2, true));
    assert_clean(&m);

    m.unplug(dev, Unregister::Replay).unwrap();
    m.unplug(other, Unregister::Detach).unwrap();
    assert_eq!(m.kernel().locked_memory(), locked_before);
    assert_clean(&m);
}

#[test]
fn type1_detach_issues_no_unmap_while_replay_issues_one_per_section() {
    for mode in [Unregister::Replay, Unregister::Detach] {
        let mut m = machine();
        let dev = m.plug(DeviceSpec::type1(3)).unwrap();
        let fd = m.containers().next().unwrap().1.fd();
        let sections = m.mem().view(m.memory()).unwrap().ranges.len();
        assert_eq!(m.kernel().type1_mappings(fd).len(), sections);
        assert_eq!(m.stats().count(Ioctl::MapDma) as usize, sections);
        assert_eq!(
            usage(&m, DEFAULT),
            (0, false),
            "Type1 ignores the guest IOMMU"
        );
        assert_clean(&m);
        let before = m.stats().count(Ioctl::UnmapDma);

        m.unplug(dev, mode).unwrap();

        let unmaps = (m.stats().count(Ioctl::UnmapDma) - before) as usize;
        match mode {
            Unregister::Replay => assert_eq!(unmaps, sections),
            Unregister::Detach => assert_eq!(unmaps, 0),
        }
        assert!(m.kernel().container(fd).is_none());
        assert_clean(&m);
    }
}

/// The guest replaces the default window by a 64 KiB-page window of the
/// same size at the same bus address, then removes it, which restores the
/// default window (4 KiB pages) in the same transaction. The IOMMU region,
/// its bus range and its offset are unchanged, so the flat views are equal
/// and VFIO hears no `region_del` / `region_add`: its host window keeps
/// 64 KiB pages under a 4 KiB-page guest window, and the guest's next
/// 4 KiB put is refused by the kernel. The same happens when a machine
/// reset replaces such a window. The fix belongs in addrspace-spapr (a
/// window whose page size changes must not look unchanged to listeners).
#[test]
fn a_window_restored_with_another_page_size_gets_a_new_host_window() {
    let mut m = machine();
    let buid = m.buid(0).unwrap();
    m.rtas_remove_pe_dma_window(DEFAULT).unwrap();
    m.plug(DeviceSpec::spapr(1, 0)).unwrap();
    let fd = m.containers().next().unwrap().1.fd();
    let ddw = m.rtas_create_pe_dma_window(buid, 16, 30).unwrap();
    assert_eq!((ddw.liobn, ddw.start), (DEFAULT, 0));

    m.rtas_remove_pe_dma_window(DEFAULT).unwrap();
    m.h_put_tce(DEFAULT, 0x1000, Tce(0x10_0000 | 3)).unwrap();

    let windows = m.kernel().windows(fd);
    assert_eq!(windows[0].page_shift, 12, "{windows:?}");
    assert_clean(&m);
}
