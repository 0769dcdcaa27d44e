//! The commit: bringing views up to date, and the two engines that do it.
//!
//! - [`Engine::Reference`] renders every view again from scratch on every
//!   commit, like QEMU. Simple, and the yardstick for the other.
//! - [`Engine::Incremental`] (the default) records, as the tree changes,
//!   which windows of which flat-view roots a changed region can reach —
//!   walking up through parents and the aliases that show it, clipped at
//!   each level — and at commit re-renders only those windows, splices
//!   them into the previous view (sharing everything else), and diffs only
//!   them. Address spaces re-resolve their flat-view root only when a
//!   region on their root chain changed.
//!
//! Both produce the same views and send the same events; the property
//! tests run them side by side.

use std::borrow::Cow;
use std::sync::Arc;

use crate::address_space::RootView;
use crate::dispatch::{Delta, Dispatcher};
use crate::error::Error;
use crate::flatview::{FlatRange, FlatView};
use crate::id::{AddressSpaceId, IdMap, IdSet, RegionId};
use crate::ioevent::FlatIoeventfd;
use crate::memory::Memory;
use crate::ranges::RangeList;
use crate::region::{Upward, SIZE_2_64};
use crate::render::Regions;

/// How commits bring views up to date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Engine {
    /// Re-render and diff only what changed (the default).
    #[default]
    Incremental,
    /// Re-render and diff every view, every commit.
    Reference,
}

impl Engine {
    /// `"incremental"` or `"reference"`.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Incremental => "incremental",
            Engine::Reference => "reference",
        }
    }
}

impl std::str::FromStr for Engine {
    type Err = String;
    fn from_str(s: &str) -> Result<Engine, String> {
        match s {
            "incremental" => Ok(Engine::Incremental),
            "reference" => Ok(Engine::Reference),
            other => Err(format!("unknown engine {other:?} (incremental, reference)")),
        }
    }
}

impl Memory {
    /// Marks `id` changed, for flat-root resolution.
    pub(crate) fn touch(&mut self, id: RegionId) {
        self.touched.push(id);
    }

    /// Records the windows of flat-view roots where `id` (whatever its own
    /// enabled flag) is rendered. Called before and after a change.
    pub(crate) fn note_damage(&mut self, id: RegionId) {
        let Some(r) = self.regions.get(id.0) else {
            return;
        };
        self.touched.push(id);
        if let Some(p) = r.parent {
            // A parent's single-child shortcut depends on its children.
            self.touched.push(p);
        }
        if self.engine == Engine::Reference || self.full_render {
            return;
        }
        let mut stack: smallvec::SmallVec<[(RegionId, i128, i128); 16]> =
            smallvec::smallvec![(id, 0i128, r.size as i128)];
        while let Some((n, lo, hi)) = stack.pop() {
            if lo >= hi {
                continue;
            }
            let node = self
                .regions
                .get(n.0)
                .expect("tree edges point to live regions");
            if node.renders_view {
                debug_assert!(self.roots.contains_key(&Some(n)));
                self.damage.push((n, lo, hi));
            }
            if n != id && !node.enabled {
                continue;
            }
            if let Some(p) = node.parent {
                let parent = self.regions.get(p.0).expect("live parent");
                if !parent.skipped || parent.renders_view {
                    let a = node.addr as i128;
                    let psize = parent.size as i128;
                    stack.push((p, (lo + a).max(0), (hi + a).min(psize)));
                }
            }
            for up in &node.upward {
                debug_assert_eq!(
                    Some(*up),
                    self.upward_of(up.alias),
                    "upward windows follow their aliases"
                );
                let o = up.offset as i128;
                let (lo, hi) = ((lo - o).max(0), (hi - o).min(up.size as i128));
                if lo < hi {
                    stack.push((up.alias, lo, hi));
                }
            }
        }
    }

    /// Moves this address space's contribution to the skip counts from
    /// `old` to `new`. A region strictly inside the root chain of an
    /// address space whose root has no parent and no alias can only be
    /// rendered through the view of the chain's end, so damage walks need
    /// not climb into it (such chains run from e.g. a bus-master container
    /// through its full alias down to system memory; there can be
    /// thousands). Skipped aliases leave their target's `upward` list.
    pub(crate) fn set_skipping(&mut self, old: &[RegionId], new: &[RegionId]) {
        for r in old {
            let c = self.skip_count.get_mut(r).expect("counted");
            *c -= 1;
            if *c == 0 {
                self.skip_count.remove(r);
                self.set_upward(*r, true);
                self.mark_root_flags(*r, None, Some(false));
            }
        }
        for r in new {
            let c = self.skip_count.entry(*r).or_insert(0);
            *c += 1;
            if *c == 1 {
                self.set_upward(*r, false);
                self.mark_root_flags(*r, None, Some(true));
            }
        }
    }

    /// Mirrors `roots` and `skip_count` membership onto the region.
    fn mark_root_flags(&mut self, id: RegionId, renders: Option<bool>, skipped: Option<bool>) {
        if let Some(r) = self.regions.get_mut(id.0) {
            if let Some(v) = renders {
                r.renders_view = v;
            }
            if let Some(v) = skipped {
                r.skipped = v;
            }
        }
    }

    fn set_upward(&mut self, alias: RegionId, on: bool) {
        let Some(up) = self.upward_of(alias) else {
            return;
        };
        if let Some(t) = self.regions.get_mut(up_target(&self.regions, alias).0) {
            t.upward.retain(|u| u.alias != alias);
            if on {
                t.upward.push(up);
            }
        }
    }

    /// The upward entry `alias` gives its target, from the alias as it is.
    pub(crate) fn upward_of(&self, alias: RegionId) -> Option<Upward> {
        let r = self.regions.get(alias.0)?;
        let (_, offset) = r.alias()?;
        Some(Upward {
            alias,
            offset,
            size: r.size,
        })
    }

    /// Brings `alias`'s entry in its target's upward list (if it has one)
    /// up to date after its offset or size changed.
    pub(crate) fn refresh_upward(&mut self, alias: RegionId) {
        let Some(up) = self.upward_of(alias) else {
            return;
        };
        if let Some(t) = self.regions.get_mut(up_target(&self.regions, alias).0) {
            for u in t.upward.iter_mut().filter(|u| u.alias == alias) {
                *u = up;
            }
        }
    }

    fn skippable_chain(
        &self,
        root: RegionId,
        flat_root: Option<RegionId>,
        chain: &[RegionId],
    ) -> Vec<RegionId> {
        let r = self.regions.get(root.0).expect("live root");
        if flat_root.is_none() || r.parent.is_some() || !r.referrers.is_empty() {
            return Vec::new();
        }
        chain[..chain.len() - 1].to_vec()
    }

    pub(crate) fn unindex_chain(&mut self, as_id: AddressSpaceId, chain: &[RegionId]) {
        for r in chain {
            if let Some(list) = self.chain_index.get_mut(r) {
                list.retain(|a| *a != as_id);
                if list.is_empty() {
                    self.chain_index.remove(r);
                }
            }
        }
    }

    fn index_chain(&mut self, as_id: AddressSpaceId, chain: &[RegionId]) {
        for r in chain {
            let list = self.chain_index.entry(*r).or_default();
            if !list.contains(&as_id) {
                list.push(as_id);
            }
        }
    }

    /// Takes `as_id` off the users of `root`, dropping the view when it was
    /// the last; returns the view it saw.
    pub(crate) fn leave_root(
        &mut self,
        as_id: AddressSpaceId,
        root: Option<RegionId>,
    ) -> Arc<FlatView> {
        let rv = self
            .roots
            .get_mut(&root)
            .expect("a resolved space has a view");
        rv.users.retain(|a| *a != as_id);
        let view = Arc::clone(&rv.view);
        if rv.users.is_empty() {
            self.roots.remove(&root);
            if let Some(r) = root {
                self.mark_root_flags(r, Some(false), None);
            }
        }
        view
    }

    /// Brings every view up to date and tells the listeners.
    pub(crate) fn run_commit(&mut self) -> Result<(), Error> {
        let _span = tracing::debug_span!("commit", engine = self.engine.name()).entered();
        // Drained rather than taken: the sets keep their capacity, so a
        // steady stream of small commits allocates little.
        // Vectors drained, not sets: draining a set costs its capacity,
        // which a large build leaves behind.
        let mut touched: smallvec::SmallVec<[RegionId; 8]> = self.touched.drain(..).collect();
        touched.sort_unstable();
        touched.dedup();
        let damage: smallvec::SmallVec<[(RegionId, i128, i128); 8]> =
            self.damage.drain(..).collect();
        let full = std::mem::take(&mut self.full_render) || self.engine == Engine::Reference;

        // 1. Address spaces whose root chain changed resolve their root
        //    again; a new root is rendered whole.
        let mut recheck: Vec<AddressSpaceId> = if full {
            self.space_order.clone()
        } else {
            let mut v: Vec<AddressSpaceId> = touched
                .iter()
                .filter_map(|r| self.chain_index.get(r))
                .flatten()
                .copied()
                .collect();
            v.extend(
                self.space_order
                    .iter()
                    .rev()
                    .take_while(|a| self.spaces.get(a.0).is_some_and(|s| s.fresh))
                    .copied(),
            );
            v
        };
        recheck.sort();
        recheck.dedup();
        let mut fresh_roots: IdSet<Option<RegionId>> = IdSet::default();
        let mut switched: IdMap<AddressSpaceId, Arc<FlatView>> = IdMap::default();
        for as_id in recheck {
            let regions = Regions {
                arena: &self.regions,
                global_dirty_log: self.global_dirty_log,
            };
            let space = self.spaces.get(as_id.0).expect("live space");
            let space_root = space.root;
            let crate::render::FlatRoot { root, chain, path } = regions.flat_root(space_root);
            let (old_root, old_chain, fresh) = (space.flat_root, space.chain.clone(), space.fresh);
            if chain != old_chain {
                self.unindex_chain(as_id, &old_chain);
                self.index_chain(as_id, &chain);
            }
            let skipping = self.skippable_chain(space_root, root, &chain[..path]);
            let old_skipping =
                std::mem::take(&mut self.spaces.get_mut(as_id.0).expect("live space").skipping);
            self.set_skipping(&old_skipping, &skipping);
            let space = self.spaces.get_mut(as_id.0).expect("live space");
            space.chain = chain;
            space.skipping = skipping;
            if root == old_root && !fresh {
                continue;
            }
            space.flat_root = root;
            space.fresh = false;
            let old_view = if fresh {
                Arc::new(FlatView::default())
            } else {
                self.leave_root(as_id, old_root)
            };
            let rv = self.roots.entry(root).or_insert_with(|| {
                fresh_roots.insert(root);
                RootView::new(regions_render(
                    &self.regions,
                    self.global_dirty_log,
                    root,
                    &self.space_table,
                ))
            });
            rv.users.push(as_id);
            let cell = Arc::clone(&rv.cell);
            if let Some(r) = root {
                self.mark_root_flags(r, Some(true), None);
            }
            self.spaces
                .get(as_id.0)
                .expect("live space")
                .cell
                .store(cell);
            switched.insert(as_id, old_view);
        }

        // 2. Views bring their damaged windows (or everything) up to date.
        // Few views change per commit: a short list beats a map.
        let mut patched: Patched = Patched::new();
        let regions = Regions {
            arena: &self.regions,
            global_dirty_log: self.global_dirty_log,
        };
        if full {
            for (root, rv) in self.roots.iter_mut() {
                if fresh_roots.contains(root) {
                    continue;
                }
                let new = regions.render_view(*root, &self.space_table);
                if new != *rv.view {
                    let old = Arc::clone(&rv.view);
                    let delta = Delta::whole(&old, &new);
                    rv.publish(Arc::new(new));
                    patched.push((*root, old, delta));
                }
            }
        } else {
            // Grouped by root, without a map: a commit damages a handful of
            // windows. Roots that other roots show through aliases go
            // first, so that those can copy their part from the fresh view
            // instead of rendering it again; a root still waiting for its
            // turn is never copied from.
            let mut damage = damage;
            let shown_elsewhere = |r: RegionId| {
                self.regions
                    .get(r.0)
                    .is_some_and(|x| !x.referrers.is_empty())
            };
            damage.sort_unstable_by_key(|&(root, lo, hi)| (!shown_elsewhere(root), root, lo, hi));
            let mut waiting: smallvec::SmallVec<[RegionId; 4]> =
                damage.iter().map(|d| d.0).collect();
            waiting.dedup();
            let mut windows: smallvec::SmallVec<[(i128, i128); 8]> = smallvec::SmallVec::new();
            let mut rest = &damage[..];
            while let Some(&(root, _, _)) = rest.first() {
                let n = rest.iter().take_while(|d| d.0 == root).count();
                windows.clear();
                windows.extend(rest[..n].iter().map(|&(_, lo, hi)| (lo, hi)));
                rest = &rest[n..];
                waiting.retain(|r| *r != root);
                let key = Some(root);
                if fresh_roots.contains(&key) {
                    continue;
                }
                let Some(view) = self.roots.get(&key).map(|rv| Arc::clone(&rv.view)) else {
                    continue;
                };
                let roots = &self.roots;
                let current = |r: RegionId| -> Option<&FlatView> {
                    if waiting.contains(&r) {
                        None
                    } else {
                        roots.get(&Some(r)).map(|rv| &*rv.view)
                    }
                };
                if let Some((new, delta)) = patch(&regions, &view, root, &windows, &current) {
                    let rv = self.roots.get_mut(&key).expect("looked up above");
                    rv.publish(Arc::new(new));
                    patched.push((key, view, delta));
                }
            }
        }

        // 3. Tell the listeners, address space by address space.
        let mut deltas: smallvec::SmallVec<[(AddressSpaceId, Cow<'_, Delta>); 4]> =
            smallvec::SmallVec::new();
        let mut changed = !patched.is_empty();
        for (as_id, old) in &switched {
            let space = self.spaces.get(as_id.0).expect("live space");
            changed |= **old != *self.roots[&space.flat_root].view;
        }
        for &as_id in &self.listened {
            let space = self.spaces.get(as_id.0).expect("live space");
            let new = &self.roots[&space.flat_root].view;
            let delta = if let Some(old) = switched.get(&as_id) {
                Cow::Owned(Delta::whole(old, new))
            } else if let Some((_, old, delta)) =
                patched.iter().find(|(root, _, _)| *root == space.flat_root)
            {
                let wants_nop = space
                    .listeners
                    .iter()
                    .any(|l| self.listeners.get(l.0).is_some_and(|e| e.config.wants_nop));
                if wants_nop {
                    Cow::Owned(Delta::whole(old, new))
                } else {
                    Cow::Borrowed(delta)
                }
            } else {
                continue;
            };
            if !delta.is_empty() {
                deltas.push((as_id, delta));
            }
        }
        if !changed {
            return Ok(());
        }
        let mut failures = Vec::new();
        let mut d = Dispatcher {
            regions: &self.regions,
            listeners: &mut self.listeners,
            iommu: &mut self.iommu,
            failures: &mut failures,
        };
        d.bracket(&self.listener_order, false);
        for (as_id, delta) in &deltas {
            let space = self.spaces.get(as_id.0).expect("live space");
            tracing::debug!(address_space = %space.name, removed = delta.old.len(), added = delta.new.len(), "view changed");
            d.view_change(*as_id, &space.listeners, delta);
        }
        // Usage is judged once all sections moved, before listeners close
        // the commit: a window removed and re-created in one transaction
        // never reaches zero here.
        let hooks = crate::notifier::judge(&self.regions, &mut self.iommu);
        for (region, hook, _) in &hooks {
            if *hook == "vfio_start" {
                self.withdraw_iommu(*region);
            }
        }
        if !hooks.is_empty() {
            // The withdrawn sections brought failed regions back to zero.
            let _ = crate::notifier::judge(&self.regions, &mut self.iommu);
        }
        let mut d = Dispatcher {
            regions: &self.regions,
            listeners: &mut self.listeners,
            iommu: &mut self.iommu,
            failures: &mut failures,
        };
        d.bracket(&self.listener_order, true);
        if !failures.is_empty() {
            Err(Error::ListenerRefused { failures })
        } else if let Some((region, hook, message)) = hooks.into_iter().next() {
            Err(Error::IommuHook {
                region,
                hook,
                message,
            })
        } else {
            Ok(())
        }
    }
}

impl Memory {
    /// Takes every section of `region` away from the IOMMU-user listeners
    /// that hold it (after a failed `vfio_start`).
    fn withdraw_iommu(&mut self, region: RegionId) {
        let mut failures = Vec::new();
        for &as_id in &self.listened {
            let space = self.spaces.get(as_id.0).expect("live space");
            let view = Arc::clone(&self.roots[&space.flat_root].view);
            let users: Vec<_> = space
                .listeners
                .iter()
                .copied()
                .filter(|l| self.listeners.get(l.0).is_some_and(|e| e.config.iommu_user))
                .collect();
            let mut d = Dispatcher {
                regions: &self.regions,
                listeners: &mut self.listeners,
                iommu: &mut self.iommu,
                failures: &mut failures,
            };
            for fr in view.ranges.iter().filter(|fr| fr.region == region) {
                for &l in users.iter().rev() {
                    if d.listeners
                        .get(l.0)
                        .is_some_and(|e| !e.refused_ranges.iter().any(|r| r.same_mapping(fr)))
                    {
                        d.withdraw(as_id, l, fr);
                    }
                }
            }
        }
    }
}

/// The views a commit changed: root, previous view, and what changed.
type Patched = smallvec::SmallVec<[(Option<RegionId>, Arc<FlatView>, Delta); 2]>;

/// The target of a live alias.
fn up_target(arena: &crate::id::Arena<crate::region::Region>, alias: RegionId) -> RegionId {
    arena
        .get(alias.0)
        .and_then(|r| r.alias())
        .map(|(t, _)| t)
        .expect("a live alias")
}

fn regions_render(
    arena: &crate::id::Arena<crate::region::Region>,
    global_dirty_log: bool,
    root: Option<RegionId>,
    spaces: &crate::flatview::SpaceTable,
) -> FlatView {
    Regions {
        arena,
        global_dirty_log,
    }
    .render_view(root, spaces)
}

/// Re-renders `windows` of `root` into a copy of `old`. Returns the new view
/// and what changed, or `None` if nothing did.
fn patch(
    regions: &Regions<'_>,
    old: &FlatView,
    root: RegionId,
    windows: &[(i128, i128)],
    current: crate::render::Current<'_>,
) -> Option<(FlatView, Delta)> {
    let ranges = &old.ranges;
    let len = ranges.len();
    debug_assert!(windows.is_sorted(), "windows come sorted");
    // Index spans [i, j) of old ranges each window covers, widened to the
    // whole ranges it cuts; spans close enough to share a merge neighbour
    // are joined.
    let mut spans: smallvec::SmallVec<[(usize, usize, i128, i128); 4]> = smallvec::SmallVec::new();
    for &(lo, hi) in windows {
        let (lo, hi) = (lo.max(0), hi.min(SIZE_2_64 as i128));
        if lo >= hi {
            continue;
        }
        let i = ranges.index_from(lo as u64);
        let j = ranges.index_to(hi as u128).max(i);
        let lo2 = if i < j {
            lo.min(ranges[i].start as i128)
        } else {
            lo
        };
        let hi2 = if i < j {
            hi.max(ranges[j - 1].last as i128 + 1)
        } else {
            hi
        };
        match spans.last_mut() {
            Some(last) if i <= last.1 + 1 || lo2 <= last.3 => {
                last.1 = last.1.max(j);
                last.2 = last.2.min(lo2);
                last.3 = last.3.max(hi2);
            }
            _ => spans.push((i, j, lo2, hi2)),
        }
    }
    // Render each span. A span edge that falls between two contiguous
    // pieces of one unmergeable region is ambiguous (a full render may
    // make them one range): widen across it and render again, so that
    // every edge left is a real boundary.
    let ambiguous = |a: Option<&FlatRange>, b: Option<&FlatRange>| match (a, b) {
        (Some(a), Some(b)) => a.unmergeable && a.continues_into(b),
        _ => false,
    };
    let mut queue = spans.into_iter().peekable();
    let mut rendered: smallvec::SmallVec<[(usize, usize, Vec<FlatRange>); 2]> =
        smallvec::SmallVec::new();
    while let Some((mut i, mut j, mut lo, mut hi)) = queue.next() {
        loop {
            while let Some(&(ni, nj, nlo, nhi)) = queue.peek() {
                if ni > j + 1 && nlo > hi {
                    break;
                }
                queue.next();
                j = j.max(nj);
                lo = lo.min(nlo);
                hi = hi.max(nhi);
            }
            if let Some(&(pi, pj, _)) = rendered.last() {
                if i <= pj + 1 {
                    rendered.pop();
                    i = pi;
                    lo = lo.min(ranges.get(pi).map_or(lo, |r| r.start as i128));
                }
            }
            let new = regions.render_window_from(root, lo, hi, Some(current));
            let mut grew = false;
            if i > 0 && ambiguous(ranges.get(i - 1), new.first()) {
                i -= 1;
                lo = ranges[i].start as i128;
                grew = true;
            }
            if j < len && ambiguous(new.last(), ranges.get(j)) {
                hi = ranges[j].last as i128 + 1;
                j += 1;
                grew = true;
            }
            if !grew {
                rendered.push((i, j, new));
                break;
            }
        }
    }
    let mut list: Option<RangeList> = None;
    let mut pieces: smallvec::SmallVec<[(Vec<FlatRange>, Vec<FlatRange>); 2]> =
        smallvec::SmallVec::new();
    for (i, j, mut new) in rendered.into_iter().rev() {
        let (mut a, mut b) = (i, j);
        if a > 0 {
            let left = ranges[a - 1];
            if let Some(first) = new.first_mut() {
                if left.can_merge(first) {
                    first.start = left.start;
                    first.offset_in_region = left.offset_in_region;
                    a -= 1;
                }
            }
        }
        if b < len {
            let right = ranges[b];
            if let Some(last) = new.last_mut() {
                if last.can_merge(&right) {
                    last.last = right.last;
                    b += 1;
                }
            }
        }
        let old_slice = ranges.slice(a, b);
        if old_slice != new {
            list = Some(list.as_ref().unwrap_or(ranges).splice(a, b, &new));
        }
        // Kept even when the ranges are equal: the ioeventfds or coalesced
        // ranges they place may have changed.
        pieces.push((old_slice, new));
    }
    pieces.reverse();
    let mut delta = Delta::default();
    for (o, n) in pieces {
        // Usually one piece: its vectors move in whole.
        if delta.old.is_empty() && delta.new.is_empty() {
            (delta.old, delta.new) = (o, n);
        } else {
            delta.old.extend(o);
            delta.new.extend(n);
        }
    }
    // Ioeventfds and coalesced ranges placed by the replaced ranges go;
    // those placed by the new ones come.
    let placed_by_old = |region: RegionId, lo: u64, hi: u128| {
        delta
            .old
            .iter()
            .any(|r| r.region == region && (lo as u128) <= r.last as u128 && hi > r.start as u128)
    };
    let (mut fds, mut cos) = (Vec::new(), Vec::new());
    for fd in &old.ioeventfds {
        let end = fd.addr as u128 + (fd.fd.size as u128).max(1);
        if placed_by_old(fd.region, fd.addr, end) {
            delta.old_fds.push(fd.clone());
        } else {
            fds.push(fd.clone());
        }
    }
    for c in &old.coalesced {
        if placed_by_old(c.region, c.addr, c.addr as u128 + c.size as u128) {
            delta.old_co.push(*c);
        } else {
            cos.push(*c);
        }
    }
    let (new_fds, new_cos) = regions.placements(&delta.new);
    fds.extend(new_fds.iter().cloned());
    cos.extend(new_cos.iter().copied());
    fds.sort_by_key(FlatIoeventfd::key);
    fds.dedup_by_key(|f| f.key());
    cos.sort();
    cos.dedup();
    delta.new_fds = new_fds;
    delta.new_co = new_cos;
    if delta.is_empty() {
        return None;
    }
    let view = FlatView {
        root: old.root,
        ranges: list.unwrap_or_else(|| ranges.clone()),
        ioeventfds: fds,
        coalesced: cos,
        targets: regions.extend_targets(&old.targets, &delta.new),
    };
    Some((view, delta))
}
