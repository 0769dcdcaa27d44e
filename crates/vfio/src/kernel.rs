//! [`VfioKernel`]: the kernel interface a VFIO consumer talks to, one
//! method per file operation or ioctl it uses.

use crate::args::{
    DmaMap, DmaUnmap, GroupStatus, SpaprRegisterMemory, SpaprTceCreate, SpaprTceInfo,
    SpaprTceRemove,
};
use crate::errno::Errno;
use crate::handle::{ContainerFd, DeviceFd, GroupFd, IommuGroupId};

/// The VFIO kernel interface: container, group and device file
/// descriptors and the IOMMU ioctls of the Type1 and sPAPR TCE backends.
///
/// Each method is one system call and fails with the [`Errno`] that call
/// returns. Arguments mirror the uapi structures (see [`crate::args`]),
/// `argsz` and `flags` included; in/out structures are taken by `&mut`
/// and filled as the kernel fills them.
///
/// Implementations: [`SimKernel`](crate::SimKernel), a simulated kernel
/// that runs anywhere, and `LinuxKernel` (Linux only), real ioctls on
/// `/dev/vfio`. Methods take `&self` so one kernel can be shared by
/// several containers and threads.
pub trait VfioKernel: Send + Sync {
    /// Opens `/dev/vfio/vfio`: a new, empty container.
    fn open_container(&self) -> Result<ContainerFd, Errno>;

    /// Closes a container fd. Groups attached to the container keep it,
    /// and everything in it, alive until the last of them leaves.
    fn close_container(&self, container: ContainerFd) -> Result<(), Errno>;

    /// Opens `/dev/vfio/<group>`. `ENOENT` when the group does not exist,
    /// `EBUSY` when it is already open.
    fn open_group(&self, group: IommuGroupId) -> Result<GroupFd, Errno>;

    /// Closes a group fd. Once no device fd of the group is open either,
    /// the group leaves its container (as `GROUP_UNSET_CONTAINER` would).
    fn close_group(&self, group: GroupFd) -> Result<(), Errno>;

    /// `VFIO_GET_API_VERSION`: returns [`VFIO_API_VERSION`](crate::VFIO_API_VERSION).
    fn get_api_version(&self, container: ContainerFd) -> Result<i32, Errno>;

    /// `VFIO_CHECK_EXTENSION`: a positive value when `extension` (an IOMMU
    /// type or another extension number) is supported, else 0.
    fn check_extension(&self, container: ContainerFd, extension: u32) -> Result<i32, Errno>;

    /// `VFIO_SET_IOMMU`: chooses the container's IOMMU backend and attaches
    /// every group already in it.
    fn set_iommu(&self, container: ContainerFd, iommu_type: u32) -> Result<(), Errno>;

    /// `VFIO_GROUP_GET_STATUS`: fills `status.flags`.
    fn group_get_status(&self, group: GroupFd, status: &mut GroupStatus) -> Result<(), Errno>;

    /// `VFIO_GROUP_SET_CONTAINER`: puts the group in the container.
    fn group_set_container(&self, group: GroupFd, container: ContainerFd) -> Result<(), Errno>;

    /// `VFIO_GROUP_UNSET_CONTAINER`: takes the group out of its container.
    fn group_unset_container(&self, group: GroupFd) -> Result<(), Errno>;

    /// `VFIO_GROUP_GET_DEVICE_FD`: opens the device called `name`
    /// (e.g. `0000:01:00.0`).
    fn group_get_device_fd(&self, group: GroupFd, name: &str) -> Result<DeviceFd, Errno>;

    /// Closes a device fd.
    fn close_device(&self, device: DeviceFd) -> Result<(), Errno>;

    /// `VFIO_IOMMU_SPAPR_TCE_GET_INFO`: fills the 32-bit window and, when
    /// `argsz` allows, the dynamic-window limits.
    fn spapr_tce_get_info(
        &self,
        container: ContainerFd,
        info: &mut SpaprTceInfo,
    ) -> Result<(), Errno>;

    /// `VFIO_IOMMU_ENABLE` (sPAPR v1).
    fn iommu_enable(&self, container: ContainerFd) -> Result<(), Errno>;

    /// `VFIO_IOMMU_DISABLE` (sPAPR v1).
    fn iommu_disable(&self, container: ContainerFd) -> Result<(), Errno>;

    /// `VFIO_IOMMU_SPAPR_REGISTER_MEMORY` (sPAPR v2): pins the range and
    /// makes it mappable.
    fn spapr_register_memory(
        &self,
        container: ContainerFd,
        region: &SpaprRegisterMemory,
    ) -> Result<(), Errno>;

    /// `VFIO_IOMMU_SPAPR_UNREGISTER_MEMORY` (sPAPR v2).
    fn spapr_unregister_memory(
        &self,
        container: ContainerFd,
        region: &SpaprRegisterMemory,
    ) -> Result<(), Errno>;

    /// `VFIO_IOMMU_SPAPR_TCE_CREATE` (sPAPR v2): creates a DMA window and
    /// writes its bus address to `create.start_addr`.
    fn spapr_tce_create(
        &self,
        container: ContainerFd,
        create: &mut SpaprTceCreate,
    ) -> Result<(), Errno>;

    /// `VFIO_IOMMU_SPAPR_TCE_REMOVE` (sPAPR v2): removes the window that
    /// contains `remove.start_addr`.
    fn spapr_tce_remove(
        &self,
        container: ContainerFd,
        remove: &SpaprTceRemove,
    ) -> Result<(), Errno>;

    /// `VFIO_IOMMU_MAP_DMA`. Returns the ioctl's non-negative value: 0 on
    /// success, and 1 where the sPAPR backend rejects a misaligned iova
    /// without an error code (a mainline quirk a consumer must treat as a
    /// failure).
    fn iommu_map_dma(&self, container: ContainerFd, map: &DmaMap) -> Result<i32, Errno>;

    /// `VFIO_IOMMU_UNMAP_DMA`. Returns as [`iommu_map_dma`](Self::iommu_map_dma)
    /// does; Type1 also writes the number of bytes unmapped to `unmap.size`.
    fn iommu_unmap_dma(&self, container: ContainerFd, unmap: &mut DmaUnmap) -> Result<i32, Errno>;
}
