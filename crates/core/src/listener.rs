//! The listener contract: what a listener is told, and in which order.
//!
//! A [`Listener`] is registered on one address space with a
//! [`ListenerConfig`] (name, priority, whether it is an IOMMU user, whether
//! it wants `region_nop`). Every method has a default that does nothing.
//!
//! # Order of a commit
//!
//! When the outermost transaction commits and something changed:
//!
//! 1. `begin` on every listener, in ascending priority (ties: registration
//!    order).
//! 2. For each address space whose view changed, in creation order:
//!    1. deletions, in ascending address order; for each deleted range the
//!       listeners of that address space in *descending* priority get
//!       `log_stop(old, empty)` (if the range was logged) then `region_del`;
//!    2. additions and unchanged ranges, in ascending address order, to the
//!       listeners in *ascending* priority: for a new range `region_add`
//!       then `log_start(empty, mask)` if it is logged; for an unchanged
//!       range `region_nop` (only to listeners that asked for it) and, if
//!       its dirty-log mask changed, `log_start(old, new)` (ascending) and
//!       `log_stop(old, new)` (descending);
//!    3. `eventfd_del` (descending) then `eventfd_add` (ascending), in
//!       address order;
//!    4. `coalesced_io_del` (descending) then `coalesced_io_add`
//!       (ascending), in address order.
//! 3. `commit` on every listener, ascending.
//!
//! The new views are published to readers ([`ViewHandle`](crate::ViewHandle))
//! before step 1: a vCPU that exits on an address whose mapping is being
//! changed resolves it in the new map, while listeners such as KVM are
//! still catching up. IOMMU usage counters are judged between steps 2
//! and 3 (see the `iommu` module).
//!
//! A range whose mapping changed in any attribute other than its dirty-log
//! mask is a deletion plus an addition. Every addition is mirrored by
//! exactly one deletion later, with the same section, so a listener's
//! holdings are always "everything added minus everything deleted".
//!
//! Registration replays the current view as the commit from an empty view
//! would (`begin`, `region_add` + `log_start` per range, `eventfd_add`,
//! `coalesced_io_add`, `commit`); replay-mode unregistration is the commit
//! to an empty view. Detach-mode unregistration sends nothing.
//!
//! # Where this differs from QEMU, on purpose
//!
//! - QEMU sends `region_nop` for every unchanged range of every address
//!   space on every commit; here only listeners that ask for it get them,
//!   and only for address spaces whose view changed.
//! - QEMU's commit does not send `log_start` after `region_add` for a
//!   logged range (only registration does); here both do, and `log_stop`
//!   precedes `region_del`, so starts and stops always pair up.
//! - QEMU sends `eventfd_del` forwards and `eventfd_add` backwards; here
//!   deletions always go in descending priority and additions ascending.
//!
//! # Failures
//!
//! `region_add`, `eventfd_add` and `log_global_start` may refuse by
//! returning an error. During a commit, a refused `region_add` or
//! `eventfd_add` means that listener does not hold the section or fd (it
//! gets nothing more about it, not even the deletion); dispatch goes on and
//! the commit returns [`Error::ListenerRefused`].
//!
//! # Panics
//!
//! Every callback runs under `catch_unwind`. A listener that panics is
//! *detached* at that point:
//!
//! - it is never called again — not for the rest of the commit, not
//!   `commit`, not the deletions an unregistration would replay;
//! - what it held is released without telling it: its contribution to
//!   IOMMU usage counters is counted down exactly as far as it had got
//!   (a section whose `region_add` panicked was never counted; one whose
//!   `region_del` panicked still is, until the release), with
//!   `vfio_stop` where a counter reaches zero, and the IOMMU notifiers
//!   its callbacks registered are unregistered;
//! - it leaves the address space and is dropped (a panic in its `Drop`
//!   is caught and logged too).
//!
//! Everything else goes on: the tree changes as asked, the new views are
//! published, every other listener hears the whole operation, and the
//! operation returns [`Error::ListenerPanicked`]
//! naming the listener, the callback and the panic message (with any other
//! error it would have returned). The change **was applied**. This holds
//! for commits (including the outermost commit of nested transactions),
//! registration (the listener is then not registered), both unregistration
//! modes, `set_global_dirty_log` and `log_sync`.
//!
//! The framework changes its own state only between callbacks, so a panic
//! cannot leave the tree or the counters half-updated; the panicking
//! listener's own state is suspect, which is why it is never called again.
//! IOMMU hooks are guarded the same way: a panicking `vfio_start` is a
//! failed start, a panicking `vfio_stop` still leaves the region stopped,
//! a panicking `notify_flags_changed` is a refusal, and a panicking
//! [`IommuNotify`] does not keep an event from the other notifiers
//! ([`Error::NotifierPanicked`]).
//! Panics in MMIO or IOMMU `translate` callbacks during a guest access
//! happen on the reader's thread, against an immutable snapshot: they
//! unwind to the caller of the access and cannot affect the tree.

use std::fmt;
use std::sync::Arc;

use crate::backing::HostMemory;
use crate::error::Error;
use crate::flatview::FlatRange;
use crate::id::{AddressSpaceId, Arena, ListenerId, NotifierId, RegionId};
use crate::ioevent::{FlatCoalesced, FlatIoeventfd};
use crate::iommu::{IommuNotify, NotifierFlags};
use crate::notifier::IommuState;
use crate::region::{DirtyLogMask, KindTag, Region};

/// What a listener returns when it refuses a callback.
pub type ListenerError = Box<dyn std::error::Error + Send + Sync>;

/// The result of a fallible callback.
pub type ListenerResult = Result<(), ListenerError>;

/// A part of an address space mapped to one region (QEMU's
/// `MemoryRegionSection` for a flat range).
#[derive(Debug, Clone)]
pub struct Section {
    /// The address space it lies in.
    pub address_space: AddressSpaceId,
    /// The flat range: addresses, region, offset, attributes.
    pub range: FlatRange,
    /// The kind of `range.region`.
    pub kind: KindTag,
    /// The region's host memory, for RAM, ROM and ROM devices.
    pub backing: Option<Arc<HostMemory>>,
    /// For RAM: whether it is RAM-device memory (a mapped device BAR).
    pub ram_device: bool,
}

impl Section {
    pub(crate) fn new(address_space: AddressSpaceId, range: FlatRange, region: &Region) -> Section {
        Section {
            address_space,
            range,
            kind: region.kind.tag(),
            backing: region.backing().cloned(),
            ram_device: matches!(region.kind, crate::RegionKind::Ram { device: true, .. }),
        }
    }

    /// First address in the address space.
    pub fn start(&self) -> u64 {
        self.range.start
    }
    /// Last address (inclusive).
    pub fn last(&self) -> u64 {
        self.range.last
    }
    /// Size in bytes (up to 2^64).
    pub fn size(&self) -> u128 {
        self.range.size()
    }
    /// The region.
    pub fn region(&self) -> RegionId {
        self.range.region
    }
    /// Offset of `start` in the region.
    pub fn offset_in_region(&self) -> u64 {
        self.range.offset_in_region
    }
    /// True if writes must not reach the memory.
    pub fn readonly(&self) -> bool {
        self.range.readonly
    }
    /// The host address of `start`, for memory-backed sections.
    pub fn host_addr(&self) -> Option<u64> {
        self.backing
            .as_ref()
            .map(|b| b.host_addr() + self.range.offset_in_region)
    }
    /// True if accesses are served from host memory: RAM, ROM, and ROM
    /// devices in ROMD mode.
    pub fn is_memory(&self) -> bool {
        match self.kind {
            KindTag::Ram => true,
            KindTag::RomDevice => self.range.romd_mode,
            _ => false,
        }
    }
}

/// What a callback may look at and ask for while the tree is borrowed.
///
/// Callbacks cannot change the topology (the borrow checker sees to it);
/// they read regions through this context.
pub struct ListenerCx<'a> {
    pub(crate) regions: &'a Arena<Region>,
    pub(crate) iommu: &'a mut IommuState,
    pub(crate) address_space: AddressSpaceId,
    pub(crate) listener: ListenerId,
}

impl ListenerCx<'_> {
    /// The address space the listener is registered on.
    pub fn address_space(&self) -> AddressSpaceId {
        self.address_space
    }
    /// The listener being called.
    pub fn listener(&self) -> ListenerId {
        self.listener
    }
    /// A region, if it exists.
    pub fn region(&self, id: RegionId) -> Option<&Region> {
        self.regions.get(id.0)
    }

    /// Registers an IOMMU notifier on `region` for `flags` over the
    /// region-relative range `[start, last]`. The notifier belongs to this
    /// listener: if the listener leaves without unregistering it (e.g. in
    /// detach mode), it goes with it. See
    /// [`Memory::register_iommu_notifier`](crate::Memory::register_iommu_notifier).
    pub fn register_iommu_notifier(
        &mut self,
        region: RegionId,
        flags: NotifierFlags,
        start: u64,
        last: u64,
        notify: Arc<dyn IommuNotify>,
    ) -> Result<NotifierId, Error> {
        crate::notifier::register_notifier(
            self.regions,
            self.iommu,
            crate::notifier::NotifierEntry {
                owner: Some(self.listener),
                region,
                flags,
                start,
                last,
                notify,
            },
        )
    }

    /// Unregisters an IOMMU notifier.
    pub fn unregister_iommu_notifier(&mut self, id: NotifierId) -> Result<(), Error> {
        crate::notifier::unregister_notifier(self.regions, self.iommu, id)
    }

    /// Sends a notifier the current mappings in its range; returns how
    /// many MAP events were sent.
    pub fn replay_iommu_notifier(&self, id: NotifierId) -> Result<usize, Error> {
        crate::notifier::replay_notifier(self.regions, self.iommu, id)
    }
}

impl fmt::Debug for ListenerCx<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenerCx")
            .field("address_space", &self.address_space)
            .field("listener", &self.listener)
            .finish_non_exhaustive()
    }
}

/// How a listener is registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    /// A name for logs and errors.
    pub name: String,
    /// Lower priorities hear additions first and deletions last.
    pub priority: i32,
    /// The listener uses IOMMU regions (a VFIO container): its sections of
    /// IOMMU regions count towards their usage counters.
    pub iommu_user: bool,
    /// The listener wants `region_nop` for unchanged ranges.
    pub wants_nop: bool,
}

impl ListenerConfig {
    /// A listener named `name` at priority 0.
    pub fn new(name: impl Into<String>) -> Self {
        ListenerConfig {
            name: name.into(),
            priority: 0,
            iommu_user: false,
            wants_nop: false,
        }
    }
    /// Sets the priority.
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }
    /// Marks the listener as an IOMMU user.
    pub fn iommu_user(mut self) -> Self {
        self.iommu_user = true;
        self
    }
    /// Asks for `region_nop`.
    pub fn wants_nop(mut self) -> Self {
        self.wants_nop = true;
        self
    }
}

/// How [`Memory::unregister_listener`](crate::Memory::unregister_listener)
/// takes a listener away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unregister {
    /// Send the deletion of everything it holds, as QEMU does.
    Replay,
    /// Send nothing: the listener has dropped everything at once (e.g. it
    /// closed a VFIO container). The framework's own bookkeeping is
    /// balanced all the same.
    Detach,
}

/// Receives the changes of one address space. All methods default to
/// doing nothing; see the module docs for the order of calls.
#[allow(unused_variables)]
pub trait Listener: Send {
    /// A commit starts.
    fn begin(&mut self, cx: &mut ListenerCx<'_>) {}
    /// A commit ends.
    fn commit(&mut self, cx: &mut ListenerCx<'_>) {}
    /// A new section appeared. Refusing means the listener does not hold it.
    fn region_add(&mut self, cx: &mut ListenerCx<'_>, section: &Section) -> ListenerResult {
        Ok(())
    }
    /// A section the listener holds disappeared.
    fn region_del(&mut self, cx: &mut ListenerCx<'_>, section: &Section) {}
    /// A section is unchanged (only with [`ListenerConfig::wants_nop`]).
    fn region_nop(&mut self, cx: &mut ListenerCx<'_>, section: &Section) {}
    /// Dirty logging gained clients on a section.
    fn log_start(
        &mut self,
        cx: &mut ListenerCx<'_>,
        section: &Section,
        old: DirtyLogMask,
        new: DirtyLogMask,
    ) {
    }
    /// Dirty logging lost clients on a section.
    fn log_stop(
        &mut self,
        cx: &mut ListenerCx<'_>,
        section: &Section,
        old: DirtyLogMask,
        new: DirtyLogMask,
    ) {
    }
    /// Asked to fold the hypervisor's dirty log of a logged section into
    /// the VMM's bitmaps.
    fn log_sync(&mut self, cx: &mut ListenerCx<'_>, section: &Section) {}
    /// Global (migration) dirty logging starts. Refusing cancels the start.
    fn log_global_start(&mut self, cx: &mut ListenerCx<'_>) -> ListenerResult {
        Ok(())
    }
    /// Global dirty logging stops.
    fn log_global_stop(&mut self, cx: &mut ListenerCx<'_>) {}
    /// An ioeventfd appeared. Refusing means the listener does not hold it.
    fn eventfd_add(&mut self, cx: &mut ListenerCx<'_>, fd: &FlatIoeventfd) -> ListenerResult {
        Ok(())
    }
    /// An ioeventfd the listener holds disappeared.
    fn eventfd_del(&mut self, cx: &mut ListenerCx<'_>, fd: &FlatIoeventfd) {}
    /// A coalesced-MMIO range appeared.
    fn coalesced_io_add(&mut self, cx: &mut ListenerCx<'_>, range: &FlatCoalesced) {}
    /// A coalesced-MMIO range disappeared.
    fn coalesced_io_del(&mut self, cx: &mut ListenerCx<'_>, range: &FlatCoalesced) {}
}
