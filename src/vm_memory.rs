//! A bridge to [`vm_memory`], the guest-memory crate that rust-vmm device
//! crates (virtio queues, block and net backends) take.
//!
//! [`VmMemoryListener`] keeps a [`GuestMemoryAtomic`]`<`[`GuestMemoryMmap`]`>`
//! equal to the writable RAM of one address space. Devices hold clones of
//! the atomic and load snapshots from it; each commit that changed the RAM
//! sections publishes a new collection. Regions are windows onto the
//! sections' own host memory, never copies: a device's write through
//! vm-memory is the guest's RAM.
//!
//! What counts as RAM here: sections of RAM regions that are neither
//! read-only (ROM) nor RAM-device memory (device BARs want exact-width
//! accesses, not `memcpy`). ROM devices and MMIO are not guest memory to a
//! DMA-capable device.
//!
//! vm-memory maps a region from a page-aligned host address, so a section
//! whose host address is not page-aligned loses its partial first page
//! (an alias starting mid-page); its tail is kept.
//!
//! # Lifetime of the host memory
//!
//! A vm-memory region built over someone else's mapping does not own it.
//! The listener therefore keeps the section's `Arc<HostMemory>` next to
//! each region it builds, and lets go of it only once no
//! [`GuestMemoryMmap`] snapshot (nor any clone of its mapping) can still
//! reach that memory. A snapshot held when the region is removed keeps the
//! host memory mapped until it is dropped; the memory is released at the
//! next commit after that. If the listener itself is dropped while
//! snapshots are still out, their host memory is leaked rather than
//! unmapped under them.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use addrspace_core::{HostMemory, KindTag, Listener, ListenerCx, ListenerResult, Section};
use vm_memory::{GuestAddress, GuestMemoryAtomic, GuestMemoryMmap, GuestRegionMmap, MmapRegion};

/// The guest memory a [`VmMemoryListener`] maintains.
pub type AtomicGuestMemory = GuestMemoryAtomic<GuestMemoryMmap>;

/// A guest-physical address in vm-memory's type.
pub fn guest_address(addr: u64) -> GuestAddress {
    GuestAddress(addr)
}

/// The raw guest-physical address of a vm-memory address.
pub fn raw_address(addr: GuestAddress) -> u64 {
    addr.0
}

/// `PROT_READ | PROT_WRITE`: how [`HostMemory`] maps its block (the same
/// value on every Linux architecture).
const HOST_PROT: i32 = 0x1 | 0x2;

/// `MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE`, how [`HostMemory`] maps
/// its block. vm-memory only reports these flags back on Unix; the values
/// are Linux's on x86, Arm and RISC-V.
const HOST_FLAGS: i32 = 0x02 | 0x20 | 0x4000;

/// The page vm-memory wants region starts aligned to. 4 KiB is Linux's
/// smallest; on hosts with larger pages vm-memory refuses sections that
/// start inside one (the refusal reaches the commit as usual).
const PAGE: u64 = 4096;

/// One RAM section mapped into vm-memory.
struct Mapped {
    /// The region in the current collection (dropped on retirement).
    region: Option<Arc<GuestRegionMmap>>,
    /// The mapping, shared with every region and snapshot built on it.
    mapping: Arc<MmapRegion>,
    /// Keeps the memory mapped while `mapping` can be reached.
    backing: Arc<HostMemory>,
    /// The section it was made for, to match `region_del`.
    section: (u64, u64),
}

impl Mapped {
    /// True once nothing but this entry refers to the mapping.
    fn unreachable(&self) -> bool {
        self.region.is_none() && Arc::strong_count(&self.mapping) == 1
    }
}

/// Keeps a [`GuestMemoryAtomic`] equal to the RAM of an address space.
///
/// Register it like any listener; hand [`memory`](Self::memory) clones to
/// device code.
pub struct VmMemoryListener {
    memory: AtomicGuestMemory,
    /// Mapped sections, by start address.
    current: BTreeMap<u64, Mapped>,
    /// Removed sections whose memory a snapshot may still reach.
    retired: Vec<Mapped>,
    changed: bool,
}

impl Default for VmMemoryListener {
    fn default() -> Self {
        Self::new()
    }
}

impl VmMemoryListener {
    /// A listener with empty guest memory.
    pub fn new() -> Self {
        VmMemoryListener {
            memory: GuestMemoryAtomic::new(GuestMemoryMmap::new()),
            current: BTreeMap::new(),
            retired: Vec::new(),
            changed: false,
        }
    }

    /// The guest memory, shared: clones see every later commit.
    pub fn memory(&self) -> AtomicGuestMemory {
        self.memory.clone()
    }

    /// Number of removed regions whose host memory is still held because
    /// a snapshot may reach it.
    pub fn retained(&self) -> usize {
        self.retired.len()
    }

    fn is_ram(section: &Section) -> bool {
        section.kind == KindTag::Ram && !section.readonly() && !section.ram_device
    }

    fn map(section: &Section) -> Result<Option<Mapped>, Box<dyn std::error::Error + Send + Sync>> {
        let (Some(host), Some(backing)) = (section.host_addr(), section.backing.clone()) else {
            return Ok(None);
        };
        let skip = host.next_multiple_of(PAGE) - host;
        if section.size() <= skip as u128 {
            return Ok(None);
        }
        // A section never exceeds its backing, which fits in `usize`.
        let len = usize::try_from(section.size() - skip as u128)?;
        // SAFETY: `host + skip .. + len` lies inside `backing`'s mapping
        // (a section is a window of its region, which fits its backing),
        // which was made with HOST_PROT / HOST_FLAGS; the `Mapped` entry
        // keeps `backing` alive until no region or snapshot built on this
        // `MmapRegion` exists (see `Mapped::unreachable`).
        let mapping =
            unsafe { MmapRegion::build_raw((host + skip) as *mut u8, len, HOST_PROT, HOST_FLAGS) }?;
        let mapping = Arc::new(mapping);
        let base = GuestAddress(section.start() + skip);
        let region = GuestRegionMmap::with_arc(Arc::clone(&mapping), base)
            .ok_or("RAM section ends past 2^64")?;
        Ok(Some(Mapped {
            region: Some(Arc::new(region)),
            mapping,
            backing,
            section: (section.start(), section.last()),
        }))
    }

    fn publish(&mut self) {
        let regions: Vec<Arc<GuestRegionMmap>> = self
            .current
            .values()
            .filter_map(|m| m.region.clone())
            .collect();
        let map = if regions.is_empty() {
            GuestMemoryMmap::new()
        } else {
            // Sections are disjoint and kept sorted by start.
            GuestMemoryMmap::from_arc_regions(regions).expect("flat ranges are sorted and disjoint")
        };
        // The lock only serializes writers; the bridge is the only one.
        let guard = match self.memory.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        guard.replace(map);
    }
}

impl Listener for VmMemoryListener {
    fn region_add(&mut self, _cx: &mut ListenerCx<'_>, section: &Section) -> ListenerResult {
        if !Self::is_ram(section) {
            return Ok(());
        }
        if let Some(mapped) = Self::map(section)? {
            self.current.insert(section.start(), mapped);
            self.changed = true;
        }
        Ok(())
    }

    fn region_del(&mut self, _cx: &mut ListenerCx<'_>, section: &Section) {
        let key = (section.start(), section.last());
        if self.current.get(&key.0).is_some_and(|m| m.section == key) {
            let mut old = self.current.remove(&key.0).expect("found above");
            old.region = None;
            self.retired.push(old);
            self.changed = true;
        }
    }

    fn commit(&mut self, _cx: &mut ListenerCx<'_>) {
        if std::mem::take(&mut self.changed) {
            self.publish();
        }
        self.retired.retain(|m| !m.unreachable());
    }
}

impl Drop for VmMemoryListener {
    fn drop(&mut self) {
        // Nobody maintains the map any more: empty it, then keep mapped
        // whatever snapshots still reach.
        self.current.values_mut().for_each(|m| m.region = None);
        self.publish();
        for m in std::mem::take(&mut self.current)
            .into_values()
            .chain(std::mem::take(&mut self.retired))
        {
            if !m.unreachable() {
                std::mem::forget(m.backing);
            }
        }
    }
}

impl fmt::Debug for VmMemoryListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VmMemoryListener")
            .field("regions", &self.current.len())
            .field("retained", &self.retired.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Weak;

    use addrspace_core::{ListenerConfig, Memory};
    use vm_memory::{Bytes, GuestAddressSpace, GuestMemoryBackend, GuestMemoryRegion};

    use super::*;

    struct Rig {
        mem: Memory,
        root: addrspace_core::RegionId,
        guest: AtomicGuestMemory,
    }

    fn rig() -> Rig {
        let mut mem = Memory::new();
        let root = mem.create_container("system", 1 << 32).unwrap();
        let system = mem.create_address_space("memory", root).unwrap();
        let listener = VmMemoryListener::new();
        let guest = listener.memory();
        mem.register_listener(system, ListenerConfig::new("vm-memory"), Box::new(listener))
            .unwrap();
        Rig { mem, root, guest }
    }

    #[test]
    fn guest_memory_follows_ram_as_it_is_added_moved_and_removed() {
        let mut r = rig();
        let ram = r.mem.create_ram("ram", 0x10000).unwrap();
        r.mem.add_subregion(r.root, 0x10_0000, ram).unwrap();

        let at = guest_address(0x10_0010);
        r.guest.memory().write_obj(0xdead_beef_u32, at).unwrap();
        let mut host = [0u8; 4];
        let backing = Arc::clone(r.mem.region(ram).unwrap().backing().unwrap());
        backing.read(0x10, &mut host).unwrap();
        assert_eq!(
            u32::from_le_bytes(host),
            0xdead_beef,
            "no copy: same memory"
        );

        r.mem.set_address(ram, 0x40_0000).unwrap();
        let moved: u32 = r.guest.memory().read_obj(guest_address(0x40_0010)).unwrap();
        assert_eq!(moved, 0xdead_beef);
        assert!(r.guest.memory().find_region(at).is_none());

        r.mem.del_subregion(r.root, ram).unwrap();
        let gone = r.guest.memory();
        assert!(gone.find_region(guest_address(0x40_0010)).is_none());
        assert_eq!(gone.num_regions(), 0);
    }

    #[test]
    fn rom_mmio_and_device_ram_are_not_guest_memory() {
        let mut r = rig();
        let rom = r.mem.create_rom("rom", 0x1000).unwrap();
        let mmio = r
            .mem
            .create_mmio("dev", 0x1000, Arc::new(addrspace_core::NullOps))
            .unwrap();
        let bar = Arc::new(HostMemory::anonymous(0x1000).unwrap());
        let dev_ram = r.mem.create_ram_from("bar", 0x1000, bar, true).unwrap();
        r.mem.add_subregion(r.root, 0x1000, rom).unwrap();
        r.mem.add_subregion(r.root, 0x2000, mmio).unwrap();
        r.mem.add_subregion(r.root, 0x3000, dev_ram).unwrap();
        assert_eq!(r.guest.memory().num_regions(), 0);
    }

    #[test]
    fn an_overlay_splits_ram_into_two_regions() {
        let mut r = rig();
        let ram = r.mem.create_ram("ram", 0x4000).unwrap();
        r.mem.add_subregion(r.root, 0, ram).unwrap();
        let hole = r
            .mem
            .create_mmio("hole", 0x1000, Arc::new(addrspace_core::NullOps))
            .unwrap();
        r.mem
            .add_subregion_overlap(r.root, 0x1000, hole, 1)
            .unwrap();
        let m = r.guest.memory();
        let spans: Vec<(u64, u64)> = m
            .iter()
            .map(|reg| (raw_address(reg.start_addr()), reg.len()))
            .collect();
        assert_eq!(spans, vec![(0, 0x1000), (0x2000, 0x2000)]);
        assert!(m.find_region(guest_address(0x1800)).is_none());
    }

    #[test]
    fn a_snapshot_keeps_removed_memory_mapped_until_dropped() {
        let mut r = rig();
        let ram = r.mem.create_ram("ram", 0x2000).unwrap();
        let weak: Weak<HostMemory> = Arc::downgrade(r.mem.region(ram).unwrap().backing().unwrap());
        r.mem.add_subregion(r.root, 0x8000, ram).unwrap();
        r.guest
            .memory()
            .write_obj(7u64, guest_address(0x8008))
            .unwrap();
        let snapshot = r.guest.memory();

        r.mem.del_subregion(r.root, ram).unwrap();
        r.mem.destroy_region(ram).unwrap();
        assert!(weak.upgrade().is_some(), "held for the snapshot");
        let old: u64 = snapshot.read_obj(guest_address(0x8008)).unwrap();
        assert_eq!(old, 7);

        drop(snapshot);
        // The next commit lets go of it.
        let other = r.mem.create_ram("other", 0x1000).unwrap();
        r.mem.add_subregion(r.root, 0, other).unwrap();
        assert!(weak.upgrade().is_none(), "released once unreachable");
    }

    #[test]
    fn addresses_convert_both_ways() {
        assert_eq!(raw_address(guest_address(0x1234)), 0x1234);
        assert_eq!(guest_address(u64::MAX), GuestAddress(u64::MAX));
    }
}
