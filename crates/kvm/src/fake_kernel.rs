//! A model of KVM's memory-slot and ioeventfd rules, for unit tests that
//! must run without `/dev/kvm`. It follows the checks of the kernel's
//! `__kvm_set_memory_region` (alignment, slot limit, create/delete/move/
//! flags-only, overlap) and records dirty pages on demand.

use std::collections::{BTreeMap, BTreeSet};

use kvm_bindings::{
    kvm_ioeventfd, kvm_ioeventfd_flag_nr_deassign, kvm_userspace_memory_region,
    KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY,
};
use parking_lot::Mutex;

use crate::kernel::VmOps;

pub(crate) const PAGE: u64 = 4096;

#[derive(Default)]
struct State {
    nr_slots: u32,
    slots: BTreeMap<u32, kvm_userspace_memory_region>,
    /// Dirty page indices per slot.
    dirty: BTreeMap<u32, BTreeSet<u64>>,
    ioeventfds: Vec<kvm_ioeventfd>,
    memslot_calls: usize,
}

/// The fake VM.
#[derive(Default)]
pub(crate) struct FakeKvm(Mutex<State>);

impl FakeKvm {
    pub(crate) fn new(nr_slots: u32) -> Self {
        FakeKvm(Mutex::new(State {
            nr_slots,
            ..State::default()
        }))
    }

    /// The slots, by guest address.
    pub(crate) fn slots(&self) -> Vec<kvm_userspace_memory_region> {
        let mut v: Vec<_> = self.0.lock().slots.values().copied().collect();
        v.sort_by_key(|s| s.guest_phys_addr);
        v
    }

    /// How many `KVM_SET_USER_MEMORY_REGION` calls were made.
    pub(crate) fn memslot_calls(&self) -> usize {
        self.0.lock().memslot_calls
    }

    /// A guest write at `gpa`: true if memory took it (a writable slot),
    /// false if it would exit as MMIO.
    pub(crate) fn guest_write(&self, gpa: u64) -> bool {
        let mut st = self.0.lock();
        let Some(s) = st
            .slots
            .values()
            .find(|s| gpa >= s.guest_phys_addr && gpa - s.guest_phys_addr < s.memory_size)
            .copied()
        else {
            return false;
        };
        if s.flags & KVM_MEM_READONLY != 0 {
            return false;
        }
        if s.flags & KVM_MEM_LOG_DIRTY_PAGES != 0 {
            let page = (gpa - s.guest_phys_addr) / PAGE;
            st.dirty.entry(s.slot).or_default().insert(page);
        }
        true
    }

    /// The ioeventfds assigned.
    pub(crate) fn ioeventfds(&self) -> Vec<kvm_ioeventfd> {
        self.0.lock().ioeventfds.clone()
    }
}

fn overlaps(a: &kvm_userspace_memory_region, start: u64, size: u64) -> bool {
    let (a0, a1) = (
        a.guest_phys_addr as u128,
        a.guest_phys_addr as u128 + a.memory_size as u128,
    );
    let (b0, b1) = (start as u128, start as u128 + size as u128);
    a0 < b1 && b0 < a1
}

impl VmOps for FakeKvm {
    unsafe fn set_user_memory_region(&self, r: kvm_userspace_memory_region) -> Result<(), i32> {
        let mut st = self.0.lock();
        st.memslot_calls += 1;
        if r.flags & !(KVM_MEM_READONLY | KVM_MEM_LOG_DIRTY_PAGES) != 0
            || !r.memory_size.is_multiple_of(PAGE)
            || !r.guest_phys_addr.is_multiple_of(PAGE)
            || !r.userspace_addr.is_multiple_of(PAGE)
            || r.slot >= st.nr_slots
            || r.guest_phys_addr.checked_add(r.memory_size).is_none()
        {
            return Err(libc::EINVAL);
        }
        let old = st.slots.get(&r.slot).copied();
        if r.memory_size == 0 {
            return match old {
                None => Err(libc::EINVAL),
                Some(_) => {
                    st.slots.remove(&r.slot);
                    st.dirty.remove(&r.slot);
                    Ok(())
                }
            };
        }
        let placed = match old {
            None => true,
            Some(o) => {
                if o.userspace_addr != r.userspace_addr
                    || o.memory_size != r.memory_size
                    || (o.flags ^ r.flags) & KVM_MEM_READONLY != 0
                {
                    return Err(libc::EINVAL);
                }
                if o.guest_phys_addr == r.guest_phys_addr && o.flags == r.flags {
                    return Ok(());
                }
                o.guest_phys_addr != r.guest_phys_addr
            }
        };
        if placed
            && st
                .slots
                .values()
                .any(|s| s.slot != r.slot && overlaps(s, r.guest_phys_addr, r.memory_size))
        {
            return Err(libc::EEXIST);
        }
        if r.flags & KVM_MEM_LOG_DIRTY_PAGES == 0 {
            st.dirty.remove(&r.slot);
        }
        st.slots.insert(r.slot, r);
        Ok(())
    }

    fn get_dirty_log(&self, slot: u32, memory_size: u64) -> Result<Vec<u64>, i32> {
        let mut st = self.0.lock();
        let Some(s) = st.slots.get(&slot).copied() else {
            return Err(libc::ENOENT);
        };
        if s.flags & KVM_MEM_LOG_DIRTY_PAGES == 0 {
            return Err(libc::ENOENT);
        }
        let pages = memory_size.div_ceil(PAGE);
        let mut bitmap = vec![0u64; pages.div_ceil(64) as usize];
        for page in st.dirty.remove(&slot).unwrap_or_default() {
            bitmap[(page / 64) as usize] |= 1 << (page % 64);
        }
        Ok(bitmap)
    }

    fn ioeventfd(&self, e: &kvm_ioeventfd) -> Result<(), i32> {
        let mut st = self.0.lock();
        let deassign = 1 << kvm_ioeventfd_flag_nr_deassign;
        let plain = kvm_ioeventfd {
            flags: e.flags & !deassign,
            ..*e
        };
        let at = st.ioeventfds.iter().position(|x| *x == plain);
        match (e.flags & deassign != 0, at) {
            (false, Some(_)) => Err(libc::EEXIST),
            (false, None) => {
                st.ioeventfds.push(plain);
                Ok(())
            }
            (true, Some(i)) => {
                st.ioeventfds.remove(i);
                Ok(())
            }
            (true, None) => Err(libc::ENOENT),
        }
    }
}
