//! Behaviour tests of the simulated kernel, driven through the
//! [`VfioKernel`] trait as a consumer would drive it. One file per area of
//! the spec; the fixtures below build the usual host and containers.

mod invariants;
mod iommu;
mod lifecycle;
mod mapping;
mod registration;
mod type1;
mod v1;
mod windows;

use crate::args::{
    DmaMap, DmaUnmap, SpaprRegisterMemory, SpaprTceCreate, SpaprTceRemove, VFIO_DMA_MAP_FLAG_READ,
    VFIO_DMA_MAP_FLAG_WRITE, VFIO_SPAPR_TCE_IOMMU, VFIO_SPAPR_TCE_V2_IOMMU,
};
use crate::errno::Errno;
use crate::handle::{ContainerFd, GroupFd, IommuGroupId};
use crate::kernel::VfioKernel;
use crate::sim::config::{GroupConfig, SimConfig, SimMode};
use crate::sim::SimKernel;

/// A DDW-capable PE with one device.
pub(super) const GA: IommuGroupId = IommuGroupId(1);
/// Another DDW-capable PE of the same PHB type.
pub(super) const GB: IommuGroupId = IommuGroupId(2);
/// A PE without dynamic windows.
pub(super) const G_NO_DDW: IommuGroupId = IommuGroupId(3);
/// A PE of another PHB type (incompatible table operations).
pub(super) const G_OTHER_PHB: IommuGroupId = IommuGroupId(4);
/// A group a host driver owns (not viable).
pub(super) const G_OWNED: IommuGroupId = IommuGroupId(5);
/// The device of group [`GA`].
pub(super) const DEV_A: &str = "0000:01:00.0";

/// Guest RAM as the VMM mapped it: 16 MiB, 16 MiB-aligned.
pub(super) const RAM: u64 = 0x7000_0000;
/// Size of [`RAM`].
pub(super) const RAM_SIZE: u64 = 0x100_0000;
/// 64 KiB, the host page.
pub(super) const PAGE_64K: u64 = 0x1_0000;
/// Bus address of window slot 1.
pub(super) const SLOT1: u64 = 1 << 59;
/// The default 32-bit window size.
pub(super) const DMA32: u64 = 0x8000_0000;
/// Locked memory of the default window's table: twice 4 MiB.
pub(super) const DEFAULT_WINDOW_CHARGE: u64 = 8 << 20;

/// READ | WRITE.
pub(super) const RW: u32 = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE;

/// The usual host: groups [`GA`], [`GB`], [`G_NO_DDW`], [`G_OTHER_PHB`],
/// [`G_OWNED`] on a POWER8 with 64 KiB pages.
pub(super) fn host(mode: SimMode) -> SimConfig {
    SimConfig::new()
        .mode(mode)
        .group(GroupConfig::new(GA.0).device(DEV_A))
        .group(GroupConfig::new(GB.0).device("0000:02:00.0"))
        .group(
            GroupConfig::new(G_NO_DDW.0)
                .ddw(false)
                .device("0000:03:00.0"),
        )
        .group(GroupConfig::new(G_OTHER_PHB.0).compat_class(1))
        .group(GroupConfig::new(G_OWNED.0).viable(false))
}

/// A simulator with one container and group [`GA`] in it.
#[derive(Debug)]
pub(super) struct Fx {
    pub(super) sim: SimKernel,
    pub(super) c: ContainerFd,
    pub(super) g: GroupFd,
}

impl Fx {
    /// Container with [`GA`] attached, no backend yet.
    pub(super) fn attached(cfg: SimConfig) -> Self {
        let sim = cfg.build();
        let c = sim.open_container().unwrap();
        let g = sim.open_group(GA).unwrap();
        sim.group_set_container(g, c).unwrap();
        Self { sim, c, g }
    }

    /// Container with [`GA`] and the given backend.
    pub(super) fn with_iommu(cfg: SimConfig, iommu_type: u32) -> Self {
        let fx = Self::attached(cfg);
        fx.sim.set_iommu(fx.c, iommu_type).unwrap();
        fx
    }

    /// v2 container on the usual host; the default window is pending.
    pub(super) fn v2(mode: SimMode) -> Self {
        Self::with_iommu(host(mode), VFIO_SPAPR_TCE_V2_IOMMU)
    }

    /// v2 container with [`RAM`] registered.
    pub(super) fn v2_registered(mode: SimMode) -> Self {
        let fx = Self::v2(mode);
        fx.register(RAM, RAM_SIZE).unwrap();
        fx
    }

    /// v2 container with [`RAM`] registered, the default window cancelled
    /// and one window of `page_shift` and `size` created in slot 0.
    pub(super) fn v2_window(mode: SimMode, page_shift: u32, size: u64) -> Self {
        let fx = Self::v2_registered(mode);
        fx.remove(0).unwrap();
        assert_eq!(fx.create(page_shift, size, 1), Ok(0));
        fx
    }

    /// v1 container, enabled.
    pub(super) fn v1_enabled(mode: SimMode) -> Self {
        let fx = Self::with_iommu(host(mode), VFIO_SPAPR_TCE_IOMMU);
        fx.sim.iommu_enable(fx.c).unwrap();
        fx
    }

    /// Opens `group` and puts it in this container.
    pub(super) fn join(&self, group: IommuGroupId) -> Result<GroupFd, Errno> {
        let g = self.sim.open_group(group)?;
        self.sim.group_set_container(g, self.c).map(|()| g)
    }

    /// A second v2 container in the same simulator, with group [`GB`].
    pub(super) fn second_v2_container(&self) -> ContainerFd {
        let c2 = self.sim.open_container().unwrap();
        let gb = self.sim.open_group(GB).unwrap();
        self.sim.group_set_container(gb, c2).unwrap();
        self.sim.set_iommu(c2, VFIO_SPAPR_TCE_V2_IOMMU).unwrap();
        c2
    }

    pub(super) fn map(&self, iova: u64, size: u64, vaddr: u64) -> Result<i32, Errno> {
        self.sim
            .iommu_map_dma(self.c, &DmaMap::new(iova, size, vaddr, RW))
    }

    pub(super) fn unmap(&self, iova: u64, size: u64) -> Result<i32, Errno> {
        self.sim
            .iommu_unmap_dma(self.c, &mut DmaUnmap::new(iova, size))
    }

    pub(super) fn create(&self, page_shift: u32, size: u64, levels: u32) -> Result<u64, Errno> {
        let mut create = SpaprTceCreate::new(page_shift, size, levels);
        self.sim.spapr_tce_create(self.c, &mut create)?;
        Ok(create.start_addr)
    }

    pub(super) fn remove(&self, addr: u64) -> Result<(), Errno> {
        self.sim
            .spapr_tce_remove(self.c, &SpaprTceRemove::new(addr))
    }

    pub(super) fn register(&self, vaddr: u64, size: u64) -> Result<(), Errno> {
        self.sim
            .spapr_register_memory(self.c, &SpaprRegisterMemory::new(vaddr, size))
    }

    pub(super) fn unregister(&self, vaddr: u64, size: u64) -> Result<(), Errno> {
        self.sim
            .spapr_unregister_memory(self.c, &SpaprRegisterMemory::new(vaddr, size))
    }
}

/// Both modes, for behaviours they share.
pub(super) const MODES: [SimMode; 2] = [SimMode::Faithful, SimMode::Strict];
