//! The sPAPR TCE IOMMU backend (`vfio_iommu_spapr_tce.c`), v1 and v2, on
//! a PowerNV IODA2 host.
//!
//! A container owns up to two TCE tables (windows), shared by every group
//! attached to it: each group's PE is programmed with the same tables, so
//! host TCEs live per window, not per group. This file holds the backend's
//! state, group attach and detach, release, and the v1 and info ioctls;
//! windows are in [`ddw`], memory registration in [`prereg`], and MAP/UNMAP
//! in [`dma`].

mod ddw;
mod dma;
mod prereg;
pub(crate) mod window;

use crate::args::{
    SpaprTceInfo, VFIO_IOMMU_SPAPR_INFO_DDW, VFIO_SPAPR_TCE_IOMMU, VFIO_SPAPR_TCE_V2_IOMMU,
};
use crate::errno::Errno;
use crate::handle::IommuGroupId;
use crate::sim::env::Env;
use crate::sim::memory::ProcessId;
use crate::sim::observe::{HostTce, MemoryRange, PeState, SpaprSnapshot, WindowState};
use window::{MAX_LEVELS, MAX_WINDOWS};

/// An sPAPR TCE container's backend state (`struct tce_container`).
#[derive(Clone, Debug)]
pub(crate) struct SpaprBackend {
    pub(crate) v2: bool,
    /// v1: after `ENABLE`; v2: after the first successful registration.
    pub(crate) enabled: bool,
    /// The process bound on the first memory-related ioctl.
    pub(crate) mm: Option<ProcessId>,
    pub(crate) def_window_pending: bool,
    pub(crate) tables: [Option<WindowState>; 2],
    /// The backend's own group list, in attach order.
    pub(crate) groups: Vec<IommuGroupId>,
    /// Registrations this container holds a reference to.
    pub(crate) prereg: Vec<MemoryRange>,
    /// Pages charged by v1 `ENABLE`.
    pub(crate) enable_locked_pages: u64,
}

impl SpaprBackend {
    /// Whether `iommu_type` names this backend, and which flavour.
    pub(crate) fn flavour(iommu_type: u32) -> Option<bool> {
        match iommu_type {
            VFIO_SPAPR_TCE_IOMMU => Some(false),
            VFIO_SPAPR_TCE_V2_IOMMU => Some(true),
            _ => None,
        }
    }

    /// `CHECK_EXTENSION` as this backend answers it (EEH is not simulated).
    pub(crate) fn check_extension(extension: u32) -> i32 {
        i32::from(Self::flavour(extension).is_some())
    }

    /// A fresh backend (`tce_iommu_open`).
    pub(crate) fn new(v2: bool) -> Self {
        Self {
            v2,
            enabled: false,
            mm: None,
            def_window_pending: false,
            tables: [None, None],
            groups: Vec::new(),
            prereg: Vec::new(),
            enable_locked_pages: 0,
        }
    }

    /// The sanity check every ioctl but `CHECK_EXTENSION` starts with: a
    /// container bound to another process answers `EPERM`.
    pub(crate) fn check_mm(&self, env: &Env<'_>) -> Result<(), Errno> {
        match self.mm {
            Some(mm) if mm != env.current => Err(Errno::EPERM),
            _ => Ok(()),
        }
    }

    /// Binds the container to the calling process, or fails with `EPERM`
    /// when it is bound to another one. The binding outlives a failure of
    /// the ioctl that made it, as in mainline.
    pub(crate) fn mm_set(&mut self, env: &Env<'_>) -> Result<ProcessId, Errno> {
        match self.mm {
            Some(mm) if mm == env.current => Ok(mm),
            Some(_) => Err(Errno::EPERM),
            None => {
                self.mm = Some(env.current);
                Ok(env.current)
            }
        }
    }

    /// Attaches a group (`tce_iommu_attach_group`); checks in mainline's
    /// order: v2 needs dynamic windows (`EINVAL`), v1 takes one group
    /// (`EBUSY`), the same group twice (`EBUSY`; the group layer answers
    /// `EINVAL` first, so only a direct call reaches it), incompatible
    /// table operations (`EPERM`). The group's PE is then programmed with
    /// every existing window, entries included since tables are shared.
    pub(crate) fn attach_group(
        &mut self,
        env: &mut Env<'_>,
        id: IommuGroupId,
    ) -> Result<(), Errno> {
        let cfg = &env.group(id).cfg;
        if self.v2 && !cfg.ddw {
            return Err(Errno::EINVAL);
        }
        if !self.v2 && !self.groups.is_empty() {
            return Err(Errno::EBUSY);
        }
        for &other in &self.groups {
            if other == id {
                return Err(Errno::EBUSY);
            }
            if env.group(other).cfg.compat_class != cfg.compat_class {
                return Err(Errno::EPERM);
            }
        }
        let windows = self.window_starts();
        env.group_mut(id).pe = PeState::Vfio { windows };
        if self.groups.is_empty() && self.tables[0].is_none() {
            self.def_window_pending = true;
        }
        self.groups.push(id);
        Ok(())
    }

    /// Detaches a group (`tce_iommu_detach_group`): clears every TCE of
    /// every window (the tables are shared, so the groups that stay lose
    /// their mappings too), unsets the windows from the group's PE and
    /// hands the PE back to the platform's default DMA setup.
    pub(crate) fn detach_group(&mut self, env: &mut Env<'_>, id: IommuGroupId) {
        let Some(pos) = self.groups.iter().position(|&g| g == id) else {
            return;
        };
        self.groups.remove(pos);
        for slot in 0..self.tables.len() {
            self.clear_window(env, slot);
        }
        env.group_mut(id).pe = PeState::PlatformDefault;
    }

    /// Releases the backend (`tce_iommu_release`) when the last group has
    /// left or `SET_IOMMU` failed: detaches what is attached, frees every
    /// window and returns its locked memory, drops this container's
    /// registrations, and undoes v1 `ENABLE`.
    pub(crate) fn release(mut self, env: &mut Env<'_>) {
        while let Some(&id) = self.groups.first() {
            self.detach_group(env, id);
        }
        for slot in 0..self.tables.len() {
            self.clear_window(env, slot);
            self.free_table(env, slot);
        }
        if let Some(mm) = self.mm {
            let limits = env.limits;
            for range in std::mem::take(&mut self.prereg) {
                env.mm(mm).put(range.vaddr, limits);
            }
        }
        self.disable(env);
    }

    /// Bus addresses of the existing windows, ascending.
    fn window_starts(&self) -> Vec<u64> {
        self.tables.iter().flatten().map(|w| w.info.start).collect()
    }

    /// Removes every TCE of the window in `slot` (`tce_iommu_clear`).
    fn clear_window(&mut self, env: &mut Env<'_>, slot: usize) {
        if let Some(window) = self.tables[slot].as_mut() {
            let (from, to) = (window.info.start, window.end());
            let page_size = window.page_size();
            let cleared = window.take_range(from, to);
            self.unuse(env, &cleared, page_size);
        }
    }

    /// Drops the registrations' mapped counts of TCEs that went away (v2;
    /// v1 pins pages per mapping and keeps no count).
    fn unuse(&self, env: &mut Env<'_>, cleared: &[HostTce], page_size: u64) {
        let (true, Some(mm)) = (self.v2, self.mm) else {
            return;
        };
        let mm = env.mm(mm);
        for tce in cleared {
            if let Some(reg) = mm.containing(tce.vaddr, page_size) {
                reg.mapped -= 1;
            }
        }
    }

    /// `IOMMU_SPAPR_TCE_GET_INFO`: `ENXIO` without a group, `EINVAL` when
    /// `argsz` is below 16. The DDW part is reported for a v2 container
    /// whose first group supports dynamic windows, and written only when
    /// `argsz` covers it.
    pub(crate) fn get_info(&self, env: &Env<'_>, info: &mut SpaprTceInfo) -> Result<(), Errno> {
        self.check_mm(env)?;
        let first = *self.groups.first().ok_or(Errno::ENXIO)?;
        if info.argsz < SpaprTceInfo::MIN_ARGSZ {
            return Err(Errno::EINVAL);
        }
        info.dma32_window_start = window::SLOT_START[0] as u32;
        info.dma32_window_size = env.cfg.dma32_window_size;
        info.flags = 0;
        let mut ddw = crate::args::SpaprTceDdwInfo::default();
        if env.group(first).cfg.ddw && self.v2 {
            info.flags |= VFIO_IOMMU_SPAPR_INFO_DDW;
            ddw.pgsizes = env.cfg.page_size_mask();
            ddw.max_dynamic_windows_supported = MAX_WINDOWS;
            ddw.levels = MAX_LEVELS;
        }
        if info.argsz >= SpaprTceInfo::ARGSZ {
            info.ddw = ddw;
        }
        Ok(())
    }

    /// `IOMMU_ENABLE` (v1 only, else `ENOTTY`): `EBUSY` when enabled,
    /// `ENODEV` without a group, `EPERM` when the PE has no 32-bit window,
    /// then binds the process and charges the 32-bit window's size to
    /// locked memory (`ENOMEM` over the limit).
    pub(crate) fn enable(&mut self, env: &mut Env<'_>) -> Result<(), Errno> {
        self.check_mm(env)?;
        if self.v2 {
            return Err(Errno::ENOTTY);
        }
        if self.enabled {
            return Err(Errno::EBUSY);
        }
        if self.groups.is_empty() {
            return Err(Errno::ENODEV);
        }
        if env.cfg.dma32_window_size == 0 {
            return Err(Errno::EPERM);
        }
        let mm = self.mm_set(env)?;
        let limits = env.limits;
        let pages = u64::from(env.cfg.dma32_window_size) >> limits.host_page_shift;
        env.mm(mm).charge(pages, limits)?;
        self.enable_locked_pages = pages;
        self.enabled = true;
        Ok(())
    }

    /// `IOMMU_DISABLE` (v1 only, else `ENOTTY`): returns the `ENABLE`
    /// charge. Idempotent; leaves windows and TCEs as they are.
    pub(crate) fn disable_ioctl(&mut self, env: &mut Env<'_>) -> Result<(), Errno> {
        self.check_mm(env)?;
        if self.v2 {
            return Err(Errno::ENOTTY);
        }
        self.disable(env);
        Ok(())
    }

    fn disable(&mut self, env: &mut Env<'_>) {
        if !self.enabled {
            return;
        }
        self.enabled = false;
        if let Some(mm) = self.mm {
            let pages = std::mem::take(&mut self.enable_locked_pages);
            env.mm(mm).refund(pages);
        }
    }

    /// What a test may see of this backend.
    pub(crate) fn snapshot(&self, host_page_shift: u32) -> SpaprSnapshot {
        SpaprSnapshot {
            v2: self.v2,
            enabled: self.enabled,
            process: self.mm,
            default_window_pending: self.def_window_pending,
            windows: self.tables.iter().flatten().cloned().collect(),
            registered: {
                let mut ranges = self.prereg.clone();
                ranges.sort();
                ranges
            },
            enable_locked_bytes: self.enable_locked_pages << host_page_shift,
        }
    }
}

/// A backend's surroundings without a container around it, to reach paths
/// the container layer never takes (a backend without groups).
#[cfg(test)]
pub(crate) mod fixture {
    use std::collections::BTreeMap;

    use crate::handle::IommuGroupId;
    use crate::sim::config::{GroupConfig, SimConfig};
    use crate::sim::env::Env;
    use crate::sim::group::GroupState;
    use crate::sim::memory::{Limits, Mm, ProcessId};

    /// One configured group (number 1), process 1 calling, no limit.
    #[derive(Debug)]
    pub(crate) struct Fixture {
        cfg: SimConfig,
        groups: BTreeMap<IommuGroupId, GroupState>,
        mms: BTreeMap<ProcessId, Mm>,
    }

    impl Fixture {
        pub(crate) fn new() -> Self {
            let cfg = SimConfig::new().group(GroupConfig::new(1));
            let groups = cfg
                .groups
                .values()
                .map(|g| (g.id, GroupState::new(g.clone())))
                .collect();
            Self {
                cfg,
                groups,
                mms: BTreeMap::new(),
            }
        }

        pub(crate) fn env(&mut self) -> Env<'_> {
            Env {
                cfg: &self.cfg,
                limits: Limits {
                    host_page_shift: 16,
                    locked_bytes: u64::MAX,
                },
                current: ProcessId(1),
                groups: &mut self.groups,
                mms: &mut self.mms,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixture::Fixture;
    use super::*;

    #[test]
    fn get_info_without_groups_fails_with_enxio() {
        let mut fx = Fixture::new();
        let backend = SpaprBackend::new(true);
        let mut info = SpaprTceInfo::new();
        assert_eq!(backend.get_info(&fx.env(), &mut info), Err(Errno::ENXIO));
        assert_eq!(info, SpaprTceInfo::new(), "nothing written");
    }

    #[test]
    fn enable_without_groups_fails_with_enodev() {
        let mut fx = Fixture::new();
        let mut backend = SpaprBackend::new(false);
        assert_eq!(backend.enable(&mut fx.env()), Err(Errno::ENODEV));
        assert!(!backend.enabled);
        assert_eq!(backend.mm, None);
    }

    #[test]
    fn detaching_a_group_that_is_not_attached_changes_nothing() {
        let mut fx = Fixture::new();
        let mut backend = SpaprBackend::new(true);
        backend
            .attach_group(&mut fx.env(), IommuGroupId(1))
            .unwrap();
        backend.detach_group(&mut fx.env(), IommuGroupId(7));
        assert_eq!(backend.groups, vec![IommuGroupId(1)]);
        assert!(backend.def_window_pending);
    }

    #[test]
    fn extensions_are_the_two_spapr_flavours() {
        assert_eq!(SpaprBackend::check_extension(VFIO_SPAPR_TCE_IOMMU), 1);
        assert_eq!(SpaprBackend::check_extension(VFIO_SPAPR_TCE_V2_IOMMU), 1);
        assert_eq!(SpaprBackend::check_extension(crate::args::VFIO_EEH), 0);
    }
}
