//! Diffing two flat views and telling listeners, in the documented order
//! (see the `listener` module docs).

use std::cmp::Ordering;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::error::{ListenerFailure, ListenerPanic};
use crate::flatview::{FlatRange, FlatView};
use crate::id::{AddressSpaceId, Arena, ListenerId};
use crate::ioevent::{FlatCoalesced, FlatIoeventfd};
use crate::listener::{Listener, ListenerConfig, ListenerCx, Section};
use crate::notifier::IommuState;
use crate::region::{DirtyLogMask, KindTag, Region};

type FdKey = (u64, u64, Option<u64>, usize, crate::RegionId);

/// A registered listener and what the framework knows of it.
pub(crate) struct ListenerEntry {
    pub(crate) config: ListenerConfig,
    pub(crate) address_space: AddressSpaceId,
    /// Registration order, to break priority ties.
    pub(crate) seq: u64,
    pub(crate) listener: Box<dyn Listener>,
    /// Ranges whose `region_add` it refused: it does not hold them.
    pub(crate) refused_ranges: Vec<FlatRange>,
    /// Ioeventfds whose `eventfd_add` it refused.
    pub(crate) refused_fds: Vec<FdKey>,
    /// IOMMU regions whose usage counters it contributes to, with how many
    /// sections: what must be counted down when it leaves, however far a
    /// commit got.
    pub(crate) iommu_held: Vec<(crate::RegionId, u32)>,
    /// The callback being run, for the report if it panics.
    calling: &'static str,
    /// Set when a callback panicked: the listener is not called again and
    /// leaves at the end of the operation.
    pub(crate) panicked: Option<ListenerPanic>,
}

impl ListenerEntry {
    /// A fresh entry holding nothing.
    pub(crate) fn new(
        config: ListenerConfig,
        address_space: AddressSpaceId,
        seq: u64,
        listener: Box<dyn Listener>,
    ) -> ListenerEntry {
        ListenerEntry {
            config,
            address_space,
            seq,
            listener,
            refused_ranges: Vec::new(),
            refused_fds: Vec::new(),
            iommu_held: Vec::new(),
            calling: "",
            panicked: None,
        }
    }

    pub(crate) fn order_key(&self) -> (i32, u64) {
        (self.config.priority, self.seq)
    }

    /// Notes the callback about to run.
    fn enter(&mut self, callback: &'static str) {
        self.calling = callback;
    }

    /// Counts one IOMMU section of `region` up or down, in the shared
    /// usage counters and in what this listener contributes.
    fn hold_iommu(&mut self, iommu: &mut IommuState, region: crate::RegionId, up: bool) {
        iommu.count(region, up);
        let pos = self.iommu_held.iter().position(|(r, _)| *r == region);
        match (pos, up) {
            (Some(i), true) => self.iommu_held[i].1 += 1,
            (None, true) => self.iommu_held.push((region, 1)),
            (Some(i), false) => {
                self.iommu_held[i].1 -= 1;
                if self.iommu_held[i].1 == 0 {
                    self.iommu_held.swap_remove(i);
                }
            }
            (None, false) => unreachable!("a listener only gives back what it holds"),
        }
    }

    fn take_refused_range(&mut self, fr: &FlatRange) -> bool {
        match self.refused_ranges.iter().position(|r| r.same_mapping(fr)) {
            Some(i) => {
                self.refused_ranges.swap_remove(i);
                true
            }
            None => false,
        }
    }

    fn refused_range(&self, fr: &FlatRange) -> bool {
        self.refused_ranges.iter().any(|r| r.same_mapping(fr))
    }
}

/// What changed in (part of) a view: the old and new ranges over the same
/// addresses, and the ioeventfds and coalesced ranges placed by them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Delta {
    pub(crate) old: Vec<FlatRange>,
    pub(crate) new: Vec<FlatRange>,
    pub(crate) old_fds: Vec<FlatIoeventfd>,
    pub(crate) new_fds: Vec<FlatIoeventfd>,
    pub(crate) old_co: Vec<FlatCoalesced>,
    pub(crate) new_co: Vec<FlatCoalesced>,
}

impl Delta {
    /// The change from `old` to `new`, whole.
    pub(crate) fn whole(old: &FlatView, new: &FlatView) -> Delta {
        Delta {
            old: old.ranges.iter().copied().collect(),
            new: new.ranges.iter().copied().collect(),
            old_fds: old.ioeventfds.clone(),
            new_fds: new.ioeventfds.clone(),
            old_co: old.coalesced.clone(),
            new_co: new.coalesced.clone(),
        }
    }

    /// True if nothing changed.
    pub(crate) fn is_empty(&self) -> bool {
        self.old == self.new && self.old_fds == self.new_fds && self.old_co == self.new_co
    }
}

/// One step of walking two sorted range lists together.
enum Step<'a> {
    Deleted(&'a FlatRange),
    Kept(&'a FlatRange, &'a FlatRange),
    Added(&'a FlatRange),
}

/// Walks `old` and `new` like QEMU's topology pass: a range is kept when
/// both lists hold the same mapping at the same place.
fn walk<'a>(old: &'a [FlatRange], new: &'a [FlatRange], mut f: impl FnMut(Step<'a>)) {
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < new.len() {
        let o = old.get(i);
        let n = new.get(j);
        match (o, n) {
            (Some(o), Some(n)) if o.same_mapping(n) => {
                f(Step::Kept(o, n));
                i += 1;
                j += 1;
            }
            (Some(o), Some(n)) if o.start <= n.start => {
                f(Step::Deleted(o));
                i += 1;
            }
            (Some(o), None) => {
                f(Step::Deleted(o));
                i += 1;
            }
            (_, Some(n)) => {
                f(Step::Added(n));
                j += 1;
            }
            (None, None) => unreachable!(),
        }
    }
}

/// Walks two sorted lists by key, calling `f(old, new)` for each element
/// present on one side only.
fn walk_sorted<T, K: Ord>(
    old: &[T],
    new: &[T],
    key: impl Fn(&T) -> K,
    mut f: impl FnMut(Option<&T>, Option<&T>),
) {
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < new.len() {
        match (old.get(i), new.get(j)) {
            (Some(o), Some(n)) => match key(o).cmp(&key(n)) {
                Ordering::Less => {
                    f(Some(o), None);
                    i += 1;
                }
                Ordering::Greater => {
                    f(None, Some(n));
                    j += 1;
                }
                Ordering::Equal => {
                    i += 1;
                    j += 1;
                }
            },
            (Some(o), None) => {
                f(Some(o), None);
                i += 1;
            }
            (None, Some(n)) => {
                f(None, Some(n));
                j += 1;
            }
            (None, None) => unreachable!(),
        }
    }
}

/// Delivers events to listeners, collecting refusals.
pub(crate) struct Dispatcher<'a> {
    pub(crate) regions: &'a Arena<Region>,
    pub(crate) listeners: &'a mut Arena<ListenerEntry>,
    pub(crate) iommu: &'a mut IommuState,
    pub(crate) failures: &'a mut Vec<ListenerFailure>,
}

impl Dispatcher<'_> {
    /// Runs `f` on listener `id`, unless it is gone or has panicked.
    /// A panic in `f` is caught and marks the listener panicked; `None`
    /// then too.
    fn with<R>(
        &mut self,
        id: ListenerId,
        f: impl FnOnce(&mut ListenerEntry, &mut ListenerCx<'_>) -> R,
    ) -> Option<R> {
        let entry = self.listeners.get_mut(id.0)?;
        if entry.panicked.is_some() {
            return None;
        }
        let mut cx = ListenerCx {
            regions: self.regions,
            iommu: &mut *self.iommu,
            address_space: entry.address_space,
            listener: id,
        };
        entry.calling = "";
        // Unwind safety: the framework's own state is only changed between
        // callbacks, so a panic leaves it whole; the listener that panicked
        // is never called again.
        match catch_unwind(AssertUnwindSafe(|| f(&mut *entry, &mut cx))) {
            Ok(r) => Some(r),
            Err(payload) => {
                let panic = ListenerPanic {
                    listener: id,
                    name: entry.config.name.clone(),
                    callback: entry.calling,
                    message: panic_message(&*payload),
                };
                tracing::error!(listener = %panic.name, callback = panic.callback, message = %panic.message, "listener panicked; detaching it");
                entry.panicked = Some(panic);
                None
            }
        }
    }

    fn section(&self, as_id: AddressSpaceId, fr: &FlatRange) -> Section {
        let region = self
            .regions
            .get(fr.region.0)
            .expect("dispatch: flat ranges refer to live regions");
        Section::new(as_id, *fr, region)
    }

    fn fail(
        &mut self,
        id: ListenerId,
        event: &'static str,
        range: Option<(u64, u128)>,
        err: crate::ListenerError,
    ) {
        let name = self
            .listeners
            .get(id.0)
            .map(|e| e.config.name.clone())
            .unwrap_or_default();
        tracing::warn!(listener = %name, event, error = %err, "listener refused");
        self.failures.push(ListenerFailure {
            listener: id,
            name,
            event,
            range,
            message: err.to_string(),
        });
    }

    /// `begin` (or `commit`) to `order`, ascending.
    pub(crate) fn bracket(&mut self, order: &[ListenerId], commit: bool) {
        for &id in order {
            self.with(id, |e, cx| {
                e.enter(if commit { "commit" } else { "begin" });
                tracing::trace!(listener = %e.config.name, event = e.calling);
                if commit {
                    e.listener.commit(cx)
                } else {
                    e.listener.begin(cx)
                }
            });
        }
    }

    /// Tells `order` (the listeners of `as_id`, ascending) what `delta`
    /// changed.
    pub(crate) fn view_change(
        &mut self,
        as_id: AddressSpaceId,
        order: &[ListenerId],
        delta: &Delta,
    ) {
        walk(&delta.old, &delta.new, |step| {
            if let Step::Deleted(o) = step {
                self.range_deleted(as_id, order, o);
            }
        });
        walk(&delta.old, &delta.new, |step| match step {
            Step::Kept(o, n) => self.range_kept(as_id, order, o, n),
            Step::Added(n) => self.range_added(as_id, order, n),
            Step::Deleted(_) => {}
        });
        walk_sorted(
            &delta.old_fds,
            &delta.new_fds,
            FlatIoeventfd::key,
            |o, _| {
                if let Some(o) = o {
                    self.fd_deleted(order, o);
                }
            },
        );
        walk_sorted(
            &delta.old_fds,
            &delta.new_fds,
            FlatIoeventfd::key,
            |_, n| {
                if let Some(n) = n {
                    self.fd_added(order, n);
                }
            },
        );
        walk_sorted(
            &delta.old_co,
            &delta.new_co,
            |c| *c,
            |o, _| {
                if let Some(o) = o {
                    self.coalesced(order, o, false);
                }
            },
        );
        walk_sorted(
            &delta.old_co,
            &delta.new_co,
            |c| *c,
            |_, n| {
                if let Some(n) = n {
                    self.coalesced(order, n, true);
                }
            },
        );
    }

    fn range_deleted(&mut self, as_id: AddressSpaceId, order: &[ListenerId], fr: &FlatRange) {
        let section = self.section(as_id, fr);
        for &id in order.iter().rev() {
            self.with(id, |e, cx| {
                if e.take_refused_range(fr) {
                    return;
                }
                if !fr.dirty_log_mask.is_empty() {
                    e.enter("log_stop");
                    tracing::trace!(listener = %e.config.name, event = "log_stop", start = fr.start, last = fr.last);
                    e.listener.log_stop(cx, &section, fr.dirty_log_mask, DirtyLogMask::EMPTY);
                }
                e.enter("region_del");
                tracing::trace!(listener = %e.config.name, event = "region_del", start = fr.start, last = fr.last, region = %fr.region);
                e.listener.region_del(cx, &section);
                if e.config.iommu_user && section.kind == KindTag::Iommu {
                    e.hold_iommu(cx.iommu, fr.region, false);
                }
            });
        }
    }

    /// Takes `fr` away from listener `id` as if it had refused it: it gets
    /// the deletion now and nothing more about the range until it changes.
    pub(crate) fn withdraw(&mut self, as_id: AddressSpaceId, id: ListenerId, fr: &FlatRange) {
        self.range_deleted(as_id, &[id], fr);
        if let Some(e) = self.listeners.get_mut(id.0) {
            e.refused_ranges.push(*fr);
        }
    }

    fn range_added(&mut self, as_id: AddressSpaceId, order: &[ListenerId], fr: &FlatRange) {
        let section = self.section(as_id, fr);
        for &id in order {
            let refused = self.with(id, |e, cx| {
                e.enter("region_add");
                tracing::trace!(listener = %e.config.name, event = "region_add", start = fr.start, last = fr.last, region = %fr.region);
                match e.listener.region_add(cx, &section) {
                    Ok(()) => {
                        if e.config.iommu_user && section.kind == KindTag::Iommu {
                            e.hold_iommu(cx.iommu, fr.region, true);
                        }
                        if !fr.dirty_log_mask.is_empty() {
                            e.enter("log_start");
                            tracing::trace!(listener = %e.config.name, event = "log_start", start = fr.start, last = fr.last);
                            e.listener.log_start(cx, &section, DirtyLogMask::EMPTY, fr.dirty_log_mask);
                        }
                        None
                    }
                    Err(err) => {
                        e.refused_ranges.push(*fr);
                        Some(err)
                    }
                }
            });
            if let Some(Some(err)) = refused {
                self.fail(id, "region_add", Some((fr.start, fr.last as u128 + 1)), err);
            }
        }
    }

    fn range_kept(
        &mut self,
        as_id: AddressSpaceId,
        order: &[ListenerId],
        old: &FlatRange,
        new: &FlatRange,
    ) {
        let (o, n) = (old.dirty_log_mask.0, new.dirty_log_mask.0);
        let wants_any = o != n
            || order
                .iter()
                .any(|id| self.listeners.get(id.0).is_some_and(|e| e.config.wants_nop));
        if !wants_any {
            return;
        }
        let section = self.section(as_id, new);
        for &id in order {
            self.with(id, |e, cx| {
                if e.refused_range(new) {
                    return;
                }
                if e.config.wants_nop {
                    e.enter("region_nop");
                    e.listener.region_nop(cx, &section);
                }
                if n & !o != 0 {
                    e.enter("log_start");
                    tracing::trace!(listener = %e.config.name, event = "log_start", start = new.start, last = new.last);
                    e.listener.log_start(cx, &section, old.dirty_log_mask, new.dirty_log_mask);
                }
            });
        }
        if o & !n != 0 {
            for &id in order.iter().rev() {
                self.with(id, |e, cx| {
                    if e.refused_range(new) {
                        return;
                    }
                    e.enter("log_stop");
                    tracing::trace!(listener = %e.config.name, event = "log_stop", start = new.start, last = new.last);
                    e.listener.log_stop(cx, &section, old.dirty_log_mask, new.dirty_log_mask);
                });
            }
        }
    }

    fn fd_deleted(&mut self, order: &[ListenerId], fd: &FlatIoeventfd) {
        for &id in order.iter().rev() {
            self.with(id, |e, cx| {
                if let Some(i) = e.refused_fds.iter().position(|k| *k == fd.key()) {
                    e.refused_fds.swap_remove(i);
                    return;
                }
                e.enter("eventfd_del");
                tracing::trace!(listener = %e.config.name, event = "eventfd_del", addr = fd.addr);
                e.listener.eventfd_del(cx, fd);
            });
        }
    }

    fn fd_added(&mut self, order: &[ListenerId], fd: &FlatIoeventfd) {
        for &id in order {
            let refused = self.with(id, |e, cx| {
                e.enter("eventfd_add");
                tracing::trace!(listener = %e.config.name, event = "eventfd_add", addr = fd.addr);
                e.listener
                    .eventfd_add(cx, fd)
                    .err()
                    .inspect(|_| e.refused_fds.push(fd.key()))
            });
            if let Some(Some(err)) = refused {
                self.fail(
                    id,
                    "eventfd_add",
                    Some((fd.addr, fd.addr as u128 + fd.fd.size as u128)),
                    err,
                );
            }
        }
    }

    fn coalesced(&mut self, order: &[ListenerId], c: &FlatCoalesced, add: bool) {
        let run = |d: &mut Self, id| {
            d.with(id, |e, cx| {
                if add {
                    e.enter("coalesced_io_add");
                    tracing::trace!(listener = %e.config.name, event = "coalesced_io_add", addr = c.addr);
                    e.listener.coalesced_io_add(cx, c)
                } else {
                    e.enter("coalesced_io_del");
                    tracing::trace!(listener = %e.config.name, event = "coalesced_io_del", addr = c.addr);
                    e.listener.coalesced_io_del(cx, c)
                }
            });
        };
        if add {
            order.iter().for_each(|&id| run(self, id));
        } else {
            order.iter().rev().for_each(|&id| run(self, id));
        }
    }

    /// `log_sync` for every logged range of `view`, ascending.
    pub(crate) fn log_sync(
        &mut self,
        as_id: AddressSpaceId,
        order: &[ListenerId],
        view: &FlatView,
    ) {
        for fr in view
            .ranges
            .iter()
            .filter(|fr| !fr.dirty_log_mask.is_empty())
        {
            let section = self.section(as_id, fr);
            for &id in order {
                self.with(id, |e, cx| {
                    if !e.refused_range(fr) {
                        e.enter("log_sync");
                        e.listener.log_sync(cx, &section);
                    }
                });
            }
        }
    }

    /// `log_global_start` ascending; on a refusal, `log_global_stop` to
    /// those already started (descending) and the refusal is returned.
    pub(crate) fn log_global_start(&mut self, order: &[ListenerId]) -> bool {
        for (n, &id) in order.iter().enumerate() {
            let res = self.with(id, |e, cx| {
                e.enter("log_global_start");
                e.listener.log_global_start(cx)
            });
            if let Some(Err(err)) = res {
                self.fail(id, "log_global_start", None, err);
                self.log_global_stop(&order[..n]);
                return false;
            }
        }
        true
    }

    /// `log_global_stop`, descending.
    pub(crate) fn log_global_stop(&mut self, order: &[ListenerId]) {
        for &id in order.iter().rev() {
            self.with(id, |e, cx| {
                e.enter("log_global_stop");
                e.listener.log_global_stop(cx)
            });
        }
    }
}

/// The text of a panic payload (`panic!` with a message gives a `&str` or
/// a `String`).
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

#[cfg(test)]
#[path = "dispatch_tests.rs"]
mod tests;
