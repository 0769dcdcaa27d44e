//! Ioeventfds and coalesced-MMIO ranges as seen by listeners.

use std::fmt;
use std::sync::Arc;

use crate::id::RegionId;

/// Something an ioeventfd signals: an eventfd, or anything a test can count.
pub trait EventNotifier: Send + Sync {
    /// Signals the event (what the kernel does on a matching write).
    fn notify(&self);
    /// The file descriptor to hand to KVM, if this is a real eventfd.
    fn raw_fd(&self) -> Option<i32> {
        None
    }
}

/// An ioeventfd attached to a region (QEMU's `MemoryRegionIoeventfd`):
/// a write of `size` bytes at `addr` (region-relative) — with the value
/// `datamatch` if given — signals `notifier` instead of exiting to the VMM.
#[derive(Clone)]
pub struct Ioeventfd {
    /// Region-relative address.
    pub addr: u64,
    /// Access size; 0 matches any size.
    pub size: u64,
    /// Only writes of this value match, if set.
    pub datamatch: Option<u64>,
    /// What is signalled.
    pub notifier: Arc<dyn EventNotifier>,
}

impl Ioeventfd {
    pub(crate) fn key(&self) -> (u64, u64, Option<u64>, usize) {
        (
            self.addr,
            self.size,
            self.datamatch,
            Arc::as_ptr(&self.notifier) as *const () as usize,
        )
    }
}

impl PartialEq for Ioeventfd {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl Eq for Ioeventfd {}

impl fmt::Debug for Ioeventfd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ioeventfd")
            .field("addr", &format_args!("{:#x}", self.addr))
            .field("size", &self.size)
            .field("datamatch", &self.datamatch)
            .finish_non_exhaustive()
    }
}

/// An ioeventfd placed in an address space, as `eventfd_add` /
/// `eventfd_del` deliver it.
#[derive(Clone, PartialEq, Eq)]
pub struct FlatIoeventfd {
    /// Address in the address space.
    pub addr: u64,
    /// The region that owns it.
    pub region: RegionId,
    /// The ioeventfd, with its region-relative address.
    pub fd: Ioeventfd,
}

impl FlatIoeventfd {
    pub(crate) fn key(&self) -> (u64, u64, Option<u64>, usize, RegionId) {
        let (_, size, data, ptr) = self.fd.key();
        (self.addr, size, data, ptr, self.region)
    }
}

impl fmt::Debug for FlatIoeventfd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlatIoeventfd")
            .field("addr", &format_args!("{:#x}", self.addr))
            .field("region", &self.region)
            .field("fd", &self.fd)
            .finish()
    }
}

/// A coalesced-MMIO range placed in an address space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlatCoalesced {
    /// Address in the address space.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// The region that owns it.
    pub region: RegionId,
}
