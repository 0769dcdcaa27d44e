//! Unit tests of the listener against the model of KVM in
//! `fake_kernel.rs`; the same behaviours run on `/dev/kvm` in `tests/`.

use std::sync::Arc;

use addrspace_core::{
    AddressSpaceId, DirtyClient, Error as CoreError, EventNotifier, HostMemory, Ioeventfd,
    ListenerId, Memory, NullOps, RegionId, Unregister,
};
use kvm_bindings::{KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY};
use proptest::prelude::*;

use super::*;
use crate::eventfd::EventFdNotifier;
use crate::fake_kernel::{FakeKvm, PAGE};
use crate::slot::Geometry;

struct Rig {
    mem: Memory,
    root: RegionId,
    as_id: AddressSpaceId,
    fake: Arc<FakeKvm>,
    slots: MemSlots,
    dirty: DirtyPages,
    listener: ListenerId,
}

fn rig_with(limit: u32, space: IoSpace) -> Rig {
    rig_on(Arc::new(FakeKvm::new(limit)), SlotPool::new(limit), space)
}

fn rig_on(fake: Arc<FakeKvm>, pool: SlotPool, space: IoSpace) -> Rig {
    let mut mem = Memory::new();
    let root = mem.create_container("root", 1 << 32).unwrap();
    let as_id = mem.create_address_space("memory", root).unwrap();
    let l = KvmMemoryListener::with_kernel(fake.clone(), pool, PAGE).io_space(space);
    let (slots, dirty, config) = (l.mem_slots(), l.dirty_pages(), l.config());
    let listener = mem.register_listener(as_id, config, Box::new(l)).unwrap();
    Rig {
        mem,
        root,
        as_id,
        fake,
        slots,
        dirty,
        listener,
    }
}

fn rig() -> Rig {
    rig_with(32, IoSpace::Mmio)
}

/// (slot, gpa, size, host, flags) of each slot, by address.
type Row = (u32, u64, u64, u64, u32);

fn kernel_rows(fake: &FakeKvm) -> Vec<Row> {
    fake.slots()
        .iter()
        .map(|s| {
            (
                s.slot,
                s.guest_phys_addr,
                s.memory_size,
                s.userspace_addr,
                s.flags,
            )
        })
        .collect()
}

fn table_rows(slots: &MemSlots) -> Vec<Row> {
    slots
        .slots()
        .iter()
        .map(|s| {
            (
                s.slot,
                s.guest_phys_addr,
                s.memory_size,
                s.userspace_addr,
                s.flags(),
            )
        })
        .collect()
}

/// The slots the view calls for: (gpa, size, host, readonly) by address.
fn wanted(mem: &Memory, as_id: AddressSpaceId) -> Vec<(u64, u64, u64, bool)> {
    let view = mem.view(as_id).unwrap();
    view.ranges
        .iter()
        .filter_map(|fr| {
            let region = mem.region(fr.region).unwrap();
            let section = Section {
                address_space: as_id,
                range: *fr,
                kind: region.kind().tag(),
                backing: region.backing().cloned(),
                ram_device: false,
            };
            Geometry::of(&section, PAGE).ok().flatten()
        })
        .map(|g| {
            (
                g.guest_phys_addr,
                g.memory_size,
                g.userspace_addr,
                g.readonly,
            )
        })
        .collect()
}

fn assert_in_step(r: &Rig) {
    let kernel = kernel_rows(&r.fake);
    assert_eq!(table_rows(&r.slots), kernel, "listener table vs kernel");
    let got: Vec<_> = kernel
        .iter()
        .map(|&(_, gpa, size, host, flags)| (gpa, size, host, flags & KVM_MEM_READONLY != 0))
        .collect();
    assert_eq!(got, wanted(&r.mem, r.as_id), "kernel vs view");
}

fn host(mem: &Memory, region: RegionId) -> u64 {
    mem.region(region).unwrap().backing().unwrap().host_addr()
}

#[test]
fn ram_gets_one_writable_slot_at_its_address() {
    let mut r = rig();
    let ram = r.mem.create_ram("ram", 0x4000).unwrap();
    r.mem.add_subregion(r.root, 0x10000, ram).unwrap();
    assert_eq!(
        kernel_rows(&r.fake),
        vec![(0, 0x10000, 0x4000, host(&r.mem, ram), 0)]
    );
    assert_in_step(&r);
    assert!(r.fake.guest_write(0x13fff));
}

#[test]
fn rom_gets_a_read_only_slot_and_mmio_none() {
    let mut r = rig();
    let rom = r.mem.create_rom("rom", 0x1000).unwrap();
    let dev = r.mem.create_mmio("dev", 0x1000, Arc::new(NullOps)).unwrap();
    r.mem.add_subregion(r.root, 0xf000, rom).unwrap();
    r.mem.add_subregion(r.root, 0x2000, dev).unwrap();
    assert_eq!(
        kernel_rows(&r.fake),
        vec![(0, 0xf000, 0x1000, host(&r.mem, rom), KVM_MEM_READONLY)]
    );
    assert!(!r.fake.guest_write(0xf000), "ROM write must exit");
    assert!(!r.fake.guest_write(0x2000), "MMIO write must exit");
}

#[test]
fn ram_device_memory_gets_a_slot() {
    let mut r = rig();
    let bar = Arc::new(HostMemory::anonymous(0x2000).unwrap());
    let ram = r.mem.create_ram_from("bar", 0x2000, bar, true).unwrap();
    r.mem.add_subregion(r.root, 0x40000, ram).unwrap();
    assert_eq!(r.slots.len(), 1);
    assert_in_step(&r);
}

#[test]
fn rom_device_is_read_only_memory_in_romd_mode_and_no_slot_otherwise() {
    let mut r = rig();
    let flash = r
        .mem
        .create_rom_device("flash", 0x2000, Arc::new(NullOps))
        .unwrap();
    r.mem.add_subregion(r.root, 0x80000, flash).unwrap();
    assert_eq!(kernel_rows(&r.fake)[0].4, KVM_MEM_READONLY);
    r.mem.set_romd_mode(flash, false).unwrap();
    assert!(r.fake.slots().is_empty());
    r.mem.set_romd_mode(flash, true).unwrap();
    assert_in_step(&r);
}

#[test]
fn moving_ram_moves_its_slot_in_one_ioctl() {
    let mut r = rig();
    let ram = r.mem.create_ram("ram", 0x2000).unwrap();
    r.mem.add_subregion(r.root, 0x10000, ram).unwrap();
    let before = r.fake.memslot_calls();
    r.mem.set_address(ram, 0x30000).unwrap();
    assert_eq!(r.fake.memslot_calls() - before, 1, "one KVM_MR_MOVE");
    assert_eq!(
        kernel_rows(&r.fake),
        vec![(0, 0x30000, 0x2000, host(&r.mem, ram), 0)]
    );
    assert_in_step(&r);
}

#[test]
fn freed_slot_numbers_are_reused_lowest_first() {
    let mut r = rig();
    let regions: Vec<RegionId> = (0..3)
        .map(|i| {
            let ram = r.mem.create_ram("ram", 0x1000).unwrap();
            r.mem.add_subregion(r.root, 0x10000 * (i + 1), ram).unwrap();
            ram
        })
        .collect();
    r.mem.del_subregion(r.root, regions[0]).unwrap();
    r.mem.del_subregion(r.root, regions[1]).unwrap();
    let ram = r.mem.create_ram("new", 0x1000).unwrap();
    r.mem.add_subregion(r.root, 0x80000, ram).unwrap();
    let numbers: Vec<u32> = r.slots.slots().iter().map(|s| s.slot).collect();
    assert_eq!(numbers, vec![2, 0]);
}

#[test]
fn change_kvm_cannot_see_touches_no_slot() {
    let mut r = rig();
    let ram = r.mem.create_ram("ram", 0x4000).unwrap();
    r.mem.add_subregion(r.root, 0x10000, ram).unwrap();
    let before = r.fake.memslot_calls();
    // Non-volatility is part of the mapping: the core deletes and re-adds
    // the range, but KVM's slot is the same.
    r.mem.set_nonvolatile(ram, true).unwrap();
    assert_eq!(r.fake.memslot_calls(), before);
    assert_in_step(&r);
}

#[test]
fn overlay_splits_ram_with_one_delete_and_two_creates() {
    let mut r = rig();
    let ram = r.mem.create_ram("ram", 0x10000).unwrap();
    r.mem.add_subregion(r.root, 0x10000, ram).unwrap();
    let before = r.fake.memslot_calls();
    let dev = r.mem.create_mmio("dev", 0x1000, Arc::new(NullOps)).unwrap();
    r.mem
        .add_subregion_overlap(r.root, 0x14000, dev, 1)
        .unwrap();
    assert_eq!(r.fake.memslot_calls() - before, 3);
    assert_in_step(&r);
    let before = r.fake.memslot_calls();
    r.mem.del_subregion(r.root, dev).unwrap();
    assert_eq!(r.fake.memslot_calls() - before, 3);
    assert_in_step(&r);
}

#[test]
fn dirty_logging_toggles_the_flag_in_place_on_the_same_slot() {
    let mut r = rig();
    let ram = r.mem.create_ram("ram", 0x4000).unwrap();
    r.mem.add_subregion(r.root, 0x10000, ram).unwrap();
    let before = r.fake.memslot_calls();
    r.mem.set_log(ram, DirtyClient::Migration, true).unwrap();
    assert_eq!(r.fake.memslot_calls() - before, 1);
    let row = kernel_rows(&r.fake)[0];
    assert_eq!((row.0, row.4), (0, KVM_MEM_LOG_DIRTY_PAGES));
    r.mem.set_log(ram, DirtyClient::Migration, false).unwrap();
    assert_eq!(kernel_rows(&r.fake)[0].4, 0);
    assert_in_step(&r);
}

#[test]
fn log_sync_reports_written_pages_as_region_offsets() {
    let mut r = rig();
    let ram = r.mem.create_ram("ram", 0x10000).unwrap();
    let alias = r.mem.create_alias("hi", ram, 0x8000, 0x8000).unwrap();
    r.mem.add_subregion(r.root, 0x20000, alias).unwrap();
    r.mem.set_log(ram, DirtyClient::Vga, true).unwrap();
    assert!(r.fake.guest_write(0x20010));
    assert!(r.fake.guest_write(0x23ffc));
    assert!(r.fake.guest_write(0x23000));
    r.mem.log_sync(r.as_id).unwrap();
    assert_eq!(r.dirty.dirty_pages(ram), vec![0x8000, 0xb000]);
    r.dirty.clear(ram);
    r.mem.log_sync(r.as_id).unwrap();
    assert!(
        r.dirty.dirty_pages(ram).is_empty(),
        "KVM clears what it reported"
    );
}

#[test]
fn pages_dirtied_before_logging_stops_are_kept() {
    let mut r = rig();
    let ram = r.mem.create_ram("ram", 0x4000).unwrap();
    r.mem.add_subregion(r.root, 0, ram).unwrap();
    r.mem.set_log(ram, DirtyClient::Migration, true).unwrap();
    r.fake.guest_write(0x1000);
    r.mem.set_log(ram, DirtyClient::Migration, false).unwrap();
    assert_eq!(r.dirty.dirty_pages(ram), vec![0x1000]);
}

#[test]
fn pages_dirtied_before_a_logged_slot_is_deleted_are_kept() {
    let mut r = rig();
    let ram = r.mem.create_ram("ram", 0x4000).unwrap();
    r.mem.add_subregion(r.root, 0, ram).unwrap();
    r.mem.set_log(ram, DirtyClient::Migration, true).unwrap();
    r.fake.guest_write(0x2000);
    r.mem.del_subregion(r.root, ram).unwrap();
    assert_eq!(r.dirty.dirty_pages(ram), vec![0x2000]);
}

#[test]
fn slot_limit_refuses_region_add_and_table_stays_true() {
    let mut r = rig_with(1, IoSpace::Mmio);
    let a = r.mem.create_ram("a", 0x1000).unwrap();
    let b = r.mem.create_ram("b", 0x1000).unwrap();
    r.mem.add_subregion(r.root, 0x1000, a).unwrap();
    let err = r.mem.add_subregion(r.root, 0x3000, b).unwrap_err();
    let CoreError::ListenerRefused { failures } = err else {
        panic!("expected ListenerRefused, got {err:?}");
    };
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].event, "region_add");
    assert_eq!(failures[0].range, Some((0x3000, 0x4000)));
    assert!(failures[0].message.contains("all 1 KVM memory slots"));
    assert_eq!(table_rows(&r.slots), kernel_rows(&r.fake));
    assert_eq!(r.slots.len(), 1);
    // The refused range is not held: removing it sends nothing, and the
    // freed number serves the next add.
    r.mem.del_subregion(r.root, b).unwrap();
    r.mem.del_subregion(r.root, a).unwrap();
    r.mem.add_subregion(r.root, 0x3000, b).unwrap();
    assert_in_step(&r);
}

#[test]
fn slot_overlapping_another_listeners_is_refused() {
    let pool = SlotPool::new(32);
    let mut r = rig_on(Arc::new(FakeKvm::new(32)), pool.clone(), IoSpace::Mmio);
    let ram = r.mem.create_ram("ram", 0x2000).unwrap();
    r.mem.add_subregion(r.root, 0x10000, ram).unwrap();
    // A second address space of the same VM, with its own listener drawing
    // from the same pool, maps RAM over the same guest pages.
    let other = KvmMemoryListener::with_kernel(r.fake.clone(), pool.clone(), PAGE);
    let other_slots = other.mem_slots();
    let root2 = r.mem.create_container("smm", 1 << 32).unwrap();
    let ram2 = r.mem.create_ram("smram", 0x1000).unwrap();
    r.mem.add_subregion(root2, 0x11000, ram2).unwrap();
    let as2 = r.mem.create_address_space("smm", root2).unwrap();
    let err = r
        .mem
        .register_listener(as2, other.config(), Box::new(other))
        .unwrap_err();
    let CoreError::ListenerRefused { failures } = err else {
        panic!("expected ListenerRefused, got {err:?}");
    };
    assert!(
        failures[0].message.contains("File exists"),
        "{}",
        failures[0].message
    );
    assert!(other_slots.is_empty());
    assert_eq!(pool.in_use(), 1, "the refused slot's number went back");
    assert_in_step(&r);
}

#[test]
fn misaligned_alias_is_refused() {
    let mut r = rig();
    let ram = r.mem.create_ram("ram", 0x10000).unwrap();
    let alias = r.mem.create_alias("odd", ram, 0x800, 0x4000).unwrap();
    let err = r.mem.add_subregion(r.root, 0x10000, alias).unwrap_err();
    assert!(matches!(err, CoreError::ListenerRefused { .. }));
    assert!(r.slots.is_empty());
}

#[test]
fn ioeventfd_is_assigned_then_deassigned() {
    let mut r = rig();
    let dev = r.mem.create_mmio("dev", 0x1000, Arc::new(NullOps)).unwrap();
    r.mem.add_subregion(r.root, 0xd0000, dev).unwrap();
    let n = Arc::new(EventFdNotifier::new().unwrap());
    let fd = Ioeventfd {
        addr: 0x40,
        size: 4,
        datamatch: Some(1),
        notifier: n.clone(),
    };
    r.mem.add_ioeventfd(dev, fd.clone()).unwrap();
    let held = r.fake.ioeventfds();
    assert_eq!(held.len(), 1);
    assert_eq!(
        (held[0].addr, held[0].len, held[0].datamatch, held[0].fd),
        (0xd0040, 4, 1, n.raw_fd().unwrap())
    );
    r.mem.del_ioeventfd(dev, &fd).unwrap();
    assert!(r.fake.ioeventfds().is_empty());
}

#[test]
fn ioeventfd_without_a_file_descriptor_is_refused() {
    struct Counter;
    impl EventNotifier for Counter {
        fn notify(&self) {}
    }
    let mut r = rig();
    let dev = r.mem.create_mmio("dev", 0x1000, Arc::new(NullOps)).unwrap();
    r.mem.add_subregion(r.root, 0xd0000, dev).unwrap();
    let fd = Ioeventfd {
        addr: 0,
        size: 4,
        datamatch: None,
        notifier: Arc::new(Counter),
    };
    let err = r.mem.add_ioeventfd(dev, fd).unwrap_err();
    let CoreError::ListenerRefused { failures } = err else {
        panic!("expected ListenerRefused");
    };
    assert_eq!(failures[0].event, "eventfd_add");
    assert!(r.fake.ioeventfds().is_empty());
}

#[test]
fn io_port_listener_makes_no_slots_and_flags_its_ioeventfds_pio() {
    let mut r = rig_with(32, IoSpace::Pio);
    let ram = r.mem.create_ram("odd", 0x1000).unwrap();
    r.mem.add_subregion(r.root, 0, ram).unwrap();
    assert!(r.fake.slots().is_empty());
    let port = r.mem.create_mmio("port", 4, Arc::new(NullOps)).unwrap();
    r.mem.add_subregion(r.root, 0x3f8, port).unwrap();
    let fd = Ioeventfd {
        addr: 0,
        size: 1,
        datamatch: None,
        notifier: Arc::new(EventFdNotifier::new().unwrap()),
    };
    r.mem.add_ioeventfd(port, fd).unwrap();
    let held = r.fake.ioeventfds();
    assert_eq!(held[0].addr, 0x3f8);
    assert_eq!(held[0].flags, 1 << kvm_bindings::kvm_ioeventfd_flag_nr_pio);
}

#[test]
fn replay_unregistration_deletes_every_slot() {
    let mut r = rig();
    let ram = r.mem.create_ram("ram", 0x4000).unwrap();
    r.mem.add_subregion(r.root, 0, ram).unwrap();
    let l = r
        .mem
        .unregister_listener(r.listener, Unregister::Replay)
        .unwrap();
    assert!(r.fake.slots().is_empty());
    drop(l);
}

#[test]
fn dropping_a_detached_listener_deletes_its_slots_and_ioeventfds() {
    let mut r = rig();
    let ram = r.mem.create_ram("ram", 0x4000).unwrap();
    r.mem.add_subregion(r.root, 0, ram).unwrap();
    let dev = r.mem.create_mmio("dev", 0x1000, Arc::new(NullOps)).unwrap();
    r.mem.add_subregion(r.root, 0xd0000, dev).unwrap();
    let fd = Ioeventfd {
        addr: 0,
        size: 0,
        datamatch: None,
        notifier: Arc::new(EventFdNotifier::new().unwrap()),
    };
    r.mem.add_ioeventfd(dev, fd).unwrap();
    let l = r
        .mem
        .unregister_listener(r.listener, Unregister::Detach)
        .unwrap();
    assert_eq!(r.fake.slots().len(), 1, "detach sends nothing");
    drop(l);
    assert!(r.fake.slots().is_empty());
    assert!(r.fake.ioeventfds().is_empty());
}

/// One random step of a topology walk.
#[derive(Debug, Clone)]
enum Op {
    Place(usize, u64),
    Remove(usize),
    Enable(usize, bool),
    Readonly(usize, bool),
    Log(usize, bool),
    Window(usize, u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..4usize, 0..64u64).prop_map(|(i, p)| Op::Place(i, p * 0x800)),
        (0..4usize).prop_map(Op::Remove),
        (0..4usize, any::<bool>()).prop_map(|(i, b)| Op::Enable(i, b)),
        (0..4usize, any::<bool>()).prop_map(|(i, b)| Op::Readonly(i, b)),
        (0..4usize, any::<bool>()).prop_map(|(i, b)| Op::Log(i, b)),
        (0..4usize, 0..8u64).prop_map(|(i, o)| Op::Window(i, o * 0x1000)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever the topology does, KVM holds exactly the slots the view
    /// calls for, and the listener's table says so.
    #[test]
    fn kernel_follows_the_view(ops in proptest::collection::vec(op(), 1..40), batch in 1..4usize) {
        let mut r = rig();
        let ram = r.mem.create_ram("ram", 0x10000).unwrap();
        let rom = r.mem.create_rom("rom", 0x8000).unwrap();
        // Two RAM windows, a ROM window and a whole ROM, at priorities
        // 0..3 so they overlap in every order.
        let parts = [
            r.mem.create_alias("w0", ram, 0, 0x4000).unwrap(),
            r.mem.create_alias("w1", ram, 0x8000, 0x6000).unwrap(),
            r.mem.create_alias("w2", rom, 0, 0x3000).unwrap(),
            rom,
        ];
        let mut placed = [false; 4];
        for chunk in ops.chunks(batch) {
            r.mem.begin();
            for op in chunk {
                match *op {
                    Op::Place(i, addr) => {
                        if placed[i] {
                            r.mem.set_address(parts[i], addr).unwrap();
                        } else {
                            r.mem.add_subregion_overlap(r.root, addr, parts[i], i as i32).unwrap();
                            placed[i] = true;
                        }
                    }
                    Op::Remove(i) if placed[i] => {
                        r.mem.del_subregion(r.root, parts[i]).unwrap();
                        placed[i] = false;
                    }
                    Op::Remove(_) => {}
                    Op::Enable(i, on) => r.mem.set_enabled(parts[i], on).unwrap(),
                    Op::Readonly(i, on) => r.mem.set_readonly(parts[i], on).unwrap(),
                    Op::Log(i, on) => r.mem.set_log(parts[i], DirtyClient::Vga, on).unwrap(),
                    Op::Window(i, off) if i < 3 => r.mem.set_alias_offset(parts[i], off).unwrap(),
                    Op::Window(..) => {}
                }
            }
            // Misaligned placements are refused; nothing else is.
            match r.mem.commit() {
                Ok(()) => {}
                Err(CoreError::ListenerRefused { failures }) => {
                    prop_assert!(failures.iter().all(|f| f.message.contains("different offsets")), "{failures:?}");
                }
                Err(e) => panic!("{e}"),
            }
            let kernel = kernel_rows(&r.fake);
            prop_assert_eq!(table_rows(&r.slots), kernel.clone());
            let got: Vec<_> = kernel.iter()
                .map(|&(_, gpa, size, host, flags)| (gpa, size, host, flags & KVM_MEM_READONLY != 0))
                .collect();
            prop_assert_eq!(got, wanted(&r.mem, r.as_id));
        }
    }
}
