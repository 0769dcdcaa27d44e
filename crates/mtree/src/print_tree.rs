//! Printing a [`Memory`] as `info mtree -D` prints it.
//!
//! QEMU's rules, reproduced:
//!
//! - address spaces are grouped by root region: one `address-space:`
//!   header per address space, then the root's tree once. QEMU sorts the
//!   names in a group and orders groups by a hash table; here groups come
//!   in order of their first address space and names in creation order,
//!   so a dump that was parsed and built prints back exactly (QEMU's own
//!   dumps already have their names sorted);
//! - every line shows the parent's printed start plus the region's offset
//!   (the root line: the region's own offset in its parent), the last
//!   address `start + size - 1` (`start` when empty), the priority, `nv-`
//!   and the type (an alias shows its final target's type), the name, and
//!   for an alias `@target` with its window;
//! - subregions print by ascending address, then descending priority,
//!   then in the core's list order (most recently added first);
//! - every alias queues its target the first time it is printed, unless
//!   queued already; after the address spaces each queued region prints as
//!   a `memory-region:` section, and aliases printed there queue more.

use std::collections::HashSet;
use std::fmt::Write;

use addrspace_core::{AddressSpaceId, Error, Memory, RegionId};

use crate::dump::Kind;
use crate::line::PrintedLine;
use crate::region_type::RegionType;

/// Prints the region trees of `spaces` (and the `memory-region:` sections
/// their aliases call for) in `info mtree -D` format.
pub fn print_tree(mem: &Memory, spaces: &[AddressSpaceId]) -> Result<String, Error> {
    let mut groups: Vec<(RegionId, Vec<&str>)> = Vec::new();
    for &space in spaces {
        let root = mem.address_space_root(space)?;
        let name = mem.address_space_name(space)?;
        match groups.iter_mut().find(|(r, _)| *r == root) {
            Some((_, names)) => names.push(name),
            None => groups.push((root, vec![name])),
        }
    }
    let mut printer = Printer {
        mem,
        out: String::new(),
        queue: Vec::new(),
        queued: HashSet::new(),
    };
    for (root, names) in groups {
        for name in names {
            writeln!(printer.out, "address-space: {name}").expect("writing to a String");
        }
        printer.tree(root)?;
    }
    let mut next = 0;
    while let Some(&region) = printer.queue.get(next) {
        let name = mem.region(region)?.name();
        writeln!(printer.out, "memory-region: {name}").expect("writing to a String");
        printer.tree(region)?;
        next += 1;
    }
    Ok(printer.out)
}

struct Printer<'a> {
    mem: &'a Memory,
    out: String,
    /// Alias targets in the order they were first printed.
    queue: Vec<RegionId>,
    queued: HashSet<RegionId>,
}

impl Printer<'_> {
    /// One tree and the blank line after it. Iterative: a region tree
    /// made through the API may be arbitrarily deep.
    fn tree(&mut self, root: RegionId) -> Result<(), Error> {
        // (region, level, parent's printed start)
        let mut stack = vec![(root, 1usize, 0u64)];
        while let Some((id, level, base)) = stack.pop() {
            let start = self.line(id, level, base)?;
            let region = self.mem.region(id)?;
            let mut children = Vec::with_capacity(region.subregions().len());
            for &c in region.subregions() {
                let child = self.mem.region(c)?;
                children.push((child.addr(), child.priority(), c));
            }
            // Stable: ties keep the core's list order, as QEMU's do.
            children.sort_by_key(|&(addr, priority, _)| (addr, std::cmp::Reverse(priority)));
            stack.extend(
                children
                    .iter()
                    .rev()
                    .map(|&(_, _, c)| (c, level + 1, start)),
            );
        }
        self.out.push('\n');
        Ok(())
    }

    /// Prints one line; returns its printed start.
    fn line(&mut self, id: RegionId, level: usize, base: u64) -> Result<u64, Error> {
        let region = self.mem.region(id)?;
        let start = base.wrapping_add(region.addr());
        let alias = match region.alias() {
            Some((target, offset)) => {
                if self.queued.insert(target) {
                    self.queue.push(target);
                }
                Some((self.mem.region(target)?.name(), offset))
            }
            None => None,
        };
        let line = PrintedLine {
            start,
            size: region.size(),
            priority: region.priority(),
            kind: Kind {
                nonvolatile: region.nonvolatile(),
                ty: RegionType::of_region(self.mem, id)?,
            },
            name: region.name(),
            alias,
            disabled: !region.enabled(),
        };
        writeln!(self.out, "{:indent$}{line}", "", indent = 2 * level)
            .expect("writing to a String");
        Ok(start)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use addrspace_core::{NullOps, SIZE_2_64};

    use super::*;

    #[test]
    fn prints_subregions_by_address_then_priority_with_absolute_starts() {
        let mut mem = Memory::new();
        let system = mem.create_container("system", SIZE_2_64).unwrap();
        let dev = mem.create_mmio("dev", 0x1000, Arc::new(NullOps)).unwrap();
        let reg = mem.create_mmio("reg", 0x10, Arc::new(NullOps)).unwrap();
        let low = mem.create_mmio("low", 0x100, Arc::new(NullOps)).unwrap();
        let high = mem.create_mmio("high", 0x100, Arc::new(NullOps)).unwrap();
        mem.add_subregion(dev, 0x20, reg).unwrap();
        mem.add_subregion(system, 0x1000, dev).unwrap();
        mem.add_subregion_overlap(system, 0x1000, low, -1).unwrap();
        mem.add_subregion_overlap(system, 0x1000, high, 2).unwrap();
        let space = mem.create_address_space("memory", system).unwrap();
        let text = print_tree(&mem, &[space]).unwrap();
        assert_eq!(
            text,
            "\
address-space: memory
  0000000000000000-ffffffffffffffff (prio 0, i/o): system
    0000000000001000-00000000000010ff (prio 2, i/o): high
    0000000000001000-0000000000001fff (prio 0, i/o): dev
      0000000000001020-000000000000102f (prio 0, i/o): reg
    0000000000001000-00000000000010ff (prio -1, i/o): low

"
        );
    }

    #[test]
    fn address_spaces_sharing_a_root_print_one_tree() {
        let mut mem = Memory::new();
        let system = mem.create_container("system", SIZE_2_64).unwrap();
        let a = mem.create_address_space("cpu-memory-0", system).unwrap();
        let b = mem.create_address_space("memory", system).unwrap();
        let text = print_tree(&mem, &[a, b]).unwrap();
        assert_eq!(
            text,
            "address-space: cpu-memory-0\naddress-space: memory\n  \
             0000000000000000-ffffffffffffffff (prio 0, i/o): system\n\n"
        );
    }

    #[test]
    fn alias_targets_print_once_as_sections_in_first_met_order() {
        let mut mem = Memory::new();
        let system = mem.create_container("system", SIZE_2_64).unwrap();
        let ram = mem.create_ram("pc.ram", 0x2000).unwrap();
        let rom = mem.create_rom("bios", 0x1000).unwrap();
        mem.set_address(rom, 0xfff0_0000).unwrap();
        let a = mem.create_alias("low", ram, 0, 0x1000).unwrap();
        let b = mem.create_alias("bios-alias", rom, 0, 0x1000).unwrap();
        let c = mem.create_alias("high", ram, 0x1000, 0x1000).unwrap();
        mem.add_subregion(system, 0, a).unwrap();
        mem.add_subregion(system, 0x1000, b).unwrap();
        mem.add_subregion(system, 0x2000, c).unwrap();
        mem.set_enabled(c, false).unwrap();
        let space = mem.create_address_space("memory", system).unwrap();
        let text = print_tree(&mem, &[space]).unwrap();
        assert_eq!(
            text,
            "\
address-space: memory
  0000000000000000-ffffffffffffffff (prio 0, i/o): system
    0000000000000000-0000000000000fff (prio 0, ram): alias low @pc.ram 0000000000000000-0000000000000fff
    0000000000001000-0000000000001fff (prio 0, rom): alias bios-alias @bios 0000000000000000-0000000000000fff
    0000000000002000-0000000000002fff (prio 0, ram): alias high @pc.ram 0000000000001000-0000000000001fff [disabled]

memory-region: pc.ram
  0000000000000000-0000000000001fff (prio 0, ram): pc.ram

memory-region: bios
  00000000fff00000-00000000fff00fff (prio 0, rom): bios

"
        );
    }

    #[test]
    fn empty_region_prints_start_twice_and_nonvolatile_prints_nv() {
        let mut mem = Memory::new();
        let root = mem.create_container("root", 0x1000).unwrap();
        let hole = mem.create_mmio("hole", 0, Arc::new(NullOps)).unwrap();
        let nv = mem.create_ram("nvdimm", 0x100).unwrap();
        mem.set_nonvolatile(nv, true).unwrap();
        mem.add_subregion(root, 0x800, hole).unwrap();
        mem.add_subregion(root, 0x100, nv).unwrap();
        let space = mem.create_address_space("m", root).unwrap();
        let text = print_tree(&mem, &[space]).unwrap();
        assert!(text.contains("0000000000000800-0000000000000800 (prio 0, i/o): hole\n"));
        assert!(text.contains("0000000000000100-00000000000001ff (prio 0, nv-ram): nvdimm\n"));
    }
}
