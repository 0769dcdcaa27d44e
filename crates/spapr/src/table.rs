//! [`TceTable`]: a guest TCE table, its placement (simulated KVM or
//! userspace), and its behaviour as an IOMMU region.

use std::collections::BTreeMap;

use addrspace_core::{AddressSpaceId, HookError, IommuOps, IommuPerm, IommuTlbEntry};
use parking_lot::Mutex;

use crate::tce::{page_mask, Liobn, Tce, WindowGeometry, TCE_PAGE_SHIFT};

/// Where a TCE table lives, and so who handles the guest's puts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Placement {
    /// In (simulated) KVM: hypercalls are handled in the kernel, update
    /// the table and never reach userspace IOMMU notifiers. Fast, and
    /// invisible to VFIO.
    Kvm,
    /// In userspace: every put notifies the IOMMU region's notifiers, so
    /// VFIO can mirror it into the host IOMMU.
    Userspace,
}

/// One move of a table between placements, as the table recorded it.
///
/// The digests are taken over the source store before the copy and over
/// the destination store after it, so a move that lost, added or changed
/// any entry shows as [`preserved`](Self::preserved) being false.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableMove {
    /// The table.
    pub liobn: Liobn,
    /// Where it was.
    pub from: Placement,
    /// Where it went.
    pub to: Placement,
    /// Non-zero entries in the source before the move.
    pub entries_before: u64,
    /// Non-zero entries in the destination after the move.
    pub entries_after: u64,
    /// FNV-1a over every (index, raw TCE) of the source.
    pub digest_before: u64,
    /// FNV-1a over every (index, raw TCE) of the destination.
    pub digest_after: u64,
}

impl TableMove {
    /// True if every entry arrived bit for bit.
    pub fn preserved(&self) -> bool {
        self.entries_before == self.entries_after && self.digest_before == self.digest_after
    }
}

/// The entries of a table. Only non-zero TCEs are stored: a window can
/// hold billions of entries that are almost all empty.
///
/// The simulated kernel keeps its table as the real one does, big-endian
/// TCEs in the guest-visible format; userspace keeps native integers. A
/// move therefore really converts every entry, and a conversion bug shows
/// in [`TableMove::preserved`].
#[derive(Debug)]
enum Store {
    Kvm(BTreeMap<u64, [u8; 8]>),
    Userspace(BTreeMap<u64, u64>),
}

impl Store {
    fn empty(placement: Placement) -> Store {
        match placement {
            Placement::Kvm => Store::Kvm(BTreeMap::new()),
            Placement::Userspace => Store::Userspace(BTreeMap::new()),
        }
    }

    fn placement(&self) -> Placement {
        match self {
            Store::Kvm(_) => Placement::Kvm,
            Store::Userspace(_) => Placement::Userspace,
        }
    }

    fn get(&self, index: u64) -> Tce {
        match self {
            Store::Kvm(m) => m
                .get(&index)
                .map_or(Tce::EMPTY, |b| Tce(u64::from_be_bytes(*b))),
            Store::Userspace(m) => Tce(m.get(&index).copied().unwrap_or(0)),
        }
    }

    fn set(&mut self, index: u64, tce: Tce) {
        match self {
            Store::Kvm(m) if tce == Tce::EMPTY => {
                m.remove(&index);
            }
            Store::Kvm(m) => {
                m.insert(index, tce.0.to_be_bytes());
            }
            Store::Userspace(m) if tce == Tce::EMPTY => {
                m.remove(&index);
            }
            Store::Userspace(m) => {
                m.insert(index, tce.0);
            }
        }
    }

    /// Non-zero entries with `first <= index <= last`, ascending.
    fn range(&self, first: u64, last: u64) -> Vec<(u64, Tce)> {
        match self {
            Store::Kvm(m) => m
                .range(first..=last)
                .map(|(i, b)| (*i, Tce(u64::from_be_bytes(*b))))
                .collect(),
            Store::Userspace(m) => m.range(first..=last).map(|(i, v)| (*i, Tce(*v))).collect(),
        }
    }

    fn len(&self) -> u64 {
        match self {
            Store::Kvm(m) => m.len() as u64,
            Store::Userspace(m) => m.len() as u64,
        }
    }

    fn digest(&self) -> u64 {
        let mut hash = 0xcbf2_9ce4_8422_2325u64;
        for (index, tce) in self.range(0, u64::MAX) {
            for byte in index.to_le_bytes().into_iter().chain(tce.0.to_le_bytes()) {
                hash = (hash ^ byte as u64).wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        hash
    }
}

#[derive(Debug)]
struct State {
    /// `None` while the window is disabled (QEMU: `nb_table == 0`).
    geometry: Option<WindowGeometry>,
    store: Store,
    moves: Vec<TableMove>,
}

/// What a put did, for the caller to notify outside the table's lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Put {
    /// The entry's index.
    pub(crate) index: u64,
    /// The window at the time of the put.
    pub(crate) geometry: WindowGeometry,
    /// The entry before the put.
    pub(crate) old: Tce,
    /// Where the table was: only a userspace put notifies.
    pub(crate) placement: Placement,
}

/// Why a put was refused; the table is unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PutRefused {
    /// The bus address is outside the window, or the window is disabled.
    OutsideWindow(Option<WindowGeometry>),
    /// A valid TCE whose page ends past guest RAM.
    OutsideRam,
}

/// A guest TCE table (QEMU's `SpaprTceTable`): the translation behind one
/// DMA window's IOMMU region.
///
/// Entry `i` translates the region-relative I/O addresses
/// `[i << page_shift, (i + 1) << page_shift)` to the page its TCE names,
/// in the guest memory address space given at construction. A disabled
/// table (no window) has no entries.
///
/// As [`IommuOps`]: `vfio_start` moves the table to userspace, every entry
/// preserved, so that VFIO hears every later put; `vfio_stop` moves it
/// back to its home placement when the PHB asks for that
/// (`move_back_on_stop`).
#[derive(Debug)]
pub struct TceTable {
    liobn: Liobn,
    target: AddressSpaceId,
    home: Placement,
    move_back_on_stop: bool,
    state: Mutex<State>,
}

impl TceTable {
    /// A disabled table named `liobn` translating into `target`, starting
    /// at `placement` (its home).
    pub fn new(
        liobn: Liobn,
        target: AddressSpaceId,
        placement: Placement,
        move_back_on_stop: bool,
    ) -> TceTable {
        TceTable {
            liobn,
            target,
            home: placement,
            move_back_on_stop,
            state: Mutex::new(State {
                geometry: None,
                store: Store::empty(placement),
                moves: Vec::new(),
            }),
        }
    }

    /// The table's LIOBN.
    pub fn liobn(&self) -> Liobn {
        self.liobn
    }

    /// The guest memory address space translations point into.
    pub fn target(&self) -> AddressSpaceId {
        self.target
    }

    /// The window, or `None` while the table is disabled.
    pub fn geometry(&self) -> Option<WindowGeometry> {
        self.state.lock().geometry
    }

    /// Where the table lives now.
    pub fn placement(&self) -> Placement {
        self.state.lock().store.placement()
    }

    /// The placement the table starts in and returns to on `vfio_stop`.
    pub fn home(&self) -> Placement {
        self.home
    }

    /// Entry `index`, or `None` past the table (or while disabled).
    pub fn get(&self, index: u64) -> Option<Tce> {
        let st = self.state.lock();
        let g = st.geometry?;
        (index < g.entries).then(|| st.store.get(index))
    }

    /// Every non-zero entry as (index, TCE), ascending: valid mappings and
    /// cleared entries that kept address bits.
    pub fn entries(&self) -> Vec<(u64, Tce)> {
        self.state.lock().store.range(0, u64::MAX)
    }

    /// Every valid entry (a permission bit set), ascending.
    pub fn valid_entries(&self) -> Vec<(u64, Tce)> {
        let mut all = self.entries();
        all.retain(|(_, tce)| tce.is_valid());
        all
    }

    /// How many times the table moved between placements.
    pub fn moves(&self) -> usize {
        self.state.lock().moves.len()
    }

    /// Every move so far, oldest first.
    pub fn move_log(&self) -> Vec<TableMove> {
        self.state.lock().moves.clone()
    }

    /// Moves the table to `to`, converting every entry; returns the record,
    /// or `None` if it already lives there. This is what `vfio_start` and
    /// `vfio_stop` do; a machine may also call it (e.g. on migration).
    pub fn move_to(&self, to: Placement) -> Option<TableMove> {
        let mut st = self.state.lock();
        let from = st.store.placement();
        if from == to {
            return None;
        }
        let (entries_before, digest_before) = (st.store.len(), st.store.digest());
        let mut dest = Store::empty(to);
        for (index, tce) in st.store.range(0, u64::MAX) {
            dest.set(index, tce);
        }
        st.store = dest;
        let record = TableMove {
            liobn: self.liobn,
            from,
            to,
            entries_before,
            entries_after: st.store.len(),
            digest_before,
            digest_after: st.store.digest(),
        };
        st.moves.push(record);
        tracing::debug!(liobn = %self.liobn, ?from, ?to, entries = entries_before, "TCE table moved");
        Some(record)
    }

    /// Gives the table a window; it starts empty.
    pub(crate) fn enable(&self, geometry: WindowGeometry) {
        let mut st = self.state.lock();
        let placement = st.store.placement();
        st.geometry = Some(geometry);
        st.store = Store::empty(placement);
    }

    /// Takes the window away; returns the geometry it had and the valid
    /// entries it dropped (for UNMAP notifications), and where it lived.
    pub(crate) fn disable(&self) -> (Option<WindowGeometry>, Vec<(u64, Tce)>, Placement) {
        let mut st = self.state.lock();
        let placement = st.store.placement();
        let dropped = st
            .store
            .range(0, u64::MAX)
            .into_iter()
            .filter(|(_, t)| t.is_valid())
            .collect();
        let geometry = st.geometry.take();
        st.store = Store::empty(placement);
        (geometry, dropped, placement)
    }

    /// Writes `tce` at bus address `ioba` (rounded down to its page), after
    /// checking that the window covers it and that a valid TCE's page lies
    /// inside `ram_size` bytes of guest RAM.
    pub(crate) fn put(&self, ioba: u64, tce: Tce, ram_size: u64) -> Result<Put, PutRefused> {
        let mut st = self.state.lock();
        let geometry = st.geometry;
        let g = geometry.ok_or(PutRefused::OutsideWindow(None))?;
        let index = g
            .index_of(ioba)
            .ok_or(PutRefused::OutsideWindow(geometry))?;
        let page_end = tce.page_addr(g.page_shift) as u128 + g.page_size() as u128;
        if tce.is_valid() && page_end > ram_size as u128 {
            return Err(PutRefused::OutsideRam);
        }
        let old = st.store.get(index);
        st.store.set(index, tce);
        Ok(Put {
            index,
            geometry: g,
            old,
            placement: st.store.placement(),
        })
    }

    /// Puts `old` back at `index` after a put whose notification failed.
    pub(crate) fn restore(&self, index: u64, old: Tce) {
        self.state.lock().store.set(index, old);
    }

    /// The translation entry of TCE `index` of a window cut as `g`.
    pub(crate) fn entry(&self, g: &WindowGeometry, index: u64, tce: Tce) -> IommuTlbEntry {
        IommuTlbEntry {
            iova: g.iova_of(index),
            translated_addr: tce.page_addr(g.page_shift),
            addr_mask: page_mask(g.page_shift),
            perm: tce.perm(),
            target: Some(self.target),
        }
    }
}

impl IommuOps for TceTable {
    fn translate(&self, addr: u64, _access: IommuPerm) -> IommuTlbEntry {
        let st = self.state.lock();
        let Some(g) = st.geometry else {
            let mask = page_mask(TCE_PAGE_SHIFT);
            return IommuTlbEntry {
                iova: addr & !mask,
                translated_addr: 0,
                addr_mask: mask,
                perm: IommuPerm::NONE,
                target: Some(self.target),
            };
        };
        let index = addr >> g.page_shift;
        let tce = if index < g.entries {
            st.store.get(index)
        } else {
            Tce::EMPTY
        };
        self.entry(&g, index, tce)
    }

    /// `1 << page_shift`; 4 KiB while disabled.
    fn min_page_size(&self) -> u64 {
        let shift = self
            .state
            .lock()
            .geometry
            .map_or(TCE_PAGE_SHIFT, |g| g.page_shift);
        1 << shift
    }

    /// Walks only the valid entries: a window may have billions of pages.
    fn replay(&self, start: u64, last: u64, f: &mut dyn FnMut(&IommuTlbEntry)) -> bool {
        // Collect first: `f` may translate, and the lock is not reentrant.
        let found: Vec<IommuTlbEntry> = {
            let st = self.state.lock();
            let Some(g) = st.geometry else {
                return true;
            };
            let first = start >> g.page_shift;
            let last = (last >> g.page_shift).min(g.entries.saturating_sub(1));
            if first > last || g.entries == 0 {
                return true;
            }
            st.store
                .range(first, last)
                .into_iter()
                .filter(|(_, t)| t.is_valid())
                .map(|(i, t)| self.entry(&g, i, t))
                .collect()
        };
        for entry in &found {
            f(entry);
        }
        true
    }

    fn vfio_start(&self) -> Result<(), HookError> {
        self.move_to(Placement::Userspace);
        Ok(())
    }

    fn vfio_stop(&self) -> Result<(), HookError> {
        if self.move_back_on_stop {
            self.move_to(self.home);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use addrspace_core::{AddressSpaceId, Memory, SIZE_2_64};

    use super::*;

    fn some_space() -> AddressSpaceId {
        let mut mem = Memory::new();
        let root = mem.create_container("system", SIZE_2_64).unwrap();
        mem.create_address_space("memory", root).unwrap()
    }

    fn table(placement: Placement) -> TceTable {
        let t = TceTable::new(Liobn(0x8000_0000), some_space(), placement, true);
        t.enable(WindowGeometry {
            bus_offset: 0x1000_0000,
            page_shift: 12,
            entries: 16,
        });
        t
    }

    const RAM: u64 = 0x100_0000;

    #[test]
    fn put_then_translate_gives_the_page_and_permissions() {
        let t = table(Placement::Kvm);

        t.put(0x1000_3000, Tce(0x42_0000 | Tce::WRITE), RAM)
            .unwrap();
        let e = t.translate(0x3abc, IommuPerm::WO);

        assert_eq!(e.iova, 0x3000);
        assert_eq!(e.translated_addr, 0x42_0000);
        assert_eq!(e.addr_mask, 0xfff);
        assert_eq!(e.perm, IommuPerm::WO);
        assert_eq!(e.target, Some(t.target()));
    }

    #[test]
    fn put_rounds_the_bus_address_down_to_its_page() {
        let t = table(Placement::Kvm);

        let put = t.put(0x1000_3fff, Tce(0x5000 | 3), RAM).unwrap();

        assert_eq!(put.index, 3);
        assert_eq!(t.get(3), Some(Tce(0x5003)));
    }

    #[test]
    fn put_outside_the_window_or_ram_changes_nothing() {
        let t = table(Placement::Kvm);

        let past = t.put(0x1001_0000, Tce(0x1003), RAM);
        let below = t.put(0x0fff_f000, Tce(0x1003), RAM);
        let beyond_ram = t.put(0x1000_0000, Tce(RAM | 3), RAM);

        assert!(matches!(past, Err(PutRefused::OutsideWindow(Some(_)))));
        assert!(matches!(below, Err(PutRefused::OutsideWindow(Some(_)))));
        assert_eq!(beyond_ram, Err(PutRefused::OutsideRam));
        assert!(t.entries().is_empty());
    }

    #[test]
    fn cleared_entry_may_name_any_address() {
        let t = table(Placement::Kvm);

        t.put(0x1000_0000, Tce(!Tce::PERM_MASK), RAM).unwrap();

        assert_eq!(t.get(0), Some(Tce(!Tce::PERM_MASK)));
        assert!(t.valid_entries().is_empty());
    }

    #[test]
    fn translate_past_the_table_is_unmapped() {
        let t = table(Placement::Kvm);

        let e = t.translate(16 << 12, IommuPerm::RO);

        assert_eq!(e.perm, IommuPerm::NONE);
    }

    #[test]
    fn moving_to_userspace_and_back_preserves_every_entry() {
        let t = table(Placement::Kvm);
        for i in 0..16u64 {
            t.put(0x1000_0000 + (i << 12), Tce((i << 16) | (i % 4)), RAM)
                .unwrap();
        }
        let before = t.entries();

        let there = t.move_to(Placement::Userspace).unwrap();
        let middle = t.entries();
        let back = t.move_to(Placement::Kvm).unwrap();

        assert!(there.preserved() && back.preserved());
        assert_eq!(there.entries_before, 15);
        assert_eq!((middle, t.entries()), (before.clone(), before));
        assert_eq!(t.moves(), 2);
        assert_eq!(t.placement(), Placement::Kvm);
    }

    #[test]
    fn moving_to_where_the_table_is_does_nothing() {
        let t = table(Placement::Userspace);

        assert_eq!(t.move_to(Placement::Userspace), None);
        assert_eq!(t.moves(), 0);
    }

    #[test]
    fn vfio_hooks_move_out_and_back_home() {
        let t = table(Placement::Kvm);
        t.put(0x1000_0000, Tce(0x3), RAM).unwrap();

        t.vfio_start().unwrap();
        let during = t.placement();
        t.vfio_stop().unwrap();

        assert_eq!(during, Placement::Userspace);
        assert_eq!(t.placement(), Placement::Kvm);
        assert!(t.move_log().iter().all(TableMove::preserved));
        assert_eq!(t.get(0), Some(Tce(0x3)));
    }

    #[test]
    fn vfio_stop_leaves_the_table_in_userspace_when_asked() {
        let t = TceTable::new(Liobn(1), some_space(), Placement::Kvm, false);

        t.vfio_start().unwrap();
        t.vfio_stop().unwrap();

        assert_eq!(t.placement(), Placement::Userspace);
        assert_eq!(t.moves(), 1);
    }

    #[test]
    fn replay_walks_only_valid_entries_in_range() {
        let t = table(Placement::Kvm);
        t.put(0x1000_1000, Tce(0xa000 | 1), RAM).unwrap();
        t.put(0x1000_2000, Tce(0xb000), RAM).unwrap();
        t.put(0x1000_5000, Tce(0xc000 | 2), RAM).unwrap();
        t.put(0x1000_9000, Tce(0xd000 | 3), RAM).unwrap();
        let mut seen = Vec::new();

        let handled = t.replay(0x1000, 0x5fff, &mut |e| {
            seen.push((e.iova, e.translated_addr))
        });

        assert!(handled);
        assert_eq!(seen, vec![(0x1000, 0xa000), (0x5000, 0xc000)]);
    }

    #[test]
    fn disable_drops_every_entry_and_reports_the_valid_ones() {
        let t = table(Placement::Kvm);
        t.put(0x1000_1000, Tce(0xa000 | 1), RAM).unwrap();
        t.put(0x1000_2000, Tce(0xb000), RAM).unwrap();

        let (geometry, dropped, _) = t.disable();

        assert_eq!(geometry.map(|g| g.entries), Some(16));
        assert_eq!(dropped, vec![(1, Tce(0xa001))]);
        assert!(t.entries().is_empty());
        assert_eq!(t.get(0), None);
        assert_eq!(t.geometry(), None);
    }
}
