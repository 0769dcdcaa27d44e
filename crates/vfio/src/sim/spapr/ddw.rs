//! Dynamic DMA windows: the pending default window, `TCE_CREATE` and
//! `TCE_REMOVE`, and freeing a window's table.

use super::window::{self, levels_fit, table_charge_bytes, DEFAULT_WINDOW_PAGE_SHIFT};
use super::SpaprBackend;
use crate::args::{SpaprTceCreate, SpaprTceRemove};
use crate::errno::Errno;
use crate::sim::env::Env;
use crate::sim::observe::PeState;
use crate::sim::observe::WindowState;

impl SpaprBackend {
    /// The slot of the window that contains bus address `addr`.
    pub(crate) fn find_table(&self, addr: u64) -> Option<usize> {
        self.tables
            .iter()
            .position(|w| w.as_ref().is_some_and(|w| w.contains(addr)))
    }

    /// Creates the pending default window, if one is pending: 4 KiB pages,
    /// the PE's 32-bit window size, one level, in slot 0. The window stays
    /// even when the ioctl that triggered it fails later (mainline).
    pub(crate) fn create_default_window(&mut self, env: &mut Env<'_>) -> Result<(), Errno> {
        if !self.def_window_pending {
            return Ok(());
        }
        if self.groups.is_empty() {
            return Err(Errno::ENODEV);
        }
        let size = u64::from(env.cfg.dma32_window_size);
        let start = self.create_window(env, DEFAULT_WINDOW_PAGE_SHIFT, size, 1)?;
        debug_assert_eq!(start, 0, "the default window takes slot 0");
        self.def_window_pending = false;
        Ok(())
    }

    /// Creates a window in the first free slot and programs it into every
    /// group's PE (`tce_iommu_create_window`). Checks in mainline's order:
    /// `ENOSPC` no free slot; `EINVAL` page size not offered by the PE;
    /// `EINVAL` bad geometry (levels 0 or over 5, size not a power of
    /// two); `ENOMEM` over the locked-memory limit; `EINVAL` when the table
    /// cannot index the window (55 address bits).
    ///
    /// Divergence: when the last check fails, mainline keeps the charge
    /// made just before it; the simulator returns it, so a failed `CREATE`
    /// leaves the locked-memory account as it was.
    pub(crate) fn create_window(
        &mut self,
        env: &mut Env<'_>,
        page_shift: u32,
        window_size: u64,
        levels: u32,
    ) -> Result<u64, Errno> {
        let slot = self
            .tables
            .iter()
            .position(Option::is_none)
            .ok_or(Errno::ENOSPC)?;
        if page_shift >= 64 || env.cfg.page_size_mask() & (1 << page_shift) == 0 {
            return Err(Errno::EINVAL);
        }
        let host_page_shift = env.limits.host_page_shift;
        let charge = table_charge_bytes(page_shift, window_size, levels, host_page_shift)
            .ok_or(Errno::EINVAL)?;
        let pages = charge >> host_page_shift;
        let mm = self.mm.expect("memory ioctls bind the container first");
        let limits = env.limits;
        env.mm(mm).check_charge(pages, limits)?;
        if !levels_fit(page_shift, window_size, levels, host_page_shift) {
            return Err(Errno::EINVAL);
        }
        env.mm(mm).charge(pages, limits)?;
        let window = WindowState::new(slot, page_shift, window_size, levels, charge);
        let start = window.info.start;
        self.tables[slot] = Some(window);
        for &id in &self.groups {
            if let PeState::Vfio { windows } = &mut env.group_mut(id).pe {
                windows.push(start);
                windows.sort_unstable();
            }
        }
        Ok(start)
    }

    /// Frees the table in `slot` (its TCEs must be cleared) and returns its
    /// locked memory: exactly what it was charged (mainline returns the
    /// table's allocated size, which on-demand level allocation can make
    /// smaller; the simulator does not model that).
    pub(crate) fn free_table(&mut self, env: &mut Env<'_>, slot: usize) {
        let Some(window) = self.tables[slot].take() else {
            return;
        };
        debug_assert!(window.entries.is_empty(), "freed a table with live TCEs");
        let start = window.info.start;
        for &id in &self.groups {
            if let PeState::Vfio { windows } = &mut env.group_mut(id).pe {
                windows.retain(|&w| w != start);
            }
        }
        if let Some(mm) = self.mm {
            let pages = window.info.locked_bytes >> env.limits.host_page_shift;
            env.mm(mm).refund(pages);
        }
    }

    /// `IOMMU_SPAPR_TCE_CREATE` (v2 only, else `ENOTTY`). Binds the
    /// process (`EPERM` if bound to another), then `ENXIO` without a
    /// group, `EINVAL` for a short `argsz` or any flag, creates the pending
    /// default window, and creates the window (see [`Self::create_window`]).
    pub(crate) fn tce_create(
        &mut self,
        env: &mut Env<'_>,
        create: &mut SpaprTceCreate,
    ) -> Result<(), Errno> {
        self.check_mm(env)?;
        if !self.v2 {
            return Err(Errno::ENOTTY);
        }
        self.mm_set(env)?;
        if self.groups.is_empty() {
            return Err(Errno::ENXIO);
        }
        if create.argsz < SpaprTceCreate::ARGSZ || create.flags != 0 {
            return Err(Errno::EINVAL);
        }
        self.create_default_window(env)?;
        let start =
            self.create_window(env, create.page_shift, create.window_size, create.levels)?;
        create.start_addr = start;
        Ok(())
    }

    /// `IOMMU_SPAPR_TCE_REMOVE` (v2 only, else `ENOTTY`). Binds the
    /// process, `ENXIO` without a group, `EINVAL` for a short `argsz` or
    /// any flag. Address 0 while the default window is pending cancels it
    /// and touches nothing else. Otherwise any address inside a window
    /// names it (`EINVAL` if none): its TCEs are cleared, it is unset from
    /// every group's PE, freed, and its locked memory returned.
    pub(crate) fn tce_remove(
        &mut self,
        env: &mut Env<'_>,
        remove: &SpaprTceRemove,
    ) -> Result<(), Errno> {
        self.check_mm(env)?;
        if !self.v2 {
            return Err(Errno::ENOTTY);
        }
        self.mm_set(env)?;
        if self.groups.is_empty() {
            return Err(Errno::ENXIO);
        }
        if remove.argsz < SpaprTceRemove::ARGSZ || remove.flags != 0 {
            return Err(Errno::EINVAL);
        }
        if self.def_window_pending && remove.start_addr == window::SLOT_START[0] {
            self.def_window_pending = false;
            return Ok(());
        }
        let slot = self.find_table(remove.start_addr).ok_or(Errno::EINVAL)?;
        self.clear_window(env, slot);
        self.free_table(env, slot);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handle::IommuGroupId;
    use crate::sim::memory::ProcessId;
    use crate::sim::spapr::fixture::Fixture;

    #[test]
    fn create_without_groups_fails_with_enxio() {
        // Unreachable through a container (the backend goes away with its
        // last group), so the backend is driven directly.
        let mut fx = Fixture::new();
        let mut backend = SpaprBackend::new(true);
        let mut create = SpaprTceCreate::new(16, 1 << 30, 1);
        let err = backend.tce_create(&mut fx.env(), &mut create);
        assert_eq!(err, Err(Errno::ENXIO));
        assert_eq!(backend.mm, Some(ProcessId(1)), "mm binds before the check");
    }

    #[test]
    fn remove_without_groups_fails_with_enxio() {
        let mut fx = Fixture::new();
        let mut backend = SpaprBackend::new(true);
        let err = backend.tce_remove(&mut fx.env(), &SpaprTceRemove::new(0));
        assert_eq!(err, Err(Errno::ENXIO));
    }

    #[test]
    fn default_window_without_groups_fails_with_enodev() {
        let mut fx = Fixture::new();
        let mut backend = SpaprBackend::new(true);
        backend.def_window_pending = true;
        assert_eq!(
            backend.create_default_window(&mut fx.env()),
            Err(Errno::ENODEV)
        );
        assert!(backend.def_window_pending);
    }

    #[test]
    fn attaching_the_same_group_twice_fails_with_ebusy() {
        let mut fx = Fixture::new();
        let mut backend = SpaprBackend::new(true);
        backend
            .attach_group(&mut fx.env(), IommuGroupId(1))
            .unwrap();
        let err = backend.attach_group(&mut fx.env(), IommuGroupId(1));
        assert_eq!(err, Err(Errno::EBUSY));
        assert_eq!(backend.groups, vec![IommuGroupId(1)]);
    }
}
