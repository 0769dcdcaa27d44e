//! KVM refusing a slot on a real VM: the commit reports
//! `ListenerRefused` and the listener's table still matches KVM.

#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod common;

use addrspace_core::Error as CoreError;
use common::{vm_or_skip, Asm, Machine};

#[test]
fn slot_limit_refuses_the_commit_and_table_matches_kvm() {
    let Some(vm) = vm_or_skip("slot_limit_refuses_the_commit_and_table_matches_kvm") else {
        return;
    };
    // Slot 0 is the code region; one more slot fits.
    let mut m = Machine::new(vm.with_slot_limit(2));
    let a = m.mem.create_ram("a", 0x1000).unwrap();
    let b = m.mem.create_ram("b", 0x1000).unwrap();
    m.mem
        .region(b)
        .unwrap()
        .backing()
        .unwrap()
        .write(0, &[0x42; 4])
        .unwrap();
    m.mem.add_subregion(m.root, 0x20000, a).unwrap();

    let err = m.mem.add_subregion(m.root, 0x30000, b).unwrap_err();

    let CoreError::ListenerRefused { failures } = &err else {
        panic!("expected ListenerRefused, got {err:?}");
    };
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].name, "kvm");
    assert_eq!(failures[0].event, "region_add");
    assert_eq!(failures[0].range, Some((0x30000, 0x31000)));
    assert_eq!(m.slots.len(), 2);
    m.assert_kvm_matches_table(2, 0x10000, 0x40000);
    // The guest does not see b through KVM: its read exits (and the VMM
    // may still serve it from the view).
    let mut code = Asm::default();
    code.report(0x30000).hlt();
    let exits = m.run(&code);
    assert_eq!(exits.mmio_reads, vec![0x30000]);
    assert_eq!(exits.reports, vec![0x4242_4242]);
}

#[test]
fn overlapping_slot_of_a_second_listener_is_refused() {
    let Some(vm) = vm_or_skip("overlapping_slot_of_a_second_listener_is_refused") else {
        return;
    };
    let second = vm.memory_listener();
    let second_slots = second.mem_slots();
    let mut m = Machine::new(vm);
    let ram = m.mem.create_ram("ram", 0x4000).unwrap();
    m.mem.add_subregion(m.root, 0x20000, ram).unwrap();
    // Another address space of the same VM maps RAM over the same pages.
    let smm_root = m.mem.create_container("smm", 1 << 20).unwrap();
    let smram = m.mem.create_ram("smram", 0x2000).unwrap();
    m.mem.add_subregion(smm_root, 0x22000, smram).unwrap();
    let smm = m.mem.create_address_space("smm", smm_root).unwrap();

    let err = m
        .mem
        .register_listener(smm, second.config(), Box::new(second))
        .unwrap_err();

    let CoreError::ListenerRefused { failures } = &err else {
        panic!("expected ListenerRefused, got {err:?}");
    };
    assert_eq!(failures[0].event, "region_add");
    assert!(
        failures[0].message.contains("File exists"),
        "{}",
        failures[0].message
    );
    assert!(second_slots.is_empty());
    m.assert_kvm_matches_table(4, 0x10000, 0x30000);
}
