//! [`KvmMemoryListener`]: keeps a VM's memory slots and ioeventfds equal to
//! an address space.
//!
//! # How a commit reaches KVM
//!
//! The core delivers a commit as `begin`, every `region_del` (and
//! `log_stop`) of the address space, then every `region_add` (and
//! `log_start`), then ioeventfd changes, then `commit` (see
//! [`addrspace_core::listener`]). KVM can only change one slot per ioctl,
//! so the guest can see in-between states; the listener keeps them few
//! and short:
//!
//! - `region_del` does not delete the slot: it marks it *retiring*, and
//!   the guest keeps using it.
//! - `region_add` first looks for a retiring slot that maps exactly the
//!   same pages the same way (a range re-added because some attribute KVM
//!   does not see changed, or split and merged back): it is taken over
//!   with no ioctl at all, dirty bits included. Failing that, a retiring
//!   slot with the same host pages at another guest address (a moved
//!   region or alias) is moved in one ioctl (`KVM_MR_MOVE`), which KVM
//!   applies atomically. Otherwise the retiring slots that overlap the new
//!   one are deleted just before it is created: the window in which those
//!   addresses have no slot is the time between two ioctls. A vCPU that
//!   touches them then gets an MMIO exit, which the VMM should serve from
//!   the view it loads — still the *old* one, since the core publishes an
//!   address space's new view only after dispatching its additions.
//! - `commit` deletes the retiring slots nobody took over, and applies
//!   dirty-logging changes in place on the same slot (KVM allows toggling
//!   `KVM_MEM_LOG_DIRTY_PAGES` without deleting the slot), syncing the
//!   dirty log first when logging stops so no dirty page is lost.
//!
//! A slot KVM refuses (overlap with a slot someone else set, or no slot
//! number left) is refused by `region_add`; the listener then does not hold
//! the section and its table still lists exactly what KVM holds.

use std::fmt;
use std::sync::Arc;

use addrspace_core::{
    DirtyLogMask, FlatIoeventfd, Listener, ListenerConfig, ListenerCx, ListenerResult, Section,
};
use kvm_ioctls::VmFd;
use parking_lot::Mutex;

use crate::dirty::DirtyPages;
use crate::error::Error;
use crate::eventfd::{self, IoSpace};
use crate::kernel::{host_page_size, VmOps};
use crate::pool::SlotPool;
use crate::slot::Geometry;
use crate::table::{Kernel, MemSlots, SlotTable};

/// Keeps a KVM VM's memory slots and ioeventfds equal to one address
/// space (QEMU's `kvm_memory_listener` and `kvm_io_listener`).
///
/// Memory sections (RAM, ROM, RAM-device memory and ROM devices in ROMD
/// mode: [`Section::is_memory`]) get one slot each, cut down to whole host
/// pages; ROMs and ROM devices get read-only slots, so guest writes exit
/// as MMIO. MMIO never gets a slot. See the [module docs](self) for how a
/// commit is turned into ioctls, and [`IoSpace`] for I/O-port address
/// spaces.
///
/// Dropping the listener deletes its slots and ioeventfds from the VM, so
/// an address space torn down with [`Unregister::Detach`](addrspace_core::Unregister)
/// leaves nothing mapped once the listener handed back is dropped.
pub struct KvmMemoryListener {
    kernel: Kernel,
    io_space: IoSpace,
    table: Arc<Mutex<SlotTable>>,
    ioeventfds: Vec<FlatIoeventfd>,
    in_commit: bool,
}

impl KvmMemoryListener {
    /// A listener putting slots in `vm`, with numbers from `pool` (share
    /// one pool between all listeners of a VM; [`KvmVm`](crate::KvmVm)
    /// does).
    pub fn new(vm: Arc<VmFd>, pool: SlotPool) -> Self {
        Self::with_kernel(vm, pool, host_page_size())
    }

    pub(crate) fn with_kernel(vm: Arc<dyn VmOps>, pool: SlotPool, page_size: u64) -> Self {
        KvmMemoryListener {
            kernel: Kernel {
                vm,
                pool,
                page_size,
                dirty: DirtyPages::new(),
            },
            io_space: IoSpace::Mmio,
            table: Arc::default(),
            ioeventfds: Vec::new(),
            in_commit: false,
        }
    }

    /// Sets the bus the address space is on. On [`IoSpace::Pio`] the
    /// listener handles ioeventfds only and makes no memory slots.
    pub fn io_space(mut self, space: IoSpace) -> Self {
        self.io_space = space;
        self
    }

    /// How to register this listener: named `kvm` (or `kvm-io`), priority
    /// 10 as in QEMU, so that it hears additions after lower-priority
    /// listeners and deletions before them.
    pub fn config(&self) -> ListenerConfig {
        let name = match self.io_space {
            IoSpace::Mmio => "kvm",
            IoSpace::Pio => "kvm-io",
        };
        ListenerConfig::new(name).priority(10)
    }

    /// A view of the slots this listener holds.
    pub fn mem_slots(&self) -> MemSlots {
        MemSlots(Arc::clone(&self.table))
    }

    /// Where [`Memory::log_sync`](addrspace_core::Memory::log_sync) puts
    /// the pages the guest dirtied.
    pub fn dirty_pages(&self) -> DirtyPages {
        self.kernel.dirty.clone()
    }

    /// The page size of slots and dirty bitmaps.
    pub fn page_size(&self) -> u64 {
        self.kernel.page_size
    }

    fn log_change(&mut self, section: &Section, new: DirtyLogMask) {
        let mut table = self.table.lock();
        let Some(&n) = table.by_section.get(&section.start()) else {
            return;
        };
        table
            .held
            .get_mut(&n)
            .expect("indexed slots are held")
            .want_log = !new.is_empty();
        if !self.in_commit {
            table.reconcile(&self.kernel);
        }
    }
}

impl Listener for KvmMemoryListener {
    fn begin(&mut self, _cx: &mut ListenerCx<'_>) {
        self.in_commit = true;
    }

    fn commit(&mut self, _cx: &mut ListenerCx<'_>) {
        self.table.lock().reconcile(&self.kernel);
        self.in_commit = false;
    }

    fn region_add(&mut self, _cx: &mut ListenerCx<'_>, section: &Section) -> ListenerResult {
        if self.io_space == IoSpace::Pio {
            return Ok(());
        }
        let Some(g) = Geometry::of(section, self.kernel.page_size)? else {
            return Ok(());
        };
        let mut table = self.table.lock();
        table.add(&self.kernel, section, g)?;
        if !self.in_commit {
            table.reconcile(&self.kernel);
        }
        Ok(())
    }

    fn region_del(&mut self, _cx: &mut ListenerCx<'_>, section: &Section) {
        let mut table = self.table.lock();
        table.retire(section.start());
        if !self.in_commit {
            table.reconcile(&self.kernel);
        }
    }

    fn log_start(
        &mut self,
        _cx: &mut ListenerCx<'_>,
        section: &Section,
        _old: DirtyLogMask,
        new: DirtyLogMask,
    ) {
        self.log_change(section, new);
    }

    fn log_stop(
        &mut self,
        _cx: &mut ListenerCx<'_>,
        section: &Section,
        _old: DirtyLogMask,
        new: DirtyLogMask,
    ) {
        self.log_change(section, new);
    }

    fn log_sync(&mut self, _cx: &mut ListenerCx<'_>, section: &Section) {
        let table = self.table.lock();
        let Some(n) = table.by_section.get(&section.start()) else {
            return;
        };
        if let Err(e) = self.kernel.sync(&table.held[n].slot) {
            tracing::warn!(slot = n, error = %e, "dirty log sync failed");
        }
    }

    fn eventfd_add(&mut self, _cx: &mut ListenerCx<'_>, fd: &FlatIoeventfd) -> ListenerResult {
        let request = eventfd::request(fd, self.io_space, false)?;
        self.kernel
            .vm
            .ioeventfd(&request)
            .map_err(|errno| Error::IoeventfdRefused {
                addr: fd.addr,
                len: request.len,
                datamatch: fd.fd.datamatch,
                errno,
            })?;
        tracing::debug!(addr = fd.addr, len = request.len, space = ?self.io_space, "ioeventfd assigned");
        self.ioeventfds.push(fd.clone());
        Ok(())
    }

    fn eventfd_del(&mut self, _cx: &mut ListenerCx<'_>, fd: &FlatIoeventfd) {
        let Some(i) = self.ioeventfds.iter().position(|held| held == fd) else {
            tracing::warn!(addr = fd.addr, "eventfd_del for an ioeventfd not held");
            return;
        };
        let held = self.ioeventfds.swap_remove(i);
        deassign(&self.kernel, self.io_space, &held);
    }
}

fn deassign(kernel: &Kernel, space: IoSpace, fd: &FlatIoeventfd) {
    let result = eventfd::request(fd, space, true).and_then(|r| {
        kernel.vm.ioeventfd(&r).map_err(|errno| Error::Kvm {
            op: "KVM_IOEVENTFD (deassign)",
            errno,
        })
    });
    match result {
        Ok(()) => tracing::debug!(addr = fd.addr, "ioeventfd deassigned"),
        Err(e) => tracing::error!(addr = fd.addr, error = %e, "cannot deassign ioeventfd"),
    }
}

impl Drop for KvmMemoryListener {
    fn drop(&mut self) {
        for fd in std::mem::take(&mut self.ioeventfds) {
            deassign(&self.kernel, self.io_space, &fd);
        }
        let mut table = self.table.lock();
        let slots: Vec<u32> = table.held.keys().copied().collect();
        for n in slots {
            if let Err(e) = table.delete(&self.kernel, n) {
                // KVM still maps the memory: it must stay mapped, forever.
                tracing::error!(slot = n, error = %e, "cannot delete memslot; leaking its memory");
                let h = table.held.remove(&n).expect("held");
                std::mem::forget(h.backing);
            }
        }
    }
}

impl fmt::Debug for KvmMemoryListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KvmMemoryListener")
            .field("io_space", &self.io_space)
            .field("slots", &self.table.lock().held.len())
            .field("ioeventfds", &self.ioeventfds.len())
            .field("page_size", &self.kernel.page_size)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
#[path = "listener_tests.rs"]
mod tests;
