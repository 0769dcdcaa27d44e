//! [`KernelCall`]: one kernel call with the values it was made with, so a
//! failure can say exactly what was asked; and the typed wrappers the
//! consumer side uses instead of raw [`VfioKernel`] methods.
//!
//! Every wrapper turns an [`Errno`] into [`VfioError::Kernel`] naming the
//! call, and a positive MAP/UNMAP value (the misaligned-iova QUIRK) into
//! [`VfioError::UnexpectedReturn`], so no failure can be mistaken for
//! success.

use std::fmt;

use crate::args::{
    DmaMap, DmaUnmap, GroupStatus, SpaprRegisterMemory, SpaprTceCreate, SpaprTceInfo,
    SpaprTceRemove, VFIO_DMA_MAP_FLAG_READ, VFIO_DMA_MAP_FLAG_WRITE,
};
use crate::error::VfioError;
use crate::handle::{ContainerFd, DeviceFd, GroupFd, IommuGroupId};
use crate::kernel::VfioKernel;
use crate::sim::stats::Ioctl;

/// A kernel call and the values it carried, for error reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelCall {
    /// `open("/dev/vfio/vfio")`.
    OpenContainer,
    /// `close` of the container fd.
    CloseContainer,
    /// `open("/dev/vfio/<group>")`.
    OpenGroup {
        /// The group.
        group: IommuGroupId,
    },
    /// `close` of a group fd.
    CloseGroup {
        /// The group.
        group: IommuGroupId,
    },
    /// `VFIO_GET_API_VERSION`.
    GetApiVersion,
    /// `VFIO_CHECK_EXTENSION`.
    CheckExtension {
        /// The extension (an IOMMU type number).
        extension: u32,
    },
    /// `VFIO_SET_IOMMU`.
    SetIommu {
        /// The IOMMU type number.
        iommu_type: u32,
    },
    /// `VFIO_GROUP_GET_STATUS`.
    GroupGetStatus {
        /// The group.
        group: IommuGroupId,
    },
    /// `VFIO_GROUP_SET_CONTAINER`.
    GroupSetContainer {
        /// The group.
        group: IommuGroupId,
    },
    /// `VFIO_GROUP_UNSET_CONTAINER`.
    GroupUnsetContainer {
        /// The group.
        group: IommuGroupId,
    },
    /// `VFIO_GROUP_GET_DEVICE_FD`.
    GroupGetDeviceFd {
        /// The group.
        group: IommuGroupId,
        /// The device name asked for.
        name: String,
    },
    /// `close` of a device fd.
    CloseDevice {
        /// The device.
        device: DeviceFd,
    },
    /// `VFIO_IOMMU_SPAPR_TCE_GET_INFO`.
    SpaprTceGetInfo,
    /// `VFIO_IOMMU_ENABLE`.
    IommuEnable,
    /// `VFIO_IOMMU_DISABLE`.
    IommuDisable,
    /// `VFIO_IOMMU_SPAPR_REGISTER_MEMORY`.
    SpaprRegisterMemory {
        /// Host virtual address of the range.
        vaddr: u64,
        /// Its size.
        size: u64,
    },
    /// `VFIO_IOMMU_SPAPR_UNREGISTER_MEMORY`.
    SpaprUnregisterMemory {
        /// Host virtual address of the range.
        vaddr: u64,
        /// Its size.
        size: u64,
    },
    /// `VFIO_IOMMU_SPAPR_TCE_CREATE`.
    SpaprTceCreate {
        /// IOMMU page shift.
        page_shift: u32,
        /// Window size.
        window_size: u64,
        /// TCE table levels.
        levels: u32,
    },
    /// `VFIO_IOMMU_SPAPR_TCE_REMOVE`.
    SpaprTceRemove {
        /// Bus address naming the window.
        start: u64,
    },
    /// `VFIO_IOMMU_MAP_DMA`.
    MapDma {
        /// Bus (I/O virtual) address.
        iova: u64,
        /// Size in bytes.
        size: u64,
        /// Host virtual address.
        vaddr: u64,
        /// `VFIO_DMA_MAP_FLAG_*`.
        flags: u32,
    },
    /// `VFIO_IOMMU_UNMAP_DMA`.
    UnmapDma {
        /// Bus (I/O virtual) address.
        iova: u64,
        /// Size in bytes.
        size: u64,
    },
}

impl KernelCall {
    /// The call's counter in [`SimStats`](crate::SimStats).
    pub fn ioctl(&self) -> Ioctl {
        match self {
            KernelCall::OpenContainer => Ioctl::OpenContainer,
            KernelCall::CloseContainer => Ioctl::CloseContainer,
            KernelCall::OpenGroup { .. } => Ioctl::OpenGroup,
            KernelCall::CloseGroup { .. } => Ioctl::CloseGroup,
            KernelCall::GetApiVersion => Ioctl::GetApiVersion,
            KernelCall::CheckExtension { .. } => Ioctl::CheckExtension,
            KernelCall::SetIommu { .. } => Ioctl::SetIommu,
            KernelCall::GroupGetStatus { .. } => Ioctl::GroupGetStatus,
            KernelCall::GroupSetContainer { .. } => Ioctl::GroupSetContainer,
            KernelCall::GroupUnsetContainer { .. } => Ioctl::GroupUnsetContainer,
            KernelCall::GroupGetDeviceFd { .. } => Ioctl::GroupGetDeviceFd,
            KernelCall::CloseDevice { .. } => Ioctl::CloseDevice,
            KernelCall::SpaprTceGetInfo => Ioctl::SpaprTceGetInfo,
            KernelCall::IommuEnable => Ioctl::IommuEnable,
            KernelCall::IommuDisable => Ioctl::IommuDisable,
            KernelCall::SpaprRegisterMemory { .. } => Ioctl::SpaprRegisterMemory,
            KernelCall::SpaprUnregisterMemory { .. } => Ioctl::SpaprUnregisterMemory,
            KernelCall::SpaprTceCreate { .. } => Ioctl::SpaprTceCreate,
            KernelCall::SpaprTceRemove { .. } => Ioctl::SpaprTceRemove,
            KernelCall::MapDma { .. } => Ioctl::MapDma,
            KernelCall::UnmapDma { .. } => Ioctl::UnmapDma,
        }
    }
}

fn perms(flags: u32) -> &'static str {
    let read = flags & VFIO_DMA_MAP_FLAG_READ != 0;
    let write = flags & VFIO_DMA_MAP_FLAG_WRITE != 0;
    match (read, write) {
        (true, true) => "READ|WRITE",
        (true, false) => "READ",
        (false, true) => "WRITE",
        (false, false) => "none",
    }
}

impl fmt::Display for KernelCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KernelCall::OpenContainer => write!(f, "open(/dev/vfio/vfio)"),
            KernelCall::CloseContainer => write!(f, "close(container)"),
            KernelCall::OpenGroup { group } => write!(f, "open(/dev/vfio/{group})"),
            KernelCall::CloseGroup { group } => write!(f, "close(group {group})"),
            KernelCall::GetApiVersion => write!(f, "VFIO_GET_API_VERSION"),
            KernelCall::CheckExtension { extension } => {
                write!(f, "VFIO_CHECK_EXTENSION({extension})")
            }
            KernelCall::SetIommu { iommu_type } => write!(f, "VFIO_SET_IOMMU({iommu_type})"),
            KernelCall::GroupGetStatus { group } => {
                write!(f, "VFIO_GROUP_GET_STATUS (group {group})")
            }
            KernelCall::GroupSetContainer { group } => {
                write!(f, "VFIO_GROUP_SET_CONTAINER (group {group})")
            }
            KernelCall::GroupUnsetContainer { group } => {
                write!(f, "VFIO_GROUP_UNSET_CONTAINER (group {group})")
            }
            KernelCall::GroupGetDeviceFd { group, name } => {
                write!(f, "VFIO_GROUP_GET_DEVICE_FD (group {group}, device {name})")
            }
            KernelCall::CloseDevice { device } => write!(f, "close({device:?})"),
            KernelCall::SpaprTceGetInfo => write!(f, "VFIO_IOMMU_SPAPR_TCE_GET_INFO"),
            KernelCall::IommuEnable => write!(f, "VFIO_IOMMU_ENABLE"),
            KernelCall::IommuDisable => write!(f, "VFIO_IOMMU_DISABLE"),
            KernelCall::SpaprRegisterMemory { vaddr, size } => write!(
                f,
                "VFIO_IOMMU_SPAPR_REGISTER_MEMORY (vaddr {vaddr:#x}, size {size:#x})"
            ),
            KernelCall::SpaprUnregisterMemory { vaddr, size } => write!(
                f,
                "VFIO_IOMMU_SPAPR_UNREGISTER_MEMORY (vaddr {vaddr:#x}, size {size:#x})"
            ),
            KernelCall::SpaprTceCreate {
                page_shift,
                window_size,
                levels,
            } => write!(
                f,
                "VFIO_IOMMU_SPAPR_TCE_CREATE (page shift {page_shift}, window size \
                 {window_size:#x}, levels {levels})"
            ),
            KernelCall::SpaprTceRemove { start } => {
                write!(f, "VFIO_IOMMU_SPAPR_TCE_REMOVE (start {start:#x})")
            }
            KernelCall::MapDma {
                iova,
                size,
                vaddr,
                flags,
            } => write!(
                f,
                "VFIO_IOMMU_MAP_DMA (iova {iova:#x}, size {size:#x}, vaddr {vaddr:#x}, {})",
                perms(*flags)
            ),
            KernelCall::UnmapDma { iova, size } => {
                write!(f, "VFIO_IOMMU_UNMAP_DMA (iova {iova:#x}, size {size:#x})")
            }
        }
    }
}

/// What the consumer side needs from a kernel, with typed errors. Each
/// method is one kernel call.
pub(crate) trait KernelExt: VfioKernel {
    fn call<R>(
        &self,
        call: impl FnOnce() -> KernelCall,
        r: Result<R, crate::Errno>,
    ) -> Result<R, VfioError> {
        r.map_err(|errno| VfioError::Kernel {
            call: call(),
            errno,
        })
    }

    fn open_container_typed(&self) -> Result<ContainerFd, VfioError> {
        self.call(|| KernelCall::OpenContainer, self.open_container())
    }

    fn close_container_typed(&self, fd: ContainerFd) -> Result<(), VfioError> {
        self.call(|| KernelCall::CloseContainer, self.close_container(fd))
    }

    fn api_version_typed(&self, fd: ContainerFd) -> Result<i32, VfioError> {
        self.call(|| KernelCall::GetApiVersion, self.get_api_version(fd))
    }

    fn check_extension_typed(&self, fd: ContainerFd, extension: u32) -> Result<i32, VfioError> {
        self.call(
            || KernelCall::CheckExtension { extension },
            self.check_extension(fd, extension),
        )
    }

    fn set_iommu_typed(&self, fd: ContainerFd, iommu_type: u32) -> Result<(), VfioError> {
        self.call(
            || KernelCall::SetIommu { iommu_type },
            self.set_iommu(fd, iommu_type),
        )
    }

    fn open_group_typed(&self, group: IommuGroupId) -> Result<GroupFd, VfioError> {
        self.call(|| KernelCall::OpenGroup { group }, self.open_group(group))
    }

    fn close_group_typed(&self, group: IommuGroupId, fd: GroupFd) -> Result<(), VfioError> {
        self.call(|| KernelCall::CloseGroup { group }, self.close_group(fd))
    }

    fn group_status_typed(&self, group: IommuGroupId, fd: GroupFd) -> Result<u32, VfioError> {
        let mut status = GroupStatus::new();
        let r = self.group_get_status(fd, &mut status);
        self.call(|| KernelCall::GroupGetStatus { group }, r)?;
        Ok(status.flags)
    }

    fn set_container_typed(
        &self,
        group: IommuGroupId,
        fd: GroupFd,
        container: ContainerFd,
    ) -> Result<(), VfioError> {
        self.call(
            || KernelCall::GroupSetContainer { group },
            self.group_set_container(fd, container),
        )
    }

    fn unset_container_typed(&self, group: IommuGroupId, fd: GroupFd) -> Result<(), VfioError> {
        self.call(
            || KernelCall::GroupUnsetContainer { group },
            self.group_unset_container(fd),
        )
    }

    fn device_fd_typed(
        &self,
        group: IommuGroupId,
        fd: GroupFd,
        name: &str,
    ) -> Result<DeviceFd, VfioError> {
        self.call(
            || KernelCall::GroupGetDeviceFd {
                group,
                name: name.to_owned(),
            },
            self.group_get_device_fd(fd, name),
        )
    }

    fn close_device_typed(&self, device: DeviceFd) -> Result<(), VfioError> {
        self.call(
            || KernelCall::CloseDevice { device },
            self.close_device(device),
        )
    }

    fn get_info_typed(&self, fd: ContainerFd) -> Result<SpaprTceInfo, VfioError> {
        let mut info = SpaprTceInfo::new();
        let r = self.spapr_tce_get_info(fd, &mut info);
        self.call(|| KernelCall::SpaprTceGetInfo, r)?;
        Ok(info)
    }

    fn enable_typed(&self, fd: ContainerFd) -> Result<(), VfioError> {
        self.call(|| KernelCall::IommuEnable, self.iommu_enable(fd))
    }

    fn register_typed(&self, fd: ContainerFd, vaddr: u64, size: u64) -> Result<(), VfioError> {
        self.call(
            || KernelCall::SpaprRegisterMemory { vaddr, size },
            self.spapr_register_memory(fd, &SpaprRegisterMemory::new(vaddr, size)),
        )
    }

    fn unregister_typed(&self, fd: ContainerFd, vaddr: u64, size: u64) -> Result<(), VfioError> {
        self.call(
            || KernelCall::SpaprUnregisterMemory { vaddr, size },
            self.spapr_unregister_memory(fd, &SpaprRegisterMemory::new(vaddr, size)),
        )
    }

    /// Returns the bus address the kernel chose.
    fn create_typed(
        &self,
        fd: ContainerFd,
        page_shift: u32,
        window_size: u64,
        levels: u32,
    ) -> Result<u64, VfioError> {
        let mut create = SpaprTceCreate::new(page_shift, window_size, levels);
        let r = self.spapr_tce_create(fd, &mut create);
        self.call(
            || KernelCall::SpaprTceCreate {
                page_shift,
                window_size,
                levels,
            },
            r,
        )?;
        Ok(create.start_addr)
    }

    fn remove_typed(&self, fd: ContainerFd, start: u64) -> Result<(), VfioError> {
        self.call(
            || KernelCall::SpaprTceRemove { start },
            self.spapr_tce_remove(fd, &SpaprTceRemove::new(start)),
        )
    }

    fn map_typed(
        &self,
        fd: ContainerFd,
        iova: u64,
        size: u64,
        vaddr: u64,
        flags: u32,
    ) -> Result<(), VfioError> {
        let call = || KernelCall::MapDma {
            iova,
            size,
            vaddr,
            flags,
        };
        let value = self.call(
            call,
            self.iommu_map_dma(fd, &DmaMap::new(iova, size, vaddr, flags)),
        )?;
        match value {
            0 => Ok(()),
            value => Err(VfioError::UnexpectedReturn {
                call: call(),
                value,
            }),
        }
    }

    fn unmap_typed(&self, fd: ContainerFd, iova: u64, size: u64) -> Result<(), VfioError> {
        let call = || KernelCall::UnmapDma { iova, size };
        let value = self.call(
            call,
            self.iommu_unmap_dma(fd, &mut DmaUnmap::new(iova, size)),
        )?;
        match value {
            0 => Ok(()),
            value => Err(VfioError::UnexpectedReturn {
                call: call(),
                value,
            }),
        }
    }
}

impl<K: VfioKernel + ?Sized> KernelExt for K {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_the_ioctl_and_its_values() {
        let call = KernelCall::MapDma {
            iova: 0x1_0000,
            size: 0x1_0000,
            vaddr: 0x7000_0000,
            flags: VFIO_DMA_MAP_FLAG_READ,
        };
        assert_eq!(
            call.to_string(),
            "VFIO_IOMMU_MAP_DMA (iova 0x10000, size 0x10000, vaddr 0x70000000, READ)"
        );
        assert_eq!(call.ioctl(), Ioctl::MapDma);
    }

    #[test]
    fn every_call_maps_to_its_counter() {
        let create = KernelCall::SpaprTceCreate {
            page_shift: 16,
            window_size: 1 << 30,
            levels: 1,
        };
        assert_eq!(create.ioctl(), Ioctl::SpaprTceCreate);
        assert_eq!(
            KernelCall::SpaprTceRemove { start: 0 }.ioctl(),
            Ioctl::SpaprTceRemove
        );
        assert_eq!(
            KernelCall::GroupUnsetContainer {
                group: IommuGroupId(1)
            }
            .ioctl(),
            Ioctl::GroupUnsetContainer
        );
    }
}
