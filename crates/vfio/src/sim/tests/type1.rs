//! The Type1 backend's main rules, v1 and v2.

use super::*;
use crate::args::{
    SpaprTceInfo, VFIO_DMA_MAP_FLAG_VADDR, VFIO_DMA_UNMAP_FLAG_ALL,
    VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP, VFIO_TYPE1V2_IOMMU, VFIO_TYPE1_IOMMU, VFIO_UNMAP_ALL,
};
use crate::sim::observe::IommuBackend;

const PAGE: u64 = 0x1000;
const VA: u64 = 0x7f00_0000_0000;

fn type1(v2: bool) -> Fx {
    let cfg = host(SimMode::Strict)
        .type1(true)
        .spapr(false)
        .host_page_shift(12);
    let ty = if v2 {
        VFIO_TYPE1V2_IOMMU
    } else {
        VFIO_TYPE1_IOMMU
    };
    Fx::with_iommu(cfg, ty)
}

fn unmap(fx: &Fx, iova: u64, size: u64) -> Result<u64, Errno> {
    let mut unmap = DmaUnmap::new(iova, size);
    fx.sim.iommu_unmap_dma(fx.c, &mut unmap).map(|_| unmap.size)
}

fn iovas(fx: &Fx) -> Vec<u64> {
    fx.sim.type1_mappings(fx.c).iter().map(|m| m.iova).collect()
}

#[test]
fn type1_host_answers_type1_extensions() {
    let fx = type1(true);
    assert_eq!(fx.sim.iommu_backend(fx.c), Some(IommuBackend::Type1V2));
    assert_eq!(fx.sim.check_extension(fx.c, VFIO_UNMAP_ALL), Ok(1));
    assert_eq!(fx.sim.check_extension(fx.c, VFIO_SPAPR_TCE_IOMMU), Ok(0));
}

#[test]
fn map_records_the_mapping_and_charges_its_pages() {
    let fx = type1(true);
    assert_eq!(fx.map(0x10_0000, 4 * PAGE, VA), Ok(0));
    let mappings = fx.sim.type1_mappings(fx.c);
    assert_eq!(mappings.len(), 1);
    assert_eq!(
        (mappings[0].iova, mappings[0].size, mappings[0].vaddr),
        (0x10_0000, 4 * PAGE, VA)
    );
    assert_eq!(fx.sim.locked_memory(), 4 * PAGE);
}

#[test]
fn map_of_nothing_or_off_the_4k_granule_fails_with_einval() {
    let fx = type1(true);
    assert_eq!(fx.map(0, 0, VA), Err(Errno::EINVAL));
    assert_eq!(fx.map(0x800, PAGE, VA), Err(Errno::EINVAL));
    assert_eq!(fx.map(0, 0x800, VA), Err(Errno::EINVAL));
    assert_eq!(fx.map(0, PAGE, VA + 0x800), Err(Errno::EINVAL));
    assert!(iovas(&fx).is_empty());
}

#[test]
fn map_without_permission_or_with_unknown_flags_fails_with_einval() {
    let fx = type1(true);
    let none = DmaMap::new(0, PAGE, VA, 0);
    let unknown = DmaMap::new(0, PAGE, VA, RW | 0x100);
    let vaddr_update = DmaMap::new(0, PAGE, VA, VFIO_DMA_MAP_FLAG_VADDR);
    let mut short = DmaMap::new(0, PAGE, VA, RW);
    short.argsz = 8;
    for map in [none, unknown, vaddr_update, short] {
        assert_eq!(
            fx.sim.iommu_map_dma(fx.c, &map),
            Err(Errno::EINVAL),
            "{map:?}"
        );
    }
}

#[test]
fn map_that_wraps_fails_with_einval() {
    let fx = type1(true);
    assert_eq!(
        fx.map(u64::MAX - PAGE + 1, 2 * PAGE, VA),
        Err(Errno::EINVAL)
    );
    assert_eq!(fx.map(0, 2 * PAGE, u64::MAX - PAGE + 1), Err(Errno::EINVAL));
}

#[test]
fn map_overlapping_a_mapping_fails_with_eexist() {
    let fx = type1(true);
    fx.map(0x10_0000, 4 * PAGE, VA).unwrap();
    assert_eq!(fx.map(0x10_3000, 4 * PAGE, VA), Err(Errno::EEXIST));
    assert_eq!(fx.map(0x0f_f000, 2 * PAGE, VA), Err(Errno::EEXIST));
    assert_eq!(fx.map(0x10_4000, PAGE, VA), Ok(0), "adjacent is fine");
}

#[test]
fn map_over_the_locked_memory_limit_fails_with_enomem() {
    let fx = type1(true);
    fx.sim.set_locked_memory_limit(2 * PAGE);
    assert_eq!(fx.map(0, 4 * PAGE, VA), Err(Errno::ENOMEM));
    assert!(iovas(&fx).is_empty());
}

#[test]
fn v2_unmap_that_cuts_a_mapping_fails_with_einval() {
    let fx = type1(true);
    fx.map(0x10_0000, 4 * PAGE, VA).unwrap();
    assert_eq!(
        unmap(&fx, 0x10_1000, 4 * PAGE),
        Err(Errno::EINVAL),
        "cuts its start"
    );
    assert_eq!(
        unmap(&fx, 0x0f_0000, 0x1_2000),
        Err(Errno::EINVAL),
        "cuts its end"
    );
    assert_eq!(iovas(&fx), vec![0x10_0000]);
}

#[test]
fn v2_unmap_removes_every_mapping_inside_the_range_and_reports_the_size() {
    let fx = type1(true);
    fx.map(0x10_0000, 4 * PAGE, VA).unwrap();
    fx.map(0x20_0000, PAGE, VA).unwrap();
    fx.map(0x30_0000, PAGE, VA).unwrap();
    assert_eq!(unmap(&fx, 0, 0x30_0000), Ok(5 * PAGE));
    assert_eq!(iovas(&fx), vec![0x30_0000]);
    assert_eq!(fx.sim.locked_memory(), PAGE);
}

#[test]
fn unmap_of_an_empty_range_succeeds_with_size_zero() {
    let fx = type1(true);
    assert_eq!(unmap(&fx, 0x10_0000, PAGE), Ok(0));
}

#[test]
fn v1_unmap_starting_inside_a_mapping_unmaps_nothing() {
    let fx = type1(false);
    fx.map(0x10_0000, 4 * PAGE, VA).unwrap();
    assert_eq!(unmap(&fx, 0x10_1000, PAGE), Ok(0));
    assert_eq!(iovas(&fx), vec![0x10_0000]);
}

#[test]
fn v1_unmap_reaching_a_mapping_unmaps_all_of_it() {
    let fx = type1(false);
    fx.map(0x10_0000, 4 * PAGE, VA).unwrap();
    assert_eq!(unmap(&fx, 0x10_0000, PAGE), Ok(4 * PAGE));
    assert!(iovas(&fx).is_empty());
    assert_eq!(fx.sim.locked_memory(), 0);
}

#[test]
fn unmap_with_bad_arguments_fails_with_einval() {
    let fx = type1(true);
    assert_eq!(unmap(&fx, 0x800, PAGE), Err(Errno::EINVAL));
    assert_eq!(unmap(&fx, 0, 0), Err(Errno::EINVAL));
    assert_eq!(unmap(&fx, 0, 0x800), Err(Errno::EINVAL));
    assert_eq!(
        unmap(&fx, u64::MAX - PAGE + 1, 2 * PAGE),
        Err(Errno::EINVAL)
    );
    let mut dirty = DmaUnmap::new(0, PAGE);
    dirty.flags = VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP;
    assert_eq!(fx.sim.iommu_unmap_dma(fx.c, &mut dirty), Err(Errno::EINVAL));
}

#[test]
fn unmap_all_removes_every_mapping() {
    let fx = type1(true);
    fx.map(0x10_0000, PAGE, VA).unwrap();
    fx.map(0x20_0000, PAGE, VA).unwrap();
    let mut all = DmaUnmap::new(0, 0);
    all.flags = VFIO_DMA_UNMAP_FLAG_ALL;
    assert_eq!(fx.sim.iommu_unmap_dma(fx.c, &mut all), Ok(0));
    assert_eq!(all.size, 2 * PAGE);
    assert!(iovas(&fx).is_empty());
}

#[test]
fn unmap_all_with_a_range_fails_with_einval() {
    let fx = type1(true);
    let mut all = DmaUnmap::new(0x1000, 0);
    all.flags = VFIO_DMA_UNMAP_FLAG_ALL;
    assert_eq!(fx.sim.iommu_unmap_dma(fx.c, &mut all), Err(Errno::EINVAL));
}

#[test]
fn mappings_stay_until_the_last_group_leaves() {
    let fx = type1(true);
    let gb = fx.join(GB).unwrap();
    fx.map(0, PAGE, VA).unwrap();
    fx.sim.group_unset_container(gb).unwrap();
    assert_eq!(iovas(&fx), vec![0]);
    fx.sim.group_unset_container(fx.g).unwrap();
    assert_eq!(fx.sim.locked_memory(), 0);
}

#[test]
fn spapr_ioctls_on_a_type1_container_fail_with_enotty() {
    let fx = type1(true);
    assert_eq!(
        fx.sim.spapr_tce_get_info(fx.c, &mut SpaprTceInfo::new()),
        Err(Errno::ENOTTY)
    );
    assert_eq!(fx.sim.iommu_enable(fx.c), Err(Errno::ENOTTY));
    assert_eq!(fx.register(VA, PAGE), Err(Errno::ENOTTY));
    assert_eq!(fx.create(12, 1 << 30, 1), Err(Errno::ENOTTY));
    assert_eq!(fx.remove(0), Err(Errno::ENOTTY));
}
