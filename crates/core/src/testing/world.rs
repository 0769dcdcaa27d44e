//! The machine the operations run on, and how each one runs.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;

use super::check::{fold, refused_by_picky, Held};
use super::{Op, POOL};
use crate::recorder::{Event, EventLog, Recorder};
use crate::{
    AddressSpaceId, DirtyClient, Engine, Error, EventNotifier, Ioeventfd, ListenerConfig,
    ListenerId, Memory, NullOps, RegionId, Unregister, SIZE_2_64,
};

/// A listener under test: its own log, whether it refuses some adds, and
/// what the events so far leave it holding.
#[derive(Debug)]
pub struct Watched {
    /// Its registration.
    pub id: ListenerId,
    /// The address space it listens to.
    pub space: AddressSpaceId,
    /// Everything it was told, until [`Watched::drain`] takes it.
    pub log: EventLog,
    /// Whether it refuses the `region_add`s [`refused_by_picky`] names.
    pub picky: bool,
    /// What the drained events leave it holding.
    pub held: Held,
}

impl Watched {
    /// Takes the events logged since the last call, folds them into
    /// [`held`](Watched::held) (panicking on an add of a range already
    /// held, a del or log change of one not held, a del of a logged range
    /// or a log change from a stale mask) and returns them.
    pub fn drain(&mut self) -> Vec<Event> {
        let new: Vec<Event> = self.log.take().into_iter().map(|e| e.event).collect();
        fold(&mut self.held, &new, self.picky);
        new
    }
}

/// The notifier of every ioeventfd the operations add.
#[derive(Debug)]
struct Quiet;

impl EventNotifier for Quiet {
    fn notify(&self) {}
}

/// A [`Memory`] with a pool of regions to operate on, three address spaces
/// and the listeners registered so far (see the [module docs](super)).
#[derive(Debug)]
pub struct World {
    /// The memory operated on.
    pub mem: Memory,
    /// The root of `memory`, named by [`POOL`] as a parent in [`Op::Add`].
    pub root: RegionId,
    /// The regions the operations pick from: for `i` in `0..POOL`, by
    /// `i % 6`, a container, RAM, MMIO, an alias of region `i - 2` (the
    /// MMIO before it), a ROM device and a reservation. None is placed at
    /// first.
    pub pool: Vec<RegionId>,
    /// `memory`, `dma` and `smm`.
    pub spaces: Vec<AddressSpaceId>,
    /// The listeners registered by [`Op::Listen`] and not yet
    /// unregistered, in registration order.
    pub watched: Vec<Watched>,
    /// How many transactions are open.
    pub depth: u32,
    /// When each placed region was last (re-)added to its parent, by this
    /// world's own count (a move or a priority change re-adds): an oracle
    /// orders siblings of equal priority by this, most recent first,
    /// rather than by the core's own lists.
    pub added: HashMap<RegionId, u64>,
    clock: u64,
    notifier: Arc<Quiet>,
}

impl World {
    /// Builds the machine, rendering with `engine`. Worlds built alike
    /// hand out the same handles in the same order (a handle's slot and
    /// generation; not which memory made it).
    pub fn new(engine: Engine) -> World {
        let mut mem = Memory::new();
        mem.set_engine(engine);
        assert_eq!(mem.engine(), engine);
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
        // A bus-master-style space: a container holding a full alias of root.
        let bm_root = mem.create_container("bm", SIZE_2_64).expect("bm");
        let bm = mem
            .create_alias("bus master", root, 0, SIZE_2_64)
            .expect("bm alias");
        mem.add_subregion(bm_root, 0, bm).expect("bm alias placed");
        // Fillers give the root enough children to be indexed by address, so
        // narrow re-renders go through the index.
        let mut added = HashMap::new();
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
            added.insert(f, k);
        }
        // An SMM-style space: root through a full alias, under a RAM window
        // of its own at higher priority, so that it has a view of its own
        // that shows root's (and copies from it when both change).
        let smm_root = mem.create_container("smm", SIZE_2_64).expect("smm");
        let smm_all = mem
            .create_alias("smm memory", root, 0, SIZE_2_64)
            .expect("smm alias");
        mem.add_subregion_overlap(smm_root, 0, smm_all, 0)
            .expect("smm alias placed");
        let smram = mem.create_ram("smram", 0x1000).expect("smram");
        mem.add_subregion_overlap(smm_root, 0x2000, smram, 1)
            .expect("smram placed");
        added.insert(smm_all, 40);
        added.insert(smram, 41);
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
            added,
            clock: 100,
            notifier: Arc::new(Quiet),
        }
    }

    /// Runs `op` and returns what the core answered.
    ///
    /// Panics when the core breaks a rule on the way: a commit refused
    /// inside a transaction, a listener that refuses nothing refused at
    /// registration, a refused registration or a replay-mode unregister
    /// that leaves the listener holding something, a registered listener
    /// that does not unregister.
    pub fn apply(&mut self, op: &Op) -> Result<(), Error> {
        let result = self.run(op);
        let readded = match *op {
            Op::Add { child, .. } => Some(child),
            Op::Move { r, .. } | Op::Prio { r, .. } => Some(r),
            _ => None,
        };
        if let Some(r) = readded {
            if matches!(result, Ok(()) | Err(Error::ListenerRefused { .. })) {
                self.clock += 1;
                self.added.insert(self.pool[r % POOL], self.clock);
            }
        }
        result
    }

    /// [`apply`](World::apply), and if `op` failed for any reason but a
    /// listener's refusal, checks that `state` of the memory is what it was
    /// before.
    pub fn apply_checked<S: PartialEq + Debug>(
        &mut self,
        op: &Op,
        state: impl Fn(&Memory) -> S,
    ) -> Result<(), Error> {
        let before = state(&self.mem);
        let result = self.apply(op);
        if let Err(e) = &result {
            if !matches!(e, Error::ListenerRefused { .. }) {
                let after = state(&self.mem);
                assert!(
                    before == after,
                    "{op:?} failed ({e}) and changed state:\n{before:?}\nto\n{after:?}"
                );
            }
        }
        result
    }

    /// Unregisters every watched listener in replay mode and checks that
    /// each is left holding nothing.
    pub fn unregister_all(&mut self, context: &dyn Fn() -> String) {
        for mut w in std::mem::take(&mut self.watched) {
            self.mem
                .unregister_listener(w.id, Unregister::Replay)
                .expect("a registered listener unregisters");
            w.drain();
            assert!(
                w.held.is_empty(),
                "replay-mode unregister left holdings {:?}; {}",
                w.held,
                context()
            );
        }
    }

    fn run(&mut self, op: &Op) -> Result<(), Error> {
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
            Op::Del { child } => match m.region(p(child))?.parent() {
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
                    notifier: self.notifier.clone(),
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
                        // A refused registration takes back all it gave.
                        assert!(picky, "a listener that refuses nothing was refused: {e}");
                        let mut held = Held::new();
                        let events: Vec<Event> = log.take().into_iter().map(|e| e.event).collect();
                        fold(&mut held, &events, picky);
                        assert!(held.is_empty(), "a refused registration kept {held:?}");
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
                m.unregister_listener(w.id, mode)
                    .expect("a registered listener unregisters");
                w.drain();
                if replay {
                    assert!(
                        w.held.is_empty(),
                        "replay-mode unregister left {:?}",
                        w.held
                    );
                }
                Ok(())
            }
        }
    }
}
