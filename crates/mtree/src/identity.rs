//! Which printed lines are the same region.
//!
//! QEMU prints a region once for every printed tree that contains it: as
//! the root of its address-space block, as the root of its
//! `memory-region:` section when an alias shows it, and inside each
//! printing of its parent. The text names regions only by (non-unique)
//! names, so identity is inferred from what QEMU's printer guarantees:
//!
//! - each block's root is a different region (QEMU groups address spaces
//!   by root), and so is each section's (QEMU queues each alias target
//!   once);
//! - the root line of a tree shows the region's own offset in its parent
//!   and its own priority, exactly as a line inside the parent's tree does.
//!
//! A tree whose root line and whole subtree print exactly like a line
//! elsewhere (same *placement*: offset, and [shape](crate::shape)) is taken
//! to be that line's region — a subregion printed again as a section, or a
//! section that is also an address space's root (q35's `system`). Two
//! regions that print identically cannot be told apart by any reader; for
//! rendering and printing they are interchangeable.
//!
//! Trees are resolved from the largest down (a tree can only be part of a
//! larger one), blocks before sections of the same size (a section can be a
//! block's root, not the other way round). When several distinct regions
//! fit, the first in printed order that no other tree of the same sort
//! has claimed is taken: two sections cannot be one region, nor two
//! blocks. This is what pairs the two identical `vtd-00.0` sections of a
//! q35 with an IOMMU with its two identical `vtd-00.0` address spaces.
//! A tree that fits nowhere is a region of its own (a *canonical* tree).

use std::collections::{HashMap, HashSet};

use crate::shape::{Occ, Occurrences, ShapeId};

/// For every line, the line that stands for its region: a line of a
/// canonical tree. `canon[o] == o` exactly for lines of canonical trees.
pub(crate) fn resolve(all: &Occurrences<'_>) -> Vec<Occ> {
    let mut inner: HashMap<(u64, ShapeId), Vec<Occ>> = HashMap::new();
    for (o, occurrence) in all.occ.iter().enumerate() {
        if occurrence.parent.is_some() {
            inner.entry(all.placement(o)).or_default().push(o);
        }
    }
    let mut block_roots: HashMap<(u64, ShapeId), Vec<Occ>> = HashMap::new();
    for t in 0..all.blocks {
        let root = all.roots[t];
        block_roots
            .entry(all.placement(root))
            .or_default()
            .push(root);
    }

    let mut order: Vec<usize> = (0..all.trees()).collect();
    order.sort_by_key(|&t| {
        (
            std::cmp::Reverse(all.tree_lines(t).len()),
            all.is_section(t),
            t,
        )
    });

    let mut canon: Vec<Occ> = (0..all.occ.len()).collect();
    let mut claimed_by_blocks: HashSet<Occ> = HashSet::new();
    let mut claimed_by_sections: HashSet<Occ> = HashSet::new();
    for t in order {
        let root = all.roots[t];
        let key = all.placement(root);
        let section = all.is_section(t);
        let roots_too = if section { block_roots.get(&key) } else { None };
        // Candidates lie in larger trees, or are block roots of the same
        // size: all resolved already.
        let mut hosts: Vec<Occ> = inner
            .get(&key)
            .into_iter()
            .flatten()
            .chain(roots_too.into_iter().flatten())
            .filter(|&&o| all.occ[o].tree != t)
            .map(|&o| canon[o])
            .collect();
        hosts.sort_unstable();
        hosts.dedup();
        let claimed = if section {
            &mut claimed_by_sections
        } else {
            &mut claimed_by_blocks
        };
        match hosts.into_iter().find(|h| !claimed.contains(h)) {
            Some(host) => {
                claimed.insert(host);
                map_tree(all, &mut canon, root, host);
            }
            None => {
                claimed.insert(root);
            }
        }
    }
    canon
}

/// Points every line of the tree rooted at `root` at the matching line of
/// the (identically shaped) subtree at `host`.
fn map_tree(all: &Occurrences<'_>, canon: &mut [Occ], root: Occ, host: Occ) {
    let mut stack = vec![(root, host)];
    while let Some((mine, theirs)) = stack.pop() {
        canon[mine] = theirs;
        let pairs = all.occ[mine].children.iter().zip(&all.occ[theirs].children);
        stack.extend(pairs.map(|(&a, &b)| (a, b)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse;

    fn canon_names(text: &str) -> (Vec<String>, Vec<Occ>) {
        let dump = parse(text).unwrap();
        let all = Occurrences::new(&dump.blocks, &dump.sections);
        let names = all.nodes.iter().map(|n| n.name.clone()).collect();
        (names, resolve(&all))
    }

    #[test]
    fn section_of_a_subregion_is_that_subregion() {
        let text = "\
address-space: memory
  0000000000000000-ffffffffffffffff (prio 0, i/o): system
    0000000000000000-ffffffffffffffff (prio -1, i/o): pci
      00000000000c0000-00000000000dffff (prio 1, rom): pc.rom
    0000000000000000-00000000000fffff (prio 1, i/o): alias low @pci 0000000000000000-00000000000fffff

memory-region: pci
  0000000000000000-ffffffffffffffff (prio -1, i/o): pci
    00000000000c0000-00000000000dffff (prio 1, rom): pc.rom

";
        let (_, canon) = canon_names(text);
        assert_eq!(&canon[4..], &[1, 2]);
        assert_eq!(&canon[..4], &[0, 1, 2, 3]);
    }

    #[test]
    fn section_of_an_address_space_root_is_that_root() {
        let text = "\
address-space: memory
  0000000000000000-ffffffffffffffff (prio 0, i/o): system
    0000000000000000-0000000000000fff (prio 0, ram): ram

address-space: smm
  0000000000000000-ffffffffffffffff (prio 0, i/o): alias smm-memory @system 0000000000000000-ffffffffffffffff

memory-region: system
  0000000000000000-ffffffffffffffff (prio 0, i/o): system
    0000000000000000-0000000000000fff (prio 0, ram): ram

";
        let (_, canon) = canon_names(text);
        assert_eq!(&canon[3..], &[0, 1]);
    }

    #[test]
    fn section_printed_at_another_offset_is_a_region_of_its_own() {
        let text = "\
address-space: memory
  0000000000000000-ffffffffffffffff (prio 0, i/o): system
    0000000000001000-0000000000001fff (prio 0, ram): ram
    0000000000000000-0000000000000fff (prio 0, ram): alias a @ram 0000000000000000-0000000000000fff

memory-region: ram
  0000000000000000-0000000000000fff (prio 0, ram): ram

";
        let (_, canon) = canon_names(text);
        assert_eq!(canon[3], 3);
    }

    #[test]
    fn identical_sections_pair_with_distinct_identical_blocks() {
        let text = "\
address-space: a
  0000000000000000-ffffffffffffffff (prio 0, i/o): vtd
    0000000000000000-0000000000000fff (prio 0, i/o): ir

address-space: b
  0000000000000000-ffffffffffffffff (prio 0, i/o): vtd
    0000000000000000-0000000000000fff (prio 0, i/o): ir

address-space: c
  0000000000000000-ffffffffffffffff (prio 0, i/o): bus
    0000000000000000-ffffffffffffffff (prio 0, i/o): alias m @vtd 0000000000000000-ffffffffffffffff

address-space: d
  0000000000000000-ffffffffffffffff (prio 0, i/o): bus
    0000000000000000-ffffffffffffffff (prio 0, i/o): alias m @vtd 0000000000000000-ffffffffffffffff

memory-region: vtd
  0000000000000000-ffffffffffffffff (prio 0, i/o): vtd
    0000000000000000-0000000000000fff (prio 0, i/o): ir

memory-region: vtd
  0000000000000000-ffffffffffffffff (prio 0, i/o): vtd
    0000000000000000-0000000000000fff (prio 0, i/o): ir

";
        let (_, canon) = canon_names(text);
        // Blocks a..d are lines 0..8; both blocks named vtd stay distinct.
        assert_eq!(&canon[..8], &[0, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(&canon[8..], &[0, 1, 2, 3]);
    }

    #[test]
    fn blocks_with_identical_text_stay_distinct_regions() {
        let text = "\
address-space: a
  0000000000000000-ffffffffffffffff (prio 0, i/o): bus master container

address-space: b
  0000000000000000-ffffffffffffffff (prio 0, i/o): bus master container

";
        let (_, canon) = canon_names(text);
        assert_eq!(canon, [0, 1]);
    }
}
