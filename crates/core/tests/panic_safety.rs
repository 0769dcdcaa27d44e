//! The panic contract: a listener that panics in any callback is detached
//! where it panicked, its holdings are released, the operation finishes
//! for the tree and every other listener, and the caller gets
//! `Error::ListenerPanicked`. Each machine here runs beside a twin built
//! the same way without the panicking listener; after every operation the
//! two must agree on views, on what the other listeners heard, and (once
//! the panicking listener is gone) on IOMMU usage, hooks and notifiers.

use std::panic::{self, PanicHookInfo};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Once};

use addrspace_core::recorder::{holdings, EventLog, Recorder};
use addrspace_core::{
    AddressSpaceId, DirtyClient, Error, EventNotifier, HookError, Ioeventfd, IommuEvent,
    IommuNotify, IommuOps, IommuPerm, IommuTlbEntry, KindTag, Listener, ListenerConfig, ListenerCx,
    ListenerPanic, ListenerResult, Memory, NotifierFlags, NullOps, RegionId, Section, Unregister,
};
use addrspace_core::{DirtyLogMask, FlatCoalesced, FlatIoeventfd, FlatRange};
use parking_lot::Mutex;
use proptest::prelude::*;

/// Every panic these tests provoke says "boom"; the default hook stays for
/// everything else (a failing assertion must still print).
fn quiet_booms() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info: &PanicHookInfo<'_>| {
            let msg = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied())
                .unwrap_or("");
            if !msg.starts_with("boom") {
                default(info);
            }
        }));
    });
}

/// Every callback a listener has.
const CALLBACKS: [&str; 14] = [
    "begin",
    "commit",
    "region_add",
    "region_del",
    "region_nop",
    "log_start",
    "log_stop",
    "log_sync",
    "log_global_start",
    "log_global_stop",
    "eventfd_add",
    "eventfd_del",
    "coalesced_io_add",
    "coalesced_io_del",
];

/// When the bomb goes off: at the `skip`-th next call of `callback`, once
/// armed.
#[derive(Default)]
struct Trigger {
    armed: bool,
    callback: &'static str,
    skip: usize,
    fired: u32,
    /// Calls after it fired: the contract says there are none.
    called_after: u32,
}

/// A recorder that panics when its trigger says so, and registers an IOMMU
/// notifier for every IOMMU section it is given (to check that those go
/// with it).
struct Bomb {
    rec: Recorder,
    trigger: Arc<Mutex<Trigger>>,
}

impl Bomb {
    fn tick(&self, callback: &'static str) {
        let mut t = self.trigger.lock();
        if t.fired > 0 {
            t.called_after += 1;
        }
        if !t.armed || t.callback != callback {
            return;
        }
        if t.skip > 0 {
            t.skip -= 1;
            return;
        }
        t.armed = false;
        t.fired += 1;
        drop(t);
        panic!("boom in {callback}");
    }
}

struct Quiet;
impl IommuNotify for Quiet {
    fn notify(&self, _event: &IommuEvent) {}
}

impl Listener for Bomb {
    fn begin(&mut self, cx: &mut ListenerCx<'_>) {
        self.tick("begin");
        self.rec.begin(cx)
    }
    fn commit(&mut self, cx: &mut ListenerCx<'_>) {
        self.tick("commit");
        self.rec.commit(cx)
    }
    fn region_add(&mut self, cx: &mut ListenerCx<'_>, s: &Section) -> ListenerResult {
        self.tick("region_add");
        if s.kind == KindTag::Iommu {
            let size = cx.region(s.region()).unwrap().size();
            cx.register_iommu_notifier(
                s.region(),
                NotifierFlags::MAP,
                0,
                (size - 1) as u64,
                Arc::new(Quiet),
            )?;
        }
        self.rec.region_add(cx, s)
    }
    fn region_del(&mut self, cx: &mut ListenerCx<'_>, s: &Section) {
        self.tick("region_del");
        self.rec.region_del(cx, s)
    }
    fn region_nop(&mut self, cx: &mut ListenerCx<'_>, s: &Section) {
        self.tick("region_nop");
        self.rec.region_nop(cx, s)
    }
    fn log_start(
        &mut self,
        cx: &mut ListenerCx<'_>,
        s: &Section,
        old: DirtyLogMask,
        new: DirtyLogMask,
    ) {
        self.tick("log_start");
        self.rec.log_start(cx, s, old, new)
    }
    fn log_stop(
        &mut self,
        cx: &mut ListenerCx<'_>,
        s: &Section,
        old: DirtyLogMask,
        new: DirtyLogMask,
    ) {
        self.tick("log_stop");
        self.rec.log_stop(cx, s, old, new)
    }
    fn log_sync(&mut self, cx: &mut ListenerCx<'_>, s: &Section) {
        self.tick("log_sync");
        self.rec.log_sync(cx, s)
    }
    fn log_global_start(&mut self, cx: &mut ListenerCx<'_>) -> ListenerResult {
        self.tick("log_global_start");
        self.rec.log_global_start(cx)
    }
    fn log_global_stop(&mut self, cx: &mut ListenerCx<'_>) {
        self.tick("log_global_stop");
        self.rec.log_global_stop(cx)
    }
    fn eventfd_add(&mut self, cx: &mut ListenerCx<'_>, fd: &FlatIoeventfd) -> ListenerResult {
        self.tick("eventfd_add");
        self.rec.eventfd_add(cx, fd)
    }
    fn eventfd_del(&mut self, cx: &mut ListenerCx<'_>, fd: &FlatIoeventfd) {
        self.tick("eventfd_del");
        self.rec.eventfd_del(cx, fd)
    }
    fn coalesced_io_add(&mut self, cx: &mut ListenerCx<'_>, c: &FlatCoalesced) {
        self.tick("coalesced_io_add");
        self.rec.coalesced_io_add(cx, c)
    }
    fn coalesced_io_del(&mut self, cx: &mut ListenerCx<'_>, c: &FlatCoalesced) {
        self.tick("coalesced_io_del");
        self.rec.coalesced_io_del(cx, c)
    }
}

/// An IOMMU that logs its start/stop hooks and can be told to panic in
/// them.
#[derive(Default)]
struct Table {
    hooks: Mutex<Vec<&'static str>>,
    panic_start: std::sync::atomic::AtomicBool,
    panic_stop: std::sync::atomic::AtomicBool,
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
        self.hooks.lock().push("start");
        if self.panic_start.load(Ordering::Relaxed) {
            panic!("boom in vfio_start");
        }
        Ok(())
    }
    fn vfio_stop(&self) -> Result<(), HookError> {
        self.hooks.lock().push("stop");
        if self.panic_stop.load(Ordering::Relaxed) {
            panic!("boom in vfio_stop");
        }
        Ok(())
    }
}

struct Fd;
impl EventNotifier for Fd {
    fn notify(&self) {}
}

/// Where the bomb sits among the other two listeners (priorities -1, 1).
#[derive(Debug, Clone, Copy)]
enum Position {
    First,
    Middle,
    Last,
}

impl Position {
    fn priority(self) -> i32 {
        match self {
            Position::First => -2,
            Position::Middle => 0,
            Position::Last => 2,
        }
    }
}

struct Machine {
    mem: Memory,
    as_id: AddressSpaceId,
    root: RegionId,
    ram1: RegionId,
    dev: RegionId,
    iommu: RegionId,
    ram2: Option<RegionId>,
    fd: Ioeventfd,
    table: Arc<Table>,
    log: EventLog,
    trigger: Arc<Mutex<Trigger>>,
}

fn listener_config(name: &str, priority: i32) -> ListenerConfig {
    ListenerConfig::new(name)
        .priority(priority)
        .iommu_user()
        .wants_nop()
}

/// RAM, a device with an ioeventfd and a coalesced range, an IOMMU window,
/// two recording IOMMU-user listeners "a" and "z", and the bomb (unarmed)
/// if `bomb` says where.
fn machine(bomb: Option<Position>) -> Machine {
    let mut mem = Memory::new();
    let root = mem.create_container("root", 1 << 40).unwrap();
    let as_id = mem.create_address_space("sys", root).unwrap();
    let ram0 = mem.create_ram("ram0", 0x1000).unwrap();
    mem.add_subregion(root, 0, ram0).unwrap();
    let ram1 = mem.create_ram("ram1", 0x2000).unwrap();
    mem.add_subregion(root, 0x10000, ram1).unwrap();
    let dev = mem.create_mmio("dev", 0x1000, Arc::new(NullOps)).unwrap();
    mem.add_subregion(root, 0x20000, dev).unwrap();
    let fd = Ioeventfd {
        addr: 0x10,
        size: 4,
        datamatch: None,
        notifier: Arc::new(Fd),
    };
    mem.add_ioeventfd(dev, fd.clone()).unwrap();
    mem.add_coalescing(dev, 0x100, 0x100).unwrap();
    let table = Arc::new(Table::default());
    let iommu = mem.create_iommu("iommu", 0x10000, table.clone()).unwrap();
    mem.add_subregion(root, 0x100000, iommu).unwrap();
    let log = EventLog::new();
    for (name, priority) in [("a", -1), ("z", 1)] {
        let rec = Box::new(Recorder::new(name, &log));
        mem.register_listener(as_id, listener_config(name, priority), rec)
            .unwrap();
    }
    let trigger = Arc::new(Mutex::new(Trigger::default()));
    if let Some(pos) = bomb {
        let bomb = Box::new(Bomb {
            rec: Recorder::new("bomb", &log),
            trigger: trigger.clone(),
        });
        mem.register_listener(as_id, listener_config("bomb", pos.priority()), bomb)
            .unwrap();
    }
    Machine {
        mem,
        as_id,
        root,
        ram1,
        dev,
        iommu,
        ram2: None,
        fd,
        table,
        log,
        trigger,
    }
}

/// The operations the scripts are made of; each toggles something, so any
/// sequence of them is valid.
const OPS: usize = 9;

fn op(m: &mut Machine, which: usize) -> Result<(), Error> {
    let mem = &mut m.mem;
    match which {
        0 => match m.ram2.take() {
            Some(r) => {
                // A panic report means the removal was applied: go on.
                let removed = mem.del_subregion(m.root, r);
                if removed.is_err() && !matches!(removed, Err(Error::ListenerPanicked { .. })) {
                    return removed;
                }
                mem.destroy_region(r).and(removed)
            }
            None => {
                let r = mem.create_ram("ram2", 0x1000)?;
                m.ram2 = Some(r);
                mem.add_subregion(m.root, 0x30000, r)
            }
        },
        1 => {
            let at = if mem.region(m.ram1)?.addr() == 0x10000 {
                0x40000
            } else {
                0x10000
            };
            mem.set_address(m.ram1, at)
        }
        2 => {
            let on = mem
                .region(m.ram1)?
                .dirty_log_mask()
                .contains(DirtyClient::Vga);
            mem.set_log(m.ram1, DirtyClient::Vga, !on)
        }
        3 => {
            if mem.region(m.dev)?.ioeventfds().is_empty() {
                mem.add_ioeventfd(m.dev, m.fd.clone())
            } else {
                mem.del_ioeventfd(m.dev, &m.fd)
            }
        }
        4 => {
            if mem.region(m.dev)?.coalesced().is_empty() {
                mem.add_coalescing(m.dev, 0x100, 0x100)
            } else {
                mem.clear_coalescing(m.dev)
            }
        }
        5 => {
            let on = mem.region(m.iommu)?.enabled();
            mem.set_enabled(m.iommu, !on)
        }
        6 => {
            let on = mem.global_dirty_log();
            mem.set_global_dirty_log(!on)
        }
        7 => mem.log_sync(m.as_id),
        8 => {
            // Nested transactions: only the outermost commit dispatches.
            mem.begin();
            let moved = op(m, 1).and_then(|()| op(m, 2));
            m.mem.begin();
            let inner = op(m, 5).and_then(|()| op(m, 0));
            let inner_commit = m.mem.commit();
            let outer_commit = m.mem.commit();
            moved.and(inner).and(inner_commit).and(outer_commit)
        }
        _ => unreachable!("{which} is not an op"),
    }
}

/// What a machine shows: views, the other listeners' events, IOMMU usage,
/// start/stop hooks, notifier flags.
fn assert_agree(m: &Machine, twin: &Machine, bomb_gone: bool, ctx: &str) {
    assert_eq!(
        dbg(m.mem.view(m.as_id).unwrap()),
        dbg(twin.mem.view(twin.as_id).unwrap()),
        "{ctx}: views differ"
    );
    for name in ["a", "z"] {
        let (got, want) = (m.log.events_of(name), twin.log.events_of(name));
        let same = got
            .iter()
            .zip(&want)
            .take_while(|(g, w)| dbg(g) == dbg(w))
            .count();
        assert_eq!(
            dbg(&got[same..]),
            dbg(&want[same..]),
            "{ctx}: {name} heard something else after {same} events"
        );
    }
    assert_eq!(
        *m.table.hooks.lock(),
        *twin.table.hooks.lock(),
        "{ctx}: start/stop hooks differ"
    );
    if bomb_gone {
        assert_eq!(
            dbg(m.mem.iommu_usage(m.iommu)),
            dbg(twin.mem.iommu_usage(twin.iommu)),
            "{ctx}: IOMMU usage differs"
        );
        assert_eq!(
            m.mem.iommu_notifier_flags(m.iommu).unwrap(),
            NotifierFlags::NONE,
            "{ctx}: the bomb's notifier stayed"
        );
        assert_eq!(m.mem.listeners_of(m.as_id).unwrap().len(), 2, "{ctx}");
    }
}

/// Handles of two `Memory`s never compare equal; their printed forms do
/// when they name the same things.
fn dbg(x: impl std::fmt::Debug) -> String {
    format!("{x:?}")
}

/// A range's place and mapping (its dirty-log mask changes in place).
fn place(r: &FlatRange) -> (u64, u64, RegionId, u64) {
    (r.start, r.last, r.region, r.offset_in_region)
}

/// What `name` holds, by [`place`].
fn held(m: &Machine, name: &str) -> Vec<(u64, u64, RegionId, u64)> {
    holdings(&m.log.events_of(name))
        .values()
        .map(place)
        .collect()
}

/// Holdings equal the view, for the listeners that stayed.
fn assert_symmetric(m: &Machine) {
    let view = m.mem.view(m.as_id).unwrap();
    let want: Vec<_> = view.ranges.iter().map(place).collect();
    for name in ["a", "z"] {
        assert_eq!(
            held(m, name),
            want,
            "{name} holds something other than the view"
        );
    }
}

/// Runs `script` on a machine with the bomb at `pos`, armed for the
/// `skip`-th call of `callback`, and on its twin; checks after every
/// operation. Returns the panic reported, if the bomb went off.
fn run(
    script: &[usize],
    callback: &'static str,
    pos: Position,
    skip: usize,
) -> Option<ListenerPanic> {
    quiet_booms();
    let mut m = machine(Some(pos));
    let mut twin = machine(None);
    {
        let mut t = m.trigger.lock();
        t.armed = true;
        t.callback = callback;
        t.skip = skip;
    }
    let mut seen = None;
    for (i, &which) in script.iter().enumerate() {
        let ctx = format!("{callback} at {pos:?} skip {skip}, op #{i} ({which})");
        let got = op(&mut m, which);
        let want = op(&mut twin, which);
        match got {
            Err(Error::ListenerPanicked { panics, other }) => {
                assert!(seen.is_none(), "{ctx}: a second panic");
                assert_eq!(panics.len(), 1, "{ctx}");
                let p = panics.into_iter().next().unwrap();
                assert_eq!(p.name, "bomb", "{ctx}");
                assert_eq!(p.callback, callback, "{ctx}");
                assert_eq!(p.message, format!("boom in {callback}"), "{ctx}");
                assert_eq!(dbg(other.map(|e| *e)), dbg(want.err()), "{ctx}");
                assert_eq!(
                    m.mem.listener_config(p.listener).unwrap_err(),
                    Error::StaleListener(p.listener),
                    "{ctx}: the listener is still registered"
                );
                seen = Some(p);
            }
            got => assert_eq!(dbg(got), dbg(want), "{ctx}"),
        }
        assert_agree(&m, &twin, seen.is_some(), &ctx);
    }
    assert_eq!(m.trigger.lock().fired, seen.is_some() as u32);
    assert_eq!(m.trigger.lock().called_after, 0, "called after its panic");
    m.trigger.lock().armed = false;
    assert_symmetric(&m);
    // The machine goes on working: a few more operations agree.
    for which in 0..OPS {
        assert_eq!(dbg(op(&mut m, which)), dbg(op(&mut twin, which)));
    }
    assert_agree(&m, &twin, seen.is_some(), "after the script");
    assert_symmetric(&m);
    seen
}

/// Every operation, four times over: every callback is called at least
/// twice after arming.
fn full_script() -> Vec<usize> {
    (0..4).flat_map(|_| 0..OPS).collect()
}

#[test]
fn a_panic_in_any_callback_at_any_position_detaches_only_that_listener() {
    let script = full_script();
    for callback in CALLBACKS {
        for pos in [Position::First, Position::Middle, Position::Last] {
            for skip in 0..2 {
                let p = run(&script, callback, pos, skip);
                assert!(
                    p.is_some(),
                    "{callback} at {pos:?} skip {skip}: the script never got there"
                );
            }
        }
    }
}

#[test]
fn a_listener_that_never_panics_changes_nothing() {
    assert!(run(&full_script(), "region_add", Position::Middle, usize::MAX).is_none());
}

#[test]
fn a_panic_during_registration_leaves_no_trace() {
    quiet_booms();
    for (callback, skip) in [
        ("begin", 0),
        ("region_add", 3),
        ("eventfd_add", 0),
        ("commit", 0),
    ] {
        // Alone: the IOMMU window is used by nobody, so nothing may start.
        let mut mem = Memory::new();
        let root = mem.create_container("root", 1 << 40).unwrap();
        let as_id = mem.create_address_space("sys", root).unwrap();
        let table = Arc::new(Table::default());
        for (i, name) in ["r0", "r1", "r2"].iter().enumerate() {
            let r = mem.create_ram(name, 0x1000).unwrap();
            mem.add_subregion(root, i as u64 * 0x10000, r).unwrap();
        }
        let iommu = mem.create_iommu("iommu", 0x10000, table.clone()).unwrap();
        mem.add_subregion(root, 0x100000, iommu).unwrap();
        let dev = mem.create_mmio("dev", 0x1000, Arc::new(NullOps)).unwrap();
        mem.add_subregion(root, 0x200000, dev).unwrap();
        let fd = Ioeventfd {
            addr: 0,
            size: 4,
            datamatch: None,
            notifier: Arc::new(Fd),
        };
        mem.add_ioeventfd(dev, fd).unwrap();
        let log = EventLog::new();
        let trigger = Arc::new(Mutex::new(Trigger {
            armed: true,
            callback,
            skip,
            ..Trigger::default()
        }));
        let bomb = Box::new(Bomb {
            rec: Recorder::new("bomb", &log),
            trigger: trigger.clone(),
        });
        let view = mem.view(as_id).unwrap();
        let err = mem
            .register_listener(as_id, listener_config("bomb", 0), bomb)
            .unwrap_err();
        let Error::ListenerPanicked { panics, other } = err else {
            panic!("{callback}: {err:?}");
        };
        assert_eq!(panics[0].callback, callback);
        assert_eq!(other, None);
        assert_eq!(trigger.lock().fired, 1);
        assert!(mem.listeners_of(as_id).unwrap().is_empty(), "{callback}");
        assert_eq!(mem.iommu_usage(iommu).unwrap(), (0, false), "{callback}");
        assert!(table.hooks.lock().is_empty(), "{callback}: hooks ran");
        assert_eq!(
            mem.iommu_notifier_flags(iommu).unwrap(),
            NotifierFlags::NONE
        );
        assert_eq!(mem.view(as_id).unwrap(), view);
        // It works on: a well-behaved listener registers and holds the view.
        let rec = Box::new(Recorder::new("ok", &log));
        mem.register_listener(as_id, listener_config("ok", 0), rec)
            .unwrap();
        assert_eq!(mem.iommu_usage(iommu).unwrap(), (1, true));
        let held: Vec<_> = holdings(&log.events_of("ok")).into_values().collect();
        assert_eq!(held, view.ranges.iter().copied().collect::<Vec<_>>());
    }
}

#[test]
fn a_panic_during_replay_unregistration_still_unregisters_and_releases() {
    quiet_booms();
    for pos in [Position::First, Position::Last] {
        let mut m = machine(Some(pos));
        let twin = machine(None);
        let bomb = *m
            .mem
            .listeners_of(m.as_id)
            .unwrap()
            .iter()
            .find(|l| m.mem.listener_config(**l).unwrap().name == "bomb")
            .unwrap();
        assert_eq!(m.mem.iommu_usage(m.iommu).unwrap(), (3, true));
        {
            let mut t = m.trigger.lock();
            t.armed = true;
            t.callback = "region_del";
            t.skip = 1;
        }
        let err = m
            .mem
            .unregister_listener(bomb, Unregister::Replay)
            .err()
            .unwrap();
        assert!(
            matches!(&err, Error::ListenerPanicked { panics, .. } if panics[0].callback == "region_del")
        );
        assert_agree(&m, &twin, true, "unregistered");
        assert_eq!(m.mem.iommu_usage(m.iommu).unwrap(), (2, true));
        // Both others leave too: the window stops exactly once.
        for l in m.mem.listeners_of(m.as_id).unwrap().to_vec() {
            m.mem.unregister_listener(l, Unregister::Replay).unwrap();
        }
        assert_eq!(*m.table.hooks.lock(), ["start", "stop"]);
        assert_eq!(m.mem.iommu_usage(m.iommu).unwrap(), (0, false));
    }
}

#[test]
fn the_last_user_panicking_stops_the_window_once() {
    quiet_booms();
    // Only the bomb uses the window: detaching it must fire vfio_stop.
    let mut m = machine(Some(Position::Middle));
    for l in m.mem.listeners_of(m.as_id).unwrap().to_vec() {
        if m.mem.listener_config(l).unwrap().name != "bomb" {
            m.mem.unregister_listener(l, Unregister::Detach).unwrap();
        }
    }
    assert_eq!(*m.table.hooks.lock(), ["start"]);
    assert_eq!(m.mem.iommu_usage(m.iommu).unwrap(), (1, true));
    {
        let mut t = m.trigger.lock();
        t.armed = true;
        t.callback = "begin";
    }
    let err = op(&mut m, 0).unwrap_err();
    assert!(matches!(err, Error::ListenerPanicked { .. }), "{err:?}");
    assert_eq!(*m.table.hooks.lock(), ["start", "stop"]);
    assert_eq!(m.mem.iommu_usage(m.iommu).unwrap(), (0, false));
    assert_eq!(
        m.mem.iommu_notifier_flags(m.iommu).unwrap(),
        NotifierFlags::NONE
    );
    // The change itself was applied.
    assert!(m.mem.view(m.as_id).unwrap().lookup(0x30000).is_some());
}

#[test]
fn destroying_an_address_space_finishes_despite_a_panic() {
    quiet_booms();
    let mut m = machine(Some(Position::Middle));
    {
        let mut t = m.trigger.lock();
        t.armed = true;
        t.callback = "region_del";
    }
    let err = m.mem.destroy_address_space(m.as_id).err().unwrap();
    assert!(matches!(err, Error::ListenerPanicked { ref panics, .. } if panics.len() == 1));
    assert_eq!(m.mem.address_spaces().count(), 0);
    assert_eq!(m.mem.iommu_usage(m.iommu).unwrap(), (0, false));
    assert_eq!(*m.table.hooks.lock(), ["start", "stop"]);
    for name in ["a", "z"] {
        assert!(holdings(&m.log.events_of(name)).is_empty(), "{name}");
    }
}

#[test]
fn a_panicking_vfio_start_is_a_failed_start() {
    quiet_booms();
    let mut m = machine(None);
    op(&mut m, 5).unwrap(); // window off: stopped
    assert_eq!(m.mem.iommu_usage(m.iommu).unwrap(), (0, false));
    m.table.panic_start.store(true, Ordering::Relaxed);
    let err = op(&mut m, 5).unwrap_err();
    assert_eq!(
        err,
        Error::IommuHook {
            region: m.iommu,
            hook: "vfio_start",
            message: "panicked: boom in vfio_start".into()
        }
    );
    // Withdrawn from the IOMMU users, as any failed start.
    assert_eq!(m.mem.iommu_usage(m.iommu).unwrap(), (0, false));
    assert_symmetric_without_iommu(&m);
    m.table.panic_start.store(false, Ordering::Relaxed);
    op(&mut m, 5).unwrap();
    op(&mut m, 5).unwrap();
    assert_eq!(m.mem.iommu_usage(m.iommu).unwrap(), (2, true));
}

/// After a failed start the listeners hold the view minus the window.
fn assert_symmetric_without_iommu(m: &Machine) {
    let view = m.mem.view(m.as_id).unwrap();
    let want: Vec<_> = view
        .ranges
        .iter()
        .filter(|r| r.region != m.iommu)
        .map(place)
        .collect();
    for name in ["a", "z"] {
        assert_eq!(held(m, name), want, "{name}");
    }
}

#[test]
fn a_panicking_vfio_stop_still_stops() {
    quiet_booms();
    let mut m = machine(None);
    m.table.panic_stop.store(true, Ordering::Relaxed);
    let err = op(&mut m, 5).unwrap_err();
    assert!(
        matches!(&err, Error::IommuHook { hook: "vfio_stop", message, .. } if message.contains("boom")),
        "{err:?}"
    );
    assert_eq!(m.mem.iommu_usage(m.iommu).unwrap(), (0, false));
    m.table.panic_stop.store(false, Ordering::Relaxed);
    op(&mut m, 5).unwrap();
    assert_eq!(*m.table.hooks.lock(), ["start", "stop", "start"]);
}

struct Counter(AtomicUsize, bool);
impl IommuNotify for Counter {
    fn notify(&self, _event: &IommuEvent) {
        self.0.fetch_add(1, Ordering::Relaxed);
        if self.1 {
            panic!("boom in notify");
        }
    }
}

#[test]
fn a_panicking_notifier_does_not_keep_the_event_from_the_others() {
    quiet_booms();
    let mut m = machine(None);
    let bad = Arc::new(Counter(AtomicUsize::new(0), true));
    let good = Arc::new(Counter(AtomicUsize::new(0), false));
    let bad_id = m
        .mem
        .register_iommu_notifier(m.iommu, NotifierFlags::ALL, 0, 0xffff, bad.clone())
        .unwrap();
    m.mem
        .register_iommu_notifier(m.iommu, NotifierFlags::ALL, 0, 0xffff, good.clone())
        .unwrap();
    let err = m
        .mem
        .iommu_notify(m.iommu, &IommuEvent::unmap(0, 0x1000))
        .unwrap_err();
    assert_eq!(
        err,
        Error::NotifierPanicked {
            notifier: bad_id,
            message: "boom in notify".into()
        }
    );
    assert_eq!(bad.0.load(Ordering::Relaxed), 1);
    assert_eq!(good.0.load(Ordering::Relaxed), 1);
    // Its owner takes it away; the rest works on.
    m.mem.unregister_iommu_notifier(bad_id).unwrap();
    assert_eq!(
        m.mem
            .iommu_notify(m.iommu, &IommuEvent::unmap(0, 0x1000))
            .unwrap(),
        1
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Random scripts, a bomb at a random callback, position and call.
    #[test]
    fn random_scripts_with_a_random_panic(
        script in proptest::collection::vec(0..OPS, 1..24),
        callback in proptest::sample::select(CALLBACKS.to_vec()),
        pos in prop_oneof![Just(Position::First), Just(Position::Middle), Just(Position::Last)],
        skip in 0usize..4,
    ) {
        run(&script, callback, pos, skip);
    }
}
