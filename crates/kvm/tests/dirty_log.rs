//! Dirty logging on a real VM: `log_sync` reports exactly the pages the
//! guest wrote.

#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod common;

use addrspace_core::DirtyClient;
use common::{vm_or_skip, Asm, Machine};

const RAM_AT: u64 = 0x20000;

#[test]
fn log_sync_reports_exactly_the_pages_the_guest_wrote() {
    let Some(vm) = vm_or_skip("log_sync_reports_exactly_the_pages_the_guest_wrote") else {
        return;
    };
    let mut m = Machine::new(vm);
    let ram = m.mem.create_ram("ram", 0x10000).unwrap();
    m.mem.add_subregion(m.root, RAM_AT, ram).unwrap();
    m.mem.set_log(ram, DirtyClient::Migration, true).unwrap();
    assert!(m.slots.find(RAM_AT).unwrap().log_dirty);

    let mut code = Asm::default();
    code.write(RAM_AT + 0x3000, 1)
        .write(RAM_AT + 0x7ffc, 2)
        .write(RAM_AT + 0x7000, 3)
        .write(RAM_AT + 0xf008, 4)
        .report(RAM_AT + 0x5000)
        .hlt();
    let exits = m.run(&code);
    assert!(exits.mmio_writes.is_empty(), "RAM writes stay in KVM");
    m.mem.log_sync(m.system).unwrap();

    assert_eq!(m.dirty.take(ram), vec![0x3000, 0x7000, 0xf000]);
    assert!(m.dirty.dirty_pages(m.code).is_empty(), "code is not logged");

    // KVM cleared what it reported: the next sync has only new writes.
    let mut code = Asm::default();
    code.write(RAM_AT + 0x1000, 5).hlt();
    m.run(&code);
    m.mem.log_sync(m.system).unwrap();
    assert_eq!(m.dirty.take(ram), vec![0x1000]);
}

#[test]
fn writes_before_logging_starts_are_not_reported() {
    let Some(vm) = vm_or_skip("writes_before_logging_starts_are_not_reported") else {
        return;
    };
    let mut m = Machine::new(vm);
    let ram = m.mem.create_ram("ram", 0x4000).unwrap();
    m.mem.add_subregion(m.root, RAM_AT, ram).unwrap();
    let slot_before = m.slots.find(RAM_AT).unwrap().slot;
    let mut code = Asm::default();
    code.write(RAM_AT, 1).hlt();
    m.run(&code);

    m.mem.set_log(ram, DirtyClient::Vga, true).unwrap();
    assert_eq!(
        m.slots.find(RAM_AT).unwrap().slot,
        slot_before,
        "logging is switched on in place"
    );
    let mut code = Asm::default();
    code.write(RAM_AT + 0x2000, 1).hlt();
    m.run(&code);
    m.mem.log_sync(m.system).unwrap();
    assert_eq!(m.dirty.dirty_pages(ram), vec![0x2000]);
}

#[test]
fn pages_written_before_logging_stops_survive_the_stop() {
    let Some(vm) = vm_or_skip("pages_written_before_logging_stops_survive_the_stop") else {
        return;
    };
    let mut m = Machine::new(vm);
    let ram = m.mem.create_ram("ram", 0x4000).unwrap();
    m.mem.add_subregion(m.root, RAM_AT, ram).unwrap();
    m.mem.set_log(ram, DirtyClient::Migration, true).unwrap();
    let mut code = Asm::default();
    code.write(RAM_AT + 0x1000, 1).hlt();
    m.run(&code);

    m.mem.set_log(ram, DirtyClient::Migration, false).unwrap();
    assert!(!m.slots.find(RAM_AT).unwrap().log_dirty);
    assert_eq!(m.dirty.dirty_pages(ram), vec![0x1000]);
}
