//! Building and changing the region tree.
//!
//! Every operation validates all of its input before changing anything,
//! and marks the transaction pending only when a view may change.

use std::sync::Arc;

use crate::backing::HostMemory;
use crate::error::Error;
use crate::id::RegionId;
use crate::ioevent::Ioeventfd;
use crate::iommu::IommuOps;
use crate::memory::Memory;
use crate::ops::MmioOps;
use crate::range::AddrRange;
use crate::region::{DirtyClient, Region, RegionKind, SIZE_2_64};

fn kind_alias_target(kind: &RegionKind) -> Option<RegionId> {
    match kind {
        RegionKind::Alias { target, .. } => Some(*target),
        _ => None,
    }
}

fn kind_name(kind: &RegionKind) -> &'static str {
    match kind {
        RegionKind::Container => "container",
        RegionKind::Ram { .. } => "RAM",
        RegionKind::RomDevice { .. } => "ROM device",
        RegionKind::Mmio { .. } => "MMIO",
        RegionKind::Reservation => "reservation",
        RegionKind::Alias { .. } => "alias",
        RegionKind::Iommu { .. } => "IOMMU",
    }
}

/// Kinds that map memory or translations need bytes to exist; containers,
/// MMIO, reservations and aliases may be empty, as in QEMU.
fn needs_size(kind: &RegionKind) -> bool {
    matches!(
        kind,
        RegionKind::Ram { .. } | RegionKind::RomDevice { .. } | RegionKind::Iommu { .. }
    )
}

/// Fresh host memory for a new memory-backed region; a zero size is the
/// caller's mistake (`ZeroSize`), not an allocation failure.
fn fresh_backing(kind: &'static str, name: &str, size: u128) -> Result<Arc<HostMemory>, Error> {
    if size == 0 {
        return Err(Error::ZeroSize {
            kind,
            name: name.to_owned(),
        });
    }
    Ok(Arc::new(HostMemory::anonymous(size)?))
}

impl Memory {
    fn insert_region(
        &mut self,
        name: &str,
        kind: RegionKind,
        size: u128,
        readonly: bool,
    ) -> Result<RegionId, Error> {
        if size > SIZE_2_64 {
            return Err(Error::BeyondAddressSpace {
                what: "region",
                start: 0,
                size,
            });
        }
        if size == 0 && needs_size(&kind) {
            return Err(Error::ZeroSize {
                kind: kind_name(&kind),
                name: name.to_owned(),
            });
        }
        if let Some(backing) = match &kind {
            RegionKind::Ram { backing, .. } | RegionKind::RomDevice { backing, .. } => {
                Some(backing)
            }
            _ => None,
        } {
            if size > backing.len() as u128 {
                return Err(Error::SizeExceedsBacking {
                    region: RegionId(self.regions.peek_next()),
                    size,
                    backing: backing.len(),
                });
            }
        }
        if let RegionKind::Alias { target, offset } = kind {
            self.region(target)?;
            if offset as u128 + size > SIZE_2_64 {
                return Err(Error::BeyondAddressSpace {
                    what: "alias window",
                    start: offset,
                    size,
                });
            }
        }
        let alias_target = kind_alias_target(&kind);
        let kind_alias_offset = match kind {
            RegionKind::Alias { offset, .. } => offset,
            _ => 0,
        };
        let mut region = Region::new(name, kind, size);
        region.readonly = readonly;
        let id = RegionId(self.regions.insert(region));
        if let Some(target) = alias_target {
            let t = self.region_mut(target)?;
            t.referrers.push(id);
            t.upward.push(crate::region::Upward {
                alias: id,
                offset: kind_alias_offset,
                size,
            });
            // An address space rooted at the target may stop being able
            // to skip its chain.
            self.touch(target);
        }
        Ok(id)
    }

    /// A container: groups subregions, maps nothing itself.
    pub fn create_container(&mut self, name: &str, size: u128) -> Result<RegionId, Error> {
        self.insert_region(name, RegionKind::Container, size, false)
    }

    /// RAM of `size` bytes with fresh anonymous host memory.
    pub fn create_ram(&mut self, name: &str, size: u128) -> Result<RegionId, Error> {
        let backing = fresh_backing("RAM", name, size)?;
        self.create_ram_from(name, size, backing, false)
    }

    /// RAM backed by existing host memory; `device` marks RAM-device memory
    /// (a mapped device BAR).
    pub fn create_ram_from(
        &mut self,
        name: &str,
        size: u128,
        backing: Arc<HostMemory>,
        device: bool,
    ) -> Result<RegionId, Error> {
        self.insert_region(name, RegionKind::Ram { backing, device }, size, false)
    }

    /// ROM: RAM that is read-only to the guest.
    pub fn create_rom(&mut self, name: &str, size: u128) -> Result<RegionId, Error> {
        let backing = fresh_backing("ROM", name, size)?;
        self.insert_region(
            name,
            RegionKind::Ram {
                backing,
                device: false,
            },
            size,
            true,
        )
    }

    /// A ROM device, starting in ROMD mode (reads from memory).
    pub fn create_rom_device(
        &mut self,
        name: &str,
        size: u128,
        ops: Arc<dyn MmioOps>,
    ) -> Result<RegionId, Error> {
        let backing = fresh_backing("ROM device", name, size)?;
        let kind = RegionKind::RomDevice {
            backing,
            ops,
            romd_mode: true,
        };
        self.insert_region(name, kind, size, false)
    }

    /// MMIO served by `ops`.
    pub fn create_mmio(
        &mut self,
        name: &str,
        size: u128,
        ops: Arc<dyn MmioOps>,
    ) -> Result<RegionId, Error> {
        self.insert_region(name, RegionKind::Mmio { ops }, size, false)
    }

    /// A reservation: claims addresses, serves nothing.
    pub fn create_reservation(&mut self, name: &str, size: u128) -> Result<RegionId, Error> {
        self.insert_region(name, RegionKind::Reservation, size, false)
    }

    /// An alias showing `target[offset..offset + size]`.
    pub fn create_alias(
        &mut self,
        name: &str,
        target: RegionId,
        offset: u64,
        size: u128,
    ) -> Result<RegionId, Error> {
        self.insert_region(name, RegionKind::Alias { target, offset }, size, false)
    }

    /// An IOMMU region translating through `ops`.
    pub fn create_iommu(
        &mut self,
        name: &str,
        size: u128,
        ops: Arc<dyn IommuOps>,
    ) -> Result<RegionId, Error> {
        self.insert_region(name, RegionKind::Iommu { ops }, size, false)
    }

    /// Destroys a region that nothing refers to. Its subregions are
    /// detached (and live on). Inside a transaction the handle goes stale at
    /// once and the memory is freed after the commit.
    pub fn destroy_region(&mut self, id: RegionId) -> Result<(), Error> {
        let r = self.region(id)?;
        let reason = if r.parent.is_some() {
            Some("it is a subregion")
        } else if !r.referrers.is_empty() {
            Some("an alias shows it")
        } else if r.as_refs > 0 {
            Some("it is the root of an address space")
        } else if self.iommu.by_region.contains_key(&id) {
            Some("IOMMU notifiers are registered on it")
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(Error::RegionInUse { region: id, reason });
        }
        self.transaction(|m| {
            let r = m.region_mut(id)?;
            let subs = std::mem::take(&mut r.subregions);
            let target = r.alias().map(|(t, _)| t);
            for sub in &subs {
                m.region_mut(*sub)?.parent = None;
            }
            if let Some(t) = target {
                let t = m.region_mut(t)?;
                t.referrers.retain(|a| *a != id);
                t.upward.retain(|u| u.alias != id);
            }
            for sub in &subs {
                m.touch(*sub);
            }
            if !subs.is_empty() {
                m.mark_pending();
            }
            m.doom(id);
            Ok(())
        })
    }

    /// True if `to` can be reached from `from` through subregion and alias
    /// edges (or is `from`).
    fn reaches(&self, from: RegionId, to: RegionId) -> bool {
        if from == to {
            return true;
        }
        let r = self
            .regions
            .get(from.0)
            .expect("tree edges point to live regions");
        // A leaf reaches only itself. Most regions added are leaves (a BAR
        // toggled in and out is one), and the walk below allocates.
        if r.subregions.is_empty() && r.alias().is_none() {
            return false;
        }
        let mut stack = vec![from];
        let mut seen = crate::id::IdSet::default();
        while let Some(id) = stack.pop() {
            if id == to {
                return true;
            }
            if !seen.insert(id) {
                continue;
            }
            let r = self
                .regions
                .get(id.0)
                .expect("tree edges point to live regions");
            stack.extend(r.subregions.iter().copied());
            if let Some((t, _)) = r.alias() {
                stack.push(t);
            }
        }
        false
    }

    /// Adds `child` at `addr` in `parent` with priority 0 (QEMU's
    /// `memory_region_add_subregion`).
    pub fn add_subregion(
        &mut self,
        parent: RegionId,
        addr: u64,
        child: RegionId,
    ) -> Result<(), Error> {
        self.add_subregion_overlap(parent, addr, child, 0)
    }

    /// Adds `child` at `addr` in `parent` with `priority`. Among siblings of
    /// equal priority the most recently added wins where they overlap.
    pub fn add_subregion_overlap(
        &mut self,
        parent: RegionId,
        addr: u64,
        child: RegionId,
        priority: i32,
    ) -> Result<(), Error> {
        let p = self.region(parent)?;
        if p.alias().is_some() {
            return Err(Error::SubregionOfAlias { alias: parent });
        }
        let c = self.region(child)?;
        if let Some(existing) = c.parent {
            return Err(Error::AlreadyHasParent {
                child,
                parent: existing,
            });
        }
        if addr as u128 + c.size > SIZE_2_64 {
            return Err(Error::BeyondAddressSpace {
                what: "subregion",
                start: addr,
                size: c.size,
            });
        }
        if self.reaches(child, parent) {
            return Err(Error::Cycle { parent, child });
        }
        self.transaction(|m| {
            let c = m.region_mut(child)?;
            c.parent = Some(parent);
            c.addr = addr;
            c.priority = priority;
            m.link(parent, child, priority);
            m.touch(parent);
            m.note_damage(child);
            m.mark_pending();
            Ok(())
        })
    }

    /// Inserts `child` in `parent`'s list before the first sibling of lower
    /// or equal priority, so it wins over equals added before it.
    fn link(&mut self, parent: RegionId, child: RegionId, priority: i32) {
        let stamp = self.next_link_stamp();
        let c = self.regions.get_mut(child.0).expect("live child");
        c.linked_at = stamp;
        let (addr, size) = (c.addr, c.size);
        let regions = &self.regions;
        let prio = |id: &RegionId| regions.get(id.0).expect("live sibling").priority;
        let subs = &self.regions.get(parent.0).expect("live parent").subregions;
        // Siblings are in descending priority: the new one goes before
        // every sibling of its priority or lower.
        let pos = subs.partition_point(|s| prio(s) > priority);
        let p = self.regions.get_mut(parent.0).expect("live parent");
        p.subregions.insert(pos, child);
        if let Some(idx) = &mut p.child_index {
            idx.insert(addr, size, child);
        } else if p.subregions.len() >= crate::child_index::BUILD_AT {
            self.build_child_index(parent);
        }
    }

    fn unlink(&mut self, parent: RegionId, child: RegionId) {
        let c = self.regions.get(child.0).expect("live child");
        let (addr, size) = (c.addr, c.size);
        // Siblings are ordered by descending (priority, link stamp), so
        // a binary search finds the child among thousands.
        let key = |r: &crate::region::Region| std::cmp::Reverse((r.priority, r.linked_at));
        let regions = &self.regions;
        let subs = &regions.get(parent.0).expect("live parent").subregions;
        let pos = subs.partition_point(|s| key(regions.get(s.0).expect("live sibling")) < key(c));
        let p = self.regions.get_mut(parent.0).expect("live parent");
        debug_assert_eq!(p.subregions.get(pos), Some(&child), "subregions in order");
        if p.subregions.get(pos) == Some(&child) {
            p.subregions.remove(pos);
        } else {
            p.subregions.retain(|s| *s != child);
        }
        if let Some(idx) = &mut p.child_index {
            if p.subregions.len() < crate::child_index::DROP_AT {
                p.child_index = None;
            } else {
                idx.remove(addr, size, child);
            }
        }
    }

    fn build_child_index(&mut self, parent: RegionId) {
        let mut idx = crate::child_index::ChildIndex::default();
        for s in &self.regions.get(parent.0).expect("live parent").subregions {
            let r = self.regions.get(s.0).expect("live child");
            idx.insert(r.addr, r.size, *s);
        }
        self.regions
            .get_mut(parent.0)
            .expect("live parent")
            .child_index = Some(Box::new(idx));
    }

    /// Removes `child` from `parent`.
    pub fn del_subregion(&mut self, parent: RegionId, child: RegionId) -> Result<(), Error> {
        self.region(parent)?;
        if self.region(child)?.parent != Some(parent) {
            return Err(Error::NotASubregion {
                parent,
                region: child,
            });
        }
        self.transaction(|m| {
            m.note_damage(child);
            m.touch(parent);
            m.unlink(parent, child);
            m.region_mut(child)?.parent = None;
            m.mark_pending();
            Ok(())
        })
    }

    /// Moves a region within its parent. Like QEMU, the region is re-added,
    /// so it becomes the most recent among siblings of equal priority.
    pub fn set_address(&mut self, id: RegionId, addr: u64) -> Result<(), Error> {
        let r = self.region(id)?;
        if addr as u128 + r.size > SIZE_2_64 {
            return Err(Error::BeyondAddressSpace {
                what: "region",
                start: addr,
                size: r.size,
            });
        }
        let (parent, priority) = (r.parent, r.priority);
        self.transaction(|m| {
            m.note_damage(id);
            if let Some(p) = parent {
                m.unlink(p, id);
            }
            m.region_mut(id)?.addr = addr;
            if let Some(p) = parent {
                m.link(p, id, priority);
                m.touch(p);
                m.note_damage(id);
                m.mark_pending();
            }
            Ok(())
        })
    }

    /// Changes a region's priority; it is re-added as for
    /// [`set_address`](Self::set_address).
    pub fn set_priority(&mut self, id: RegionId, priority: i32) -> Result<(), Error> {
        let parent = self.region(id)?.parent;
        self.transaction(|m| {
            if let Some(p) = parent {
                // Unlinked under its old priority: siblings are ordered by it.
                m.unlink(p, id);
                m.region_mut(id)?.priority = priority;
                m.link(p, id, priority);
                m.touch(p);
                m.note_damage(id);
                m.mark_pending();
            } else {
                m.region_mut(id)?.priority = priority;
            }
            Ok(())
        })
    }

    /// Changes a region's size.
    pub fn set_size(&mut self, id: RegionId, size: u128) -> Result<(), Error> {
        let r = self.region(id)?;
        if size == 0 && needs_size(&r.kind) {
            return Err(Error::ZeroSize {
                kind: kind_name(&r.kind),
                name: r.name.clone(),
            });
        }
        let start = r.parent.map_or(0, |_| r.addr);
        if start as u128 + size > SIZE_2_64 {
            return Err(Error::BeyondAddressSpace {
                what: "region",
                start,
                size,
            });
        }
        if let Some((_, offset)) = r.alias() {
            if offset as u128 + size > SIZE_2_64 {
                return Err(Error::BeyondAddressSpace {
                    what: "alias window",
                    start: offset,
                    size,
                });
            }
        }
        if let Some(b) = r.backing() {
            if size > b.len() as u128 {
                return Err(Error::SizeExceedsBacking {
                    region: id,
                    size,
                    backing: b.len(),
                });
            }
        }
        let parent = r.parent;
        self.transaction(|m| {
            m.note_damage(id);
            let old = m.region(id)?.size;
            m.region_mut(id)?.size = size;
            m.refresh_upward(id);
            if let Some(p) = parent {
                let addr = m.region(id)?.addr;
                if let Some(idx) = &mut m.region_mut(p)?.child_index {
                    idx.remove(addr, old, id);
                    idx.insert(addr, size, id);
                }
            }
            m.note_damage(id);
            m.mark_pending();
            Ok(())
        })
    }

    /// Changes an attribute: the region's old and new extents are damaged
    /// (a size change moves its end).
    fn set_attr(&mut self, id: RegionId, f: impl FnOnce(&mut Region)) -> Result<(), Error> {
        self.region(id)?;
        self.transaction(|m| {
            m.note_damage(id);
            f(m.region_mut(id)?);
            m.note_damage(id);
            m.mark_pending();
            Ok(())
        })
    }

    /// Enables or disables a region (and so its subtree).
    pub fn set_enabled(&mut self, id: RegionId, enabled: bool) -> Result<(), Error> {
        self.set_attr(id, |r| r.enabled = enabled)
    }

    /// Sets the read-only flag (inherited by everything rendered below).
    pub fn set_readonly(&mut self, id: RegionId, readonly: bool) -> Result<(), Error> {
        self.set_attr(id, |r| r.readonly = readonly)
    }

    /// Sets the non-volatile flag.
    pub fn set_nonvolatile(&mut self, id: RegionId, nonvolatile: bool) -> Result<(), Error> {
        self.set_attr(id, |r| r.nonvolatile = nonvolatile)
    }

    /// Sets the unmergeable flag.
    pub fn set_unmergeable(&mut self, id: RegionId, unmergeable: bool) -> Result<(), Error> {
        self.set_attr(id, |r| r.unmergeable = unmergeable)
    }

    /// Tells listeners that the mapping behind `id` changed although its
    /// place and attributes did not — e.g. an IOMMU window re-created with
    /// another page size: at the next commit its sections are deleted and
    /// added again. Both happen in the same commit, so IOMMU usage counters
    /// see no stop and start.
    pub fn remap(&mut self, id: RegionId) -> Result<(), Error> {
        self.set_attr(id, |r| r.epoch = r.epoch.wrapping_add(1))
    }

    /// Records the owning device's name (metadata only).
    pub fn set_owner(&mut self, id: RegionId, owner: &str) -> Result<(), Error> {
        self.region_mut(id)?.owner = Some(owner.to_owned());
        Ok(())
    }

    /// Moves an alias's window in its target.
    pub fn set_alias_offset(&mut self, id: RegionId, offset: u64) -> Result<(), Error> {
        let r = self.region(id)?;
        if r.alias().is_none() {
            return Err(self.mismatch(id, "set_alias_offset"));
        }
        if offset as u128 + r.size > SIZE_2_64 {
            return Err(Error::BeyondAddressSpace {
                what: "alias window",
                start: offset,
                size: r.size,
            });
        }
        let out = self.set_attr(id, |r| {
            if let RegionKind::Alias { offset: o, .. } = &mut r.kind {
                *o = offset;
            }
        });
        self.refresh_upward(id);
        out
    }

    /// Switches a ROM device between ROMD mode (reads from memory) and MMIO
    /// mode (every access to its ops).
    pub fn set_romd_mode(&mut self, id: RegionId, on: bool) -> Result<(), Error> {
        if !matches!(self.region(id)?.kind, RegionKind::RomDevice { .. }) {
            return Err(self.mismatch(id, "set_romd_mode"));
        }
        self.set_attr(id, |r| {
            if let RegionKind::RomDevice { romd_mode, .. } = &mut r.kind {
                *romd_mode = on;
            }
        })
    }

    /// Turns dirty logging for `client` on or off for a region.
    pub fn set_log(&mut self, id: RegionId, client: DirtyClient, on: bool) -> Result<(), Error> {
        self.set_attr(id, |r| r.dirty_log_mask = r.dirty_log_mask.with(client, on))
    }

    fn mismatch(&self, id: RegionId, operation: &'static str) -> Error {
        let kind = self.region(id).map(|r| kind_name(&r.kind)).unwrap_or("?");
        Error::KindMismatch {
            region: id,
            kind,
            operation,
        }
    }

    fn check_inside(
        &self,
        id: RegionId,
        what: &'static str,
        start: u64,
        size: u128,
    ) -> Result<(), Error> {
        let region_size = self.region(id)?.size;
        if start as u128 + size > region_size {
            return Err(Error::OutsideRegion {
                what,
                region: id,
                start,
                size,
                region_size,
            });
        }
        Ok(())
    }

    /// Attaches an ioeventfd to a region.
    pub fn add_ioeventfd(&mut self, id: RegionId, fd: Ioeventfd) -> Result<(), Error> {
        self.check_inside(id, "ioeventfd", fd.addr, fd.size as u128)?;
        if self.region(id)?.ioeventfds.contains(&fd) {
            return Err(Error::AlreadyPresent {
                what: "ioeventfd",
                region: id,
            });
        }
        self.set_attr(id, |r| r.ioeventfds.push(fd))
    }

    /// Detaches an ioeventfd (matched by address, size, data and notifier).
    pub fn del_ioeventfd(&mut self, id: RegionId, fd: &Ioeventfd) -> Result<(), Error> {
        if !self.region(id)?.ioeventfds.contains(fd) {
            return Err(Error::NotFound {
                what: "ioeventfd",
                region: id,
            });
        }
        self.set_attr(id, |r| r.ioeventfds.retain(|f| f != fd))
    }

    /// Marks `[offset, offset + size)` of a region for coalesced MMIO.
    pub fn add_coalescing(&mut self, id: RegionId, offset: u64, size: u64) -> Result<(), Error> {
        if size == 0 {
            return Err(Error::ZeroSize {
                kind: "coalesced range",
                name: self.region(id)?.name.clone(),
            });
        }
        self.check_inside(id, "coalesced range", offset, size as u128)?;
        let range = AddrRange {
            start: offset,
            size: size as u128,
        };
        if self.region(id)?.coalesced.contains(&range) {
            return Err(Error::AlreadyPresent {
                what: "coalesced range",
                region: id,
            });
        }
        self.set_attr(id, |r| r.coalesced.push(range))
    }

    /// Removes every coalesced-MMIO range of a region.
    pub fn clear_coalescing(&mut self, id: RegionId) -> Result<(), Error> {
        self.set_attr(id, |r| r.coalesced.clear())
    }
}
