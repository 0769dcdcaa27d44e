//! Read-only slots on a real VM: guest writes to ROM exit as MMIO and
//! leave the ROM as it was; reads come straight from memory.

#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod common;

use std::sync::Arc;

use addrspace_core::{AccessSizes, MmioOps};
use common::{vm_or_skip, Asm, Machine};
use parking_lot::Mutex;

const ROM_AT: u64 = 0x20000;
const MARKER: u32 = 0x600d_f00d;

#[test]
fn guest_write_to_rom_exits_as_mmio_and_rom_is_unchanged() {
    let Some(vm) = vm_or_skip("guest_write_to_rom_exits_as_mmio_and_rom_is_unchanged") else {
        return;
    };
    let mut m = Machine::new(vm);
    let rom = m.mem.create_rom("bios", 0x1000).unwrap();
    let backing = Arc::clone(m.mem.region(rom).unwrap().backing().unwrap());
    backing.write(0x10, &MARKER.to_le_bytes()).unwrap();
    m.mem.add_subregion(m.root, ROM_AT, rom).unwrap();
    assert!(m.slots.find(ROM_AT).unwrap().readonly);

    let mut code = Asm::default();
    code.write(ROM_AT + 0x10, 0x1234_5678)
        .report(ROM_AT + 0x10)
        .hlt();
    let exits = m.run(&code);

    assert_eq!(
        exits.mmio_writes,
        vec![(ROM_AT + 0x10, 0x1234_5678u32.to_le_bytes().to_vec())]
    );
    assert!(exits.mmio_reads.is_empty(), "ROM reads come from memory");
    assert_eq!(exits.reports, vec![MARKER]);
    let mut now = [0u8; 4];
    backing.read(0x10, &mut now).unwrap();
    assert_eq!(u32::from_le_bytes(now), MARKER);
}

/// A ROM device that records the writes it gets.
#[derive(Default)]
struct Flash(Mutex<Vec<(u64, u64)>>);

impl MmioOps for Flash {
    fn read(&self, _offset: u64, _size: u8) -> u64 {
        0
    }
    fn write(&self, offset: u64, _size: u8, value: u64) {
        self.0.lock().push((offset, value));
    }
    fn access_sizes(&self) -> AccessSizes {
        AccessSizes::default()
    }
}

#[test]
fn rom_device_in_romd_mode_reads_memory_and_sends_writes_to_its_ops() {
    let Some(vm) = vm_or_skip("rom_device_in_romd_mode_reads_memory_and_sends_writes_to_its_ops")
    else {
        return;
    };
    let mut m = Machine::new(vm);
    let flash = Arc::new(Flash::default());
    let dev = m
        .mem
        .create_rom_device("flash", 0x2000, flash.clone())
        .unwrap();
    let backing = Arc::clone(m.mem.region(dev).unwrap().backing().unwrap());
    backing.write(0x1000, &MARKER.to_le_bytes()).unwrap();
    m.mem.add_subregion(m.root, ROM_AT, dev).unwrap();

    let mut code = Asm::default();
    code.report(ROM_AT + 0x1000)
        .write(ROM_AT + 0x1004, 0xaa55)
        .hlt();
    let exits = m.run(&code);

    assert_eq!(exits.reports, vec![MARKER]);
    assert!(exits.mmio_reads.is_empty());
    assert_eq!(*flash.0.lock(), vec![(0x1004, 0xaa55)]);

    // In MMIO mode the slot goes and reads reach the ops too.
    m.mem.set_romd_mode(dev, false).unwrap();
    assert!(m.slots.find(ROM_AT).is_none());
    let mut code = Asm::default();
    code.report(ROM_AT + 0x1000).hlt();
    let exits = m.run(&code);
    assert_eq!(exits.mmio_reads, vec![ROM_AT + 0x1000]);
    assert_eq!(exits.reports, vec![0]);
}
