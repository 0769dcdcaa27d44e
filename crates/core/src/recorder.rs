//! A listener that writes down everything it is told.
//!
//! Useful to debug a machine (the `addrspace` command prints its log) and
//! to test listener contracts: several recorders can share one [`EventLog`]
//! so the interleaving of listeners is visible.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::flatview::FlatRange;
use crate::id::AddressSpaceId;
use crate::ioevent::{FlatCoalesced, FlatIoeventfd};
use crate::listener::{Listener, ListenerCx, ListenerResult, Section};
use crate::region::DirtyLogMask;

/// One callback as a recorder saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `begin`.
    Begin,
    /// `commit`.
    Commit,
    /// `region_add` (also logged when refused).
    RegionAdd(FlatRange),
    /// `region_del`.
    RegionDel(FlatRange),
    /// `region_nop`.
    RegionNop(FlatRange),
    /// `log_start`.
    LogStart(FlatRange, DirtyLogMask, DirtyLogMask),
    /// `log_stop`.
    LogStop(FlatRange, DirtyLogMask, DirtyLogMask),
    /// `log_sync`.
    LogSync(FlatRange),
    /// `log_global_start`.
    LogGlobalStart,
    /// `log_global_stop`.
    LogGlobalStop,
    /// `eventfd_add`: address, size, data match.
    EventfdAdd(u64, u64, Option<u64>),
    /// `eventfd_del`.
    EventfdDel(u64, u64, Option<u64>),
    /// `coalesced_io_add`.
    CoalescedAdd(FlatCoalesced),
    /// `coalesced_io_del`.
    CoalescedDel(FlatCoalesced),
}

impl Event {
    /// The callback's name.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Begin => "begin",
            Event::Commit => "commit",
            Event::RegionAdd(_) => "region_add",
            Event::RegionDel(_) => "region_del",
            Event::RegionNop(_) => "region_nop",
            Event::LogStart(..) => "log_start",
            Event::LogStop(..) => "log_stop",
            Event::LogSync(_) => "log_sync",
            Event::LogGlobalStart => "log_global_start",
            Event::LogGlobalStop => "log_global_stop",
            Event::EventfdAdd(..) => "eventfd_add",
            Event::EventfdDel(..) => "eventfd_del",
            Event::CoalescedAdd(_) => "coalesced_io_add",
            Event::CoalescedDel(_) => "coalesced_io_del",
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let range = |f: &mut fmt::Formatter<'_>, r: &FlatRange| {
            write!(
                f,
                " {:016x}-{:016x} {} @{:#x}",
                r.start, r.last, r.region, r.offset_in_region
            )?;
            if r.readonly {
                f.write_str(" ro")?;
            }
            Ok(())
        };
        f.write_str(self.name())?;
        match self {
            Event::RegionAdd(r) | Event::RegionDel(r) | Event::RegionNop(r) | Event::LogSync(r) => {
                range(f, r)
            }
            Event::LogStart(r, o, n) | Event::LogStop(r, o, n) => {
                range(f, r)?;
                write!(f, " mask {:#x}->{:#x}", o.0, n.0)
            }
            Event::EventfdAdd(a, s, d) | Event::EventfdDel(a, s, d) => {
                write!(f, " {a:#x} size {s}")?;
                match d {
                    Some(d) => write!(f, " data {d:#x}"),
                    None => Ok(()),
                }
            }
            Event::CoalescedAdd(c) | Event::CoalescedDel(c) => {
                write!(f, " {:#x} size {:#x}", c.addr, c.size)
            }
            _ => Ok(()),
        }
    }
}

/// One logged callback: who heard it, on which address space, what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The recorder's name.
    pub listener: String,
    /// The address space of the call.
    pub address_space: AddressSpaceId,
    /// The callback.
    pub event: Event,
}

/// A log shared by recorders.
#[derive(Debug, Clone, Default)]
pub struct EventLog(Arc<Mutex<Vec<Entry>>>);

impl EventLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }
    /// Takes every entry out of the log.
    pub fn take(&self) -> Vec<Entry> {
        std::mem::take(&mut self.0.lock())
    }
    /// A copy of the entries.
    pub fn entries(&self) -> Vec<Entry> {
        self.0.lock().clone()
    }
    /// The events heard by `listener`, in order.
    pub fn events_of(&self, listener: &str) -> Vec<Event> {
        self.0
            .lock()
            .iter()
            .filter(|e| e.listener == listener)
            .map(|e| e.event.clone())
            .collect()
    }
    fn push(&self, listener: &str, address_space: AddressSpaceId, event: Event) {
        self.0.lock().push(Entry {
            listener: listener.to_owned(),
            address_space,
            event,
        });
    }
}

type Refusal = Arc<dyn Fn(&Event) -> bool + Send + Sync>;

/// A listener that logs every callback into an [`EventLog`], and can be
/// told to refuse some `region_add` / `eventfd_add` / `log_global_start`
/// calls.
pub struct Recorder {
    name: String,
    log: EventLog,
    refuse: Option<Refusal>,
}

impl fmt::Debug for Recorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recorder")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Recorder {
    /// A recorder named `name` writing to `log`.
    pub fn new(name: impl Into<String>, log: &EventLog) -> Self {
        Recorder {
            name: name.into(),
            log: log.clone(),
            refuse: None,
        }
    }

    /// Refuse every fallible callback for which `refuse` returns true.
    pub fn refusing(mut self, refuse: impl Fn(&Event) -> bool + Send + Sync + 'static) -> Self {
        self.refuse = Some(Arc::new(refuse));
        self
    }

    fn record(&self, cx: &ListenerCx<'_>, event: Event) {
        self.log.push(&self.name, cx.address_space(), event);
    }

    fn fallible(&self, cx: &ListenerCx<'_>, event: Event) -> ListenerResult {
        let refuse = self.refuse.as_ref().is_some_and(|f| f(&event));
        let what = event.to_string();
        self.record(cx, event);
        if refuse {
            Err(format!("{} refuses {what}", self.name).into())
        } else {
            Ok(())
        }
    }
}

impl Listener for Recorder {
    fn begin(&mut self, cx: &mut ListenerCx<'_>) {
        self.record(cx, Event::Begin)
    }
    fn commit(&mut self, cx: &mut ListenerCx<'_>) {
        self.record(cx, Event::Commit)
    }
    fn region_add(&mut self, cx: &mut ListenerCx<'_>, s: &Section) -> ListenerResult {
        self.fallible(cx, Event::RegionAdd(s.range))
    }
    fn region_del(&mut self, cx: &mut ListenerCx<'_>, s: &Section) {
        self.record(cx, Event::RegionDel(s.range))
    }
    fn region_nop(&mut self, cx: &mut ListenerCx<'_>, s: &Section) {
        self.record(cx, Event::RegionNop(s.range))
    }
    fn log_start(
        &mut self,
        cx: &mut ListenerCx<'_>,
        s: &Section,
        old: DirtyLogMask,
        new: DirtyLogMask,
    ) {
        self.record(cx, Event::LogStart(s.range, old, new))
    }
    fn log_stop(
        &mut self,
        cx: &mut ListenerCx<'_>,
        s: &Section,
        old: DirtyLogMask,
        new: DirtyLogMask,
    ) {
        self.record(cx, Event::LogStop(s.range, old, new))
    }
    fn log_sync(&mut self, cx: &mut ListenerCx<'_>, s: &Section) {
        self.record(cx, Event::LogSync(s.range))
    }
    fn log_global_start(&mut self, cx: &mut ListenerCx<'_>) -> ListenerResult {
        self.fallible(cx, Event::LogGlobalStart)
    }
    fn log_global_stop(&mut self, cx: &mut ListenerCx<'_>) {
        self.record(cx, Event::LogGlobalStop)
    }
    fn eventfd_add(&mut self, cx: &mut ListenerCx<'_>, fd: &FlatIoeventfd) -> ListenerResult {
        self.fallible(cx, Event::EventfdAdd(fd.addr, fd.fd.size, fd.fd.datamatch))
    }
    fn eventfd_del(&mut self, cx: &mut ListenerCx<'_>, fd: &FlatIoeventfd) {
        self.record(cx, Event::EventfdDel(fd.addr, fd.fd.size, fd.fd.datamatch))
    }
    fn coalesced_io_add(&mut self, cx: &mut ListenerCx<'_>, c: &FlatCoalesced) {
        self.record(cx, Event::CoalescedAdd(*c))
    }
    fn coalesced_io_del(&mut self, cx: &mut ListenerCx<'_>, c: &FlatCoalesced) {
        self.record(cx, Event::CoalescedDel(*c))
    }
}

/// What a listener holds after hearing `events`: every range added and not
/// deleted since, keyed by start. Panics if the stream adds a range twice
/// or deletes one it never added, which would break the contract.
pub fn holdings(events: &[Event]) -> BTreeMap<u64, FlatRange> {
    let mut held = BTreeMap::new();
    for e in events {
        match e {
            Event::RegionAdd(r) => {
                let prev = held.insert(r.start, *r);
                assert!(prev.is_none(), "range added twice: {r:?}");
            }
            Event::RegionDel(r) => {
                let prev = held.remove(&r.start);
                assert!(
                    prev.is_some_and(|p| p.same_mapping(r)),
                    "deleted a range that was not held: {r:?}"
                );
            }
            _ => {}
        }
    }
    held
}
