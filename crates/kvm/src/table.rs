//! The slot table: the memory slots KVM holds for one listener, and the
//! ioctls that change them (see the [`listener`](crate::listener) module
//! docs for when each is used).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use addrspace_core::{HostMemory, Section};
use kvm_bindings::kvm_userspace_memory_region;
use parking_lot::Mutex;

use crate::dirty::DirtyPages;
use crate::error::Error;
use crate::kernel::VmOps;
use crate::pool::SlotPool;
use crate::slot::{Geometry, MemSlot};

/// Where slots are made: the VM, its slot numbers, the page size, and
/// where dirty pages go.
pub(crate) struct Kernel {
    pub(crate) vm: Arc<dyn VmOps>,
    pub(crate) pool: SlotPool,
    pub(crate) page_size: u64,
    pub(crate) dirty: DirtyPages,
}

impl Kernel {
    /// Creates or updates `slot` in KVM.
    ///
    /// Callers keep the `Arc<HostMemory>` behind `slot.userspace_addr` in
    /// the slot table for as long as KVM holds the slot.
    fn set(&self, slot: &MemSlot) -> Result<(), i32> {
        let region = kvm_userspace_memory_region {
            slot: slot.slot,
            flags: slot.flags(),
            guest_phys_addr: slot.guest_phys_addr,
            memory_size: slot.memory_size,
            userspace_addr: slot.userspace_addr,
        };
        // SAFETY: the host range lies inside a section's backing (see
        // `Geometry::of`), and the slot table keeps that `HostMemory` alive
        // until KVM has confirmed the slot's deletion (or forever, if the
        // deletion fails).
        unsafe { self.vm.set_user_memory_region(region) }
    }

    pub(crate) fn delete(&self, slot: &MemSlot) -> Result<(), i32> {
        let region = kvm_userspace_memory_region {
            slot: slot.slot,
            flags: 0,
            guest_phys_addr: slot.guest_phys_addr,
            memory_size: 0,
            userspace_addr: slot.userspace_addr,
        };
        // SAFETY: a zero size deletes the slot; KVM maps nothing new.
        unsafe { self.vm.set_user_memory_region(region) }
    }

    /// Folds KVM's dirty log of a logging slot into [`DirtyPages`].
    pub(crate) fn sync(&self, slot: &MemSlot) -> Result<(), Error> {
        if !slot.log_dirty {
            return Ok(());
        }
        let bitmap = self
            .vm
            .get_dirty_log(slot.slot, slot.memory_size)
            .map_err(|errno| Error::Kvm {
                op: "KVM_GET_DIRTY_LOG",
                errno,
            })?;
        self.dirty
            .mark_bitmap(slot.region, slot.offset_in_region, self.page_size, &bitmap);
        Ok(())
    }
}

/// A slot KVM holds for this listener.
pub(crate) struct Held {
    pub(crate) slot: MemSlot,
    /// Start of the section that holds it; `None` while retiring.
    pub(crate) owner: Option<u64>,
    /// Whether dirty logging should be on (applied at `commit`).
    pub(crate) want_log: bool,
    /// Keeps the guest memory mapped while KVM maps it.
    pub(crate) backing: Arc<HostMemory>,
}

/// The listener's slots: exactly the slots KVM holds for it.
#[derive(Default)]
pub(crate) struct SlotTable {
    pub(crate) held: BTreeMap<u32, Held>,
    /// Section start -> slot number, for the sections that hold a slot.
    pub(crate) by_section: BTreeMap<u64, u32>,
}

impl SlotTable {
    fn retiring(&self) -> impl Iterator<Item = (&u32, &Held)> + '_ {
        self.held.iter().filter(|(_, h)| h.owner.is_none())
    }

    pub(crate) fn add(&mut self, k: &Kernel, section: &Section, g: Geometry) -> Result<(), Error> {
        let start = section.start();
        let want_log = !section.range.dirty_log_mask.is_empty();
        let backing = section
            .backing
            .clone()
            .expect("memory sections have a backing");
        let reuse = self
            .retiring()
            .find(|(_, h)| g.same_slot(&h.slot))
            .map(|(n, _)| *n);
        if let Some(n) = reuse {
            let h = self.held.get_mut(&n).expect("found above");
            tracing::debug!(slot = n, gpa = g.guest_phys_addr, "memslot kept");
            h.owner = Some(start);
            h.want_log = want_log;
            h.slot.region = section.region();
            h.slot.offset_in_region = g.offset_in_region;
            h.backing = backing;
            self.by_section.insert(start, n);
            return Ok(());
        }
        // The same pages at a new guest address: KVM moves a slot in one
        // ioctl (KVM_MR_MOVE), so the guest never sees them unmapped.
        let moving = self
            .retiring()
            .find(|(_, h)| g.same_pages(&h.slot))
            .map(|(n, _)| *n);
        let in_the_way: Vec<u32> = self
            .retiring()
            .filter(|(n, h)| {
                Some(**n) != moving && h.slot.overlaps(g.guest_phys_addr, g.memory_size)
            })
            .map(|(n, _)| *n)
            .collect();
        for n in in_the_way {
            self.delete(k, n)?;
        }
        if let Some(n) = moving {
            return self.relocate(k, n, section, g, want_log, backing);
        }
        let n = match k.pool.alloc() {
            Some(n) => n,
            None => {
                // Retiring slots still hold numbers: give them back first.
                let retiring: Vec<u32> = self.retiring().map(|(n, _)| *n).collect();
                for n in retiring {
                    self.delete(k, n)?;
                }
                k.pool.alloc().ok_or(Error::SlotLimit {
                    limit: k.pool.limit(),
                })?
            }
        };
        let slot = MemSlot {
            slot: n,
            guest_phys_addr: g.guest_phys_addr,
            memory_size: g.memory_size,
            userspace_addr: g.userspace_addr,
            readonly: g.readonly,
            log_dirty: want_log,
            region: section.region(),
            offset_in_region: g.offset_in_region,
        };
        if let Err(errno) = k.set(&slot) {
            k.pool.free(n);
            return Err(Error::SlotRefused {
                slot: n,
                guest_phys_addr: slot.guest_phys_addr,
                memory_size: slot.memory_size,
                flags: slot.flags(),
                errno,
            });
        }
        tracing::debug!(
            slot = n,
            gpa = slot.guest_phys_addr,
            size = slot.memory_size,
            flags = slot.flags(),
            "memslot created"
        );
        self.held.insert(
            n,
            Held {
                slot,
                owner: Some(start),
                want_log,
                backing,
            },
        );
        self.by_section.insert(start, n);
        Ok(())
    }

    /// Moves retiring slot `n` to `g`'s guest address for `section`.
    fn relocate(
        &mut self,
        k: &Kernel,
        n: u32,
        section: &Section,
        g: Geometry,
        want_log: bool,
        backing: Arc<HostMemory>,
    ) -> Result<(), Error> {
        let h = self.held.get_mut(&n).expect("retiring slot is held");
        let moved = MemSlot {
            guest_phys_addr: g.guest_phys_addr,
            log_dirty: want_log || h.slot.log_dirty,
            region: section.region(),
            offset_in_region: g.offset_in_region,
            ..h.slot.clone()
        };
        k.set(&moved).map_err(|errno| Error::SlotRefused {
            slot: n,
            guest_phys_addr: moved.guest_phys_addr,
            memory_size: moved.memory_size,
            flags: moved.flags(),
            errno,
        })?;
        tracing::debug!(
            slot = n,
            from = h.slot.guest_phys_addr,
            to = moved.guest_phys_addr,
            "memslot moved"
        );
        h.slot = moved;
        h.owner = Some(section.start());
        h.want_log = want_log;
        h.backing = backing;
        self.by_section.insert(section.start(), n);
        Ok(())
    }

    /// The section starting at `start` is gone: its slot retires.
    pub(crate) fn retire(&mut self, start: u64) {
        if let Some(n) = self.by_section.remove(&start) {
            let h = self.held.get_mut(&n).expect("indexed slots are held");
            h.owner = None;
            h.want_log = false;
        }
    }

    /// Deletes slot `n` from KVM (after saving its dirty log).
    pub(crate) fn delete(&mut self, k: &Kernel, n: u32) -> Result<(), Error> {
        let h = self.held.get(&n).expect("deleting a held slot");
        if let Err(e) = k.sync(&h.slot) {
            tracing::warn!(slot = n, error = %e, "dirty log lost on slot deletion");
        }
        k.delete(&h.slot).map_err(|errno| Error::Kvm {
            op: "KVM_SET_USER_MEMORY_REGION (delete)",
            errno,
        })?;
        tracing::debug!(slot = n, gpa = h.slot.guest_phys_addr, "memslot deleted");
        let h = self.held.remove(&n).expect("held above");
        if let Some(start) = h.owner {
            self.by_section.remove(&start);
        }
        k.pool.free(n);
        Ok(())
    }

    /// Turns dirty logging on or off in place.
    fn set_log(&mut self, k: &Kernel, n: u32, on: bool) -> Result<(), Error> {
        let h = self.held.get_mut(&n).expect("held slot");
        if !on {
            k.sync(&h.slot)?;
        }
        let next = MemSlot {
            log_dirty: on,
            ..h.slot.clone()
        };
        k.set(&next).map_err(|errno| Error::Kvm {
            op: "KVM_SET_USER_MEMORY_REGION (flags)",
            errno,
        })?;
        tracing::debug!(slot = n, log = on, "memslot dirty logging");
        h.slot = next;
        Ok(())
    }

    /// Brings KVM in line with the table's wishes: retiring slots go,
    /// logging flags follow `want_log`. Failures are logged; the table
    /// keeps describing what KVM really holds, and the next commit tries
    /// again.
    pub(crate) fn reconcile(&mut self, k: &Kernel) {
        let retiring: Vec<u32> = self.retiring().map(|(n, _)| *n).collect();
        for n in retiring {
            if let Err(e) = self.delete(k, n) {
                tracing::error!(slot = n, error = %e, "cannot delete memslot; kept");
            }
        }
        let flips: Vec<(u32, bool)> = self
            .held
            .iter()
            .filter(|(_, h)| h.owner.is_some() && h.want_log != h.slot.log_dirty)
            .map(|(n, h)| (*n, h.want_log))
            .collect();
        for (n, on) in flips {
            if let Err(e) = self.set_log(k, n, on) {
                tracing::error!(slot = n, error = %e, "cannot change dirty logging");
            }
        }
    }
}

/// A read-only view of a listener's memory slots, shared with it.
#[derive(Clone)]
pub struct MemSlots(pub(crate) Arc<Mutex<SlotTable>>);

impl MemSlots {
    /// Every slot KVM holds for the listener, by guest address.
    pub fn slots(&self) -> Vec<MemSlot> {
        let mut out: Vec<MemSlot> = self
            .0
            .lock()
            .held
            .values()
            .map(|h| h.slot.clone())
            .collect();
        out.sort_by_key(|s| s.guest_phys_addr);
        out
    }

    /// The slot mapping guest address `addr`, if any.
    pub fn find(&self, addr: u64) -> Option<MemSlot> {
        self.0
            .lock()
            .held
            .values()
            .find(|h| h.slot.contains(addr))
            .map(|h| h.slot.clone())
    }

    /// Number of slots held.
    pub fn len(&self) -> usize {
        self.0.lock().held.len()
    }

    /// True if no slot is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for MemSlots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.slots()).finish()
    }
}
