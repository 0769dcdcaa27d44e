//! [`Phb`]: a PCI host bridge's DMA address space, built as QEMU's pseries
//! machine builds it, and the enabling and disabling of its DMA windows.
//!
//! ```text
//! address-space: pci@800000020000000
//!   pci@800000020000000.iommu-root      container, whole 64-bit space
//!     tce-root-80000001                 window container, slot 1
//!     tce-root-80000000                 window container, slot 0
//!       tce-iommu-80000000              IOMMU region of an enabled window
//!     msi                               MMIO at 0x40000000000
//! ```
//!
//! A window is enabled by adding its IOMMU region into its window
//! container at the window's bus offset, and disabled by removing it: a
//! commit either way, so listeners (VFIO) see `region_add` / `region_del`
//! and the IOMMU usage counters move.

use std::sync::Arc;

use addrspace_core::{AddressSpaceId, Error, IommuEvent, Memory, RegionId, SIZE_2_64};

use crate::error::SetupError;
use crate::msi::{MsiWindow, MSI_WINDOW_ADDR, MSI_WINDOW_SIZE};
use crate::table::{Placement, TceTable};
use crate::tce::{Buid, Liobn, PageSizes, WindowGeometry, TCE_PAGE_SHIFT};

/// The guest's RAM as the sPAPR model needs it: the address space TCEs
/// point into, and how many bytes of RAM it holds from address 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestRam {
    /// The guest memory address space (QEMU's `address_space_memory`).
    pub address_space: AddressSpaceId,
    /// RAM size; a valid TCE must name a page below it.
    pub size: u64,
}

/// How to build a PHB. [`PhbConfig::new`] gives QEMU's pseries defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhbConfig {
    /// The PHB's index; it fixes the BUID and the LIOBNs.
    pub index: u32,
    /// Dynamic DMA windows (QEMU's `ddw` property): two window slots and
    /// the RTAS calls; without, one slot and the RTAS calls refuse.
    pub ddw: bool,
    /// Page sizes dynamic windows may use (QEMU's `pgsz`).
    pub page_sizes: PageSizes,
    /// Bus address of the default window (QEMU's `dma_win_addr`).
    pub dma_window_addr: u64,
    /// Size of the default window (QEMU's `dma_win_size`), in 4 KiB pages.
    pub dma_window_size: u64,
    /// Bus address of a second, 64-bit window (QEMU's `dma64_win_addr`).
    pub dma64_window_addr: u64,
    /// The most TCEs one window may have; `ibm,query-pe-dma-window`
    /// reports it.
    pub max_tces: u64,
    /// Where the PHB's tables start: [`Placement::Kvm`] when the host
    /// accelerates TCE hypercalls, [`Placement::Userspace`] otherwise.
    pub placement: Placement,
    /// Whether a table moves back to its starting placement when its last
    /// VFIO user goes (`vfio_stop`).
    pub move_back_on_stop: bool,
}

impl PhbConfig {
    /// The default window's size: 1 GiB.
    pub const DEFAULT_DMA_WINDOW_SIZE: u64 = 0x4000_0000;
    /// Where the 64-bit window goes: 1 << 59.
    pub const DEFAULT_DMA64_WINDOW_ADDR: u64 = 1 << 59;
    /// The default limit of TCEs per window (2^31, as QEMU reports it).
    pub const DEFAULT_MAX_TCES: u64 = 0x8000_0000;
    /// The highest index whose LIOBNs stay distinct from other PHBs'.
    pub const MAX_INDEX: u32 = 0x7f_ffff;

    /// PHB `index` with QEMU's pseries defaults: dynamic windows on, page
    /// sizes 4K|64K|2M|16M, default window at 0 of 1 GiB, 64-bit window at
    /// 1 << 59, tables in KVM moving back when VFIO stops.
    pub fn new(index: u32) -> PhbConfig {
        PhbConfig {
            index,
            ddw: true,
            page_sizes: PageSizes::PHB_DEFAULT,
            dma_window_addr: 0,
            dma_window_size: Self::DEFAULT_DMA_WINDOW_SIZE,
            dma64_window_addr: Self::DEFAULT_DMA64_WINDOW_ADDR,
            max_tces: Self::DEFAULT_MAX_TCES,
            placement: Placement::Kvm,
            move_back_on_stop: true,
        }
    }

    /// How many windows can be active at once: 2 with dynamic windows,
    /// else 1.
    pub fn max_windows(&self) -> u32 {
        if self.ddw {
            2
        } else {
            1
        }
    }

    /// The default window's geometry.
    pub fn default_window(&self) -> WindowGeometry {
        WindowGeometry::default_window(self.dma_window_addr, self.dma_window_size)
    }

    fn check(&self) -> Result<(), SetupError> {
        let bad = |reason| {
            Err(SetupError::BadConfig {
                index: self.index,
                reason,
            })
        };
        let page = 1u64 << TCE_PAGE_SHIFT;
        let default = self.default_window();
        if self.index > Self::MAX_INDEX {
            return bad("index too large for distinct LIOBNs");
        }
        if self.dma_window_size == 0 || !self.dma_window_size.is_multiple_of(page) {
            return bad("default window size is not a non-zero multiple of 4 KiB");
        }
        if !self.dma_window_addr.is_multiple_of(page)
            || !self.dma64_window_addr.is_multiple_of(page)
        {
            return bad("window addresses are not 4 KiB aligned");
        }
        if default.end() > SIZE_2_64 {
            return bad("default window ends past 2^64");
        }
        if self.ddw && default.index_of(self.dma64_window_addr).is_some() {
            return bad("the 64-bit window address lies inside the default window");
        }
        if self.page_sizes.0 == 0 {
            return bad("no page size");
        }
        Ok(())
    }
}

/// One window slot: its table, its window container and IOMMU region.
#[derive(Debug)]
pub(crate) struct Window {
    pub(crate) table: Arc<TceTable>,
    pub(crate) root: RegionId,
    pub(crate) iommu: RegionId,
    /// Enabled as the default window (by reset), not by RTAS (QEMU's
    /// `def_win`); removing it does not bring it back.
    pub(crate) default: bool,
    /// The page shift the window was last enabled with. A window that
    /// comes back at the same place with other pages is announced to
    /// listeners as a new mapping (`Memory::remap`): otherwise a VFIO
    /// container would keep a host window with the old page size.
    pub(crate) last_page_shift: Option<u32>,
}

/// A PCI host bridge's DMA side: the address space its devices' DMA goes
/// through, its window slots and their TCE tables, and its MSI window.
#[derive(Debug)]
pub struct Phb {
    config: PhbConfig,
    guest: GuestRam,
    buid: Buid,
    name: String,
    iommu_root: RegionId,
    msi: RegionId,
    msi_window: Arc<MsiWindow>,
    address_space: AddressSpaceId,
    pub(crate) windows: Vec<Window>,
}

impl Phb {
    /// Builds the PHB's DMA address space in `mem`, in one transaction,
    /// with the default window enabled (as after a machine reset).
    ///
    /// Regions are added in QEMU's order (MSI window, then the window
    /// containers by slot), so `info mtree` lists them as QEMU does.
    pub fn new(mem: &mut Memory, config: PhbConfig, guest: GuestRam) -> Result<Phb, SetupError> {
        config.check()?;
        mem.address_space_name(guest.address_space)?;
        let buid = Buid::for_index(config.index);
        let name = format!("pci@{:x}", buid.0);
        let mut created = Vec::new();
        let mut space = None;
        mem.begin();
        let built =
            Self::build(mem, &config, guest, buid, &name, &mut created).and_then(|mut phb| {
                space = Some(phb.address_space);
                phb.enable_window(mem, 0, config.default_window(), true)?;
                Ok(phb)
            });
        let committed = mem.commit();
        match built {
            Ok(phb) => {
                committed?;
                Ok(phb)
            }
            Err(e) => {
                // Nothing else refers to what was built: take it all down.
                if let Some(space) = space {
                    let _ = mem.destroy_address_space(space);
                }
                for id in created.into_iter().rev() {
                    if let Some(parent) = mem.region(id).ok().and_then(|r| r.parent()) {
                        let _ = mem.del_subregion(parent, id);
                    }
                    let _ = mem.destroy_region(id);
                }
                Err(e.into())
            }
        }
    }

    fn build(
        mem: &mut Memory,
        config: &PhbConfig,
        guest: GuestRam,
        buid: Buid,
        name: &str,
        created: &mut Vec<RegionId>,
    ) -> Result<Phb, Error> {
        let iommu_root = mem.create_container(&format!("{name}.iommu-root"), SIZE_2_64)?;
        created.push(iommu_root);
        let msi_window = Arc::new(MsiWindow::default());
        let msi = mem.create_mmio("msi", MSI_WINDOW_SIZE as u128, msi_window.clone())?;
        created.push(msi);
        mem.add_subregion(iommu_root, MSI_WINDOW_ADDR, msi)?;
        let mut windows = Vec::new();
        for slot in 0..config.max_windows() {
            let liobn = Liobn::pci(config.index, slot);
            let root = mem.create_container(&format!("tce-root-{:x}", liobn.0), SIZE_2_64)?;
            created.push(root);
            let table = Arc::new(TceTable::new(
                liobn,
                guest.address_space,
                config.placement,
                config.move_back_on_stop,
            ));
            // Sized for real when the window is enabled.
            let page = 1u128 << TCE_PAGE_SHIFT;
            let iommu =
                mem.create_iommu(&format!("tce-iommu-{:x}", liobn.0), page, table.clone())?;
            created.push(iommu);
            mem.add_subregion(iommu_root, 0, root)?;
            windows.push(Window {
                table,
                root,
                iommu,
                default: false,
                last_page_shift: None,
            });
        }
        let address_space = mem.create_address_space(name, iommu_root)?;
        Ok(Phb {
            config: config.clone(),
            guest,
            buid,
            name: name.to_owned(),
            iommu_root,
            msi,
            msi_window,
            address_space,
            windows,
        })
    }

    /// The PHB's index.
    pub fn index(&self) -> u32 {
        self.config.index
    }

    /// The PHB's BUID.
    pub fn buid(&self) -> Buid {
        self.buid
    }

    /// The device-tree bus name, `pci@<buid>`, which also names the DMA
    /// address space.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The configuration the PHB was built with.
    pub fn config(&self) -> &PhbConfig {
        &self.config
    }

    /// The guest RAM the PHB's tables point into.
    pub fn guest(&self) -> GuestRam {
        self.guest
    }

    /// The DMA address space: what devices behind the PHB see.
    pub fn address_space(&self) -> AddressSpaceId {
        self.address_space
    }

    /// The root container of the DMA address space (`<name>.iommu-root`).
    pub fn iommu_root(&self) -> RegionId {
        self.iommu_root
    }

    /// The MSI window's region.
    pub fn msi_region(&self) -> RegionId {
        self.msi
    }

    /// The MSI window's ops, to collect the interrupts devices raised.
    pub fn msi_window(&self) -> &Arc<MsiWindow> {
        &self.msi_window
    }

    /// The LIOBNs of the window slots, by slot.
    pub fn liobns(&self) -> Vec<Liobn> {
        self.windows.iter().map(|w| w.table.liobn()).collect()
    }

    /// The TCE table of window `liobn`.
    pub fn table(&self, liobn: Liobn) -> Option<&Arc<TceTable>> {
        self.slot_of(liobn).map(|s| &self.windows[s].table)
    }

    /// The IOMMU region (`tce-iommu-<liobn>`) of window `liobn`.
    pub fn iommu_region(&self, liobn: Liobn) -> Option<RegionId> {
        self.slot_of(liobn).map(|s| self.windows[s].iommu)
    }

    /// The window container (`tce-root-<liobn>`) of window `liobn`.
    pub fn window_container(&self, liobn: Liobn) -> Option<RegionId> {
        self.slot_of(liobn).map(|s| self.windows[s].root)
    }

    /// The enabled windows, by slot.
    pub fn active_windows(&self) -> Vec<(Liobn, WindowGeometry)> {
        self.windows
            .iter()
            .filter_map(|w| w.table.geometry().map(|g| (w.table.liobn(), g)))
            .collect()
    }

    /// True if window `liobn` is enabled as the default window.
    pub fn is_default_window(&self, liobn: Liobn) -> bool {
        self.slot_of(liobn).is_some_and(|s| self.windows[s].default)
    }

    /// Machine reset of the PHB's DMA: every window is disabled, then the
    /// default window is enabled again with an empty table.
    ///
    /// All of it is one transaction, so a VFIO container holding the
    /// default window sees no `vfio_stop` / `vfio_start` churn (its table
    /// stays in userspace); if the window's geometry is unchanged it sees
    /// no region change at all, only the UNMAPs of the entries the reset
    /// cleared (every disabled userspace table announces those).
    ///
    /// The reset state is always reached. An error reports what refused
    /// it: a listener refusing the re-enabled window, or an IOMMU hook.
    pub fn reset(&mut self, mem: &mut Memory) -> Result<(), Error> {
        mem.begin();
        let result = self.reset_in_transaction(mem);
        let committed = mem.commit();
        result.and(committed)
    }

    pub(crate) fn reset_in_transaction(&mut self, mem: &mut Memory) -> Result<(), Error> {
        let mut result = Ok(());
        for slot in 0..self.windows.len() {
            result = result.and(self.disable_window(mem, slot));
        }
        result.and(self.enable_window(mem, 0, self.config.default_window(), true))
    }

    pub(crate) fn slot_of(&self, liobn: Liobn) -> Option<usize> {
        self.windows.iter().position(|w| w.table.liobn() == liobn)
    }

    pub(crate) fn active_count(&self) -> u32 {
        self.windows
            .iter()
            .filter(|w| w.table.geometry().is_some())
            .count() as u32
    }

    /// Enables slot `slot` with `geometry` and an empty table: sizes the
    /// IOMMU region and adds it into the window container.
    ///
    /// If the commit is refused (a VFIO listener cannot take the window, or
    /// `vfio_start` failed), the window is taken back and disabled again
    /// before the error is returned.
    pub(crate) fn enable_window(
        &mut self,
        mem: &mut Memory,
        slot: usize,
        geometry: WindowGeometry,
        default: bool,
    ) -> Result<(), Error> {
        let w = &mut self.windows[slot];
        debug_assert!(w.table.geometry().is_none(), "enabling an enabled window");
        let (old_size, old_addr) = mem.region(w.iommu).map(|r| (r.size(), r.addr()))?;
        let old_page_shift = w.last_page_shift;
        if w.last_page_shift.is_some_and(|s| s != geometry.page_shift) {
            mem.remap(w.iommu)?;
        }
        w.last_page_shift = Some(geometry.page_shift);
        mem.set_size(w.iommu, geometry.size())?;
        w.table.enable(geometry);
        w.default = default;
        if let Err(e) = mem.add_subregion(w.root, geometry.bus_offset, w.iommu) {
            let added = mem
                .region(w.iommu)
                .is_ok_and(|r| r.parent() == Some(w.root));
            if added {
                if let Err(undo) = mem.del_subregion(w.root, w.iommu) {
                    tracing::warn!(liobn = %w.table.liobn(), %undo, "taking back a refused window");
                }
            }
            w.table.disable();
            w.default = false;
            // A refused window leaves no trace: its region gets back its
            // size and place, and the next enable compares its page size
            // with the one consumers last held.
            w.last_page_shift = old_page_shift;
            let restored = mem
                .set_size(w.iommu, old_size)
                .and_then(|()| mem.set_address(w.iommu, old_addr));
            if let Err(undo) = restored {
                tracing::warn!(liobn = %w.table.liobn(), %undo, "restoring a refused window's region");
            }
            return Err(e);
        }
        tracing::debug!(liobn = %w.table.liobn(), ?geometry, "DMA window enabled");
        Ok(())
    }

    /// Disables slot `slot` if it is enabled: clears its table (a userspace
    /// table announces an UNMAP for every valid entry it drops, so that
    /// mirrors such as VFIO stay equal to the table even when the window
    /// comes back unchanged in the same transaction) and removes its IOMMU
    /// region from the window container.
    pub(crate) fn disable_window(&mut self, mem: &mut Memory, slot: usize) -> Result<(), Error> {
        let w = &mut self.windows[slot];
        w.default = false;
        let (geometry, dropped, placement) = w.table.disable();
        let Some(g) = geometry else {
            return Ok(());
        };
        let mut result = Ok(());
        if placement == Placement::Userspace {
            for (index, _) in dropped {
                let unmap = IommuEvent::unmap(g.iova_of(index), g.page_size());
                result = result.and(mem.iommu_notify(w.iommu, &unmap).map(drop));
            }
        }
        tracing::debug!(liobn = %w.table.liobn(), "DMA window disabled");
        result.and(mem.del_subregion(w.root, w.iommu))
    }
}

#[cfg(test)]
mod tests {
    use addrspace_core::{FlatView, KindTag};

    use super::*;

    fn guest(mem: &mut Memory) -> GuestRam {
        let root = mem.create_container("system", SIZE_2_64).unwrap();
        let ram = mem.create_ram("ram", 0x100_0000).unwrap();
        mem.add_subregion(root, 0, ram).unwrap();
        GuestRam {
            address_space: mem.create_address_space("memory", root).unwrap(),
            size: 0x100_0000,
        }
    }

    fn ranges(view: &FlatView) -> Vec<(u64, u64)> {
        view.ranges.iter().map(|r| (r.start, r.last)).collect()
    }

    #[test]
    fn new_phb_shows_the_default_window_and_the_msi_page() {
        let mut mem = Memory::new();
        let g = guest(&mut mem);

        let phb = Phb::new(&mut mem, PhbConfig::new(0), g).unwrap();

        let view = mem.view(phb.address_space()).unwrap();
        assert_eq!(
            ranges(&view),
            vec![(0, 0x3fff_ffff), (0x400_0000_0000, 0x400_0000_0fff)]
        );
        assert_eq!(
            view.ranges[0].region,
            phb.iommu_region(Liobn(0x8000_0000)).unwrap()
        );
        assert_eq!(
            mem.address_space_name(phb.address_space()).unwrap(),
            "pci@800000020000000"
        );
        assert!(phb.is_default_window(Liobn(0x8000_0000)));
    }

    #[test]
    fn phb_without_ddw_has_one_window_slot() {
        let mut mem = Memory::new();
        let g = guest(&mut mem);
        let mut config = PhbConfig::new(2);
        config.ddw = false;

        let phb = Phb::new(&mut mem, config, g).unwrap();

        assert_eq!(phb.liobns(), vec![Liobn(0x8000_0200)]);
    }

    #[test]
    fn bad_config_is_refused_before_anything_is_built() {
        let mut mem = Memory::new();
        let g = guest(&mut mem);
        let before = mem.regions().count();
        let mut config = PhbConfig::new(0);
        config.dma_window_size = 0x1234;

        let err = Phb::new(&mut mem, config, g).unwrap_err();

        assert!(
            matches!(err, SetupError::BadConfig { index: 0, .. }),
            "{err}"
        );
        assert_eq!(mem.regions().count(), before);
    }

    #[test]
    fn disable_then_enable_moves_the_window() {
        let mut mem = Memory::new();
        let g = guest(&mut mem);
        let mut phb = Phb::new(&mut mem, PhbConfig::new(0), g).unwrap();
        let moved = WindowGeometry {
            bus_offset: 1 << 59,
            page_shift: 16,
            entries: 8,
        };

        phb.disable_window(&mut mem, 0).unwrap();
        phb.enable_window(&mut mem, 1, moved, false).unwrap();

        let view = mem.view(phb.address_space()).unwrap();
        let iommu: Vec<_> = view
            .ranges
            .iter()
            .filter(|r| mem.region(r.region).unwrap().kind().tag() == KindTag::Iommu)
            .map(|r| (r.start, r.last))
            .collect();
        assert_eq!(iommu, vec![(1 << 59, (1 << 59) + 0x7_ffff)]);
        assert_eq!(phb.active_windows(), vec![(Liobn(0x8000_0001), moved)]);
    }
}
