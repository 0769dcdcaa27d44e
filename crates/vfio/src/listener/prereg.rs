//! The memory listener of an sPAPR container: follows guest RAM for the
//! IOMMU notifiers and, on v2, pre-registers it (`REGISTER_MEMORY` /
//! `UNREGISTER_MEMORY` by host address, whole host pages only).
//!
//! Registrations are counted per host range, so two sections over the
//! same host memory (an aliased RAM block) share one. Unregistration is
//! deferred to `commit` (see the ordering notes in the
//! [parent module](super)); a range re-added in the same commit is simply
//! kept.

use std::collections::BTreeMap;
use std::sync::Arc;

use addrspace_core::{ListenerCx, ListenerResult, Section};

use super::{is_guest_ram, whole_pages};
use crate::call::KernelExt;
use crate::container::{Registered, Shared};
use crate::error::VfioError;
use crate::guest_ram::RamRange;
use crate::kernel::VfioKernel;

/// A host range `(vaddr, size)`.
type HostRange = (u64, u64);

/// See the [module docs](self).
pub(crate) struct PreregListener<K: VfioKernel> {
    shared: Arc<Shared<K>>,
    /// v2: register memory; v1: only follow it.
    register: bool,
    /// RAM sections held, by guest address, with the range registered
    /// for each.
    sections: BTreeMap<u64, Option<HostRange>>,
    /// Ranges whose release waits for the end of the commit.
    pending: Vec<HostRange>,
}

impl<K: VfioKernel> PreregListener<K> {
    pub(crate) fn new(shared: Arc<Shared<K>>, register: bool) -> Self {
        Self {
            shared,
            register,
            sections: BTreeMap::new(),
            pending: Vec::new(),
        }
    }

    /// Takes one reference on `range`, registering it if it is new.
    fn acquire(&mut self, range: HostRange) -> Result<(), VfioError> {
        if let Some(pos) = self.pending.iter().position(|&p| p == range) {
            // Released and re-added in one commit: keep the registration.
            self.pending.swap_remove(pos);
            return Ok(());
        }
        let (vaddr, size) = range;
        let sh = &*self.shared;
        if let Some(reg) = sh.state.lock().registered.get_mut(&vaddr) {
            if reg.size == size {
                // Another section over the same host memory, or a range
                // the kernel kept when unregistering failed.
                reg.users += 1;
                return Ok(());
            }
        }
        // A range being replaced (a resized RAM block) must go before the
        // kernel accepts one that overlaps it.
        let end = u128::from(vaddr) + u128::from(size);
        let overlapping: Vec<HostRange> = self
            .pending
            .iter()
            .copied()
            .filter(|&(v, s)| {
                u128::from(v) < end && u128::from(vaddr) < u128::from(v) + u128::from(s)
            })
            .collect();
        self.pending.retain(|p| !overlapping.contains(p));
        for old in overlapping {
            self.release(old);
        }
        sh.kernel.register_typed(sh.fd, vaddr, size)?;
        sh.state
            .lock()
            .registered
            .insert(vaddr, Registered { size, users: 1 });
        Ok(())
    }

    /// Drops one reference on `range`, unregistering it with the last.
    /// A failure is logged and the range stays recorded, as the kernel
    /// still holds it.
    fn release(&self, (vaddr, size): HostRange) {
        let sh = &*self.shared;
        let mut st = sh.state.lock();
        let Some(reg) = st.registered.get_mut(&vaddr) else {
            return;
        };
        reg.users = reg.users.saturating_sub(1);
        if reg.users > 0 {
            return;
        }
        match sh.kernel.unregister_typed(sh.fd, vaddr, size) {
            Ok(()) => {
                st.registered.remove(&vaddr);
            }
            Err(err) => {
                drop(st);
                sh.log(err);
            }
        }
    }
}

impl<K: VfioKernel> addrspace_core::Listener for PreregListener<K> {
    fn region_add(&mut self, _cx: &mut ListenerCx<'_>, section: &Section) -> ListenerResult {
        if !is_guest_ram(section) {
            return Ok(());
        }
        let host = section.host_addr().expect("RAM has host memory");
        // RAM is backed by host memory, whose length is a u64.
        let size = u64::try_from(section.size()).expect("RAM fits host memory");
        let page = self.shared.config.host_page_size;
        let registered = if self.register {
            whole_pages(host, size, page)
        } else {
            None
        };
        if let Some(range) = registered {
            self.acquire(range)?;
        }
        self.shared.ram.write().insert(RamRange {
            gpa: section.start(),
            size,
            host,
            readonly: section.readonly(),
        });
        self.sections.insert(section.start(), registered);
        Ok(())
    }

    fn region_del(&mut self, _cx: &mut ListenerCx<'_>, section: &Section) {
        let Some(registered) = self.sections.remove(&section.start()) else {
            return;
        };
        self.shared.ram.write().remove(section.start());
        if let Some(range) = registered {
            self.pending.push(range);
        }
    }

    fn commit(&mut self, _cx: &mut ListenerCx<'_>) {
        for range in std::mem::take(&mut self.pending) {
            self.release(range);
        }
    }
}
