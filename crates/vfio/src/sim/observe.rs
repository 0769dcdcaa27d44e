//! What a test can see of the simulated kernel: windows, host TCEs,
//! registered memory, Type1 mappings, PE state, and a full
//! [`SimSnapshot`] that compares equal exactly when two states are equal.

use std::collections::BTreeMap;

use crate::args::{VFIO_DMA_MAP_FLAG_READ, VFIO_DMA_MAP_FLAG_WRITE};
use crate::handle::{ContainerFd, IommuGroupId};
use crate::sim::memory::{ProcessId, Registration};

/// What a device may do through a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TcePerms {
    /// The device may read the memory (`VFIO_DMA_MAP_FLAG_READ`).
    pub read: bool,
    /// The device may write the memory (`VFIO_DMA_MAP_FLAG_WRITE`).
    pub write: bool,
}

impl TcePerms {
    /// Read and write.
    pub const READ_WRITE: TcePerms = TcePerms {
        read: true,
        write: true,
    };
    /// Read only.
    pub const READ_ONLY: TcePerms = TcePerms {
        read: true,
        write: false,
    };

    /// The permissions of `VFIO_DMA_MAP_FLAG_*` flags; `None` for neither
    /// READ nor WRITE.
    pub fn from_map_flags(flags: u32) -> Option<Self> {
        let perms = TcePerms {
            read: flags & VFIO_DMA_MAP_FLAG_READ != 0,
            write: flags & VFIO_DMA_MAP_FLAG_WRITE != 0,
        };
        (perms.read || perms.write).then_some(perms)
    }
}

/// One host TCE: the process virtual address a bus page maps to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HostTce {
    /// Process virtual address of the page (the kernel keeps the host
    /// physical address; this is its userspace view).
    pub vaddr: u64,
    /// Permissions.
    pub perms: TcePerms,
}

/// A DMA window of a container's host PEs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WindowInfo {
    /// Bus address of the window.
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
    /// IOMMU page shift.
    pub page_shift: u32,
    /// TCE table levels.
    pub levels: u32,
    /// Locked memory charged for its table.
    pub locked_bytes: u64,
}

/// A window with its host TCEs, keyed by bus address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowState {
    /// Where the window is and what it cost.
    pub info: WindowInfo,
    /// Live TCEs: bus address of the page -> host page.
    pub entries: BTreeMap<u64, HostTce>,
}

/// A process memory range (`vaddr`, `size`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemoryRange {
    /// Start address.
    pub vaddr: u64,
    /// Size in bytes.
    pub size: u64,
}

/// A Type1 mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Type1Mapping {
    /// I/O address.
    pub iova: u64,
    /// Size in bytes.
    pub size: u64,
    /// Process virtual address.
    pub vaddr: u64,
    /// Permissions.
    pub perms: TcePerms,
    /// The process whose locked memory pays for the pinned pages.
    pub process: ProcessId,
    /// Locked memory charged (the host pages the range touches).
    pub locked_bytes: u64,
}

/// The DMA configuration of a group's PE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeState {
    /// Owned by the host kernel: its own default DMA setup, no VFIO window.
    PlatformDefault,
    /// Owned by a VFIO sPAPR container, which programmed the windows that
    /// start at these bus addresses (ascending).
    Vfio {
        /// Start addresses of the programmed windows.
        windows: Vec<u64>,
    },
}

/// Which IOMMU backend a container uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IommuBackend {
    /// `VFIO_SPAPR_TCE_IOMMU`.
    SpaprV1,
    /// `VFIO_SPAPR_TCE_v2_IOMMU`.
    SpaprV2,
    /// `VFIO_TYPE1_IOMMU`.
    Type1,
    /// `VFIO_TYPE1v2_IOMMU`.
    Type1V2,
    /// `VFIO_NOIOMMU_IOMMU`.
    NoIommu,
}

/// State of an sPAPR TCE backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpaprSnapshot {
    /// v2 (`SPAPR_TCE_v2_IOMMU`) rather than v1.
    pub v2: bool,
    /// MAP/UNMAP allowed: v1 after `ENABLE`, v2 after a registration.
    pub enabled: bool,
    /// The process the container is bound to, once bound.
    pub process: Option<ProcessId>,
    /// The default 32-bit window waits to be created on first use.
    pub default_window_pending: bool,
    /// Windows by slot (slot 0 first), with their host TCEs.
    pub windows: Vec<WindowState>,
    /// Ranges this container registered (ascending).
    pub registered: Vec<MemoryRange>,
    /// Locked memory charged by v1 `ENABLE`.
    pub enable_locked_bytes: u64,
}

/// State of a Type1 backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Type1Snapshot {
    /// Type1v2 rather than Type1.
    pub v2: bool,
    /// Mappings, ascending by iova.
    pub mappings: Vec<Type1Mapping>,
}

/// State of a container's IOMMU backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendSnapshot {
    /// sPAPR TCE (v1 or v2).
    Spapr(SpaprSnapshot),
    /// Type1 (v1 or v2).
    Type1(Type1Snapshot),
    /// No-IOMMU: nothing to see.
    NoIommu,
}

/// State of a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerSnapshot {
    /// The container fd is still open (a closed one lives on while groups
    /// hold it).
    pub fd_open: bool,
    /// Attached groups, in attach order.
    pub groups: Vec<IommuGroupId>,
    /// The backend, once `SET_IOMMU` succeeded.
    pub backend: Option<BackendSnapshot>,
}

/// State of a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupSnapshot {
    /// The group file is open (by its fd, or kept open by device fds).
    pub open: bool,
    /// The container it is in.
    pub container: Option<ContainerFd>,
    /// Open device fds.
    pub open_devices: u32,
    /// Its PE's DMA configuration.
    pub pe: PeState,
}

/// VFIO state of a process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessSnapshot {
    /// Locked memory charged, in bytes.
    pub locked_bytes: u64,
    /// Pre-registered memory, ascending.
    pub registrations: Vec<Registration>,
}

/// The whole simulated kernel's state (counters excluded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimSnapshot {
    /// Live containers, by the fd that created them (the simulator never
    /// reuses fd numbers, so a closed fd still names its container).
    pub containers: BTreeMap<ContainerFd, ContainerSnapshot>,
    /// Every configured group.
    pub groups: BTreeMap<IommuGroupId, GroupSnapshot>,
    /// Every process with locked memory or registrations.
    pub processes: BTreeMap<ProcessId, ProcessSnapshot>,
}

impl SimSnapshot {
    /// The sPAPR state of a container, if it has an sPAPR backend.
    pub fn spapr(&self, container: ContainerFd) -> Option<&SpaprSnapshot> {
        match self.containers.get(&container)?.backend.as_ref()? {
            BackendSnapshot::Spapr(spapr) => Some(spapr),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_flags_without_read_or_write_have_no_permissions() {
        assert_eq!(TcePerms::from_map_flags(0), None);
        assert_eq!(TcePerms::from_map_flags(4), None);
        assert_eq!(TcePerms::from_map_flags(1), Some(TcePerms::READ_ONLY));
        assert_eq!(TcePerms::from_map_flags(3), Some(TcePerms::READ_WRITE));
    }
}
