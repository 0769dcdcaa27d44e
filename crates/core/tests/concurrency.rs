//! Readers on snapshots while one writer commits: every snapshot is one
//! consistent view, accesses through it work, and nothing deadlocks.
//!
//! The writer's commit number `n` decides the whole layout, and every
//! commit changes several regions at once, so a torn view (some changes of
//! a commit but not others) breaks an invariant readers check inside each
//! snapshot:
//!
//! - in `sys`, region X sits in exactly one of [`SLOTS`] slots, and the
//!   `tag` alias shows its target at an offset naming the same slot;
//! - in `dma`, the IOMMU window sits at exactly one of two places, the one
//!   the `dtag` alias (moved in the same commit) names;
//! - every few commits a scratch RAM region is replaced by a new one and
//!   the old one destroyed, while readers may still access it through the
//!   snapshots they hold.
//!
//! Readers also write a value of their own through the view and read it
//! back: into X (wherever it is), and through the IOMMU window into a RAM
//! region of `sys`, read back through `sys`.
//!
//! The commit count is `ADDRSPACE_STRESS_COMMITS` (default 100 000); a
//! watchdog fails the test instead of hanging if anything stops making
//! progress.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use addrspace_core::{
    AddressSpaceId, FlatRange, FlatView, IommuOps, IommuPerm, IommuTlbEntry, Listener,
    ListenerConfig, ListenerCx, ListenerResult, Memory, RegionId, Section, ViewHandle, ViewReader,
};
use parking_lot::Mutex;

/// Places region X can be in.
const SLOTS: u64 = 4;
const SLOT_STRIDE: u64 = 0x10000;
const X_SIZE: u64 = 0x1000;
/// Where the `tag` alias (0x100 bytes of `tagram`) is mapped in `sys`.
const TAG_ADDR: u64 = 0x100000;
/// Where the scratch region is mapped in `sys`.
const SCRATCH_ADDR: u64 = 0x200000;
/// RAM that IOMMU translations land in.
const FIXED_ADDR: u64 = 0x300000;
/// The two places of the IOMMU window in `dma`.
const WINDOWS: [u64; 2] = [0x0, 0x100000];
const WINDOW_SIZE: u64 = 0x10000;
/// Where the `dtag` alias is mapped in `dma`.
const DTAG_ADDR: u64 = 0x800000;
const READERS: u64 = 3;
/// No thread may go this long without finishing.
const WATCHDOG: Duration = Duration::from_secs(60);

fn slot_addr(i: u64) -> u64 {
    i * SLOT_STRIDE
}

/// Maps every page of the window onto `FIXED_ADDR` in `sys`, read-write.
struct ToFixed {
    target: AddressSpaceId,
}

impl IommuOps for ToFixed {
    fn translate(&self, addr: u64, _access: IommuPerm) -> IommuTlbEntry {
        IommuTlbEntry {
            iova: addr & !0xfff,
            translated_addr: FIXED_ADDR,
            addr_mask: 0xfff,
            perm: IommuPerm::RW,
            target: Some(self.target),
        }
    }
    fn min_page_size(&self) -> u64 {
        0x1000
    }
}

/// What a listener holds, by start address.
type Held = Arc<Mutex<BTreeMap<u64, FlatRange>>>;

/// A listener that keeps what it is given (a recorder's log would grow
/// with every commit) and checks every deletion against it.
struct Holder(Held);

impl Listener for Holder {
    fn region_add(&mut self, _cx: &mut ListenerCx<'_>, s: &Section) -> ListenerResult {
        let prev = self.0.lock().insert(s.start(), s.range);
        assert!(prev.is_none(), "added twice: {:?}", s.range);
        Ok(())
    }
    fn region_del(&mut self, _cx: &mut ListenerCx<'_>, s: &Section) {
        let prev = self.0.lock().remove(&s.start());
        assert!(
            prev.is_some_and(|p| p.same_mapping(&s.range)),
            "deleted what it did not hold: {:?}",
            s.range
        );
    }
}

struct Machine {
    mem: Memory,
    sys: AddressSpaceId,
    dma: AddressSpaceId,
    sys_root: RegionId,
    x: RegionId,
    tag: RegionId,
    dtag: RegionId,
    iommu: RegionId,
    scratch: RegionId,
    held: [(AddressSpaceId, Held); 2],
}

fn machine() -> Machine {
    let mut mem = Memory::new();
    let sys_root = mem.create_container("sys", 1 << 32).unwrap();
    let sys = mem.create_address_space("sys", sys_root).unwrap();
    let x = mem.create_ram("x", X_SIZE as u128).unwrap();
    mem.add_subregion(sys_root, slot_addr(0), x).unwrap();
    let tagram = mem.create_ram("tagram", 0x1000).unwrap();
    let tag = mem.create_alias("tag", tagram, 0, 0x100).unwrap();
    mem.add_subregion(sys_root, TAG_ADDR, tag).unwrap();
    let scratch = mem.create_ram("scratch", 0x1000).unwrap();
    mem.add_subregion(sys_root, SCRATCH_ADDR, scratch).unwrap();
    let fixed = mem.create_ram("fixed", 0x1000).unwrap();
    mem.add_subregion(sys_root, FIXED_ADDR, fixed).unwrap();

    let dma_root = mem.create_container("dma", 1 << 32).unwrap();
    let dma = mem.create_address_space("dma", dma_root).unwrap();
    let iommu = mem
        .create_iommu(
            "iommu",
            WINDOW_SIZE as u128,
            Arc::new(ToFixed { target: sys }),
        )
        .unwrap();
    mem.add_subregion(dma_root, WINDOWS[0], iommu).unwrap();
    let dtag = mem.create_alias("dtag", tagram, 0, 0x100).unwrap();
    mem.add_subregion(dma_root, DTAG_ADDR, dtag).unwrap();

    // A listener on each space, so commits dispatch while readers run.
    let held = [(sys, Held::default()), (dma, Held::default())];
    for (as_id, h) in &held {
        let holder = Box::new(Holder(h.clone()));
        mem.register_listener(*as_id, ListenerConfig::new("holder"), holder)
            .unwrap();
    }
    Machine {
        mem,
        sys,
        dma,
        sys_root,
        x,
        tag,
        dtag,
        iommu,
        scratch,
        held,
    }
}

/// Commit `n`: X to slot `n % SLOTS`, both tags to name it, the IOMMU
/// window to `WINDOWS[slot % 2]`; every 16th commit a fresh scratch region.
fn commit(m: &mut Machine, n: u64) {
    let slot = n % SLOTS;
    let mem = &mut m.mem;
    mem.begin();
    mem.set_address(m.x, slot_addr(slot)).unwrap();
    mem.set_alias_offset(m.tag, slot * 0x100).unwrap();
    mem.set_alias_offset(m.dtag, slot * 0x100).unwrap();
    mem.set_address(m.iommu, WINDOWS[(slot % 2) as usize])
        .unwrap();
    if n.is_multiple_of(16) {
        let fresh = mem.create_ram("scratch", 0x1000).unwrap();
        mem.del_subregion(m.sys_root, m.scratch).unwrap();
        mem.destroy_region(m.scratch).unwrap();
        mem.add_subregion(m.sys_root, SCRATCH_ADDR, fresh).unwrap();
        m.scratch = fresh;
    }
    mem.commit().unwrap();
}

/// Checks `sys` view `v`: returns X's slot.
fn check_sys(v: &FlatView, x: RegionId) -> u64 {
    let mapped: Vec<u64> = (0..SLOTS)
        .filter(|&i| v.lookup(slot_addr(i)).is_some())
        .collect();
    assert_eq!(mapped.len(), 1, "X must be in exactly one slot: {mapped:?}");
    let slot = mapped[0];
    let fr = v.lookup(slot_addr(slot)).unwrap();
    assert_eq!(fr.region, x, "the slot holds X");
    let tag = v.lookup(TAG_ADDR).expect("the tag is always mapped");
    assert_eq!(
        tag.offset_in_region,
        slot * 0x100,
        "the tag names X's slot in the same view"
    );
    assert!(v.lookup(SCRATCH_ADDR).is_some(), "scratch is always mapped");
    slot
}

/// Checks `dma` view `v`: returns the window in use.
fn check_dma(v: &FlatView) -> u64 {
    let dtag = v.lookup(DTAG_ADDR).expect("dtag is always mapped");
    let slot = dtag.offset_in_region / 0x100;
    let window = WINDOWS[(slot % 2) as usize];
    let other = WINDOWS[(1 - slot % 2) as usize];
    assert!(
        v.lookup(window).is_some(),
        "the window dtag names is mapped"
    );
    assert!(v.lookup(other).is_none(), "the other window is empty");
    window
}

struct Handles {
    sys: ViewHandle,
    dma: ViewHandle,
    x: RegionId,
}

/// One reader: checks every snapshot it loads until `done`; returns how
/// many snapshots it checked.
fn reader(
    id: u64,
    h: Handles,
    done: Arc<AtomicBool>,
    progress: Arc<AtomicU64>,
    running: Arc<AtomicU64>,
) -> u64 {
    let mut sys = ViewReader::new(h.sys.clone());
    let mut checks = 0u64;
    let mut seq = 0u64;
    let mut last_view: Option<Arc<FlatView>> = None;
    while !done.load(Ordering::Acquire) || checks == 0 {
        sys.refresh();
        let v = Arc::clone(sys.view());
        let slot = check_sys(&v, h.x);
        // The cached lookup agrees with the view it reads.
        assert_eq!(sys.lookup(slot_addr(slot)).map(|r| r.region), Some(h.x));
        // A write through the snapshot reads back through it.
        seq += 1;
        let value = (id << 56) | seq;
        let at = slot_addr(slot) + id * 8;
        v.write(at, &value.to_le_bytes()).unwrap();
        let mut buf = [0u8; 8];
        v.read(at, &mut buf).unwrap();
        assert_eq!(u64::from_le_bytes(buf), value, "X keeps what was written");
        // The scratch region may be destroyed already: its memory lives
        // as long as this snapshot.
        v.write(SCRATCH_ADDR + id * 8, &value.to_le_bytes())
            .unwrap();
        v.read(SCRATCH_ADDR + id * 8, &mut buf).unwrap();
        assert_eq!(u64::from_le_bytes(buf), value, "scratch keeps it too");
        // Through the IOMMU: dma window -> fixed RAM in sys.
        let d = h.dma.load();
        let window = check_dma(&d);
        let value = value ^ 0xffff;
        d.write(window + 0x10 + id * 8, &value.to_le_bytes())
            .unwrap();
        d.read(window + 0x10 + id * 8, &mut buf).unwrap();
        assert_eq!(
            u64::from_le_bytes(buf),
            value,
            "read back through the IOMMU"
        );
        h.sys
            .load()
            .read(FIXED_ADDR + 0x10 + id * 8, &mut buf)
            .unwrap();
        assert_eq!(
            u64::from_le_bytes(buf),
            value,
            "the IOMMU lands in fixed RAM"
        );
        // An older snapshot still reads as it did.
        if let Some(old) = &last_view {
            check_sys(old, h.x);
        }
        if checks.is_multiple_of(64) {
            last_view = Some(Arc::clone(&v));
        }
        checks += 1;
        progress.fetch_add(1, Ordering::Relaxed);
    }
    running.fetch_sub(1, Ordering::AcqRel);
    checks
}

/// What a thread sends when it ends: who, and its count or its panic.
type Report = (&'static str, Result<u64, String>);

/// Spawns `f`, which reports its result (or its panic) on `tx`.
fn spawn_reporting(
    who: &'static str,
    tx: mpsc::Sender<Report>,
    f: impl FnOnce() -> u64 + Send + 'static,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|p| {
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        });
        let _ = tx.send((who, result));
    })
}

#[test]
fn readers_see_whole_commits_while_a_writer_commits() {
    let commits: u64 = std::env::var("ADDRSPACE_STRESS_COMMITS")
        .ok()
        .map(|s| s.parse().expect("ADDRSPACE_STRESS_COMMITS is a number"))
        .unwrap_or(100_000);
    let mut m = machine();
    let done = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicU64::new(0));
    let (tx, rx) = mpsc::channel::<Report>();
    // Readers still reading: the writer keeps the Memory (which the IOMMU
    // translations go through) until they are done.
    let running = Arc::new(AtomicU64::new(READERS));
    let mut threads = Vec::new();
    for id in 0..READERS {
        let h = Handles {
            sys: m.mem.view_handle(m.sys).unwrap(),
            dma: m.mem.view_handle(m.dma).unwrap(),
            x: m.x,
        };
        let (done, progress, running) = (done.clone(), progress.clone(), running.clone());
        threads.push(spawn_reporting("reader", tx.clone(), move || {
            reader(id, h, done, progress, running)
        }));
    }
    let (writer_done, writer_progress) = (done.clone(), progress.clone());
    let start = Instant::now();
    threads.push(spawn_reporting("writer", tx, move || {
        for n in 1..=commits {
            commit(&mut m, n);
            writer_progress.fetch_add(1, Ordering::Relaxed);
        }
        writer_done.store(true, Ordering::Release);
        while running.load(Ordering::Acquire) > 0 {
            thread::yield_now();
        }
        // Every listener's holdings are its space's final view.
        for (as_id, held) in &m.held {
            let held: Vec<_> = held.lock().values().copied().collect();
            let view = m.mem.view(*as_id).unwrap();
            assert_eq!(held, view.ranges.iter().copied().collect::<Vec<_>>());
        }
        commits
    }));
    let mut reader_checks = Vec::new();
    let (mut seen, mut since) = (0, Instant::now());
    let mut reports = 0;
    while reports < threads.len() {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok((who, Ok(count))) => {
                reports += 1;
                if who == "reader" {
                    reader_checks.push(count);
                }
            }
            Ok((who, Err(message))) => panic!("the {who} failed: {message}"),
            Err(_) => {
                let now = progress.load(Ordering::Relaxed);
                if now != seen {
                    (seen, since) = (now, Instant::now());
                }
                assert!(
                    since.elapsed() < WATCHDOG,
                    "no progress for {WATCHDOG:?}: deadlock? ({now} steps so far)"
                );
            }
        }
    }
    for t in threads {
        t.join().unwrap();
    }
    let elapsed = start.elapsed();
    eprintln!("{commits} commits in {elapsed:?}; reader checks {reader_checks:?}");
    assert_eq!(reader_checks.len(), READERS as usize);
    assert!(
        reader_checks.iter().all(|&c| c > 0),
        "every reader checked snapshots"
    );
}

#[test]
fn snapshots_outlive_the_memory_and_host_memory_is_freed_after_both() {
    let m = machine();
    let backing = m.mem.region(m.x).unwrap().backing().unwrap().clone();
    let weak = Arc::downgrade(&backing);
    drop(backing);
    let handle = m.mem.view_handle(m.sys).unwrap();
    let snapshot = handle.load();
    drop(m);
    // The reader's snapshot still serves X's memory...
    snapshot.write(slot_addr(0), &[7]).unwrap();
    let mut buf = [0u8; 1];
    snapshot.read(slot_addr(0), &mut buf).unwrap();
    assert_eq!(buf, [7]);
    assert!(weak.upgrade().is_some());
    // ...and once readers let go, nothing keeps it (views and the table of
    // reader handles used to hold each other).
    drop(snapshot);
    drop(handle);
    assert!(weak.upgrade().is_none(), "host memory outlived every user");
}
