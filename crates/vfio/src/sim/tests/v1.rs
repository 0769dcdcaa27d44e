//! sPAPR v1: `ENABLE`/`DISABLE`, one group, the single 32-bit window.

use super::*;

fn v1(cfg: SimConfig) -> Fx {
    Fx::with_iommu(cfg, VFIO_SPAPR_TCE_IOMMU)
}

#[test]
fn enable_charges_the_32bit_window_to_locked_memory() {
    let fx = v1(host(SimMode::Strict));
    fx.sim.iommu_enable(fx.c).unwrap();
    assert_eq!(fx.sim.locked_memory(), DMA32);
    let spapr = fx.sim.snapshot();
    assert_eq!(spapr.spapr(fx.c).unwrap().enable_locked_bytes, DMA32);
}

#[test]
fn enable_twice_fails_with_ebusy() {
    let fx = Fx::v1_enabled(SimMode::Faithful);
    assert_eq!(fx.sim.iommu_enable(fx.c), Err(Errno::EBUSY));
    assert_eq!(fx.sim.locked_memory(), DMA32);
}

#[test]
fn enable_without_a_32bit_window_fails_with_eperm() {
    let fx = v1(host(SimMode::Faithful).dma32_window_size(0));
    assert_eq!(fx.sim.iommu_enable(fx.c), Err(Errno::EPERM));
    assert_eq!(
        fx.sim.container_process(fx.c),
        None,
        "rejected before binding"
    );
}

#[test]
fn enable_over_the_locked_memory_limit_fails_with_enomem() {
    let fx = v1(host(SimMode::Faithful).locked_memory_limit(DMA32 / 2));
    assert_eq!(fx.sim.iommu_enable(fx.c), Err(Errno::ENOMEM));
    assert_eq!(fx.sim.locked_memory(), 0);
    assert_eq!(fx.map(0, 0x1000, RAM), Err(Errno::EPERM));
}

#[test]
fn map_before_enable_fails_with_eperm() {
    let fx = v1(host(SimMode::Faithful));
    assert_eq!(fx.map(0, 0x1000, RAM), Err(Errno::EPERM));
    assert_eq!(fx.unmap(0, 0x1000), Err(Errno::EPERM));
}

#[test]
fn v1_map_creates_the_default_window_and_needs_no_registration() {
    let fx = Fx::v1_enabled(SimMode::Strict);
    assert_eq!(fx.map(0x3000, 0x2000, 0x1234_5000), Ok(0));
    let windows = fx.sim.windows(fx.c);
    assert_eq!(windows.len(), 1);
    assert_eq!(
        (windows[0].start, windows[0].size, windows[0].page_shift),
        (0, DMA32, 12)
    );
    assert_eq!(fx.sim.locked_memory(), DMA32 + DEFAULT_WINDOW_CHARGE);
    let vaddrs: Vec<u64> = fx.sim.host_tces(fx.c).values().map(|t| t.vaddr).collect();
    assert_eq!(vaddrs, vec![0x1234_5000, 0x1234_6000]);
}

#[test]
fn v1_has_only_the_32bit_window() {
    let fx = Fx::v1_enabled(SimMode::Faithful);
    assert_eq!(fx.map(SLOT1, 0x1000, RAM), Err(Errno::ENXIO));
    assert_eq!(fx.map(DMA32, 0x1000, RAM), Err(Errno::ENXIO));
}

#[test]
fn v1_map_whose_pages_wrap_the_address_space_fails_with_efault() {
    let fx = Fx::v1_enabled(SimMode::Faithful);
    assert_eq!(fx.map(0, 0x2000, u64::MAX - 0xfff), Err(Errno::EFAULT));
    assert!(fx.sim.host_tces(fx.c).is_empty());
}

#[test]
fn disable_returns_the_charge_and_keeps_the_tces() {
    // Arrange
    let fx = Fx::v1_enabled(SimMode::Strict);
    fx.map(0, 0x1000, RAM).unwrap();
    // Act
    fx.sim.iommu_disable(fx.c).unwrap();
    // Assert
    assert_eq!(fx.sim.locked_memory(), DEFAULT_WINDOW_CHARGE);
    assert_eq!(fx.sim.host_tces(fx.c).len(), 1);
    assert_eq!(fx.map(0x1000, 0x1000, RAM), Err(Errno::EPERM));
}

#[test]
fn disable_is_idempotent() {
    let fx = Fx::v1_enabled(SimMode::Strict);
    assert_eq!(fx.sim.iommu_disable(fx.c), Ok(()));
    assert_eq!(fx.sim.iommu_disable(fx.c), Ok(()));
    assert_eq!(fx.sim.locked_memory(), 0);
    assert_eq!(fx.sim.iommu_enable(fx.c), Ok(()), "can be enabled again");
}

#[test]
fn v1_release_returns_all_locked_memory() {
    let fx = Fx::v1_enabled(SimMode::Strict);
    fx.map(0, 0x1000, RAM).unwrap();
    fx.sim.group_unset_container(fx.g).unwrap();
    assert_eq!(fx.sim.locked_memory(), 0);
}

#[test]
fn v1_misaligned_iova_follows_the_mode() {
    let faithful = Fx::v1_enabled(SimMode::Faithful);
    assert_eq!(faithful.map(0x800, 0x1000, RAM), Ok(1));
    let strict = Fx::v1_enabled(SimMode::Strict);
    assert_eq!(strict.map(0x800, 0x1000, RAM), Err(Errno::EINVAL));
}
