//! Random operation sequences on the core, on both engines at once.
//!
//! Two [`Memory`]s are built alike, one rendering incrementally and one
//! with the reference engine, and every decoded operation is applied to
//! both. Outside transactions the body checks that:
//!
//! - both engines publish the same flat view for every address space;
//! - every listener heard the same events under both engines;
//! - what each listener was given by `region_add` minus what `region_del`
//!   took back, with the dirty-log masks `log_start`/`log_stop` left, is
//!   the current view range for range (add/del symmetry);
//! - an operation that failed changed nothing observable, and failed under
//!   both engines alike;
//! - a replay-mode unregister takes back everything the listener held.
//!
//! The machine has three address spaces: `memory` over a root with forty
//! small MMIO fillers (so narrow re-renders go through the child index),
//! a bus-master space that shows the root through a full alias, and an
//! SMM-style space that shows it under a RAM window of its own.

use std::collections::BTreeMap;
use std::sync::Arc;

use addrspace_core::recorder::{Event, EventLog, Recorder};
use addrspace_core::{
    AddressSpaceId, DirtyClient, DirtyLogMask, Engine, Error, EventNotifier, FlatRange, Ioeventfd,
    ListenerConfig, ListenerId, Memory, NullOps, RegionId, Unregister, SIZE_2_64,
};

use super::Bytes;

/// Regions the operations pick from.
const POOL: usize = 12;
/// Operations decoded from one input at most.
const MAX_OPS: usize = 64;

/// One operation, with its operands already reduced to the pool.
#[derive(Debug, Clone, Copy)]
enum Op {
    Add {
        parent: usize,
        child: usize,
        addr: u64,
        prio: i32,
    },
    Del(usize),
    Move(usize, u64),
    Prio(usize, i32),
    Enable(usize, bool),
    Readonly(usize, bool),
    Resize(usize, u128),
    AliasOffset(usize, u64),
    Romd(usize, bool),
    Log(usize, bool),
    GlobalLog(bool),
    Unmergeable(usize, bool),
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
    Fd(usize, u64, bool),
    Coalesce(usize, bool),
}

fn addr(b: &mut Bytes<'_>) -> u64 {
    match b.below(10) {
        0 => u64::MAX - 0xfff,
        1 => 0x8000_0000,
        2 => b.u64(),
        _ => b.below(0x40) as u64 * 0x400,
    }
}

fn prio(b: &mut Bytes<'_>) -> i32 {
    b.below(5) as i32 - 2
}

fn op(b: &mut Bytes<'_>) -> Op {
    let r = b.below(POOL);
    match b.below(18) {
        0..=2 => Op::Add {
            // POOL names the root.
            parent: if b.flag() { POOL } else { b.below(POOL) },
            child: r,
            addr: addr(b),
            prio: prio(b),
        },
        3 => Op::Del(r),
        4 => Op::Move(r, addr(b)),
        5 => Op::Prio(r, prio(b)),
        6 => Op::Enable(r, b.flag()),
        7 => Op::Readonly(r, b.flag()),
        8 => Op::Resize(r, b.below(0x40) as u128 * 0x400),
        9 => Op::AliasOffset(r, b.below(0x20) as u64 * 0x400),
        10 => Op::Romd(r, b.flag()),
        11 => Op::Log(r, b.flag()),
        12 => match b.below(3) {
            0 => Op::GlobalLog(b.flag()),
            _ => Op::Unmergeable(r, b.flag()),
        },
        13 => Op::Begin,
        14 => Op::Commit,
        15 => Op::Listen {
            space: b.below(3),
            prio: b.below(3) as i32 - 1,
            picky: b.flag(),
        },
        16 => Op::Unlisten {
            which: b.below(8),
            replay: b.flag(),
        },
        _ => match b.below(2) {
            0 => Op::Fd(r, b.below(8) as u64 * 0x100, b.flag()),
            _ => Op::Coalesce(r, b.flag()),
        },
    }
}

/// Decodes `data` into operations and runs them on both engines,
/// checking the invariants of the module documentation; panics with the
/// operations so far when one breaks.
pub fn run(data: &[u8]) {
    let mut b = Bytes::new(data);
    let mut ops = Vec::new();
    while !b.is_empty() && ops.len() < MAX_OPS {
        ops.push(op(&mut b));
    }
    let mut inc = World::new(Engine::Incremental);
    let mut reference = World::new(Engine::Reference);
    for (n, op) in ops.iter().enumerate() {
        let a = inc.apply(op, true);
        let r = reference.apply(op, false);
        let context = || format!("after {:?}", &ops[..=n]);
        assert_eq!(
            a.is_ok(),
            r.is_ok(),
            "engines disagree on {op:?}: {a:?} vs {r:?}; {}",
            context()
        );
        if inc.depth == 0 {
            inc.check_same_as(&mut reference, &context);
            inc.check_symmetry(&context);
            reference.check_symmetry(&context);
        }
    }
    while inc.depth > 0 {
        let a = inc.apply(&Op::Commit, true);
        let r = reference.apply(&Op::Commit, false);
        assert_eq!(a.is_ok(), r.is_ok(), "closing commit: {a:?} vs {r:?}");
    }
    let context = || format!("after {ops:?} and closing commits");
    inc.check_same_as(&mut reference, &context);
    inc.check_symmetry(&context);
    for w in [&mut inc, &mut reference] {
        for mut watched in std::mem::take(&mut w.watched) {
            w.mem
                .unregister_listener(watched.id, Unregister::Replay)
                .expect("a registered listener unregisters");
            watched.drain();
            assert!(
                watched.held.is_empty(),
                "replay-mode unregister left holdings; {}",
                context()
            );
        }
    }
}

/// A listener under test: its own log, and whether it refuses some adds.
struct Watched {
    id: ListenerId,
    space: AddressSpaceId,
    log: EventLog,
    picky: bool,
    /// What the events so far leave the listener holding.
    held: Held,
}

/// start -> (range, dirty-log mask) a listener holds.
type Held = BTreeMap<u64, (FlatRange, DirtyLogMask)>;

impl Watched {
    /// Takes the events logged since the last call, folds them into
    /// `held` and returns them.
    fn drain(&mut self) -> Vec<Event> {
        let new: Vec<Event> = self.log.take().into_iter().map(|e| e.event).collect();
        fold(&mut self.held, &new, self.picky);
        new
    }
}

/// The ranges a picky listener refuses.
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
    notifier: Arc<dyn EventNotifier>,
}

struct Quiet;
impl EventNotifier for Quiet {
    fn notify(&self) {}
}

impl World {
    fn new(engine: Engine) -> World {
        let mut mem = Memory::new();
        mem.set_engine(engine);
        let root = mem.create_container("root", SIZE_2_64).expect("root");
        let mut pool = Vec::new();
        for i in 0..POOL {
            let name = format!("r{i}");
            let id = match i % 6 {
                0 => mem.create_container(&name, 0x8000),
                1 => mem.create_ram(&name, 0x4000),
                2 => mem.create_mmio(&name, 0x2000, Arc::new(NullOps)),
                3 => mem.create_alias(&name, pool[i - 2], 0x400, 0x1800),
                4 => mem.create_rom_device(&name, 0x1000, Arc::new(NullOps)),
                _ => mem.create_reservation(&name, 0x800),
            };
            pool.push(id.expect("pool region"));
        }
        let bm_root = mem.create_container("bm", SIZE_2_64).expect("bm");
        let bm = mem
            .create_alias("bus master", root, 0, SIZE_2_64)
            .expect("bm alias");
        mem.add_subregion(bm_root, 0, bm).expect("bm alias placed");
        for k in 0..40u64 {
            let f = mem
                .create_mmio(
                    &format!("f{k}"),
                    0x100 + (k % 5) as u128 * 0x700,
                    Arc::new(NullOps),
                )
                .expect("filler");
            mem.add_subregion_overlap(root, k * 0x480, f, (k % 3) as i32 - 1)
                .expect("filler placed");
        }
        let smm_root = mem.create_container("smm", SIZE_2_64).expect("smm");
        let smm_all = mem
            .create_alias("smm memory", root, 0, SIZE_2_64)
            .expect("smm alias");
        mem.add_subregion_overlap(smm_root, 0, smm_all, 0)
            .expect("smm alias placed");
        let smram = mem.create_ram("smram", 0x1000).expect("smram");
        mem.add_subregion_overlap(smm_root, 0x2000, smram, 1)
            .expect("smram placed");
        let spaces = vec![
            mem.create_address_space("memory", root).expect("memory"),
            mem.create_address_space("dma", bm_root).expect("dma"),
            mem.create_address_space("smm", smm_root).expect("smm"),
        ];
        World {
            mem,
            root,
            pool,
            spaces,
            watched: Vec::new(),
            depth: 0,
            notifier: Arc::new(Quiet),
        }
    }

    /// Applies `op`; with `unchanged_on_error`, checks that a failure
    /// other than a listener's refusal left everything as it was. The
    /// reference world skips this: the worlds' views and events are
    /// compared after every commit anyway, and the fingerprint is most of
    /// an execution's cost.
    fn apply(&mut self, op: &Op, unchanged_on_error: bool) -> Result<(), Error> {
        let before = unchanged_on_error.then(|| snapshot(&self.mem));
        let result = self.apply_inner(op);
        if let (Err(e), Some(before)) = (&result, before) {
            if !matches!(e, Error::ListenerRefused { .. }) {
                assert!(
                    before == snapshot(&self.mem),
                    "{op:?} failed ({e}) and changed state"
                );
            }
        }
        result
    }

    fn apply_inner(&mut self, op: &Op) -> Result<(), Error> {
        let p = |i: usize| self.pool[i % POOL];
        let m = &mut self.mem;
        match *op {
            Op::Add {
                parent,
                child,
                addr,
                prio,
            } => {
                let parent = if parent == POOL { self.root } else { p(parent) };
                m.add_subregion_overlap(parent, addr, p(child), prio)
            }
            Op::Del(child) => match m.region(p(child))?.parent() {
                Some(parent) => m.del_subregion(parent, p(child)),
                None => Ok(()),
            },
            Op::Move(r, addr) => m.set_address(p(r), addr),
            Op::Prio(r, prio) => m.set_priority(p(r), prio),
            Op::Enable(r, on) => m.set_enabled(p(r), on),
            Op::Readonly(r, on) => m.set_readonly(p(r), on),
            Op::Resize(r, size) => m.set_size(p(r), size),
            Op::AliasOffset(r, offset) => m.set_alias_offset(p(r), offset),
            Op::Romd(r, on) => m.set_romd_mode(p(r), on),
            Op::Log(r, on) => m.set_log(p(r), DirtyClient::Vga, on),
            Op::GlobalLog(on) => m.set_global_dirty_log(on),
            Op::Unmergeable(r, on) => m.set_unmergeable(p(r), on),
            Op::Fd(r, addr, on) => {
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
            Op::Coalesce(r, on) => {
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
                if matches!(r, Err(Error::CommitWithoutTransaction)) {
                    assert_eq!(self.depth, 0, "commit refused inside a transaction");
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
                            held: Held::new(),
                        });
                        Ok(())
                    }
                    Err(e) => {
                        assert!(picky, "a listener that refuses nothing was refused: {e}");
                        let mut held = Held::new();
                        let events: Vec<Event> = log.take().into_iter().map(|e| e.event).collect();
                        fold(&mut held, &events, picky);
                        assert!(held.is_empty(), "a refused registration kept holdings");
                        Err(e)
                    }
                }
            }
            Op::Unlisten { which, replay } => {
                if self.watched.is_empty() {
                    return Ok(());
                }
                let mut w = self.watched.remove(which % self.watched.len());
                let mode = if replay {
                    Unregister::Replay
                } else {
                    Unregister::Detach
                };
                m.unregister_listener(w.id, mode)?;
                w.drain();
                if replay {
                    assert!(w.held.is_empty(), "replay-mode unregister left holdings");
                }
                Ok(())
            }
        }
    }

    /// Every listener holds exactly its address space's view.
    fn check_symmetry(&self, context: &dyn Fn() -> String) {
        for w in &self.watched {
            let view = self.mem.view(w.space).expect("live space");
            let expect: BTreeMap<u64, (FlatRange, DirtyLogMask)> = view
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

    /// The same views as `other`, and the same events since the last
    /// check; the events are folded into each listener's holdings.
    fn check_same_as(&mut self, other: &mut World, context: &dyn Fn() -> String) {
        for (a, b) in self.spaces.iter().zip(&other.spaces) {
            let va = self.mem.view(*a).expect("live space");
            let vb = other.mem.view(*b).expect("live space");
            let same = va.ranges.len() == vb.ranges.len()
                && va
                    .ranges
                    .iter()
                    .zip(vb.ranges.iter())
                    .all(|(x, y)| same_range(&self.mem, x, &other.mem, y))
                && va.ioeventfds.len() == vb.ioeventfds.len()
                && va.coalesced.len() == vb.coalesced.len();
            assert!(
                same,
                "engines rendered different views:\n{va:?}\n{vb:?}\n{}",
                context()
            );
        }
        assert_eq!(self.watched.len(), other.watched.len());
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

/// The same range in two worlds built alike (regions compared by name,
/// which is unique in a world).
fn same_range(ma: &Memory, a: &FlatRange, mb: &Memory, b: &FlatRange) -> bool {
    let name = |m: &Memory, r: &FlatRange| m.region(r.region).map(|x| x.name().to_owned()).ok();
    (
        a.start,
        a.last,
        a.offset_in_region,
        a.readonly,
        a.nonvolatile,
    ) == (
        b.start,
        b.last,
        b.offset_in_region,
        b.readonly,
        b.nonvolatile,
    ) && (a.unmergeable, a.romd_mode, a.dirty_log_mask, a.epoch)
        == (b.unmergeable, b.romd_mode, b.dirty_log_mask, b.epoch)
        && name(ma, a) == name(mb, b)
}

/// Folds events into holdings, honouring a picky listener's refusals.
fn fold(held: &mut Held, events: &[Event], picky: bool) {
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

/// What an operation may change, captured cheaply enough to take before
/// every operation: each region's placement and attributes, each address
/// space's view (shared, compared by value) and listeners.
#[derive(Debug, PartialEq)]
struct Snapshot {
    regions: Vec<RegionState>,
    views: Vec<Option<Arc<addrspace_core::FlatView>>>,
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

fn snapshot(mem: &Memory) -> Snapshot {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_short_inputs_run() {
        run(&[]);
        run(&[0]);
        run(&[0xff; 3]);
    }

    #[test]
    fn a_mixed_sequence_runs_clean() {
        // Listen on every space (one picky), then adds, moves, a
        // transaction, logging and an unregister of each mode.
        let data: Vec<u8> = (0u8..=255).chain((0u8..=255).rev()).collect();
        run(&data);
    }
}
