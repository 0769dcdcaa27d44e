//! One test per rendering rule.

use std::sync::Arc;

use crate::{Memory, NullOps, RegionId, SIZE_2_64};

/// `(start, last, region name, offset in region, readonly)` per range.
fn flat(mem: &Memory, root: RegionId) -> Vec<(u64, u64, String, u64, bool)> {
    let as_id = mem
        .address_spaces()
        .find(|a| mem.address_space_root(*a).unwrap() == root)
        .unwrap();
    mem.view(as_id)
        .unwrap()
        .ranges
        .iter()
        .map(|r| {
            (
                r.start,
                r.last,
                mem.region(r.region).unwrap().name().to_owned(),
                r.offset_in_region,
                r.readonly,
            )
        })
        .collect()
}

fn machine() -> (Memory, RegionId) {
    let mut mem = Memory::new();
    let root = mem.create_container("root", SIZE_2_64).unwrap();
    mem.create_address_space("as", root).unwrap();
    (mem, root)
}

fn mmio(mem: &mut Memory, name: &str, size: u128) -> RegionId {
    mem.create_mmio(name, size, Arc::new(NullOps)).unwrap()
}

fn r(start: u64, last: u64, name: &str, off: u64) -> (u64, u64, String, u64, bool) {
    (start, last, name.to_owned(), off, false)
}

#[test]
fn disabled_region_hides_its_subtree() {
    let (mut mem, root) = machine();
    let bus = mem.create_container("bus", 0x1000).unwrap();
    let dev = mmio(&mut mem, "dev", 0x100);
    mem.add_subregion(bus, 0, dev).unwrap();
    mem.add_subregion(root, 0x1000, bus).unwrap();
    mem.set_enabled(bus, false).unwrap();
    assert!(flat(&mem, root).is_empty());
    mem.set_enabled(bus, true).unwrap();
    assert_eq!(flat(&mem, root), vec![r(0x1000, 0x10ff, "dev", 0)]);
}

#[test]
fn higher_priority_sibling_wins_overlap() {
    let (mut mem, root) = machine();
    let low = mmio(&mut mem, "low", 0x1000);
    let high = mmio(&mut mem, "high", 0x100);
    mem.add_subregion_overlap(root, 0, high, 1).unwrap();
    mem.add_subregion_overlap(root, 0, low, 0).unwrap();
    assert_eq!(
        flat(&mem, root),
        vec![r(0, 0xff, "high", 0), r(0x100, 0xfff, "low", 0x100)]
    );
}

#[test]
fn most_recent_of_equal_priority_wins() {
    let (mut mem, root) = machine();
    let first = mmio(&mut mem, "first", 0x100);
    let second = mmio(&mut mem, "second", 0x100);
    mem.add_subregion(root, 0, first).unwrap();
    mem.add_subregion(root, 0x80, second).unwrap();
    assert_eq!(
        flat(&mem, root),
        vec![r(0, 0x7f, "first", 0), r(0x80, 0x17f, "second", 0)]
    );
}

#[test]
fn moving_a_region_makes_it_most_recent() {
    let (mut mem, root) = machine();
    let a = mmio(&mut mem, "a", 0x100);
    let b = mmio(&mut mem, "b", 0x100);
    mem.add_subregion(root, 0, a).unwrap();
    mem.add_subregion(root, 0, b).unwrap();
    mem.set_address(a, 0).unwrap();
    assert_eq!(flat(&mem, root), vec![r(0, 0xff, "a", 0)]);
}

#[test]
fn child_is_clipped_to_parent_window() {
    let (mut mem, root) = machine();
    let bus = mem.create_container("bus", 0x100).unwrap();
    let dev = mmio(&mut mem, "dev", 0x1000);
    mem.add_subregion(bus, 0x80, dev).unwrap();
    mem.add_subregion(root, 0x1000, bus).unwrap();
    assert_eq!(flat(&mem, root), vec![r(0x1080, 0x10ff, "dev", 0)]);
}

#[test]
fn region_reaching_2_64_renders_up_to_the_last_address() {
    let (mut mem, root) = machine();
    let top = mmio(&mut mem, "top", 0x1000);
    mem.add_subregion(root, u64::MAX - 0xfff, top).unwrap();
    assert_eq!(
        flat(&mem, root),
        vec![r(u64::MAX - 0xfff, u64::MAX, "top", 0)]
    );
}

#[test]
fn whole_space_region_renders_as_one_range() {
    let (mut mem, root) = machine();
    let all = mmio(&mut mem, "all", SIZE_2_64);
    mem.add_subregion(root, 0, all).unwrap();
    assert_eq!(flat(&mem, root), vec![r(0, u64::MAX, "all", 0)]);
}

#[test]
fn alias_shows_target_window_shifted() {
    let (mut mem, root) = machine();
    let ram = mem.create_ram("ram", 0x10000).unwrap();
    let alias = mem.create_alias("hi", ram, 0x8000, 0x4000).unwrap();
    mem.add_subregion(root, 0x100000, alias).unwrap();
    assert_eq!(flat(&mem, root), vec![r(0x100000, 0x103fff, "ram", 0x8000)]);
}

#[test]
fn alias_ignores_targets_own_address() {
    let (mut mem, root) = machine();
    let ram = mem.create_ram("ram", 0x1000).unwrap();
    mem.add_subregion(root, 0x5000, ram).unwrap();
    let alias = mem.create_alias("win", ram, 0, 0x1000).unwrap();
    mem.add_subregion(root, 0x9000, alias).unwrap();
    assert_eq!(
        flat(&mem, root),
        vec![r(0x5000, 0x5fff, "ram", 0), r(0x9000, 0x9fff, "ram", 0)]
    );
}

#[test]
fn alias_of_alias_composes_offsets() {
    let (mut mem, root) = machine();
    let ram = mem.create_ram("ram", 0x10000).unwrap();
    let inner = mem.create_alias("inner", ram, 0x4000, 0x8000).unwrap();
    let outer = mem.create_alias("outer", inner, 0x1000, 0x2000).unwrap();
    mem.add_subregion(root, 0x20000, outer).unwrap();
    assert_eq!(flat(&mem, root), vec![r(0x20000, 0x21fff, "ram", 0x5000)]);
}

#[test]
fn alias_window_past_target_end_shows_only_target() {
    let (mut mem, root) = machine();
    let ram = mem.create_ram("ram", 0x1000).unwrap();
    let alias = mem.create_alias("wide", ram, 0x800, 0x1000).unwrap();
    mem.add_subregion(root, 0, alias).unwrap();
    assert_eq!(flat(&mem, root), vec![r(0, 0x7ff, "ram", 0x800)]);
}

#[test]
fn readonly_is_inherited_through_aliases_and_containers() {
    let (mut mem, root) = machine();
    let ram = mem.create_ram("ram", 0x1000).unwrap();
    let alias = mem.create_alias("ro-view", ram, 0, 0x1000).unwrap();
    mem.set_readonly(alias, true).unwrap();
    let bus = mem.create_container("bus", 0x2000).unwrap();
    mem.add_subregion(bus, 0, alias).unwrap();
    mem.add_subregion(root, 0, bus).unwrap();
    let view = flat(&mem, root);
    assert_eq!(view, vec![(0, 0xfff, "ram".to_owned(), 0, true)]);
}

#[test]
fn nonvolatile_and_unmergeable_are_inherited() {
    let (mut mem, root) = machine();
    let bus = mem.create_container("bus", 0x2000).unwrap();
    let ram = mem.create_ram("ram", 0x1000).unwrap();
    mem.add_subregion(bus, 0, ram).unwrap();
    mem.add_subregion(root, 0, bus).unwrap();
    mem.set_nonvolatile(bus, true).unwrap();
    mem.set_unmergeable(bus, true).unwrap();
    let as_id = mem.address_spaces().next().unwrap();
    let range = mem.view(as_id).unwrap().ranges[0];
    assert!(range.nonvolatile && range.unmergeable);
}

#[test]
fn terminating_region_fills_gaps_around_its_subregions() {
    let (mut mem, root) = machine();
    let io = mmio(&mut mem, "io", 0x100);
    let dev = mmio(&mut mem, "dev", 0x10);
    mem.add_subregion(io, 0x20, dev).unwrap();
    mem.add_subregion(root, 0x1000, io).unwrap();
    assert_eq!(
        flat(&mem, root),
        vec![
            r(0x1000, 0x101f, "io", 0),
            r(0x1020, 0x102f, "dev", 0),
            r(0x1030, 0x10ff, "io", 0x30)
        ]
    );
}

#[test]
fn container_leaves_its_gaps_to_lower_priority_siblings() {
    let (mut mem, root) = machine();
    let bus = mem.create_container("bus", 0x1000).unwrap();
    let dev = mmio(&mut mem, "dev", 0x100);
    mem.add_subregion(bus, 0x100, dev).unwrap();
    let background = mmio(&mut mem, "bg", 0x1000);
    mem.add_subregion_overlap(root, 0, bus, 1).unwrap();
    mem.add_subregion_overlap(root, 0, background, 0).unwrap();
    assert_eq!(
        flat(&mem, root),
        vec![
            r(0, 0xff, "bg", 0),
            r(0x100, 0x1ff, "dev", 0),
            r(0x200, 0xfff, "bg", 0x200)
        ]
    );
}

#[test]
fn adjacent_ranges_of_one_region_merge() {
    let (mut mem, root) = machine();
    let ram = mem.create_ram("ram", 0x2000).unwrap();
    let lo = mem.create_alias("lo", ram, 0, 0x1000).unwrap();
    let hi = mem.create_alias("hi", ram, 0x1000, 0x1000).unwrap();
    mem.add_subregion(root, 0, lo).unwrap();
    mem.add_subregion(root, 0x1000, hi).unwrap();
    assert_eq!(flat(&mem, root), vec![r(0, 0x1fff, "ram", 0)]);
}

#[test]
fn adjacent_ranges_with_discontiguous_offsets_stay_apart() {
    let (mut mem, root) = machine();
    let ram = mem.create_ram("ram", 0x2000).unwrap();
    let lo = mem.create_alias("lo", ram, 0x1000, 0x1000).unwrap();
    let hi = mem.create_alias("hi", ram, 0, 0x1000).unwrap();
    mem.add_subregion(root, 0, lo).unwrap();
    mem.add_subregion(root, 0x1000, hi).unwrap();
    assert_eq!(
        flat(&mem, root),
        vec![r(0, 0xfff, "ram", 0x1000), r(0x1000, 0x1fff, "ram", 0)]
    );
}

#[test]
fn unmergeable_neighbours_stay_apart() {
    let (mut mem, root) = machine();
    let ram = mem.create_ram("ram", 0x2000).unwrap();
    let lo = mem.create_alias("lo", ram, 0, 0x1000).unwrap();
    let hi = mem.create_alias("hi", ram, 0x1000, 0x1000).unwrap();
    mem.add_subregion(root, 0, lo).unwrap();
    mem.add_subregion(root, 0x1000, hi).unwrap();
    mem.set_unmergeable(ram, true).unwrap();
    assert_eq!(flat(&mem, root).len(), 2);
}

#[test]
fn address_spaces_with_the_same_resolved_root_share_a_view() {
    let mut mem = Memory::new();
    let system = mem.create_container("system", SIZE_2_64).unwrap();
    let ram = mem.create_ram("ram", 0x1000).unwrap();
    let dev = mmio(&mut mem, "dev", 0x1000);
    mem.add_subregion(system, 0, ram).unwrap();
    mem.add_subregion(system, 0x10000, dev).unwrap();
    let bm_root = mem
        .create_container("bus master container", SIZE_2_64)
        .unwrap();
    let bm = mem
        .create_alias("bus master", system, 0, SIZE_2_64)
        .unwrap();
    mem.add_subregion(bm_root, 0, bm).unwrap();
    let cpu = mem.create_address_space("memory", system).unwrap();
    let dev_as = mem.create_address_space("dev", bm_root).unwrap();
    let (a, b) = (mem.view(cpu).unwrap(), mem.view(dev_as).unwrap());
    assert_eq!(a.root, Some(system));
    assert_eq!(b.root, Some(system));
    assert_eq!(a.ranges, b.ranges);
}

#[test]
fn lone_full_child_at_zero_becomes_the_shared_root() {
    let mut mem = Memory::new();
    let system = mem.create_container("system", SIZE_2_64).unwrap();
    let ram = mem.create_ram("ram", 0x1000).unwrap();
    mem.add_subregion(system, 0, ram).unwrap();
    let cpu = mem.create_address_space("memory", system).unwrap();
    assert_eq!(mem.view(cpu).unwrap().root, Some(ram));
}

/// An x86-style SMM machine: the SMM address space's root holds an SMRAM
/// window at priority 1 over a full alias of system memory; SMRAM's low
/// window (RAM where the CPU sees VGA) is closed.
struct Smm {
    mem: Memory,
    cpu: crate::AddressSpaceId,
    smm: crate::AddressSpaceId,
    system: RegionId,
    ram: RegionId,
    smram: RegionId,
    low: RegionId,
}

fn smm_machine() -> Smm {
    let mut mem = Memory::new();
    let system = mem.create_container("system", SIZE_2_64).unwrap();
    let ram = mem.create_ram("pc.ram", 0x10_0000).unwrap();
    let vga = mmio(&mut mem, "vga", 0x2_0000);
    mem.add_subregion(system, 0, ram).unwrap();
    mem.add_subregion_overlap(system, 0xa_0000, vga, 1).unwrap();
    let smram = mem.create_container("smram", 0x1_0000_0000).unwrap();
    let low = mem
        .create_alias("smram-low", ram, 0xa_0000, 0x2_0000)
        .unwrap();
    mem.add_subregion(smram, 0xa_0000, low).unwrap();
    mem.set_enabled(low, false).unwrap();
    let smm_root = mem.create_container("memory", SIZE_2_64).unwrap();
    let window = mem.create_alias("smram", smram, 0, 0x1_0000_0000).unwrap();
    let below = mem.create_alias("memory", system, 0, SIZE_2_64).unwrap();
    mem.add_subregion_overlap(smm_root, 0, window, 1).unwrap();
    mem.add_subregion(smm_root, 0, below).unwrap();
    let cpu = mem.create_address_space("memory", system).unwrap();
    let smm = mem.create_address_space("cpu-smm", smm_root).unwrap();
    Smm {
        mem,
        cpu,
        smm,
        system,
        ram,
        smram,
        low,
    }
}

/// `+name` / `-name` for each `region_add` / `region_del` in `events`.
fn adds_and_dels(mem: &Memory, events: &[crate::recorder::Event]) -> Vec<String> {
    use crate::recorder::Event;
    events
        .iter()
        .filter_map(|e| match e {
            Event::RegionAdd(r) => Some(format!("+{}", mem.region(r.region).unwrap().name())),
            Event::RegionDel(r) => Some(format!("-{}", mem.region(r.region).unwrap().name())),
            _ => None,
        })
        .collect()
}

#[test]
fn smm_space_shares_the_system_view_while_smram_is_closed() {
    let Smm {
        mut mem,
        cpu,
        smm,
        system,
        low,
        ..
    } = smm_machine();
    assert_eq!(mem.view(smm).unwrap().root, Some(system));
    assert!(Arc::ptr_eq(
        &mem.view(cpu).unwrap(),
        &mem.view(smm).unwrap()
    ));
    assert_eq!(mem.view_count(), 1);

    let log = crate::recorder::EventLog::new();
    let rec = Box::new(crate::recorder::Recorder::new("smm", &log));
    mem.register_listener(smm, crate::ListenerConfig::new("smm"), rec)
        .unwrap();
    log.take();
    // Opening SMRAM: the SMM space gets a view of its own, with RAM where
    // the CPU sees VGA, and its listener hears that change.
    mem.set_enabled(low, true).unwrap();
    let view = mem.view(smm).unwrap();
    assert_ne!(view.root, Some(system));
    assert_eq!(mem.view_count(), 2);
    let name_at = |mem: &Memory, space, addr| {
        let r = mem.view(space).unwrap().lookup(addr).unwrap().region;
        mem.region(r).unwrap().name().to_owned()
    };
    assert_eq!(name_at(&mem, smm, 0xa_0000), "pc.ram");
    assert_eq!(name_at(&mem, cpu, 0xa_0000), "vga");
    let opened = adds_and_dels(&mem, &log.events_of("smm"));
    log.take();
    assert!(opened.contains(&"-vga".to_owned()), "{opened:?}");
    assert!(opened.contains(&"+pc.ram".to_owned()), "{opened:?}");
    // Closing it again: sharing again, and the listener hears the way
    // back.
    mem.set_enabled(low, false).unwrap();
    assert!(Arc::ptr_eq(
        &mem.view(cpu).unwrap(),
        &mem.view(smm).unwrap()
    ));
    assert_eq!(mem.view_count(), 1);
    let closed = adds_and_dels(&mem, &log.events_of("smm"));
    assert!(closed.contains(&"+vga".to_owned()), "{closed:?}");
    assert_eq!(name_at(&mem, smm, 0xa_0000), "vga");
}

#[test]
fn a_window_too_large_to_prove_empty_keeps_a_view_of_its_own() {
    // More closed windows than the walk looks at: it cannot tell that
    // SMRAM renders nothing, so the SMM space renders a view of its own,
    // with the same ranges.
    let Smm {
        mut mem,
        cpu,
        smm,
        system,
        ram,
        smram,
        ..
    } = smm_machine();
    mem.begin();
    for i in 0..40u64 {
        let w = mem.create_alias(&format!("w{i}"), ram, 0, 0x1000).unwrap();
        mem.add_subregion(smram, 0x10_0000 + i * 0x1000, w).unwrap();
        mem.set_enabled(w, false).unwrap();
    }
    mem.commit().unwrap();
    let (a, b) = (mem.view(cpu).unwrap(), mem.view(smm).unwrap());
    assert_eq!(a.root, Some(system));
    assert_ne!(b.root, Some(system));
    assert_eq!(a.ranges, b.ranges);
}

#[test]
fn a_window_opened_deep_inside_smram_ends_the_sharing() {
    // The open window sits two containers down: a change there touches
    // only its own parent, which the walk watched.
    let Smm {
        mut mem,
        smm,
        system,
        ram,
        smram,
        ..
    } = smm_machine();
    let outer = mem.create_container("tseg", 0x10_0000).unwrap();
    let inner = mem.create_container("tseg-inner", 0x10_0000).unwrap();
    let w = mem.create_alias("tseg-window", ram, 0, 0x1000).unwrap();
    mem.add_subregion(inner, 0, w).unwrap();
    mem.set_enabled(w, false).unwrap();
    mem.add_subregion(outer, 0, inner).unwrap();
    mem.add_subregion(smram, 0x800_0000, outer).unwrap();
    assert_eq!(mem.view(smm).unwrap().root, Some(system));
    mem.set_enabled(w, true).unwrap();
    let view = mem.view(smm).unwrap();
    assert_ne!(view.root, Some(system));
    let at = view.lookup(0x800_0000).unwrap();
    assert_eq!(mem.region(at.region).unwrap().name(), "pc.ram");
}

#[test]
fn root_walks_do_not_watch_a_busy_bus_next_to_ram() {
    // System memory holds RAM at 0 and a bus of devices: the walk of
    // every bus-master space tries RAM as the stand-in and fails on the
    // bus. Watching the bus for that "no" would send every BAR change to
    // the root walks of all those spaces.
    let mut mem = Memory::new();
    let system = mem.create_container("system", SIZE_2_64).unwrap();
    let ram = mem.create_ram("ram", 0x4000_0000).unwrap();
    let bus = mem.create_container("bus0", 0x10_0000).unwrap();
    let bar = mmio(&mut mem, "bar", 0x1000);
    mem.add_subregion(bus, 0, bar).unwrap();
    mem.add_subregion(system, 0, ram).unwrap();
    mem.add_subregion(system, 0x1_0000_0000, bus).unwrap();
    let bm_root = mem.create_container("bmc", SIZE_2_64).unwrap();
    let bm = mem
        .create_alias("bus master", system, 0, SIZE_2_64)
        .unwrap();
    mem.add_subregion(bm_root, 0, bm).unwrap();
    let dev = mem.create_address_space("dev", bm_root).unwrap();
    assert_eq!(mem.view(dev).unwrap().root, Some(system));
    assert!(!mem.chain_index.contains_key(&bus));
    assert!(!mem.chain_index.contains_key(&bar));
    // An SMRAM-style window over the bus-master alias is watched, though:
    // it may close and let the space share again.
    let smram = mem.create_container("smram", 0x10_0000).unwrap();
    let low = mem.create_alias("low", ram, 0, 0x1000).unwrap();
    mem.add_subregion(smram, 0, low).unwrap();
    let window = mem.create_alias("window", smram, 0, 0x10_0000).unwrap();
    mem.add_subregion_overlap(bm_root, 0, window, 1).unwrap();
    assert_ne!(mem.view(dev).unwrap().root, Some(system));
    assert!(mem.chain_index.contains_key(&smram));
    assert!(!mem.chain_index.contains_key(&bus));
    mem.set_enabled(low, false).unwrap();
    assert_eq!(mem.view(dev).unwrap().root, Some(system));
}

#[test]
fn address_space_with_disabled_root_alias_has_no_view() {
    let mut mem = Memory::new();
    let system = mem.create_container("system", SIZE_2_64).unwrap();
    let bm_root = mem.create_container("bmc", SIZE_2_64).unwrap();
    let bm = mem
        .create_alias("bus master", system, 0, SIZE_2_64)
        .unwrap();
    mem.add_subregion(bm_root, 0, bm).unwrap();
    mem.set_enabled(bm, false).unwrap();
    let dev = mem.create_address_space("dev", bm_root).unwrap();
    let view = mem.view(dev).unwrap();
    assert_eq!(view.root, None);
    assert!(view.ranges.is_empty());
}

#[test]
fn rom_device_leaves_romd_mode_as_a_new_range() {
    let (mut mem, root) = machine();
    let flash = mem
        .create_rom_device("flash", 0x1000, Arc::new(NullOps))
        .unwrap();
    mem.add_subregion(root, 0, flash).unwrap();
    let as_id = mem.address_spaces().next().unwrap();
    assert!(mem.view(as_id).unwrap().ranges[0].romd_mode);
    mem.set_romd_mode(flash, false).unwrap();
    assert!(!mem.view(as_id).unwrap().ranges[0].romd_mode);
}

#[test]
fn root_is_placed_at_zero_whatever_its_address() {
    let mut mem = Memory::new();
    let outer = mem.create_container("outer", SIZE_2_64).unwrap();
    let inner = mem.create_container("inner", 0x10000).unwrap();
    let dev = mmio(&mut mem, "dev", 0x100);
    mem.add_subregion(inner, 0x100, dev).unwrap();
    mem.add_subregion(outer, 0x8000, inner).unwrap();
    let as_id = mem.create_address_space("inner-as", inner).unwrap();
    assert_eq!(mem.view(as_id).unwrap().ranges[0].start, 0x100);
}

#[test]
fn view_reader_caches_hits_and_follows_commits() {
    let (mut mem, root) = machine();
    let dev = mmio(&mut mem, "dev", 0x100);
    mem.add_subregion(root, 0x1000, dev).unwrap();
    let as_id = mem.address_spaces().next().unwrap();
    let mut reader = crate::ViewReader::new(mem.view_handle(as_id).unwrap());
    assert_eq!(reader.lookup(0x1010).map(|r| r.region), Some(dev));
    assert_eq!(reader.lookup(0x10ff).map(|r| r.region), Some(dev));
    mem.set_address(dev, 0x2000).unwrap();
    // Still the old view until refreshed.
    assert_eq!(reader.lookup(0x1010).map(|r| r.region), Some(dev));
    reader.refresh();
    assert_eq!(reader.lookup(0x1010), None);
    assert_eq!(reader.lookup(0x2010).map(|r| r.region), Some(dev));
}

#[test]
fn reprioritized_sibling_is_reordered_and_removable() {
    let (mut mem, root) = machine();
    let a = mmio(&mut mem, "a", 0x100);
    let b = mmio(&mut mem, "b", 0x100);
    mem.add_subregion_overlap(root, 0, a, 0).unwrap();
    mem.add_subregion_overlap(root, 0, b, 0).unwrap();
    assert_eq!(flat(&mem, root), vec![r(0, 0xff, "b", 0)]);
    mem.set_priority(a, 2).unwrap();
    assert_eq!(flat(&mem, root), vec![r(0, 0xff, "a", 0)]);
    mem.del_subregion(root, a).unwrap();
    assert_eq!(flat(&mem, root), vec![r(0, 0xff, "b", 0)]);
    // Without a parent the priority is only recorded.
    mem.set_priority(a, 5).unwrap();
    assert_eq!(mem.region(a).unwrap().priority(), 5);
}
