//! Turning a parsed dump into a live [`Memory`].
//!
//! Every distinct region of the dump (see the `plan` module) becomes one
//! core region:
//!
//! | printed | made with |
//! | --- | --- |
//! | `ram` | [`Memory::create_ram`] (lazy anonymous host memory) |
//! | `rom` | [`Memory::create_rom`] |
//! | `romd` | [`Memory::create_rom_device`] with [`NullOps`], in ROMD mode |
//! | `ramd` | [`Memory::create_ram_from`] with `device = true` |
//! | `i/o` | a container or [`NullOps`] MMIO, see [`Hints`] |
//! | alias | [`Memory::create_alias`] of the resolved target |
//!
//! `nv-` sets the non-volatile flag, `[disabled]` disables, and aliases
//! named in [`Hints`] are made read-only. IOMMU regions print as `i/o` and
//! come back as MMIO or containers, which render the same. Host memory is
//! reserved, not committed, so guest-sized RAM is cheap; if the host
//! cannot even reserve it the build fails with the region's line (the core
//! has no RAM region without host memory to fall back to).
//!
//! Which of two overlapping siblings of equal priority wins depends on
//! which was added last, and QEMU's print order says so only in part:
//! lines sort by address, then priority, then QEMU's list order (most
//! recently added first). So among lines at the *same* address the one
//! printed first must be added last, and the builder adds each run of
//! same-address lines in reverse. Between *different* addresses the text
//! is silent; the builder adds them by ascending address, so the later
//! start wins. That is the usual shape of a deliberate overlap, a small
//! window placed over a larger region after it (mac99's `macio-nvram`
//! inside `ppc_core99.bios`, which QEMU's flat view shows winning).
//!
//! Everything happens in one transaction; the views are rendered once, at
//! its commit.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use addrspace_core::{AddressSpaceId, HostMemory, Memory, MmioOps, NullOps, RegionId};

use crate::dump::{Dump, Node};
use crate::error::BuildError;
use crate::hints::Hints;
use crate::region_type::RegionType;
use crate::terminating;

/// A dump made live: the memory map, its address spaces, and which region
/// each printed line became.
#[derive(Debug)]
pub struct Built {
    memory: Memory,
    spaces: Vec<(String, AddressSpaceId)>,
    /// Region of every printed line, by line number.
    by_line: BTreeMap<usize, RegionId>,
}

impl Built {
    /// The memory map.
    pub fn memory(&self) -> &Memory {
        &self.memory
    }

    /// The memory map, to change it.
    pub fn memory_mut(&mut self) -> &mut Memory {
        &mut self.memory
    }

    /// The memory map, keeping nothing else.
    pub fn into_memory(self) -> Memory {
        self.memory
    }

    /// Every address space in printed order with its name (names need not
    /// be unique: a q35 with an IOMMU has many `vtd-root`s).
    pub fn address_spaces(&self) -> &[(String, AddressSpaceId)] {
        &self.spaces
    }

    /// The address-space handles in printed order, for the printers.
    pub fn space_ids(&self) -> Vec<AddressSpaceId> {
        self.spaces.iter().map(|(_, id)| *id).collect()
    }

    /// The first address space called `name`.
    pub fn address_space(&self, name: &str) -> Option<AddressSpaceId> {
        self.spaces
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, id)| *id)
    }

    /// The region a printed line became (lines that print the same region
    /// give the same handle).
    pub fn region_at_line(&self, line: usize) -> Option<RegionId> {
        self.by_line.get(&line).copied()
    }

    /// The region a parsed line became.
    pub fn region_of(&self, node: &Node) -> Option<RegionId> {
        self.region_at_line(node.line)
    }
}

/// Builds a parsed dump into a new [`Memory`], inside one transaction.
///
/// With a flat dump in `hints`, which `i/o` regions terminate is decided
/// as the `terminating` module describes; that may take a second build
/// (real machines need at most two).
pub fn build(dump: &Dump, hints: &Hints) -> Result<Built, BuildError> {
    let nodes: Vec<&Node> = dump.nodes().collect();
    let mut mmio = terminating::initial(dump, &nodes, hints);
    loop {
        let (built, regions) = build_once(dump, &nodes, hints, &mmio)?;
        if !hints.has_flat() {
            return Ok(built);
        }
        let containers = terminating::unseen(dump, &nodes, hints, &built, &regions, &mmio);
        if containers.is_empty() {
            return Ok(built);
        }
        for slot in containers {
            mmio.remove(&slot);
        }
    }
}

fn build_once(
    dump: &Dump,
    nodes: &[&Node],
    hints: &Hints,
    mmio: &HashSet<usize>,
) -> Result<(Built, Vec<RegionId>), BuildError> {
    let mut memory = Memory::new();
    memory.begin();
    let made = Builder {
        dump,
        nodes,
        hints,
        mmio,
        mem: &mut memory,
        ops: Arc::new(NullOps),
    }
    .make();
    let committed = memory.commit();
    let (spaces, regions) = made?;
    committed.map_err(|source| BuildError::Commit { source })?;
    let by_line = dump
        .plan
        .slot_of
        .iter()
        .enumerate()
        .map(|(i, &slot)| (nodes[i].line, regions[slot]))
        .collect();
    let built = Built {
        memory,
        spaces,
        by_line,
    };
    Ok((built, regions))
}

struct Builder<'a> {
    dump: &'a Dump,
    nodes: &'a [&'a Node],
    hints: &'a Hints,
    /// `i/o` slots that terminate (see the `terminating` module).
    mmio: &'a HashSet<usize>,
    mem: &'a mut Memory,
    ops: Arc<dyn MmioOps>,
}

type Made = (Vec<(String, AddressSpaceId)>, Vec<RegionId>);

impl<'a> Builder<'a> {
    fn node(&self, slot: usize) -> &'a Node {
        self.nodes[self.dump.plan.slots[slot].line_index]
    }

    fn make(mut self) -> Result<Made, BuildError> {
        let dump = self.dump;
        let plan = &dump.plan;
        let mut ids: Vec<Option<RegionId>> = vec![None; plan.slots.len()];
        for (slot, s) in plan.slots.iter().enumerate() {
            if s.alias_target.is_none() {
                ids[slot] = Some(self.create(slot)?);
            }
        }
        for &slot in &plan.alias_order {
            let node = self.node(slot);
            let alias = node.alias.as_ref().expect("alias slots are alias lines");
            let target = plan.slots[slot].alias_target.and_then(|t| ids[t]);
            let target = target.expect("the plan orders aliases after their targets");
            let id = self
                .mem
                .create_alias(&node.name, target, alias.offset, node.size());
            ids[slot] = Some(self.core(slot, id)?);
        }
        let ids: Vec<RegionId> = ids
            .into_iter()
            .map(|id| id.expect("every slot made"))
            .collect();
        for (slot, &id) in ids.iter().enumerate() {
            self.attributes(slot, id)?;
        }
        for (slot, s) in plan.slots.iter().enumerate() {
            for child in self.add_order(&s.children) {
                let (addr, priority) = (self.node(child).addr, self.node(child).priority);
                let added = self
                    .mem
                    .add_subregion_overlap(ids[slot], addr, ids[child], priority);
                self.core(child, added)?;
            }
        }
        let mut spaces = Vec::new();
        for (block, &root) in dump.blocks.iter().zip(&plan.block_roots) {
            for (line, name) in &block.names {
                let id = self.mem.create_address_space(name, ids[root]);
                let id = id.map_err(|source| BuildError::Core {
                    line: *line,
                    name: name.clone(),
                    source,
                })?;
                spaces.push((name.clone(), id));
            }
        }
        Ok((spaces, ids))
    }

    /// The order to add subregions in (see the module docs): by address,
    /// and in reverse printed order among those at the same address.
    fn add_order(&self, printed: &[usize]) -> Vec<usize> {
        let mut order = Vec::with_capacity(printed.len());
        for group in printed.chunk_by(|&a, &b| self.node(a).addr == self.node(b).addr) {
            order.extend(group.iter().rev());
        }
        order
    }

    /// Makes a non-alias region of the right kind.
    fn create(&mut self, slot: usize) -> Result<RegionId, BuildError> {
        let node = self.node(slot);
        let (name, size) = (node.name.as_str(), node.size());
        let made = match node.kind.ty {
            RegionType::Ram => self.mem.create_ram(name, size),
            RegionType::Rom => self.mem.create_rom(name, size),
            RegionType::Romd => self
                .mem
                .create_rom_device(name, size, Arc::clone(&self.ops)),
            RegionType::Ramd => HostMemory::anonymous(size).and_then(|backing| {
                self.mem
                    .create_ram_from(name, size, Arc::new(backing), true)
            }),
            RegionType::Io if self.mmio.contains(&slot) => {
                self.mem.create_mmio(name, size, Arc::clone(&self.ops))
            }
            RegionType::Io => self.mem.create_container(name, size),
        };
        self.core(slot, made)
    }

    /// Flags, and the own address and priority of regions whose parent is
    /// not printed (QEMU prints them on the root line of their tree).
    fn attributes(&mut self, slot: usize, id: RegionId) -> Result<(), BuildError> {
        let node = self.node(slot);
        let (nonvolatile, disabled) = (node.kind.nonvolatile, node.disabled);
        let readonly = node.alias.is_some() && self.hints.is_readonly_alias(&node.name);
        let (addr, priority) = (node.addr, node.priority);
        let top = !self.dump.plan.slots[slot].has_parent;
        if nonvolatile {
            let r = self.mem.set_nonvolatile(id, true);
            self.core(slot, r)?;
        }
        if disabled {
            let r = self.mem.set_enabled(id, false);
            self.core(slot, r)?;
        }
        if readonly {
            let r = self.mem.set_readonly(id, true);
            self.core(slot, r)?;
        }
        if top && addr != 0 {
            let r = self.mem.set_address(id, addr);
            self.core(slot, r)?;
        }
        if top && priority != 0 {
            let r = self.mem.set_priority(id, priority);
            self.core(slot, r)?;
        }
        Ok(())
    }

    /// Names the line of a slot in a core error.
    fn core<T>(
        &self,
        slot: usize,
        result: Result<T, addrspace_core::Error>,
    ) -> Result<T, BuildError> {
        result.map_err(|source| {
            let node = self.node(slot);
            BuildError::Core {
                line: node.line,
                name: node.name.clone(),
                source,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use addrspace_core::{KindTag, RegionKind};

    use super::*;
    use crate::parse::parse;

    const PC: &str = "\
address-space: memory
  0000000000000000-ffffffffffffffff (prio 0, i/o): system
    0000000000000000-0000000007ffffff (prio 0, ram): alias ram-below-4g @pc.ram 0000000000000000-0000000007ffffff
    0000000000000000-ffffffffffffffff (prio -1, i/o): pci
      00000000000c0000-00000000000dffff (prio 1, rom): pc.rom
    00000000000c0000-00000000000c3fff (prio 1, ram): alias pam-rom @pc.ram 00000000000c0000-00000000000c3fff
    0000000008000000-0000000008000000 (prio 1, i/o): tseg-blackhole [disabled]

address-space: I/O
  0000000000000000-000000000000ffff (prio 0, i/o): io
    0000000000000060-0000000000000060 (prio 0, i/o): i8042-data

memory-region: pc.ram
  0000000000000000-0000000007ffffff (prio 0, ram): pc.ram

";

    fn kind_at(built: &Built, line: usize) -> KindTag {
        let id = built.region_at_line(line).unwrap();
        built.memory().region(id).unwrap().kind().tag()
    }

    #[test]
    fn printed_types_become_core_kinds() {
        let built = build(&parse(PC).unwrap(), &Hints::new()).unwrap();
        assert_eq!(kind_at(&built, 2), KindTag::Container);
        assert_eq!(kind_at(&built, 3), KindTag::Alias);
        assert_eq!(kind_at(&built, 5), KindTag::Ram);
        assert_eq!(kind_at(&built, 11), KindTag::Mmio);
        let rom = built
            .memory()
            .region(built.region_at_line(5).unwrap())
            .unwrap();
        assert!(rom.is_rom());
    }

    #[test]
    fn io_region_with_children_terminates_only_if_the_flat_dump_shows_it() {
        let flat = "FlatView #0\n AS \"I/O\", root: io\n Root memory region: io\n  \
                    0000000000000000-000000000000005f (prio 0, i/o): io\n";
        let without = build(&parse(PC).unwrap(), &Hints::new()).unwrap();
        assert_eq!(kind_at(&without, 10), KindTag::Container);
        let with = build(&parse(PC).unwrap(), &Hints::from_flat(flat).unwrap()).unwrap();
        assert_eq!(kind_at(&with, 10), KindTag::Mmio);
    }

    #[test]
    fn visible_childless_io_missing_from_the_flat_dump_is_an_empty_container() {
        let text = "address-space: memory\n  0000000000000000-ffffffffffffffff (prio 0, i/o): system\n    \
                    0000000000001000-0000000000001fff (prio 0, i/o): phb.mmio\n    \
                    0000000000002000-0000000000002fff (prio 0, i/o): hidden [disabled]\n";
        let flat = "FlatView #0\n AS \"memory\", root: system\n Root memory region: system\n  No rendered FlatView\n";
        let built = build(&parse(text).unwrap(), &Hints::from_flat(flat).unwrap()).unwrap();
        assert_eq!(kind_at(&built, 3), KindTag::Container);
        // Invisible: the flat dump says nothing about it, so it stays MMIO.
        assert_eq!(kind_at(&built, 4), KindTag::Mmio);
        let memory = built.address_space("memory").unwrap();
        assert!(built.memory().view(memory).unwrap().ranges.is_empty());
    }

    #[test]
    fn reprinted_region_is_one_core_region() {
        let built = build(&parse(PC).unwrap(), &Hints::new()).unwrap();
        let alias = built
            .memory()
            .region(built.region_at_line(3).unwrap())
            .unwrap();
        let (target, _) = alias.alias().unwrap();
        assert_eq!(Some(target), built.region_at_line(14));
        assert_eq!(built.memory().regions_named("pc.ram").count(), 1);
    }

    #[test]
    fn flags_and_readonly_aliases_are_applied() {
        let hints = Hints::new().with_readonly_alias("pam-rom");
        let built = build(&parse(PC).unwrap(), &hints).unwrap();
        let mem = built.memory();
        let pam = mem.region(built.region_at_line(6).unwrap()).unwrap();
        assert!(pam.readonly());
        let tseg = mem.region(built.region_at_line(7).unwrap()).unwrap();
        assert!(!tseg.enabled());
        assert_eq!(tseg.size(), 0);
    }

    #[test]
    fn equal_siblings_printed_first_win() {
        let text = "\
address-space: memory
  0000000000000000-ffffffffffffffff (prio 0, i/o): system
    0000000000001000-0000000000001fff (prio 1, ram): alias first @ram 0000000000000000-0000000000000fff
    0000000000001000-0000000000001fff (prio 1, ram): alias second @ram 0000000000001000-0000000000001fff

memory-region: ram
  0000000000000000-0000000000001fff (prio 0, ram): ram

";
        let built = build(&parse(text).unwrap(), &Hints::new()).unwrap();
        let view = built
            .memory()
            .view(built.address_space("memory").unwrap())
            .unwrap();
        assert_eq!(view.ranges.len(), 1);
        assert_eq!(view.ranges[0].offset_in_region, 0);
    }

    #[test]
    fn section_root_keeps_its_own_address_and_priority() {
        let text = "\
address-space: m
  0000000000000000-ffffffffffffffff (prio 0, i/o): root
    0000000000000000-0000000000000fff (prio 0, ram): alias a @vram 0000000000000000-0000000000000fff

memory-region: vram
  0000000081000000-0000000081ffffff (prio 1, ram): vram

";
        let built = build(&parse(text).unwrap(), &Hints::new()).unwrap();
        let vram = built
            .memory()
            .region(built.region_at_line(6).unwrap())
            .unwrap();
        assert_eq!((vram.addr(), vram.priority()), (0x8100_0000, 1));
        assert!(vram.parent().is_none());
    }

    #[test]
    fn huge_ram_that_cannot_be_reserved_names_its_line() {
        let text = "address-space: m\n  0000000000000000-ffffffffffffffff (prio 0, ram): too-big\n";
        let err = build(&parse(text).unwrap(), &Hints::new()).unwrap_err();
        assert!(matches!(err, BuildError::Core { line: 2, .. }));
    }

    #[test]
    fn romd_and_ramd_keep_their_types() {
        let text =
            "address-space: m\n  0000000000000000-ffffffffffffffff (prio 0, i/o): root\n    \
                    0000000000000000-0000000000000fff (prio 0, romd): flash\n    \
                    0000000000001000-0000000000001fff (prio 0, ramd): bar\n";
        let built = build(&parse(text).unwrap(), &Hints::new()).unwrap();
        let mem = built.memory();
        let flash = mem.region(built.region_at_line(3).unwrap()).unwrap();
        assert!(matches!(
            flash.kind(),
            RegionKind::RomDevice {
                romd_mode: true,
                ..
            }
        ));
        let bar = built.region_at_line(4).unwrap();
        assert_eq!(RegionType::of_region(mem, bar).unwrap(), RegionType::Ramd);
    }
}
