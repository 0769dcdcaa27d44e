//! [`Container`]: a VFIO container and its groups, with the kernel's
//! life-cycle rules — what a VMM's machine model opens, attaches devices'
//! groups to, plugs into its address spaces, and releases.

mod shared;

use std::sync::Arc;

use addrspace_core::Memory;

use crate::args::{
    SpaprTceDdwInfo, VFIO_API_VERSION, VFIO_GROUP_FLAGS_VIABLE, VFIO_IOMMU_SPAPR_INFO_DDW,
    VFIO_SPAPR_TCE_IOMMU, VFIO_SPAPR_TCE_V2_IOMMU, VFIO_TYPE1V2_IOMMU,
};
use crate::call::KernelExt;
use crate::error::VfioError;
use crate::guest_ram::RamRange;
use crate::handle::{ContainerFd, DeviceFd, IommuGroupId};
use crate::kernel::VfioKernel;
use crate::sim::observe::MemoryRange;
use crate::window::HostWindow;
pub(crate) use shared::{Backend, Registered, Shared};
pub use shared::{ContainerStats, PlugIds, ERROR_LOG_CAPACITY};

/// Page shift of the sPAPR v1 fixed window (the PE's default 32-bit
/// window uses 4 KiB pages; `GET_INFO` does not report it).
const FIXED_WINDOW_PAGE_SHIFT: u32 = 12;

/// The IOMMU backends a container can use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IommuType {
    /// `VFIO_SPAPR_TCE_v2_IOMMU`: dynamic windows, pre-registered memory.
    SpaprV2,
    /// `VFIO_SPAPR_TCE_IOMMU`: one fixed 32-bit window, `ENABLE`d.
    SpaprV1,
    /// `VFIO_TYPE1v2_IOMMU`: guest RAM mapped at its guest physical
    /// address.
    Type1V2,
}

impl IommuType {
    /// The uapi number `SET_IOMMU` takes.
    pub fn raw(self) -> u32 {
        match self {
            IommuType::SpaprV2 => VFIO_SPAPR_TCE_V2_IOMMU,
            IommuType::SpaprV1 => VFIO_SPAPR_TCE_IOMMU,
            IommuType::Type1V2 => VFIO_TYPE1V2_IOMMU,
        }
    }

    /// sPAPR TCE (v1 or v2): DMA goes through guest IOMMU windows.
    pub fn is_spapr(self) -> bool {
        !matches!(self, IommuType::Type1V2)
    }
}

/// How a container is set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContainerConfig {
    /// The IOMMU backend.
    pub iommu_type: IommuType,
    /// The host's page size (`PAGE_SIZE`): memory is registered and
    /// mapped, and IOMMU sections are checked, in whole host pages.
    pub host_page_size: u64,
}

impl ContainerConfig {
    /// `iommu_type` on a host with 64 KiB pages (the usual POWER host and
    /// the simulator's default); see [`host_page_size`](Self::host_page_size).
    pub fn new(iommu_type: IommuType) -> Self {
        Self {
            iommu_type,
            host_page_size: 0x1_0000,
        }
    }

    /// Sets the host page size.
    ///
    /// # Panics
    ///
    /// If `bytes` is not a power of two.
    pub fn host_page_size(mut self, bytes: u64) -> Self {
        assert!(bytes.is_power_of_two(), "host page size {bytes:#x}");
        self.host_page_size = bytes;
        self
    }
}

/// What `GET_INFO` reported for an sPAPR container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpaprInfo {
    /// Bus address of the PE's 32-bit window.
    pub dma32_start: u64,
    /// Its size.
    pub dma32_size: u64,
    /// Dynamic-window limits (v2 with DDW): page-size bitmap, windows,
    /// levels.
    pub ddw: Option<SpaprTceDdwInfo>,
}

/// A VFIO container on kernel `K`, its groups and its listeners.
///
/// Methods take `&self`; the container's records sit behind a lock shared
/// with its listeners and notifiers.
///
/// # Life cycle
///
/// 1. [`Container::open`] opens `/dev/vfio/vfio`, checks the API version
///    and that the kernel offers the [`IommuType`].
/// 2. [`Container::attach_group`] opens `/dev/vfio/N`, checks it is
///    viable and puts it in the container. The first group also sets the
///    IOMMU backend up: `SET_IOMMU`, then for sPAPR `GET_INFO` (the 32-bit
///    window, and for v2 the dynamic-window page sizes and limits), then
///    v2 `REMOVE`s the pending default window so both window slots are
///    free for the guest's windows, and v1 `ENABLE`s its one fixed window.
///    Any failure undoes the attach.
/// 3. [`Container::plug`] (see [`crate::listener`]) registers the VFIO
///    listeners; [`Container::unplug`] and [`Container::teardown`] take
///    them away.
/// 4. [`Container::detach_group`] takes a group out; the last one takes
///    the backend with it (the kernel frees every window and
///    registration), so it is refused while the container is plugged.
/// 5. [`Container::release`] closes devices, groups and the container.
///    Dropping the last handle does the same, silently.
///
/// # Example
///
/// What a pseries machine model does with one PHB and one assigned group:
///
/// ```
/// use std::sync::Arc;
///
/// use addrspace_core::{Memory, Unregister, UnmappedIommu, SIZE_2_64};
/// use addrspace_vfio::{Container, GroupConfig, IommuGroupId, IommuType, SimKernel, SimMode};
///
/// let kernel = Arc::new(
///     SimKernel::builder()
///         .mode(SimMode::Strict)
///         .group(GroupConfig::new(7))
///         .build(),
/// );
/// let mut mem = Memory::new();
/// let system = mem.create_container("system", SIZE_2_64)?;
/// let ram = mem.create_ram("ram", 0x100_0000)?;
/// mem.add_subregion(system, 0, ram)?;
/// let guest = mem.create_address_space("memory", system)?;
/// let phb = mem.create_container("phb-dma", SIZE_2_64)?;
/// let tces = Arc::new(UnmappedIommu { page_size: 0x1_0000 });
/// let window = mem.create_iommu("tce-window", 0x4000_0000, tces)?;
/// mem.add_subregion(phb, 0, window)?;
/// let dma = mem.create_address_space("phb-dma", phb)?;
///
/// let container = Container::open(kernel.clone(), IommuType::SpaprV2)?;
/// container.attach_group(IommuGroupId(7))?;
/// container.plug(&mut mem, guest, Some(dma))?;
/// assert_eq!(kernel.windows(container.fd()).len(), 1);
///
/// container.teardown(&mut mem, Unregister::Detach)?;
/// assert!(kernel.container(container.fd()).is_none());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Container<K: VfioKernel> {
    pub(crate) shared: Arc<Shared<K>>,
}

impl<K: VfioKernel> std::fmt::Debug for Container<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.shared.fmt(f)
    }
}

impl<K: VfioKernel> Container<K> {
    /// Opens a container for `iommu_type` on a 64 KiB-page host.
    pub fn open(kernel: Arc<K>, iommu_type: IommuType) -> Result<Self, VfioError> {
        Self::with_config(kernel, ContainerConfig::new(iommu_type))
    }

    /// Opens a container: `open`, `GET_API_VERSION` (must be
    /// [`VFIO_API_VERSION`]), `CHECK_EXTENSION` of the IOMMU type. A
    /// failure closes the fd again.
    pub fn with_config(kernel: Arc<K>, config: ContainerConfig) -> Result<Self, VfioError> {
        let fd = kernel.open_container_typed()?;
        let checked = (|| {
            let version = kernel.api_version_typed(fd)?;
            if version != VFIO_API_VERSION {
                return Err(VfioError::ApiVersion {
                    version,
                    expected: VFIO_API_VERSION,
                });
            }
            if kernel.check_extension_typed(fd, config.iommu_type.raw())? <= 0 {
                return Err(VfioError::IommuTypeUnsupported {
                    iommu_type: config.iommu_type,
                });
            }
            Ok(())
        })();
        if let Err(err) = checked {
            let _ = kernel.close_container_typed(fd);
            return Err(err);
        }
        Ok(Self {
            shared: Arc::new(Shared::new(kernel, fd, config)),
        })
    }

    /// The kernel (e.g. a [`SimKernel`](crate::SimKernel), to observe it).
    pub fn kernel(&self) -> &Arc<K> {
        &self.shared.kernel
    }

    /// The container fd.
    pub fn fd(&self) -> ContainerFd {
        self.shared.fd
    }

    /// How the container was set up.
    pub fn config(&self) -> ContainerConfig {
        self.shared.config
    }

    /// The IOMMU backend type.
    pub fn iommu_type(&self) -> IommuType {
        self.shared.config.iommu_type
    }

    /// Attached groups, ascending.
    pub fn groups(&self) -> Vec<IommuGroupId> {
        self.shared.state.lock().groups.keys().copied().collect()
    }

    /// Whether `release` ran (or a detach-mode teardown).
    pub fn is_released(&self) -> bool {
        self.shared.is_released()
    }

    /// Attaches group `group`: opens it, checks it is viable, puts it in
    /// the container, and for the first group sets the IOMMU backend up
    /// (see the [type docs](Container)). A failure closes the group again and
    /// leaves the container as it was.
    pub fn attach_group(&self, group: IommuGroupId) -> Result<(), VfioError> {
        let sh = &*self.shared;
        sh.check_live()?;
        let mut st = sh.state.lock();
        if st.groups.contains_key(&group) {
            return Err(VfioError::GroupAttached { group });
        }
        let k = &*sh.kernel;
        let gfd = k.open_group_typed(group)?;
        let attached = (|| {
            let flags = k.group_status_typed(group, gfd)?;
            if flags & VFIO_GROUP_FLAGS_VIABLE == 0 {
                return Err(VfioError::GroupNotViable { group, flags });
            }
            k.set_container_typed(group, gfd, sh.fd)?;
            if st.backend.is_none() {
                match self.set_up_backend() {
                    Ok(backend) => st.backend = Some(backend),
                    Err(err) => {
                        // The only group leaving releases the backend.
                        let _ = k.unset_container_typed(group, gfd);
                        return Err(err);
                    }
                }
            }
            Ok(())
        })();
        if let Err(err) = attached {
            let _ = k.close_group_typed(group, gfd);
            return Err(err);
        }
        st.groups.insert(
            group,
            shared::GroupEntry {
                fd: gfd,
                devices: Vec::new(),
            },
        );
        Ok(())
    }

    /// `SET_IOMMU` and what each backend needs after it.
    fn set_up_backend(&self) -> Result<Backend, VfioError> {
        let (k, fd) = (&*self.shared.kernel, self.shared.fd);
        let iommu_type = self.iommu_type();
        k.set_iommu_typed(fd, iommu_type.raw())?;
        if !iommu_type.is_spapr() {
            return Ok(Backend::default());
        }
        let raw = k.get_info_typed(fd)?;
        let has_ddw = raw.flags & VFIO_IOMMU_SPAPR_INFO_DDW != 0;
        let info = SpaprInfo {
            dma32_start: u64::from(raw.dma32_window_start),
            dma32_size: u64::from(raw.dma32_window_size),
            ddw: has_ddw.then_some(raw.ddw),
        };
        let mut backend = Backend {
            spapr: Some(info),
            fixed_window: None,
        };
        match iommu_type {
            IommuType::SpaprV2 => {
                if info.ddw.is_none() {
                    return Err(VfioError::NoDynamicWindows);
                }
                // Cancels the pending default window: the guest's windows
                // get both slots.
                k.remove_typed(fd, info.dma32_start)?;
            }
            IommuType::SpaprV1 => {
                k.enable_typed(fd)?;
                backend.fixed_window = Some(HostWindow {
                    start: info.dma32_start,
                    size: info.dma32_size,
                    page_shift: FIXED_WINDOW_PAGE_SHIFT,
                    levels: 1,
                });
            }
            IommuType::Type1V2 => unreachable!("handled above"),
        }
        Ok(backend)
    }

    /// Detaches group `group`: closes its device fds, unsets its container
    /// and closes it.
    ///
    /// The kernel clears every TCE of the container's windows when any
    /// group leaves, also for the groups that stay; while the container is
    /// plugged, every window's guest mappings are therefore replayed
    /// through `mem` right after, so the remaining devices keep their DMA
    /// (failures are logged; see [`take_errors`](Self::take_errors)). The
    /// last group takes the backend with it and is refused while plugged.
    pub fn detach_group(&self, mem: &Memory, group: IommuGroupId) -> Result<(), VfioError> {
        let sh = &*self.shared;
        sh.check_live()?;
        let mut st = sh.state.lock();
        if !st.groups.contains_key(&group) {
            return Err(VfioError::GroupNotAttached { group });
        }
        if st.groups.len() == 1 && st.plug.is_some() {
            return Err(VfioError::Plugged);
        }
        sh.detach_group(&mut st, group)?;
        let notifiers: Vec<_> = st.sections.values().map(|r| r.notifier).collect();
        drop(st);
        for notifier in notifiers {
            if let Err(err) = mem.replay_iommu_notifier(notifier) {
                sh.log(err.into());
            }
        }
        Ok(())
    }

    /// Opens device `name` of an attached group (`GROUP_GET_DEVICE_FD`).
    /// Its fd pins the group: [`detach_group`](Self::detach_group) and
    /// [`release`](Self::release) close it first.
    pub fn open_device(&self, group: IommuGroupId, name: &str) -> Result<DeviceFd, VfioError> {
        let sh = &*self.shared;
        sh.check_live()?;
        let mut st = sh.state.lock();
        let entry = st
            .groups
            .get_mut(&group)
            .ok_or(VfioError::GroupNotAttached { group })?;
        let device = sh.kernel.device_fd_typed(group, entry.fd, name)?;
        entry.devices.push(device);
        Ok(device)
    }

    /// Closes a device fd opened with [`open_device`](Self::open_device).
    pub fn close_device(&self, device: DeviceFd) -> Result<(), VfioError> {
        let sh = &*self.shared;
        sh.check_live()?;
        let mut st = sh.state.lock();
        sh.kernel.close_device_typed(device)?;
        for entry in st.groups.values_mut() {
            entry.devices.retain(|&d| d != device);
        }
        Ok(())
    }

    /// Releases the container: every group (device fds closed,
    /// `UNSET_CONTAINER`, closed) and the container fd. The kernel frees
    /// the backend with the last group: windows, TCEs, registered memory,
    /// locked memory. Refused while plugged (unplug or
    /// [`teardown`](Self::teardown) instead); a second call does nothing.
    pub fn release(&self) -> Result<(), VfioError> {
        if self.shared.state.lock().plug.is_some() {
            return Err(VfioError::Plugged);
        }
        self.shared.release_all()
    }

    // ----- observation -----

    /// What `GET_INFO` reported (sPAPR, once a group is attached).
    pub fn spapr_info(&self) -> Option<SpaprInfo> {
        self.shared.state.lock().backend.and_then(|b| b.spapr)
    }

    /// The host windows in use, ascending: on v2 those created for the
    /// guest's IOMMU sections, on v1 the fixed window (once enabled).
    pub fn windows(&self) -> Vec<HostWindow> {
        let st = self.shared.state.lock();
        if let Some(fixed) = st.backend.and_then(|b| b.fixed_window) {
            return vec![fixed];
        }
        st.sections
            .values()
            .filter(|r| r.owns_window)
            .map(|r| r.window)
            .collect()
    }

    /// Bus ranges `(start, size)` of the IOMMU sections followed, ascending.
    pub fn iommu_sections(&self) -> Vec<(u64, u64)> {
        let st = self.shared.state.lock();
        st.sections.values().map(|r| (r.start, r.size)).collect()
    }

    /// Memory the container registered (sPAPR v2), ascending; a range the
    /// kernel refused to unregister stays listed.
    pub fn registered_memory(&self) -> Vec<MemoryRange> {
        let st = self.shared.state.lock();
        st.registered
            .iter()
            .map(|(&vaddr, r)| MemoryRange {
                vaddr,
                size: r.size,
            })
            .collect()
    }

    /// The guest RAM the container follows, ascending.
    pub fn guest_ram(&self) -> Vec<RamRange> {
        self.shared.ram.read().ranges()
    }

    /// Counters of the listeners' and notifiers' work.
    pub fn stats(&self) -> ContainerStats {
        self.shared.stats()
    }

    /// Takes the logged errors: failures inside notifiers, `region_del`
    /// and `commit`, which have no caller to return to. At most
    /// [`ERROR_LOG_CAPACITY`] are kept; [`stats`](Self::stats) counts all.
    pub fn take_errors(&self) -> Vec<VfioError> {
        self.shared.take_errors()
    }
}
