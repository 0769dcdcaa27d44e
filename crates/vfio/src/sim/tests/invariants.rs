//! Property test: random sequences of MAP, UNMAP, CREATE, REMOVE,
//! REGISTER and UNREGISTER on a v2 container keep the simulator's
//! invariants after every step, and a failed ioctl changes nothing beyond
//! the side effects mainline is known to leave (binding the process,
//! creating the pending default window, a MAP's rollback clearing the
//! entries it wrote).

use proptest::prelude::*;

use super::*;
use crate::sim::memory::ProcessId;
use crate::sim::observe::{
    BackendSnapshot, PeState, ProcessSnapshot, SimSnapshot, SpaprSnapshot, WindowState,
};

/// Where the random memory ranges live: four 1 MiB chunks.
const POOL: u64 = 0x4000_0000;
const CHUNK: u64 = 0x10_0000;
const ME: ProcessId = ProcessId(1);

#[derive(Clone, Debug)]
enum Op {
    Register {
        chunk: u64,
        pages: u64,
        misalign: bool,
    },
    Unregister {
        chunk: u64,
        pages: u64,
    },
    Create {
        page_shift: u32,
        window_shift: u32,
        levels: u32,
        odd_size: bool,
    },
    Remove {
        addr: u64,
    },
    Map {
        high: bool,
        page: u64,
        pages: u64,
        small: bool,
        chunk: u64,
        offset: u64,
        flags: u32,
        misalign: u64,
    },
    Unmap {
        high: bool,
        page: u64,
        pages: u64,
        small: bool,
        misalign: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let register = (
        0u64..4,
        prop::sample::select(vec![0u64, 1, 4, 4, 4]),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(chunk, pages, misalign)| Op::Register {
            chunk,
            pages,
            misalign,
        });
    let unregister = (0u64..4, prop::sample::select(vec![1u64, 4, 4, 4]))
        .prop_map(|(chunk, pages)| Op::Unregister { chunk, pages });
    let create = (
        prop::sample::select(vec![12u32, 16, 21, 24]),
        16u32..36,
        prop::sample::select(vec![0u32, 1, 1, 1, 1, 2, 2, 3, 5, 6]),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(page_shift, window_shift, levels, odd_size)| Op::Create {
            page_shift,
            window_shift,
            levels,
            odd_size,
        });
    let remove = prop::sample::select(vec![0u64, 0x1000, SLOT1, SLOT1 + PAGE_64K, 1 << 35])
        .prop_map(|addr| Op::Remove { addr });
    let map = (
        (
            prop::bool::weighted(0.3),
            0u64..80,
            0u64..5,
            prop::bool::weighted(0.3),
        ),
        (
            0u64..4,
            0u64..5,
            prop::sample::select(vec![0u32, 1, 2, 3, 3, 3, 3, 3, 7]),
        ),
        prop::sample::select(vec![0u64, 0, 0, 0, 0, 0, 0, 0, 0x800, 0x1000]),
    )
        .prop_map(
            |((high, page, pages, small), (chunk, offset, flags), misalign)| Op::Map {
                high,
                page,
                pages,
                small,
                chunk,
                offset,
                flags,
                misalign,
            },
        );
    let unmap = (
        prop::bool::weighted(0.3),
        0u64..80,
        0u64..9,
        prop::bool::weighted(0.3),
        prop::sample::select(vec![0u64, 0, 0, 0, 0, 0, 0, 0, 0x800, 0x1000]),
    )
        .prop_map(|(high, page, pages, small, misalign)| Op::Unmap {
            high,
            page,
            pages,
            small,
            misalign,
        });
    prop_oneof![
        2 => register,
        1 => unregister,
        2 => create,
        2 => remove,
        4 => map,
        2 => unmap,
    ]
}

/// The bus range a MAP or UNMAP asks for.
fn dma_range(high: bool, page: u64, pages: u64, small: bool, misalign: u64) -> (u64, u64) {
    let base = if high { SLOT1 } else { 0 };
    let granule = if small { 0x1000 } else { PAGE_64K };
    let iova = base + page * PAGE_64K + misalign;
    (iova, pages * granule)
}

/// Runs one op; for a MAP, also returns the range it asked for.
fn apply(fx: &Fx, op: &Op) -> (Result<i32, Errno>, Option<(u64, u64)>) {
    let zero = |r: Result<(), Errno>| r.map(|()| 0);
    match *op {
        Op::Register {
            chunk,
            pages,
            misalign,
        } => {
            let vaddr = POOL + chunk * CHUNK + if misalign { 0x1000 } else { 0 };
            (zero(fx.register(vaddr, pages * PAGE_64K)), None)
        }
        Op::Unregister { chunk, pages } => (
            zero(fx.unregister(POOL + chunk * CHUNK, pages * PAGE_64K)),
            None,
        ),
        Op::Create {
            page_shift,
            window_shift,
            levels,
            odd_size,
        } => {
            let size = (1u64 << window_shift) + if odd_size { PAGE_64K } else { 0 };
            (fx.create(page_shift, size, levels).map(|_| 0), None)
        }
        Op::Remove { addr } => (zero(fx.remove(addr)), None),
        Op::Map {
            high,
            page,
            pages,
            small,
            chunk,
            offset,
            flags,
            misalign,
        } => {
            let (iova, size) = dma_range(high, page, pages, small, misalign);
            let vaddr = POOL + chunk * CHUNK + offset * PAGE_64K;
            let map = DmaMap::new(iova, size, vaddr, flags);
            (fx.sim.iommu_map_dma(fx.c, &map), Some((iova, size)))
        }
        Op::Unmap {
            high,
            page,
            pages,
            small,
            misalign,
        } => {
            let (iova, size) = dma_range(high, page, pages, small, misalign);
            (fx.unmap(iova, size), None)
        }
    }
}

fn spapr(snap: &SimSnapshot, fx: &Fx) -> SpaprSnapshot {
    snap.spapr(fx.c)
        .expect("the container keeps its v2 backend")
        .clone()
}

/// The invariants that hold after every step.
fn check_invariants(snap: &SimSnapshot, fx: &Fx, mode: SimMode) -> Result<(), TestCaseError> {
    let s = spapr(snap, fx);
    let process = snap.processes.get(&ME).cloned().unwrap_or(ProcessSnapshot {
        locked_bytes: 0,
        registrations: Vec::new(),
    });
    // At most two windows, each at its slot's address, none overlapping.
    prop_assert!(s.windows.len() <= 2);
    for w in &s.windows {
        prop_assert!(w.info.start == 0 || w.info.start == SLOT1);
        prop_assert!(w.info.size > 0 && w.info.start.checked_add(w.info.size).is_some());
    }
    if let [a, b] = s.windows.as_slice() {
        prop_assert!(a.info.start + a.info.size <= b.info.start);
    }
    // Locked memory equals the sum of the charges.
    let charged: u64 = s.windows.iter().map(|w| w.info.locked_bytes).sum::<u64>()
        + s.enable_locked_bytes
        + process.registrations.iter().map(|r| r.size).sum::<u64>();
    prop_assert_eq!(process.locked_bytes, charged);
    // Every host TCE lies inside its window and inside registered memory
    // with large enough pages; mapped counts match.
    let mut mapped = vec![0u64; process.registrations.len()];
    for w in &s.windows {
        let page = 1u64 << w.info.page_shift;
        for (&iova, tce) in &w.entries {
            prop_assert!(iova >= w.info.start && iova - w.info.start < w.info.size);
            prop_assert_eq!(iova % page, 0);
            let holder = process
                .registrations
                .iter()
                .position(|r| r.page_shift >= w.info.page_shift && r.contains(tce.vaddr, page));
            prop_assert!(
                holder.is_some(),
                "TCE {iova:#x} -> {:#x} outside registered memory",
                tce.vaddr
            );
            mapped[holder.unwrap()] += 1;
        }
    }
    for (reg, count) in process.registrations.iter().zip(&mapped) {
        prop_assert_eq!(reg.mapped, *count);
    }
    // The container's registrations exist; strict mode never leaks one.
    for range in &s.registered {
        prop_assert!(process
            .registrations
            .iter()
            .any(|r| r.vaddr == range.vaddr && r.size == range.size));
    }
    if mode == SimMode::Strict {
        prop_assert_eq!(process.registrations.len(), s.registered.len());
    }
    // The group's PE carries exactly the container's windows.
    let starts = s.windows.iter().map(|w| w.info.start).collect();
    prop_assert_eq!(&snap.groups[&GA].pe, &PeState::Vfio { windows: starts });
    Ok(())
}

/// What the state may look like after `op` failed, given the state before
/// it and the state it left.
fn expected_after_failure(
    before: &SimSnapshot,
    after: &SimSnapshot,
    fx: &Fx,
    op: &Op,
    map: Option<(u64, u64)>,
) -> SimSnapshot {
    let mut expected = before.clone();
    let after_s = spapr(after, fx);
    let before_s = spapr(before, fx);
    let binds = matches!(
        op,
        Op::Register { .. } | Op::Unregister { .. } | Op::Create { .. } | Op::Remove { .. }
    );
    let may_create_default = matches!(op, Op::Map { .. } | Op::Unmap { .. } | Op::Create { .. });
    let created_default =
        may_create_default && before_s.default_window_pending && !after_s.default_window_pending;
    let Some(BackendSnapshot::Spapr(s)) = expected
        .containers
        .get_mut(&fx.c)
        .and_then(|c| c.backend.as_mut())
    else {
        unreachable!("v2 backend");
    };
    if binds && before_s.process.is_none() {
        s.process = after_s.process;
    }
    let mut locked_delta = 0;
    if created_default {
        let default: WindowState = after_s.windows[0].clone();
        assert_eq!(
            (
                default.info.start,
                default.info.size,
                default.info.page_shift,
                default.info.levels
            ),
            (0, DMA32, 12, 1),
            "only the default window may appear"
        );
        locked_delta = default.info.locked_bytes;
        s.default_window_pending = false;
        s.windows.insert(
            0,
            WindowState {
                entries: Default::default(),
                ..default
            },
        );
        expected.groups.get_mut(&GA).unwrap().pe = after.groups[&GA].pe.clone();
    }
    let mut cleared = Vec::new();
    if let Some((iova, size)) = map {
        for (w, w_after) in s.windows.iter_mut().zip(&after_s.windows) {
            let end = iova.saturating_add(size);
            let gone: Vec<u64> = w
                .entries
                .range(iova..end)
                .map(|(&k, _)| k)
                .filter(|k| !w_after.entries.contains_key(k))
                .collect();
            for k in gone {
                let tce = w.entries.remove(&k).unwrap();
                cleared.push((tce.vaddr, 1u64 << w.info.page_shift));
            }
        }
    }
    if locked_delta > 0 || !cleared.is_empty() {
        let p = expected.processes.entry(ME).or_insert(ProcessSnapshot {
            locked_bytes: 0,
            registrations: Vec::new(),
        });
        p.locked_bytes += locked_delta;
        for (vaddr, len) in cleared {
            if let Some(reg) = p.registrations.iter_mut().find(|r| r.contains(vaddr, len)) {
                reg.mapped -= 1;
            }
        }
    }
    expected
}

fn run(mode: SimMode, ops: &[Op]) -> Result<(), TestCaseError> {
    let fx = Fx::v2(mode);
    fx.sim.set_locked_memory_limit(64 << 20);
    // Most sequences should get past "nothing registered yet".
    let first = Op::Register {
        chunk: 0,
        pages: 4,
        misalign: false,
    };
    for op in std::iter::once(&first).chain(ops) {
        let before = fx.sim.snapshot();
        let (result, map) = apply(&fx, op);
        let after = fx.sim.snapshot();
        check_invariants(&after, &fx, mode)?;
        match result {
            Err(_) => {
                let expected = expected_after_failure(&before, &after, &fx, op, map);
                prop_assert_eq!(&after, &expected, "{:?} failed with {:?}", op, result);
            }
            Ok(1) => {
                prop_assert_eq!(mode, SimMode::Faithful, "only the quirk returns 1");
            }
            Ok(_) => {}
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn faithful_sequences_keep_the_invariants(ops in prop::collection::vec(op(), 1..40)) {
        run(SimMode::Faithful, &ops)?;
    }

    #[test]
    fn strict_sequences_keep_the_invariants(ops in prop::collection::vec(op(), 1..40)) {
        run(SimMode::Strict, &ops)?;
    }
}
