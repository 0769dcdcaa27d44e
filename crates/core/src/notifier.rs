//! The state behind IOMMU notifiers and usage counters, and the
//! operations on it shared by `Memory` and listener contexts.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use crate::error::Error;
use crate::id::{Arena, IdMap, IdSet, NotifierId, RegionId};
use crate::iommu::{
    IommuEvent, IommuEventKind, IommuNotify, IommuOps, IommuPerm, IommuTlbEntry, NotifierFlags,
};
use crate::region::{Region, RegionKind};

/// A registered notifier.
pub(crate) struct NotifierEntry {
    /// The listener whose callback registered it, if any: dropped with it.
    pub(crate) owner: Option<crate::ListenerId>,
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

/// Runs an IOMMU model's hook; a panic in it becomes a failure whose
/// message says so.
fn guarded<T>(f: impl FnOnce() -> Result<T, crate::iommu::HookError>) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(payload) => Err(format!(
            "panicked: {}",
            crate::dispatch::panic_message(&*payload)
        )),
    }
}

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
    entry: NotifierEntry,
) -> Result<NotifierId, Error> {
    let (region, flags, start, last) = (entry.region, entry.flags, entry.start, entry.last);
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
    let id = NotifierId(state.notifiers.insert(entry));
    state.by_region.entry(region).or_default().push(id);
    let new = state.flags_of(region);
    if old != new {
        if let Err(message) = guarded(|| ops.notify_flags_changed(old, new)) {
            forget_notifier(state, id);
            return Err(Error::IommuHook {
                region,
                hook: "notify_flags_changed",
                message,
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
            guarded(|| ops.notify_flags_changed(old, new)).map_err(|message| Error::IommuHook {
                region,
                hook: "notify_flags_changed",
                message,
            })?;
        }
    }
    Ok(())
}

/// Sends the current mappings inside a notifier's range to it, as MAP
/// events: through the ops' `replay`, or by translating every minimum
/// page of the range. A panic in the notifier or the ops ends the replay
/// with [`Error::NotifierPanicked`].
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
    catch_unwind(AssertUnwindSafe(|| replay_into(&**ops, n))).map_err(|payload| {
        Error::NotifierPanicked {
            notifier: id,
            message: crate::dispatch::panic_message(&*payload),
        }
    })
}

fn replay_into(ops: &dyn IommuOps, n: &NotifierEntry) -> usize {
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
    sent
}

/// Delivers `event` to the notifiers of `region` whose flags and range
/// match, cropped to their ranges. Returns how many were told; if any
/// panicked, the others are told all the same and the first panic is
/// returned.
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
    let mut panicked = None;
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
            match catch_unwind(AssertUnwindSafe(|| n.notify.notify(&ev))) {
                Ok(()) => told += 1,
                Err(payload) => {
                    let message = crate::dispatch::panic_message(&*payload);
                    tracing::error!(notifier = %id, %message, "IOMMU notifier panicked");
                    panicked.get_or_insert(Error::NotifierPanicked {
                        notifier: *id,
                        message,
                    });
                }
            }
        }
    }
    match panicked {
        None => Ok(told),
        Some(e) => Err(e),
    }
}

/// Runs `vfio_start` / `vfio_stop` for the regions whose count changed,
/// returning what failed.
pub(crate) fn judge(
    regions: &Arena<Region>,
    state: &mut IommuState,
) -> Vec<(RegionId, &'static str, String)> {
    let mut failures = Vec::new();
    let mut changed: Vec<RegionId> = if state.changed.is_empty() {
        Vec::new()
    } else {
        std::mem::take(&mut state.changed).into_iter().collect()
    };
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
            ("vfio_start", guarded(|| ops.vfio_start()))
        } else {
            tracing::debug!(%region, "vfio_stop");
            ("vfio_stop", guarded(|| ops.vfio_stop()))
        };
        let u = state.usage.entry(region).or_default();
        match result {
            Ok(()) => u.started = want,
            Err(message) => {
                // A failed (or panicking) start leaves the region not
                // started; a failed stop still leaves it stopped: nothing
                // uses it.
                u.started = false;
                failures.push((region, hook, message));
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
