//! Everything KVM refuses reaches the VMM as a typed error naming the bad
//! value, and the listener's slot table (which mirrors KVM) is left as it
//! was. Memory-map changes KVM refuses come back from the commit as the
//! core's `ListenerRefused`, whose message is this crate's error: the
//! change itself stands for every other listener (see the core's error
//! docs), the KVM listener simply does not hold it.
//!
//! Every case but the first needs `/dev/kvm`; without it they print why
//! they are skipped and pass.

#![cfg(target_os = "linux")]

mod common;

use std::sync::Arc;

use addrspace_core::{
    Error as CoreError, EventNotifier, Ioeventfd, Memory, NullOps, RegionId, SIZE_2_64,
};
use addrspace_kvm::{EventFdNotifier, KvmVm, MemSlots, SlotPool};
use common::vm_or_skip;

#[test]
fn opening_a_kvm_device_that_is_not_there() {
    let path = std::env::temp_dir().join(format!("no-kvm-{}", std::process::id()));
    let err = KvmVm::open_path(&path).unwrap_err();
    assert!(
        matches!(&err, addrspace_kvm::Error::NoKvm { path: p, .. } if *p == path),
        "{err:?}"
    );
    assert!(err.to_string().contains(&path.display().to_string()));
}

/// Guest memory with 64 KiB of RAM at 0 and a KVM listener on it.
struct Fixture {
    mem: Memory,
    root: RegionId,
    ram: RegionId,
    slots: MemSlots,
    pool: SlotPool,
}

fn fixture(vm: KvmVm) -> Fixture {
    let mut mem = Memory::new();
    let root = mem.create_container("system", SIZE_2_64).unwrap();
    let ram = mem.create_ram("ram", 0x10000).unwrap();
    mem.add_subregion(root, 0, ram).unwrap();
    let space = mem.create_address_space("memory", root).unwrap();
    let listener = vm.memory_listener();
    let slots = listener.mem_slots();
    mem.register_listener(space, listener.config(), Box::new(listener))
        .unwrap();
    Fixture {
        mem,
        root,
        ram,
        slots,
        pool: vm.slot_pool().clone(),
    }
}

/// What KVM holds, as the listener mirrors it.
fn kvm_state(f: &Fixture) -> String {
    format!("{:?} slots in use {}", f.slots.slots(), f.pool.in_use())
}

/// Runs `op` (a memory-map change), checks that the KVM listener refused
/// it with exactly `expected`'s message, and that KVM holds what it held.
fn refused_by_kvm(
    mut f: Fixture,
    op: impl FnOnce(&mut Fixture) -> Result<(), CoreError>,
    expected: addrspace_kvm::Error,
) {
    let before = kvm_state(&f);
    let err = op(&mut f).expect_err("KVM must refuse");
    let CoreError::ListenerRefused { failures } = &err else {
        panic!("expected ListenerRefused, got {err:?}");
    };
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].name, "kvm");
    assert_eq!(failures[0].message, expected.to_string());
    assert!(err.to_string().contains(&expected.to_string()));
    assert_eq!(before, kvm_state(&f), "KVM's slots changed after {err}");
}

#[test]
fn more_ram_than_the_slot_pool_allows() {
    let Some(vm) = vm_or_skip("more_ram_than_the_slot_pool_allows") else {
        return;
    };
    refused_by_kvm(
        fixture(vm.with_slot_limit(1)),
        |f| {
            let more = f.mem.create_ram("more", 0x1000).unwrap();
            f.mem.add_subregion(f.root, 0x20000, more)
        },
        addrspace_kvm::Error::SlotLimit { limit: 1 },
    );
}

#[test]
fn ram_whose_host_and_guest_pages_do_not_line_up() {
    let Some(vm) = vm_or_skip("ram_whose_host_and_guest_pages_do_not_line_up") else {
        return;
    };
    let f = fixture(vm);
    let host = f.mem.region(f.ram).unwrap().backing().unwrap().host_addr();
    let page = 0x1000;
    refused_by_kvm(
        f,
        |f| {
            // Guest page 0x20000 would start 0x800 into a host page.
            let skewed = f.mem.create_alias("skewed", f.ram, 0x800, 0x2000).unwrap();
            f.mem.add_subregion(f.root, 0x20000, skewed)
        },
        addrspace_kvm::Error::Misaligned {
            guest_phys_addr: 0x20000,
            host_addr: host + 0x800,
            page_size: page,
        },
    );
}

#[test]
fn ram_over_a_slot_another_listener_holds() {
    let Some(vm) = vm_or_skip("ram_over_a_slot_another_listener_holds") else {
        return;
    };
    let second = vm.memory_listener();
    let mut f = fixture(vm);
    // Another address space of the same VM maps RAM over the same pages.
    let smm_root = f.mem.create_container("smm", SIZE_2_64).unwrap();
    let smram = f.mem.create_ram("smram", 0x2000).unwrap();
    f.mem.add_subregion(smm_root, 0x2000, smram).unwrap();
    let smm = f.mem.create_address_space("smm", smm_root).unwrap();
    let second_slots = second.mem_slots();
    let before = kvm_state(&f);
    let err = f
        .mem
        .register_listener(smm, second.config(), Box::new(second))
        .unwrap_err();
    let CoreError::ListenerRefused { failures } = &err else {
        panic!("expected ListenerRefused, got {err:?}");
    };
    // Slot 1: the first listener holds slot 0.
    let expected = addrspace_kvm::Error::SlotRefused {
        slot: 1,
        guest_phys_addr: 0x2000,
        memory_size: 0x2000,
        flags: 0,
        errno: libc::EEXIST,
    };
    assert_eq!(failures[0].message, expected.to_string());
    assert!(second_slots.is_empty());
    assert_eq!(before, kvm_state(&f));
    assert_eq!(f.mem.listeners_of(smm).unwrap(), &[]);
}

/// A notifier without a file descriptor: KVM cannot signal it.
struct NoFd;

impl EventNotifier for NoFd {
    fn notify(&self) {}
}

fn doorbell(f: &mut Fixture) -> RegionId {
    let dev = f.mem.create_mmio("dev", 0x1000, Arc::new(NullOps)).unwrap();
    f.mem.add_subregion(f.root, 0x10_0000, dev).unwrap();
    dev
}

#[test]
fn ioeventfd_without_an_eventfd() {
    let Some(vm) = vm_or_skip("ioeventfd_without_an_eventfd") else {
        return;
    };
    let mut f = fixture(vm);
    let dev = doorbell(&mut f);
    refused_by_kvm(
        f,
        |f| {
            let fd = Ioeventfd {
                addr: 0x40,
                size: 4,
                datamatch: None,
                notifier: Arc::new(NoFd),
            };
            f.mem.add_ioeventfd(dev, fd)
        },
        addrspace_kvm::Error::NoEventFd { addr: 0x10_0040 },
    );
}

#[test]
fn ioeventfd_of_an_access_size_kvm_cannot_match() {
    let Some(vm) = vm_or_skip("ioeventfd_of_an_access_size_kvm_cannot_match") else {
        return;
    };
    let mut f = fixture(vm);
    let dev = doorbell(&mut f);
    refused_by_kvm(
        f,
        |f| {
            let fd = Ioeventfd {
                addr: 0x40,
                size: 3,
                datamatch: None,
                notifier: Arc::new(EventFdNotifier::new().unwrap()),
            };
            f.mem.add_ioeventfd(dev, fd)
        },
        addrspace_kvm::Error::IoeventfdSize {
            addr: 0x10_0040,
            size: 3,
        },
    );
}

#[test]
fn ioeventfd_kvm_already_has() {
    let Some(vm) = vm_or_skip("ioeventfd_kvm_already_has") else {
        return;
    };
    // The same eventfd at the same address, length and value in two
    // address spaces of one VM: KVM holds the first and refuses the
    // second with EEXIST.
    let second = vm.memory_listener();
    let mut f = fixture(vm);
    let notifier = Arc::new(EventFdNotifier::new().unwrap());
    let fd = Ioeventfd {
        addr: 0x40,
        size: 4,
        datamatch: Some(7),
        notifier,
    };
    let dev = doorbell(&mut f);
    f.mem.add_ioeventfd(dev, fd.clone()).unwrap();
    let other_root = f.mem.create_container("other", SIZE_2_64).unwrap();
    let other_dev = f
        .mem
        .create_mmio("other-dev", 0x1000, Arc::new(NullOps))
        .unwrap();
    f.mem
        .add_subregion(other_root, 0x10_0000, other_dev)
        .unwrap();
    let other = f.mem.create_address_space("other", other_root).unwrap();
    f.mem
        .register_listener(other, second.config(), Box::new(second))
        .unwrap();
    refused_by_kvm(
        f,
        |f| f.mem.add_ioeventfd(other_dev, fd),
        addrspace_kvm::Error::IoeventfdRefused {
            addr: 0x10_0040,
            len: 4,
            datamatch: Some(7),
            errno: libc::EEXIST,
        },
    );
}
