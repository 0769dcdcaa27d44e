//! One test per ordering rule of the listener contract.

use std::sync::Arc;

use crate::recorder::{Event, EventLog, Recorder};
use crate::{
    AddressSpaceId, DirtyClient, EventNotifier, Ioeventfd, ListenerConfig, Memory, NullOps,
    RegionId, Unregister, SIZE_2_64,
};

struct Machine {
    mem: Memory,
    root: RegionId,
    as_id: AddressSpaceId,
    log: EventLog,
}

fn machine() -> Machine {
    let mut mem = Memory::new();
    let root = mem.create_container("root", SIZE_2_64).unwrap();
    let as_id = mem.create_address_space("as", root).unwrap();
    Machine {
        mem,
        root,
        as_id,
        log: EventLog::new(),
    }
}

impl Machine {
    fn listen(&mut self, name: &str, priority: i32) {
        let config = ListenerConfig::new(name).priority(priority);
        let rec = Box::new(Recorder::new(name, &self.log));
        self.mem.register_listener(self.as_id, config, rec).unwrap();
    }

    fn ram(&mut self, name: &str, addr: u64, size: u128) -> RegionId {
        let r = self.mem.create_ram(name, size).unwrap();
        self.mem.add_subregion(self.root, addr, r).unwrap();
        r
    }

    /// `(listener, event name)` pairs, begin/commit included.
    fn names(&self) -> Vec<(String, &'static str)> {
        self.log
            .take()
            .into_iter()
            .map(|e| (e.listener, e.event.name()))
            .collect()
    }
}

fn pairs(v: &[(&str, &'static str)]) -> Vec<(String, &'static str)> {
    v.iter().map(|(l, e)| (l.to_string(), *e)).collect()
}

#[test]
fn registration_replays_current_view_in_address_order() {
    let mut m = machine();
    m.ram("hi", 0x10000, 0x1000);
    m.ram("lo", 0, 0x1000);
    m.listen("a", 0);
    let events = m.log.events_of("a");
    let starts: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            Event::RegionAdd(r) => Some(r.start),
            _ => None,
        })
        .collect();
    assert_eq!(events.first(), Some(&Event::Begin));
    assert_eq!(events.last(), Some(&Event::Commit));
    assert_eq!(starts, vec![0, 0x10000]);
}

#[test]
fn additions_go_in_ascending_priority() {
    let mut m = machine();
    m.listen("high", 10);
    m.listen("low", -5);
    m.log.take();
    m.ram("r", 0, 0x1000);
    assert_eq!(
        m.names(),
        pairs(&[
            ("low", "begin"),
            ("high", "begin"),
            ("low", "region_add"),
            ("high", "region_add"),
            ("low", "commit"),
            ("high", "commit"),
        ])
    );
}

#[test]
fn deletions_go_in_descending_priority() {
    let mut m = machine();
    let r = m.ram("r", 0, 0x1000);
    m.listen("high", 10);
    m.listen("low", -5);
    m.log.take();
    m.mem.del_subregion(m.root, r).unwrap();
    let dels: Vec<_> = m
        .names()
        .into_iter()
        .filter(|(_, e)| *e == "region_del")
        .collect();
    assert_eq!(
        dels,
        pairs(&[("high", "region_del"), ("low", "region_del")])
    );
}

#[test]
fn equal_priorities_keep_registration_order() {
    let mut m = machine();
    m.listen("first", 0);
    m.listen("second", 0);
    m.log.take();
    m.ram("r", 0, 0x1000);
    let adds: Vec<_> = m
        .names()
        .into_iter()
        .filter(|(_, e)| *e == "region_add")
        .collect();
    assert_eq!(
        adds,
        pairs(&[("first", "region_add"), ("second", "region_add")])
    );
}

#[test]
fn all_deletions_precede_all_additions() {
    let mut m = machine();
    let a = m.ram("a", 0x10000, 0x1000);
    m.listen("l", 0);
    m.log.take();
    m.mem.begin();
    m.ram("b", 0, 0x1000);
    m.mem.set_address(a, 0x20000).unwrap();
    m.mem.commit().unwrap();
    let kinds: Vec<&str> = m.names().into_iter().map(|(_, e)| e).collect();
    assert_eq!(
        kinds,
        vec!["begin", "region_del", "region_add", "region_add", "commit"]
    );
}

#[test]
fn attribute_change_is_delete_plus_add() {
    let mut m = machine();
    let r = m.ram("r", 0, 0x1000);
    m.listen("l", 0);
    m.log.take();
    m.mem.set_readonly(r, true).unwrap();
    let events = m.log.events_of("l");
    assert!(matches!(&events[1], Event::RegionDel(old) if !old.readonly));
    assert!(matches!(&events[2], Event::RegionAdd(new) if new.readonly));
}

#[test]
fn unchanged_ranges_get_nop_only_when_asked() {
    let mut m = machine();
    m.ram("a", 0, 0x1000);
    let config = ListenerConfig::new("nop").wants_nop();
    let rec = Box::new(Recorder::new("nop", &m.log));
    m.mem.register_listener(m.as_id, config, rec).unwrap();
    m.listen("plain", 0);
    m.log.take();
    m.ram("b", 0x10000, 0x1000);
    let nops: Vec<_> = m
        .names()
        .into_iter()
        .filter(|(_, e)| *e == "region_nop")
        .collect();
    assert_eq!(nops, pairs(&[("nop", "region_nop")]));
}

#[test]
fn dirty_log_change_is_log_start_not_a_new_range() {
    let mut m = machine();
    let r = m.ram("vga", 0, 0x1000);
    m.listen("l", 0);
    m.log.take();
    m.mem.set_log(r, DirtyClient::Vga, true).unwrap();
    let kinds: Vec<&str> = m.names().into_iter().map(|(_, e)| e).collect();
    assert_eq!(kinds, vec!["begin", "log_start", "commit"]);
    m.mem.set_log(r, DirtyClient::Vga, false).unwrap();
    let kinds: Vec<&str> = m.names().into_iter().map(|(_, e)| e).collect();
    assert_eq!(kinds, vec!["begin", "log_stop", "commit"]);
}

#[test]
fn logged_range_stops_logging_before_deletion_and_starts_after_addition() {
    let mut m = machine();
    let r = m.ram("vga", 0, 0x1000);
    m.mem.set_log(r, DirtyClient::Vga, true).unwrap();
    m.listen("l", 0);
    let kinds: Vec<&str> = m.names().into_iter().map(|(_, e)| e).collect();
    assert_eq!(kinds, vec!["begin", "region_add", "log_start", "commit"]);
    m.mem.set_address(r, 0x1000).unwrap();
    let kinds: Vec<&str> = m.names().into_iter().map(|(_, e)| e).collect();
    assert_eq!(
        kinds,
        vec![
            "begin",
            "log_stop",
            "region_del",
            "region_add",
            "log_start",
            "commit"
        ]
    );
}

#[test]
fn global_dirty_log_starts_listeners_then_logs_ram() {
    let mut m = machine();
    m.ram("ram", 0, 0x1000);
    m.listen("l", 0);
    m.log.take();
    m.mem.set_global_dirty_log(true).unwrap();
    let kinds: Vec<&str> = m.names().into_iter().map(|(_, e)| e).collect();
    assert_eq!(
        kinds,
        vec!["log_global_start", "begin", "log_start", "commit"]
    );
    m.mem.set_global_dirty_log(false).unwrap();
    let kinds: Vec<&str> = m.names().into_iter().map(|(_, e)| e).collect();
    assert_eq!(
        kinds,
        vec!["log_global_stop", "begin", "log_stop", "commit"]
    );
}

#[test]
fn refused_global_log_start_stops_the_started_and_changes_nothing() {
    let mut m = machine();
    m.ram("ram", 0, 0x1000);
    m.listen("ok", 0);
    let rec = Recorder::new("no", &m.log).refusing(|e| *e == Event::LogGlobalStart);
    m.mem
        .register_listener(
            m.as_id,
            ListenerConfig::new("no").priority(1),
            Box::new(rec),
        )
        .unwrap();
    m.log.take();
    assert!(m.mem.set_global_dirty_log(true).is_err());
    assert!(!m.mem.global_dirty_log());
    assert_eq!(
        m.names(),
        pairs(&[
            ("ok", "log_global_start"),
            ("no", "log_global_start"),
            ("ok", "log_global_stop")
        ])
    );
}

#[test]
fn log_sync_reaches_logged_ranges_only() {
    let mut m = machine();
    let vga = m.ram("vga", 0, 0x1000);
    m.ram("ram", 0x10000, 0x1000);
    m.mem.set_log(vga, DirtyClient::Vga, true).unwrap();
    m.listen("l", 0);
    m.log.take();
    m.mem.log_sync(m.as_id).unwrap();
    let events = m.log.events_of("l");
    assert_eq!(events.len(), 1);
    assert!(matches!(&events[0], Event::LogSync(r) if r.start == 0));
}

struct Counter;
impl EventNotifier for Counter {
    fn notify(&self) {}
}

#[test]
fn ioeventfds_follow_their_region_after_ranges() {
    let mut m = machine();
    let dev = m.mem.create_mmio("dev", 0x100, Arc::new(NullOps)).unwrap();
    let fd = Ioeventfd {
        addr: 0x10,
        size: 4,
        datamatch: Some(1),
        notifier: Arc::new(Counter),
    };
    m.mem.add_ioeventfd(dev, fd).unwrap();
    m.listen("l", 0);
    m.log.take();
    m.mem.add_subregion(m.root, 0x1000, dev).unwrap();
    let events = m.log.events_of("l");
    assert!(matches!(events[1], Event::RegionAdd(_)));
    assert_eq!(events[2], Event::EventfdAdd(0x1010, 4, Some(1)));
    m.log.take();
    m.mem.set_address(dev, 0x2000).unwrap();
    let events = m.log.events_of("l");
    let fds: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(e, Event::EventfdAdd(..) | Event::EventfdDel(..)))
        .collect();
    assert_eq!(
        fds,
        vec![
            &Event::EventfdDel(0x1010, 4, Some(1)),
            &Event::EventfdAdd(0x2010, 4, Some(1))
        ]
    );
}

#[test]
fn coalesced_ranges_come_after_eventfds() {
    let mut m = machine();
    let dev = m.mem.create_mmio("dev", 0x100, Arc::new(NullOps)).unwrap();
    m.mem.add_coalescing(dev, 0, 0x40).unwrap();
    m.listen("l", 0);
    m.log.take();
    m.mem.add_subregion(m.root, 0x1000, dev).unwrap();
    let kinds: Vec<&str> = m.names().into_iter().map(|(_, e)| e).collect();
    assert_eq!(
        kinds,
        vec!["begin", "region_add", "coalesced_io_add", "commit"]
    );
}

#[test]
fn nested_transaction_dispatches_once_at_outermost_commit() {
    let mut m = machine();
    m.listen("l", 0);
    m.log.take();
    m.mem.begin();
    m.mem.begin();
    m.ram("a", 0, 0x1000);
    m.mem.commit().unwrap();
    assert!(m.log.entries().is_empty());
    m.ram("b", 0x1000, 0x1000);
    m.mem.commit().unwrap();
    let kinds: Vec<&str> = m.names().into_iter().map(|(_, e)| e).collect();
    assert_eq!(kinds, vec!["begin", "region_add", "region_add", "commit"]);
}

#[test]
fn change_undone_within_a_transaction_sends_nothing() {
    let mut m = machine();
    let r = m.ram("a", 0, 0x1000);
    m.listen("l", 0);
    m.log.take();
    m.mem.begin();
    m.mem.set_enabled(r, false).unwrap();
    m.mem.set_enabled(r, true).unwrap();
    m.mem.commit().unwrap();
    assert!(m.log.entries().is_empty());
}

#[test]
fn replay_unregister_deletes_everything_held() {
    let mut m = machine();
    m.ram("a", 0, 0x1000);
    m.ram("b", 0x2000, 0x1000);
    let rec = Box::new(Recorder::new("l", &m.log));
    let id = m
        .mem
        .register_listener(m.as_id, ListenerConfig::new("l"), rec)
        .unwrap();
    m.mem.unregister_listener(id, Unregister::Replay).unwrap();
    let held = crate::recorder::holdings(&m.log.events_of("l"));
    assert!(held.is_empty());
    assert_eq!(m.mem.listeners_of(m.as_id).unwrap().len(), 0);
}

#[test]
fn detach_unregister_sends_nothing() {
    let mut m = machine();
    m.ram("a", 0, 0x1000);
    let rec = Box::new(Recorder::new("l", &m.log));
    let id = m
        .mem
        .register_listener(m.as_id, ListenerConfig::new("l"), rec)
        .unwrap();
    m.log.take();
    m.mem.unregister_listener(id, Unregister::Detach).unwrap();
    assert!(m.log.entries().is_empty());
    assert!(m.mem.listener_config(id).is_err());
}

#[test]
fn refused_region_add_is_never_deleted_and_commit_reports_it() {
    let mut m = machine();
    m.listen("ok", 0);
    let rec = Recorder::new("picky", &m.log)
        .refusing(|e| matches!(e, Event::RegionAdd(r) if r.start == 0x1000));
    m.mem
        .register_listener(m.as_id, ListenerConfig::new("picky"), Box::new(rec))
        .unwrap();
    let err = {
        let r = m.mem.create_ram("r", 0x1000).unwrap();
        let e = m.mem.add_subregion(m.root, 0x1000, r).unwrap_err();
        m.mem.del_subregion(m.root, r).unwrap();
        e
    };
    assert!(
        matches!(err, crate::Error::ListenerRefused { ref failures } if failures[0].name == "picky")
    );
    let picky = m.log.events_of("picky");
    assert!(!picky.iter().any(|e| matches!(e, Event::RegionDel(_))));
    let ok = m.log.events_of("ok");
    assert!(ok.iter().any(|e| matches!(e, Event::RegionDel(_))));
}

#[test]
fn refused_registration_takes_back_what_was_accepted() {
    let mut m = machine();
    m.ram("a", 0, 0x1000);
    m.ram("b", 0x2000, 0x1000);
    let rec = Recorder::new("picky", &m.log)
        .refusing(|e| matches!(e, Event::RegionAdd(r) if r.start == 0x2000));
    let err = m
        .mem
        .register_listener(m.as_id, ListenerConfig::new("picky"), Box::new(rec))
        .unwrap_err();
    assert!(matches!(err, crate::Error::ListenerRefused { .. }));
    let events = m.log.events_of("picky");
    let accepted_then_deleted = events
        .iter()
        .filter(|e| matches!(e, Event::RegionDel(r) if r.start == 0))
        .count();
    assert_eq!(accepted_then_deleted, 1);
    assert!(m.mem.listeners_of(m.as_id).unwrap().is_empty());
}

#[test]
fn begin_and_commit_reach_listeners_of_unchanged_spaces() {
    let mut m = machine();
    let other_root = m.mem.create_container("other", 0x1000).unwrap();
    let other = m.mem.create_address_space("other", other_root).unwrap();
    let rec = Box::new(Recorder::new("bystander", &m.log));
    m.mem
        .register_listener(other, ListenerConfig::new("bystander"), rec)
        .unwrap();
    m.log.take();
    m.ram("a", 0, 0x1000);
    assert_eq!(
        m.log.events_of("bystander"),
        vec![Event::Begin, Event::Commit]
    );
}

#[test]
fn remap_sends_the_same_place_as_a_new_section() {
    let mut m = machine();
    let r = m.ram("r", 0x1000, 0x1000);
    m.listen("l", 0);
    m.log.take();
    m.mem.remap(r).unwrap();
    let events = m.log.events_of("l");
    assert!(matches!(&events[1], Event::RegionDel(old) if old.start == 0x1000 && old.epoch == 0));
    assert!(matches!(&events[2], Event::RegionAdd(new) if new.start == 0x1000 && new.epoch == 1));
}
