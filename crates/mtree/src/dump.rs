//! The syntax tree of an `info mtree -D` dump.
//!
//! A dump is a list of blocks, each a header and the region tree printed
//! under it:
//!
//! - `address-space: NAME` headers, several in a row when the address
//!   spaces share one root region (QEMU groups them by root), then that
//!   root's tree: an [`AddressSpaceBlock`];
//! - after every address space, one `memory-region: NAME` block per region
//!   that some alias shows (QEMU prints each alias target once, in the
//!   order the printer first met it), whether or not the region is also
//!   reachable from an address space: a [`RegionSection`].
//!
//! Which printed lines are the same region is not syntax; [`Dump`] keeps
//! that resolution (see the `identity` and `targets` modules) next to the
//! tree so that a successfully parsed dump can always be built.

use std::fmt;

use crate::plan::Plan;
use crate::region_type::RegionType;

/// The type column of a region line, e.g. `ram` or `nv-rom`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Kind {
    /// QEMU's `nv-` prefix: the region is non-volatile.
    pub nonvolatile: bool,
    /// The type proper. For an alias QEMU prints the type of the region
    /// the alias finally shows.
    pub ty: RegionType,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nonvolatile {
            f.write_str("nv-")?;
        }
        f.write_str(self.ty.as_str())
    }
}

/// The `@TARGET OFFSET-LAST` part of an alias line.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AliasOf {
    /// The name of the region shown (QEMU prints only the name).
    pub target: String,
    /// Where the window starts in the target (QEMU's `alias_offset`).
    pub offset: u64,
    /// The last offset as printed: `offset + size - 1`, or `offset` for an
    /// empty window.
    pub last: u64,
}

/// One region line of a tree and the lines nested under it.
///
/// Addresses are kept as printed (absolute, from the tree's root at its own
/// address) and, in [`addr`](Self::addr), relative to the parent line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Line number in the dump, from 1.
    pub line: usize,
    /// First address as printed.
    pub start: u64,
    /// Last address as printed: `start + size - 1` (modulo 2^64), or
    /// `start` for an empty region.
    pub end: u64,
    /// Offset in the parent line's region; for the root line of a tree,
    /// the region's own address in its (possibly unprinted) parent, which
    /// is what QEMU prints there.
    pub addr: u64,
    /// Priority among siblings.
    pub priority: i32,
    /// The type column.
    pub kind: Kind,
    /// The region's name (not unique; may contain spaces).
    pub name: String,
    /// For an alias, what it shows.
    pub alias: Option<AliasOf>,
    /// Printed with `[disabled]`.
    pub disabled: bool,
    /// Subregion lines, in printed order: ascending address, then
    /// descending priority, then QEMU's list order (most recently added
    /// first).
    pub children: Vec<Node>,
}

impl Node {
    /// The region's size in bytes, up to 2^64.
    ///
    /// QEMU prints `start-start` both for one byte and for an empty
    /// region. Such a line is read as empty only when it is itself
    /// `[disabled]` and of a kind that may be empty (`i/o` or an alias):
    /// QEMU parks placeholders that way (q35's `tseg-blackhole` and
    /// `tseg-window` are created empty and disabled until the firmware
    /// sizes TSEG), and a disabled region renders nothing at either size,
    /// so the choice never changes a flat view. Everything else is one
    /// byte (I/O ports such as `i8042-data` are).
    pub fn size(&self) -> u128 {
        let may_be_empty = self.alias.is_some() || self.kind.ty == RegionType::Io;
        if self.end == self.start && self.disabled && may_be_empty {
            0
        } else {
            self.end.wrapping_sub(self.start) as u128 + 1
        }
    }

    /// This line and every line below it, in printed order.
    pub fn preorder(&self) -> Preorder<'_> {
        Preorder { stack: vec![self] }
    }
}

/// Pre-order walk of a [`Node`] and its descendants (iterative, so that it
/// is safe on any depth).
#[derive(Debug, Clone)]
pub struct Preorder<'a> {
    stack: Vec<&'a Node>,
}

impl<'a> Iterator for Preorder<'a> {
    type Item = &'a Node;

    fn next(&mut self) -> Option<&'a Node> {
        let node = self.stack.pop()?;
        self.stack.extend(node.children.iter().rev());
        Some(node)
    }
}

/// `address-space:` headers and the one tree printed under them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressSpaceBlock {
    /// The address spaces, in printed order, with their header lines.
    pub names: Vec<(usize, String)>,
    /// The root region's tree, shared by all of them.
    pub root: Node,
}

/// A `memory-region:` section: a region that an alias shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionSection {
    /// Line of the header.
    pub line: usize,
    /// The name in the header.
    pub name: String,
    /// The region's tree.
    pub root: Node,
}

/// A parsed `info mtree -D` dump, with every alias resolved.
///
/// Made by [`parse`](crate::parse); build it with
/// [`build`](crate::build).
#[derive(Debug, Clone)]
pub struct Dump {
    pub(crate) blocks: Vec<AddressSpaceBlock>,
    pub(crate) sections: Vec<RegionSection>,
    pub(crate) plan: Plan,
}

impl Dump {
    /// The address-space blocks, in printed order.
    pub fn blocks(&self) -> &[AddressSpaceBlock] {
        &self.blocks
    }

    /// The `memory-region:` sections, in printed order.
    pub fn sections(&self) -> &[RegionSection] {
        &self.sections
    }

    /// Every address space, in printed order, with its root line.
    pub fn address_spaces(&self) -> impl Iterator<Item = (&str, &Node)> {
        self.blocks.iter().flat_map(|b| {
            b.names
                .iter()
                .map(move |(_, name)| (name.as_str(), &b.root))
        })
    }

    /// The roots of every printed tree: blocks, then sections.
    pub fn trees(&self) -> impl Iterator<Item = &Node> {
        self.blocks
            .iter()
            .map(|b| &b.root)
            .chain(self.sections.iter().map(|s| &s.root))
    }

    /// Every region line, in line order.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.trees().flat_map(Node::preorder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(start: u64, end: u64, ty: RegionType, disabled: bool) -> Node {
        Node {
            line: 1,
            start,
            end,
            addr: start,
            priority: 0,
            kind: Kind {
                nonvolatile: false,
                ty,
            },
            name: "r".into(),
            alias: None,
            disabled,
            children: Vec::new(),
        }
    }

    #[test]
    fn full_range_is_2_64_bytes() {
        assert_eq!(node(0, u64::MAX, RegionType::Io, false).size(), 1 << 64);
    }

    #[test]
    fn start_equal_end_is_one_byte_when_enabled() {
        assert_eq!(node(0x60, 0x60, RegionType::Io, false).size(), 1);
    }

    #[test]
    fn start_equal_end_is_empty_when_disabled_io() {
        assert_eq!(node(0x800_0000, 0x800_0000, RegionType::Io, true).size(), 0);
    }

    #[test]
    fn disabled_ram_is_never_empty() {
        assert_eq!(node(0x10, 0x10, RegionType::Ram, true).size(), 1);
    }

    #[test]
    fn wrapped_end_counts_modulo_2_64() {
        assert_eq!(node(0x1000, 0xfff, RegionType::Io, false).size(), 1 << 64);
    }

    #[test]
    fn kind_prints_nv_prefix() {
        let k = Kind {
            nonvolatile: true,
            ty: RegionType::Ram,
        };
        assert_eq!(k.to_string(), "nv-ram");
    }

    #[test]
    fn preorder_visits_parents_before_children_in_order() {
        let mut root = node(0, 0xff, RegionType::Io, false);
        let mut a = node(0, 0xf, RegionType::Io, false);
        a.name = "a".into();
        let mut a1 = node(0, 0x3, RegionType::Io, false);
        a1.name = "a1".into();
        a.children.push(a1);
        let mut b = node(0x10, 0x1f, RegionType::Io, false);
        b.name = "b".into();
        root.children = vec![a, b];
        let names: Vec<&str> = root.preorder().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["r", "a", "a1", "b"]);
    }
}
