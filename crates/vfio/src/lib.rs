//! addrspace-vfio: VFIO for addrspace — the interface to the Linux VFIO
//! kernel, a faithful simulation of it, the real thing through ioctls, and
//! the consumer a VMM embeds (containers, groups and the VFIO listeners).
//!
//! # Layers
//!
//! 1. **Kernel interface** ([`VfioKernel`]). One method per file operation
//!    or ioctl a VFIO consumer uses: containers, groups, device fds,
//!    `SET_IOMMU`, the sPAPR TCE ioctls (`GET_INFO`, `ENABLE`/`DISABLE`,
//!    memory pre-registration, `TCE_CREATE`/`TCE_REMOVE`) and
//!    `MAP_DMA`/`UNMAP_DMA`. Handles are typed ([`ContainerFd`],
//!    [`GroupFd`], [`DeviceFd`]); arguments mirror the uapi structures,
//!    `argsz` and `flags` included ([`args`]); failures are the kernel's
//!    own [`Errno`] values. MAP/UNMAP return the ioctl's value, because
//!    the sPAPR backend answers a misaligned iova with 1, not an error.
//! 2. **Simulated kernel** ([`SimKernel`]). A PowerNV IODA2 host in a
//!    mutex: groups and their PEs, containers, the sPAPR TCE backend v1
//!    and v2 (two window slots per PE at bus 0 and 1<<59, the pending
//!    default 32-bit window, TCE tables shared by a container's groups,
//!    locked-memory accounting, per-process memory registration), a small
//!    Type1 backend and the no-IOMMU one. Tests observe it through
//!    counters ([`SimStats`]), windows, host TCEs, registrations and a
//!    full [`SimSnapshot`].
//! 3. **Linux backend** (`LinuxKernel`, Linux only). The same trait on
//!    `/dev/vfio/vfio` and `/dev/vfio/N`, with vfio-bindings structures.
//!    It defines the sPAPR ioctl numbers vfio-ioctls leaves out.
//! 4. **Consumer** ([`Container`], [`listener`]). What a VMM embeds: a
//!    container generic over the kernel, its groups and device fds with the
//!    kernel's life-cycle rules, and the VFIO listeners that keep the
//!    kernel in step with the machine's memory map — sPAPR v2 memory
//!    pre-registration and one host DMA window per guest IOMMU section
//!    (mirrored page by page through IOMMU notifiers), sPAPR v1's fixed
//!    window, and Type1's direct RAM mappings. Kernel failures become
//!    [`VfioError::Kernel`] naming the call ([`KernelCall`]) and its
//!    values; those with no caller to return to (inside a notifier) go to
//!    the container's error log.
//!
//! # Where the simulator picks mainline
//!
//! The simulator follows current mainline Linux
//! (`drivers/vfio/vfio_iommu_spapr_tce.c`, `container.c`, `group.c`, the
//! PowerNV IODA2 code) in what each ioctl checks, in which order, and with
//! which errno. In particular:
//!
//! - *Mainline quirks* are reproduced in [`SimMode::Faithful`] and become
//!   errors in [`SimMode::Strict`]: MAP/UNMAP with a misaligned iova
//!   return 1 (strict: `EINVAL`); only a MAP/UNMAP's first page is checked
//!   against the window end (strict: the whole range, `EINVAL`);
//!   unregistering memory that is still mapped returns 0 and leaves it
//!   pinned (strict: `EBUSY`).
//! - *Mainline side effects kept in both modes*: the first MAP, UNMAP or
//!   `CREATE` creates the pending default window even when the ioctl then
//!   fails; memory ioctls bind the container to the calling process even
//!   when they then fail; a MAP that fails part-way clears the entries it
//!   wrote, including ones that had replaced older entries; detaching any
//!   group clears every TCE of the container.
//! - *Deliberate divergences*, documented where they are implemented: a
//!   failed `CREATE` returns its locked-memory charge (mainline can leak
//!   it), a freed window returns exactly what it was charged, pages of a
//!   MAP past the window end are not programmed (the kernel writes them
//!   out of the window's reach), sPAPR ioctls on a Type1 container answer
//!   `ENOTTY`, and capabilities (`CAP_IPC_LOCK`, `CAP_SYS_RAWIO`) and EEH
//!   are not modelled. Type1 covers the main MAP/UNMAP rules only (see
//!   its module).
//!
//! # What this crate leaves out
//!
//! Device regions, interrupts and resets (device fds exist only to pin
//! their group), iommufd and the cdev interface; on the consumer side,
//! peer-to-peer DMA to RAM-device BARs, dirty-page tracking, and Type1's
//! own IOMMU page-size and IOVA-range queries.

#![warn(missing_docs, missing_debug_implementations)]

pub mod args;
mod call;
mod container;
mod errno;
mod error;
mod guest_ram;
mod handle;
mod kernel;
#[cfg(target_os = "linux")]
mod linux;
pub mod listener;
mod notifier;
pub mod sim;
mod window;

pub use args::{
    DmaMap, DmaUnmap, GroupStatus, SpaprRegisterMemory, SpaprTceCreate, SpaprTceDdwInfo,
    SpaprTceInfo, SpaprTceRemove, VFIO_API_VERSION, VFIO_DMA_MAP_FLAG_READ,
    VFIO_DMA_MAP_FLAG_WRITE, VFIO_NOIOMMU_IOMMU, VFIO_SPAPR_TCE_IOMMU, VFIO_SPAPR_TCE_V2_IOMMU,
    VFIO_TYPE1V2_IOMMU, VFIO_TYPE1_IOMMU,
};
pub use call::KernelCall;
pub use container::{
    Container, ContainerConfig, ContainerStats, IommuType, PlugIds, SpaprInfo, ERROR_LOG_CAPACITY,
};
pub use errno::Errno;
pub use error::VfioError;
pub use guest_ram::RamRange;
pub use handle::{ContainerFd, DeviceFd, GroupFd, IommuGroupId};
pub use kernel::VfioKernel;
#[cfg(target_os = "linux")]
pub use linux::LinuxKernel;
pub use sim::config::{GroupConfig, SimConfig, SimMode};
pub use sim::memory::{ProcessId, Registration};
pub use sim::observe::{
    BackendSnapshot, ContainerSnapshot, GroupSnapshot, HostTce, IommuBackend, MemoryRange, PeState,
    ProcessSnapshot, SimSnapshot, SpaprSnapshot, TcePerms, Type1Mapping, Type1Snapshot, WindowInfo,
    WindowState,
};
pub use sim::stats::{Ioctl, SimStats};
pub use sim::SimKernel;
pub use window::HostWindow;
