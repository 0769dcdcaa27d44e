//! Choosing a backend (`CHECK_EXTENSION`, `SET_IOMMU`), attach rules,
//! `GET_INFO`, the flavour and process checks every IOMMU ioctl makes.

use super::*;
use crate::args::{
    SpaprTceInfo, VFIO_EEH, VFIO_IOMMU_SPAPR_INFO_DDW, VFIO_NOIOMMU_IOMMU, VFIO_TYPE1V2_IOMMU,
    VFIO_TYPE1_IOMMU,
};
use crate::sim::memory::ProcessId;
use crate::sim::observe::{IommuBackend, PeState};

#[test]
fn check_extension_answers_one_for_both_spapr_flavours() {
    let sim = host(SimMode::Faithful).build();
    let c = sim.open_container().unwrap();
    assert_eq!(sim.check_extension(c, VFIO_SPAPR_TCE_IOMMU), Ok(1));
    assert_eq!(sim.check_extension(c, VFIO_SPAPR_TCE_V2_IOMMU), Ok(1));
    assert_eq!(sim.check_extension(c, VFIO_TYPE1_IOMMU), Ok(0));
    assert_eq!(sim.check_extension(c, VFIO_EEH), Ok(0));
}

#[test]
fn check_extension_after_set_iommu_asks_only_the_backend() {
    let fx = Fx::with_iommu(host(SimMode::Faithful).type1(true), VFIO_TYPE1V2_IOMMU);
    assert_eq!(fx.sim.check_extension(fx.c, VFIO_TYPE1_IOMMU), Ok(1));
    assert_eq!(fx.sim.check_extension(fx.c, VFIO_SPAPR_TCE_V2_IOMMU), Ok(0));
}

#[test]
fn set_iommu_without_a_group_fails_with_einval() {
    let sim = host(SimMode::Faithful).build();
    let c = sim.open_container().unwrap();
    assert_eq!(
        sim.set_iommu(c, VFIO_SPAPR_TCE_V2_IOMMU),
        Err(Errno::EINVAL)
    );
}

#[test]
fn set_iommu_twice_fails_with_einval() {
    let fx = Fx::v2(SimMode::Faithful);
    assert_eq!(
        fx.sim.set_iommu(fx.c, VFIO_SPAPR_TCE_V2_IOMMU),
        Err(Errno::EINVAL)
    );
    assert_eq!(fx.sim.iommu_backend(fx.c), Some(IommuBackend::SpaprV2));
}

#[test]
fn set_iommu_of_a_type_no_driver_serves_fails_with_enodev() {
    let fx = Fx::attached(host(SimMode::Faithful));
    assert_eq!(
        fx.sim.set_iommu(fx.c, VFIO_TYPE1V2_IOMMU),
        Err(Errno::ENODEV)
    );
    assert_eq!(fx.sim.set_iommu(fx.c, 42), Err(Errno::ENODEV));
    assert_eq!(fx.sim.iommu_backend(fx.c), None);
}

#[test]
fn iommu_ioctls_before_set_iommu_fail_with_einval() {
    let fx = Fx::attached(host(SimMode::Faithful));
    assert_eq!(
        fx.sim.spapr_tce_get_info(fx.c, &mut SpaprTceInfo::new()),
        Err(Errno::EINVAL)
    );
    assert_eq!(fx.sim.iommu_enable(fx.c), Err(Errno::EINVAL));
    assert_eq!(fx.sim.iommu_disable(fx.c), Err(Errno::EINVAL));
    assert_eq!(fx.register(RAM, RAM_SIZE), Err(Errno::EINVAL));
    assert_eq!(fx.unregister(RAM, RAM_SIZE), Err(Errno::EINVAL));
    assert_eq!(fx.create(16, 1 << 30, 1), Err(Errno::EINVAL));
    assert_eq!(fx.remove(0), Err(Errno::EINVAL));
    assert_eq!(fx.map(0, PAGE_64K, RAM), Err(Errno::EINVAL));
    assert_eq!(fx.unmap(0, PAGE_64K), Err(Errno::EINVAL));
}

#[test]
fn v1_ioctls_on_a_v2_container_fail_with_enotty() {
    let fx = Fx::v2(SimMode::Faithful);
    assert_eq!(fx.sim.iommu_enable(fx.c), Err(Errno::ENOTTY));
    assert_eq!(fx.sim.iommu_disable(fx.c), Err(Errno::ENOTTY));
}

#[test]
fn v2_ioctls_on_a_v1_container_fail_with_enotty() {
    let fx = Fx::with_iommu(host(SimMode::Faithful), VFIO_SPAPR_TCE_IOMMU);
    assert_eq!(fx.register(RAM, RAM_SIZE), Err(Errno::ENOTTY));
    assert_eq!(fx.unregister(RAM, RAM_SIZE), Err(Errno::ENOTTY));
    assert_eq!(fx.create(16, 1 << 30, 1), Err(Errno::ENOTTY));
    assert_eq!(fx.remove(0), Err(Errno::ENOTTY));
}

#[test]
fn a_container_bound_to_another_process_answers_eperm() {
    // Arrange: process 1 binds the container by registering memory.
    let fx = Fx::v2_registered(SimMode::Faithful);
    assert_eq!(fx.sim.container_process(fx.c), Some(ProcessId(1)));
    // Act
    fx.sim.set_current_process(ProcessId(2));
    // Assert
    assert_eq!(
        fx.sim.spapr_tce_get_info(fx.c, &mut SpaprTceInfo::new()),
        Err(Errno::EPERM)
    );
    assert_eq!(fx.map(0, PAGE_64K, RAM), Err(Errno::EPERM));
    assert_eq!(fx.create(16, 1 << 30, 1), Err(Errno::EPERM));
    assert_eq!(fx.register(RAM + RAM_SIZE, PAGE_64K), Err(Errno::EPERM));
    assert!(fx.sim.default_window_pending(fx.c), "nothing was created");
}

#[test]
fn the_first_memory_ioctl_binds_the_container_even_when_it_fails() {
    let fx = Fx::v2(SimMode::Faithful);
    assert_eq!(fx.sim.container_process(fx.c), None);
    assert_eq!(fx.register(RAM + 1, RAM_SIZE), Err(Errno::EINVAL));
    assert_eq!(fx.sim.container_process(fx.c), Some(ProcessId(1)));
}

#[test]
fn a_released_container_can_be_bound_by_another_process() {
    let fx = Fx::v2_registered(SimMode::Faithful);
    fx.sim.group_unset_container(fx.g).unwrap();
    fx.sim.group_set_container(fx.g, fx.c).unwrap();
    fx.sim.set_iommu(fx.c, VFIO_SPAPR_TCE_V2_IOMMU).unwrap();
    fx.sim.set_current_process(ProcessId(2));
    assert_eq!(fx.register(RAM, RAM_SIZE), Ok(()));
    assert_eq!(fx.sim.container_process(fx.c), Some(ProcessId(2)));
}

#[test]
fn v1_takes_only_one_group() {
    // Two groups present at SET_IOMMU: the second attach fails.
    let fx = Fx::attached(host(SimMode::Faithful));
    fx.join(GB).unwrap();
    assert_eq!(
        fx.sim.set_iommu(fx.c, VFIO_SPAPR_TCE_IOMMU),
        Err(Errno::EBUSY)
    );
    assert_eq!(fx.sim.iommu_backend(fx.c), None);
    assert_eq!(fx.sim.pe_state(GA), Some(PeState::PlatformDefault));
    // A group joining a v1 container later fails the same way.
    let fx = Fx::with_iommu(host(SimMode::Faithful), VFIO_SPAPR_TCE_IOMMU);
    assert_eq!(fx.join(GB).map(|_| ()), Err(Errno::EBUSY));
}

#[test]
fn v2_takes_several_compatible_groups() {
    let fx = Fx::v2(SimMode::Faithful);
    fx.join(GB).unwrap();
    assert_eq!(fx.sim.container(fx.c).unwrap().groups, vec![GA, GB]);
}

#[test]
fn v2_refuses_a_group_without_dynamic_windows_with_einval() {
    let fx = Fx::attached(host(SimMode::Faithful));
    fx.join(G_NO_DDW).unwrap();
    assert_eq!(
        fx.sim.set_iommu(fx.c, VFIO_SPAPR_TCE_V2_IOMMU),
        Err(Errno::EINVAL)
    );
    assert_eq!(fx.sim.pe_state(GA), Some(PeState::PlatformDefault));
}

#[test]
fn v2_refuses_an_incompatible_group_with_eperm() {
    let fx = Fx::v2(SimMode::Faithful);
    assert_eq!(fx.join(G_OTHER_PHB).map(|_| ()), Err(Errno::EPERM));
}

#[test]
fn a_new_group_is_programmed_with_every_existing_window() {
    let fx = Fx::v2_window(SimMode::Faithful, 16, 1 << 30);
    fx.create(16, 1 << 32, 1).unwrap();
    fx.join(GB).unwrap();
    assert_eq!(
        fx.sim.pe_state(GB),
        Some(PeState::Vfio {
            windows: vec![0, SLOT1]
        })
    );
}

#[test]
fn no_iommu_groups_take_the_no_iommu_backend_only() {
    let cfg = SimConfig::new().group(GroupConfig::new(9).no_iommu(true));
    let sim = cfg.build();
    let c = sim.open_container().unwrap();
    let g = sim.open_group(IommuGroupId(9)).unwrap();
    sim.group_set_container(g, c).unwrap();
    assert_eq!(sim.check_extension(c, VFIO_NOIOMMU_IOMMU), Ok(1));
    assert_eq!(sim.check_extension(c, VFIO_SPAPR_TCE_V2_IOMMU), Ok(0));
    assert_eq!(
        sim.set_iommu(c, VFIO_SPAPR_TCE_V2_IOMMU),
        Err(Errno::ENODEV)
    );
    sim.set_iommu(c, VFIO_NOIOMMU_IOMMU).unwrap();
    assert_eq!(sim.iommu_backend(c), Some(IommuBackend::NoIommu));
    let map = DmaMap::new(0, 0x1000, RAM, RW);
    assert_eq!(sim.iommu_map_dma(c, &map), Err(Errno::ENOTTY));
}

#[test]
fn get_info_reports_the_32bit_window_and_dynamic_windows_on_power8() {
    let fx = Fx::v2(SimMode::Faithful);
    let mut info = SpaprTceInfo::new();
    fx.sim.spapr_tce_get_info(fx.c, &mut info).unwrap();
    assert_eq!(info.flags, VFIO_IOMMU_SPAPR_INFO_DDW);
    assert_eq!(info.dma32_window_start, 0);
    assert_eq!(u64::from(info.dma32_window_size), DMA32);
    assert_eq!(
        info.ddw.pgsizes,
        (1 << 12) | (1 << 16) | (1 << 24) | (1 << 28)
    );
    assert_eq!(info.ddw.max_dynamic_windows_supported, 2);
    assert_eq!(info.ddw.levels, 5);
}

#[test]
fn get_info_offers_4k_and_64k_pages_after_power8() {
    let fx = Fx::with_iommu(
        host(SimMode::Faithful).power8(false),
        VFIO_SPAPR_TCE_V2_IOMMU,
    );
    let mut info = SpaprTceInfo::new();
    fx.sim.spapr_tce_get_info(fx.c, &mut info).unwrap();
    assert_eq!(info.ddw.pgsizes, (1 << 12) | (1 << 16));
}

#[test]
fn get_info_on_v1_reports_no_dynamic_windows() {
    let fx = Fx::with_iommu(host(SimMode::Faithful), VFIO_SPAPR_TCE_IOMMU);
    let mut info = SpaprTceInfo::new();
    info.ddw.levels = 77;
    fx.sim.spapr_tce_get_info(fx.c, &mut info).unwrap();
    assert_eq!(info.flags, 0);
    assert_eq!(info.ddw, Default::default(), "cleared, not left as passed");
    assert_eq!(u64::from(info.dma32_window_size), DMA32);
}

#[test]
fn get_info_with_short_argsz_leaves_the_ddw_part_alone() {
    let fx = Fx::v2(SimMode::Faithful);
    let mut info = SpaprTceInfo {
        argsz: SpaprTceInfo::MIN_ARGSZ,
        ..SpaprTceInfo::new()
    };
    info.ddw.levels = 77;
    fx.sim.spapr_tce_get_info(fx.c, &mut info).unwrap();
    assert_eq!(info.flags, VFIO_IOMMU_SPAPR_INFO_DDW);
    assert_eq!(info.ddw.levels, 77);
    assert_eq!(u64::from(info.dma32_window_size), DMA32);
}

#[test]
fn get_info_with_argsz_below_16_fails_with_einval() {
    let fx = Fx::v2(SimMode::Faithful);
    let mut info = SpaprTceInfo {
        argsz: 15,
        ..SpaprTceInfo::new()
    };
    assert_eq!(
        fx.sim.spapr_tce_get_info(fx.c, &mut info),
        Err(Errno::EINVAL)
    );
    assert_eq!(info.dma32_window_size, 0, "nothing written");
}
