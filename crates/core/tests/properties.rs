//! Property tests over random sequences of region operations, nested
//! transactions and listeners coming and going:
//!
//! 1. add/del symmetry: what each listener was given by `region_add` minus
//!    what `region_del` took back equals the current view, range for range
//!    (with its dirty-log mask as `log_start`/`log_stop` left it); after a
//!    replay-mode unregister nothing is left;
//! 2. rendering equals a point-wise reference that walks the tree by the
//!    rules for sampled addresses;
//! 3. a failed operation changes nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use addrspace_core::recorder::{Entry, Event, EventLog, Recorder};
use addrspace_core::{
    AddressSpaceId, DirtyClient, DirtyLogMask, Engine, EventNotifier, FlatRange, Ioeventfd,
    ListenerConfig, ListenerId, Memory, NullOps, RegionId, RegionKind, Unregister, SIZE_2_64,
};
use common::fingerprint;
use proptest::prelude::*;

mod common;

const POOL: usize = 12;

#[derive(Debug, Clone)]
enum Op {
    Add {
        parent: usize,
        child: usize,
        addr: u64,
        prio: i32,
    },
    Del {
        child: usize,
    },
    Move {
        r: usize,
        addr: u64,
    },
    Prio {
        r: usize,
        prio: i32,
    },
    Enable {
        r: usize,
        on: bool,
    },
    Readonly {
        r: usize,
        on: bool,
    },
    Resize {
        r: usize,
        size: u128,
    },
    AliasOffset {
        r: usize,
        offset: u64,
    },
    Romd {
        r: usize,
        on: bool,
    },
    Log {
        r: usize,
        on: bool,
    },
    GlobalLog {
        on: bool,
    },
    Unmergeable {
        r: usize,
        on: bool,
    },
    Begin,
    Commit,
    Listen {
        space: usize,
        prio: i32,
        picky: bool,
    },
    Unlisten {
        which: usize,
        replay: bool,
    },
    Fd {
        r: usize,
        addr: u64,
        on: bool,
    },
    Coalesce {
        r: usize,
        on: bool,
    },
}

fn addr() -> impl Strategy<Value = u64> {
    prop_oneof![
        8 => (0u64..0x40).prop_map(|a| a * 0x400),
        1 => Just(u64::MAX - 0xfff),
        1 => Just(0x8000_0000u64),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let r = 0..POOL;
    prop_oneof![
        6 => (prop_oneof![Just(POOL), 0..POOL], r.clone(), addr(), -2i32..3)
            .prop_map(|(parent, child, addr, prio)| Op::Add { parent, child, addr, prio }),
        3 => r.clone().prop_map(|child| Op::Del { child }),
        2 => (r.clone(), addr()).prop_map(|(r, addr)| Op::Move { r, addr }),
        1 => (r.clone(), -2i32..3).prop_map(|(r, prio)| Op::Prio { r, prio }),
        2 => (r.clone(), any::<bool>()).prop_map(|(r, on)| Op::Enable { r, on }),
        1 => (r.clone(), any::<bool>()).prop_map(|(r, on)| Op::Readonly { r, on }),
        1 => (r.clone(), 0u128..0x40).prop_map(|(r, s)| Op::Resize { r, size: s * 0x400 }),
        1 => (r.clone(), 0u64..0x20).prop_map(|(r, o)| Op::AliasOffset { r, offset: o * 0x400 }),
        1 => (r.clone(), any::<bool>()).prop_map(|(r, on)| Op::Romd { r, on }),
        1 => (r.clone(), any::<bool>()).prop_map(|(r, on)| Op::Log { r, on }),
        1 => any::<bool>().prop_map(|on| Op::GlobalLog { on }),
        1 => (r, any::<bool>()).prop_map(|(r, on)| Op::Unmergeable { r, on }),
        1 => Just(Op::Begin),
        1 => Just(Op::Commit),
        2 => (0..3usize, -1i32..2, any::<bool>()).prop_map(|(space, prio, picky)| Op::Listen { space, prio, picky }),
        1 => (0..4usize, any::<bool>()).prop_map(|(which, replay)| Op::Unlisten { which, replay }),
        1 => (0..POOL, 0u64..8, any::<bool>()).prop_map(|(r, a, on)| Op::Fd { r, addr: a * 0x100, on }),
        1 => (0..POOL, any::<bool>()).prop_map(|(r, on)| Op::Coalesce { r, on }),
    ]
}

/// A listener under test: its own log, and what it refuses.
struct Watched {
    id: ListenerId,
    space: AddressSpaceId,
    log: EventLog,
    picky: bool,
}

fn refused_by_picky(r: &FlatRange) -> bool {
    r.start % 0x3000 == 0x1000
}

struct World {
    mem: Memory,
    root: RegionId,
    pool: Vec<RegionId>,
    spaces: Vec<AddressSpaceId>,
    watched: Vec<Watched>,
    depth: u32,
    /// When each region was last (re-)added to a parent, by this test's own
    /// count: the oracle orders siblings from this, not from the core.
    added: std::collections::HashMap<RegionId, u64>,
    clock: u64,
    notifier: Arc<dyn EventNotifier>,
}

struct Quiet;
impl EventNotifier for Quiet {
    fn notify(&self) {}
}

fn world() -> World {
    let mut mem = Memory::new();
    let root = mem.create_container("root", SIZE_2_64).unwrap();
    let mut pool = Vec::new();
    for i in 0..POOL {
        let name = format!("r{i}");
        let id = match i % 6 {
            0 => mem.create_container(&name, 0x8000).unwrap(),
            1 => mem.create_ram(&name, 0x4000).unwrap(),
            2 => mem.create_mmio(&name, 0x2000, Arc::new(NullOps)).unwrap(),
            3 => mem.create_alias(&name, pool[i - 2], 0x400, 0x1800).unwrap(),
            4 => mem
                .create_rom_device(&name, 0x1000, Arc::new(NullOps))
                .unwrap(),
            _ => mem.create_reservation(&name, 0x800).unwrap(),
        };
        pool.push(id);
    }
    // A bus-master-style space: a container holding a full alias of root.
    let bm_root = mem.create_container("bm", SIZE_2_64).unwrap();
    let bm = mem.create_alias("bus master", root, 0, SIZE_2_64).unwrap();
    mem.add_subregion(bm_root, 0, bm).unwrap();
    // Fillers give the root enough children to be indexed by address, so
    // narrow re-renders go through the index.
    let mut added = std::collections::HashMap::new();
    for k in 0..40u64 {
        let f = mem
            .create_mmio(
                &format!("f{k}"),
                0x100 + (k % 5) as u128 * 0x700,
                Arc::new(NullOps),
            )
            .unwrap();
        mem.add_subregion_overlap(root, k * 0x480, f, (k % 3) as i32 - 1)
            .unwrap();
        added.insert(f, k);
    }
    // An SMM-style space: root through a full alias, under a RAM window of
    // its own at higher priority, so that it has a view of its own that
    // shows root's (and copies from it when both change).
    let smm_root = mem.create_container("smm", SIZE_2_64).unwrap();
    let smm_all = mem.create_alias("smm memory", root, 0, SIZE_2_64).unwrap();
    mem.add_subregion_overlap(smm_root, 0, smm_all, 0).unwrap();
    let smram = mem.create_ram("smram", 0x1000).unwrap();
    mem.add_subregion_overlap(smm_root, 0x2000, smram, 1)
        .unwrap();
    added.insert(smm_all, 40);
    added.insert(smram, 41);
    let spaces = vec![
        mem.create_address_space("memory", root).unwrap(),
        mem.create_address_space("dma", bm_root).unwrap(),
        mem.create_address_space("smm", smm_root).unwrap(),
    ];
    World {
        mem,
        root,
        pool,
        spaces,
        watched: Vec::new(),
        depth: 0,
        added,
        clock: 100,
        notifier: Arc::new(Quiet),
    }
}

impl World {
    fn apply(&mut self, op: &Op) {
        let before = fingerprint(&self.mem);
        let pool = self.pool.clone();
        let p = |i: usize| pool[i % POOL];
        let m = &mut self.mem;
        let result = match *op {
            Op::Add {
                parent,
                child,
                addr,
                prio,
            } => {
                let parent = if parent == POOL { self.root } else { p(parent) };
                m.add_subregion_overlap(parent, addr, p(child), prio)
            }
            Op::Del { child } => match m.region(p(child)).unwrap().parent() {
                Some(parent) => m.del_subregion(parent, p(child)),
                None => Ok(()),
            },
            Op::Move { r, addr } => m.set_address(p(r), addr),
            Op::Prio { r, prio } => m.set_priority(p(r), prio),
            Op::Enable { r, on } => m.set_enabled(p(r), on),
            Op::Readonly { r, on } => m.set_readonly(p(r), on),
            Op::Resize { r, size } => m.set_size(p(r), size),
            Op::AliasOffset { r, offset } => m.set_alias_offset(p(r), offset),
            Op::Romd { r, on } => m.set_romd_mode(p(r), on),
            Op::Log { r, on } => m.set_log(p(r), DirtyClient::Vga, on),
            Op::GlobalLog { on } => m.set_global_dirty_log(on),
            Op::Unmergeable { r, on } => m.set_unmergeable(p(r), on),
            Op::Fd { r, addr, on } => {
                let fd = Ioeventfd {
                    addr,
                    size: 4,
                    datamatch: None,
                    notifier: Arc::clone(&self.notifier),
                };
                if on {
                    m.add_ioeventfd(p(r), fd)
                } else {
                    m.del_ioeventfd(p(r), &fd)
                }
            }
            Op::Coalesce { r, on } => {
                if on {
                    m.add_coalescing(p(r), 0x100, 0x300)
                } else {
                    m.clear_coalescing(p(r))
                }
            }
            Op::Begin => {
                self.depth += 1;
                m.begin();
                Ok(())
            }
            Op::Commit => {
                let r = m.commit();
                if r == Err(addrspace_core::Error::CommitWithoutTransaction) {
                    assert_eq!(self.depth, 0);
                } else {
                    self.depth -= 1;
                }
                r
            }
            Op::Listen { space, prio, picky } => {
                let log = EventLog::new();
                let name = format!("l{}", self.watched.len());
                let mut rec = Recorder::new(&name, &log);
                if picky {
                    rec = rec.refusing(|e| matches!(e, Event::RegionAdd(r) if refused_by_picky(r)));
                }
                let space = self.spaces[space];
                let config = ListenerConfig::new(name).priority(prio);
                match m.register_listener(space, config, Box::new(rec)) {
                    Ok(id) => {
                        self.watched.push(Watched {
                            id,
                            space,
                            log,
                            picky,
                        });
                        Ok(())
                    }
                    Err(e) => {
                        // A refused registration takes back all it gave.
                        assert!(picky);
                        assert!(held(&log.take(), picky).is_empty());
                        Err(e)
                    }
                }
            }
            Op::Unlisten { which, replay } => {
                if self.watched.is_empty() {
                    return;
                }
                let w = self.watched.remove(which % self.watched.len());
                let mode = if replay {
                    Unregister::Replay
                } else {
                    Unregister::Detach
                };
                m.unregister_listener(w.id, mode).unwrap();
                if replay {
                    assert!(
                        held(&w.log.take(), w.picky).is_empty(),
                        "replay left holdings"
                    );
                }
                Ok(())
            }
        };
        let readded = match *op {
            Op::Add { child, .. } => Some(p(child)),
            Op::Move { r, .. } | Op::Prio { r, .. } => Some(p(r)),
            _ => None,
        };
        if let (Some(r), true) = (
            readded,
            result.is_ok() || matches!(result, Err(addrspace_core::Error::ListenerRefused { .. })),
        ) {
            self.clock += 1;
            self.added.insert(r, self.clock);
        }
        match result {
            Ok(()) => {}
            Err(addrspace_core::Error::ListenerRefused { .. }) => {}
            Err(e) => assert_eq!(before, fingerprint(&self.mem), "{e} changed state"),
        }
    }

    fn check(&self) {
        for w in &self.watched {
            let view = self.mem.view(w.space).unwrap();
            let expect: BTreeMap<u64, (FlatRange, DirtyLogMask)> = view
                .ranges
                .iter()
                .filter(|r| !(w.picky && refused_by_picky(r)))
                .map(|r| (r.start, (*r, r.dirty_log_mask)))
                .collect();
            let got = held(&w.log.entries(), w.picky);
            assert_eq!(
                got.len(),
                expect.len(),
                "listener holds {got:?}, view is {expect:?}"
            );
            for (start, (r, mask)) in &expect {
                let (h, hmask) = got.get(start).expect("held");
                assert!(h.same_mapping(r), "held {h:?} but view has {r:?}");
                assert_eq!(hmask, mask, "log mask of {r:?}");
            }
        }
        for &space in &self.spaces {
            let view = self.mem.view(space).unwrap();
            let root = self.mem.address_space_root(space).unwrap();
            let mut samples = vec![0, u64::MAX, 0x8000_0000];
            for r in &view.ranges {
                samples.extend([
                    r.start,
                    r.last,
                    r.start.wrapping_sub(1),
                    r.last.wrapping_add(1),
                ]);
            }
            samples.extend((0..0x12000u64).step_by(0x3ff));
            let oracle = Oracle::new(&self.mem, &self.added);
            for a in samples {
                let want = walk(&oracle, root, a);
                let got = view
                    .lookup(a)
                    .map(|r| (r.region, r.offset_in_region + (a - r.start), r.readonly));
                assert_eq!(got, want, "address {a:#x}");
            }
        }
    }
}

/// Replays an event stream: start -> (range, mask), honouring refusals.
fn held(entries: &[Entry], picky: bool) -> BTreeMap<u64, (FlatRange, DirtyLogMask)> {
    let mut held = BTreeMap::new();
    for e in entries {
        match &e.event {
            Event::RegionAdd(r) if !(picky && refused_by_picky(r)) => {
                assert!(
                    held.insert(r.start, (*r, DirtyLogMask::EMPTY)).is_none(),
                    "added twice {r:?}"
                );
            }
            Event::RegionDel(r) => {
                let (h, mask) = held.remove(&r.start).expect("deleted a range not held");
                assert!(h.same_mapping(r));
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
    held
}

/// The rules, point by point: which region, at which offset, read-only or
/// not, serves `addr` in the tree under `root`.
fn walk(o: &Oracle<'_>, root: RegionId, addr: u64) -> Option<(RegionId, u64, bool)> {
    let r = o.mem.region(root).unwrap();
    o.visit(
        root,
        -(r.addr() as i128),
        (0, SIZE_2_64 as i128),
        addr as i128,
        false,
    )
}

type Added = std::collections::HashMap<RegionId, u64>;

struct Oracle<'a> {
    mem: &'a Memory,
    /// Each region's subregions, highest priority first and, among equals,
    /// most recently added first — by this test's own record, not the
    /// core's list.
    order: std::collections::HashMap<RegionId, Vec<RegionId>>,
}

impl<'a> Oracle<'a> {
    fn new(mem: &'a Memory, added: &Added) -> Self {
        let mut order = std::collections::HashMap::new();
        for (id, r) in mem.regions() {
            let mut subs = r.subregions().to_vec();
            subs.sort_by_key(|s| {
                (
                    std::cmp::Reverse(mem.region(*s).unwrap().priority()),
                    std::cmp::Reverse(added[s]),
                )
            });
            order.insert(id, subs);
        }
        Oracle { mem, order }
    }

    fn visit(
        &self,
        id: RegionId,
        base: i128,
        clip: (i128, i128),
        a: i128,
        ro: bool,
    ) -> Option<(RegionId, u64, bool)> {
        let r = self.mem.region(id).unwrap();
        if !r.enabled() {
            return None;
        }
        let start = base + r.addr() as i128;
        let clip = (clip.0.max(start), clip.1.min(start + r.size() as i128));
        if a < clip.0 || a >= clip.1 {
            return None;
        }
        let ro = ro || r.readonly();
        if let RegionKind::Alias { target, offset } = r.kind() {
            let t = self.mem.region(*target).unwrap();
            return self.visit(
                *target,
                start - *offset as i128 - t.addr() as i128,
                clip,
                a,
                ro,
            );
        }
        for &sub in &self.order[&id] {
            if let Some(hit) = self.visit(sub, start, clip, a, ro) {
                return Some(hit);
            }
        }
        r.kind().terminates().then(|| (id, (a - start) as u64, ro))
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn listeners_hold_the_view_and_rendering_follows_the_rules(ops in prop::collection::vec(op(), 1..40)) {
        let mut w = world();
        for op in &ops {
            w.apply(op);
            if w.depth == 0 {
                w.check();
            }
        }
        while w.depth > 0 {
            w.apply(&Op::Commit);
        }
        w.check();
        for watched in std::mem::take(&mut w.watched) {
            w.mem.unregister_listener(watched.id, Unregister::Replay).unwrap();
            prop_assert!(held(&watched.log.take(), watched.picky).is_empty());
        }
    }

    #[test]
    fn incremental_and_reference_engines_agree(ops in prop::collection::vec(op(), 1..40)) {
        let mut inc = world();
        let mut reference = world();
        reference.mem.set_engine(Engine::Reference);
        prop_assert_eq!(inc.mem.engine(), Engine::Incremental);
        for op in &ops {
            inc.apply(op);
            reference.apply(op);
            if inc.depth == 0 {
                for (a, b) in inc.spaces.iter().zip(&reference.spaces) {
                    let (va, vb) = (inc.mem.view(*a).unwrap(), reference.mem.view(*b).unwrap());
                    prop_assert_eq!(format!("{:?}", va), format!("{:?}", vb), "after {:?}", op);
                }
                for (wa, wb) in inc.watched.iter().zip(&reference.watched) {
                    let ea: Vec<String> = wa.log.entries().iter().map(|e| e.event.to_string()).collect();
                    let eb: Vec<String> = wb.log.entries().iter().map(|e| e.event.to_string()).collect();
                    prop_assert_eq!(ea, eb, "events after {:?}", op);
                }
            }
        }
    }
}
