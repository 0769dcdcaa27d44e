//! The core's error type.

use crate::id::{AddressSpaceId, ListenerId, NotifierId, RegionId};

/// One callback that a listener refused during a commit or registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerFailure {
    /// The listener.
    pub listener: ListenerId,
    /// Its name.
    pub name: String,
    /// The callback (`region_add`, `eventfd_add`, `log_global_start`, ...).
    pub event: &'static str,
    /// Where: the section's `[start, end)` in the address space, if any.
    pub range: Option<(u64, u128)>,
    /// The listener's error, rendered.
    pub message: String,
}

/// A listener callback that panicked. The listener was detached at that
/// point: never called again, its holdings released (see the `listener`
/// module's "Panics" section).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerPanic {
    /// The listener (its handle is stale now).
    pub listener: ListenerId,
    /// Its name.
    pub name: String,
    /// The callback that panicked (`begin`, `region_add`, `log_sync`, ...).
    pub callback: &'static str,
    /// The panic's message.
    pub message: String,
}

/// Everything that can go wrong in the core. Sorted by name.
///
/// Every operation that returns an error has changed nothing, except
/// where a change that was itself valid was applied and something a
/// listener or an IOMMU model does in response failed:
/// [`Error::ListenerRefused`] (see its docs), [`Error::ListenerPanicked`]
/// and [`Error::NotifierPanicked`] (see theirs), [`Error::IommuHook`] from a
/// commit (the change stands; after a failed `vfio_start` the region's
/// sections were withdrawn from IOMMU users), and a refused
/// `notify_flags_changed` when unregistering a notifier (the notifier is
/// gone all the same).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The region is already a subregion of `parent`.
    #[error("region {child} already has parent {parent}")]
    AlreadyHasParent {
        /// The region being added.
        child: RegionId,
        /// Its current parent.
        parent: RegionId,
    },
    /// An address plus a size goes past 2^64.
    #[error("{what} at {start:#x} with size {size:#x} ends past 2^64")]
    BeyondAddressSpace {
        /// What was being placed.
        what: &'static str,
        /// Its start.
        start: u64,
        /// Its size.
        size: u128,
    },
    /// Host memory for a backing could not be mapped.
    #[error("cannot map {size:#x} bytes of host memory")]
    BackingAllocation {
        /// The size asked for.
        size: u128,
    },
    /// An access to host memory falls outside its block.
    #[error(
        "access of {size} bytes at offset {offset:#x} is outside host memory of {len:#x} bytes"
    )]
    BackingOutOfRange {
        /// Offset of the access.
        offset: u64,
        /// Its length.
        size: u64,
        /// The block's length.
        len: u64,
    },
    /// `commit` was called with no transaction open.
    #[error("commit without an open transaction")]
    CommitWithoutTransaction,
    /// Adding `child` under `parent` would make the tree (with alias edges)
    /// cyclic: `parent` is `child` itself, a descendant of it, or reached
    /// from it through aliases.
    #[error("adding {child} under {parent} would create a cycle")]
    Cycle {
        /// The would-be parent.
        parent: RegionId,
        /// The region being added.
        child: RegionId,
    },
    /// The ioeventfd or coalesced range is already on the region.
    #[error("{what} already present on region {region}")]
    AlreadyPresent {
        /// What was added.
        what: &'static str,
        /// The region.
        region: RegionId,
    },
    /// A handle made by another `Memory`.
    #[error("{what} {id} belongs to another Memory")]
    ForeignHandle {
        /// Kind of handle.
        what: &'static str,
        /// The handle, rendered.
        id: String,
    },
    /// The region's kind does not support the operation.
    #[error("region {region} ({kind}) does not support {operation}")]
    KindMismatch {
        /// The region.
        region: RegionId,
        /// Its kind.
        kind: &'static str,
        /// What was attempted.
        operation: &'static str,
    },
    /// One or more listener callbacks panicked.
    ///
    /// Each panicking listener was detached where it panicked: it is not
    /// called again (not even `commit` or an unregistration's
    /// deletions), the sections and ioeventfds it held are released
    /// without telling it, its IOMMU notifiers are unregistered, its
    /// contribution to IOMMU usage counters is counted down (with
    /// `vfio_stop` where one reaches zero), and the listener is dropped.
    /// Everything else **was applied**: the tree and views changed as
    /// asked, every other listener saw the whole operation. From
    /// `register_listener` it means the listener is not registered; from
    /// `unregister_listener` or `destroy_address_space` that the listener
    /// is gone (dropped, not handed back) and the operation finished.
    #[error("{} listener(s) panicked and were detached, first: {} in {}: {}", panics.len(), panics[0].name, panics[0].callback, panics[0].message)]
    ListenerPanicked {
        /// The panics, in the order they happened (never empty).
        panics: Vec<ListenerPanic>,
        /// What the operation would have returned otherwise (other
        /// listeners' refusals, a failed IOMMU hook), if anything.
        other: Option<Box<Error>>,
    },
    /// A listener refused one or more callbacks.
    ///
    /// From a commit (or any operation that committed implicitly) this
    /// means the topology change **was applied** and every other listener
    /// saw it; each refusing listener simply does not hold what it refused
    /// (it gets no `region_del` / `eventfd_del` for it later). From
    /// `register_listener` or `set_global_dirty_log` it means the operation
    /// was undone: the listener is not registered, logging did not change.
    #[error("{} listener callback(s) refused, first: {} {} said {}", failures.len(), failures[0].name, failures[0].event, failures[0].message)]
    ListenerRefused {
        /// What was refused, in dispatch order (never empty).
        failures: Vec<ListenerFailure>,
    },
    /// A notifier with an inverted range or one past the region's end.
    #[error("notifier range [{start:#x}, {last:#x}] does not fit IOMMU region {region} of size {region_size:#x}")]
    BadNotifierRange {
        /// The region.
        region: RegionId,
        /// First address asked for.
        start: u64,
        /// Last address asked for.
        last: u64,
        /// The region's size.
        region_size: u128,
    },
    /// A notifier that asks for no events.
    #[error("a notifier on {region} must ask for MAP, UNMAP or both")]
    EmptyNotifierFlags {
        /// The region.
        region: RegionId,
    },
    /// An IOMMU hook refused (or failed).
    #[error("{hook} of IOMMU region {region} failed: {message}")]
    IommuHook {
        /// The region.
        region: RegionId,
        /// `vfio_start`, `vfio_stop` or `notify_flags_changed`.
        hook: &'static str,
        /// What the hook said.
        message: String,
    },
    /// An IOMMU operation on a region that is not an IOMMU region.
    #[error("region {region} is not an IOMMU region")]
    NotAnIommu {
        /// The region.
        region: RegionId,
    },
    /// The region cannot be destroyed while something refers to it.
    #[error("region {region} is still in use: {reason}")]
    RegionInUse {
        /// The region.
        region: RegionId,
        /// What refers to it.
        reason: &'static str,
    },
    /// `region` is not a subregion of `parent`.
    #[error("region {region} is not a subregion of {parent}")]
    NotASubregion {
        /// The claimed parent.
        parent: RegionId,
        /// The region.
        region: RegionId,
    },
    /// The ioeventfd or coalesced range is not on the region.
    #[error("{what} not found on region {region}")]
    NotFound {
        /// What was looked for.
        what: &'static str,
        /// The region.
        region: RegionId,
    },
    /// An IOMMU notifier panicked. Every other notifier was told all the
    /// same; the panicking one stays registered (its owner decides).
    #[error("IOMMU notifier {notifier} panicked: {message}")]
    NotifierPanicked {
        /// The first notifier that panicked.
        notifier: NotifierId,
        /// The panic's message.
        message: String,
    },
    /// A range inside a region does not fit the region.
    #[error(
        "{what} [{start:#x}, +{size:#x}) does not fit region {region} of size {region_size:#x}"
    )]
    OutsideRegion {
        /// What was placed.
        what: &'static str,
        /// The region.
        region: RegionId,
        /// Region-relative start.
        start: u64,
        /// Size.
        size: u128,
        /// The region's size.
        region_size: u128,
    },
    /// A memory-backed region cannot grow past its host memory.
    #[error("region {region} cannot have size {size:#x}: its host memory has {backing:#x} bytes")]
    SizeExceedsBacking {
        /// The region.
        region: RegionId,
        /// The size asked for.
        size: u128,
        /// The backing's length.
        backing: u64,
    },
    /// A handle to an address space that was destroyed.
    #[error("address space {0} does not exist (destroyed?)")]
    StaleAddressSpace(AddressSpaceId),
    /// A handle to a listener that was unregistered.
    #[error("listener {0} is not registered")]
    StaleListener(ListenerId),
    /// A handle to a notifier that was unregistered.
    #[error("IOMMU notifier {0} is not registered")]
    StaleNotifier(NotifierId),
    /// A handle to a region that was destroyed.
    #[error("region {0} does not exist (destroyed?)")]
    StaleRegion(RegionId),
    /// Subregions cannot be added to an alias (QEMU forbids it too: an
    /// alias shows its target, nothing of its own).
    #[error("cannot add a subregion to alias {alias}")]
    SubregionOfAlias {
        /// The alias.
        alias: RegionId,
    },
    /// The kind needs a non-zero size.
    #[error("{kind} region {name:?} cannot have size zero")]
    ZeroSize {
        /// The kind.
        kind: &'static str,
        /// The region's name.
        name: String,
    },
}
