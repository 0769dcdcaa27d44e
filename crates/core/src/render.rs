//! The reference renderer: a region tree to a flat view, by QEMU's rules.
//!
//! The rules (each has a unit test in `tests` below):
//! - a disabled region contributes nothing, subtree included;
//! - subregions render in list order — descending priority, most recently
//!   added first among equals — and what renders first wins, so a region
//!   only fills the gaps earlier (higher-priority) siblings left;
//! - each region is clipped to its parent's window; the root window is
//!   `[0, 2^64)`;
//! - an alias renders its target shifted by (alias address − alias
//!   offset), clipped to the alias's own window; the target's own address
//!   in its parent plays no part;
//! - `readonly`, `nonvolatile` and `unmergeable` are inherited downwards
//!   (through containers and aliases);
//! - a terminating region (anything but a container or alias) renders its
//!   subregions first and then fills the gaps they left with itself;
//! - adjacent ranges of one region with contiguous offsets and equal
//!   attributes merge (QEMU's `flatview_simplify`); unmergeable ones never.
//!
//! Deliberate differences from QEMU: the root of an address space is placed
//! at address 0 whatever its own address in some parent, whereas QEMU adds
//! the flat-view root's `addr` (only visible when a root is also mapped at
//! a non-zero address elsewhere); and the search for a shared root does not
//! skip regions whose flags would be lost (see `flat_root`).

use std::collections::BTreeMap;

use std::sync::Arc;

use crate::flatview::{FlatRange, FlatView, SpaceTable, Targets};
use crate::id::{Arena, IdMap, RegionId};
use crate::ioevent::{FlatCoalesced, FlatIoeventfd};
use crate::ranges::RangeList;
use crate::region::{DirtyClient, DirtyLogMask, Region, RegionKind, SIZE_2_64};

/// Read-only access to the region arena for rendering.
pub(crate) struct Regions<'a> {
    pub(crate) arena: &'a Arena<Region>,
    pub(crate) global_dirty_log: bool,
}

/// Up-to-date views of other flat-view roots that a window render may
/// copy from instead of rendering their subtrees again (see
/// [`Regions::render_window`]). Returns `None` for a root whose view is
/// not current.
pub(crate) type Current<'a> = &'a dyn Fn(RegionId) -> Option<&'a FlatView>;

impl Regions<'_> {
    pub(crate) fn get(&self, id: RegionId) -> &Region {
        self.arena
            .get(id.0)
            .expect("render: the tree refers only to live regions")
    }

    /// The dirty-log mask a flat range of `region` carries (QEMU's
    /// `memory_region_get_dirty_log_mask`): the region's own clients, plus
    /// migration for migratable memory while global logging is on.
    pub(crate) fn dirty_mask(&self, region: &Region) -> DirtyLogMask {
        let migratable = matches!(
            region.kind,
            RegionKind::Ram { device: false, .. }
                | RegionKind::RomDevice { .. }
                | RegionKind::Iommu { .. }
        );
        if self.global_dirty_log && migratable {
            region.dirty_log_mask.with(DirtyClient::Migration, true)
        } else {
            region.dirty_log_mask
        }
    }

    /// QEMU's `memory_region_get_flatview_root`: follow enabled full-size
    /// aliases at offset 0, and containers whose only enabled child sits
    /// at 0 and fits in them, so that address spaces share views. `None` when
    /// the root is disabled or an empty container. Also returns the regions
    /// a change to which (or to a child of which) may change the answer.
    ///
    /// Unlike QEMU, the walk stops at a region that sets `readonly`,
    /// `nonvolatile` or `unmergeable`: skipping it would drop the flag from
    /// everything below (QEMU renders a read-only full-size alias used as
    /// a root as writable). And children that render nothing (see
    /// [`inert`](Self::inert)) do not count against a container's only
    /// child: an x86 SMM address space, an SMRAM alias over system memory,
    /// shares the system view while SMRAM is closed, where QEMU renders
    /// and patches a second copy of it.
    pub(crate) fn flat_root(&self, root: RegionId) -> FlatRoot {
        let mut fr = FlatRoot {
            root: None,
            chain: vec![root],
            path: 1,
        };
        let mut watched = Vec::new();
        let mut id = root;
        loop {
            let r = self.get(id);
            if !r.enabled {
                break;
            }
            if r.readonly || r.nonvolatile || r.unmergeable {
                fr.root = Some(id);
                break;
            }
            match r.kind {
                RegionKind::Alias { target, offset }
                    if offset == 0 && r.size >= self.get(target).size =>
                {
                    id = target;
                    fr.chain.push(id);
                    continue;
                }
                RegionKind::Container => {
                    let mut enabled = r.subregions.iter().filter(|c| self.get(**c).enabled);
                    let Some(&first) = enabled.next() else {
                        break;
                    };
                    let next = if enabled.next().is_none() {
                        // QEMU's rule: the only enabled child, if it fits.
                        self.fits(r, first).then_some(first)
                    } else if r.subregions.len() <= STAND_IN_CHILDREN {
                        self.stand_in(r, &mut watched)
                    } else {
                        None
                    };
                    if let Some(only) = next {
                        id = only;
                        fr.chain.push(id);
                        continue;
                    }
                }
                _ => {}
            }
            fr.root = Some(id);
            break;
        }
        fr.path = fr.chain.len();
        fr.chain.extend(watched);
        fr
    }

    /// True if `child` can stand for container `r` in a root walk: placed
    /// at 0 and no larger than it.
    fn fits(&self, r: &Region, child: RegionId) -> bool {
        let c = self.get(child);
        c.addr == 0 && r.size >= c.size
    }

    /// The child of container `r` (with several enabled children) that
    /// renders everything `r` does: one that fits (see [`fits`](Self::fits))
    /// while every other enabled child renders nothing. Tries the two
    /// largest fitting children, largest first (the background, such as
    /// system memory under an SMRAM window). Each try first looks for a
    /// sibling that plainly renders something (a region that maps
    /// memory, or an alias of one) and only then looks into containers.
    /// When the first try is an alias covering all of `r` (system memory
    /// under SMRAM windows), its watched regions stay even if it fails:
    /// a window that closes later (SMRAM, once firmware is done with it)
    /// then brings the sharing back. Other failed tries watch nothing, so
    /// that a busy container (a PCI bus next to RAM) does not send every
    /// change on it to the root walks of the address spaces above.
    fn stand_in(&self, r: &Region, watched: &mut Vec<RegionId>) -> Option<RegionId> {
        let enabled = || {
            r.subregions
                .iter()
                .copied()
                .filter(|c| self.get(*c).enabled)
        };
        let mut fitting: smallvec::SmallVec<[RegionId; 4]> =
            enabled().filter(|c| self.fits(r, *c)).collect();
        fitting.sort_by_key(|c| std::cmp::Reverse(self.get(*c).size));
        let mut budget = INERT_BUDGET;
        for (attempt, &only) in fitting.iter().take(2).enumerate() {
            let mark = watched.len();
            let mut others = enabled().filter(|c| *c != only);
            let ok = !others.clone().any(|c| self.plainly_renders(c))
                && others.all(|c| self.inert(c, watched, &mut budget));
            if ok {
                return Some(only);
            }
            let background = attempt == 0
                && matches!(self.get(only).kind, RegionKind::Alias { .. })
                && self.get(only).size >= r.size;
            if !background {
                watched.truncate(mark);
            }
        }
        None
    }

    /// True if enabled `id` maps memory itself, or is an alias of a region
    /// that does: it renders something, without a look inside anything.
    fn plainly_renders(&self, id: RegionId) -> bool {
        let r = self.get(id);
        let maps = |r: &Region| r.enabled && r.size > 0 && r.kind.terminates();
        match r.kind {
            RegionKind::Alias { target, .. } => r.size > 0 && maps(self.get(target)),
            _ => maps(r),
        }
    }

    /// True if `id` renders nothing wherever it sits: it is disabled or
    /// empty, a container of such regions only, or an alias of one. Looks
    /// at `budget` regions at most and answers "no" when they run out
    /// (always safe: the region then counts as rendering something).
    /// Pushes on `watched` the containers and alias targets it looked
    /// into: a change inside one of them (which touches it as a parent)
    /// may change a "yes". A "no" needs no watching: it only keeps an
    /// address space from sharing a view, which is never wrong.
    fn inert(&self, id: RegionId, watched: &mut Vec<RegionId>, budget: &mut usize) -> bool {
        let Some(left) = budget.checked_sub(1) else {
            return false;
        };
        *budget = left;
        let r = self.get(id);
        if !r.enabled || r.size == 0 {
            return true;
        }
        match r.kind {
            RegionKind::Container => {
                watched.push(id);
                r.subregions.iter().all(|c| self.inert(*c, watched, budget))
            }
            RegionKind::Alias { target, .. } => {
                watched.push(target);
                self.inert(target, watched, budget)
            }
            _ => false,
        }
    }

    /// Renders `root` into a complete flat view.
    pub(crate) fn render_view(&self, root: Option<RegionId>, spaces: &SpaceTable) -> FlatView {
        let ranges = match root {
            Some(root) => self.render_window(root, 0, SIZE_2_64 as i128),
            None => Vec::new(),
        };
        let (ioeventfds, coalesced) = self.placements(&ranges);
        let mut regions = IdMap::default();
        for r in &ranges {
            regions
                .entry(r.region)
                .or_insert_with(|| self.get(r.region).kind.clone());
        }
        FlatView {
            root,
            ranges: RangeList::from_vec(ranges),
            ioeventfds,
            coalesced,
            targets: Targets {
                regions: Arc::new(regions),
                spaces: Arc::clone(spaces),
            },
        }
    }

    /// `targets` extended with the regions of `ranges` it lacks (shared
    /// as is when it lacks none).
    pub(crate) fn extend_targets(&self, targets: &Targets, ranges: &[FlatRange]) -> Targets {
        if ranges
            .iter()
            .all(|r| targets.regions.contains_key(&r.region))
        {
            return targets.clone();
        }
        let mut regions = (*targets.regions).clone();
        for r in ranges {
            regions
                .entry(r.region)
                .or_insert_with(|| self.get(r.region).kind.clone());
        }
        Targets {
            regions: Arc::new(regions),
            spaces: Arc::clone(&targets.spaces),
        }
    }

    /// Renders the part of `root` (placed at 0) inside `[lo, hi)`, merged.
    pub(crate) fn render_window(&self, root: RegionId, lo: i128, hi: i128) -> Vec<FlatRange> {
        self.render_window_from(root, lo, hi, None)
    }

    /// As [`render_window`](Self::render_window), but where the window
    /// reaches (without inherited flags) a region that is the root of a
    /// view `current` vouches for, its part is copied from that view
    /// instead of rendered again: the window of a root that shows another
    /// root through an alias (SMM address spaces over system memory)
    /// costs a slice of the other's view, not a second deep render.
    pub(crate) fn render_window_from(
        &self,
        root: RegionId,
        lo: i128,
        hi: i128,
        current: Option<Current<'_>>,
    ) -> Vec<FlatRange> {
        let mut out = Partial::default();
        let r = self.get(root);
        // Place the root at 0 whatever its address in a parent.
        let base = -(r.addr as i128);
        let cx = Cx { root, current };
        self.render(&mut out, root, base, (lo, hi), Inherited::default(), &cx);
        simplify(out.into_sorted())
    }

    fn render(
        &self,
        out: &mut Partial,
        id: RegionId,
        base: i128,
        clip: (i128, i128),
        inh: Inherited,
        cx: &Cx<'_>,
    ) {
        let r = self.get(id);
        if !r.enabled {
            return;
        }
        let start = base + r.addr as i128;
        let end = start + r.size as i128;
        let clip = (clip.0.max(start), clip.1.min(end));
        if clip.0 >= clip.1 {
            return;
        }
        if r.renders_view && id != cx.root && inh == Inherited::default() {
            if let Some(view) = cx.current.and_then(|current| current(id)) {
                out.fill_from_view(view, start, clip);
                return;
            }
        }
        let inh = Inherited {
            readonly: inh.readonly || r.readonly,
            nonvolatile: inh.nonvolatile || r.nonvolatile,
            unmergeable: inh.unmergeable || r.unmergeable,
        };
        if let RegionKind::Alias { target, offset } = r.kind {
            // The target's own address cancels out: it is shown at
            // `start - offset` regardless of where it sits in a parent.
            let target_base = start - offset as i128 - self.get(target).addr as i128;
            self.render(out, target, target_base, clip, inh, cx);
            return;
        }
        match &r.child_index {
            // A narrow window of a region with many children: render only
            // those that may intersect it, in list order.
            Some(idx) if clip.0 > start || clip.1 < end => {
                let mut subs: smallvec::SmallVec<[RegionId; 16]> = smallvec::SmallVec::new();
                idx.candidates(clip.0 - start, clip.1 - start, &mut subs);
                subs.sort_by_key(|s| {
                    let c = self.get(*s);
                    (
                        std::cmp::Reverse(c.priority),
                        std::cmp::Reverse(c.linked_at),
                    )
                });
                for sub in subs {
                    self.render(out, sub, start, clip, inh, cx);
                }
            }
            _ => {
                for &sub in &r.subregions {
                    self.render(out, sub, start, clip, inh, cx);
                }
            }
        }
        if !r.kind.terminates() {
            return;
        }
        let template = FlatRange {
            start: 0,
            last: 0,
            region: id,
            offset_in_region: 0,
            readonly: inh.readonly,
            nonvolatile: inh.nonvolatile,
            unmergeable: inh.unmergeable,
            romd_mode: r.romd_mode(),
            dirty_log_mask: self.dirty_mask(r),
            epoch: r.epoch,
        };
        out.fill_gaps(clip, start, template);
    }

    /// Places the ioeventfds and coalesced ranges of the regions in
    /// `ranges` at their address-space addresses.
    pub(crate) fn placements(
        &self,
        ranges: &[FlatRange],
    ) -> (Vec<FlatIoeventfd>, Vec<FlatCoalesced>) {
        let mut fds = Vec::new();
        let mut coalesced = Vec::new();
        for fr in ranges {
            let r = self.get(fr.region);
            if r.ioeventfds.is_empty() && r.coalesced.is_empty() {
                continue;
            }
            let shift = fr.start as i128 - fr.offset_in_region as i128;
            let (lo, hi) = (fr.start as i128, fr.last as i128 + 1);
            for fd in &r.ioeventfds {
                let addr = fd.addr as i128 + shift;
                // QEMU's intersection test, under which a zero-length fd
                // counts when its address lies in the range.
                let inside =
                    (addr >= lo && addr < hi) || (lo >= addr && lo < addr + fd.size as i128);
                if inside && addr >= 0 {
                    fds.push(FlatIoeventfd {
                        addr: addr as u64,
                        region: fr.region,
                        fd: fd.clone(),
                    });
                }
            }
            for c in &r.coalesced {
                let s = (c.start as i128 + shift).max(lo);
                let e = (c.start as i128 + c.size as i128 + shift).min(hi);
                if s < e {
                    coalesced.push(FlatCoalesced {
                        addr: s as u64,
                        size: (e - s) as u64,
                        region: fr.region,
                    });
                }
            }
        }
        fds.sort_by_key(FlatIoeventfd::key);
        fds.dedup_by_key(|f| f.key());
        coalesced.sort();
        coalesced.dedup();
        (fds, coalesced)
    }
}

/// Where an address space's view comes from: see
/// [`Regions::flat_root`].
#[derive(Debug)]
pub(crate) struct FlatRoot {
    /// The region rendered (`None`: nothing renders).
    pub(crate) root: Option<RegionId>,
    /// The regions walked from the space's root down to `root` (the first
    /// `path` of them, both ends included), then those whose rendering
    /// nothing the walk relied on: a change to any of them, or to a child
    /// of one, may change `root`.
    pub(crate) chain: Vec<RegionId>,
    /// How many of `chain` are the walk itself.
    pub(crate) path: usize,
}

/// Most regions [`Regions::inert`] looks at for one container of a root
/// walk: enough for an SMRAM container and its windows, little for a
/// walk that runs on every change of a root's children.
const INERT_BUDGET: usize = 32;

/// Most children a container may have for a root walk to look for a
/// stand-in among several (see [`Regions::stand_in`]): an SMM root has
/// two. System memory and PCI buses have dozens to thousands, never
/// stand for one child, and the reference engine walks the roots of all
/// address spaces on every commit.
const STAND_IN_CHILDREN: usize = 8;

/// What a window render carries down: the root rendered, and the views
/// it may copy from.
struct Cx<'a> {
    root: RegionId,
    current: Option<Current<'a>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Inherited {
    readonly: bool,
    nonvolatile: bool,
    unmergeable: bool,
}

/// Ranges rendered so far, disjoint, by start. A window render produces
/// a handful of ranges: a sorted vector is cheapest; past `SMALL` entries
/// it becomes a B-tree so that full renders of large views stay
/// O(n log n).
enum Partial {
    Small(Vec<FlatRange>),
    Large(BTreeMap<u64, FlatRange>),
}

const SMALL: usize = 256;

impl Default for Partial {
    fn default() -> Self {
        Partial::Small(Vec::new())
    }
}

impl Partial {
    /// Adds `template` over every part of `clip` not yet covered; `origin`
    /// is where offset 0 of the region lies.
    fn fill_gaps(&mut self, clip: (i128, i128), origin: i128, template: FlatRange) {
        let (mut pos, end) = clip;
        let mut gaps: smallvec::SmallVec<[(i128, i128); 4]> = smallvec::SmallVec::new();
        {
            let mut visit = |r: &FlatRange| -> bool {
                let s = r.start as i128;
                if s >= end {
                    return false;
                }
                if s > pos {
                    gaps.push((pos, s));
                }
                pos = pos.max(r.last as i128 + 1);
                pos < end
            };
            match self {
                Partial::Small(v) => {
                    // Ranges that may cover `clip.0` or start inside it.
                    let i = v.partition_point(|r| (r.last as i128) < clip.0);
                    for r in &v[i..] {
                        if !visit(r) {
                            break;
                        }
                    }
                }
                Partial::Large(m) => {
                    let from = m
                        .range(..=clip.0.max(0) as u64)
                        .next_back()
                        .map(|(k, _)| *k);
                    let iter = match from {
                        Some(k) => m.range(k..),
                        None => m.range(0..),
                    };
                    for (_, r) in iter {
                        if (r.last as i128) < clip.0 {
                            continue;
                        }
                        if !visit(r) {
                            break;
                        }
                    }
                }
            }
        }
        if pos < end {
            gaps.push((pos, end));
        }
        for (s, e) in gaps {
            let fr = FlatRange {
                start: s as u64,
                last: (e - 1) as u64,
                offset_in_region: (s - origin) as u64,
                ..template
            };
            self.insert(fr);
        }
    }

    /// Adds, in the gaps of `clip`, what `view` (of a region whose offset
    /// 0 lies at `origin`) shows there: the same as rendering that region
    /// into the gaps, since what renders first wins point by point.
    fn fill_from_view(&mut self, view: &FlatView, origin: i128, clip: (i128, i128)) {
        let (lo, hi) = (clip.0 - origin, clip.1 - origin);
        let ranges = &view.ranges;
        let i = ranges.index_from(lo.max(0) as u64);
        let j = ranges.index_to(hi.min(SIZE_2_64 as i128) as u128);
        for k in i..j {
            let r = ranges[k];
            let (s, e) = ((r.start as i128).max(lo), (r.last as i128 + 1).min(hi));
            if s < e {
                let at = r.start as i128 - r.offset_in_region as i128 + origin;
                self.fill_gaps((s + origin, e + origin), at, r);
            }
        }
    }

    fn insert(&mut self, fr: FlatRange) {
        match self {
            Partial::Small(v) => {
                let i = v.partition_point(|r| r.start < fr.start);
                v.insert(i, fr);
                if v.len() > SMALL {
                    let m = std::mem::take(v)
                        .into_iter()
                        .map(|r| (r.start, r))
                        .collect();
                    *self = Partial::Large(m);
                }
            }
            Partial::Large(m) => {
                m.insert(fr.start, fr);
            }
        }
    }

    fn into_sorted(self) -> Vec<FlatRange> {
        match self {
            Partial::Small(v) => v,
            Partial::Large(m) => m.into_values().collect(),
        }
    }
}

/// Merges neighbours that `can_merge`, in place.
fn simplify(mut ranges: Vec<FlatRange>) -> Vec<FlatRange> {
    ranges.dedup_by(|next, prev| {
        let merge = prev.can_merge(next);
        if merge {
            prev.last = next.last;
        }
        merge
    });
    ranges
}

#[cfg(test)]
#[path = "render_tests.rs"]
mod tests;
