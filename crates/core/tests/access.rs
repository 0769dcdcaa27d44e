//! Reads and writes through flat-view snapshots: RAM, ROM, ROM devices,
//! MMIO access sizes, aliases, and IOMMU translation into another address
//! space. A refused access changes nothing.

use std::sync::Arc;

use addrspace_core::{
    AccessError, AccessSizes, AddressSpaceId, IommuOps, IommuPerm, IommuTlbEntry, Memory, MmioOps,
    RegionId, SIZE_2_64,
};
use parking_lot::Mutex;

/// A device with 4-byte registers that logs every access.
#[derive(Default)]
struct Regs {
    regs: Mutex<Vec<u8>>,
    log: Mutex<Vec<(char, u64, u8)>>,
}

impl Regs {
    fn new() -> Self {
        Regs {
            regs: Mutex::new(vec![0; 0x100]),
            log: Mutex::default(),
        }
    }
}

impl MmioOps for Regs {
    fn read(&self, offset: u64, size: u8) -> u64 {
        self.log.lock().push(('r', offset, size));
        let r = self.regs.lock();
        let mut b = [0u8; 8];
        b[..size as usize].copy_from_slice(&r[offset as usize..offset as usize + size as usize]);
        u64::from_le_bytes(b)
    }
    fn write(&self, offset: u64, size: u8, value: u64) {
        self.log.lock().push(('w', offset, size));
        let mut r = self.regs.lock();
        r[offset as usize..offset as usize + size as usize]
            .copy_from_slice(&value.to_le_bytes()[..size as usize]);
    }
    fn access_sizes(&self) -> AccessSizes {
        AccessSizes { min: 4, max: 4 }
    }
}

struct Machine {
    mem: Memory,
    system: RegionId,
    memory: AddressSpaceId,
    ram: RegionId,
    regs: Arc<Regs>,
}

/// memory: RAM [0, 0x10000), ROM [0x10000, 0x11000), device registers at
/// 0x20000, and an alias of RAM [0x1000, 0x2000) at 0x30000.
fn machine() -> Machine {
    let mut mem = Memory::new();
    let system = mem.create_container("system", SIZE_2_64).unwrap();
    let ram = mem.create_ram("ram", 0x10000).unwrap();
    let rom = mem.create_rom("rom", 0x1000).unwrap();
    let regs = Arc::new(Regs::new());
    let dev = mem.create_mmio("regs", 0x100, regs.clone()).unwrap();
    let alias = mem.create_alias("ram-window", ram, 0x1000, 0x1000).unwrap();
    mem.add_subregion(system, 0, ram).unwrap();
    mem.add_subregion(system, 0x10000, rom).unwrap();
    mem.add_subregion(system, 0x20000, dev).unwrap();
    mem.add_subregion(system, 0x30000, alias).unwrap();
    let memory = mem.create_address_space("memory", system).unwrap();
    Machine {
        mem,
        system,
        memory,
        ram,
        regs,
    }
}

fn read(m: &Machine, addr: u64, len: usize) -> Result<Vec<u8>, AccessError> {
    let mut buf = vec![0; len];
    m.mem.view(m.memory).unwrap().read(addr, &mut buf)?;
    Ok(buf)
}

#[test]
fn ram_reads_back_what_was_written() {
    let m = machine();
    let view = m.mem.view(m.memory).unwrap();
    view.write(0x100, b"hello").unwrap();
    assert_eq!(read(&m, 0x100, 5).unwrap(), b"hello");
}

#[test]
fn alias_writes_land_in_the_target() {
    let m = machine();
    let view = m.mem.view(m.memory).unwrap();
    view.write(0x30010, &[1, 2, 3, 4]).unwrap();
    assert_eq!(read(&m, 0x1010, 4).unwrap(), vec![1, 2, 3, 4]);
    assert!(m.mem.region(m.ram).is_ok());
}

#[test]
fn access_spans_adjacent_ranges() {
    let m = machine();
    let view = m.mem.view(m.memory).unwrap();
    view.write(0xfffe, &[0xaa, 0xbb]).unwrap();
    let mut buf = [0u8; 4];
    view.read(0xfffe, &mut buf).unwrap();
    // Two bytes of RAM, then the first two bytes of the (zeroed) ROM.
    assert_eq!(buf, [0xaa, 0xbb, 0, 0]);
}

#[test]
fn write_reaching_rom_is_refused_and_writes_nothing() {
    let m = machine();
    let view = m.mem.view(m.memory).unwrap();
    let err = view.write(0xfffc, &[9; 8]).unwrap_err();
    assert_eq!(err, AccessError::ReadOnly { addr: 0x10000 });
    assert_eq!(
        read(&m, 0xfffc, 4).unwrap(),
        vec![0; 4],
        "the RAM part was not written"
    );
}

#[test]
fn mmio_accesses_respect_the_device_sizes() {
    let m = machine();
    let view = m.mem.view(m.memory).unwrap();
    view.write(0x20000, &[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
    view.write(0x20009, &[0xee]).unwrap();
    let mut buf = [0u8; 2];
    view.read(0x20002, &mut buf).unwrap();
    assert_eq!(buf, [3, 4]);
    let log = m.regs.log.lock().clone();
    assert_eq!(
        log,
        vec![
            ('w', 0x0, 4),
            ('w', 0x4, 4),
            // One byte at 9: widened to the 4-byte register, read-modify-write.
            ('r', 0x8, 4),
            ('w', 0x8, 4),
            ('r', 0x0, 4),
        ]
    );
    assert_eq!(m.regs.regs.lock()[9], 0xee);
}

#[test]
fn rom_device_reads_memory_in_romd_mode_and_the_device_otherwise() {
    let mut m = machine();
    let regs = Arc::new(Regs::new());
    let flash = m
        .mem
        .create_rom_device("flash", 0x1000, regs.clone())
        .unwrap();
    m.mem.add_subregion(m.system, 0x40000, flash).unwrap();
    let view = m.mem.view(m.memory).unwrap();
    let mut b = [0u8; 4];
    view.read(0x40000, &mut b).unwrap();
    assert!(regs.log.lock().is_empty(), "ROMD reads come from memory");
    view.write(0x40000, &[1, 0, 0, 0]).unwrap();
    assert_eq!(
        regs.log.lock().clone(),
        vec![('w', 0, 4)],
        "writes go to the device"
    );
    m.mem.set_romd_mode(flash, false).unwrap();
    m.mem.view(m.memory).unwrap().read(0x40000, &mut b).unwrap();
    assert_eq!(regs.log.lock().last(), Some(&('r', 0, 4)));
}

#[test]
fn unassigned_and_overflowing_accesses_are_refused() {
    let m = machine();
    assert_eq!(
        read(&m, 0x50000, 1),
        Err(AccessError::Unassigned { addr: 0x50000 })
    );
    assert_eq!(
        read(&m, u64::MAX, 2),
        Err(AccessError::BeyondAddressSpace {
            addr: u64::MAX,
            len: 2
        })
    );
}

#[test]
fn reservation_is_unassigned() {
    let mut m = machine();
    let hole = m.mem.create_reservation("hole", 0x1000).unwrap();
    m.mem.add_subregion_overlap(m.system, 0, hole, 1).unwrap();
    assert_eq!(
        read(&m, 0x10, 1),
        Err(AccessError::Unassigned { addr: 0x10 })
    );
}

/// IOMMU: page 0 -> RAM 0x2000 read-write, page 1 -> RAM 0x3000 read-only,
/// page 2 -> unmapped, page 3 -> 0x3000 of `page3_target` (see tests).
struct Pages {
    target: Mutex<Option<AddressSpaceId>>,
    page3_target: Mutex<Option<AddressSpaceId>>,
}

impl IommuOps for Pages {
    fn translate(&self, addr: u64, _access: IommuPerm) -> IommuTlbEntry {
        let page = addr >> 12;
        let (to, perm, target) = match page {
            0 => (0x2000, IommuPerm::RW, *self.target.lock()),
            1 => (0x3000, IommuPerm::RO, *self.target.lock()),
            3 => (0x3000, IommuPerm::RW, *self.page3_target.lock()),
            _ => (0, IommuPerm::NONE, None),
        };
        IommuTlbEntry {
            iova: addr & !0xfff,
            translated_addr: to,
            addr_mask: 0xfff,
            perm,
            target,
        }
    }
    fn min_page_size(&self) -> u64 {
        0x1000
    }
}

fn dma(m: &mut Machine) -> (AddressSpaceId, Arc<Pages>) {
    let pages = Arc::new(Pages {
        target: Mutex::new(Some(m.memory)),
        page3_target: Mutex::new(None),
    });
    let root = m.mem.create_container("dma-root", SIZE_2_64).unwrap();
    let window = m.mem.create_iommu("tce", 0x4000, pages.clone()).unwrap();
    m.mem.add_subregion(root, 0, window).unwrap();
    (m.mem.create_address_space("dma", root).unwrap(), pages)
}

#[test]
fn dma_through_an_iommu_reaches_guest_ram() {
    let mut m = machine();
    let (dma, _) = dma(&mut m);
    let view = m.mem.view(dma).unwrap();
    view.write(0x10, b"dma!").unwrap();
    assert_eq!(read(&m, 0x2010, 4).unwrap(), b"dma!");
    m.mem.view(m.memory).unwrap().write(0x3000, b"ro").unwrap();
    // A read across the page boundary uses both translations.
    let mut buf = [0u8; 4];
    view.read(0xffe, &mut buf).unwrap();
    assert_eq!(&buf[2..], b"ro");
}

#[test]
fn iommu_refusals_write_nothing() {
    let mut m = machine();
    let (dma, pages) = dma(&mut m);
    let view = m.mem.view(dma).unwrap();
    assert!(matches!(
        view.write(0xffe, &[1; 4]),
        Err(AccessError::IommuDenied {
            access: "write",
            ..
        })
    ));
    assert_eq!(
        read(&m, 0x2ffe, 2).unwrap(),
        vec![0, 0],
        "the writable page was not written either"
    );
    assert!(matches!(
        view.read(0x2000, &mut [0; 1]),
        Err(AccessError::IommuDenied { access: "read", .. })
    ));
    assert!(matches!(
        view.read(0x3000, &mut [0; 1]),
        Err(AccessError::IommuTarget { .. })
    ));
    // A translation into its own address space loops until refused.
    *pages.page3_target.lock() = Some(dma);
    *pages.target.lock() = Some(dma);
    assert!(matches!(
        view.read(0x3000, &mut [0; 1]),
        Err(AccessError::TooDeep { .. })
    ));
}

#[test]
fn snapshot_keeps_serving_the_old_map_after_a_change() {
    let mut m = machine();
    let old = m.mem.view(m.memory).unwrap();
    let gone = m.mem.region(m.ram).unwrap().parent().unwrap();
    m.mem.del_subregion(gone, m.ram).unwrap();
    old.write(0x10, &[7]).unwrap();
    assert_eq!(
        read(&m, 0x10, 1),
        Err(AccessError::Unassigned { addr: 0x10 })
    );
    let mut b = [0u8];
    old.read(0x10, &mut b).unwrap();
    assert_eq!(b, [7]);
}

#[test]
fn destroyed_ram_is_freed_once_old_snapshots_are_dropped() {
    let mut m = machine();
    let extra = m.mem.create_ram("extra", 0x1000).unwrap();
    m.mem.add_subregion(m.system, 0x60000, extra).unwrap();
    let backing = Arc::downgrade(m.mem.region(extra).unwrap().backing().unwrap());
    let old = m.mem.view(m.memory).unwrap();
    m.mem.del_subregion(m.system, extra).unwrap();
    m.mem.destroy_region(extra).unwrap();
    assert!(
        backing.upgrade().is_some(),
        "the old snapshot still maps it"
    );
    old.write(0x60000, &[1]).unwrap();
    drop(old);
    assert!(backing.upgrade().is_none(), "nothing refers to it any more");
}

#[test]
fn host_address_of_ram_follows_the_backing_and_mmio_has_none() {
    let m = machine();
    let view = m.mem.view(m.memory).unwrap();
    let base = m.mem.region(m.ram).unwrap().backing().unwrap().host_addr();
    assert_eq!(view.host_address(0x10), Some((base + 0x10, 0x10000 - 0x10)));
    assert_eq!(
        view.host_address(0x30010),
        Some((base + 0x1010, 0x1000 - 0x10)),
        "through the alias"
    );
    assert_eq!(view.host_address(0x20000), None);
    assert_eq!(view.host_address(0x50000), None);
}
