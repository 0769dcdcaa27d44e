//! Property: any memory map printed by the tree printer parses, builds and
//! prints back to the same text.
//!
//! Maps are generated through the core API: containers, MMIO, RAM, ROM,
//! ROM devices and aliases with random sizes (empty and one-byte ones
//! included, as QEMU prints both as `start-start`), offsets, priorities,
//! enabled and non-volatile flags, subregions sticking out of their
//! parents, parentless regions with their own address, and address spaces
//! rooted anywhere (several may share a root). Names are unique: when
//! names repeat, identity can be genuinely ambiguous in QEMU's format.
//! Regions are kept inside the 64-bit space as printed (absolute address
//! plus size at most 2^64), as in every real machine.

use std::sync::Arc;

use addrspace_core::{AddressSpaceId, Memory, NullOps, RegionId, SIZE_2_64};
use addrspace_mtree::{build, parse, print_tree, Hints};
use proptest::prelude::*;

#[derive(Debug, Clone, Copy)]
enum KindSpec {
    Container,
    Mmio,
    Ram,
    Rom,
    RomDevice { romd: bool },
    Alias { target: usize, offset: u64 },
}

#[derive(Debug, Clone)]
struct RegionSpec {
    kind: KindSpec,
    size: u128,
    parent: Option<usize>,
    addr: u64,
    priority: i32,
    enabled: bool,
    nonvolatile: bool,
}

fn kind() -> impl Strategy<Value = KindSpec> {
    prop_oneof![
        3 => Just(KindSpec::Container),
        3 => Just(KindSpec::Mmio),
        1 => Just(KindSpec::Ram),
        1 => Just(KindSpec::Rom),
        1 => any::<bool>().prop_map(|romd| KindSpec::RomDevice { romd }),
        3 => (any::<usize>(), prop_oneof![Just(0u64), Just(0x10), Just(0x800)])
            .prop_map(|(target, offset)| KindSpec::Alias { target, offset }),
    ]
}

fn region() -> impl Strategy<Value = RegionSpec> {
    (
        kind(),
        prop_oneof![
            Just(0u128),
            Just(1),
            Just(0x10),
            Just(0x1000),
            Just(0x10000),
            Just(SIZE_2_64)
        ],
        proptest::option::weighted(0.8, any::<usize>()),
        prop_oneof![
            Just(0u64),
            Just(0x10),
            Just(0x800),
            Just(0x1000),
            Just(0xf000)
        ],
        -2i32..=2,
        proptest::bool::weighted(0.85),
        proptest::bool::weighted(0.1),
    )
        .prop_map(
            |(kind, size, parent, addr, priority, enabled, nonvolatile)| RegionSpec {
                kind,
                size,
                parent,
                addr,
                priority,
                enabled,
                nonvolatile,
            },
        )
}

/// Builds the map, skipping whatever the core refuses (cycles, empty RAM,
/// ...): the property is about what the printer can print.
fn make(specs: &[RegionSpec], roots: &[usize]) -> (Memory, Vec<AddressSpaceId>) {
    let mut mem = Memory::new();
    // A machine-like start: `system`, a container of the whole space.
    let system = mem.create_container("system", SIZE_2_64).unwrap();
    let mut ids: Vec<RegionId> = vec![system];
    // Absolute printed start of each region that has one.
    let mut absolute: Vec<Option<u64>> = vec![Some(0)];
    // Placed regions that may take subregions.
    let mut parents: Vec<usize> = vec![0];
    for (i, s) in specs.iter().enumerate() {
        let i = i + 1;
        let name = format!("r{i}");
        let ram_size = s.size.clamp(1, 0x10000);
        let made = match s.kind {
            KindSpec::Alias { target, offset } if !ids.is_empty() => {
                let offset = if s.size == SIZE_2_64 { 0 } else { offset };
                mem.create_alias(&name, ids[target % ids.len()], offset, s.size)
            }
            KindSpec::Container | KindSpec::Alias { .. } => mem.create_container(&name, s.size),
            KindSpec::Mmio => mem.create_mmio(&name, s.size, Arc::new(NullOps)),
            KindSpec::Ram => mem.create_ram(&name, ram_size),
            KindSpec::Rom => mem.create_rom(&name, ram_size),
            KindSpec::RomDevice { romd } => mem
                .create_rom_device(&name, ram_size, Arc::new(NullOps))
                .and_then(|id| {
                    mem.set_romd_mode(id, romd)?;
                    Ok(id)
                }),
        };
        let id = made.expect("every generated region is valid");
        let size = mem.region(id).unwrap().size();
        let mut placed = None;
        if let Some(p) = s.parent.map(|p| parents[p % parents.len()]) {
            let fits =
                absolute[p].is_some_and(|base| base as u128 + s.addr as u128 + size <= SIZE_2_64);
            if fits
                && mem
                    .add_subregion_overlap(ids[p], s.addr, id, s.priority)
                    .is_ok()
            {
                placed = absolute[p].map(|base| base + s.addr);
            }
        } else if s.addr as u128 + size <= SIZE_2_64 {
            mem.set_address(id, s.addr).unwrap();
            mem.set_priority(id, s.priority).unwrap();
            placed = Some(s.addr);
        }
        mem.set_enabled(id, s.enabled).unwrap();
        mem.set_nonvolatile(id, s.nonvolatile).unwrap();
        if placed.is_some() && !matches!(s.kind, KindSpec::Alias { .. }) {
            parents.push(i);
        }
        ids.push(id);
        absolute.push(placed);
    }
    let spaces = roots
        .iter()
        .enumerate()
        .filter(|(_, &r)| absolute[r % ids.len()].is_some())
        .map(|(n, &r)| {
            mem.create_address_space(&format!("as{n}"), ids[r % ids.len()])
                .unwrap()
        })
        .collect();
    (mem, spaces)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn printed_tree_parses_builds_and_prints_back_identically(
        specs in proptest::collection::vec(region(), 1..24),
        roots in proptest::collection::vec(prop_oneof![Just(0usize), any::<usize>()], 1..4),
    ) {
        let (mem, spaces) = make(&specs, &roots);
        let text = print_tree(&mem, &spaces).unwrap();
        let dump = parse(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        let built = build(&dump, &Hints::new()).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        let again = print_tree(built.memory(), &built.space_ids()).unwrap();
        prop_assert_eq!(again, text);
    }
}
