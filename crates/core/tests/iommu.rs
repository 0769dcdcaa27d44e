//! IOMMU regions: usage counters and their hooks, notifiers, replay.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use addrspace_core::recorder::{Event, EventLog, Recorder};
use addrspace_core::{
    AddressSpaceId, Error, HookError, IommuEvent, IommuEventKind, IommuNotify, IommuOps, IommuPerm,
    IommuTlbEntry, Listener, ListenerConfig, ListenerCx, ListenerResult, Memory, NotifierFlags,
    NotifierId, RegionId, Section, Unregister, SIZE_2_64,
};
use parking_lot::Mutex;

const PAGE: u64 = 0x1000;

/// A test IOMMU: a page table, a hook log, and a switch to fail starts.
#[derive(Default)]
struct Table {
    pages: Mutex<BTreeMap<u64, (u64, IommuPerm)>>,
    hooks: Mutex<Vec<String>>,
    fail_start: AtomicBool,
    fail_stop: AtomicBool,
}

impl IommuOps for Table {
    fn translate(&self, addr: u64, _access: IommuPerm) -> IommuTlbEntry {
        let page = addr & !(PAGE - 1);
        let (to, perm) = self
            .pages
            .lock()
            .get(&page)
            .copied()
            .unwrap_or((0, IommuPerm::NONE));
        IommuTlbEntry {
            iova: page,
            translated_addr: to,
            addr_mask: PAGE - 1,
            perm,
            target: None,
        }
    }
    fn min_page_size(&self) -> u64 {
        PAGE
    }
    fn vfio_start(&self) -> Result<(), HookError> {
        if self.fail_start.load(Ordering::Relaxed) {
            self.hooks.lock().push("start failed".into());
            return Err("table cannot move".into());
        }
        self.hooks.lock().push("start".into());
        Ok(())
    }
    fn vfio_stop(&self) -> Result<(), HookError> {
        self.hooks.lock().push("stop".into());
        if self.fail_stop.load(Ordering::Relaxed) {
            return Err("table cannot move back".into());
        }
        Ok(())
    }
    fn notify_flags_changed(
        &self,
        old: NotifierFlags,
        new: NotifierFlags,
    ) -> Result<(), HookError> {
        self.hooks.lock().push(format!(
            "flags {}{}->{}{}",
            old.map as u8, old.unmap as u8, new.map as u8, new.unmap as u8
        ));
        Ok(())
    }
}

impl Table {
    fn hooks(&self) -> Vec<String> {
        self.hooks
            .lock()
            .iter()
            .filter(|h| !h.starts_with("flags"))
            .cloned()
            .collect()
    }
}

struct Machine {
    mem: Memory,
    root: RegionId,
    iommu: RegionId,
    table: Arc<Table>,
    space: AddressSpaceId,
}

/// A PHB-like DMA space: a root container with one 1 MiB IOMMU window.
fn machine() -> Machine {
    let mut mem = Memory::new();
    let root = mem.create_container("dma-root", SIZE_2_64).unwrap();
    let table = Arc::new(Table::default());
    let iommu = mem
        .create_iommu("tce-window", 0x10_0000, table.clone())
        .unwrap();
    mem.add_subregion(root, 0, iommu).unwrap();
    let space = mem.create_address_space("dma", root).unwrap();
    Machine {
        mem,
        root,
        iommu,
        table,
        space,
    }
}

fn user(m: &mut Machine, name: &str, log: &EventLog) -> addrspace_core::ListenerId {
    let config = ListenerConfig::new(name).iommu_user();
    m.mem
        .register_listener(m.space, config, Box::new(Recorder::new(name, log)))
        .unwrap()
}

#[test]
fn first_user_starts() {
    let mut m = machine();
    assert_eq!(m.mem.iommu_usage(m.iommu).unwrap(), (0, false));
    user(&mut m, "vfio", &EventLog::new());
    assert_eq!(m.mem.iommu_usage(m.iommu).unwrap(), (1, true));
    assert_eq!(m.table.hooks(), vec!["start"]);
}

#[test]
fn plain_listeners_do_not_count() {
    let mut m = machine();
    let log = EventLog::new();
    m.mem
        .register_listener(
            m.space,
            ListenerConfig::new("kvm"),
            Box::new(Recorder::new("kvm", &log)),
        )
        .unwrap();
    assert_eq!(m.mem.iommu_usage(m.iommu).unwrap(), (0, false));
    assert!(m.table.hooks().is_empty());
}

#[test]
fn last_user_stops() {
    let mut m = machine();
    let id = user(&mut m, "vfio", &EventLog::new());
    m.mem.unregister_listener(id, Unregister::Replay).unwrap();
    assert_eq!(m.mem.iommu_usage(m.iommu).unwrap(), (0, false));
    assert_eq!(m.table.hooks(), vec!["start", "stop"]);
}

#[test]
fn delete_and_add_in_one_transaction_fires_nothing() {
    let mut m = machine();
    let log = EventLog::new();
    user(&mut m, "vfio", &log);
    m.mem.begin();
    m.mem.del_subregion(m.root, m.iommu).unwrap();
    m.mem.add_subregion(m.root, 0, m.iommu).unwrap();
    m.mem.set_enabled(m.iommu, false).unwrap();
    m.mem.set_enabled(m.iommu, true).unwrap();
    m.mem.commit().unwrap();
    assert_eq!(m.table.hooks(), vec!["start"]);
    assert_eq!(m.mem.iommu_usage(m.iommu).unwrap(), (1, true));
}

#[test]
fn moved_window_is_deleted_and_added_without_churn() {
    let mut m = machine();
    let log = EventLog::new();
    user(&mut m, "vfio", &log);
    log.take();
    m.mem.set_address(m.iommu, 0x4000_0000).unwrap();
    let names: Vec<&str> = log.take().iter().map(|e| e.event.name()).collect();
    assert_eq!(names, vec!["begin", "region_del", "region_add", "commit"]);
    assert_eq!(m.table.hooks(), vec!["start"]);
}

#[test]
fn two_users_start_once_and_stop_once() {
    let mut m = machine();
    let log = EventLog::new();
    let a = user(&mut m, "vfio-a", &log);
    let b = user(&mut m, "vfio-b", &log);
    assert_eq!(m.mem.iommu_usage(m.iommu).unwrap(), (2, true));
    m.mem.unregister_listener(a, Unregister::Replay).unwrap();
    assert_eq!(m.table.hooks(), vec!["start"]);
    m.mem.unregister_listener(b, Unregister::Replay).unwrap();
    assert_eq!(m.table.hooks(), vec!["start", "stop"]);
}

#[test]
fn sections_in_several_address_spaces_count_together() {
    let mut m = machine();
    let other_root = m.mem.create_container("other", SIZE_2_64).unwrap();
    let alias = m
        .mem
        .create_alias("window-view", m.iommu, 0, 0x10_0000)
        .unwrap();
    m.mem.add_subregion(other_root, 0x8000_0000, alias).unwrap();
    let other = m.mem.create_address_space("other", other_root).unwrap();
    let log = EventLog::new();
    user(&mut m, "vfio-a", &log);
    m.mem
        .register_listener(
            other,
            ListenerConfig::new("vfio-b").iommu_user(),
            Box::new(Recorder::new("b", &log)),
        )
        .unwrap();
    assert_eq!(m.mem.iommu_usage(m.iommu).unwrap(), (2, true));
    m.mem.del_subregion(m.root, m.iommu).unwrap();
    assert_eq!(m.mem.iommu_usage(m.iommu).unwrap(), (1, true));
    m.mem.del_subregion(other_root, alias).unwrap();
    assert_eq!(m.mem.iommu_usage(m.iommu).unwrap(), (0, false));
    assert_eq!(m.table.hooks(), vec!["start", "stop"]);
}

#[test]
fn detach_mode_teardown_stops_without_events() {
    let mut m = machine();
    let log = EventLog::new();
    let id = user(&mut m, "vfio", &log);
    log.take();
    m.mem.unregister_listener(id, Unregister::Detach).unwrap();
    assert!(log.entries().is_empty());
    assert_eq!(m.mem.iommu_usage(m.iommu).unwrap(), (0, false));
    assert_eq!(m.table.hooks(), vec!["start", "stop"]);
}

#[test]
fn detach_of_a_listener_that_refused_the_window_counts_nothing_down() {
    let mut m = machine();
    let log = EventLog::new();
    user(&mut m, "holder", &log);
    let picky = Recorder::new("picky", &log).refusing(|e| matches!(e, Event::RegionAdd(_)));
    let err = m.mem.register_listener(
        m.space,
        ListenerConfig::new("picky").iommu_user(),
        Box::new(picky),
    );
    assert!(matches!(err, Err(Error::ListenerRefused { .. })));
    assert_eq!(m.mem.iommu_usage(m.iommu).unwrap(), (1, true));
}

#[test]
fn address_space_destruction_stops() {
    let mut m = machine();
    user(&mut m, "vfio", &EventLog::new());
    let listeners = m.mem.destroy_address_space(m.space).unwrap();
    assert_eq!(listeners.len(), 1);
    assert_eq!(m.mem.iommu_usage(m.iommu).unwrap(), (0, false));
    assert_eq!(m.table.hooks(), vec!["start", "stop"]);
}

#[test]
fn failed_start_during_registration_undoes_it() {
    let mut m = machine();
    m.table.fail_start.store(true, Ordering::Relaxed);
    let log = EventLog::new();
    let err = m
        .mem
        .register_listener(
            m.space,
            ListenerConfig::new("vfio").iommu_user(),
            Box::new(Recorder::new("vfio", &log)),
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::IommuHook {
                hook: "vfio_start",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(m.mem.iommu_usage(m.iommu).unwrap(), (0, false));
    assert!(m.mem.listeners_of(m.space).unwrap().is_empty());
    assert!(addrspace_core::recorder::holdings(&log.events_of("vfio")).is_empty());
    assert_eq!(m.table.hooks(), vec!["start failed"]);
}

#[test]
fn failed_start_in_a_commit_withdraws_the_window_from_iommu_users() {
    let mut m = machine();
    let log = EventLog::new();
    m.mem.del_subregion(m.root, m.iommu).unwrap();
    user(&mut m, "vfio", &log);
    m.mem
        .register_listener(
            m.space,
            ListenerConfig::new("kvm"),
            Box::new(Recorder::new("kvm", &log)),
        )
        .unwrap();
    m.table.fail_start.store(true, Ordering::Relaxed);
    log.take();
    let err = m.mem.add_subregion(m.root, 0, m.iommu).unwrap_err();
    assert!(matches!(
        err,
        Error::IommuHook {
            hook: "vfio_start",
            ..
        }
    ));
    // The IOMMU user got the window and had it taken back in the same
    // commit; the plain listener keeps it.
    let vfio: Vec<&str> = log.events_of("vfio").iter().map(|e| e.name()).collect();
    assert_eq!(vfio, vec!["begin", "region_add", "region_del", "commit"]);
    assert_eq!(
        addrspace_core::recorder::holdings(&log.events_of("kvm")).len(),
        1
    );
    assert_eq!(m.mem.iommu_usage(m.iommu).unwrap(), (0, false));
    // Later deletion is not sent to the listener that no longer holds it.
    m.mem.del_subregion(m.root, m.iommu).unwrap();
    assert!(!log
        .events_of("vfio")
        .iter()
        .skip(4)
        .any(|e| e.name() == "region_del"));
    assert_eq!(m.table.hooks(), vec!["start failed"]);
}

#[derive(Default)]
struct Heard(Mutex<Vec<IommuEvent>>);
impl IommuNotify for Heard {
    fn notify(&self, event: &IommuEvent) {
        self.0.lock().push(*event);
    }
}

#[test]
fn notify_crops_to_each_notifier_and_filters_by_flags() {
    let mut m = machine();
    let low = Arc::new(Heard::default());
    let high_unmap = Arc::new(Heard::default());
    m.mem
        .register_iommu_notifier(m.iommu, NotifierFlags::ALL, 0, 0x7fff, low.clone())
        .unwrap();
    m.mem
        .register_iommu_notifier(
            m.iommu,
            NotifierFlags::UNMAP,
            0x8000,
            0xf_ffff,
            high_unmap.clone(),
        )
        .unwrap();
    let map = IommuEvent {
        kind: IommuEventKind::Map,
        iova: 0x6000,
        size: 0x4000,
        translated_addr: 0x100_0000,
        perm: IommuPerm::RW,
        target: None,
    };
    assert_eq!(m.mem.iommu_notify(m.iommu, &map).unwrap(), 1);
    assert_eq!(
        m.mem
            .iommu_notify(m.iommu, &IommuEvent::unmap(0x6000, 0x4000))
            .unwrap(),
        2
    );
    let l = low.0.lock();
    assert_eq!(
        (l[0].iova, l[0].size, l[0].translated_addr),
        (0x6000, 0x2000, 0x100_0000)
    );
    assert_eq!(
        (l[1].kind, l[1].iova, l[1].size),
        (IommuEventKind::Unmap, 0x6000, 0x2000)
    );
    let h = high_unmap.0.lock();
    assert_eq!(h.len(), 1);
    assert_eq!((h[0].iova, h[0].size), (0x8000, 0x2000));
}

#[test]
fn flags_change_hook_sees_the_union() {
    let mut m = machine();
    let a = m
        .mem
        .register_iommu_notifier(
            m.iommu,
            NotifierFlags::MAP,
            0,
            0xfff,
            Arc::new(Heard::default()),
        )
        .unwrap();
    let b = m
        .mem
        .register_iommu_notifier(
            m.iommu,
            NotifierFlags::UNMAP,
            0,
            0xfff,
            Arc::new(Heard::default()),
        )
        .unwrap();
    m.mem.unregister_iommu_notifier(a).unwrap();
    m.mem.unregister_iommu_notifier(b).unwrap();
    let flags: Vec<String> = m.table.hooks.lock().clone();
    assert_eq!(
        flags,
        vec![
            "flags 00->10",
            "flags 10->11",
            "flags 11->01",
            "flags 01->00"
        ]
    );
    assert_eq!(
        m.mem.iommu_notifier_flags(m.iommu).unwrap(),
        NotifierFlags::NONE
    );
}

#[test]
fn replay_walks_translate_when_the_model_has_no_replay() {
    let mut m = machine();
    m.table.pages.lock().insert(0x2000, (0x9000, IommuPerm::RO));
    m.table.pages.lock().insert(0x5000, (0xa000, IommuPerm::RW));
    let heard = Arc::new(Heard::default());
    let id = m
        .mem
        .register_iommu_notifier(m.iommu, NotifierFlags::ALL, 0x1000, 0x4fff, heard.clone())
        .unwrap();
    assert_eq!(m.mem.replay_iommu_notifier(id).unwrap(), 1);
    let h = heard.0.lock();
    assert_eq!(
        (h[0].iova, h[0].translated_addr, h[0].perm),
        (0x2000, 0x9000, IommuPerm::RO)
    );
}

/// A VFIO-like listener: on region_add of an IOMMU section it registers a
/// notifier over the section and replays; on region_del it unregisters.
struct Container {
    heard: Arc<Heard>,
    notifiers: BTreeMap<u64, NotifierId>,
}

impl Listener for Container {
    fn region_add(&mut self, cx: &mut ListenerCx<'_>, s: &Section) -> ListenerResult {
        if s.kind != addrspace_core::KindTag::Iommu {
            return Ok(());
        }
        let last = s.offset_in_region() + (s.size() - 1) as u64;
        let id = cx.register_iommu_notifier(
            s.region(),
            NotifierFlags::ALL,
            s.offset_in_region(),
            last,
            self.heard.clone(),
        )?;
        cx.replay_iommu_notifier(id)?;
        self.notifiers.insert(s.start(), id);
        Ok(())
    }
    fn region_del(&mut self, cx: &mut ListenerCx<'_>, s: &Section) {
        if let Some(id) = self.notifiers.remove(&s.start()) {
            cx.unregister_iommu_notifier(id).unwrap();
        }
    }
}

#[test]
fn listener_registers_notifiers_from_inside_callbacks() {
    let mut m = machine();
    m.table.pages.lock().insert(0x3000, (0x7000, IommuPerm::RW));
    let heard = Arc::new(Heard::default());
    let c = Container {
        heard: heard.clone(),
        notifiers: BTreeMap::new(),
    };
    let id = m
        .mem
        .register_listener(
            m.space,
            ListenerConfig::new("vfio").iommu_user(),
            Box::new(c),
        )
        .unwrap();
    assert_eq!(heard.0.lock().len(), 1, "replayed the existing mapping");
    assert_eq!(
        m.mem.iommu_notifier_flags(m.iommu).unwrap(),
        NotifierFlags::ALL
    );
    m.mem.unregister_listener(id, Unregister::Replay).unwrap();
    assert_eq!(
        m.mem.iommu_notifier_flags(m.iommu).unwrap(),
        NotifierFlags::NONE
    );
    assert_eq!(m.table.hooks(), vec!["start", "stop"]);
}

#[test]
fn notifier_bad_input_is_refused_and_changes_nothing() {
    let mut m = machine();
    let ram = m.mem.create_ram("ram", 0x1000).unwrap();
    let h = || -> Arc<dyn IommuNotify> { Arc::new(Heard::default()) };
    assert_eq!(
        m.mem
            .register_iommu_notifier(m.iommu, NotifierFlags::NONE, 0, 0xfff, h()),
        Err(Error::EmptyNotifierFlags { region: m.iommu })
    );
    assert!(matches!(
        m.mem
            .register_iommu_notifier(m.iommu, NotifierFlags::MAP, 0x2000, 0x1000, h()),
        Err(Error::BadNotifierRange {
            start: 0x2000,
            last: 0x1000,
            ..
        })
    ));
    assert!(matches!(
        m.mem
            .register_iommu_notifier(m.iommu, NotifierFlags::MAP, 0, 0x10_0000, h()),
        Err(Error::BadNotifierRange {
            region_size: 0x10_0000,
            ..
        })
    ));
    assert_eq!(
        m.mem
            .register_iommu_notifier(ram, NotifierFlags::MAP, 0, 0xfff, h()),
        Err(Error::NotAnIommu { region: ram })
    );
    assert_eq!(
        m.mem.iommu_notify(ram, &IommuEvent::unmap(0, 0x1000)),
        Err(Error::NotAnIommu { region: ram })
    );
    assert_eq!(
        m.mem.iommu_notifier_flags(m.iommu).unwrap(),
        NotifierFlags::NONE
    );
    assert!(m.table.hooks.lock().is_empty());
}

#[test]
fn region_with_notifiers_cannot_be_destroyed() {
    let mut m = machine();
    let id = m
        .mem
        .register_iommu_notifier(
            m.iommu,
            NotifierFlags::MAP,
            0,
            0xfff,
            Arc::new(Heard::default()),
        )
        .unwrap();
    m.mem.del_subregion(m.root, m.iommu).unwrap();
    assert!(matches!(
        m.mem.destroy_region(m.iommu),
        Err(Error::RegionInUse { .. })
    ));
    m.mem.unregister_iommu_notifier(id).unwrap();
    m.mem.destroy_region(m.iommu).unwrap();
    assert_eq!(
        m.mem.unregister_iommu_notifier(id),
        Err(Error::StaleNotifier(id))
    );
}

#[test]
fn failed_stop_while_unregistering_still_hands_the_listener_back_stopped() {
    let mut m = machine();
    let id = user(&mut m, "vfio", &EventLog::new());
    m.table.fail_stop.store(true, Ordering::Relaxed);
    let listener = m.mem.unregister_listener(id, Unregister::Replay);
    assert!(listener.is_ok());
    assert_eq!(m.mem.iommu_usage(m.iommu).unwrap(), (0, false));
    assert_eq!(m.table.hooks(), vec!["start", "stop"]);
}

#[test]
fn failed_stop_in_a_commit_is_reported_and_the_region_counts_as_stopped() {
    let mut m = machine();
    user(&mut m, "vfio", &EventLog::new());
    m.table.fail_stop.store(true, Ordering::Relaxed);
    let err = m.mem.del_subregion(m.root, m.iommu).unwrap_err();
    assert!(matches!(
        err,
        Error::IommuHook {
            hook: "vfio_stop",
            ..
        }
    ));
    assert_eq!(m.mem.iommu_usage(m.iommu).unwrap(), (0, false));
    m.table.fail_stop.store(false, Ordering::Relaxed);
    m.mem.add_subregion(m.root, 0, m.iommu).unwrap();
    assert_eq!(m.table.hooks(), vec!["start", "stop", "start"]);
}

#[test]
fn notifiers_of_a_detached_listener_go_with_it() {
    let mut m = machine();
    let c = Container {
        heard: Arc::new(Heard::default()),
        notifiers: BTreeMap::new(),
    };
    let id = m
        .mem
        .register_listener(
            m.space,
            ListenerConfig::new("vfio").iommu_user(),
            Box::new(c),
        )
        .unwrap();
    assert_eq!(
        m.mem.iommu_notifier_flags(m.iommu).unwrap(),
        NotifierFlags::ALL
    );
    m.mem.unregister_listener(id, Unregister::Detach).unwrap();
    assert_eq!(
        m.mem.iommu_notifier_flags(m.iommu).unwrap(),
        NotifierFlags::NONE
    );
    m.mem.del_subregion(m.root, m.iommu).unwrap();
    m.mem.destroy_region(m.iommu).unwrap();
}

#[test]
fn remapped_window_is_readded_without_stop_and_start() {
    let mut m = machine();
    let log = EventLog::new();
    user(&mut m, "vfio", &log);
    log.take();
    m.mem.remap(m.iommu).unwrap();
    let names: Vec<&str> = log.take().iter().map(|e| e.event.name()).collect();
    assert_eq!(names, vec!["begin", "region_del", "region_add", "commit"]);
    assert_eq!(m.table.hooks(), vec!["start"]);
    assert_eq!(m.mem.iommu_usage(m.iommu).unwrap(), (1, true));
}
