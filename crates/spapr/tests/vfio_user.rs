//! An IOMMU user (VFIO) on a PHB's DMA address space: table moves, the
//! notifications that follow them, and resets without churn.

mod common;

use std::sync::Arc;

use addrspace_core::{
    IommuEvent, IommuNotify, Listener, ListenerConfig, ListenerCx, ListenerResult, NotifierFlags,
    Section, Unregister,
};
use addrspace_spapr::{PhbConfig, Placement, RtasStatus, Tce};
use common::{Machine, BUID, DEFAULT, SECOND};
use parking_lot::Mutex;

fn fill(m: &Machine) {
    for i in 0..8u64 {
        let perm = [1, 2, 3][i as usize % 3];
        m.iommu
            .h_put_tce(
                &m.mem,
                DEFAULT,
                i * 0x3000,
                Tce((0x10_0000 + (i << 12)) | perm),
            )
            .unwrap();
    }
    m.iommu
        .h_put_tce(&m.mem, DEFAULT, 0x9_0000, Tce(0x5000))
        .unwrap();
}

#[test]
fn first_iommu_user_moves_the_table_to_userspace_preserving_every_entry() {
    let mut m = Machine::new(PhbConfig::new(0));
    fill(&m);
    let table = m.iommu.table(DEFAULT).unwrap().clone();
    let before = table.entries();

    let (_id, mirror) = m.attach_mirror();

    assert_eq!(table.placement(), Placement::Userspace);
    assert_eq!(table.moves(), 1);
    assert!(table.move_log()[0].preserved());
    assert_eq!(table.move_log()[0].entries_before, 9);
    assert_eq!(table.entries(), before);
    assert_eq!(m.mem.iommu_usage(m.region_of(DEFAULT)).unwrap(), (1, true));
    assert_eq!(mirror.mappings(), m.expected_mappings());
    assert_eq!(mirror.mappings().len(), 8);
}

#[test]
fn last_user_leaving_moves_the_table_back_to_kvm() {
    let mut m = Machine::new(PhbConfig::new(0));
    fill(&m);
    let table = m.iommu.table(DEFAULT).unwrap().clone();
    let before = table.entries();
    let (id, _mirror) = m.attach_mirror();

    m.mem.unregister_listener(id, Unregister::Replay).unwrap();

    assert_eq!(table.placement(), Placement::Kvm);
    assert_eq!(table.moves(), 2);
    assert!(table.move_log().iter().all(|mv| mv.preserved()));
    assert_eq!(table.entries(), before);
    assert_eq!(m.mem.iommu_usage(m.region_of(DEFAULT)).unwrap(), (0, false));
}

#[test]
fn detach_mode_unregistration_also_moves_the_table_back() {
    let mut m = Machine::new(PhbConfig::new(0));
    let (id, _mirror) = m.attach_mirror();

    m.mem.unregister_listener(id, Unregister::Detach).unwrap();

    assert_eq!(m.iommu.table(DEFAULT).unwrap().placement(), Placement::Kvm);
}

#[test]
fn without_move_back_the_table_stays_in_userspace() {
    let mut config = PhbConfig::new(0);
    config.move_back_on_stop = false;
    let mut m = Machine::new(config);
    let (id, _mirror) = m.attach_mirror();

    m.mem.unregister_listener(id, Unregister::Replay).unwrap();

    let table = m.iommu.table(DEFAULT).unwrap();
    assert_eq!(table.placement(), Placement::Userspace);
    assert_eq!(table.moves(), 1);
}

#[derive(Default)]
struct Count(Mutex<usize>);
impl IommuNotify for Count {
    fn notify(&self, _event: &IommuEvent) {
        *self.0.lock() += 1;
    }
}

#[test]
fn puts_reach_notifiers_only_once_the_table_is_in_userspace() {
    let mut m = Machine::new(PhbConfig::new(0));
    let plain = Arc::new(Count::default());
    let region = m.region_of(DEFAULT);
    m.mem
        .register_iommu_notifier(region, NotifierFlags::ALL, 0, 0x3fff_ffff, plain.clone())
        .unwrap();
    m.iommu
        .h_put_tce(&m.mem, DEFAULT, 0, Tce(0x1000 | 3))
        .unwrap();
    let heard_in_kvm = *plain.0.lock();

    let (_id, mirror) = m.attach_mirror();
    m.iommu
        .h_put_tce(&m.mem, DEFAULT, 0x1000, Tce(0x2000 | 1))
        .unwrap();
    m.iommu.h_stuff_tce(&m.mem, DEFAULT, 0, Tce(0), 1).unwrap();

    assert_eq!(heard_in_kvm, 0);
    assert_eq!(*plain.0.lock(), 2, "one MAP and one UNMAP after the move");
    assert_eq!(mirror.mappings(), m.expected_mappings());
    assert_eq!(mirror.mappings().len(), 1);
}

#[test]
fn reset_keeps_vfio_started_and_zeroes_the_table() {
    let mut m = Machine::new(PhbConfig::new(0));
    let (_id, mirror) = m.attach_mirror();
    fill(&m);
    mirror.take_events();
    let table = m.iommu.table(DEFAULT).unwrap().clone();

    m.iommu.reset(&mut m.mem).unwrap();

    assert_eq!(table.moves(), 1, "no stop/start churn");
    assert_eq!(table.placement(), Placement::Userspace);
    assert_eq!(m.mem.iommu_usage(m.region_of(DEFAULT)).unwrap(), (1, true));
    assert!(table.entries().is_empty());
    assert!(
        mirror.mappings().is_empty(),
        "the reset's UNMAPs reached VFIO"
    );
    assert!(mirror
        .take_events()
        .iter()
        .all(|e| e == "begin" || e == "commit"));
}

#[test]
fn reset_of_a_reshaped_slot_swaps_the_section_without_churn() {
    let mut m = Machine::new(PhbConfig::new(0));
    let (_id, mirror) = m.attach_mirror();
    m.iommu
        .rtas_remove_pe_dma_window(&mut m.mem, DEFAULT)
        .unwrap();
    m.iommu
        .rtas_create_pe_dma_window(&mut m.mem, BUID, 16, 31)
        .unwrap();
    m.iommu
        .h_put_tce(&m.mem, DEFAULT, 0x1_0000, Tce(0x1_0000 | 3))
        .unwrap();
    let table = m.iommu.table(DEFAULT).unwrap().clone();
    let moves = table.moves();
    mirror.take_events();

    let r = m.iommu.rtas_reset_pe_dma_window(&mut m.mem, BUID);

    assert_eq!(RtasStatus::of(&r), RtasStatus::SUCCESS);
    assert_eq!(table.moves(), moves);
    assert_eq!(table.geometry().unwrap().page_shift, 12);
    assert_eq!(
        mirror.take_events(),
        vec!["begin", "region_del 0x0", "region_add 0x0", "commit"]
    );
    assert!(mirror.mappings().is_empty());
}

#[test]
fn created_window_gets_its_own_vfio_start_and_stop() {
    let mut m = Machine::new(PhbConfig::new(0));
    let (_id, mirror) = m.attach_mirror();

    let w = m
        .iommu
        .rtas_create_pe_dma_window(&mut m.mem, BUID, 16, 32)
        .unwrap();
    m.iommu
        .h_put_tce(&m.mem, SECOND, w.start + 0x3_0000, Tce(0x8_0000 | 3))
        .unwrap();
    let second = m.iommu.table(SECOND).unwrap().clone();
    let while_held = (
        second.placement(),
        mirror.mappings() == m.expected_mappings(),
    );
    m.iommu
        .rtas_remove_pe_dma_window(&mut m.mem, SECOND)
        .unwrap();

    assert_eq!(while_held, (Placement::Userspace, true));
    assert_eq!(second.placement(), Placement::Kvm);
    assert_eq!(second.moves(), 2);
    assert_eq!(
        m.iommu.table(DEFAULT).unwrap().placement(),
        Placement::Userspace
    );
    assert_eq!(mirror.mappings(), m.expected_mappings());
}

/// An IOMMU user that cannot take windows at the 64-bit address.
struct Picky;
impl Listener for Picky {
    fn region_add(&mut self, _cx: &mut ListenerCx<'_>, s: &Section) -> ListenerResult {
        if s.start() == 1 << 59 {
            return Err("no host window there".into());
        }
        Ok(())
    }
}

#[test]
fn window_refused_by_a_consumer_is_taken_back() {
    let mut m = Machine::new(PhbConfig::new(0));
    m.mem
        .register_listener(
            m.dma_space(),
            ListenerConfig::new("picky").iommu_user(),
            Box::new(Picky),
        )
        .unwrap();

    let r = m.iommu.rtas_create_pe_dma_window(&mut m.mem, BUID, 16, 32);

    assert_eq!(RtasStatus::of(&r), RtasStatus::HW_ERROR);
    assert_eq!(m.iommu.phbs()[0].active_windows().len(), 1);
    assert!(m.iommu.table(SECOND).unwrap().geometry().is_none());
    let view = m.mem.view(m.dma_space()).unwrap();
    assert!(view.lookup(1 << 59).is_none());
    assert_eq!(m.mem.iommu_usage(m.region_of(SECOND)).unwrap(), (0, false));
}
