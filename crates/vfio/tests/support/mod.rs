//! A hand-built machine for the consumer tests, on the core crate only:
//! guest memory (a system container with 256 MiB of RAM at 0, its host
//! memory 16 MiB aligned), a PHB DMA address space (a root container with
//! guest IOMMU windows backed by [`TestIommu`]), and a strict simulated
//! kernel with a few groups.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use addrspace_core::{
    AddressSpaceId, Error, HookError, IommuEvent, IommuOps, IommuPerm, IommuTlbEntry, Memory,
    NotifierFlags, RegionId, SIZE_2_64,
};
use addrspace_vfio::{
    Container, GroupConfig, HostTce, IommuGroupId, IommuType, SimConfig, SimKernel, SimMode,
    TcePerms,
};
use parking_lot::Mutex;

/// Guest RAM size.
pub const RAM_SIZE: u64 = 0x1000_0000;
/// Alignment of guest RAM's host memory (a huge page).
pub const RAM_ALIGN: u64 = 0x100_0000;
/// 64 KiB: the host page and the test IOMMU's page.
pub const PAGE: u64 = 0x1_0000;
/// 1 GiB: the default guest window.
pub const WINDOW: u64 = 0x4000_0000;
/// Bus address of the second window slot.
pub const SLOT1: u64 = 1 << 59;

/// A DDW-capable group with a device.
pub const GA: IommuGroupId = IommuGroupId(1);
/// Another DDW-capable group.
pub const GB: IommuGroupId = IommuGroupId(2);
/// A group without dynamic windows.
pub const G_NO_DDW: IommuGroupId = IommuGroupId(3);
/// A group a host driver owns.
pub const G_OWNED: IommuGroupId = IommuGroupId(4);
/// The device of [`GA`].
pub const DEV_A: &str = "0000:01:00.0";

/// A guest IOMMU: a page table of region-relative I/O addresses, hooks
/// recorded, and switches to refuse notifier flag changes.
pub struct TestIommu {
    page: u64,
    target: AddressSpaceId,
    entries: Mutex<BTreeMap<u64, (u64, IommuPerm)>>,
    hooks: Mutex<Vec<&'static str>>,
    pub refuse_flags: AtomicBool,
}

impl TestIommu {
    fn new(page: u64, target: AddressSpaceId) -> Self {
        Self {
            page,
            target,
            entries: Mutex::new(BTreeMap::new()),
            hooks: Mutex::new(Vec::new()),
            refuse_flags: AtomicBool::new(false),
        }
    }

    fn entry(&self, iova: u64, gpa: u64, perm: IommuPerm) -> IommuTlbEntry {
        IommuTlbEntry {
            iova,
            translated_addr: gpa,
            addr_mask: self.page - 1,
            perm,
            target: Some(self.target),
        }
    }

    /// Live entries: region-relative iova -> (guest address, permission).
    pub fn entries(&self) -> BTreeMap<u64, (u64, IommuPerm)> {
        self.entries.lock().clone()
    }

    /// `vfio_start` / `vfio_stop` calls, in order.
    pub fn hooks(&self) -> Vec<&'static str> {
        self.hooks.lock().clone()
    }
}

impl IommuOps for TestIommu {
    fn translate(&self, addr: u64, _access: IommuPerm) -> IommuTlbEntry {
        let iova = addr & !(self.page - 1);
        let (gpa, perm) = self
            .entries
            .lock()
            .get(&iova)
            .copied()
            .unwrap_or((0, IommuPerm::NONE));
        self.entry(iova, gpa, perm)
    }

    fn min_page_size(&self) -> u64 {
        self.page
    }

    fn replay(&self, start: u64, last: u64, f: &mut dyn FnMut(&IommuTlbEntry)) -> bool {
        let entries = self.entries.lock().clone();
        for (&iova, &(gpa, perm)) in entries.range(start & !(self.page - 1)..=last) {
            f(&self.entry(iova, gpa, perm));
        }
        true
    }

    fn vfio_start(&self) -> Result<(), HookError> {
        self.hooks.lock().push("start");
        Ok(())
    }

    fn vfio_stop(&self) -> Result<(), HookError> {
        self.hooks.lock().push("stop");
        Ok(())
    }

    fn notify_flags_changed(
        &self,
        _old: NotifierFlags,
        _new: NotifierFlags,
    ) -> Result<(), HookError> {
        if self.refuse_flags.load(Ordering::Relaxed) {
            return Err("the table cannot leave KVM".into());
        }
        Ok(())
    }
}

/// A guest IOMMU window of the PHB.
pub struct GuestWindow {
    pub region: RegionId,
    pub bus: u64,
    pub size: u64,
    pub iommu: Arc<TestIommu>,
    pub enabled: bool,
}

/// The machine: guest memory and one PHB.
pub struct Machine {
    pub mem: Memory,
    pub system: RegionId,
    /// The RAM region holding guest RAM's host memory.
    pub ram_block: RegionId,
    /// The alias of it at guest address 0.
    pub ram: RegionId,
    /// Host address of guest physical address 0.
    pub ram_host: u64,
    pub guest: AddressSpaceId,
    pub dma_root: RegionId,
    pub dma: AddressSpaceId,
    pub windows: Vec<GuestWindow>,
}

impl Machine {
    /// Guest memory plus a PHB whose default window (1 GiB of 64 KiB
    /// pages at bus 0) is enabled.
    pub fn new() -> Self {
        let mut mem = Memory::new();
        let system = mem.create_container("system", SIZE_2_64).unwrap();
        let ram_block = mem
            .create_ram("ram-block", u128::from(RAM_SIZE + RAM_ALIGN))
            .unwrap();
        let block_host = mem
            .region(ram_block)
            .unwrap()
            .backing()
            .unwrap()
            .host_addr();
        let offset = block_host.next_multiple_of(RAM_ALIGN) - block_host;
        let ram = mem
            .create_alias("ram", ram_block, offset, u128::from(RAM_SIZE))
            .unwrap();
        mem.add_subregion(system, 0, ram).unwrap();
        let guest = mem.create_address_space("memory", system).unwrap();
        let dma_root = mem.create_container("phb-dma", SIZE_2_64).unwrap();
        let dma = mem.create_address_space("phb-dma", dma_root).unwrap();
        let mut m = Machine {
            mem,
            system,
            ram_block,
            ram,
            ram_host: block_host + offset,
            guest,
            dma_root,
            dma,
            windows: Vec::new(),
        };
        let w = m.new_window(0, WINDOW, PAGE);
        m.enable_window(w).unwrap();
        m
    }

    /// Creates a guest window (not yet in the DMA address space).
    pub fn new_window(&mut self, bus: u64, size: u64, page: u64) -> usize {
        let iommu = Arc::new(TestIommu::new(page, self.guest));
        let name = format!("tce-{bus:#x}");
        let region = self
            .mem
            .create_iommu(&name, u128::from(size), iommu.clone())
            .unwrap();
        self.windows.push(GuestWindow {
            region,
            bus,
            size,
            iommu,
            enabled: false,
        });
        self.windows.len() - 1
    }

    /// Puts a window in the DMA address space (a commit).
    pub fn enable_window(&mut self, w: usize) -> Result<(), Error> {
        let win = &mut self.windows[w];
        win.enabled = true;
        self.mem.add_subregion(self.dma_root, win.bus, win.region)
    }

    /// Takes a window out of the DMA address space (a commit).
    pub fn disable_window(&mut self, w: usize) -> Result<(), Error> {
        let win = &mut self.windows[w];
        win.enabled = false;
        self.mem.del_subregion(self.dma_root, win.region)
    }

    /// The guest writes a TCE: window `w`'s page at `iova` now maps `gpa`.
    /// Returns how many notifiers heard it.
    pub fn guest_map(&self, w: usize, iova: u64, gpa: u64, perm: IommuPerm) -> usize {
        let win = &self.windows[w];
        win.iommu.entries.lock().insert(iova, (gpa, perm));
        let entry = win.iommu.entry(iova, gpa, perm);
        self.mem
            .iommu_notify(win.region, &IommuEvent::map(&entry))
            .unwrap()
    }

    /// The guest clears a TCE.
    pub fn guest_unmap(&self, w: usize, iova: u64) -> usize {
        let win = &self.windows[w];
        win.iommu.entries.lock().remove(&iova);
        self.mem
            .iommu_notify(win.region, &IommuEvent::unmap(iova, win.iommu.page))
            .unwrap()
    }

    /// What the host TCEs must be: every entry of every enabled window
    /// that points into guest RAM, by bus address (test IOMMU pages and
    /// host window pages are the same size).
    pub fn expected_host_tces(&self) -> BTreeMap<u64, HostTce> {
        let mut out = BTreeMap::new();
        for win in self.windows.iter().filter(|w| w.enabled) {
            for (iova, (gpa, perm)) in win.iommu.entries() {
                if gpa + win.iommu.page > RAM_SIZE || perm.is_none() {
                    continue;
                }
                let perms = TcePerms {
                    read: true,
                    write: perm.write,
                };
                out.insert(
                    win.bus + iova,
                    HostTce {
                        vaddr: self.ram_host + gpa,
                        perms,
                    },
                );
            }
        }
        out
    }
}

/// A strict simulated POWER8 host with 64 KiB pages and groups [`GA`],
/// [`GB`], [`G_NO_DDW`], [`G_OWNED`]; Type1 present too.
pub fn host() -> SimConfig {
    SimConfig::new()
        .mode(SimMode::Strict)
        .type1(true)
        .group(GroupConfig::new(GA.0).device(DEV_A))
        .group(GroupConfig::new(GB.0).device("0000:02:00.0"))
        .group(GroupConfig::new(G_NO_DDW.0).ddw(false))
        .group(GroupConfig::new(G_OWNED.0).viable(false))
}

/// The simulator of [`host`].
pub fn sim() -> Arc<SimKernel> {
    Arc::new(host().build())
}

/// A container of `iommu_type` with group `group` attached.
pub fn container(
    sim: &Arc<SimKernel>,
    iommu_type: IommuType,
    group: IommuGroupId,
) -> Container<SimKernel> {
    let c = Container::open(sim.clone(), iommu_type).unwrap();
    c.attach_group(group).unwrap();
    c
}

/// A machine with a v2 container (group [`GA`]) plugged into it.
pub fn plugged_v2() -> (Machine, Arc<SimKernel>, Container<SimKernel>) {
    let mut m = Machine::new();
    let sim = sim();
    let c = container(&sim, IommuType::SpaprV2, GA);
    c.plug(&mut m.mem, m.guest, Some(m.dma)).unwrap();
    (m, sim, c)
}
