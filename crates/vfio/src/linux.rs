//! [`LinuxKernel`]: [`VfioKernel`] on the host's real VFIO, through ioctls
//! on `/dev/vfio/vfio` and `/dev/vfio/N`.
//!
//! Arguments are converted to the vfio-bindings structures and back, so
//! `argsz` and `flags` reach the kernel exactly as the caller set them.
//! The backend owns every fd it hands out; `close_*` and dropping the
//! backend close them.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::raw::{c_int, c_ulong};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use vfio_bindings::bindings::vfio as uapi;
use vmm_sys_util::ioctl::{
    ioctl, ioctl_with_mut_ref, ioctl_with_ptr, ioctl_with_ref, ioctl_with_val,
};

use crate::args::{
    DmaMap, DmaUnmap, GroupStatus, SpaprRegisterMemory, SpaprTceCreate, SpaprTceDdwInfo,
    SpaprTceInfo, SpaprTceRemove,
};
use crate::errno::Errno;
use crate::error::VfioError;
use crate::handle::{ContainerFd, DeviceFd, GroupFd, IommuGroupId};
use crate::kernel::VfioKernel;

/// Ioctl request numbers. Every VFIO ioctl is `_IO(';', 100 + n)`: no
/// size or direction is encoded, the structure carries `argsz` instead.
/// vfio-ioctls leaves out the sPAPR ones (12, 15 to 20), so all are
/// defined here. Note that ENABLE and DISABLE are 15 and 16; 13 and 14
/// are MAP_DMA and UNMAP_DMA.
mod nr {
    use vfio_bindings::bindings::vfio::{VFIO_BASE, VFIO_TYPE};
    use vmm_sys_util::ioctl_io_nr;

    const TYPE: u32 = VFIO_TYPE as u32;

    ioctl_io_nr!(VFIO_GET_API_VERSION, TYPE, VFIO_BASE);
    ioctl_io_nr!(VFIO_CHECK_EXTENSION, TYPE, VFIO_BASE + 1);
    ioctl_io_nr!(VFIO_SET_IOMMU, TYPE, VFIO_BASE + 2);
    ioctl_io_nr!(VFIO_GROUP_GET_STATUS, TYPE, VFIO_BASE + 3);
    ioctl_io_nr!(VFIO_GROUP_SET_CONTAINER, TYPE, VFIO_BASE + 4);
    ioctl_io_nr!(VFIO_GROUP_UNSET_CONTAINER, TYPE, VFIO_BASE + 5);
    ioctl_io_nr!(VFIO_GROUP_GET_DEVICE_FD, TYPE, VFIO_BASE + 6);
    ioctl_io_nr!(VFIO_IOMMU_SPAPR_TCE_GET_INFO, TYPE, VFIO_BASE + 12);
    ioctl_io_nr!(VFIO_IOMMU_MAP_DMA, TYPE, VFIO_BASE + 13);
    ioctl_io_nr!(VFIO_IOMMU_UNMAP_DMA, TYPE, VFIO_BASE + 14);
    ioctl_io_nr!(VFIO_IOMMU_ENABLE, TYPE, VFIO_BASE + 15);
    ioctl_io_nr!(VFIO_IOMMU_DISABLE, TYPE, VFIO_BASE + 16);
    ioctl_io_nr!(VFIO_IOMMU_SPAPR_REGISTER_MEMORY, TYPE, VFIO_BASE + 17);
    ioctl_io_nr!(VFIO_IOMMU_SPAPR_UNREGISTER_MEMORY, TYPE, VFIO_BASE + 18);
    ioctl_io_nr!(VFIO_IOMMU_SPAPR_TCE_CREATE, TYPE, VFIO_BASE + 19);
    ioctl_io_nr!(VFIO_IOMMU_SPAPR_TCE_REMOVE, TYPE, VFIO_BASE + 20);
}

/// What an fd this backend owns is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Container,
    Group,
    Device,
}

/// The host's VFIO through real ioctls.
#[derive(Debug)]
pub struct LinuxKernel {
    dev_dir: PathBuf,
    files: Mutex<HashMap<c_int, (Kind, Arc<File>)>>,
}

/// The ioctl's return value, or the errno it set.
fn check(ret: c_int) -> Result<i32, Errno> {
    if ret < 0 {
        Err(Errno::last_os_error())
    } else {
        Ok(ret)
    }
}

fn open_rw(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().read(true).write(true).open(path)
}

impl LinuxKernel {
    /// The directory of VFIO device nodes on Linux.
    pub const DEFAULT_DEV_DIR: &'static str = "/dev/vfio";

    /// Uses `/dev/vfio`. Fails with [`VfioError::DeviceMissing`] when
    /// `/dev/vfio/vfio` does not exist and [`VfioError::Open`] when it
    /// cannot be opened.
    pub fn new() -> Result<Self, VfioError> {
        Self::with_dev_dir(Self::DEFAULT_DEV_DIR)
    }

    /// Uses the device nodes in `dev_dir` (`vfio`, `N`, `noiommu-N`).
    pub fn with_dev_dir(dev_dir: impl Into<PathBuf>) -> Result<Self, VfioError> {
        let dev_dir = dev_dir.into();
        let path = dev_dir.join("vfio");
        if !path.exists() {
            return Err(VfioError::DeviceMissing { path });
        }
        open_rw(&path).map_err(|source| VfioError::Open { path, source })?;
        Ok(Self {
            dev_dir,
            files: Mutex::new(HashMap::new()),
        })
    }

    fn insert(&self, kind: Kind, file: File) -> c_int {
        let fd = file.as_raw_fd();
        self.files.lock().insert(fd, (kind, Arc::new(file)));
        fd
    }

    /// The open file behind `fd`, if it is one of ours of `kind`; `EBADF`
    /// otherwise (an fd this backend does not own is never touched).
    fn file(&self, fd: c_int, kind: Kind) -> Result<Arc<File>, Errno> {
        match self.files.lock().get(&fd) {
            Some((k, file)) if *k == kind => Ok(Arc::clone(file)),
            _ => Err(Errno::EBADF),
        }
    }

    fn close(&self, fd: c_int, kind: Kind) -> Result<(), Errno> {
        let mut files = self.files.lock();
        match files.get(&fd) {
            Some((k, _)) if *k == kind => {
                files.remove(&fd);
                Ok(())
            }
            _ => Err(Errno::EBADF),
        }
    }

    fn container(&self, fd: ContainerFd) -> Result<Arc<File>, Errno> {
        self.file(fd.raw(), Kind::Container)
    }

    fn group(&self, fd: GroupFd) -> Result<Arc<File>, Errno> {
        self.file(fd.raw(), Kind::Group)
    }

    /// An ioctl without argument on a container.
    fn container_ioctl(&self, fd: ContainerFd, request: c_ulong) -> Result<i32, Errno> {
        let file = self.container(fd)?;
        // SAFETY: `file` is an open VFIO container we own; the request
        // takes no argument, so the kernel touches no memory of ours.
        check(unsafe { ioctl(&*file, request) })
    }

    /// An ioctl on a container whose argument the kernel only reads.
    fn container_ioctl_in<T>(
        &self,
        fd: ContainerFd,
        request: c_ulong,
        arg: &T,
    ) -> Result<i32, Errno> {
        let file = self.container(fd)?;
        // SAFETY: `arg` is a live, initialised uapi structure of the type
        // `request` expects, valid for reads for the whole call; its
        // `argsz` never exceeds its size, so the kernel reads within it.
        check(unsafe { ioctl_with_ref(&*file, request, arg) })
    }

    /// An ioctl on a container whose argument the kernel reads and writes.
    fn container_ioctl_inout<T>(
        &self,
        fd: ContainerFd,
        request: c_ulong,
        arg: &mut T,
    ) -> Result<i32, Errno> {
        let file = self.container(fd)?;
        // SAFETY: `arg` is a live, initialised uapi structure of the type
        // `request` expects, exclusively borrowed for the call; the kernel
        // writes at most `min(argsz, size)` bytes of it.
        check(unsafe { ioctl_with_mut_ref(&*file, request, arg) })
    }
}

/// Clamps a caller's `argsz` to the structure actually passed, so a large
/// `argsz` can never make the kernel read or write past it.
fn clamp_argsz<T>(argsz: u32) -> u32 {
    argsz.min(std::mem::size_of::<T>() as u32)
}

impl VfioKernel for LinuxKernel {
    fn open_container(&self) -> Result<ContainerFd, Errno> {
        let file = open_rw(&self.dev_dir.join("vfio"))?;
        Ok(ContainerFd::from_raw(self.insert(Kind::Container, file)))
    }

    fn close_container(&self, container: ContainerFd) -> Result<(), Errno> {
        self.close(container.raw(), Kind::Container)
    }

    fn open_group(&self, group: IommuGroupId) -> Result<GroupFd, Errno> {
        let plain = self.dev_dir.join(group.0.to_string());
        let noiommu = self.dev_dir.join(format!("noiommu-{}", group.0));
        let path = if !plain.exists() && noiommu.exists() {
            noiommu
        } else {
            plain
        };
        let file = open_rw(&path)?;
        Ok(GroupFd::from_raw(self.insert(Kind::Group, file)))
    }

    fn close_group(&self, group: GroupFd) -> Result<(), Errno> {
        self.close(group.raw(), Kind::Group)
    }

    fn get_api_version(&self, container: ContainerFd) -> Result<i32, Errno> {
        self.container_ioctl(container, nr::VFIO_GET_API_VERSION())
    }

    fn check_extension(&self, container: ContainerFd, extension: u32) -> Result<i32, Errno> {
        let file = self.container(container)?;
        // SAFETY: the argument is passed by value; no memory is shared.
        check(unsafe {
            ioctl_with_val(&*file, nr::VFIO_CHECK_EXTENSION(), c_ulong::from(extension))
        })
    }

    fn set_iommu(&self, container: ContainerFd, iommu_type: u32) -> Result<(), Errno> {
        let file = self.container(container)?;
        // SAFETY: the argument is passed by value; no memory is shared.
        check(unsafe { ioctl_with_val(&*file, nr::VFIO_SET_IOMMU(), c_ulong::from(iommu_type)) })?;
        Ok(())
    }

    fn group_get_status(&self, group: GroupFd, status: &mut GroupStatus) -> Result<(), Errno> {
        let file = self.group(group)?;
        let mut arg = uapi::vfio_group_status {
            argsz: clamp_argsz::<uapi::vfio_group_status>(status.argsz),
            flags: status.flags,
        };
        // SAFETY: `arg` is a live `vfio_group_status`, exclusively
        // borrowed; the kernel writes within it.
        check(unsafe { ioctl_with_mut_ref(&*file, nr::VFIO_GROUP_GET_STATUS(), &mut arg) })?;
        status.flags = arg.flags;
        Ok(())
    }

    fn group_set_container(&self, group: GroupFd, container: ContainerFd) -> Result<(), Errno> {
        let file = self.group(group)?;
        let container_file = self.container(container)?;
        let fd: c_int = container_file.as_raw_fd();
        // SAFETY: the kernel reads one int (the container fd) from `fd`,
        // which lives for the call; `container_file` keeps it open.
        check(unsafe { ioctl_with_ref(&*file, nr::VFIO_GROUP_SET_CONTAINER(), &fd) })?;
        Ok(())
    }

    fn group_unset_container(&self, group: GroupFd) -> Result<(), Errno> {
        let file = self.group(group)?;
        // SAFETY: no argument; the kernel touches no memory of ours.
        check(unsafe { ioctl(&*file, nr::VFIO_GROUP_UNSET_CONTAINER()) })?;
        Ok(())
    }

    fn group_get_device_fd(&self, group: GroupFd, name: &str) -> Result<DeviceFd, Errno> {
        let file = self.group(group)?;
        let name = CString::new(name).map_err(|_| Errno::EINVAL)?;
        // SAFETY: `name` is a NUL-terminated string that lives for the
        // call; the kernel only reads it.
        let fd = check(unsafe {
            ioctl_with_ptr(&*file, nr::VFIO_GROUP_GET_DEVICE_FD(), name.as_ptr())
        })?;
        // SAFETY: on success the ioctl returned a new fd that nothing else
        // owns; the `File` takes sole ownership and closes it.
        let device = unsafe { File::from_raw_fd(fd) };
        Ok(DeviceFd::from_raw(self.insert(Kind::Device, device)))
    }

    fn close_device(&self, device: DeviceFd) -> Result<(), Errno> {
        self.close(device.raw(), Kind::Device)
    }

    fn spapr_tce_get_info(
        &self,
        container: ContainerFd,
        info: &mut SpaprTceInfo,
    ) -> Result<(), Errno> {
        let mut arg = uapi::vfio_iommu_spapr_tce_info {
            argsz: clamp_argsz::<uapi::vfio_iommu_spapr_tce_info>(info.argsz),
            flags: info.flags,
            dma32_window_start: info.dma32_window_start,
            dma32_window_size: info.dma32_window_size,
            ddw: uapi::vfio_iommu_spapr_tce_ddw_info {
                pgsizes: info.ddw.pgsizes,
                max_dynamic_windows_supported: info.ddw.max_dynamic_windows_supported,
                levels: info.ddw.levels,
            },
        };
        self.container_ioctl_inout(container, nr::VFIO_IOMMU_SPAPR_TCE_GET_INFO(), &mut arg)?;
        info.flags = arg.flags;
        info.dma32_window_start = arg.dma32_window_start;
        info.dma32_window_size = arg.dma32_window_size;
        info.ddw = SpaprTceDdwInfo {
            pgsizes: arg.ddw.pgsizes,
            max_dynamic_windows_supported: arg.ddw.max_dynamic_windows_supported,
            levels: arg.ddw.levels,
        };
        Ok(())
    }

    fn iommu_enable(&self, container: ContainerFd) -> Result<(), Errno> {
        self.container_ioctl(container, nr::VFIO_IOMMU_ENABLE())?;
        Ok(())
    }

    fn iommu_disable(&self, container: ContainerFd) -> Result<(), Errno> {
        self.container_ioctl(container, nr::VFIO_IOMMU_DISABLE())?;
        Ok(())
    }

    fn spapr_register_memory(
        &self,
        container: ContainerFd,
        region: &SpaprRegisterMemory,
    ) -> Result<(), Errno> {
        let arg = register_arg(region);
        self.container_ioctl_in(container, nr::VFIO_IOMMU_SPAPR_REGISTER_MEMORY(), &arg)?;
        Ok(())
    }

    fn spapr_unregister_memory(
        &self,
        container: ContainerFd,
        region: &SpaprRegisterMemory,
    ) -> Result<(), Errno> {
        let arg = register_arg(region);
        self.container_ioctl_in(container, nr::VFIO_IOMMU_SPAPR_UNREGISTER_MEMORY(), &arg)?;
        Ok(())
    }

    fn spapr_tce_create(
        &self,
        container: ContainerFd,
        create: &mut SpaprTceCreate,
    ) -> Result<(), Errno> {
        let mut arg = uapi::vfio_iommu_spapr_tce_create {
            argsz: clamp_argsz::<uapi::vfio_iommu_spapr_tce_create>(create.argsz),
            flags: create.flags,
            page_shift: create.page_shift,
            __resv1: 0,
            window_size: create.window_size,
            levels: create.levels,
            __resv2: 0,
            start_addr: create.start_addr,
        };
        self.container_ioctl_inout(container, nr::VFIO_IOMMU_SPAPR_TCE_CREATE(), &mut arg)?;
        create.start_addr = arg.start_addr;
        Ok(())
    }

    fn spapr_tce_remove(
        &self,
        container: ContainerFd,
        remove: &SpaprTceRemove,
    ) -> Result<(), Errno> {
        let arg = uapi::vfio_iommu_spapr_tce_remove {
            argsz: clamp_argsz::<uapi::vfio_iommu_spapr_tce_remove>(remove.argsz),
            flags: remove.flags,
            start_addr: remove.start_addr,
        };
        self.container_ioctl_in(container, nr::VFIO_IOMMU_SPAPR_TCE_REMOVE(), &arg)?;
        Ok(())
    }

    fn iommu_map_dma(&self, container: ContainerFd, map: &DmaMap) -> Result<i32, Errno> {
        let arg = uapi::vfio_iommu_type1_dma_map {
            argsz: clamp_argsz::<uapi::vfio_iommu_type1_dma_map>(map.argsz),
            flags: map.flags,
            vaddr: map.vaddr,
            iova: map.iova,
            size: map.size,
        };
        self.container_ioctl_in(container, nr::VFIO_IOMMU_MAP_DMA(), &arg)
    }

    fn iommu_unmap_dma(&self, container: ContainerFd, unmap: &mut DmaUnmap) -> Result<i32, Errno> {
        let mut arg = uapi::vfio_iommu_type1_dma_unmap {
            argsz: clamp_argsz::<uapi::vfio_iommu_type1_dma_unmap>(unmap.argsz),
            flags: unmap.flags,
            iova: unmap.iova,
            size: unmap.size,
            ..Default::default()
        };
        let value = self.container_ioctl_inout(container, nr::VFIO_IOMMU_UNMAP_DMA(), &mut arg)?;
        unmap.size = arg.size;
        Ok(value)
    }
}

fn register_arg(region: &SpaprRegisterMemory) -> uapi::vfio_iommu_spapr_register_memory {
    uapi::vfio_iommu_spapr_register_memory {
        argsz: clamp_argsz::<uapi::vfio_iommu_spapr_register_memory>(region.argsz),
        flags: region.flags,
        vaddr: region.vaddr,
        size: region.size,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_device_node_is_a_typed_error() {
        // Arrange: a directory that certainly has no `vfio` node.
        let dir = std::env::temp_dir().join(format!("addrspace-vfio-none-{}", std::process::id()));
        // Act
        let err = LinuxKernel::with_dev_dir(&dir).unwrap_err();
        // Assert
        match err {
            VfioError::DeviceMissing { path } => assert_eq!(path, dir.join("vfio")),
            other => panic!("expected DeviceMissing, got {other:?}"),
        }
    }

    #[test]
    fn new_reports_a_missing_dev_vfio() {
        let path = Path::new("/dev/vfio/vfio");
        if path.exists() {
            eprintln!(
                "skipped: {} exists on this host, so LinuxKernel::new() may succeed",
                path.display()
            );
            return;
        }
        let err = LinuxKernel::new().unwrap_err();
        assert!(
            matches!(&err, VfioError::DeviceMissing { path: p } if p == path),
            "{err:?}"
        );
        assert!(err.to_string().contains("/dev/vfio/vfio"));
    }

    #[test]
    fn ioctl_numbers_follow_the_uapi() {
        // _IO(';', 100 + n) = 0x3b00 | (100 + n)
        assert_eq!(nr::VFIO_GET_API_VERSION(), 0x3b64);
        assert_eq!(nr::VFIO_GROUP_GET_DEVICE_FD(), 0x3b6a);
        assert_eq!(nr::VFIO_IOMMU_SPAPR_TCE_GET_INFO(), 0x3b70);
        assert_eq!(nr::VFIO_IOMMU_MAP_DMA(), 0x3b71);
        assert_eq!(nr::VFIO_IOMMU_UNMAP_DMA(), 0x3b72);
        assert_eq!(nr::VFIO_IOMMU_ENABLE(), 0x3b73);
        assert_eq!(nr::VFIO_IOMMU_DISABLE(), 0x3b74);
        assert_eq!(nr::VFIO_IOMMU_SPAPR_REGISTER_MEMORY(), 0x3b75);
        assert_eq!(nr::VFIO_IOMMU_SPAPR_UNREGISTER_MEMORY(), 0x3b76);
        assert_eq!(nr::VFIO_IOMMU_SPAPR_TCE_CREATE(), 0x3b77);
        assert_eq!(nr::VFIO_IOMMU_SPAPR_TCE_REMOVE(), 0x3b78);
    }

    #[test]
    fn argsz_is_clamped_to_the_structure_passed() {
        assert_eq!(clamp_argsz::<uapi::vfio_iommu_spapr_tce_info>(4096), 32);
        assert_eq!(clamp_argsz::<uapi::vfio_iommu_spapr_tce_info>(12), 12);
    }
}
