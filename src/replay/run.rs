//! Running replay scripts: a tracing listener on every address space,
//! one step at a time.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use addrspace_core::{
    FlatCoalesced, FlatIoeventfd, Listener, ListenerConfig, ListenerCx, ListenerResult, Memory,
    NullOps, RegionId, Section,
};
use addrspace_spapr::PhbConfig;
use addrspace_vfio::Ioctl;

use super::{Command, Expect, NewKind, Script, Step, Target};
use crate::describe::{RangeInfo, RangeKind};
use crate::pseries::{Machine, MachineConfig};

/// One callback a listener heard, described.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventInfo {
    /// The address space's name.
    pub address_space: String,
    /// The callback (`region_add`, `region_del`, `log_start`, ...).
    pub event: &'static str,
    /// The range, for range callbacks.
    pub range: Option<RangeInfo>,
    /// Anything else the callback carried (dirty masks, eventfd data).
    pub detail: Option<String>,
}

impl fmt::Display for EventInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<16} {:<11}", self.address_space, self.event)?;
        if let Some(r) = &self.range {
            write!(f, " {r}")?;
        }
        if let Some(d) = &self.detail {
            write!(f, " {d}")?;
        }
        Ok(())
    }
}

type Log = Arc<Mutex<Vec<EventInfo>>>;

/// The log, even if a panicking thread poisoned it (entries are only
/// pushed, so what is there is whole).
fn lock(log: &Log) -> MutexGuard<'_, Vec<EventInfo>> {
    log.lock().unwrap_or_else(|e| e.into_inner())
}

/// The listener of a replay: describes each callback while the regions
/// it names still exist.
struct Tracer {
    space: String,
    log: Log,
}

impl Tracer {
    fn push(&self, event: &'static str, range: Option<RangeInfo>, detail: Option<String>) {
        lock(&self.log).push(EventInfo {
            address_space: self.space.clone(),
            event,
            range,
            detail,
        });
    }

    fn section(
        &self,
        cx: &ListenerCx<'_>,
        event: &'static str,
        s: &Section,
        detail: Option<String>,
    ) {
        let r = &s.range;
        let (region, kind) = match cx.region(r.region) {
            Some(reg) => (
                reg.name().to_owned(),
                RangeKind::of(reg.kind(), reg.readonly()).unwrap_or(RangeKind::Mmio),
            ),
            None => (format!("{}", r.region), RangeKind::Mmio),
        };
        let info = RangeInfo {
            start: r.start,
            last: r.last,
            region,
            kind,
            offset: r.offset_in_region,
            readonly: r.readonly,
            nonvolatile: r.nonvolatile,
            romd_mode: r.romd_mode,
            via_alias: None,
        };
        self.push(event, Some(info), detail);
    }

    fn fd(&self, event: &'static str, fd: &FlatIoeventfd) {
        let mut d = format!("{:#x} size {}", fd.addr, fd.fd.size);
        if let Some(data) = fd.fd.datamatch {
            d.push_str(&format!(" data {data:#x}"));
        }
        self.push(event, None, Some(d));
    }

    fn coalesced(&self, event: &'static str, c: &FlatCoalesced) {
        self.push(
            event,
            None,
            Some(format!("{:#x} size {:#x}", c.addr, c.size)),
        );
    }
}

impl Listener for Tracer {
    fn region_add(&mut self, cx: &mut ListenerCx<'_>, s: &Section) -> ListenerResult {
        self.section(cx, "region_add", s, None);
        Ok(())
    }
    fn region_del(&mut self, cx: &mut ListenerCx<'_>, s: &Section) {
        self.section(cx, "region_del", s, None);
    }
    fn log_start(
        &mut self,
        cx: &mut ListenerCx<'_>,
        s: &Section,
        old: addrspace_core::DirtyLogMask,
        new: addrspace_core::DirtyLogMask,
    ) {
        let d = format!("mask {:#x}->{:#x}", old.0, new.0);
        self.section(cx, "log_start", s, Some(d));
    }
    fn log_stop(
        &mut self,
        cx: &mut ListenerCx<'_>,
        s: &Section,
        old: addrspace_core::DirtyLogMask,
        new: addrspace_core::DirtyLogMask,
    ) {
        let d = format!("mask {:#x}->{:#x}", old.0, new.0);
        self.section(cx, "log_stop", s, Some(d));
    }
    fn eventfd_add(&mut self, _cx: &mut ListenerCx<'_>, fd: &FlatIoeventfd) -> ListenerResult {
        self.fd("eventfd_add", fd);
        Ok(())
    }
    fn eventfd_del(&mut self, _cx: &mut ListenerCx<'_>, fd: &FlatIoeventfd) {
        self.fd("eventfd_del", fd);
    }
    fn coalesced_io_add(&mut self, _cx: &mut ListenerCx<'_>, c: &FlatCoalesced) {
        self.coalesced("coalesced_io_add", c);
    }
    fn coalesced_io_del(&mut self, _cx: &mut ListenerCx<'_>, c: &FlatCoalesced) {
        self.coalesced("coalesced_io_del", c);
    }
}

/// Why a replay stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayError {
    /// The script asks for something that cannot be: an unknown region, a
    /// guest action without the pseries model, `commit` without `begin`.
    Usage {
        /// `file:line`.
        at: String,
        /// What is wrong.
        message: String,
    },
    /// The machine refused a command not marked `fail`, or did a command
    /// marked `fail`.
    Refused {
        /// `file:line`.
        at: String,
        /// What happened.
        message: String,
    },
    /// An `expect` line did not hold.
    Expectation {
        /// `file:line`.
        at: String,
        /// What was expected and what was found.
        message: String,
    },
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplayError::Usage { at, message } => write!(f, "{at}: {message}"),
            ReplayError::Refused { at, message } => write!(f, "{at}: {message}"),
            ReplayError::Expectation { at, message } => {
                write!(f, "{at}: expectation failed: {message}")
            }
        }
    }
}

impl std::error::Error for ReplayError {}

/// What one step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepReport {
    /// The script line.
    pub line: usize,
    /// The command as written.
    pub text: String,
    /// What the machine said (a guest action's result, a refusal, an
    /// expectation that held).
    pub said: String,
    /// What the listeners heard, in order.
    pub events: Vec<EventInfo>,
    /// The VFIO ioctls the simulated host kernel received (pseries), by
    /// name with their count, in the kernel interface's order.
    pub ioctls: Vec<(String, u64)>,
}

enum World {
    Tree(Box<Memory>),
    Pseries(Box<Machine>),
}

/// A machine being replayed on, with a tracing listener on every address
/// space.
pub struct Replay {
    world: World,
    log: Log,
    file: String,
    /// Address spaces of the range events of the last command that was
    /// not an `expect`.
    last_events: Vec<String>,
    last_said: String,
    /// Line of the open `begin`.
    open: Option<usize>,
    /// Ioctls of the command being run.
    ioctls: Vec<(String, u64)>,
}

impl fmt::Debug for Replay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Replay")
            .field("file", &self.file)
            .field("open", &self.open)
            .finish_non_exhaustive()
    }
}

impl Replay {
    /// Prepares `script` to run: on `tree` (a machine loaded from a dump)
    /// for scripts without a `machine` line, on a new pseries model for
    /// the others. Listeners are registered on every address space; what
    /// they hear while registering is not reported.
    pub fn new(script: &Script, tree: Option<Memory>) -> Result<Replay, ReplayError> {
        let usage = |message: String| ReplayError::Usage {
            at: script.name.clone(),
            message,
        };
        let world = match (script.target, tree) {
            (Target::Tree, Some(mem)) => World::Tree(Box::new(mem)),
            (Target::Tree, None) => {
                return Err(usage(
                    "no `machine pseries` line and no tree given (--tree DUMP)".into(),
                ))
            }
            (Target::Pseries { .. }, Some(_)) => return Err(usage(
                "the script builds its own machine (`machine pseries`); do not also give a tree"
                    .into(),
            )),
            (Target::Pseries { ram, phbs }, None) => {
                let mut config = MachineConfig::new().phbs((0..phbs).map(PhbConfig::new).collect());
                if let Some(ram) = ram {
                    config = config.ram_size(ram);
                }
                World::Pseries(Box::new(
                    Machine::new(config).map_err(|e| usage(format!("machine pseries: {e}")))?,
                ))
            }
        };
        let mut replay = Replay {
            world,
            log: Log::default(),
            file: script.name.clone(),
            last_events: Vec::new(),
            last_said: String::new(),
            open: None,
            ioctls: Vec::new(),
        };
        let mem = replay.mem_mut();
        let spaces: Vec<_> = mem.address_spaces().collect();
        let mut tracers = Vec::new();
        for id in spaces {
            let space = mem
                .address_space_name(id)
                .map_err(|e| usage(e.to_string()))?
                .to_owned();
            tracers.push((id, space));
        }
        let log = replay.log.clone();
        let mem = replay.mem_mut();
        for (id, space) in tracers {
            let tracer = Tracer {
                space,
                log: log.clone(),
            };
            mem.register_listener(id, ListenerConfig::new("replay"), Box::new(tracer))
                .map_err(|e| usage(format!("registering the listener: {e}")))?;
        }
        lock(&log).clear();
        Ok(replay)
    }

    /// The machine's memory map.
    pub fn mem(&self) -> &Memory {
        match &self.world {
            World::Tree(m) => m,
            World::Pseries(m) => m.mem(),
        }
    }

    fn mem_mut(&mut self) -> &mut Memory {
        match &mut self.world {
            World::Tree(m) => m,
            World::Pseries(m) => m.mem_mut(),
        }
    }

    /// Runs one step.
    pub fn step(&mut self, step: &Step) -> Result<StepReport, ReplayError> {
        let at = format!("{}:{}", self.file, step.line);
        let usage = |message: String| ReplayError::Usage {
            at: at.clone(),
            message,
        };
        let said = match &step.command {
            Command::Expect(e) => {
                let said = self.expect(e).map_err(|message| match message {
                    Problem::Usage(m) => usage(m),
                    Problem::Failed(message) => ReplayError::Expectation {
                        at: at.clone(),
                        message,
                    },
                })?;
                return Ok(StepReport {
                    line: step.line,
                    text: step.text.clone(),
                    said,
                    events: Vec::new(),
                    ioctls: Vec::new(),
                });
            }
            command => self
                .apply_counting(command, step.line)
                .map_err(|p| match p {
                    Problem::Usage(m) => usage(m),
                    Problem::Failed(refusal) => ReplayError::Refused {
                        at: at.clone(),
                        message: refusal,
                    },
                }),
        };
        let said = match (said, step.must_fail) {
            (Ok(s), false) => s,
            (Err(ReplayError::Refused { message, .. }), true) => format!("refused: {message}"),
            (Ok(s), true) => {
                return Err(ReplayError::Refused {
                    at,
                    message: format!("expected a refusal, but it was done ({s})"),
                })
            }
            (Err(e), _) => return Err(e),
        };
        let events = std::mem::take(&mut *lock(&self.log));
        let ioctls = std::mem::take(&mut self.ioctls);
        self.last_events = events
            .iter()
            .filter(|e| matches!(e.event, "region_add" | "region_del"))
            .map(|e| e.address_space.clone())
            .collect();
        self.last_said = said.clone();
        Ok(StepReport {
            line: step.line,
            text: step.text.clone(),
            said,
            events,
            ioctls,
        })
    }

    /// Checks the script ended with no transaction open.
    pub fn finish(&self) -> Result<(), ReplayError> {
        match self.open {
            Some(line) => Err(ReplayError::Usage {
                at: format!("{}:{line}", self.file),
                message: "`begin` without `commit`".into(),
            }),
            None => Ok(()),
        }
    }

    /// The region a script names (`NAME` or `NAME~K`).
    fn region(&self, name: &str) -> Result<RegionId, Problem> {
        let mem = self.mem();
        let mut ids: Vec<RegionId> = mem.regions_named(name).collect();
        if ids.is_empty() {
            if let Some((base, k)) = name.rsplit_once('~') {
                if let Ok(k) = k.parse::<usize>() {
                    let mut ids: Vec<RegionId> = mem.regions_named(base).collect();
                    ids.sort();
                    return match k.checked_sub(1).and_then(|i| ids.get(i)) {
                        Some(id) => Ok(*id),
                        None => Err(Problem::Usage(format!(
                            "{name:?}: there are {} regions named {base:?}",
                            ids.len()
                        ))),
                    };
                }
            }
            return Err(Problem::Usage(format!("no region named {name:?}")));
        }
        if ids.len() > 1 {
            return Err(Problem::Usage(format!(
                "{} regions are named {name:?}; write \"{name}~K\" for the K-th (1 to {})",
                ids.len(),
                ids.len()
            )));
        }
        Ok(ids.remove(0))
    }

    /// The first address space called `name`.
    fn space(&self, name: &str) -> Result<addrspace_core::AddressSpaceId, Problem> {
        let mem = self.mem();
        mem.address_spaces()
            .find(|id| mem.address_space_name(*id).is_ok_and(|n| n == name))
            .ok_or_else(|| Problem::Usage(format!("no address space named {name:?}")))
    }

    /// [`apply`](Self::apply), noting the ioctls the host kernel got.
    fn apply_counting(&mut self, command: &Command, line: usize) -> Result<String, Problem> {
        let before = match &self.world {
            World::Pseries(m) => Some(m.stats()),
            World::Tree(_) => None,
        };
        let out = self.apply(command, line);
        if let (Some(before), World::Pseries(m)) = (before, &self.world) {
            let after = m.stats();
            self.ioctls = Ioctl::ALL
                .iter()
                .filter_map(|&i| {
                    let n = after.count(i) - before.count(i);
                    (n > 0).then(|| (format!("{i:?}"), n))
                })
                .collect();
        }
        out
    }

    fn apply(&mut self, command: &Command, line: usize) -> Result<String, Problem> {
        let refused = |e: addrspace_core::Error| Problem::Failed(e.to_string());
        match command {
            Command::Add {
                kind,
                name,
                size,
                parent,
                addr,
                priority,
            } => {
                let parent = self.region(parent)?;
                let target = match kind {
                    NewKind::Alias { target, offset } => Some((self.region(target)?, *offset)),
                    _ => None,
                };
                let mem = self.mem_mut();
                let id = match kind {
                    NewKind::Ram => mem.create_ram(name, *size),
                    NewKind::Rom => mem.create_rom(name, *size),
                    NewKind::Mmio => mem.create_mmio(name, *size, Arc::new(NullOps)),
                    NewKind::Container => mem.create_container(name, *size),
                    NewKind::Reservation => mem.create_reservation(name, *size),
                    NewKind::Alias { .. } => {
                        let (t, off) = target.expect("resolved above");
                        mem.create_alias(name, t, off, *size)
                    }
                }
                .map_err(refused)?;
                if let Err(e) = mem.add_subregion_overlap(parent, *addr, id, *priority) {
                    // Leave nothing behind.
                    mem.destroy_region(id)
                        .expect("a region nothing refers to can be destroyed");
                    return Err(refused(e));
                }
                Ok(format!("added {name:?} at {addr:#x}"))
            }
            Command::Attach {
                name,
                parent,
                addr,
                priority,
            } => {
                let (child, parent) = (self.region(name)?, self.region(parent)?);
                self.mem_mut()
                    .add_subregion_overlap(parent, *addr, child, *priority)
                    .map_err(refused)?;
                Ok(format!("attached {name:?} at {addr:#x}"))
            }
            Command::Del(name) => {
                let id = self.region(name)?;
                let mem = self.mem_mut();
                let parent = mem
                    .region(id)
                    .map_err(refused)?
                    .parent()
                    .ok_or_else(|| Problem::Failed(format!("{name:?} has no parent")))?;
                mem.del_subregion(parent, id).map_err(refused)?;
                Ok(format!("took {name:?} out of its parent"))
            }
            Command::Move(name, addr) => {
                let id = self.region(name)?;
                self.mem_mut().set_address(id, *addr).map_err(refused)?;
                Ok(format!("moved {name:?} to {addr:#x}"))
            }
            Command::Enable(name, on) => {
                let id = self.region(name)?;
                self.mem_mut().set_enabled(id, *on).map_err(refused)?;
                Ok(format!(
                    "{} {name:?}",
                    if *on { "enabled" } else { "disabled" }
                ))
            }
            Command::Priority(name, p) => {
                let id = self.region(name)?;
                self.mem_mut().set_priority(id, *p).map_err(refused)?;
                Ok(format!("priority of {name:?} is {p}"))
            }
            Command::Resize(name, size) => {
                let id = self.region(name)?;
                self.mem_mut().set_size(id, *size).map_err(refused)?;
                Ok(format!("size of {name:?} is {size:#x}"))
            }
            Command::AliasOffset(name, offset) => {
                let id = self.region(name)?;
                self.mem_mut()
                    .set_alias_offset(id, *offset)
                    .map_err(refused)?;
                Ok(format!(
                    "alias {name:?} now starts at {offset:#x} of its target"
                ))
            }
            Command::Readonly(name, on) => {
                let id = self.region(name)?;
                self.mem_mut().set_readonly(id, *on).map_err(refused)?;
                Ok(format!(
                    "{name:?} is {}",
                    if *on { "read-only" } else { "writable" }
                ))
            }
            Command::Begin => {
                if self.open.is_some() {
                    return Err(Problem::Usage("`begin` inside `begin`".into()));
                }
                self.mem_mut().begin();
                self.open = Some(line);
                Ok("transaction opened".into())
            }
            Command::Commit => {
                if self.open.take().is_none() {
                    return Err(Problem::Usage("`commit` without `begin`".into()));
                }
                self.mem_mut().commit().map_err(refused)?;
                Ok("transaction committed".into())
            }
            Command::Guest(action) => {
                if self.open.is_some() {
                    return Err(Problem::Usage(
                        "guest actions cannot run inside `begin` ... `commit`".into(),
                    ));
                }
                match &mut self.world {
                    World::Pseries(m) => m.apply(action).map_err(|e| Problem::Failed(e.to_string())),
                    World::Tree(_) => Err(Problem::Usage(
                        "guest actions need the pseries model (`machine pseries` as the first line)"
                            .into(),
                    )),
                }
            }
            Command::Expect(_) => unreachable!("expectations are checked by `step`"),
        }
    }

    fn expect(&self, e: &Expect) -> Result<String, Problem> {
        match e {
            Expect::Events(n, space) => {
                let (count, place) = match space {
                    Some(name) => {
                        self.space(name)?;
                        let count = self.last_events.iter().filter(|s| *s == name).count();
                        (count, format!(" in {name}"))
                    }
                    None => (self.last_events.len(), String::new()),
                };
                if count == *n {
                    Ok(format!("{n} range events{place}, as expected"))
                } else {
                    Err(Problem::Failed(format!(
                        "{n} region_add/region_del events{place} expected, the previous command made {count}"
                    )))
                }
            }
            Expect::Map {
                space,
                addr,
                region,
            } => {
                let mem = self.mem();
                let id = self.space(space)?;
                let view = mem.view(id).map_err(|e| Problem::Usage(e.to_string()))?;
                let found = view
                    .lookup(*addr)
                    .map(|r| mem.region(r.region).map(|reg| reg.name().to_owned()))
                    .transpose()
                    .map_err(|e| Problem::Usage(e.to_string()))?;
                if found == *region {
                    Ok(format!(
                        "{space} {addr:#x} is {}",
                        region.as_deref().unwrap_or("unmapped")
                    ))
                } else {
                    Err(Problem::Failed(format!(
                        "{space} {addr:#x}: expected {}, found {}",
                        region
                            .as_deref()
                            .map_or("no range".to_owned(), |r| format!("{r:?}")),
                        found.map_or("no range".to_owned(), |r| format!("{r:?}"))
                    )))
                }
            }
            Expect::Said(text) => {
                if self.last_said.contains(text.as_str()) {
                    Ok(format!("said {text:?}"))
                } else {
                    Err(Problem::Failed(format!(
                        "expected {text:?} in {:?}",
                        self.last_said
                    )))
                }
            }
            Expect::Invariants => match &self.world {
                World::Pseries(m) => {
                    let report = m.check();
                    if report.is_clean() {
                        Ok(format!("invariants: {report}"))
                    } else {
                        Err(Problem::Failed(format!("invariants: {report}")))
                    }
                }
                World::Tree(_) => Err(Problem::Usage(
                    "`expect invariants` needs the pseries model".into(),
                )),
            },
        }
    }
}

/// Why a command or check did not go through.
enum Problem {
    /// The script is wrong.
    Usage(String),
    /// The machine refused, or the check failed.
    Failed(String),
}

#[cfg(test)]
mod tests {
    use addrspace_core::SIZE_2_64;

    use super::*;

    /// A container with two RAM regions called `ram` and a device.
    fn machine() -> Memory {
        let mut mem = Memory::new();
        let system = mem.create_container("system", SIZE_2_64).unwrap();
        for addr in [0, 0x10_0000] {
            let ram = mem.create_ram("ram", 0x1000).unwrap();
            mem.add_subregion(system, addr, ram).unwrap();
        }
        let dev = mem.create_mmio("dev", 0x100, Arc::new(NullOps)).unwrap();
        mem.add_subregion(system, 0x2000, dev).unwrap();
        mem.create_address_space("memory", system).unwrap();
        mem
    }

    fn run(text: &str) -> Result<Vec<StepReport>, ReplayError> {
        let script = Script::parse("t", text).unwrap();
        let mut replay = Replay::new(&script, Some(machine()))?;
        let mut out = Vec::new();
        for step in &script.steps {
            out.push(replay.step(step)?);
        }
        replay.finish()?;
        Ok(out)
    }

    #[test]
    fn ambiguous_names_are_refused_and_picked_with_a_suffix() {
        let err = run("disable ram\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "t:1: 2 regions are named \"ram\"; write \"ram~K\" for the K-th (1 to 2)"
        );
        let steps = run("disable ram~2\nexpect map memory 0x100000 -\nexpect map memory 0x0 ram\n")
            .unwrap();
        assert_eq!(steps[0].events.len(), 1);
        assert_eq!(steps[0].events[0].event, "region_del");
        assert!(matches!(
            run("disable ram~3\n").unwrap_err(),
            ReplayError::Usage { .. }
        ));
    }

    #[test]
    fn a_transaction_is_heard_once_and_must_be_closed() {
        let steps =
            run("begin\nmove dev 0x3000\nmove dev 0x4000\ncommit\nexpect events 2\n").unwrap();
        assert!(steps[1].events.is_empty() && steps[2].events.is_empty());
        let heard: Vec<u64> = steps[3]
            .events
            .iter()
            .map(|e| e.range.as_ref().unwrap().start)
            .collect();
        assert_eq!(heard, [0x2000, 0x4000]);
        assert_eq!(
            run("begin\nmove dev 0x3000\n").unwrap_err().to_string(),
            "t:1: `begin` without `commit`"
        );
        assert!(run("commit\n").is_err());
    }

    #[test]
    fn a_refused_command_marked_fail_changes_nothing() {
        let steps = run("fail add ram x 0 in=system at=0\nexpect events 0\nfail attach dev in=system at=0\nexpect map memory 0x2000 dev\n").unwrap();
        assert!(steps[0].said.starts_with("refused: "), "{}", steps[0].said);
        assert!(steps[0].events.is_empty());
        // Without `fail`, the refusal stops the script.
        assert!(matches!(
            run("attach dev in=system at=0\n").unwrap_err(),
            ReplayError::Refused { .. }
        ));
        // With `fail`, a command that goes through is the error.
        assert!(run("fail move dev 0x5000\n")
            .unwrap_err()
            .to_string()
            .contains("expected a refusal"));
    }

    #[test]
    fn failed_expectations_say_what_was_found() {
        let err = run("move dev 0x3000\nexpect map memory 0x2000 dev\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "t:2: expectation failed: memory 0x2000: expected \"dev\", found no range"
        );
        assert!(matches!(
            run("expect invariants\n").unwrap_err(),
            ReplayError::Usage { .. }
        ));
    }
}
