//! Containers (`drivers/vfio/container.c`): the container fd's own ioctls,
//! choosing an IOMMU backend, and what happens when groups come and go.
//!
//! A container lives while its fd is open or a group is attached. The
//! backend lives while a group is attached: the last group leaving
//! releases it, after which a new `SET_IOMMU` is needed.

use crate::args::{VFIO_API_VERSION, VFIO_NOIOMMU_IOMMU};
use crate::errno::Errno;
use crate::handle::{ContainerFd, IommuGroupId};
use crate::sim::env::Env;
use crate::sim::observe::{BackendSnapshot, ContainerSnapshot, IommuBackend};
use crate::sim::spapr::SpaprBackend;
use crate::sim::type1::Type1Backend;
use crate::sim::{FdKind, SimState};

/// An IOMMU backend bound to a container.
#[derive(Clone, Debug)]
pub(crate) enum Backend {
    Spapr(SpaprBackend),
    Type1(Type1Backend),
    NoIommu,
}

impl Backend {
    /// Which backend this is.
    pub(crate) fn kind(&self) -> IommuBackend {
        match self {
            Backend::Spapr(b) if b.v2 => IommuBackend::SpaprV2,
            Backend::Spapr(_) => IommuBackend::SpaprV1,
            Backend::Type1(b) if b.is_v2() => IommuBackend::Type1V2,
            Backend::Type1(_) => IommuBackend::Type1,
            Backend::NoIommu => IommuBackend::NoIommu,
        }
    }

    fn check_extension(&self, extension: u32) -> i32 {
        match self {
            Backend::Spapr(_) => SpaprBackend::check_extension(extension),
            Backend::Type1(_) => Type1Backend::check_extension(extension),
            Backend::NoIommu => i32::from(extension == VFIO_NOIOMMU_IOMMU),
        }
    }

    fn attach_group(&mut self, env: &mut Env<'_>, id: IommuGroupId) -> Result<(), Errno> {
        match self {
            Backend::Spapr(b) => b.attach_group(env, id),
            Backend::Type1(b) => {
                b.attach_group(id);
                Ok(())
            }
            Backend::NoIommu => Ok(()),
        }
    }

    fn detach_group(&mut self, env: &mut Env<'_>, id: IommuGroupId) {
        match self {
            Backend::Spapr(b) => b.detach_group(env, id),
            Backend::Type1(b) => b.detach_group(id),
            Backend::NoIommu => {}
        }
    }

    fn release(self, env: &mut Env<'_>) {
        match self {
            Backend::Spapr(b) => b.release(env),
            Backend::Type1(b) => b.release(env),
            Backend::NoIommu => {}
        }
    }

    pub(crate) fn snapshot(&self, host_page_shift: u32) -> BackendSnapshot {
        match self {
            Backend::Spapr(b) => BackendSnapshot::Spapr(b.snapshot(host_page_shift)),
            Backend::Type1(b) => BackendSnapshot::Type1(b.snapshot()),
            Backend::NoIommu => BackendSnapshot::NoIommu,
        }
    }
}

/// A container (`struct vfio_container`).
#[derive(Clone, Debug, Default)]
pub(crate) struct Container {
    pub(crate) fd_open: bool,
    /// Attached groups, in attach order.
    pub(crate) groups: Vec<IommuGroupId>,
    /// Its groups are no-IOMMU groups (meaningful while it has groups).
    pub(crate) noiommu: bool,
    pub(crate) backend: Option<Backend>,
}

impl Container {
    pub(crate) fn snapshot(&self, host_page_shift: u32) -> ContainerSnapshot {
        ContainerSnapshot {
            fd_open: self.fd_open,
            groups: self.groups.clone(),
            backend: self.backend.as_ref().map(|b| b.snapshot(host_page_shift)),
        }
    }
}

/// The IOMMU drivers a host has loaded, in registration order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Driver {
    Type1,
    Spapr,
    NoIommu,
}

impl Driver {
    fn check_extension(self, extension: u32) -> i32 {
        match self {
            Driver::Type1 => Type1Backend::check_extension(extension),
            Driver::Spapr => SpaprBackend::check_extension(extension),
            Driver::NoIommu => i32::from(extension == VFIO_NOIOMMU_IOMMU),
        }
    }

    /// A new backend for `iommu_type`, if this driver serves it.
    fn open(self, iommu_type: u32) -> Option<Backend> {
        match self {
            Driver::Type1 => {
                Type1Backend::flavour(iommu_type).map(|v2| Backend::Type1(Type1Backend::new(v2)))
            }
            Driver::Spapr => {
                SpaprBackend::flavour(iommu_type).map(|v2| Backend::Spapr(SpaprBackend::new(v2)))
            }
            Driver::NoIommu => (iommu_type == VFIO_NOIOMMU_IOMMU).then_some(Backend::NoIommu),
        }
    }
}

impl SimState {
    fn drivers(&self) -> Vec<Driver> {
        let mut drivers = Vec::new();
        if self.cfg.type1 {
            drivers.push(Driver::Type1);
        }
        if self.cfg.spapr {
            drivers.push(Driver::Spapr);
        }
        if self.cfg.noiommu_enabled() {
            drivers.push(Driver::NoIommu);
        }
        drivers
    }

    /// `EBADF` unless `container` is an open container fd.
    pub(crate) fn check_container_fd(&self, container: ContainerFd) -> Result<(), Errno> {
        match self.fds.get(&container.raw()) {
            Some(FdKind::Container) => Ok(()),
            _ => Err(Errno::EBADF),
        }
    }

    pub(crate) fn open_container(&mut self) -> ContainerFd {
        let fd = ContainerFd::from_raw(self.alloc_fd(FdKind::Container));
        let container = Container {
            fd_open: true,
            ..Container::default()
        };
        self.containers.insert(fd, container);
        fd
    }

    /// Closes the fd; the container goes away only once no group holds it.
    pub(crate) fn close_container(&mut self, fd: ContainerFd) -> Result<(), Errno> {
        self.check_container_fd(fd)?;
        self.fds.remove(&fd.raw());
        let container = self
            .containers
            .get_mut(&fd)
            .expect("open fds name live containers");
        container.fd_open = false;
        if container.groups.is_empty() {
            self.containers.remove(&fd);
        }
        Ok(())
    }

    pub(crate) fn get_api_version(&self, fd: ContainerFd) -> Result<i32, Errno> {
        self.check_container_fd(fd)?;
        Ok(VFIO_API_VERSION)
    }

    /// With a backend, it answers; without, the first loaded driver that
    /// says yes does (only drivers the container's groups allow).
    pub(crate) fn check_extension(&self, fd: ContainerFd, extension: u32) -> Result<i32, Errno> {
        self.check_container_fd(fd)?;
        let container = &self.containers[&fd];
        if let Some(backend) = &container.backend {
            return Ok(backend.check_extension(extension));
        }
        let has_groups = !container.groups.is_empty();
        Ok(self
            .drivers()
            .into_iter()
            .filter(|&d| !has_groups || (d == Driver::NoIommu) == container.noiommu)
            .map(|d| d.check_extension(extension))
            .find(|&answer| answer > 0)
            .unwrap_or(0))
    }

    /// `VFIO_SET_IOMMU`: `EINVAL` without a group or with a backend
    /// already set; `ENODEV` when no allowed driver serves the type; an
    /// attach error of any group undoes the others and is returned.
    pub(crate) fn set_iommu(&mut self, fd: ContainerFd, iommu_type: u32) -> Result<(), Errno> {
        self.check_container_fd(fd)?;
        let drivers = self.drivers();
        let (container, mut env) = self.split(fd).expect("open fds name live containers");
        if container.groups.is_empty() || container.backend.is_some() {
            return Err(Errno::EINVAL);
        }
        let noiommu = container.noiommu;
        let mut backend = drivers
            .into_iter()
            .filter(|&d| (d == Driver::NoIommu) == noiommu)
            .find_map(|d| d.open(iommu_type))
            .ok_or(Errno::ENODEV)?;
        for &id in &container.groups {
            if let Err(errno) = backend.attach_group(&mut env, id) {
                backend.release(&mut env);
                return Err(errno);
            }
        }
        container.backend = Some(backend);
        Ok(())
    }

    /// Runs an IOMMU ioctl on the container's backend; `EINVAL` before
    /// `SET_IOMMU`.
    pub(crate) fn with_backend<R>(
        &mut self,
        fd: ContainerFd,
        op: impl FnOnce(&mut Backend, &mut Env<'_>) -> Result<R, Errno>,
    ) -> Result<R, Errno> {
        self.check_container_fd(fd)?;
        let (container, mut env) = self.split(fd).expect("open fds name live containers");
        let backend = container.backend.as_mut().ok_or(Errno::EINVAL)?;
        op(backend, &mut env)
    }

    /// Puts a group in a container (the part of `GROUP_SET_CONTAINER`
    /// after the group's own checks): `EPERM` mixing no-IOMMU and real
    /// groups, `EBUSY` for a group a host driver owns, then the backend's
    /// attach if there is one.
    pub(crate) fn attach_group(&mut self, fd: ContainerFd, id: IommuGroupId) -> Result<(), Errno> {
        let (container, mut env) = self.split(fd).expect("open fds name live containers");
        let cfg = env.group(id).cfg.clone();
        if !container.groups.is_empty() && container.noiommu != cfg.no_iommu {
            return Err(Errno::EPERM);
        }
        if !cfg.no_iommu && !cfg.viable {
            return Err(Errno::EBUSY);
        }
        if let Some(backend) = container.backend.as_mut() {
            backend.attach_group(&mut env, id)?;
        }
        container.groups.push(id);
        container.noiommu = cfg.no_iommu;
        env.group_mut(id).container = Some(fd);
        Ok(())
    }

    /// Takes a group out of its container (`vfio_group_detach_container`).
    /// The last group releases the backend; a container whose fd is closed
    /// goes away with it.
    pub(crate) fn detach_group(&mut self, id: IommuGroupId) {
        let Some(fd) = self.groups[&id].container else {
            return;
        };
        let (container, mut env) = self.split(fd).expect("groups name live containers");
        if let Some(backend) = container.backend.as_mut() {
            backend.detach_group(&mut env, id);
        }
        container.groups.retain(|&g| g != id);
        if container.groups.is_empty() {
            if let Some(backend) = container.backend.take() {
                backend.release(&mut env);
            }
        }
        env.group_mut(id).container = None;
        if !container.fd_open && container.groups.is_empty() {
            self.containers.remove(&fd);
        }
    }
}
