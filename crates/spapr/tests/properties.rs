//! Random sequences of hypercalls, RTAS calls, resets and VFIO users keep
//! the sPAPR model consistent with itself and with the memory map.

mod common;

use std::collections::BTreeSet;

use addrspace_core::{IommuOps, IommuPerm, ListenerId, Unregister};
use addrspace_spapr::{
    HResult, HcallError, Liobn, PhbConfig, Placement, RtasStatus, Tce, WindowGeometry,
};
use common::{Machine, Mirror, BUID, DEFAULT, RAM, SECOND};
use proptest::prelude::*;

/// Which table an operation names: slot 0, slot 1, or a LIOBN no PHB has.
fn liobn(slot: u8) -> Liobn {
    match slot {
        0 => DEFAULT,
        1 => SECOND,
        _ => Liobn(0x8000_0700),
    }
}

/// An entry index, from the start of the table or around its end.
#[derive(Debug, Clone, Copy)]
enum Idx {
    Start(u64),
    End(u64),
}

impl Idx {
    fn resolve(self, g: Option<WindowGeometry>) -> u64 {
        let entries = g.map_or(0, |g| g.entries);
        match self {
            Idx::Start(i) => i,
            Idx::End(k) => (entries + k).saturating_sub(2),
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Put {
        slot: u8,
        idx: Idx,
        tce: u64,
    },
    Stuff {
        slot: u8,
        idx: Idx,
        tce: u64,
        count: u64,
    },
    Indirect {
        slot: u8,
        idx: Idx,
        list_page: u64,
        misalign: bool,
        tces: Vec<u64>,
        too_long: bool,
    },
    Get {
        slot: u8,
        idx: Idx,
    },
    Query,
    Create {
        page_shift: u32,
        window_shift: u32,
    },
    Remove {
        slot: u8,
    },
    RtasReset,
    MachineReset,
    AttachVfio,
    DetachVfio {
        replay: bool,
    },
}

fn idx() -> impl Strategy<Value = Idx> {
    prop_oneof![3 => (0..48u64).prop_map(Idx::Start), 1 => (0..4u64).prop_map(Idx::End)]
}

/// A TCE: mostly inside RAM, sometimes past it; any permission.
fn tce() -> impl Strategy<Value = u64> {
    let page = prop_oneof![4 => 0..(RAM >> 12), 1 => (RAM >> 12)..((2 * RAM) >> 12)];
    (page, 0..4u64).prop_map(|(page, perm)| (page << 12) | perm)
}

fn slot() -> impl Strategy<Value = u8> {
    prop_oneof![4 => 0..2u8, 1 => Just(2u8)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (slot(), idx(), tce()).prop_map(|(slot, idx, tce)| Op::Put { slot, idx, tce }),
        2 => (slot(), idx(), tce(), 0..6u64)
            .prop_map(|(slot, idx, tce, count)| Op::Stuff { slot, idx, tce, count }),
        2 => (slot(), idx(), 0..(RAM >> 12) + 2, prop::bool::weighted(0.1),
              prop::collection::vec(tce(), 0..8), prop::bool::weighted(0.05))
            .prop_map(|(slot, idx, list_page, misalign, tces, too_long)| Op::Indirect {
                slot, idx, list_page, misalign, tces, too_long,
            }),
        3 => (slot(), idx()).prop_map(|(slot, idx)| Op::Get { slot, idx }),
        1 => Just(Op::Query),
        2 => (prop::sample::select(vec![12u32, 13, 16, 21, 24, 30]), prop_oneof![4 => 16..36u32, 1 => 8..46u32])
            .prop_map(|(page_shift, window_shift)| Op::Create { page_shift, window_shift }),
        2 => slot().prop_map(|slot| Op::Remove { slot }),
        1 => Just(Op::RtasReset),
        1 => Just(Op::MachineReset),
        1 => Just(Op::AttachVfio),
        1 => any::<bool>().prop_map(|replay| Op::DetachVfio { replay }),
    ]
}

struct Run {
    m: Machine,
    vfio: Option<(ListenerId, Mirror)>,
    touched: BTreeSet<(Liobn, u64)>,
}

impl Run {
    fn geometry(&self, slot: u8) -> Option<WindowGeometry> {
        self.m.iommu.table(liobn(slot)).and_then(|t| t.geometry())
    }

    fn ioba(&mut self, slot: u8, idx: Idx) -> u64 {
        let g = self.geometry(slot);
        let index = idx.resolve(g);
        self.touched.insert((liobn(slot), index));
        let g = g.unwrap_or(WindowGeometry::default_window(0, 0));
        g.bus_offset
            .saturating_add(index.saturating_mul(g.page_size()))
    }

    /// What a single put must answer, from the state before it.
    fn expected_put(&self, slot: u8, ioba: u64, tce: Tce) -> HResult {
        let Some(g) = self.geometry(slot).filter(|_| slot < 2) else {
            return HResult::PARAMETER;
        };
        let inside = g.index_of(ioba).is_some();
        let in_ram = !tce.is_valid()
            || tce.page_addr(g.page_shift) as u128 + g.page_size() as u128 <= RAM as u128;
        if inside && in_ram {
            HResult::SUCCESS
        } else {
            HResult::PARAMETER
        }
    }

    fn apply(&mut self, op: &Op) {
        match op.clone() {
            Op::Put { slot, idx, tce } => {
                let ioba = self.ioba(slot, idx);
                let want = self.expected_put(slot, ioba, Tce(tce));
                let got = self
                    .m
                    .iommu
                    .h_put_tce(&self.m.mem, liobn(slot), ioba, Tce(tce));
                assert_eq!(HResult::of(&got), want, "{got:?}");
                if got.is_ok() {
                    assert_eq!(self.m.iommu.h_get_tce(liobn(slot), ioba), Ok(Tce(tce)));
                }
            }
            Op::Stuff {
                slot,
                idx,
                tce,
                count,
            } => {
                let ioba = self.ioba(slot, idx);
                let got = self
                    .m
                    .iommu
                    .h_stuff_tce(&self.m.mem, liobn(slot), ioba, Tce(tce), count);
                if slot == 2 {
                    assert!(matches!(got, Err(HcallError::UnknownLiobn { .. })));
                }
            }
            Op::Indirect {
                slot,
                idx,
                list_page,
                misalign,
                tces,
                too_long,
            } => {
                let ioba = self.ioba(slot, idx);
                let list = (list_page << 12) + if misalign { 8 } else { 0 };
                let bytes: Vec<u8> = tces.iter().flat_map(|t| t.to_be_bytes()).collect();
                if list + (bytes.len() as u64) <= RAM {
                    self.m
                        .mem
                        .view(self.m.guest)
                        .unwrap()
                        .write(list, &bytes)
                        .unwrap();
                }
                let count = if too_long { 513 } else { tces.len() as u64 };
                let got =
                    self.m
                        .iommu
                        .h_put_tce_indirect(&self.m.mem, liobn(slot), ioba, list, count);
                if slot < 2 && (misalign || too_long) {
                    assert_eq!(HResult::of(&got), HResult::PARAMETER);
                    assert!(!matches!(got, Err(HcallError::OutsideWindow { .. })));
                }
            }
            Op::Get { slot, idx } => {
                let ioba = self.ioba(slot, idx);
                let got = self.m.iommu.h_get_tce(liobn(slot), ioba);
                let inside =
                    slot < 2 && self.geometry(slot).and_then(|g| g.index_of(ioba)).is_some();
                assert_eq!(got.is_ok(), inside, "{got:?}");
            }
            Op::Query => {
                let q = self.m.iommu.rtas_query_pe_dma_window(BUID).unwrap();
                let active = self.m.iommu.phbs()[0].active_windows().len() as u32;
                assert_eq!(q.windows_available, 2 - active);
            }
            Op::Create {
                page_shift,
                window_shift,
            } => {
                let before = self.m.iommu.phbs()[0].active_windows();
                let got = self.m.iommu.rtas_create_pe_dma_window(
                    &mut self.m.mem,
                    BUID,
                    page_shift,
                    window_shift,
                );
                if page_shift == 13 || page_shift == 30 || window_shift < page_shift {
                    assert_eq!(RtasStatus::of(&got), RtasStatus::PARAM_ERROR);
                } else if before.len() == 2 {
                    assert_eq!(RtasStatus::of(&got), RtasStatus::HW_ERROR);
                }
                if let Ok(w) = got {
                    let expect = if before.is_empty() { 0 } else { 1 << 59 };
                    let moved_aside = before.iter().any(|(_, g)| g.bus_offset == expect);
                    assert!(w.start == expect || moved_aside, "{w:?} after {before:?}");
                }
            }
            Op::Remove { slot } => {
                let was_active = self.geometry(slot).is_some() && slot < 2;
                let got = self
                    .m
                    .iommu
                    .rtas_remove_pe_dma_window(&mut self.m.mem, liobn(slot));
                assert_eq!(got.is_ok(), was_active, "{got:?}");
            }
            Op::RtasReset => {
                self.m
                    .iommu
                    .rtas_reset_pe_dma_window(&mut self.m.mem, BUID)
                    .unwrap();
                self.check_default_only();
            }
            Op::MachineReset => {
                let moves = self.moves();
                let held = self.vfio.is_some() && self.geometry(0).is_some();
                self.m.iommu.reset(&mut self.m.mem).unwrap();
                self.check_default_only();
                if held {
                    assert_eq!(self.moves()[0], moves[0], "reset churned the default table");
                }
            }
            Op::AttachVfio => {
                if self.vfio.is_none() {
                    self.vfio = Some(self.m.attach_mirror());
                }
            }
            Op::DetachVfio { replay } => {
                if let Some((id, _)) = self.vfio.take() {
                    let mode = if replay {
                        Unregister::Replay
                    } else {
                        Unregister::Detach
                    };
                    self.m.mem.unregister_listener(id, mode).unwrap();
                }
            }
        }
    }

    fn moves(&self) -> Vec<usize> {
        [DEFAULT, SECOND]
            .iter()
            .map(|l| self.m.iommu.table(*l).unwrap().moves())
            .collect()
    }

    fn check_default_only(&self) {
        let phb = &self.m.iommu.phbs()[0];
        let active = phb.active_windows();
        assert_eq!(active.len(), 1);
        assert_eq!(active[0].0, DEFAULT);
        assert_eq!(active[0].1, PhbConfig::new(0).default_window());
        assert!(phb.table(DEFAULT).unwrap().entries().is_empty());
    }

    /// The invariants that hold after every step.
    fn check(&self) {
        let phb = &self.m.iommu.phbs()[0];
        let active = phb.active_windows();
        assert!(active.len() <= 2);
        if let [(_, a), (_, b)] = active.as_slice() {
            assert!(!a.overlaps(b), "{a:?} overlaps {b:?}");
        }
        let view = self.m.mem.view(phb.address_space()).unwrap();
        for l in [DEFAULT, SECOND] {
            let table = phb.table(l).unwrap();
            let region = phb.iommu_region(l).unwrap();
            let in_tree = self.m.mem.region(region).unwrap().parent().is_some();
            assert!(table.move_log().iter().all(|mv| mv.preserved()));
            let Some(g) = table.geometry() else {
                assert!(!in_tree);
                assert!(table.entries().is_empty());
                assert_eq!(table.placement(), Placement::Kvm);
                continue;
            };
            assert!(in_tree);
            assert_eq!(view.lookup(g.bus_offset).map(|r| r.region), Some(region));
            let held = self.vfio.is_some();
            let want = if held {
                Placement::Userspace
            } else {
                Placement::Kvm
            };
            assert_eq!(table.placement(), want);
            assert_eq!(self.m.mem.iommu_usage(region).unwrap(), (held as u32, held));
            for (_, tce) in table.valid_entries() {
                let end = tce.page_addr(g.page_shift) as u128 + g.page_size() as u128;
                assert!(end <= RAM as u128, "{tce} points outside RAM");
            }
            let mut indices: BTreeSet<u64> = table.entries().iter().map(|(i, _)| *i).collect();
            indices.extend(
                self.touched
                    .iter()
                    .filter(|(t, _)| *t == l)
                    .map(|(_, i)| *i),
            );
            indices.extend([0, g.entries - 1, g.entries]);
            for index in indices {
                self.check_entry(l, g, index);
            }
        }
        if let Some((_, mirror)) = &self.vfio {
            assert_eq!(mirror.mappings(), self.m.expected_mappings());
        }
    }

    /// translate() and H_GET_TCE agree on entry `index` of window `g`.
    fn check_entry(&self, l: Liobn, g: WindowGeometry, index: u64) {
        let table = self.m.iommu.table(l).unwrap();
        let Some(ioba) = index
            .checked_mul(g.page_size())
            .and_then(|off| g.bus_offset.checked_add(off))
        else {
            return;
        };
        let entry = table.translate(g.iova_of(index), IommuPerm::NONE);
        let got = self.m.iommu.h_get_tce(l, ioba);
        if index >= g.entries {
            assert!(matches!(got, Err(HcallError::OutsideWindow { .. })));
            assert_eq!(entry.perm, IommuPerm::NONE);
            return;
        }
        let tce = got.unwrap();
        assert_eq!(entry.iova, g.iova_of(index));
        assert_eq!(entry.translated_addr, tce.page_addr(g.page_shift));
        assert_eq!(entry.perm, tce.perm());
        assert_eq!(entry.addr_mask, g.page_size() - 1);
        assert_eq!(entry.target, Some(self.m.guest));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn hypercalls_rtas_and_resets_keep_the_model_consistent(
        ops in prop::collection::vec(op(), 1..40)
    ) {
        let mut run = Run {
            m: Machine::new(PhbConfig::new(0)),
            vfio: None,
            touched: BTreeSet::new(),
        };
        run.check();
        for op in &ops {
            run.apply(op);
            run.check();
        }
    }
}
