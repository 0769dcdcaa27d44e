//! Flat views: the disjoint, sorted ranges an address space resolves to.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::address_space::ViewHandle;
use crate::id::{AddressSpaceId, IdMap, RegionId};
use crate::ioevent::{FlatCoalesced, FlatIoeventfd};
use crate::range::AddrRange;
use crate::ranges::RangeList;
use crate::region::DirtyLogMask;
use crate::region::RegionKind;

/// One range of a flat view (QEMU's `FlatRange`): addresses
/// `start..=last` of the address space map to `region` starting at
/// `offset_in_region`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlatRange {
    /// First address in the address space.
    pub start: u64,
    /// Last address (inclusive), so that a range may end at 2^64.
    pub last: u64,
    /// The terminating region that serves these addresses.
    pub region: RegionId,
    /// Offset of `start` inside `region`.
    pub offset_in_region: u64,
    /// Read-only, from the region or any container or alias above it.
    pub readonly: bool,
    /// Non-volatile, likewise inherited.
    pub nonvolatile: bool,
    /// Unmergeable, likewise inherited.
    pub unmergeable: bool,
    /// For a ROM device, reads come from memory.
    pub romd_mode: bool,
    /// Dirty-log clients active on the range.
    pub dirty_log_mask: DirtyLogMask,
    /// The region's remap count when rendered (see
    /// [`Memory::remap`](crate::Memory::remap)): a new epoch makes the same
    /// place a new mapping for listeners.
    pub epoch: u16,
}

impl FlatRange {
    /// Length in bytes (up to 2^64).
    pub fn size(&self) -> u128 {
        self.last as u128 - self.start as u128 + 1
    }

    /// The range as an [`AddrRange`].
    pub fn range(&self) -> AddrRange {
        AddrRange {
            start: self.start,
            size: self.size(),
        }
    }

    /// True if `addr` lies in the range.
    pub fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr <= self.last
    }

    /// QEMU's `flatrange_equal`: the same mapping, ignoring the dirty-log
    /// mask (a mask change is a `log_start` / `log_stop`, not a new range).
    pub fn same_mapping(&self, other: &FlatRange) -> bool {
        self.start == other.start
            && self.last == other.last
            && self.region == other.region
            && self.offset_in_region == other.offset_in_region
            && self.readonly == other.readonly
            && self.nonvolatile == other.nonvolatile
            && self.unmergeable == other.unmergeable
            && self.romd_mode == other.romd_mode
            && self.epoch == other.epoch
    }

    /// QEMU's `can_merge`: `next` continues `self` in the same region with
    /// the same attributes, and neither is unmergeable.
    pub(crate) fn can_merge(&self, next: &FlatRange) -> bool {
        !self.unmergeable && !next.unmergeable && self.continues_into(next)
    }

    /// `next` starts where `self` ends, in the same region at the next
    /// offset, with the same attributes.
    pub(crate) fn continues_into(&self, next: &FlatRange) -> bool {
        self.last.checked_add(1) == Some(next.start)
            && self.region == next.region
            && self.offset_in_region as u128 + self.size() == next.offset_in_region as u128
            && self.readonly == next.readonly
            && self.nonvolatile == next.nonvolatile
            && self.romd_mode == next.romd_mode
            && self.dirty_log_mask == next.dirty_log_mask
            && self.epoch == next.epoch
    }
}

/// The flattened form of one root region: what every address space whose
/// root resolves to that region sees.
///
/// A view is immutable: readers hold it as an `Arc` and can read and write
/// guest memory through it ([`read`](Self::read), [`write`](Self::write))
/// while the writer builds the next one. Equality compares the mapping
/// (root, ranges, ioeventfds, coalesced ranges).
#[derive(Clone, Default)]
pub struct FlatView {
    /// The region rendered (QEMU's "Root memory region"); `None` when the
    /// address space's root resolves to nothing (disabled).
    pub root: Option<RegionId>,
    /// Disjoint ranges sorted by address.
    pub ranges: RangeList,
    /// Ioeventfds placed in the view, sorted.
    pub ioeventfds: Vec<FlatIoeventfd>,
    /// Coalesced-MMIO ranges placed in the view, sorted.
    pub coalesced: Vec<FlatCoalesced>,
    /// What accesses reach: the regions of `ranges`, and the address
    /// spaces IOMMU translations lead into.
    pub(crate) targets: Targets,
}

impl PartialEq for FlatView {
    fn eq(&self, other: &Self) -> bool {
        self.root == other.root
            && self.ranges == other.ranges
            && self.ioeventfds == other.ioeventfds
            && self.coalesced == other.coalesced
    }
}
impl Eq for FlatView {}

impl std::fmt::Debug for FlatView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlatView")
            .field("root", &self.root)
            .field("ranges", &self.ranges)
            .field("ioeventfds", &self.ioeventfds)
            .field("coalesced", &self.coalesced)
            .finish()
    }
}

/// The access targets a view needs, shared between its versions.
#[derive(Clone, Default)]
pub(crate) struct Targets {
    /// The kind (with its backing or ops) of every region in the view;
    /// may hold a few regions no longer in it.
    pub(crate) regions: Arc<IdMap<RegionId, RegionKind>>,
    /// Every address space's reader handle, kept current by the writer.
    pub(crate) spaces: SpaceTable,
}

/// The address spaces readers can reach through IOMMU translations.
pub(crate) type SpaceTable = Arc<ArcSwap<IdMap<AddressSpaceId, ViewHandle>>>;

impl FlatView {
    /// The range containing `addr`, if any.
    #[inline]
    pub fn lookup(&self, addr: u64) -> Option<&FlatRange> {
        self.ranges.lookup(addr)
    }

    /// The ranges that intersect `[start, end)`, in order.
    pub fn ranges_in(&self, start: u64, end: u128) -> Vec<FlatRange> {
        let lo = self.ranges.index_from(start);
        let hi = self.ranges.index_to(end);
        self.ranges.slice(lo, hi.max(lo))
    }

    /// Bytes of heap the view uses.
    pub fn heap_bytes(&self) -> usize {
        self.ranges.heap_bytes()
            + self.ioeventfds.capacity() * std::mem::size_of::<FlatIoeventfd>()
            + self.coalesced.capacity() * std::mem::size_of::<FlatCoalesced>()
    }
}

/// A plain range `[start, last]` of region 0, for tests.
#[cfg(test)]
pub(crate) fn test_range(start: u64, last: u64) -> FlatRange {
    FlatRange {
        start,
        last,
        region: RegionId(crate::id::RawId {
            space: 0,
            index: 0,
            generation: 0,
        }),
        offset_in_region: start,
        readonly: false,
        nonvolatile: false,
        unmergeable: false,
        romd_mode: false,
        dirty_log_mask: DirtyLogMask::EMPTY,
        epoch: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fr(start: u64, last: u64) -> FlatRange {
        test_range(start, last)
    }

    #[test]
    fn lookup_finds_containing_range_and_misses_gaps() {
        let view = FlatView {
            ranges: RangeList::from_vec(vec![
                fr(0x0, 0xfff),
                fr(0x2000, 0x2fff),
                fr(0xffff_f000, u64::MAX),
            ]),
            ..FlatView::default()
        };
        assert_eq!(view.lookup(0x10).map(|r| r.start), Some(0));
        assert_eq!(view.lookup(0x1000), None);
        assert_eq!(view.lookup(0x2fff).map(|r| r.start), Some(0x2000));
        assert_eq!(view.lookup(u64::MAX).map(|r| r.start), Some(0xffff_f000));
    }

    #[test]
    fn ranges_in_returns_intersecting_ranges() {
        let view = FlatView {
            ranges: RangeList::from_vec(vec![
                fr(0x0, 0xfff),
                fr(0x2000, 0x2fff),
                fr(0x4000, 0x4fff),
            ]),
            ..FlatView::default()
        };
        let hit: Vec<u64> = view
            .ranges_in(0xfff, 0x2001)
            .iter()
            .map(|r| r.start)
            .collect();
        assert_eq!(hit, vec![0, 0x2000]);
        assert!(view.ranges_in(0x1000, 0x2000).is_empty());
    }

    #[test]
    fn unmergeable_ranges_do_not_merge() {
        let a = fr(0, 0xfff);
        let mut b = fr(0x1000, 0x1fff);
        assert!(a.can_merge(&b));
        b.unmergeable = true;
        assert!(!a.can_merge(&b));
    }
}
