//! Memory regions: kinds and attributes.

use std::collections::VecDeque;
use std::sync::Arc;

use smallvec::SmallVec;

use crate::backing::HostMemory;
use crate::id::RegionId;
use crate::ioevent::Ioeventfd;
use crate::iommu::IommuOps;
use crate::ops::MmioOps;
use crate::range::AddrRange;

/// 2^64, the size of a region that spans the whole 64-bit space.
pub const SIZE_2_64: u128 = 1 << 64;

/// Dirty-memory clients (QEMU's `DIRTY_MEMORY_*`), one bit each in a
/// [`DirtyLogMask`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DirtyClient {
    /// Display refresh.
    Vga = 0,
    /// Translated-code invalidation.
    Code = 1,
    /// Live migration.
    Migration = 2,
}

/// A set of [`DirtyClient`]s logging a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DirtyLogMask(pub u8);

impl DirtyLogMask {
    /// No client is logging.
    pub const EMPTY: DirtyLogMask = DirtyLogMask(0);

    /// True if `client` is in the set.
    pub fn contains(self, client: DirtyClient) -> bool {
        self.0 & (1 << client as u8) != 0
    }

    /// The set with `client` added or removed.
    pub fn with(self, client: DirtyClient, on: bool) -> DirtyLogMask {
        if on {
            DirtyLogMask(self.0 | 1 << client as u8)
        } else {
            DirtyLogMask(self.0 & !(1 << client as u8))
        }
    }

    /// True if no client is logging.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// What a region is. Attributes common to all kinds live in [`Region`].
#[derive(Clone)]
pub enum RegionKind {
    /// Groups subregions; maps nothing of its own (QEMU's pure container).
    Container,
    /// RAM with a host backing. With `readonly` set it is a ROM.
    /// `device` marks RAM-device memory (a mapped device BAR: QEMU's
    /// `ram_device`), which VFIO must not pre-register.
    Ram {
        /// The host memory.
        backing: Arc<HostMemory>,
        /// RAM-device memory.
        device: bool,
    },
    /// A ROM device: reads come from `backing` while `romd_mode` is on,
    /// otherwise every access goes to `ops`; writes always go to `ops`.
    RomDevice {
        /// The host memory read in ROMD mode.
        backing: Arc<HostMemory>,
        /// The device.
        ops: Arc<dyn MmioOps>,
        /// Reads served from memory.
        romd_mode: bool,
    },
    /// Memory-mapped I/O served by `ops`.
    Mmio {
        /// The device.
        ops: Arc<dyn MmioOps>,
    },
    /// Claims address space without serving it (accesses fail); QEMU's
    /// reservation regions (`memory_region_init_io` with no ops).
    Reservation,
    /// A window `offset..offset+size` of `target`.
    Alias {
        /// The region shown.
        target: RegionId,
        /// Where the window starts in `target`.
        offset: u64,
    },
    /// Accesses are translated by `ops` into another address space.
    Iommu {
        /// The translation.
        ops: Arc<dyn IommuOps>,
    },
}

impl std::fmt::Debug for RegionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegionKind::Container => f.write_str("Container"),
            RegionKind::Ram { backing, device } => f
                .debug_struct("Ram")
                .field("backing", backing)
                .field("device", device)
                .finish(),
            RegionKind::RomDevice { romd_mode, .. } => f
                .debug_struct("RomDevice")
                .field("romd_mode", romd_mode)
                .finish_non_exhaustive(),
            RegionKind::Mmio { .. } => f.write_str("Mmio"),
            RegionKind::Reservation => f.write_str("Reservation"),
            RegionKind::Alias { target, offset } => f
                .debug_struct("Alias")
                .field("target", target)
                .field("offset", &format_args!("{offset:#x}"))
                .finish(),
            RegionKind::Iommu { .. } => f.write_str("Iommu"),
        }
    }
}

/// A kind without its payload, for matching and printing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KindTag {
    /// [`RegionKind::Container`].
    Container,
    /// [`RegionKind::Ram`].
    Ram,
    /// [`RegionKind::RomDevice`].
    RomDevice,
    /// [`RegionKind::Mmio`].
    Mmio,
    /// [`RegionKind::Reservation`].
    Reservation,
    /// [`RegionKind::Alias`].
    Alias,
    /// [`RegionKind::Iommu`].
    Iommu,
}

impl RegionKind {
    /// The payload-free tag.
    pub fn tag(&self) -> KindTag {
        match self {
            RegionKind::Container => KindTag::Container,
            RegionKind::Ram { .. } => KindTag::Ram,
            RegionKind::RomDevice { .. } => KindTag::RomDevice,
            RegionKind::Mmio { .. } => KindTag::Mmio,
            RegionKind::Reservation => KindTag::Reservation,
            RegionKind::Alias { .. } => KindTag::Alias,
            RegionKind::Iommu { .. } => KindTag::Iommu,
        }
    }

    /// True if the kind maps its own contents (fills the gaps its
    /// subregions leave); false for containers and aliases.
    pub fn terminates(&self) -> bool {
        !matches!(self, RegionKind::Container | RegionKind::Alias { .. })
    }
}

/// One memory region and its attributes.
#[derive(Debug, Clone)]
pub struct Region {
    pub(crate) name: String,
    pub(crate) owner: Option<String>,
    pub(crate) kind: RegionKind,
    pub(crate) size: u128,
    pub(crate) addr: u64,
    pub(crate) priority: i32,
    pub(crate) enabled: bool,
    pub(crate) readonly: bool,
    pub(crate) nonvolatile: bool,
    pub(crate) unmergeable: bool,
    pub(crate) parent: Option<RegionId>,
    /// In rendering order: descending priority, most recently added first
    /// among equals.
    /// A double-ended queue: linking or unlinking a child shifts the
    /// shorter side of the list, so toggling the newest of 200 BARs on a
    /// bus does not move the other 199.
    pub(crate) subregions: VecDeque<RegionId>,
    pub(crate) dirty_log_mask: DirtyLogMask,
    pub(crate) ioeventfds: SmallVec<[Ioeventfd; 1]>,
    pub(crate) coalesced: SmallVec<[AddrRange; 1]>,
    /// The aliases whose target is this region.
    pub(crate) referrers: SmallVec<[RegionId; 1]>,
    /// Those of `referrers` through which a change here can reach a view
    /// other than through a shared root (see `Memory::note_damage`), with
    /// their windows, so that the walk loads only the aliases it climbs.
    pub(crate) upward: SmallVec<[Upward; 1]>,
    /// Number of address spaces whose root is this region.
    pub(crate) as_refs: u32,
    /// Destroyed; freed when the current commit has been dispatched.
    pub(crate) doomed: bool,
    /// When the region was last linked under its parent; sibling order is
    /// descending (priority, linked_at).
    pub(crate) linked_at: u64,
    /// Index of `subregions` by address, for regions with many.
    pub(crate) child_index: Option<Box<crate::child_index::ChildIndex>>,
    /// Bumped by `Memory::remap`.
    pub(crate) epoch: u16,
    /// A flat view is rendered from this region (it keys `Memory::roots`);
    /// kept here so damage walks need no map lookup.
    pub(crate) renders_view: bool,
    /// Damage walks need not climb into this region (it has an entry in
    /// `Memory::skip_count`).
    pub(crate) skipped: bool,
}

/// An alias as seen from its target by damage walks: which addresses of
/// the target it shows (`offset..offset + size`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Upward {
    pub(crate) alias: RegionId,
    pub(crate) offset: u64,
    pub(crate) size: u128,
}

impl Region {
    pub(crate) fn new(name: &str, kind: RegionKind, size: u128) -> Region {
        Region {
            name: name.to_owned(),
            owner: None,
            kind,
            size,
            addr: 0,
            priority: 0,
            enabled: true,
            readonly: false,
            nonvolatile: false,
            unmergeable: false,
            parent: None,
            subregions: VecDeque::new(),
            dirty_log_mask: DirtyLogMask::EMPTY,
            ioeventfds: SmallVec::new(),
            coalesced: SmallVec::new(),
            referrers: SmallVec::new(),
            upward: SmallVec::new(),
            as_refs: 0,
            doomed: false,
            linked_at: 0,
            child_index: None,
            epoch: 0,
            renders_view: false,
            skipped: false,
        }
    }

    /// The region's name (not unique).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The owning device's name, if set.
    pub fn owner(&self) -> Option<&str> {
        self.owner.as_deref()
    }
    /// The kind and its payload.
    pub fn kind(&self) -> &RegionKind {
        &self.kind
    }
    /// Size in bytes, up to 2^64.
    pub fn size(&self) -> u128 {
        self.size
    }
    /// Offset in the parent (meaningful when the region has one).
    pub fn addr(&self) -> u64 {
        self.addr
    }
    /// Priority among siblings.
    pub fn priority(&self) -> i32 {
        self.priority
    }
    /// Whether the region (and its subtree) renders.
    pub fn enabled(&self) -> bool {
        self.enabled
    }
    /// Read-only flag of this region itself (inherited downwards when
    /// rendering). ROMs have it set.
    pub fn readonly(&self) -> bool {
        self.readonly
    }
    /// Non-volatile flag (QEMU's `nonvolatile`, for NVDIMMs).
    pub fn nonvolatile(&self) -> bool {
        self.nonvolatile
    }
    /// Flat ranges of this region never merge with their neighbours.
    pub fn unmergeable(&self) -> bool {
        self.unmergeable
    }
    /// The containing region.
    pub fn parent(&self) -> Option<RegionId> {
        self.parent
    }
    /// Subregions in rendering order (highest priority first; most recently
    /// added first among equal priorities).
    pub fn subregions(&self) -> Subregions<'_> {
        Subregions(&self.subregions)
    }
    /// The dirty-log clients enabled on this region.
    pub fn dirty_log_mask(&self) -> DirtyLogMask {
        self.dirty_log_mask
    }
    /// The region's ioeventfds.
    pub fn ioeventfds(&self) -> &[Ioeventfd] {
        &self.ioeventfds
    }
    /// The region's coalesced-MMIO ranges (region-relative).
    pub fn coalesced(&self) -> &[AddrRange] {
        &self.coalesced
    }
    /// For a ROM device, whether reads come from memory.
    pub fn romd_mode(&self) -> bool {
        matches!(
            self.kind,
            RegionKind::RomDevice {
                romd_mode: true,
                ..
            }
        )
    }
    /// True for RAM whose `readonly` flag is set, which QEMU calls ROM.
    pub fn is_rom(&self) -> bool {
        matches!(self.kind, RegionKind::Ram { .. }) && self.readonly
    }
    /// The host memory of RAM and ROM devices.
    pub fn backing(&self) -> Option<&Arc<HostMemory>> {
        match &self.kind {
            RegionKind::Ram { backing, .. } | RegionKind::RomDevice { backing, .. } => {
                Some(backing)
            }
            _ => None,
        }
    }
    /// The aliases that show this region.
    pub fn referrers(&self) -> &[RegionId] {
        &self.referrers
    }
    /// For an alias, its target and offset.
    pub fn alias(&self) -> Option<(RegionId, u64)> {
        match self.kind {
            RegionKind::Alias { target, offset } => Some((target, offset)),
            _ => None,
        }
    }
}

/// The subregions of a [`Region`], in rendering order (highest priority
/// first; most recently added first among equal priorities).
#[derive(Clone, Copy)]
pub struct Subregions<'a>(&'a VecDeque<RegionId>);

impl<'a> Subregions<'a> {
    /// Number of subregions.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True if there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `i`-th subregion in rendering order.
    pub fn get(&self, i: usize) -> Option<RegionId> {
        self.0.get(i).copied()
    }

    /// The subregions in rendering order.
    pub fn iter(&self) -> std::collections::vec_deque::Iter<'a, RegionId> {
        self.0.iter()
    }

    /// The subregions in rendering order, copied.
    pub fn to_vec(&self) -> Vec<RegionId> {
        self.0.iter().copied().collect()
    }
}

impl<'a> IntoIterator for Subregions<'a> {
    type Item = &'a RegionId;
    type IntoIter = std::collections::vec_deque::Iter<'a, RegionId>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl PartialEq for Subregions<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl Eq for Subregions<'_> {}

impl std::fmt::Debug for Subregions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.iter()).finish()
    }
}
