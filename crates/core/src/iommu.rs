//! IOMMU regions: translation ops, notifiers, and usage counters.
//!
//! An IOMMU region is a leaf whose accesses are translated into another
//! address space. Two mechanisms sit on it:
//!
//! - **Notifiers** subscribe to MAP and/or UNMAP events over a range of
//!   the region. The IOMMU model (e.g. a guest TCE table) calls
//!   [`Memory::iommu_notify`](crate::Memory::iommu_notify) when the guest
//!   changes a mapping; each notifier receives the event cropped to its
//!   range, if its flags ask for that kind. Replay sends the current
//!   mappings to one notifier.
//! - **The usage counter** counts the (listener, section) pairs held by
//!   listeners registered as IOMMU users (VFIO containers). It is judged
//!   when a commit (or a registration or unregistration) ends: when it
//!   went from 0 to more, the region's `vfio_start` hook runs; from more
//!   to 0, `vfio_stop`. A section deleted and re-added within one
//!   transaction (a machine reset) therefore runs neither. The hooks
//!   strictly alternate per region: `vfio_stop` only follows a
//!   `vfio_start` that succeeded.
//!
//! A failed `vfio_start` must not leave IOMMU users holding a region
//! whose model is not ready for them (a VFIO container would miss guest
//! mappings). So the region's sections are withdrawn from every IOMMU-user
//! listener — each gets `region_del` within the same commit and then
//! treats the range as refused until it changes — the counter falls back
//! to 0, and the commit returns [`Error::IommuHook`](crate::Error::IommuHook).
//! A registration whose replay triggers a failed start is undone whole.
//! A failed `vfio_stop` is reported the same way, but the region counts as
//! stopped: nothing uses it any more.

use std::fmt;
use std::sync::Arc;

use crate::id::{AddressSpaceId, Arena, IdMap, IdSet, NotifierId, RegionId};

/// Access permissions of an IOMMU mapping (QEMU's `IOMMUAccessFlags`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct IommuPerm {
    /// Reads allowed.
    pub read: bool,
    /// Writes allowed.
    pub write: bool,
}

impl IommuPerm {
    /// No access: an unmapped entry.
    pub const NONE: IommuPerm = IommuPerm {
        read: false,
        write: false,
    };
    /// Read-only.
    pub const RO: IommuPerm = IommuPerm {
        read: true,
        write: false,
    };
    /// Write-only.
    pub const WO: IommuPerm = IommuPerm {
        read: false,
        write: true,
    };
    /// Read and write.
    pub const RW: IommuPerm = IommuPerm {
        read: true,
        write: true,
    };

    /// True if every permission in `needed` is granted.
    pub fn allows(self, needed: IommuPerm) -> bool {
        (self.read || !needed.read) && (self.write || !needed.write)
    }

    /// True if nothing is allowed.
    pub fn is_none(self) -> bool {
        !self.read && !self.write
    }
}

/// One translation (QEMU's `IOMMUTLBEntry`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IommuTlbEntry {
    /// First I/O virtual address covered, aligned to the page.
    pub iova: u64,
    /// The address `iova` translates to in `target`.
    pub translated_addr: u64,
    /// `page size - 1`.
    pub addr_mask: u64,
    /// What the mapping allows; [`IommuPerm::NONE`] means unmapped.
    pub perm: IommuPerm,
    /// The address space translated addresses live in.
    pub target: Option<AddressSpaceId>,
}

/// Which events a notifier wants (QEMU's `IOMMUNotifierFlag`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct NotifierFlags {
    /// New mappings.
    pub map: bool,
    /// Removed mappings.
    pub unmap: bool,
}

impl NotifierFlags {
    /// Nothing.
    pub const NONE: NotifierFlags = NotifierFlags {
        map: false,
        unmap: false,
    };
    /// MAP only.
    pub const MAP: NotifierFlags = NotifierFlags {
        map: true,
        unmap: false,
    };
    /// UNMAP only.
    pub const UNMAP: NotifierFlags = NotifierFlags {
        map: false,
        unmap: true,
    };
    /// MAP and UNMAP.
    pub const ALL: NotifierFlags = NotifierFlags {
        map: true,
        unmap: true,
    };

    /// The union of two sets.
    pub fn union(self, other: NotifierFlags) -> NotifierFlags {
        NotifierFlags {
            map: self.map || other.map,
            unmap: self.unmap || other.unmap,
        }
    }

    /// True if no flag is set.
    pub fn is_empty(self) -> bool {
        !self.map && !self.unmap
    }
}

/// The kind of an IOMMU event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IommuEventKind {
    /// A mapping appeared.
    Map,
    /// A mapping went away.
    Unmap,
}

/// A change of IOMMU mappings: `[iova, iova + size)` now translates to
/// `translated_addr` with `perm` (MAP), or no longer does (UNMAP).
/// Delivered to each notifier cropped to its range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IommuEvent {
    /// MAP or UNMAP.
    pub kind: IommuEventKind,
    /// First I/O virtual address (region-relative).
    pub iova: u64,
    /// Bytes covered.
    pub size: u64,
    /// Where `iova` translates to (MAP).
    pub translated_addr: u64,
    /// Permissions (MAP).
    pub perm: IommuPerm,
    /// The address space of `translated_addr`.
    pub target: Option<AddressSpaceId>,
}

impl IommuEvent {
    /// The MAP event of a translation entry.
    pub fn map(entry: &IommuTlbEntry) -> IommuEvent {
        IommuEvent {
            kind: IommuEventKind::Map,
            iova: entry.iova,
            size: entry.addr_mask.wrapping_add(1),
            translated_addr: entry.translated_addr,
            perm: entry.perm,
            target: entry.target,
        }
    }

    /// An UNMAP of `[iova, iova + size)`.
    pub fn unmap(iova: u64, size: u64) -> IommuEvent {
        IommuEvent {
            kind: IommuEventKind::Unmap,
            iova,
            size,
            translated_addr: 0,
            perm: IommuPerm::NONE,
            target: None,
        }
    }

    /// The part of the event inside `[start, last]`, if any.
    pub fn crop(&self, start: u64, last: u64) -> Option<IommuEvent> {
        let ev_last = self.iova.checked_add(self.size.checked_sub(1)?)?;
        if ev_last < start || self.iova > last {
            return None;
        }
        let lo = self.iova.max(start);
        let hi = ev_last.min(last);
        Some(IommuEvent {
            iova: lo,
            size: hi - lo + 1,
            translated_addr: self.translated_addr.wrapping_add(lo - self.iova),
            ..*self
        })
    }
}

/// What a failing IOMMU hook returns.
pub type HookError = Box<dyn std::error::Error + Send + Sync>;

/// The behaviour of an IOMMU region (QEMU's `IOMMUMemoryRegionClass`).
///
/// Methods take `&self`: models keep their state behind their own locks.
/// Hooks run while the framework holds the tree, so they must not call
/// back into the [`Memory`](crate::Memory).
pub trait IommuOps: Send + Sync {
    /// Translates the region-relative `addr` for an access needing `access`.
    fn translate(&self, addr: u64, access: IommuPerm) -> IommuTlbEntry;

    /// Smallest page the IOMMU maps, a power of two.
    fn min_page_size(&self) -> u64;

    /// Sends every current mapping inside `[start, last]` to `f` and
    /// returns true; or returns false to let the framework walk
    /// [`translate`](Self::translate) page by page instead.
    fn replay(&self, start: u64, last: u64, f: &mut dyn FnMut(&IommuTlbEntry)) -> bool {
        let _ = (start, last, f);
        false
    }

    /// The region gained its first IOMMU user (a VFIO container).
    fn vfio_start(&self) -> Result<(), HookError> {
        Ok(())
    }

    /// The region lost its last IOMMU user.
    fn vfio_stop(&self) -> Result<(), HookError> {
        Ok(())
    }

    /// The union of the flags of the region's notifiers changed (QEMU's
    /// `notify_flag_changed`). Refusing makes the notifier registration
    /// (or unregistration) that caused it fail.
    fn notify_flags_changed(
        &self,
        old: NotifierFlags,
        new: NotifierFlags,
    ) -> Result<(), HookError> {
        let _ = (old, new);
        Ok(())
    }
}

impl fmt::Debug for dyn IommuOps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<iommu ops, min page {:#x}>", self.min_page_size())
    }
}

/// IOMMU ops that map nothing; for regions imported from a QEMU dump.
#[derive(Debug, Clone, Copy)]
pub struct UnmappedIommu {
    /// The page size to report.
    pub page_size: u64,
}

impl IommuOps for UnmappedIommu {
    fn translate(&self, addr: u64, _access: IommuPerm) -> IommuTlbEntry {
        let mask = self.page_size - 1;
        IommuTlbEntry {
            iova: addr & !mask,
            translated_addr: 0,
            addr_mask: mask,
            perm: IommuPerm::NONE,
            target: None,
        }
    }
    fn min_page_size(&self) -> u64 {
        self.page_size
    }
}

/// Receives IOMMU events (QEMU's `IOMMUNotifier` callback).
pub trait IommuNotify: Send + Sync {
    /// A mapping changed inside the notifier's range.
    fn notify(&self, event: &IommuEvent);
}

/// A registered notifier.
pub(crate) struct NotifierEntry {
    pub(crate) region: RegionId,
    pub(crate) flags: NotifierFlags,
    pub(crate) start: u64,
    pub(crate) last: u64,
    pub(crate) notify: Arc<dyn IommuNotify>,
}

/// The usage state of one IOMMU region.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    /// IOMMU-user (listener, section) pairs held.
    pub(crate) count: u32,
    /// `vfio_start` succeeded and no `vfio_stop` since.
    pub(crate) started: bool,
}

/// Notifiers and usage of every IOMMU region; lives beside the region
/// arena so that listener callbacks can register notifiers while the tree
/// is borrowed.
pub(crate) struct IommuState {
    pub(crate) notifiers: Arena<NotifierEntry>,
    pub(crate) by_region: IdMap<RegionId, Vec<NotifierId>>,
    pub(crate) usage: IdMap<RegionId, Usage>,
    /// Regions whose count changed since they were last judged.
    pub(crate) changed: IdSet<RegionId>,
}

impl IommuState {
    pub(crate) fn new(space: u32) -> Self {
        IommuState {
            notifiers: Arena::new(space),
            by_region: IdMap::default(),
            usage: IdMap::default(),
            changed: IdSet::default(),
        }
    }

    pub(crate) fn flags_of(&self, region: RegionId) -> NotifierFlags {
        self.by_region
            .get(&region)
            .map_or(NotifierFlags::NONE, |ids| {
                ids.iter()
                    .filter_map(|id| self.notifiers.get(id.0))
                    .fold(NotifierFlags::NONE, |acc, n| acc.union(n.flags))
            })
    }

    /// Counts one more (`up`) or one fewer IOMMU-user section of `region`.
    pub(crate) fn count(&mut self, region: RegionId, up: bool) {
        let u = self.usage.entry(region).or_default();
        if up {
            u.count += 1;
        } else {
            u.count = u
                .count
                .checked_sub(1)
                .expect("usage count never goes below zero");
        }
        self.changed.insert(region);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_keeps_translation_in_step() {
        let ev = IommuEvent {
            kind: IommuEventKind::Map,
            iova: 0x1000,
            size: 0x3000,
            translated_addr: 0x8000_0000,
            perm: IommuPerm::RW,
            target: None,
        };
        let c = ev.crop(0x2000, 0x2fff).unwrap();
        assert_eq!(
            (c.iova, c.size, c.translated_addr),
            (0x2000, 0x1000, 0x8000_1000)
        );
        assert!(ev.crop(0x4000, 0x4fff).is_none());
        assert_eq!(ev.crop(0, u64::MAX), Some(ev));
    }

    #[test]
    fn unmap_event_reaching_the_top_crops() {
        let ev = IommuEvent::unmap(u64::MAX - 0xfff, 0x1000);
        assert_eq!(
            ev.crop(u64::MAX - 0x7ff, u64::MAX).map(|e| e.size),
            Some(0x800)
        );
    }
}

use crate::error::Error;
use crate::region::{Region, RegionKind};

fn iommu_ops(regions: &Arena<Region>, region: RegionId) -> Result<&Arc<dyn IommuOps>, Error> {
    match regions.get(region.0) {
        Some(Region {
            kind: RegionKind::Iommu { ops },
            doomed: false,
            ..
        }) => Ok(ops),
        Some(r) if !r.doomed => Err(Error::NotAnIommu { region }),
        _ => Err(Error::StaleRegion(region)),
    }
}

/// Registers a notifier (shared by `Memory` and listener contexts).
pub(crate) fn register_notifier(
    regions: &Arena<Region>,
    state: &mut IommuState,
    region: RegionId,
    flags: NotifierFlags,
    start: u64,
    last: u64,
    notify: Arc<dyn IommuNotify>,
) -> Result<NotifierId, Error> {
    let ops = iommu_ops(regions, region)?;
    if flags.is_empty() {
        return Err(Error::EmptyNotifierFlags { region });
    }
    let size = regions.get(region.0).expect("checked").size;
    if start > last || last as u128 >= size {
        return Err(Error::BadNotifierRange {
            region,
            start,
            last,
            region_size: size,
        });
    }
    let old = state.flags_of(region);
    let id = NotifierId(state.notifiers.insert(NotifierEntry {
        region,
        flags,
        start,
        last,
        notify,
    }));
    state.by_region.entry(region).or_default().push(id);
    let new = state.flags_of(region);
    if old != new {
        if let Err(e) = ops.notify_flags_changed(old, new) {
            forget_notifier(state, id);
            return Err(Error::IommuHook {
                region,
                hook: "notify_flags_changed",
                message: e.to_string(),
            });
        }
    }
    Ok(id)
}

fn forget_notifier(state: &mut IommuState, id: NotifierId) -> Option<NotifierEntry> {
    let entry = state.notifiers.remove(id.0)?;
    if let Some(list) = state.by_region.get_mut(&entry.region) {
        list.retain(|n| *n != id);
        if list.is_empty() {
            state.by_region.remove(&entry.region);
        }
    }
    Some(entry)
}

/// Unregisters a notifier. A refused flags change is reported, but the
/// notifier is gone all the same (nothing can keep listening for it).
pub(crate) fn unregister_notifier(
    regions: &Arena<Region>,
    state: &mut IommuState,
    id: NotifierId,
) -> Result<(), Error> {
    let region = state
        .notifiers
        .get(id.0)
        .ok_or(Error::StaleNotifier(id))?
        .region;
    let old = state.flags_of(region);
    forget_notifier(state, id);
    let new = state.flags_of(region);
    if old != new {
        if let Ok(ops) = iommu_ops(regions, region) {
            ops.notify_flags_changed(old, new)
                .map_err(|e| Error::IommuHook {
                    region,
                    hook: "notify_flags_changed",
                    message: e.to_string(),
                })?;
        }
    }
    Ok(())
}

/// Sends the current mappings inside a notifier's range to it, as MAP
/// events: through the ops' `replay`, or by translating every minimum
/// page of the range.
pub(crate) fn replay_notifier(
    regions: &Arena<Region>,
    state: &IommuState,
    id: NotifierId,
) -> Result<usize, Error> {
    let n = state.notifiers.get(id.0).ok_or(Error::StaleNotifier(id))?;
    let ops = iommu_ops(regions, n.region)?;
    if !n.flags.map {
        return Ok(0);
    }
    let mut sent = 0;
    let mut deliver = |entry: &IommuTlbEntry| {
        if entry.perm.is_none() {
            return;
        }
        if let Some(ev) = IommuEvent::map(entry).crop(n.start, n.last) {
            n.notify.notify(&ev);
            sent += 1;
        }
    };
    if !ops.replay(n.start, n.last, &mut deliver) {
        let page = ops.min_page_size().max(1);
        let mut addr = n.start & !(page - 1);
        loop {
            let entry = ops.translate(addr, IommuPerm::NONE);
            deliver(&entry);
            match addr.checked_add(page) {
                Some(next) if next <= n.last => addr = next,
                _ => break,
            }
        }
    }
    Ok(sent)
}

/// Delivers `event` to the notifiers of `region` whose flags and range
/// match, cropped to their ranges. Returns how many were told.
pub(crate) fn notify(
    regions: &Arena<Region>,
    state: &IommuState,
    region: RegionId,
    event: &IommuEvent,
) -> Result<usize, Error> {
    iommu_ops(regions, region)?;
    let wanted = |f: NotifierFlags| match event.kind {
        IommuEventKind::Map => f.map,
        IommuEventKind::Unmap => f.unmap,
    };
    let mut told = 0;
    for id in state
        .by_region
        .get(&region)
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        let n = state
            .notifiers
            .get(id.0)
            .expect("listed notifiers are live");
        if !wanted(n.flags) {
            continue;
        }
        if let Some(ev) = event.crop(n.start, n.last) {
            n.notify.notify(&ev);
            told += 1;
        }
    }
    Ok(told)
}

/// Runs `vfio_start` / `vfio_stop` for the regions whose count changed,
/// returning what failed.
pub(crate) fn judge(
    regions: &Arena<Region>,
    state: &mut IommuState,
) -> Vec<(RegionId, &'static str, String)> {
    let mut failures = Vec::new();
    let mut changed: Vec<RegionId> = state.changed.drain().collect();
    changed.sort();
    for region in changed {
        let u = state.usage.get(&region).copied().unwrap_or_default();
        let want = u.count > 0;
        if want == u.started {
            continue;
        }
        let Ok(ops) = iommu_ops_any(regions, region) else {
            continue;
        };
        let (hook, result) = if want {
            tracing::debug!(%region, "vfio_start");
            ("vfio_start", ops.vfio_start())
        } else {
            tracing::debug!(%region, "vfio_stop");
            ("vfio_stop", ops.vfio_stop())
        };
        let u = state.usage.entry(region).or_default();
        match result {
            Ok(()) => u.started = want,
            Err(e) => {
                // A failed start leaves the region not started; a failed
                // stop still leaves it stopped: nothing uses it.
                u.started = false;
                failures.push((region, hook, e.to_string()));
            }
        }
        if u.count == 0 && !u.started {
            state.usage.remove(&region);
        }
    }
    failures
}

/// The ops of an IOMMU region, doomed or not (hooks run before doomed
/// regions are freed).
fn iommu_ops_any(regions: &Arena<Region>, region: RegionId) -> Result<&Arc<dyn IommuOps>, Error> {
    match regions.get(region.0) {
        Some(Region {
            kind: RegionKind::Iommu { ops },
            ..
        }) => Ok(ops),
        _ => Err(Error::NotAnIommu { region }),
    }
}
