//! `MAP_DMA` and `UNMAP_DMA` on sPAPR v2 containers: host TCEs, checks in
//! mainline's order, the quirks in both modes, rollback.

use super::*;
use crate::args::VFIO_DMA_MAP_FLAG_WRITE;
use crate::sim::memory::ProcessId;
use crate::sim::observe::{HostTce, TcePerms};

/// A v2 container with a 1 GiB window of 64 KiB pages at 0.
fn window(mode: SimMode) -> Fx {
    Fx::v2_window(mode, 16, 1 << 30)
}

#[test]
fn map_writes_one_host_tce_per_page() {
    let fx = window(SimMode::Strict);
    assert_eq!(fx.map(0x20_0000, 3 * PAGE_64K, RAM + PAGE_64K), Ok(0));
    let tces: Vec<(u64, u64)> = fx
        .sim
        .host_tces(fx.c)
        .iter()
        .map(|(&iova, tce)| (iova, tce.vaddr))
        .collect();
    assert_eq!(
        tces,
        vec![
            (0x20_0000, RAM + PAGE_64K),
            (0x21_0000, RAM + 2 * PAGE_64K),
            (0x22_0000, RAM + 3 * PAGE_64K),
        ]
    );
    assert_eq!(fx.sim.registrations()[0].mapped, 3);
}

#[test]
fn map_records_the_permissions_asked_for() {
    let fx = window(SimMode::Strict);
    let read_only = DmaMap::new(0, PAGE_64K, RAM, VFIO_DMA_MAP_FLAG_READ);
    let write_only = DmaMap::new(PAGE_64K, PAGE_64K, RAM, VFIO_DMA_MAP_FLAG_WRITE);
    fx.sim.iommu_map_dma(fx.c, &read_only).unwrap();
    fx.sim.iommu_map_dma(fx.c, &write_only).unwrap();
    let tces = fx.sim.host_tces(fx.c);
    assert_eq!(tces[&0].perms, TcePerms::READ_ONLY);
    assert_eq!(
        tces[&PAGE_64K].perms,
        TcePerms {
            read: false,
            write: true
        }
    );
}

#[test]
fn map_in_the_second_window_uses_its_bus_addresses() {
    let fx = window(SimMode::Strict);
    fx.create(12, 1 << 30, 1).unwrap();
    fx.map(SLOT1 + 0x1000, 0x2000, RAM).unwrap();
    let tces = fx.sim.window_tces(fx.c, SLOT1).unwrap();
    assert_eq!(
        tces.keys().copied().collect::<Vec<_>>(),
        vec![SLOT1 + 0x1000, SLOT1 + 0x2000]
    );
    assert_eq!(tces[&(SLOT1 + 0x2000)].vaddr, RAM + 0x1000);
}

#[test]
fn map_before_any_registration_fails_with_eperm() {
    for mode in MODES {
        let fx = Fx::v2(mode);
        assert_eq!(fx.map(0, PAGE_64K, RAM), Err(Errno::EPERM));
        assert_eq!(fx.unmap(0, PAGE_64K), Err(Errno::EPERM));
        assert!(
            fx.sim.default_window_pending(fx.c),
            "checked before the default"
        );
    }
}

#[test]
fn map_with_short_argsz_or_unknown_flags_fails_with_einval() {
    let fx = window(SimMode::Faithful);
    let mut short = DmaMap::new(0, PAGE_64K, RAM, RW);
    short.argsz = 24;
    let odd_flags = DmaMap::new(0, PAGE_64K, RAM, RW | 4);
    assert_eq!(fx.sim.iommu_map_dma(fx.c, &short), Err(Errno::EINVAL));
    assert_eq!(fx.sim.iommu_map_dma(fx.c, &odd_flags), Err(Errno::EINVAL));
    assert!(fx.sim.host_tces(fx.c).is_empty());
}

#[test]
fn map_without_read_or_write_fails_with_einval() {
    let fx = window(SimMode::Faithful);
    let none = DmaMap::new(0, PAGE_64K, RAM, 0);
    assert_eq!(fx.sim.iommu_map_dma(fx.c, &none), Err(Errno::EINVAL));
}

#[test]
fn the_window_is_looked_up_before_the_permissions() {
    let fx = window(SimMode::Faithful);
    let none = DmaMap::new(SLOT1, PAGE_64K, RAM, 0);
    assert_eq!(fx.sim.iommu_map_dma(fx.c, &none), Err(Errno::ENXIO));
}

#[test]
fn map_at_an_iova_in_no_window_fails_with_enxio() {
    let fx = window(SimMode::Faithful);
    assert_eq!(fx.map(1 << 30, PAGE_64K, RAM), Err(Errno::ENXIO));
    assert_eq!(fx.map(SLOT1, PAGE_64K, RAM), Err(Errno::ENXIO));
}

#[test]
fn map_with_size_or_vaddr_off_the_window_page_fails_with_einval() {
    let fx = window(SimMode::Faithful);
    assert_eq!(fx.map(0, 0x1000, RAM), Err(Errno::EINVAL));
    assert_eq!(fx.map(0, PAGE_64K, RAM + 0x1000), Err(Errno::EINVAL));
    assert!(fx.sim.host_tces(fx.c).is_empty());
}

#[test]
fn misaligned_iova_returns_one_in_faithful_mode() {
    let fx = window(SimMode::Faithful);
    assert_eq!(fx.map(0x1000, PAGE_64K, RAM), Ok(1));
    assert_eq!(fx.unmap(0x1000, PAGE_64K), Ok(1));
    assert!(fx.sim.host_tces(fx.c).is_empty());
}

#[test]
fn misaligned_iova_fails_with_einval_in_strict_mode() {
    let fx = window(SimMode::Strict);
    assert_eq!(fx.map(0x1000, PAGE_64K, RAM), Err(Errno::EINVAL));
    assert_eq!(fx.unmap(0x1000, PAGE_64K), Err(Errno::EINVAL));
}

#[test]
fn map_past_the_window_end_programs_only_the_inside_in_faithful_mode() {
    let fx = Fx::v2_window(SimMode::Faithful, 16, 1 << 20);
    let last = (1 << 20) - PAGE_64K;
    assert_eq!(fx.map(last, 4 * PAGE_64K, RAM), Ok(0));
    let tces = fx.sim.host_tces(fx.c);
    assert_eq!(tces.keys().copied().collect::<Vec<_>>(), vec![last]);
    assert_eq!(fx.sim.registrations()[0].mapped, 1);
}

#[test]
fn map_past_the_window_end_fails_with_einval_in_strict_mode() {
    let fx = Fx::v2_window(SimMode::Strict, 16, 1 << 20);
    let last = (1 << 20) - PAGE_64K;
    assert_eq!(fx.map(last, 2 * PAGE_64K, RAM), Err(Errno::EINVAL));
    assert!(fx.sim.host_tces(fx.c).is_empty());
    assert_eq!(
        fx.map(last, PAGE_64K, RAM),
        Ok(0),
        "the last page alone fits"
    );
}

#[test]
fn map_over_a_live_entry_replaces_it() {
    let fx = window(SimMode::Strict);
    fx.map(0, PAGE_64K, RAM).unwrap();
    fx.map(0, PAGE_64K, RAM + 5 * PAGE_64K).unwrap();
    let tces = fx.sim.host_tces(fx.c);
    assert_eq!(tces.len(), 1);
    assert_eq!(tces[&0].vaddr, RAM + 5 * PAGE_64K);
    assert_eq!(fx.sim.registrations()[0].mapped, 1);
}

#[test]
fn map_outside_registered_memory_fails_with_einval() {
    for mode in MODES {
        let fx = window(mode);
        assert_eq!(fx.map(0, PAGE_64K, RAM + RAM_SIZE), Err(Errno::EINVAL));
        assert_eq!(fx.map(0, PAGE_64K, RAM - PAGE_64K), Err(Errno::EINVAL));
        assert!(fx.sim.host_tces(fx.c).is_empty());
    }
}

#[test]
fn a_failing_map_rolls_back_the_entries_it_wrote() {
    // Arrange: the last two pages run past registered memory.
    let fx = window(SimMode::Strict);
    fx.map(0x10_0000, PAGE_64K, RAM).unwrap();
    // Act
    let err = fx.map(0, 4 * PAGE_64K, RAM + RAM_SIZE - 2 * PAGE_64K);
    // Assert: nothing of this call remains; the older entry elsewhere does.
    assert_eq!(err, Err(Errno::EINVAL));
    let tces = fx.sim.host_tces(fx.c);
    assert_eq!(tces.keys().copied().collect::<Vec<_>>(), vec![0x10_0000]);
    assert_eq!(fx.sim.registrations()[0].mapped, 1);
}

#[test]
fn rollback_clears_an_entry_the_failed_map_had_replaced() {
    // Mainline clears what it wrote; the entry it replaced is gone too.
    let fx = window(SimMode::Faithful);
    fx.map(0, PAGE_64K, RAM).unwrap();
    let err = fx.map(0, 2 * PAGE_64K, RAM + RAM_SIZE - PAGE_64K);
    assert_eq!(err, Err(Errno::EINVAL));
    assert!(fx.sim.host_tces(fx.c).is_empty());
    assert_eq!(fx.sim.registrations()[0].mapped, 0);
}

#[test]
fn map_into_memory_registered_with_smaller_pages_fails_with_einval() {
    // A 16 MiB-page window over RAM registered on 64 KiB pages.
    let fx = Fx::v2_window(SimMode::Strict, 24, 1 << 30);
    assert_eq!(fx.map(0, 1 << 24, RAM), Err(Errno::EINVAL));
}

#[test]
fn map_into_huge_page_backed_memory_with_huge_iommu_pages_succeeds() {
    // Arrange: 16 MiB pages back RAM before it is registered.
    let fx = Fx::v2(SimMode::Strict);
    fx.sim.back_with_huge_pages(RAM, RAM_SIZE, 24);
    fx.register(RAM, RAM_SIZE).unwrap();
    fx.remove(0).unwrap();
    fx.create(24, 1 << 30, 1).unwrap();
    // Act
    let mapped = fx.map(1 << 24, 1 << 24, RAM);
    // Assert
    assert_eq!(mapped, Ok(0));
    assert_eq!(fx.sim.registrations()[0].page_shift, 24);
    assert_eq!(fx.sim.host_tces(fx.c)[&(1 << 24)].vaddr, RAM);
}

#[test]
fn map_into_memory_another_container_of_the_process_registered_succeeds() {
    // Registrations belong to the process; MAP looks them up there.
    let fx = window(SimMode::Strict);
    let c2 = fx.second_v2_container();
    let extra = SpaprRegisterMemory::new(RAM + RAM_SIZE, PAGE_64K);
    fx.sim.spapr_register_memory(c2, &extra).unwrap();
    assert_eq!(fx.map(0, PAGE_64K, RAM + RAM_SIZE), Ok(0));
}

#[test]
fn map_by_another_process_fails_with_eperm() {
    let fx = window(SimMode::Strict);
    fx.sim.set_current_process(ProcessId(7));
    assert_eq!(fx.map(0, PAGE_64K, RAM), Err(Errno::EPERM));
    assert_eq!(fx.unmap(0, PAGE_64K), Err(Errno::EPERM));
}

#[test]
fn unmap_clears_the_entries_of_the_range() {
    let fx = window(SimMode::Strict);
    fx.map(0, 4 * PAGE_64K, RAM).unwrap();
    assert_eq!(fx.unmap(PAGE_64K, 2 * PAGE_64K), Ok(0));
    let tces = fx.sim.host_tces(fx.c);
    assert_eq!(
        tces.keys().copied().collect::<Vec<_>>(),
        vec![0, 3 * PAGE_64K]
    );
    assert_eq!(fx.sim.registrations()[0].mapped, 2);
}

#[test]
fn unmapping_empty_entries_succeeds() {
    for mode in MODES {
        let fx = window(mode);
        assert_eq!(fx.unmap(0, 16 * PAGE_64K), Ok(0));
    }
}

#[test]
fn unmap_leaves_the_size_field_as_it_was() {
    let fx = window(SimMode::Strict);
    fx.map(0, 2 * PAGE_64K, RAM).unwrap();
    let mut unmap = DmaUnmap::new(0, 2 * PAGE_64K);
    fx.sim.iommu_unmap_dma(fx.c, &mut unmap).unwrap();
    assert_eq!(unmap.size, 2 * PAGE_64K);
}

#[test]
fn unmap_with_short_argsz_or_any_flag_fails_with_einval() {
    let fx = window(SimMode::Faithful);
    let mut short = DmaUnmap::new(0, PAGE_64K);
    short.argsz = 16;
    let mut flagged = DmaUnmap::new(0, PAGE_64K);
    flagged.flags = 2;
    assert_eq!(fx.sim.iommu_unmap_dma(fx.c, &mut short), Err(Errno::EINVAL));
    assert_eq!(
        fx.sim.iommu_unmap_dma(fx.c, &mut flagged),
        Err(Errno::EINVAL)
    );
}

#[test]
fn unmap_at_an_iova_in_no_window_fails_with_enxio() {
    let fx = window(SimMode::Faithful);
    assert_eq!(fx.unmap(SLOT1, PAGE_64K), Err(Errno::ENXIO));
}

#[test]
fn unmap_with_a_size_off_the_window_page_fails_with_einval() {
    let fx = window(SimMode::Faithful);
    fx.map(0, PAGE_64K, RAM).unwrap();
    assert_eq!(fx.unmap(0, 0x1000), Err(Errno::EINVAL));
    assert_eq!(fx.sim.host_tces(fx.c).len(), 1);
}

#[test]
fn unmap_past_the_window_end_clears_only_the_inside_in_faithful_mode() {
    let fx = Fx::v2_window(SimMode::Faithful, 16, 1 << 20);
    fx.map(0, 1 << 20, RAM).unwrap();
    assert_eq!(fx.unmap(PAGE_64K, 1 << 30), Ok(0));
    let tces = fx.sim.host_tces(fx.c);
    assert_eq!(tces.keys().copied().collect::<Vec<_>>(), vec![0]);
}

#[test]
fn unmap_past_the_window_end_fails_with_einval_in_strict_mode() {
    let fx = Fx::v2_window(SimMode::Strict, 16, 1 << 20);
    fx.map(0, 1 << 20, RAM).unwrap();
    assert_eq!(fx.unmap(PAGE_64K, 1 << 30), Err(Errno::EINVAL));
    assert_eq!(fx.sim.host_tces(fx.c).len(), 16);
}

#[test]
fn host_tces_of_each_window_are_kept_apart() {
    let fx = window(SimMode::Strict);
    fx.create(16, 1 << 30, 1).unwrap();
    fx.map(0, PAGE_64K, RAM).unwrap();
    fx.map(SLOT1, PAGE_64K, RAM + PAGE_64K).unwrap();
    let low = fx.sim.window_tces(fx.c, 0).unwrap();
    let high = fx.sim.window_tces(fx.c, SLOT1).unwrap();
    assert_eq!(
        low.values().copied().collect::<Vec<_>>(),
        vec![HostTce {
            vaddr: RAM,
            perms: TcePerms::READ_WRITE
        }]
    );
    assert_eq!(high.keys().copied().collect::<Vec<_>>(), vec![SLOT1]);
    assert_eq!(fx.sim.window_tces(fx.c, 0x1000), None, "not a window start");
}
