//! Groups (`drivers/vfio/group.c`): opening `/dev/vfio/N`, the group
//! ioctls, device fds, and releasing the group file.
//!
//! A group file stays open while its fd is open or any device fd of the
//! group is (device fds hold a reference to it). Releasing it takes the
//! group out of its container.

use crate::args::{GroupStatus, VFIO_GROUP_FLAGS_CONTAINER_SET, VFIO_GROUP_FLAGS_VIABLE};
use crate::errno::Errno;
use crate::handle::{ContainerFd, DeviceFd, GroupFd, IommuGroupId};
use crate::sim::config::GroupConfig;
use crate::sim::observe::{GroupSnapshot, PeState};
use crate::sim::{FdKind, SimState};

/// A group of the simulated host (`struct vfio_group` and its PE).
#[derive(Clone, Debug)]
pub(crate) struct GroupState {
    pub(crate) cfg: GroupConfig,
    /// The open group fd, if any.
    pub(crate) fd: Option<GroupFd>,
    pub(crate) container: Option<ContainerFd>,
    pub(crate) open_devices: u32,
    pub(crate) pe: PeState,
}

impl GroupState {
    /// A group nobody has opened, its PE in the platform's hands.
    pub(crate) fn new(cfg: GroupConfig) -> Self {
        Self {
            cfg,
            fd: None,
            container: None,
            open_devices: 0,
            pe: PeState::PlatformDefault,
        }
    }

    /// The group file is open (by its fd or held by device fds).
    fn opened(&self) -> bool {
        self.fd.is_some() || self.open_devices > 0
    }

    pub(crate) fn snapshot(&self) -> GroupSnapshot {
        GroupSnapshot {
            open: self.opened(),
            container: self.container,
            open_devices: self.open_devices,
            pe: self.pe.clone(),
        }
    }
}

impl SimState {
    /// The group behind an open group fd, else `EBADF`.
    fn group_of(&self, fd: GroupFd) -> Result<IommuGroupId, Errno> {
        match self.fds.get(&fd.raw()) {
            Some(&FdKind::Group(id)) => Ok(id),
            _ => Err(Errno::EBADF),
        }
    }

    /// `open("/dev/vfio/N")`: `ENOENT` for a group the host does not have,
    /// `EBUSY` while the group file is open.
    pub(crate) fn open_group(&mut self, id: IommuGroupId) -> Result<GroupFd, Errno> {
        let group = self.groups.get(&id).ok_or(Errno::ENOENT)?;
        if group.opened() {
            return Err(Errno::EBUSY);
        }
        let fd = GroupFd::from_raw(self.alloc_fd(FdKind::Group(id)));
        self.groups.get_mut(&id).expect("checked above").fd = Some(fd);
        Ok(fd)
    }

    /// Closes a group fd; the group file is released now, or when its last
    /// device fd closes.
    pub(crate) fn close_group(&mut self, fd: GroupFd) -> Result<(), Errno> {
        let id = self.group_of(fd)?;
        self.fds.remove(&fd.raw());
        let group = self
            .groups
            .get_mut(&id)
            .expect("fds name configured groups");
        group.fd = None;
        if group.open_devices == 0 {
            self.detach_group(id);
        }
        Ok(())
    }

    /// `VFIO_GROUP_GET_STATUS`: `EINVAL` for `argsz` below 8. A group in a
    /// container is viable with the container set; otherwise viable unless
    /// a host driver owns its DMA.
    pub(crate) fn group_get_status(
        &self,
        fd: GroupFd,
        status: &mut GroupStatus,
    ) -> Result<(), Errno> {
        let id = self.group_of(fd)?;
        if status.argsz < GroupStatus::ARGSZ {
            return Err(Errno::EINVAL);
        }
        let group = &self.groups[&id];
        status.flags = if group.container.is_some() {
            VFIO_GROUP_FLAGS_CONTAINER_SET | VFIO_GROUP_FLAGS_VIABLE
        } else if group.cfg.viable || group.cfg.no_iommu {
            VFIO_GROUP_FLAGS_VIABLE
        } else {
            0
        };
        Ok(())
    }

    /// `VFIO_GROUP_SET_CONTAINER`: `EBADF` when the container fd is not
    /// one, `EINVAL` when the group already has a container, then the
    /// container's attach checks.
    pub(crate) fn group_set_container(
        &mut self,
        fd: GroupFd,
        container: ContainerFd,
    ) -> Result<(), Errno> {
        let id = self.group_of(fd)?;
        self.check_container_fd(container)?;
        if self.groups[&id].container.is_some() {
            return Err(Errno::EINVAL);
        }
        self.attach_group(container, id)
    }

    /// `VFIO_GROUP_UNSET_CONTAINER`: `EINVAL` without a container, `EBUSY`
    /// while a device fd is open.
    pub(crate) fn group_unset_container(&mut self, fd: GroupFd) -> Result<(), Errno> {
        let id = self.group_of(fd)?;
        let group = &self.groups[&id];
        if group.container.is_none() {
            return Err(Errno::EINVAL);
        }
        if group.open_devices > 0 {
            return Err(Errno::EBUSY);
        }
        self.detach_group(id);
        Ok(())
    }

    /// `VFIO_GROUP_GET_DEVICE_FD`: `ENODEV` for a name the group does not
    /// have, `EINVAL` unless the group is in a container with a backend.
    pub(crate) fn group_get_device_fd(
        &mut self,
        fd: GroupFd,
        name: &str,
    ) -> Result<DeviceFd, Errno> {
        let id = self.group_of(fd)?;
        let group = &self.groups[&id];
        if !group.cfg.devices.iter().any(|d| d == name) {
            return Err(Errno::ENODEV);
        }
        let container = group.container.ok_or(Errno::EINVAL)?;
        if self.containers[&container].backend.is_none() {
            return Err(Errno::EINVAL);
        }
        let device = DeviceFd::from_raw(self.alloc_fd(FdKind::Device(id)));
        self.groups
            .get_mut(&id)
            .expect("checked above")
            .open_devices += 1;
        Ok(device)
    }

    /// Closes a device fd; the last one of a group whose fd is already
    /// closed releases the group file.
    pub(crate) fn close_device(&mut self, fd: DeviceFd) -> Result<(), Errno> {
        let Some(&FdKind::Device(id)) = self.fds.get(&fd.raw()) else {
            return Err(Errno::EBADF);
        };
        self.fds.remove(&fd.raw());
        let group = self
            .groups
            .get_mut(&id)
            .expect("fds name configured groups");
        group.open_devices -= 1;
        if !group.opened() {
            self.detach_group(id);
        }
        Ok(())
    }
}
