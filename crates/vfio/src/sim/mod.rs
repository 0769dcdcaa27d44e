//! [`SimKernel`]: a simulated Linux VFIO kernel on a PowerNV (IODA2) host,
//! with the sPAPR TCE backend (v1, v2) and, optionally, a small Type1.
//!
//! The simulator follows current mainline; where kernels differ it picks
//! mainline, and where mainline has a quirk (QUIRK in the spec) the
//! [`SimMode`] decides between reproducing it and failing. Its state is
//! behind one `parking_lot::Mutex`, so an `Arc<SimKernel>` can be shared
//! and every call is atomic. The simulator never reuses fd numbers, so a
//! closed [`ContainerFd`] still names its container for observation.
//!
//! Layout: [`config`] (the host), `container` and `group` (life cycle),
//! `spapr` (windows, TCEs, pre-registration), `type1`, `memory` (per
//! process: locked memory, registrations), [`observe`] (what tests see),
//! [`stats`] (counters).

pub mod config;
mod container;
mod env;
mod group;
pub mod memory;
pub mod observe;
mod spapr;
pub mod stats;
#[cfg(test)]
mod tests;
mod type1;

use std::collections::{BTreeMap, HashMap};

use parking_lot::Mutex;

use crate::args::{
    DmaMap, DmaUnmap, GroupStatus, SpaprRegisterMemory, SpaprTceCreate, SpaprTceInfo,
    SpaprTceRemove,
};
use crate::errno::Errno;
use crate::handle::{ContainerFd, DeviceFd, GroupFd, IommuGroupId};
use crate::kernel::VfioKernel;
use config::{SimConfig, SimMode};
use container::{Backend, Container};
use env::Env;
use group::GroupState;
use memory::{Limits, Mm, ProcessId, Registration};
use observe::{
    BackendSnapshot, ContainerSnapshot, HostTce, IommuBackend, MemoryRange, PeState,
    ProcessSnapshot, SimSnapshot, SpaprSnapshot, Type1Mapping, WindowInfo,
};
use stats::{Ioctl, SimStats};

/// What an open fd of the simulator refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FdKind {
    Container,
    Group(IommuGroupId),
    Device(IommuGroupId),
}

/// Everything behind the simulator's lock.
#[derive(Debug)]
pub(crate) struct SimState {
    pub(crate) cfg: SimConfig,
    next_fd: i32,
    pub(crate) fds: HashMap<i32, FdKind>,
    pub(crate) containers: BTreeMap<ContainerFd, Container>,
    pub(crate) groups: BTreeMap<IommuGroupId, GroupState>,
    pub(crate) mms: BTreeMap<ProcessId, Mm>,
    current: ProcessId,
    locked_limit: u64,
    stats: SimStats,
}

impl SimState {
    pub(crate) fn alloc_fd(&mut self, kind: FdKind) -> i32 {
        let fd = self.next_fd;
        self.next_fd += 1;
        self.fds.insert(fd, kind);
        fd
    }

    fn limits(&self) -> Limits {
        Limits {
            host_page_shift: self.cfg.host_page_shift,
            locked_bytes: self.locked_limit,
        }
    }

    /// A container and the rest of the kernel, borrowed apart.
    pub(crate) fn split(&mut self, fd: ContainerFd) -> Option<(&mut Container, Env<'_>)> {
        let limits = self.limits();
        let SimState {
            cfg,
            containers,
            groups,
            mms,
            current,
            ..
        } = self;
        let container = containers.get_mut(&fd)?;
        let env = Env {
            cfg,
            limits,
            current: *current,
            groups,
            mms,
        };
        Some((container, env))
    }

    fn snapshot(&self) -> SimSnapshot {
        let shift = self.cfg.host_page_shift;
        SimSnapshot {
            containers: self
                .containers
                .iter()
                .map(|(&fd, c)| (fd, c.snapshot(shift)))
                .collect(),
            groups: self
                .groups
                .iter()
                .map(|(&id, g)| (id, g.snapshot()))
                .collect(),
            processes: self
                .mms
                .iter()
                .filter(|(_, mm)| mm.locked_pages > 0 || !mm.registrations.is_empty())
                .map(|(&pid, mm)| {
                    let snapshot = ProcessSnapshot {
                        locked_bytes: mm.locked_pages << shift,
                        registrations: mm.registrations.values().cloned().collect(),
                    };
                    (pid, snapshot)
                })
                .collect(),
        }
    }
}

/// A simulated Linux VFIO kernel. See the [module docs](self) and the
/// crate docs for what it models.
#[derive(Debug)]
pub struct SimKernel {
    state: Mutex<SimState>,
}

impl SimKernel {
    /// A configuration to build a simulator from (same as [`SimConfig::new`]).
    pub fn builder() -> SimConfig {
        SimConfig::new()
    }

    /// A simulator of the host `cfg` describes, all groups closed, process
    /// 1 current.
    pub fn new(cfg: SimConfig) -> Self {
        let groups = cfg
            .groups
            .values()
            .map(|g| (g.id, GroupState::new(g.clone())))
            .collect();
        let locked_limit = cfg.locked_memory_limit;
        Self {
            state: Mutex::new(SimState {
                cfg,
                next_fd: 3,
                fds: HashMap::new(),
                containers: BTreeMap::new(),
                groups,
                mms: BTreeMap::new(),
                current: ProcessId(1),
                locked_limit,
                stats: SimStats::default(),
            }),
        }
    }

    /// The faithful/strict mode.
    pub fn mode(&self) -> SimMode {
        self.state.lock().cfg.mode
    }

    /// Makes `process` the caller of every following call (the `current`
    /// task), e.g. to see `EPERM` from a container bound to another one.
    pub fn set_current_process(&self, process: ProcessId) {
        self.state.lock().current = process;
    }

    /// The process making calls.
    pub fn current_process(&self) -> ProcessId {
        self.state.lock().current
    }

    /// Changes the locked-memory limit (bytes; `u64::MAX` is unlimited).
    /// Memory already charged stays charged.
    pub fn set_locked_memory_limit(&self, bytes: u64) {
        self.state.lock().locked_limit = bytes;
    }

    /// Declares `[vaddr, vaddr + size)` of the current process backed by
    /// huge pages of `page_shift` (hugetlbfs), replacing declarations it
    /// overlaps. Registrations made afterwards can back IOMMU pages up to
    /// that size; the rest of memory is backed by host pages.
    pub fn back_with_huge_pages(&self, vaddr: u64, size: u64, page_shift: u32) {
        let mut st = self.state.lock();
        let current = st.current;
        st.mms
            .entry(current)
            .or_default()
            .set_backing(vaddr, size, page_shift);
    }

    /// Call counters since creation or the last [`reset_stats`](Self::reset_stats).
    pub fn stats(&self) -> SimStats {
        self.state.lock().stats.clone()
    }

    /// Zeroes the call counters.
    pub fn reset_stats(&self) {
        self.state.lock().stats = SimStats::default();
    }

    /// The whole state, for comparing before and after.
    pub fn snapshot(&self) -> SimSnapshot {
        self.state.lock().snapshot()
    }

    /// A container's state, while it lives (its fd may be closed).
    pub fn container(&self, container: ContainerFd) -> Option<ContainerSnapshot> {
        let st = self.state.lock();
        let shift = st.cfg.host_page_shift;
        st.containers.get(&container).map(|c| c.snapshot(shift))
    }

    fn spapr(&self, container: ContainerFd) -> Option<SpaprSnapshot> {
        match self.container(container)?.backend? {
            BackendSnapshot::Spapr(spapr) => Some(spapr),
            _ => None,
        }
    }

    /// Locked memory of the current process, in bytes.
    pub fn locked_memory(&self) -> u64 {
        self.locked_memory_of(self.current_process())
    }

    /// Locked memory of `process`, in bytes.
    pub fn locked_memory_of(&self, process: ProcessId) -> u64 {
        let st = self.state.lock();
        st.mms
            .get(&process)
            .map_or(0, |mm| mm.locked_pages << st.cfg.host_page_shift)
    }

    /// The container's sPAPR windows by slot (empty for other backends).
    pub fn windows(&self, container: ContainerFd) -> Vec<WindowInfo> {
        self.spapr(container)
            .map(|s| s.windows.iter().map(|w| w.info).collect())
            .unwrap_or_default()
    }

    /// Host TCEs of the window starting at `window_start`, by bus address.
    pub fn window_tces(
        &self,
        container: ContainerFd,
        window_start: u64,
    ) -> Option<BTreeMap<u64, HostTce>> {
        self.spapr(container)?
            .windows
            .into_iter()
            .find(|w| w.info.start == window_start)
            .map(|w| w.entries)
    }

    /// Host TCEs of all the container's windows, by bus address (windows
    /// never overlap, so addresses are unique).
    pub fn host_tces(&self, container: ContainerFd) -> BTreeMap<u64, HostTce> {
        self.spapr(container)
            .map(|s| s.windows.into_iter().flat_map(|w| w.entries).collect())
            .unwrap_or_default()
    }

    /// Whether the default 32-bit window is pending.
    pub fn default_window_pending(&self, container: ContainerFd) -> bool {
        self.spapr(container)
            .is_some_and(|s| s.default_window_pending)
    }

    /// Ranges the container registered, ascending.
    pub fn registered_memory(&self, container: ContainerFd) -> Vec<MemoryRange> {
        self.spapr(container)
            .map(|s| s.registered)
            .unwrap_or_default()
    }

    /// Pre-registered memory of the current process (all its containers,
    /// ranges left pinned by the unregister QUIRK included).
    pub fn registrations(&self) -> Vec<Registration> {
        let st = self.state.lock();
        st.mms
            .get(&st.current)
            .map(|mm| mm.registrations.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The container's Type1 mappings, ascending (empty for other backends).
    pub fn type1_mappings(&self, container: ContainerFd) -> Vec<Type1Mapping> {
        match self.container(container).and_then(|c| c.backend) {
            Some(BackendSnapshot::Type1(t)) => t.mappings,
            _ => Vec::new(),
        }
    }

    /// Which backend the container uses, once set.
    pub fn iommu_backend(&self, container: ContainerFd) -> Option<IommuBackend> {
        let st = self.state.lock();
        st.containers
            .get(&container)?
            .backend
            .as_ref()
            .map(Backend::kind)
    }

    /// The process the container is bound to, once bound.
    pub fn container_process(&self, container: ContainerFd) -> Option<ProcessId> {
        self.spapr(container)?.process
    }

    /// The DMA configuration of a group's PE (`None` for an unknown group).
    pub fn pe_state(&self, group: IommuGroupId) -> Option<PeState> {
        self.state.lock().groups.get(&group).map(|g| g.pe.clone())
    }

    /// Runs one call under the lock and counts it.
    fn call<R>(
        &self,
        ioctl: Ioctl,
        op: impl FnOnce(&mut SimState) -> Result<R, Errno>,
        value: impl Fn(&R) -> i32,
    ) -> Result<R, Errno> {
        let mut st = self.state.lock();
        let outcome = op(&mut st);
        st.stats
            .record(ioctl, outcome.as_ref().map(&value).map_err(|e| *e));
        outcome
    }

    fn call0(
        &self,
        ioctl: Ioctl,
        op: impl FnOnce(&mut SimState) -> Result<(), Errno>,
    ) -> Result<(), Errno> {
        self.call(ioctl, op, |_| 0)
    }

    fn call_value(
        &self,
        ioctl: Ioctl,
        op: impl FnOnce(&mut SimState) -> Result<i32, Errno>,
    ) -> Result<i32, Errno> {
        self.call(ioctl, op, |v| *v)
    }
}

/// `ENOTTY` for an sPAPR ioctl on a backend of another family. (On a real
/// Type1 container `SPAPR_TCE_GET_INFO` shares its number with Type1's
/// `GET_INFO` and would be answered as that; the simulator says `ENOTTY`.)
fn spapr_only<R>(
    backend: &mut Backend,
    op: impl FnOnce(&mut spapr::SpaprBackend) -> Result<R, Errno>,
) -> Result<R, Errno> {
    match backend {
        Backend::Spapr(spapr) => op(spapr),
        _ => Err(Errno::ENOTTY),
    }
}

impl VfioKernel for SimKernel {
    fn open_container(&self) -> Result<ContainerFd, Errno> {
        self.call(Ioctl::OpenContainer, |st| Ok(st.open_container()), |_| 0)
    }

    fn close_container(&self, container: ContainerFd) -> Result<(), Errno> {
        self.call0(Ioctl::CloseContainer, |st| st.close_container(container))
    }

    fn open_group(&self, group: IommuGroupId) -> Result<GroupFd, Errno> {
        self.call(Ioctl::OpenGroup, |st| st.open_group(group), |_| 0)
    }

    fn close_group(&self, group: GroupFd) -> Result<(), Errno> {
        self.call0(Ioctl::CloseGroup, |st| st.close_group(group))
    }

    fn get_api_version(&self, container: ContainerFd) -> Result<i32, Errno> {
        self.call_value(Ioctl::GetApiVersion, |st| st.get_api_version(container))
    }

    fn check_extension(&self, container: ContainerFd, extension: u32) -> Result<i32, Errno> {
        self.call_value(Ioctl::CheckExtension, |st| {
            st.check_extension(container, extension)
        })
    }

    fn set_iommu(&self, container: ContainerFd, iommu_type: u32) -> Result<(), Errno> {
        self.call0(Ioctl::SetIommu, |st| st.set_iommu(container, iommu_type))
    }

    fn group_get_status(&self, group: GroupFd, status: &mut GroupStatus) -> Result<(), Errno> {
        self.call0(Ioctl::GroupGetStatus, |st| {
            st.group_get_status(group, status)
        })
    }

    fn group_set_container(&self, group: GroupFd, container: ContainerFd) -> Result<(), Errno> {
        self.call0(Ioctl::GroupSetContainer, |st| {
            st.group_set_container(group, container)
        })
    }

    fn group_unset_container(&self, group: GroupFd) -> Result<(), Errno> {
        self.call0(Ioctl::GroupUnsetContainer, |st| {
            st.group_unset_container(group)
        })
    }

    fn group_get_device_fd(&self, group: GroupFd, name: &str) -> Result<DeviceFd, Errno> {
        self.call(
            Ioctl::GroupGetDeviceFd,
            |st| st.group_get_device_fd(group, name),
            |_| 0,
        )
    }

    fn close_device(&self, device: DeviceFd) -> Result<(), Errno> {
        self.call0(Ioctl::CloseDevice, |st| st.close_device(device))
    }

    fn spapr_tce_get_info(
        &self,
        container: ContainerFd,
        info: &mut SpaprTceInfo,
    ) -> Result<(), Errno> {
        self.call0(Ioctl::SpaprTceGetInfo, |st| {
            st.with_backend(container, |b, env| spapr_only(b, |s| s.get_info(env, info)))
        })
    }

    fn iommu_enable(&self, container: ContainerFd) -> Result<(), Errno> {
        self.call0(Ioctl::IommuEnable, |st| {
            st.with_backend(container, |b, env| spapr_only(b, |s| s.enable(env)))
        })
    }

    fn iommu_disable(&self, container: ContainerFd) -> Result<(), Errno> {
        self.call0(Ioctl::IommuDisable, |st| {
            st.with_backend(container, |b, env| spapr_only(b, |s| s.disable_ioctl(env)))
        })
    }

    fn spapr_register_memory(
        &self,
        container: ContainerFd,
        region: &SpaprRegisterMemory,
    ) -> Result<(), Errno> {
        self.call0(Ioctl::SpaprRegisterMemory, |st| {
            st.with_backend(container, |b, env| {
                spapr_only(b, |s| s.register_memory(env, region))
            })
        })
    }

    fn spapr_unregister_memory(
        &self,
        container: ContainerFd,
        region: &SpaprRegisterMemory,
    ) -> Result<(), Errno> {
        self.call0(Ioctl::SpaprUnregisterMemory, |st| {
            st.with_backend(container, |b, env| {
                spapr_only(b, |s| s.unregister_memory(env, region))
            })
        })
    }

    fn spapr_tce_create(
        &self,
        container: ContainerFd,
        create: &mut SpaprTceCreate,
    ) -> Result<(), Errno> {
        self.call0(Ioctl::SpaprTceCreate, |st| {
            st.with_backend(container, |b, env| {
                spapr_only(b, |s| s.tce_create(env, create))
            })
        })
    }

    fn spapr_tce_remove(
        &self,
        container: ContainerFd,
        remove: &SpaprTceRemove,
    ) -> Result<(), Errno> {
        self.call0(Ioctl::SpaprTceRemove, |st| {
            st.with_backend(container, |b, env| {
                spapr_only(b, |s| s.tce_remove(env, remove))
            })
        })
    }

    fn iommu_map_dma(&self, container: ContainerFd, map: &DmaMap) -> Result<i32, Errno> {
        self.call_value(Ioctl::MapDma, |st| {
            st.with_backend(container, |b, env| match b {
                Backend::Spapr(s) => s.map_dma(env, map),
                Backend::Type1(t) => t.map_dma(env, map),
                Backend::NoIommu => Err(Errno::ENOTTY),
            })
        })
    }

    fn iommu_unmap_dma(&self, container: ContainerFd, unmap: &mut DmaUnmap) -> Result<i32, Errno> {
        self.call_value(Ioctl::UnmapDma, |st| {
            st.with_backend(container, |b, env| match b {
                Backend::Spapr(s) => s.unmap_dma(env, unmap),
                Backend::Type1(t) => t.unmap_dma(env, unmap),
                Backend::NoIommu => Err(Errno::ENOTTY),
            })
        })
    }
}
