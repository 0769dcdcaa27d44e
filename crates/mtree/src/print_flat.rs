//! Printing flat views as `info mtree -f` prints them.
//!
//! One `FlatView #n` block per shared view: address spaces whose roots
//! resolve to the same region ([`FlatView::root`]) share one, listed in
//! the order their first address space was created (QEMU's order comes
//! from a hash table; [`compare_flat`](crate::compare_flat) ignores it).
//! Each block lists ` AS "NAME", root: ROOT` (`, alias TARGET` when the
//! root is an alias), ` Root memory region: NAME` (or `(none)`), then one
//! line per range:
//!
//! ```text
//!   START-LAST (prio P, [nv-]TYPE): NAME[ @OFFSET]
//! ```
//!
//! where `P` is the serving region's own priority, `TYPE` is `rom` for a
//! read-only range and the region's type otherwise, and `OFFSET` (16
//! digits) appears when the range does not start at the region's offset 0.
//! A view without ranges prints `  No rendered FlatView`. Every block ends
//! with a blank line.

use std::fmt::Write;
use std::sync::Arc;

use addrspace_core::{AddressSpaceId, Error, FlatRange, FlatView, Memory, RegionId};

use crate::dump::Kind;
use crate::line::Range;
use crate::region_type::RegionType;

/// Prints the committed flat views of `spaces` in `info mtree -f` format.
pub fn print_flat(mem: &Memory, spaces: &[AddressSpaceId]) -> Result<String, Error> {
    let mut views: Vec<(Option<RegionId>, Arc<FlatView>, Vec<AddressSpaceId>)> = Vec::new();
    for &space in spaces {
        let view = mem.view(space)?;
        match views.iter_mut().find(|(root, _, _)| *root == view.root) {
            Some((_, _, members)) => members.push(space),
            None => views.push((view.root, view, vec![space])),
        }
    }
    let mut out = String::new();
    for (n, (root, view, members)) in views.iter().enumerate() {
        writeln!(out, "FlatView #{n}").expect("writing to a String");
        for &space in members {
            let root_region = mem.region(mem.address_space_root(space)?)?;
            write!(
                out,
                " AS \"{}\", root: {}",
                mem.address_space_name(space)?,
                root_region.name()
            )
            .expect("writing to a String");
            if let Some((target, _)) = root_region.alias() {
                write!(out, ", alias {}", mem.region(target)?.name()).expect("writing to a String");
            }
            out.push('\n');
        }
        let root_name = match root {
            Some(id) => mem.region(*id)?.name(),
            None => "(none)",
        };
        writeln!(out, " Root memory region: {root_name}").expect("writing to a String");
        if view.ranges.is_empty() {
            out.push_str("  No rendered FlatView\n\n");
            continue;
        }
        for range in &view.ranges {
            range_line(mem, range, &mut out)?;
        }
        out.push('\n');
    }
    Ok(out)
}

fn range_line(mem: &Memory, range: &FlatRange, out: &mut String) -> Result<(), Error> {
    let region = mem.region(range.region)?;
    let ty = if range.readonly {
        RegionType::Rom
    } else {
        RegionType::of_kind(region)
    };
    let kind = Kind {
        nonvolatile: range.nonvolatile,
        ty,
    };
    write!(
        out,
        "  {} (prio {}, {kind}): {}",
        Range(range.start, range.last),
        region.priority(),
        region.name()
    )
    .expect("writing to a String");
    if range.offset_in_region != 0 {
        write!(out, " @{:016x}", range.offset_in_region).expect("writing to a String");
    }
    out.push('\n');
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use addrspace_core::{NullOps, SIZE_2_64};

    use super::*;

    #[test]
    fn prints_ranges_with_offsets_types_and_priorities() {
        let mut mem = Memory::new();
        let system = mem.create_container("system", SIZE_2_64).unwrap();
        let ram = mem.create_ram("pc.ram", 0x2000).unwrap();
        let io = mem.create_mmio("dev", 0x1000, Arc::new(NullOps)).unwrap();
        let ro = mem.create_alias("pam-rom", ram, 0x1000, 0x1000).unwrap();
        mem.set_readonly(ro, true).unwrap();
        mem.add_subregion(system, 0, ram).unwrap();
        mem.add_subregion_overlap(system, 0x1000, ro, 1).unwrap();
        mem.add_subregion_overlap(system, 0x4000, io, 3).unwrap();
        let space = mem.create_address_space("memory", system).unwrap();
        let text = print_flat(&mem, &[space]).unwrap();
        assert_eq!(
            text,
            "\
FlatView #0
 AS \"memory\", root: system
 Root memory region: system
  0000000000000000-0000000000000fff (prio 0, ram): pc.ram
  0000000000001000-0000000000001fff (prio 0, rom): pc.ram @0000000000001000
  0000000000004000-0000000000004fff (prio 3, i/o): dev

"
        );
    }

    #[test]
    fn views_are_named_by_their_resolved_root_and_empty_views_say_so() {
        let mut mem = Memory::new();
        let system = mem.create_container("system", SIZE_2_64).unwrap();
        let ram = mem.create_ram("ram", 0x1000).unwrap();
        mem.add_subregion(system, 0, ram).unwrap();
        let bus = mem
            .create_container("bus master container", SIZE_2_64)
            .unwrap();
        let alias = mem
            .create_alias("bus master", system, 0, SIZE_2_64)
            .unwrap();
        mem.add_subregion(bus, 0, alias).unwrap();
        mem.set_enabled(alias, false).unwrap();
        let memory = mem.create_address_space("memory", system).unwrap();
        let dev = mem.create_address_space("dev", bus).unwrap();
        let direct = mem.create_address_space("direct", alias).unwrap();
        let text = print_flat(&mem, &[memory, dev, direct]).unwrap();
        assert_eq!(
            text,
            "\
FlatView #0
 AS \"memory\", root: system
 Root memory region: ram
  0000000000000000-0000000000000fff (prio 0, ram): ram

FlatView #1
 AS \"dev\", root: bus master container
 AS \"direct\", root: bus master, alias system
 Root memory region: (none)
  No rendered FlatView

"
        );
    }
}
