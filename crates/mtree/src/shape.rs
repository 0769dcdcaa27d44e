//! Every printed region line as an occurrence in one arena, with the
//! *shape* of the subtree it heads.
//!
//! A region is printed once per printed tree that contains it, so the same
//! region shows up several times (q35's `pci` under `system`, as its own
//! `memory-region:` section, and inside the `system` section). Two lines
//! can only be the same region if everything printed about them and
//! their subtrees is the same: the shape. Shapes are hash-consed, so
//! comparing subtrees is comparing small integers.

use std::collections::HashMap;

use crate::dump::{AddressSpaceBlock, Kind, Node, RegionSection};

/// Index of a region line in the arena; lines are numbered in printed
/// order, which is pre-order over blocks, then sections.
pub(crate) type Occ = usize;

/// Interned shape of a subtree.
pub(crate) type ShapeId = u32;

/// One printed region line.
#[derive(Debug, Clone)]
pub(crate) struct Occurrence {
    /// The printed tree: blocks first, then sections.
    pub(crate) tree: usize,
    pub(crate) parent: Option<Occ>,
    pub(crate) children: Vec<Occ>,
    pub(crate) shape: ShapeId,
}

/// Everything printed about a region and its subtree except where it
/// sits: name, type, priority, size, alias, disabled, and its subregions
/// with their offsets.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ShapeKey {
    name: String,
    kind: Kind,
    priority: i32,
    size: u128,
    alias: Option<(String, u64)>,
    disabled: bool,
    children: Vec<(u64, ShapeId)>,
}

/// All region lines of a dump.
#[derive(Debug)]
pub(crate) struct Occurrences<'a> {
    pub(crate) nodes: Vec<&'a Node>,
    pub(crate) occ: Vec<Occurrence>,
    /// Root line of each tree.
    pub(crate) roots: Vec<Occ>,
    /// Number of address-space blocks; trees from here on are sections.
    pub(crate) blocks: usize,
}

impl<'a> Occurrences<'a> {
    pub(crate) fn new(blocks: &'a [AddressSpaceBlock], sections: &'a [RegionSection]) -> Self {
        let trees = blocks
            .iter()
            .map(|b| &b.root)
            .chain(sections.iter().map(|s| &s.root));
        let mut nodes = Vec::new();
        let mut occ = Vec::new();
        let mut roots = Vec::new();
        for (tree, root) in trees.enumerate() {
            roots.push(nodes.len());
            // (node, parent occurrence)
            let mut stack: Vec<(&Node, Option<Occ>)> = vec![(root, None)];
            while let Some((node, parent)) = stack.pop() {
                let me = nodes.len();
                nodes.push(node);
                occ.push(Occurrence {
                    tree,
                    parent,
                    children: Vec::new(),
                    shape: 0,
                });
                if let Some(p) = parent {
                    occ[p].children.push(me);
                }
                stack.extend(node.children.iter().rev().map(|c| (c, Some(me))));
            }
        }
        let mut all = Occurrences {
            nodes,
            occ,
            roots,
            blocks: blocks.len(),
        };
        all.intern_shapes();
        all
    }

    /// Children have higher indices than their parents, so one backward
    /// pass sees every child's shape before its parent's.
    fn intern_shapes(&mut self) {
        let mut table: HashMap<ShapeKey, ShapeId> = HashMap::new();
        for i in (0..self.occ.len()).rev() {
            let node = self.nodes[i];
            let key = ShapeKey {
                name: node.name.clone(),
                kind: node.kind,
                priority: node.priority,
                size: node.size(),
                alias: node.alias.as_ref().map(|a| (a.target.clone(), a.offset)),
                disabled: node.disabled,
                children: self.occ[i]
                    .children
                    .iter()
                    .map(|&c| (self.nodes[c].addr, self.occ[c].shape))
                    .collect(),
            };
            let next = table.len() as ShapeId;
            self.occ[i].shape = *table.entry(key).or_insert(next);
        }
    }

    /// Number of trees (blocks and sections).
    pub(crate) fn trees(&self) -> usize {
        self.roots.len()
    }

    /// True if tree `t` is a `memory-region:` section.
    pub(crate) fn is_section(&self, t: usize) -> bool {
        t >= self.blocks
    }

    /// The lines of tree `t`: a contiguous run of the arena.
    pub(crate) fn tree_lines(&self, t: usize) -> std::ops::Range<Occ> {
        let end = self.roots.get(t + 1).copied().unwrap_or(self.occ.len());
        self.roots[t]..end
    }

    /// Where a line sits: its offset in its parent (for a root, its own
    /// address) and its shape. Equal placements can be the same region.
    pub(crate) fn placement(&self, o: Occ) -> (u64, ShapeId) {
        (self.nodes[o].addr, self.occ[o].shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse;

    const TEXT: &str = "\
address-space: memory
  0000000000000000-ffffffffffffffff (prio 0, i/o): system
    0000000000000000-ffffffffffffffff (prio -1, i/o): pci
      00000000000c0000-00000000000dffff (prio 1, rom): pc.rom
    0000000000000000-00000000000fffff (prio 0, ram): alias low @pci 0000000000000000-00000000000fffff

memory-region: pci
  0000000000000000-ffffffffffffffff (prio -1, i/o): pci
    00000000000c0000-00000000000dffff (prio 1, rom): pc.rom

";

    #[test]
    fn numbers_lines_in_printed_order_with_parents() {
        let dump = parse(TEXT).unwrap();
        let all = Occurrences::new(&dump.blocks, &dump.sections);
        let names: Vec<&str> = all.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["system", "pci", "pc.rom", "low", "pci", "pc.rom"]);
        assert_eq!(all.occ[2].parent, Some(1));
        assert_eq!(all.tree_lines(1), 4..6);
        assert!(all.is_section(1) && !all.is_section(0));
    }

    #[test]
    fn identical_subtrees_share_a_shape_and_placement() {
        let dump = parse(TEXT).unwrap();
        let all = Occurrences::new(&dump.blocks, &dump.sections);
        assert_eq!(all.placement(1), all.placement(4));
        assert_ne!(all.occ[0].shape, all.occ[1].shape);
    }
}
