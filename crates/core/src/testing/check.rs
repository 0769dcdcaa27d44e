//! The checks: listeners' holdings against the views, one world's views
//! and events against another's, and a snapshot of what an operation may
//! change.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::World;
use crate::recorder::Event;
use crate::{AddressSpaceId, DirtyLogMask, FlatRange, FlatView, ListenerId, Memory, RegionId};

/// What a listener holds: range start -> (range, dirty-log mask).
pub type Held = BTreeMap<u64, (FlatRange, DirtyLogMask)>;

/// The ranges a picky listener refuses to add.
pub fn refused_by_picky(r: &FlatRange) -> bool {
    r.start % 0x3000 == 0x1000
}

/// Folds events into holdings, honouring a picky listener's refusals.
pub(super) fn fold(held: &mut Held, events: &[Event], picky: bool) {
    for event in events {
        match event {
            Event::RegionAdd(r) if !(picky && refused_by_picky(r)) => {
                assert!(
                    held.insert(r.start, (*r, DirtyLogMask::EMPTY)).is_none(),
                    "added twice {r:?}"
                );
            }
            Event::RegionDel(r) => {
                let (h, mask) = held.remove(&r.start).expect("deleted a range not held");
                assert!(h.same_mapping(r), "deleted {r:?} but held {h:?}");
                assert!(mask.is_empty(), "deleted while still logged");
            }
            Event::LogStart(r, old, new) | Event::LogStop(r, old, new) => {
                let entry = held
                    .get_mut(&r.start)
                    .expect("log change on a range not held");
                // A change that both adds and removes clients arrives as a
                // log_start and a log_stop carrying the same (old, new).
                assert!(
                    entry.1 == *old || entry.1 == *new,
                    "log change from a stale mask"
                );
                entry.1 = *new;
            }
            _ => {}
        }
    }
}

impl World {
    /// Add/del symmetry: drains every listener's events and checks that it
    /// holds exactly its address space's view (less what it refuses),
    /// range for range, each with the view's dirty-log mask.
    pub fn check_symmetry(&mut self, context: &dyn Fn() -> String) {
        for w in &mut self.watched {
            w.drain();
            let view = self.mem.view(w.space).expect("live space");
            let expect: Held = view
                .ranges
                .iter()
                .filter(|r| !(w.picky && refused_by_picky(r)))
                .map(|r| (r.start, (*r, r.dirty_log_mask)))
                .collect();
            let got = &w.held;
            assert_eq!(
                got.len(),
                expect.len(),
                "listener holds {got:?}, view is {expect:?}; {}",
                context()
            );
            for (start, (r, mask)) in &expect {
                let (h, hmask) = got.get(start).expect("held");
                assert!(
                    h.same_mapping(r),
                    "held {h:?} but view has {r:?}; {}",
                    context()
                );
                assert_eq!(hmask, mask, "log mask of {r:?}; {}", context());
            }
        }
    }

    /// The same views as `other`, a world built alike, in every address
    /// space (every field of every range, ioeventfd and coalesced range,
    /// handles compared by slot and generation), and the same listeners,
    /// which heard the same events since the last check; the events are
    /// folded into each listener's holdings.
    pub fn check_same_as(&mut self, other: &mut World, context: &dyn Fn() -> String) {
        for (a, b) in self.spaces.iter().zip(&other.spaces) {
            let va = self.mem.view(*a).expect("live space");
            let vb = other.mem.view(*b).expect("live space");
            assert!(
                same_view(&va, &vb),
                "engines rendered different views:\n{va:?}\n{vb:?}\n{}",
                context()
            );
        }
        assert_eq!(self.watched.len(), other.watched.len(), "{}", context());
        for (wa, wb) in self.watched.iter_mut().zip(other.watched.iter_mut()) {
            let (ea, eb) = (wa.drain(), wb.drain());
            let same = ea.len() == eb.len()
                && ea
                    .iter()
                    .zip(&eb)
                    .all(|(x, y)| x.to_string() == y.to_string());
            assert!(
                same,
                "listeners heard different events:\n{ea:?}\n{eb:?}\n{}",
                context()
            );
        }
    }
}

/// The same handle in two memories built alike: the same slot and
/// generation, whichever memory made it.
fn twin(a: RegionId, b: RegionId) -> bool {
    (a.0.index, a.0.generation) == (b.0.index, b.0.generation)
}

/// Two views equal but for which memory made their handles.
fn same_view(a: &FlatView, b: &FlatView) -> bool {
    let root = match (a.root, b.root) {
        (Some(x), Some(y)) => twin(x, y),
        (x, y) => x.is_none() && y.is_none(),
    };
    root && a.ranges.len() == b.ranges.len()
        && a.ranges.iter().zip(b.ranges.iter()).all(|(x, y)| {
            twin(x.region, y.region)
                && FlatRange {
                    region: y.region,
                    ..*x
                } == *y
        })
        && a.ioeventfds.len() == b.ioeventfds.len()
        && a.ioeventfds.iter().zip(&b.ioeventfds).all(|(x, y)| {
            twin(x.region, y.region)
                && (x.addr, x.fd.addr, x.fd.size, x.fd.datamatch)
                    == (y.addr, y.fd.addr, y.fd.size, y.fd.datamatch)
        })
        && a.coalesced.len() == b.coalesced.len()
        && a.coalesced
            .iter()
            .zip(&b.coalesced)
            .all(|(x, y)| twin(x.region, y.region) && (x.addr, x.size) == (y.addr, y.size))
}

/// What an operation may change, captured cheaply enough to take before
/// every operation: each region's placement and attributes, each address
/// space's view (shared, compared by value) and listeners, and global
/// dirty logging. For [`World::apply_checked`].
#[derive(Debug, PartialEq)]
pub struct Snapshot {
    regions: Vec<RegionState>,
    views: Vec<Option<Arc<FlatView>>>,
    listeners: Vec<Option<Vec<ListenerId>>>,
    global_log: bool,
}

#[derive(Debug, PartialEq)]
struct RegionState {
    id: RegionId,
    place: (u64, u128, i32, Option<RegionId>),
    flags: (bool, bool, bool, bool, bool, DirtyLogMask),
    alias: Option<(RegionId, u64)>,
    subregions: Vec<RegionId>,
    ioeventfds: Vec<(u64, u64)>,
    coalesced: Vec<(u64, u128)>,
}

/// Takes a [`Snapshot`] of `mem`.
pub fn snapshot(mem: &Memory) -> Snapshot {
    // `regions()` walks the arena in slot order, the same on both calls.
    let regions: Vec<RegionState> = mem
        .regions()
        .map(|(id, r)| RegionState {
            id,
            place: (r.addr(), r.size(), r.priority(), r.parent()),
            flags: (
                r.enabled(),
                r.readonly(),
                r.nonvolatile(),
                r.unmergeable(),
                r.romd_mode(),
                r.dirty_log_mask(),
            ),
            alias: r.alias(),
            subregions: r.subregions().to_vec(),
            ioeventfds: r.ioeventfds().iter().map(|f| (f.addr, f.size)).collect(),
            coalesced: r.coalesced().iter().map(|c| (c.start, c.size)).collect(),
        })
        .collect();
    let spaces: Vec<AddressSpaceId> = mem.address_spaces().collect();
    Snapshot {
        regions,
        views: spaces.iter().map(|s| mem.view(*s).ok()).collect(),
        listeners: spaces
            .iter()
            .map(|s| mem.listeners_of(*s).ok().map(<[ListenerId]>::to_vec))
            .collect(),
        global_log: mem.global_dirty_log(),
    }
}
