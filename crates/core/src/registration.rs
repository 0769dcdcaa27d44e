//! Registering and unregistering listeners, and detaching those that
//! panic (the contract is in the `listener` module's docs).

use crate::dispatch::{Delta, Dispatcher, ListenerEntry};
use crate::error::{Error, ListenerFailure, ListenerPanic};
use crate::flatview::FlatView;
use crate::id::{AddressSpaceId, ListenerId};
use crate::listener::{Listener, ListenerConfig, Unregister};
use crate::memory::{refused, Memory};

impl Memory {
    /// Registers `listener` on `as_id` and replays the current view to it.
    ///
    /// If the listener refuses anything during the replay, what it accepted
    /// is taken back (replayed as deletions), it is not registered, and
    /// [`Error::ListenerRefused`] is returned. If it panics, it is not
    /// called again: what it accepted is released without telling it, it
    /// is dropped, and [`Error::ListenerPanicked`] is returned.
    pub fn register_listener(
        &mut self,
        as_id: AddressSpaceId,
        config: ListenerConfig,
        listener: Box<dyn Listener>,
    ) -> Result<ListenerId, Error> {
        self.space(as_id)?;
        self.listener_seq += 1;
        let entry = ListenerEntry::new(config, as_id, self.listener_seq, listener);
        let key = entry.order_key();
        let id = ListenerId(self.listeners.insert(entry));
        let listeners = &self.listeners;
        let by_key = |l: &ListenerId| listeners.get(l.0).expect("live").order_key();
        let pos = self.listener_order.partition_point(|l| by_key(l) < key);
        self.listener_order.insert(pos, id);
        let space = self.spaces.get_mut(as_id.0).expect("checked");
        let pos = space.listeners.partition_point(|l| by_key(l) < key);
        space.listeners.insert(pos, id);
        if space.listeners.len() == 1 {
            let order = &self.space_order;
            let rank = |a: &AddressSpaceId| order.iter().position(|o| o == a);
            let pos = self.listened.partition_point(|a| rank(a) < rank(&as_id));
            self.listened.insert(pos, as_id);
        }
        let view = self.committed(as_id)?;
        let empty = FlatView::default();
        let failures = self.replay_to(id, as_id, &empty, &view);
        if self.has_panicked(id) {
            // Nothing was started for it: counts go back before judging.
            let panics = self.reap_panicked();
            let hooks = self.judge_iommu();
            return Err(Error::ListenerPanicked {
                panics,
                other: hooks.err().map(Box::new),
            });
        }
        let hooks = crate::notifier::judge(&self.regions, &mut self.iommu);
        if failures.is_empty() && hooks.is_empty() {
            return Ok(id);
        }
        self.replay_to(id, as_id, &view, &empty);
        if self.has_panicked(id) {
            // It panicked while its refusal was undone.
            self.reap_panicked();
        } else {
            self.forget_listener(id);
        }
        // Undoing the replay brought the counts back: nothing to start.
        let _ = crate::notifier::judge(&self.regions, &mut self.iommu);
        if let Some((region, hook, message)) = hooks.into_iter().next() {
            return Err(Error::IommuHook {
                region,
                hook,
                message,
            });
        }
        refused(failures).map(|()| id)
    }

    /// Unregisters a listener and hands it back; see [`Unregister`].
    ///
    /// If it panics during a replay-mode unregistration, it is not called
    /// again, what it still held is released without telling it, it is
    /// dropped, and [`Error::ListenerPanicked`] is returned: it is gone
    /// all the same.
    pub fn unregister_listener(
        &mut self,
        id: ListenerId,
        mode: Unregister,
    ) -> Result<Box<dyn Listener>, Error> {
        let as_id = self.check_listener(id)?.address_space;
        if mode == Unregister::Replay {
            let view = self.committed(as_id)?;
            self.replay_to(id, as_id, &view, &FlatView::default());
        }
        let entry = self.release_listener(id);
        // Only stops can follow an unregistration; a failing one still
        // leaves the region stopped (nothing uses it), so it is logged and
        // the listener handed back.
        if let Err(e) = self.judge_iommu() {
            tracing::warn!(error = %e, "IOMMU hook failed while unregistering a listener");
        }
        if let Some(panic) = entry.panicked {
            drop_quietly(entry.listener);
            return Err(Error::ListenerPanicked {
                panics: vec![panic],
                other: None,
            });
        }
        Ok(entry.listener)
    }

    /// Takes a listener out without telling it: what it still contributes
    /// to IOMMU usage is counted down (after a replay-mode unregistration,
    /// nothing), the notifiers its callbacks registered and did not take
    /// back are unregistered, and its entry is handed back. Hooks are not
    /// run: the caller judges usage.
    fn release_listener(&mut self, id: ListenerId) -> ListenerEntry {
        let held = std::mem::take(
            &mut self
                .listeners
                .get_mut(id.0)
                .expect("live listener")
                .iommu_held,
        );
        for (region, n) in held {
            for _ in 0..n {
                self.iommu.count(region, false);
            }
        }
        let owned: Vec<crate::NotifierId> = self
            .iommu
            .notifiers
            .iter()
            .filter(|(_, n)| n.owner == Some(id))
            .map(|(raw, _)| crate::NotifierId(raw))
            .collect();
        for n in owned {
            if let Err(e) = crate::notifier::unregister_notifier(&self.regions, &mut self.iommu, n)
            {
                tracing::warn!(error = %e, "IOMMU hook failed while dropping a leaving listener's notifier");
            }
        }
        self.forget_listener(id)
    }

    fn has_panicked(&self, id: ListenerId) -> bool {
        self.listeners
            .get(id.0)
            .is_some_and(|e| e.panicked.is_some())
    }

    /// Detaches and drops every listener that panicked; returns the
    /// panics, in listener order. Hooks are not run.
    fn reap_panicked(&mut self) -> Vec<ListenerPanic> {
        let dead: Vec<ListenerId> = self
            .listener_order
            .iter()
            .copied()
            .filter(|l| self.has_panicked(*l))
            .collect();
        let mut panics = Vec::with_capacity(dead.len());
        for id in dead {
            let entry = self.release_listener(id);
            panics.extend(entry.panicked);
            drop_quietly(entry.listener);
        }
        panics
    }

    /// Ends an operation that dispatched: listeners that panicked are
    /// detached (with `vfio_stop` where usage reached zero), and `result`
    /// is folded into [`Error::ListenerPanicked`] if any did.
    pub(crate) fn settle(&mut self, result: Result<(), Error>) -> Result<(), Error> {
        let panics = self.reap_panicked();
        if panics.is_empty() {
            return result;
        }
        let hooks = self.judge_iommu();
        let gone = |l: ListenerId| panics.iter().any(|p| p.listener == l);
        let other = match result {
            Ok(()) => None,
            Err(Error::ListenerRefused { failures }) => {
                // A detached listener's own refusals no longer matter.
                let failures: Vec<_> = failures.into_iter().filter(|f| !gone(f.listener)).collect();
                (!failures.is_empty()).then_some(Error::ListenerRefused { failures })
            }
            Err(e) => Some(e),
        };
        Err(Error::ListenerPanicked {
            panics,
            other: other.or(hooks.err()).map(Box::new),
        })
    }

    /// Tells one listener, in its own `begin` / `commit`, how its view goes
    /// from `from` to `to` (registration replays from an empty view,
    /// unregistration to one); returns what it refused.
    fn replay_to(
        &mut self,
        id: ListenerId,
        as_id: AddressSpaceId,
        from: &FlatView,
        to: &FlatView,
    ) -> Vec<ListenerFailure> {
        let mut failures = Vec::new();
        let mut d = Dispatcher {
            regions: &self.regions,
            listeners: &mut self.listeners,
            iommu: &mut self.iommu,
            failures: &mut failures,
        };
        d.bracket(&[id], false);
        d.view_change(as_id, &[id], &Delta::whole(from, to));
        d.bracket(&[id], true);
        failures
    }

    fn forget_listener(&mut self, id: ListenerId) -> ListenerEntry {
        let entry = self.listeners.remove(id.0).expect("live listener");
        self.listener_order.retain(|l| *l != id);
        if let Some(space) = self.spaces.get_mut(entry.address_space.0) {
            space.listeners.retain(|l| *l != id);
            if space.listeners.is_empty() {
                self.listened.retain(|a| *a != entry.address_space);
            }
        }
        entry
    }

    /// The configuration a listener was registered with.
    pub fn listener_config(&self, id: ListenerId) -> Result<&ListenerConfig, Error> {
        Ok(&self.check_listener(id)?.config)
    }
}

/// Drops a listener that may panic in its `Drop`.
pub(crate) fn drop_quietly(listener: Box<dyn Listener>) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(listener))).is_err() {
        tracing::error!("a detached listener panicked while being dropped");
    }
}
