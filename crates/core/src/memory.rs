//! [`Memory`]: the region tree, its address spaces and listeners, and the
//! transaction that keeps them in step.

use std::sync::Arc;

use arc_swap::ArcSwap;
use smallvec::SmallVec;

use crate::address_space::{AddressSpace, RootView, ViewCell, ViewHandle};
use crate::dispatch::{Dispatcher, ListenerEntry};
use crate::engine::Engine;
use crate::error::{Error, ListenerFailure};
use crate::flatview::FlatView;
use crate::id::{next_space, AddressSpaceId, Arena, IdMap, ListenerId, Miss, RegionId};
use crate::listener::{Listener, Unregister};
use crate::notifier::IommuState;
use crate::region::Region;
use crate::registration::drop_quietly;

/// The whole memory map of a machine: regions, address spaces, listeners.
///
/// One writer mutates it through `&mut self`. Every mutation is atomic: it
/// is checked completely before anything changes, so an error leaves the
/// tree, the views and every listener as they were. Mutations outside a
/// transaction commit at once; inside one ([`begin`](Self::begin) /
/// [`commit`](Self::commit), which nest) they are dispatched together when
/// the outermost transaction commits.
pub struct Memory {
    pub(crate) regions: Arena<Region>,
    pub(crate) spaces: Arena<AddressSpace>,
    /// Address spaces in creation order.
    pub(crate) space_order: Vec<AddressSpaceId>,
    pub(crate) listeners: Arena<ListenerEntry>,
    /// Every listener, ascending by (priority, registration order).
    pub(crate) listener_order: Vec<ListenerId>,
    pub(crate) listener_seq: u64,
    depth: u32,
    pending: bool,
    pub(crate) global_dirty_log: bool,
    doomed: Vec<RegionId>,
    pub(crate) engine: Engine,
    /// Rendered views by flat-view root.
    pub(crate) roots: IdMap<Option<RegionId>, RootView>,
    /// Which address spaces' root chains pass through a region.
    pub(crate) chain_index: IdMap<RegionId, SmallVec<[AddressSpaceId; 2]>>,
    /// Changed in this transaction: address spaces whose chain holds one of
    /// these resolve their flat root again.
    pub(crate) touched: Vec<RegionId>,
    /// Windows `[lo, hi)` of flat-view roots that may have changed.
    pub(crate) damage: Vec<(RegionId, i128, i128)>,
    /// Every view must be rendered again (global dirty logging changed).
    pub(crate) full_render: bool,
    /// For each region, how many address spaces let damage walks skip it.
    pub(crate) skip_count: IdMap<RegionId, u32>,
    /// Address spaces with listeners, in creation order.
    pub(crate) listened: Vec<AddressSpaceId>,
    link_clock: u64,
    /// IOMMU notifiers and usage counters.
    pub(crate) iommu: IommuState,
    /// Reader handles of every address space, for IOMMU translations.
    pub(crate) space_table: crate::flatview::SpaceTable,
}

impl Default for Memory {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Memory {
    fn drop(&mut self) {
        // Views hold the table of reader handles (for IOMMU translations)
        // and the table holds the handles that lead to the views: empty
        // it, or every view, and the host memory it maps, would outlive
        // the map. Readers' snapshots stay valid; their IOMMU
        // translations find no address space any more.
        self.space_table.store(Arc::default());
    }
}

impl std::fmt::Debug for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memory")
            .field("regions", &self.regions().count())
            .field("address_spaces", &self.space_order.len())
            .field("listeners", &self.listener_order.len())
            .field("depth", &self.depth)
            .finish()
    }
}

impl Memory {
    /// An empty memory map.
    pub fn new() -> Self {
        let space = next_space();
        Memory {
            regions: Arena::new(space),
            spaces: Arena::new(space),
            space_order: Vec::new(),
            listeners: Arena::new(space),
            listener_order: Vec::new(),
            listener_seq: 0,
            depth: 0,
            pending: false,
            global_dirty_log: false,
            doomed: Vec::new(),
            engine: Engine::default(),
            roots: IdMap::default(),
            chain_index: IdMap::default(),
            touched: Vec::new(),
            damage: Vec::new(),
            full_render: false,
            skip_count: IdMap::default(),
            listened: Vec::new(),
            link_clock: 0,
            iommu: IommuState::new(space),
            space_table: Arc::default(),
        }
    }

    // ----- handles -----

    /// The region named by `id`.
    pub fn region(&self, id: RegionId) -> Result<&Region, Error> {
        match self.regions.check(id.0) {
            Ok(()) => {}
            Err(Miss::Stale) => return Err(Error::StaleRegion(id)),
            Err(Miss::Foreign) => {
                return Err(Error::ForeignHandle {
                    what: "region",
                    id: id.to_string(),
                })
            }
        }
        let r = self.regions.get(id.0).expect("checked");
        if r.doomed {
            return Err(Error::StaleRegion(id));
        }
        Ok(r)
    }

    pub(crate) fn region_mut(&mut self, id: RegionId) -> Result<&mut Region, Error> {
        self.region(id)?;
        Ok(self.regions.get_mut(id.0).expect("checked"))
    }

    pub(crate) fn space(&self, id: AddressSpaceId) -> Result<&AddressSpace, Error> {
        match self.spaces.check(id.0) {
            Ok(()) => Ok(self.spaces.get(id.0).expect("checked")),
            Err(Miss::Stale) => Err(Error::StaleAddressSpace(id)),
            Err(Miss::Foreign) => Err(Error::ForeignHandle {
                what: "address space",
                id: id.to_string(),
            }),
        }
    }

    pub(crate) fn check_listener(&self, id: ListenerId) -> Result<&ListenerEntry, Error> {
        match self.listeners.check(id.0) {
            Ok(()) => Ok(self.listeners.get(id.0).expect("checked")),
            Err(Miss::Stale) => Err(Error::StaleListener(id)),
            Err(Miss::Foreign) => Err(Error::ForeignHandle {
                what: "listener",
                id: id.to_string(),
            }),
        }
    }

    /// Every live region, in no particular order.
    pub fn regions(&self) -> impl Iterator<Item = (RegionId, &Region)> {
        self.regions
            .iter()
            .filter(|(_, r)| !r.doomed)
            .map(|(raw, r)| (RegionId(raw), r))
    }

    /// The regions called `name`.
    pub fn regions_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = RegionId> + 'a {
        self.regions()
            .filter(move |(_, r)| r.name == name)
            .map(|(id, _)| id)
    }

    // ----- transactions -----

    /// Opens a transaction (they nest).
    pub fn begin(&mut self) {
        self.depth += 1;
    }

    /// Closes a transaction; the outermost commit renders and dispatches.
    pub fn commit(&mut self) -> Result<(), Error> {
        if self.depth == 0 {
            return Err(Error::CommitWithoutTransaction);
        }
        self.depth -= 1;
        if self.depth == 0 {
            self.finish()
        } else {
            Ok(())
        }
    }

    /// True while a transaction is open.
    pub fn in_transaction(&self) -> bool {
        self.depth > 0
    }

    /// Runs `f` inside a transaction and commits it, whether `f` succeeded
    /// or not (each operation in `f` is itself all-or-nothing). Every
    /// mutation uses this for itself, so outside an open transaction it
    /// commits at once and inside one it joins it. If `f` fails, its error
    /// is returned even when the commit reported something too (a refusal
    /// or a panicking listener, which is detached all the same).
    pub fn transaction<T>(
        &mut self,
        f: impl FnOnce(&mut Memory) -> Result<T, Error>,
    ) -> Result<T, Error> {
        self.begin();
        let out = f(self);
        let committed = self.commit();
        let value = out?;
        committed?;
        Ok(value)
    }

    pub(crate) fn next_link_stamp(&mut self) -> u64 {
        self.link_clock += 1;
        self.link_clock
    }

    pub(crate) fn mark_pending(&mut self) {
        self.pending = true;
    }

    pub(crate) fn doom(&mut self, id: RegionId) {
        self.regions
            .get_mut(id.0)
            .expect("doomed region is live")
            .doomed = true;
        self.doomed.push(id);
    }

    fn finish(&mut self) -> Result<(), Error> {
        let result = if std::mem::take(&mut self.pending) {
            let result = self.run_commit();
            self.settle(result)
        } else {
            Ok(())
        };
        let doomed = std::mem::take(&mut self.doomed);
        if !doomed.is_empty() {
            // Current views stop referring to destroyed regions, so their
            // host memory is freed once older snapshots are dropped.
            for rv in self.roots.values_mut() {
                if doomed
                    .iter()
                    .any(|d| rv.view.targets.regions.contains_key(d))
                {
                    let mut view = (*rv.view).clone();
                    let mut regions = (*view.targets.regions).clone();
                    for d in &doomed {
                        regions.remove(d);
                    }
                    view.targets.regions = Arc::new(regions);
                    rv.publish(Arc::new(view));
                }
            }
        }
        for id in doomed {
            self.regions.remove(id.0);
        }
        result
    }

    // ----- address spaces -----

    /// Creates an address space named `name` whose contents are `root`.
    pub fn create_address_space(
        &mut self,
        name: &str,
        root: RegionId,
    ) -> Result<AddressSpaceId, Error> {
        self.transaction(|m| {
            m.region_mut(root)?.as_refs += 1;
            let empty = Arc::new(ViewCell {
                view: ArcSwap::new(Arc::new(FlatView::default())),
            });
            let id = AddressSpaceId(m.spaces.insert(AddressSpace {
                name: name.to_owned(),
                root,
                flat_root: None,
                chain: Vec::new(),
                cell: Arc::new(ArcSwap::new(empty)),
                listeners: Vec::new(),
                fresh: true,
                skipping: Vec::new(),
            }));
            m.space_order.push(id);
            m.publish_space(id, true);
            m.mark_pending();
            Ok(id)
        })
    }

    /// Destroys an address space. Its listeners are unregistered in replay
    /// mode (highest priority first) and handed back.
    pub fn destroy_address_space(
        &mut self,
        id: AddressSpaceId,
    ) -> Result<Vec<Box<dyn Listener>>, Error> {
        let listeners = self.space(id)?.listeners.clone();
        let mut out = Vec::new();
        let mut panics = Vec::new();
        for l in listeners.into_iter().rev() {
            match self.unregister_listener(l, Unregister::Replay) {
                Ok(listener) => out.push(listener),
                Err(Error::ListenerPanicked { panics: p, .. }) => panics.extend(p),
                Err(e) => return Err(e),
            }
        }
        self.publish_space(id, false);
        let space = self.spaces.remove(id.0).expect("checked");
        self.space_order.retain(|s| *s != id);
        if let Some(root) = self.regions.get_mut(space.root.0) {
            root.as_refs -= 1;
        }
        self.unindex_chain(id, &space.chain);
        self.set_skipping(&space.skipping, &[]);
        self.listened.retain(|a| *a != id);
        if !space.fresh {
            self.leave_root(id, space.flat_root);
        }
        if !panics.is_empty() {
            // The other listeners cannot ride along in the error: dropped.
            out.into_iter().for_each(drop_quietly);
            return Err(Error::ListenerPanicked {
                panics,
                other: None,
            });
        }
        Ok(out)
    }

    /// Address spaces in creation order.
    pub fn address_spaces(&self) -> impl Iterator<Item = AddressSpaceId> + '_ {
        self.space_order.iter().copied()
    }

    /// The name of an address space.
    pub fn address_space_name(&self, id: AddressSpaceId) -> Result<&str, Error> {
        Ok(&self.space(id)?.name)
    }

    /// The root region of an address space.
    pub fn address_space_root(&self, id: AddressSpaceId) -> Result<RegionId, Error> {
        Ok(self.space(id)?.root)
    }

    /// The committed flat view of an address space.
    pub fn view(&self, id: AddressSpaceId) -> Result<Arc<FlatView>, Error> {
        self.committed(id)
    }

    pub(crate) fn committed(&self, id: AddressSpaceId) -> Result<Arc<FlatView>, Error> {
        let space = self.space(id)?;
        if space.fresh {
            return Ok(Arc::new(FlatView::default()));
        }
        Ok(Arc::clone(&self.roots[&space.flat_root].view))
    }

    /// A handle readers keep to load committed views lock-free.
    pub fn view_handle(&self, id: AddressSpaceId) -> Result<ViewHandle, Error> {
        Ok(ViewHandle {
            cell: Arc::clone(&self.space(id)?.cell),
        })
    }

    /// Adds (or removes) an address space's handle in the table readers
    /// follow IOMMU translations through.
    fn publish_space(&mut self, id: AddressSpaceId, present: bool) {
        let mut table = (**self.space_table.load()).clone();
        if present {
            let cell = Arc::clone(&self.spaces.get(id.0).expect("live space").cell);
            table.insert(id, ViewHandle { cell });
        } else {
            table.remove(&id);
        }
        self.space_table.store(Arc::new(table));
    }

    /// The rendering engine in use.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// Chooses the rendering engine; takes effect at the next commit.
    /// Both give the same views and events (the tests check it).
    pub fn set_engine(&mut self, engine: Engine) {
        self.engine = engine;
        self.full_render = true;
    }

    /// Number of distinct rendered views (address spaces share them).
    pub fn view_count(&self) -> usize {
        self.roots.len()
    }

    /// The listeners of an address space, ascending by priority.
    pub fn listeners_of(&self, id: AddressSpaceId) -> Result<&[ListenerId], Error> {
        Ok(&self.space(id)?.listeners)
    }

    /// Runs `vfio_start` / `vfio_stop` where usage crossed zero.
    pub(crate) fn judge_iommu(&mut self) -> Result<(), Error> {
        match crate::notifier::judge(&self.regions, &mut self.iommu)
            .into_iter()
            .next()
        {
            None => Ok(()),
            Some((region, hook, message)) => Err(Error::IommuHook {
                region,
                hook,
                message,
            }),
        }
    }

    // ----- IOMMU -----

    /// Registers `notify` for `flags` events of the IOMMU region `region`
    /// over its region-relative range `[start, last]`. If the union of the
    /// region's notifier flags changes, its `notify_flags_changed` hook runs
    /// and may refuse, in which case nothing is registered.
    pub fn register_iommu_notifier(
        &mut self,
        region: RegionId,
        flags: crate::iommu::NotifierFlags,
        start: u64,
        last: u64,
        notify: Arc<dyn crate::iommu::IommuNotify>,
    ) -> Result<crate::NotifierId, Error> {
        self.region(region)?;
        crate::notifier::register_notifier(
            &self.regions,
            &mut self.iommu,
            crate::notifier::NotifierEntry {
                owner: None,
                region,
                flags,
                start,
                last,
                notify,
            },
        )
    }

    /// Unregisters an IOMMU notifier.
    pub fn unregister_iommu_notifier(&mut self, id: crate::NotifierId) -> Result<(), Error> {
        crate::notifier::unregister_notifier(&self.regions, &mut self.iommu, id)
    }

    /// Sends a notifier the current mappings in its range as MAP events;
    /// returns how many.
    pub fn replay_iommu_notifier(&self, id: crate::NotifierId) -> Result<usize, Error> {
        crate::notifier::replay_notifier(&self.regions, &self.iommu, id)
    }

    /// Tells the notifiers of `region` about `event` (what an IOMMU model
    /// calls when the guest changes a mapping); returns how many heard it.
    pub fn iommu_notify(
        &self,
        region: RegionId,
        event: &crate::iommu::IommuEvent,
    ) -> Result<usize, Error> {
        self.region(region)?;
        crate::notifier::notify(&self.regions, &self.iommu, region, event)
    }

    /// The union of the flags of the notifiers on `region`.
    pub fn iommu_notifier_flags(
        &self,
        region: RegionId,
    ) -> Result<crate::iommu::NotifierFlags, Error> {
        self.region(region)?;
        Ok(self.iommu.flags_of(region))
    }

    /// The usage of an IOMMU region: how many (listener, section) pairs
    /// IOMMU-user listeners hold, and whether `vfio_start` is in force.
    pub fn iommu_usage(&self, region: RegionId) -> Result<(u32, bool), Error> {
        let r = self.region(region)?;
        if !matches!(r.kind, crate::RegionKind::Iommu { .. }) {
            return Err(Error::NotAnIommu { region });
        }
        let u = self.iommu.usage.get(&region).copied().unwrap_or_default();
        Ok((u.count, u.started))
    }

    // ----- dirty logging -----

    /// True while global (migration) dirty logging is on.
    pub fn global_dirty_log(&self) -> bool {
        self.global_dirty_log
    }

    /// Starts or stops global dirty logging: `log_global_start` to every
    /// listener (ascending) or `log_global_stop` (descending), then every
    /// migratable range gains or loses the migration client (`log_start` /
    /// `log_stop` in the commit). A refused start stops the listeners
    /// already started and changes nothing.
    pub fn set_global_dirty_log(&mut self, on: bool) -> Result<(), Error> {
        if on == self.global_dirty_log {
            return Ok(());
        }
        let mut failures = Vec::new();
        let mut d = Dispatcher {
            regions: &self.regions,
            listeners: &mut self.listeners,
            iommu: &mut self.iommu,
            failures: &mut failures,
        };
        if on {
            if !d.log_global_start(&self.listener_order) {
                return self.settle(refused(failures));
            }
        } else {
            d.log_global_stop(&self.listener_order);
        }
        self.transaction(|m| {
            m.global_dirty_log = on;
            m.full_render = true;
            m.mark_pending();
            Ok(())
        })
    }

    /// Sends `log_sync` for every logged range of `as_id` to its listeners.
    pub fn log_sync(&mut self, as_id: AddressSpaceId) -> Result<(), Error> {
        let view = self.committed(as_id)?;
        let order = self.space(as_id)?.listeners.clone();
        let mut failures = Vec::new();
        Dispatcher {
            regions: &self.regions,
            listeners: &mut self.listeners,
            iommu: &mut self.iommu,
            failures: &mut failures,
        }
        .log_sync(as_id, &order, &view);
        self.settle(Ok(()))
    }
}

pub(crate) fn refused(failures: Vec<ListenerFailure>) -> Result<(), Error> {
    if failures.is_empty() {
        Ok(())
    } else {
        Err(Error::ListenerRefused { failures })
    }
}
