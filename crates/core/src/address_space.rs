//! Address spaces and the snapshots readers hold.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::flatview::FlatView;
use crate::id::{ListenerId, RegionId};

/// An address space: a root region and the flat view it resolves to.
pub(crate) struct AddressSpace {
    pub(crate) name: String,
    pub(crate) root: RegionId,
    /// The committed view.
    pub(crate) view: Arc<FlatView>,
    /// Where readers pick up the committed view without locking.
    pub(crate) published: Arc<ArcSwap<FlatView>>,
    /// Registered listeners, ascending by (priority, registration order).
    pub(crate) listeners: Vec<ListenerId>,
}

impl AddressSpace {
    pub(crate) fn publish(&mut self, view: Arc<FlatView>) {
        self.published.store(Arc::clone(&view));
        self.view = view;
    }
}

/// A reader's handle on an address space's committed flat view.
///
/// Cloning is cheap. [`load`](Self::load) returns the view committed last,
/// as an `Arc` that never changes under the reader; the writer publishes a
/// new view with an atomic pointer swap, so readers never block it and
/// never see a half-updated view.
#[derive(Clone)]
pub struct ViewHandle {
    pub(crate) published: Arc<ArcSwap<FlatView>>,
}

impl ViewHandle {
    /// The current committed view.
    pub fn load(&self) -> Arc<FlatView> {
        self.published.load_full()
    }
}

impl std::fmt::Debug for ViewHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewHandle")
            .field("ranges", &self.published.load().ranges.len())
            .finish()
    }
}
