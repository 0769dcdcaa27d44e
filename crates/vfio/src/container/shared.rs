//! The state a container shares with its listeners and notifiers: the
//! kernel and fd, the records of groups, windows and registrations, the
//! guest RAM table, and the error log.
//!
//! Locking: `state` is taken by the owner and by listener callbacks
//! (which the memory framework runs one at a time); notifiers never take
//! it, so a callback may replay a notifier while holding it. Notifiers
//! read `ram` and write `log` and the counters only.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use addrspace_core::{AddressSpaceId, ListenerId};
use parking_lot::{Mutex, RwLock};

use super::{ContainerConfig, SpaprInfo};
use crate::call::KernelExt;
use crate::error::VfioError;
use crate::guest_ram::GuestRam;
use crate::handle::{ContainerFd, DeviceFd, GroupFd, IommuGroupId};
use crate::kernel::VfioKernel;
use crate::window::{HostWindow, SectionRecord};

/// How many errors the log keeps; older ones are dropped (and still
/// counted), so a guest that keeps writing bad TCEs cannot grow it.
pub const ERROR_LOG_CAPACITY: usize = 64;

/// An attached group.
#[derive(Debug)]
pub(crate) struct GroupEntry {
    pub(crate) fd: GroupFd,
    pub(crate) devices: Vec<DeviceFd>,
}

/// What `SET_IOMMU` and the setup after it established.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Backend {
    /// sPAPR: what `GET_INFO` reported.
    pub(crate) spapr: Option<SpaprInfo>,
    /// sPAPR v1: the fixed window `ENABLE` turned on.
    pub(crate) fixed_window: Option<HostWindow>,
}

/// A registered memory range and how many RAM sections use it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Registered {
    pub(crate) size: u64,
    /// Sections using it; 0 when unregistering failed and the kernel still
    /// holds it.
    pub(crate) users: u32,
}

/// The listeners a plugged container has registered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlugIds {
    /// The guest memory address space.
    pub guest_memory: AddressSpaceId,
    /// The memory listener on it (pre-registration, RAM tracking or
    /// Type1 mapping).
    pub memory_listener: ListenerId,
    /// The DMA address space (sPAPR).
    pub dma: Option<AddressSpaceId>,
    /// The IOMMU listener on it (sPAPR).
    pub dma_listener: Option<ListenerId>,
}

/// Everything behind the state lock.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) groups: BTreeMap<IommuGroupId, GroupEntry>,
    pub(crate) backend: Option<Backend>,
    /// IOMMU sections followed, by bus address.
    pub(crate) sections: BTreeMap<u64, SectionRecord>,
    /// Registered memory by host address (sPAPR v2).
    pub(crate) registered: BTreeMap<u64, Registered>,
    pub(crate) plug: Option<PlugIds>,
}

/// Counters of what the listeners and notifiers did.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) maps: AtomicU64,
    pub(crate) unmaps: AtomicU64,
    pub(crate) kernel_failures: AtomicU64,
    pub(crate) refused: AtomicU64,
}

/// What the container's listeners and notifiers did, since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ContainerStats {
    /// Successful `MAP_DMA` calls.
    pub maps: u64,
    /// Successful `UNMAP_DMA` calls.
    pub unmaps: u64,
    /// Kernel calls that failed where no caller could be told (inside a
    /// notifier, `region_del` or `commit`); each is in the error log.
    pub kernel_failures: u64,
    /// Guest mappings refused before reaching the kernel (not guest RAM,
    /// wrong target address space); each is in the error log.
    pub refused: u64,
    /// Errors logged in all.
    pub errors: u64,
}

/// The last [`ERROR_LOG_CAPACITY`] errors, numbered from 0.
#[derive(Debug, Default)]
pub(crate) struct ErrorLog {
    entries: VecDeque<(u64, VfioError)>,
    total: u64,
}

impl ErrorLog {
    fn push(&mut self, err: VfioError) {
        if self.entries.len() == ERROR_LOG_CAPACITY {
            self.entries.pop_front();
        }
        self.entries.push_back((self.total, err));
        self.total += 1;
    }

    /// Errors logged so far (the number the next one gets).
    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    /// The first failed kernel call numbered `seq` or later that is still
    /// kept, rendered.
    pub(crate) fn first_kernel_failure_since(&self, seq: u64) -> Option<String> {
        self.entries
            .iter()
            .find(|(n, e)| *n >= seq && e.kernel_call().is_some())
            .map(|(_, e)| e.to_string())
    }

    fn take(&mut self) -> Vec<VfioError> {
        self.entries.drain(..).map(|(_, e)| e).collect()
    }
}

/// A container's shared core.
pub(crate) struct Shared<K: VfioKernel> {
    pub(crate) kernel: Arc<K>,
    pub(crate) fd: ContainerFd,
    pub(crate) config: ContainerConfig,
    pub(crate) state: Mutex<State>,
    pub(crate) ram: RwLock<GuestRam>,
    pub(crate) log: Mutex<ErrorLog>,
    pub(crate) counters: Counters,
    released: AtomicBool,
}

impl<K: VfioKernel> std::fmt::Debug for Shared<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Container");
        d.field("fd", &self.fd).field("config", &self.config);
        // Debug output may be asked for while the lock is held (a panic
        // message inside a callback): never wait for it.
        match self.state.try_lock() {
            Some(state) => d.field("state", &*state),
            None => d.field("state", &"<locked>"),
        }
        .field("released", &self.is_released())
        .finish_non_exhaustive()
    }
}

impl<K: VfioKernel> Shared<K> {
    pub(crate) fn new(kernel: Arc<K>, fd: ContainerFd, config: ContainerConfig) -> Self {
        Self {
            kernel,
            fd,
            config,
            state: Mutex::new(State::default()),
            ram: RwLock::new(GuestRam::default()),
            log: Mutex::new(ErrorLog::default()),
            counters: Counters::default(),
            released: AtomicBool::new(false),
        }
    }

    /// The container's fds are closed: nothing may reach the kernel.
    pub(crate) fn is_released(&self) -> bool {
        self.released.load(Ordering::Acquire)
    }

    /// `Released` once the container is released.
    pub(crate) fn check_live(&self) -> Result<(), VfioError> {
        if self.is_released() {
            Err(VfioError::Released)
        } else {
            Ok(())
        }
    }

    /// Records an error nobody could be told about, and counts it.
    pub(crate) fn log(&self, err: VfioError) {
        let counter = match &err {
            VfioError::Kernel { .. } | VfioError::UnexpectedReturn { .. } => {
                Some(&self.counters.kernel_failures)
            }
            VfioError::NotGuestRam { .. } | VfioError::ForeignTarget { .. } => {
                Some(&self.counters.refused)
            }
            _ => None,
        };
        if let Some(counter) = counter {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        self.log.lock().push(err);
    }

    /// Logs the error of `result`, if any.
    pub(crate) fn log_err(&self, result: Result<(), VfioError>) {
        if let Err(err) = result {
            self.log(err);
        }
    }

    pub(crate) fn stats(&self) -> ContainerStats {
        let c = &self.counters;
        ContainerStats {
            maps: c.maps.load(Ordering::Relaxed),
            unmaps: c.unmaps.load(Ordering::Relaxed),
            kernel_failures: c.kernel_failures.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            errors: self.log.lock().total(),
        }
    }

    pub(crate) fn take_errors(&self) -> Vec<VfioError> {
        self.log.lock().take()
    }

    /// Takes one group out: closes its device fds, unsets its container and
    /// closes it. Stops at the first failure, leaving the group recorded
    /// with whatever is still open.
    pub(crate) fn detach_group(
        &self,
        st: &mut State,
        group: IommuGroupId,
    ) -> Result<(), VfioError> {
        let k = &*self.kernel;
        let entry = st
            .groups
            .get_mut(&group)
            .ok_or(VfioError::GroupNotAttached { group })?;
        while let Some(&device) = entry.devices.last() {
            k.close_device_typed(device)?;
            entry.devices.pop();
        }
        k.unset_container_typed(group, entry.fd)?;
        let fd = entry.fd;
        st.groups.remove(&group);
        if st.groups.is_empty() {
            // The last group took the backend with it: windows freed,
            // registrations dropped, locked memory returned.
            st.backend = None;
            st.sections.clear();
            st.registered.clear();
        }
        k.close_group_typed(group, fd)
    }

    /// Releases everything the container holds in the kernel: every group
    /// (device fds, `UNSET_CONTAINER`, close) and the container fd. Goes
    /// on past failures and returns the first.
    pub(crate) fn release_all(&self) -> Result<(), VfioError> {
        if self.released.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let mut st = self.state.lock();
        let mut first = None;
        let groups: Vec<IommuGroupId> = st.groups.keys().copied().collect();
        for group in groups {
            if let Err(err) = self.detach_group(&mut st, group) {
                first.get_or_insert(err);
                st.groups.remove(&group);
            }
        }
        *st = State::default();
        drop(st);
        *self.ram.write() = GuestRam::default();
        if let Err(err) = self.kernel.close_container_typed(self.fd) {
            first.get_or_insert(err);
        }
        first.map_or(Ok(()), Err)
    }
}

impl<K: VfioKernel> Drop for Shared<K> {
    fn drop(&mut self) {
        // A container dropped without `release` still gives its fds back;
        // there is nobody left to tell about failures.
        let _ = self.release_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errno::Errno;

    #[test]
    fn error_log_keeps_the_newest_entries_and_counts_all() {
        let mut log = ErrorLog::default();
        for i in 0..(ERROR_LOG_CAPACITY as u64 + 10) {
            log.push(VfioError::Kernel {
                call: crate::call::KernelCall::SpaprTceRemove { start: i },
                errno: Errno::EINVAL,
            });
        }
        assert_eq!(log.total(), ERROR_LOG_CAPACITY as u64 + 10);
        let first = log.first_kernel_failure_since(0).unwrap();
        assert!(first.contains("start 0xa)"), "{first}");
        let kept = log.take();
        assert_eq!(kept.len(), ERROR_LOG_CAPACITY);
        assert!(log.first_kernel_failure_since(0).is_none());
    }
}
