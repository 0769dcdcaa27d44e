//! Which `i/o` regions map their own MMIO (terminate) and which are pure
//! containers; both print as `i/o` (see [`Hints`] for the sources).
//!
//! Without a flat dump: a region with subregions is a container, one
//! without is MMIO. With one, two steps:
//!
//! 1. a region with subregions terminates if its name owns ranges in the
//!    flat view of some address space whose root reaches it (through
//!    subregions and aliases, enabled or not);
//! 2. after building, a terminating region that renders ranges only in
//!    address spaces whose flat views do not show its name becomes a
//!    container, and the dump is built again. Each round only removes
//!    MMIO, so this ends.

use std::collections::{HashMap, HashSet};

use addrspace_core::RegionId;

use crate::build::Built;
use crate::dump::{Dump, Node};
use crate::hints::Hints;
use crate::region_type::RegionType;

/// True for slots that are `i/o` regions and not aliases.
fn is_io(dump: &Dump, nodes: &[&Node], slot: usize) -> bool {
    let node = nodes[dump.plan.slots[slot].line_index];
    node.alias.is_none() && node.kind.ty == RegionType::Io
}

/// Step 1: the `i/o` slots to make MMIO at first.
pub(crate) fn initial(dump: &Dump, nodes: &[&Node], hints: &Hints) -> HashSet<usize> {
    let slots = &dump.plan.slots;
    let mut mmio: HashSet<usize> = (0..slots.len())
        .filter(|&s| is_io(dump, nodes, s) && slots[s].children.is_empty())
        .collect();
    if !hints.has_flat() {
        return mmio;
    }
    for (block, &root) in dump.blocks.iter().zip(&dump.plan.block_roots) {
        for slot in reachable(dump, root) {
            let name = &nodes[slots[slot].line_index].name;
            let shown = block
                .names
                .iter()
                .any(|(_, space)| hints.owns_flat_ranges(space, name) == Some(true));
            if shown && is_io(dump, nodes, slot) {
                mmio.insert(slot);
            }
        }
    }
    mmio
}

/// Slots reachable from `root` through subregions and aliases.
fn reachable(dump: &Dump, root: usize) -> Vec<usize> {
    let slots = &dump.plan.slots;
    let mut seen = HashSet::from([root]);
    let mut stack = vec![root];
    let mut out = Vec::new();
    while let Some(slot) = stack.pop() {
        out.push(slot);
        for &next in slots[slot].children.iter().chain(&slots[slot].alias_target) {
            if seen.insert(next) {
                stack.push(next);
            }
        }
    }
    out
}

/// Step 2: MMIO slots that render ranges, but only where the flat dump
/// does not show their name.
pub(crate) fn unseen(
    dump: &Dump,
    nodes: &[&Node],
    hints: &Hints,
    built: &Built,
    regions: &[RegionId],
    mmio: &HashSet<usize>,
) -> Vec<usize> {
    let slot_of: HashMap<RegionId, usize> =
        regions.iter().enumerate().map(|(s, r)| (*r, s)).collect();
    // slot -> (shown in some flat view where it renders, missing from one)
    let mut seen: HashMap<usize, (bool, bool)> = HashMap::new();
    for (space, id) in built.address_spaces() {
        let Ok(view) = built.memory().view(*id) else {
            continue;
        };
        for range in &view.ranges {
            let Some(&slot) = slot_of.get(&range.region) else {
                continue;
            };
            if !mmio.contains(&slot) {
                continue;
            }
            let name = &nodes[dump.plan.slots[slot].line_index].name;
            let entry = seen.entry(slot).or_default();
            match hints.owns_flat_ranges(space, name) {
                Some(true) => entry.0 = true,
                Some(false) => entry.1 = true,
                None => {}
            }
        }
    }
    let mut out: Vec<usize> = seen
        .into_iter()
        .filter(|&(_, (shown, missing))| missing && !shown)
        .map(|(slot, _)| slot)
        .collect();
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse;

    const TEXT: &str = "\
address-space: memory
  0000000000000000-ffffffffffffffff (prio 0, i/o): system
    0000000000001000-0000000000001fff (prio 0, i/o): xscom-0

address-space: xscom-0
  0000000000000000-00000000ffffffff (prio 0, i/o): xscom-0
    0000000000000040-0000000000000047 (prio 0, i/o): ctrl

";
    const FLAT: &str = "\
FlatView #0
 AS \"memory\", root: system
 Root memory region: xscom-0
  0000000000001000-0000000000001fff (prio 0, i/o): xscom-0

FlatView #1
 AS \"xscom-0\", root: xscom-0
 Root memory region: xscom-0
  0000000000000040-0000000000000047 (prio 0, i/o): ctrl

";

    fn names(dump: &Dump, set: &HashSet<usize>) -> Vec<(usize, String)> {
        let nodes: Vec<&Node> = dump.nodes().collect();
        let mut out: Vec<(usize, String)> = set
            .iter()
            .map(|&s| {
                let n = nodes[dump.plan.slots[s].line_index];
                (n.line, n.name.clone())
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn without_flat_dump_only_childless_regions_are_mmio() {
        let dump = parse(TEXT).unwrap();
        let nodes: Vec<&Node> = dump.nodes().collect();
        let mmio = initial(&dump, &nodes, &Hints::new());
        assert_eq!(
            names(&dump, &mmio),
            [(3, "xscom-0".into()), (7, "ctrl".into())]
        );
    }

    #[test]
    fn a_name_counts_only_in_address_spaces_that_reach_the_region() {
        let dump = parse(TEXT).unwrap();
        let nodes: Vec<&Node> = dump.nodes().collect();
        let mmio = initial(&dump, &nodes, &Hints::from_flat(FLAT).unwrap());
        // The `xscom-0` root with children stays a container: its address
        // space's view does not show the name.
        assert_eq!(
            names(&dump, &mmio),
            [(3, "xscom-0".into()), (7, "ctrl".into())]
        );
    }
}
