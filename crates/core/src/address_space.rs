//! Address spaces, the views they share, and the snapshots readers hold.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::flatview::FlatView;
use crate::id::{AddressSpaceId, ListenerId, RegionId};

/// Where readers find the current view of one flat-view root. All address
/// spaces that resolve to that root point at the same cell, so a commit
/// publishes a changed view once, however many address spaces share it.
#[derive(Debug)]
pub(crate) struct ViewCell {
    pub(crate) view: ArcSwap<FlatView>,
}

/// A rendered view and who uses it.
#[derive(Debug)]
pub(crate) struct RootView {
    pub(crate) view: Arc<FlatView>,
    pub(crate) cell: Arc<ViewCell>,
    pub(crate) users: Vec<AddressSpaceId>,
}

impl RootView {
    pub(crate) fn new(view: FlatView) -> RootView {
        let view = Arc::new(view);
        RootView {
            cell: Arc::new(ViewCell {
                view: ArcSwap::new(Arc::clone(&view)),
            }),
            view,
            users: Vec::new(),
        }
    }

    pub(crate) fn publish(&mut self, view: Arc<FlatView>) {
        self.cell.view.store(Arc::clone(&view));
        self.view = view;
    }
}

/// An address space: a root region and the flat view it resolves to.
pub(crate) struct AddressSpace {
    pub(crate) name: String,
    pub(crate) root: RegionId,
    /// The region the view is rendered from (`None`: nothing renders).
    pub(crate) flat_root: Option<RegionId>,
    /// The regions walked from `root` to `flat_root` (both included), then
    /// those the walk found to render nothing (see `Regions::flat_root`):
    /// a change to any of them may change `flat_root`.
    pub(crate) chain: Vec<RegionId>,
    /// Points readers at the cell of the current flat root.
    pub(crate) cell: Arc<ArcSwap<ViewCell>>,
    /// Registered listeners, ascending by (priority, registration order).
    pub(crate) listeners: Vec<ListenerId>,
    /// Created in the current transaction: not yet resolved.
    pub(crate) fresh: bool,
    /// The chain regions this space lets damage walks skip.
    pub(crate) skipping: Vec<RegionId>,
}

/// A reader's handle on an address space's committed flat view.
///
/// Cloning is cheap. [`load`](Self::load) returns the view committed last,
/// as an `Arc` that never changes under the reader; the writer publishes a
/// new view with atomic pointer swaps, so readers never block it and never
/// see a half-updated view: a view is one whole commit (all of a
/// transaction or none of it). Address spaces are published one after
/// another, so views of two of them loaded one after the other may straddle
/// a commit; an IOMMU translation loads its target's view at the time of
/// the access.
#[derive(Clone)]
pub struct ViewHandle {
    pub(crate) cell: Arc<ArcSwap<ViewCell>>,
}

impl ViewHandle {
    /// The current committed view.
    #[inline]
    pub fn load(&self) -> Arc<FlatView> {
        self.cell.load().view.load_full()
    }
}

impl std::fmt::Debug for ViewHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewHandle")
            .field("ranges", &self.load().ranges.len())
            .finish()
    }
}

/// A reader's view with a one-entry cache of the last range hit, for vCPU
/// threads that touch the same range again and again (a device's MMIO
/// window, a RAM page).
///
/// It reads the view it loaded last; [`refresh`](Self::refresh) picks up
/// the latest committed view (cheap: one atomic load and a pointer
/// compare) and drops the cache if the view changed.
#[derive(Debug, Clone)]
pub struct ViewReader {
    handle: ViewHandle,
    view: Arc<FlatView>,
    hit: Option<crate::flatview::FlatRange>,
}

impl ViewReader {
    /// A reader of the address space behind `handle`.
    pub fn new(handle: ViewHandle) -> ViewReader {
        let view = handle.load();
        ViewReader {
            handle,
            view,
            hit: None,
        }
    }

    /// Loads the latest committed view.
    pub fn refresh(&mut self) {
        let latest = self.handle.load();
        if !Arc::ptr_eq(&latest, &self.view) {
            self.view = latest;
            self.hit = None;
        }
    }

    /// The view being read.
    pub fn view(&self) -> &Arc<FlatView> {
        &self.view
    }

    /// The range containing `addr` in the view being read.
    #[inline]
    pub fn lookup(&mut self, addr: u64) -> Option<&crate::flatview::FlatRange> {
        let cached = matches!(&self.hit, Some(h) if h.start <= addr && addr <= h.last);
        if !cached {
            self.hit = Some(*self.view.lookup(addr)?);
        }
        self.hit.as_ref()
    }
}
