//! Property: after every commit, each IOMMU region's counter equals the
//! IOMMU-user sections held; `vfio_start` and `vfio_stop` strictly
//! alternate per region; a region is started exactly while counted; and
//! everything ends at zero when the listeners leave, in either mode.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use addrspace_core::recorder::{Entry, Event, EventLog, Recorder};
use addrspace_core::{
    AddressSpaceId, HookError, IommuOps, IommuPerm, IommuTlbEntry, ListenerConfig, ListenerId,
    Memory, RegionId, Unregister, SIZE_2_64,
};
use parking_lot::Mutex;
use proptest::prelude::*;

#[derive(Default)]
struct Table {
    hooks: Mutex<Vec<&'static str>>,
    fail_start: AtomicBool,
}

impl IommuOps for Table {
    fn translate(&self, addr: u64, _access: IommuPerm) -> IommuTlbEntry {
        IommuTlbEntry {
            iova: addr & !0xfff,
            translated_addr: 0,
            addr_mask: 0xfff,
            perm: IommuPerm::NONE,
            target: None,
        }
    }
    fn min_page_size(&self) -> u64 {
        0x1000
    }
    fn vfio_start(&self) -> Result<(), HookError> {
        if self.fail_start.load(Ordering::Relaxed) {
            return Err("refused".into());
        }
        self.hooks.lock().push("start");
        Ok(())
    }
    fn vfio_stop(&self) -> Result<(), HookError> {
        self.hooks.lock().push("stop");
        Ok(())
    }
}

#[derive(Debug, Clone)]
enum Op {
    Add {
        r: usize,
        addr: u64,
    },
    Del {
        r: usize,
    },
    Enable {
        r: usize,
        on: bool,
    },
    Move {
        r: usize,
        addr: u64,
    },
    Begin,
    Commit,
    Listen {
        space: usize,
        user: bool,
        picky: bool,
    },
    Unlisten {
        which: usize,
        replay: bool,
    },
    FailStart {
        r: usize,
        on: bool,
    },
}

const REGIONS: usize = 3;

fn op() -> impl Strategy<Value = Op> {
    let addr = (0u64..8).prop_map(|a| a * 0x8_0000);
    prop_oneof![
        4 => (0..REGIONS, addr.clone()).prop_map(|(r, addr)| Op::Add { r, addr }),
        3 => (0..REGIONS).prop_map(|r| Op::Del { r }),
        2 => (0..REGIONS, any::<bool>()).prop_map(|(r, on)| Op::Enable { r, on }),
        2 => (0..REGIONS, addr).prop_map(|(r, addr)| Op::Move { r, addr }),
        1 => Just(Op::Begin),
        1 => Just(Op::Commit),
        3 => (0..2usize, any::<bool>(), any::<bool>()).prop_map(|(space, user, picky)| Op::Listen { space, user, picky }),
        2 => (0..6usize, any::<bool>()).prop_map(|(which, replay)| Op::Unlisten { which, replay }),
        1 => (0..REGIONS, any::<bool>()).prop_map(|(r, on)| Op::FailStart { r, on }),
    ]
}

struct Watched {
    id: ListenerId,
    user: bool,
    picky: bool,
    log: EventLog,
}

struct World {
    mem: Memory,
    root: RegionId,
    regions: Vec<RegionId>,
    tables: Vec<Arc<Table>>,
    spaces: Vec<AddressSpaceId>,
    watched: Vec<Watched>,
    depth: u32,
}

fn world() -> World {
    let mut mem = Memory::new();
    let root = mem.create_container("phb-root", SIZE_2_64).unwrap();
    let mut regions = Vec::new();
    let mut tables = Vec::new();
    for i in 0..REGIONS {
        let t = Arc::new(Table::default());
        regions.push(
            mem.create_iommu(&format!("tce{i}"), 0x10_0000, t.clone())
                .unwrap(),
        );
        tables.push(t);
    }
    // A second space sees the whole root through a full alias (a device
    // behind a bridge): the same regions, counted from both spaces.
    let other_root = mem.create_container("bridge", SIZE_2_64).unwrap();
    let alias = mem
        .create_alias("bridge-window", root, 0, SIZE_2_64)
        .unwrap();
    mem.add_subregion(other_root, 0, alias).unwrap();
    let spaces = vec![
        mem.create_address_space("dma", root).unwrap(),
        mem.create_address_space("bridge", other_root).unwrap(),
    ];
    World {
        mem,
        root,
        regions,
        tables,
        spaces,
        watched: Vec::new(),
        depth: 0,
    }
}

/// Ranges a listener holds (each listener has one address space), by
/// start, from its event stream.
fn held(entries: &[Entry]) -> BTreeMap<u64, addrspace_core::FlatRange> {
    let mut held = BTreeMap::new();
    for e in entries {
        match &e.event {
            Event::RegionAdd(r) => {
                assert!(held.insert(r.start, *r).is_none(), "added twice");
            }
            Event::RegionDel(r) => {
                assert!(held.remove(&r.start).is_some(), "deleted a range not held");
            }
            _ => {}
        }
    }
    held
}

fn picky_refuses(r: &addrspace_core::FlatRange) -> bool {
    r.start == 0x8_0000
}

impl World {
    fn apply(&mut self, op: &Op) {
        let m = &mut self.mem;
        let p = |i: usize| self.regions[i % REGIONS];
        let _ = match *op {
            Op::Add { r, addr } => m.add_subregion(self.root, addr, p(r)),
            Op::Del { r } => match m.region(p(r)).unwrap().parent() {
                Some(parent) => m.del_subregion(parent, p(r)),
                None => Ok(()),
            },
            Op::Enable { r, on } => m.set_enabled(p(r), on),
            Op::Move { r, addr } => m.set_address(p(r), addr),
            Op::Begin => {
                self.depth += 1;
                m.begin();
                Ok(())
            }
            Op::Commit => {
                if self.depth > 0 {
                    self.depth -= 1;
                }
                m.commit()
            }
            Op::Listen { space, user, picky } => {
                let log = EventLog::new();
                let name = format!("l{}", self.watched.len());
                let mut rec = Recorder::new(&name, &log);
                if picky {
                    rec = rec.refusing(|e| matches!(e, Event::RegionAdd(r) if picky_refuses(r)));
                }
                let mut config = ListenerConfig::new(name);
                if user {
                    config = config.iommu_user();
                }
                match m.register_listener(self.spaces[space], config, Box::new(rec)) {
                    Ok(id) => self.watched.push(Watched {
                        id,
                        user,
                        picky,
                        log,
                    }),
                    Err(_) => assert!(
                        held_by(&log.take(), picky).is_empty(),
                        "failed registration left holdings"
                    ),
                }
                Ok(())
            }
            Op::Unlisten { which, replay } => {
                if !self.watched.is_empty() {
                    let w = self.watched.remove(which % self.watched.len());
                    let mode = if replay {
                        Unregister::Replay
                    } else {
                        Unregister::Detach
                    };
                    let _ = m.unregister_listener(w.id, mode);
                    if replay {
                        assert!(held_by(&w.log.take(), w.picky).is_empty());
                    }
                }
                Ok(())
            }
            Op::FailStart { r, on } => {
                self.tables[r].fail_start.store(on, Ordering::Relaxed);
                Ok(())
            }
        };
    }

    fn check(&self) {
        for (i, &region) in self.regions.iter().enumerate() {
            let held: u32 = self
                .watched
                .iter()
                .filter(|w| w.user)
                .map(|w| {
                    held_by(&w.log.entries(), w.picky)
                        .values()
                        .filter(|r| r.region == region)
                        .count() as u32
                })
                .sum();
            let (count, started) = self.mem.iommu_usage(region).unwrap();
            assert_eq!(count, held, "counter of tce{i}");
            assert_eq!(started, count > 0, "tce{i} started exactly while used");
            let hooks = self.tables[i].hooks.lock();
            for (k, h) in hooks.iter().enumerate() {
                assert_eq!(
                    *h,
                    if k % 2 == 0 { "start" } else { "stop" },
                    "hooks alternate: {hooks:?}"
                );
            }
            assert_eq!(hooks.len() % 2 == 1, started);
        }
    }
}

/// Holdings, leaving out what a picky listener refused.
fn held_by(entries: &[Entry], picky: bool) -> BTreeMap<u64, addrspace_core::FlatRange> {
    let kept: Vec<Entry> = entries
        .iter()
        .filter(|e| !(picky && matches!(&e.event, Event::RegionAdd(r) if picky_refuses(r))))
        .cloned()
        .collect();
    held(&kept)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn usage_counts_what_iommu_users_hold(ops in prop::collection::vec(op(), 1..40)) {
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
        for (i, watched) in std::mem::take(&mut w.watched).into_iter().enumerate() {
            let mode = if i % 2 == 0 { Unregister::Replay } else { Unregister::Detach };
            w.mem.unregister_listener(watched.id, mode).unwrap();
        }
        for (i, &region) in w.regions.iter().enumerate() {
            prop_assert_eq!(w.mem.iommu_usage(region).unwrap(), (0, false));
            prop_assert_eq!(w.tables[i].hooks.lock().len() % 2, 0);
        }
    }
}
