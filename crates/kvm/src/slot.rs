//! Memory slots: what the listener holds in KVM, and how a memory section
//! is cut down to the pages KVM can map.

use addrspace_core::{KindTag, RegionId, Section};
use kvm_bindings::{KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY};

use crate::error::Error;

/// One KVM memory slot held by a [`KvmMemoryListener`](crate::KvmMemoryListener),
/// as KVM holds it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MemSlot {
    /// The slot number.
    pub slot: u32,
    /// First guest physical address (page-aligned).
    pub guest_phys_addr: u64,
    /// Size in bytes (whole pages).
    pub memory_size: u64,
    /// Host virtual address of the first byte.
    pub userspace_addr: u64,
    /// `KVM_MEM_READONLY`: guest writes exit to the VMM as MMIO.
    pub readonly: bool,
    /// `KVM_MEM_LOG_DIRTY_PAGES`: KVM records the pages the guest writes.
    pub log_dirty: bool,
    /// The region whose memory the slot maps.
    pub region: RegionId,
    /// Offset in `region` of `guest_phys_addr`.
    pub offset_in_region: u64,
}

impl MemSlot {
    /// The slot's `KVM_MEM_*` flags.
    pub fn flags(&self) -> u32 {
        let mut flags = 0;
        if self.readonly {
            flags |= KVM_MEM_READONLY;
        }
        if self.log_dirty {
            flags |= KVM_MEM_LOG_DIRTY_PAGES;
        }
        flags
    }

    /// True if `addr` is a guest address inside the slot.
    pub fn contains(&self, addr: u64) -> bool {
        addr >= self.guest_phys_addr && addr - self.guest_phys_addr < self.memory_size
    }

    /// True if the slot and `[start, start + size)` share an address.
    pub(crate) fn overlaps(&self, start: u64, size: u64) -> bool {
        let (a0, a1) = (self.guest_phys_addr as u128, self.end());
        let (b0, b1) = (start as u128, start as u128 + size as u128);
        a0 < b1 && b0 < a1
    }

    /// One past the last guest address.
    pub(crate) fn end(&self) -> u128 {
        self.guest_phys_addr as u128 + self.memory_size as u128
    }
}

/// The whole pages of a memory section: what goes in its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub(crate) guest_phys_addr: u64,
    pub(crate) memory_size: u64,
    pub(crate) userspace_addr: u64,
    pub(crate) offset_in_region: u64,
    pub(crate) readonly: bool,
}

impl Geometry {
    /// The slot a section needs: its guest range shrunk inwards to page
    /// boundaries (the partial pages at either end stay unmapped, so the
    /// guest's accesses there exit to the VMM as MMIO). `None` if no whole
    /// page is left, or the section is not memory.
    ///
    /// ROMs (read-only sections) and ROM devices in ROMD mode are mapped
    /// read-only: a guest write must reach the VMM (which drops it for a
    /// ROM, or hands it to the ROM device's ops).
    pub(crate) fn of(section: &Section, page: u64) -> Result<Option<Geometry>, Error> {
        let Some(host) = section.host_addr().filter(|_| section.is_memory()) else {
            return Ok(None);
        };
        let page = page as u128;
        let start = section.start() as u128;
        let end = start + section.size();
        let first = start.next_multiple_of(page);
        let last = end / page * page;
        if last <= first {
            return Ok(None);
        }
        let head = (first - start) as u64;
        let userspace_addr = host + head;
        if !(userspace_addr as u128).is_multiple_of(page) {
            return Err(Error::Misaligned {
                guest_phys_addr: first as u64,
                host_addr: userspace_addr,
                page_size: page as u64,
            });
        }
        Ok(Some(Geometry {
            guest_phys_addr: first as u64,
            memory_size: (last - first) as u64,
            userspace_addr,
            offset_in_region: section.offset_in_region() + head,
            readonly: section.readonly() || section.kind == KindTag::RomDevice,
        }))
    }

    /// True if `slot` maps the same host pages with the same protection,
    /// wherever in the guest: KVM can move it here in place.
    pub(crate) fn same_pages(&self, slot: &MemSlot) -> bool {
        self.memory_size == slot.memory_size
            && self.userspace_addr == slot.userspace_addr
            && self.readonly == slot.readonly
    }

    /// True if `slot` maps exactly these pages the same way, so a section
    /// deleted and added again in one commit can keep it untouched.
    pub(crate) fn same_slot(&self, slot: &MemSlot) -> bool {
        self.guest_phys_addr == slot.guest_phys_addr
            && self.memory_size == slot.memory_size
            && self.userspace_addr == slot.userspace_addr
            && self.readonly == slot.readonly
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use addrspace_core::{Memory, NullOps};

    use super::*;

    const PAGE: u64 = 4096;

    /// The sections of a one-child address space: `child` at `addr`.
    fn sections_of(m: &mut Memory, addr: u64, child: addrspace_core::RegionId) -> Vec<Section> {
        let root = m.create_container("root", 1 << 32).unwrap();
        m.add_subregion(root, addr, child).unwrap();
        let as_id = m.create_address_space("as", root).unwrap();
        struct Keep(Arc<parking_lot::Mutex<Vec<Section>>>);
        impl addrspace_core::Listener for Keep {
            fn region_add(
                &mut self,
                _cx: &mut addrspace_core::ListenerCx<'_>,
                s: &Section,
            ) -> addrspace_core::ListenerResult {
                self.0.lock().push(s.clone());
                Ok(())
            }
        }
        let kept = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let cfg = addrspace_core::ListenerConfig::new("keep");
        m.register_listener(as_id, cfg, Box::new(Keep(Arc::clone(&kept))))
            .unwrap();
        let out = kept.lock().clone();
        out
    }

    #[test]
    fn aligned_ram_maps_whole() {
        let mut m = Memory::new();
        let ram = m.create_ram("ram", 0x4000).unwrap();
        let s = &sections_of(&mut m, 0x10000, ram)[0];
        let g = Geometry::of(s, PAGE).unwrap().unwrap();
        assert_eq!((g.guest_phys_addr, g.memory_size), (0x10000, 0x4000));
        assert_eq!(g.userspace_addr, s.host_addr().unwrap());
        assert_eq!(g.offset_in_region, 0);
        assert!(!g.readonly);
    }

    #[test]
    fn unaligned_head_and_tail_are_left_out() {
        let mut m = Memory::new();
        let ram = m.create_ram("ram", 0x10000).unwrap();
        let alias = m.create_alias("a", ram, 0x800, 0x3000).unwrap();
        let s = &sections_of(&mut m, 0x10800, alias)[0];
        let g = Geometry::of(s, PAGE).unwrap().unwrap();
        assert_eq!((g.guest_phys_addr, g.memory_size), (0x11000, 0x2000));
        assert_eq!(g.offset_in_region, 0x1000);
        assert_eq!(g.userspace_addr, s.host_addr().unwrap() + 0x800);
    }

    #[test]
    fn section_smaller_than_a_page_gets_no_slot() {
        let mut m = Memory::new();
        let ram = m.create_ram("ram", 0x1000).unwrap();
        let alias = m.create_alias("a", ram, 0x100, 0xe00).unwrap();
        let s = &sections_of(&mut m, 0x10100, alias)[0];
        assert_eq!(Geometry::of(s, PAGE).unwrap(), None);
    }

    #[test]
    fn host_and_guest_at_different_page_offsets_is_misaligned() {
        let mut m = Memory::new();
        let ram = m.create_ram("ram", 0x10000).unwrap();
        let alias = m.create_alias("a", ram, 0x800, 0x4000).unwrap();
        let s = &sections_of(&mut m, 0x10000, alias)[0];
        let err = Geometry::of(s, PAGE).unwrap_err();
        assert!(matches!(
            err,
            Error::Misaligned {
                guest_phys_addr: 0x10000,
                page_size: PAGE,
                ..
            }
        ));
    }

    #[test]
    fn rom_and_rom_device_map_read_only_and_mmio_not_at_all() {
        let mut m = Memory::new();
        let rom = m.create_rom("rom", 0x1000).unwrap();
        assert!(
            Geometry::of(&sections_of(&mut m, 0, rom)[0], PAGE)
                .unwrap()
                .unwrap()
                .readonly
        );
        let mut m = Memory::new();
        let romd = m
            .create_rom_device("flash", 0x1000, Arc::new(NullOps))
            .unwrap();
        assert!(
            Geometry::of(&sections_of(&mut m, 0, romd)[0], PAGE)
                .unwrap()
                .unwrap()
                .readonly
        );
        let mut m = Memory::new();
        let mmio = m.create_mmio("dev", 0x1000, Arc::new(NullOps)).unwrap();
        assert_eq!(
            Geometry::of(&sections_of(&mut m, 0, mmio)[0], PAGE).unwrap(),
            None
        );
    }

    #[test]
    fn rom_device_in_mmio_mode_is_not_memory() {
        let mut m = Memory::new();
        let romd = m
            .create_rom_device("flash", 0x1000, Arc::new(NullOps))
            .unwrap();
        m.set_romd_mode(romd, false).unwrap();
        assert_eq!(
            Geometry::of(&sections_of(&mut m, 0, romd)[0], PAGE).unwrap(),
            None
        );
    }

    #[test]
    fn flags_follow_readonly_and_logging() {
        let mut s = MemSlot {
            slot: 0,
            guest_phys_addr: 0,
            memory_size: PAGE,
            userspace_addr: 0,
            readonly: true,
            log_dirty: false,
            region: {
                let mut m = Memory::new();
                m.create_container("c", 1).unwrap()
            },
            offset_in_region: 0,
        };
        assert_eq!(s.flags(), KVM_MEM_READONLY);
        s.readonly = false;
        s.log_dirty = true;
        assert_eq!(s.flags(), KVM_MEM_LOG_DIRTY_PAGES);
    }
}
