//! `IOMMU_MAP_DMA` and `IOMMU_UNMAP_DMA` on an sPAPR container: host
//! TCEs written into, or cleared from, one window.

use super::SpaprBackend;
use crate::args::{DmaMap, DmaUnmap, VFIO_DMA_MAP_FLAG_READ, VFIO_DMA_MAP_FLAG_WRITE};
use crate::errno::Errno;
use crate::sim::env::Env;
use crate::sim::memory::Mm;
use crate::sim::observe::WindowState;
use crate::sim::observe::{HostTce, TcePerms};

/// What MAP/UNMAP return for a misaligned iova: mainline combines two
/// checks with `||`, so the ioctl returns the boolean 1 instead of an
/// error code (QUIRK; strict mode returns `EINVAL`).
const MISALIGNED_IOVA_QUIRK: i32 = 1;

impl SpaprBackend {
    /// Checks shared by MAP and UNMAP once the window is known: the iova
    /// alignment QUIRK, and in strict mode the whole range inside the
    /// window (mainline checks only the first page: QUIRK). `Ok(Some(v))`
    /// ends the ioctl with value `v`.
    fn check_iova(
        env: &Env<'_>,
        window: &WindowState,
        iova: u64,
        size: u64,
    ) -> Result<Option<i32>, Errno> {
        if iova & (window.page_size() - 1) != 0 {
            return if env.strict() {
                Err(Errno::EINVAL)
            } else {
                Ok(Some(MISALIGNED_IOVA_QUIRK))
            };
        }
        if env.strict() && !window.contains_range(iova, size) {
            return Err(Errno::EINVAL);
        }
        Ok(None)
    }

    /// `IOMMU_MAP_DMA`, checks in mainline's order: `EPERM` not enabled;
    /// `EINVAL` short `argsz` or unknown flags; the pending default window
    /// is created; `ENXIO` iova in no window; `EINVAL` size or vaddr not a
    /// multiple of the window's page size; `EINVAL` neither READ nor WRITE;
    /// the iova QUIRK (see [`Self::check_iova`]). Then each page is
    /// written, replacing a live entry; v2 needs every page inside
    /// registered memory with pages at least as large as the window's
    /// (`EINVAL`). A failure clears the entries this call wrote, as
    /// mainline does (an entry it had replaced is not restored).
    ///
    /// Pages past the window end (faithful mode only) are checked like the
    /// others but not programmed: the kernel writes them outside the
    /// window's reach, where no DMA can use them.
    pub(crate) fn map_dma(&mut self, env: &mut Env<'_>, map: &DmaMap) -> Result<i32, Errno> {
        self.check_mm(env)?;
        if !self.enabled {
            return Err(Errno::EPERM);
        }
        if map.argsz < DmaMap::ARGSZ
            || map.flags & !(VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE) != 0
        {
            return Err(Errno::EINVAL);
        }
        self.create_default_window(env)?;
        let slot = self.find_table(map.iova).ok_or(Errno::ENXIO)?;
        let window = self.tables[slot].as_ref().expect("found above");
        let page_size = window.page_size();
        if map.size & (page_size - 1) != 0 || map.vaddr & (page_size - 1) != 0 {
            return Err(Errno::EINVAL);
        }
        let perms = TcePerms::from_map_flags(map.flags).ok_or(Errno::EINVAL)?;
        if let Some(value) = Self::check_iova(env, window, map.iova, map.size)? {
            return Ok(value);
        }
        let page_shift = window.info.page_shift;
        let pages = map.size >> page_shift;
        let in_window = pages.min((window.end() - map.iova) >> page_shift);
        let (v2, mm) = (self.v2, self.mm);
        let first_bad = match (v2, mm) {
            (true, Some(mm)) => first_unregistered_page(env.mm(mm), map.vaddr, pages, page_shift)
                .map(|page| (page, Errno::EINVAL)),
            // v1 pins each page as it goes; an address past the top of the
            // address space cannot be pinned.
            _ => {
                first_wrapping_page(map.vaddr, pages, page_shift).map(|page| (page, Errno::EFAULT))
            }
        };
        let window = self.tables[slot].as_mut().expect("found above");
        let mut mm = match (v2, mm) {
            (true, Some(mm)) => Some(env.mm(mm)),
            _ => None,
        };
        // Only pages before the first bad one get written; on failure they
        // are cleared again.
        let written = first_bad.map_or(in_window, |(bad, _)| bad.min(in_window));
        for i in 0..written {
            let tce = HostTce {
                vaddr: map.vaddr + (i << page_shift),
                perms,
            };
            let old = window.entries.insert(map.iova + (i << page_shift), tce);
            if let Some(mm) = mm.as_deref_mut() {
                adjust_mapped(mm, tce.vaddr, page_size, 1);
                if let Some(old) = old {
                    adjust_mapped(mm, old.vaddr, page_size, -1);
                }
            }
        }
        let Some((_, errno)) = first_bad else {
            return Ok(0);
        };
        let cleared = window.take_range(map.iova, map.iova + (written << page_shift));
        if let Some(mm) = mm {
            for tce in cleared {
                adjust_mapped(mm, tce.vaddr, page_size, -1);
            }
        }
        Err(errno)
    }

    /// `IOMMU_UNMAP_DMA`: `EPERM` not enabled; `EINVAL` short `argsz` or
    /// any flag; the pending default window is created; `ENXIO` iova in no
    /// window; `EINVAL` size not a multiple of the page size; the iova
    /// QUIRK. Clears the entries of the range (pages past the window end
    /// are ignored in faithful mode); empty entries are fine. The `size`
    /// field is not written back.
    pub(crate) fn unmap_dma(&mut self, env: &mut Env<'_>, unmap: &DmaUnmap) -> Result<i32, Errno> {
        self.check_mm(env)?;
        if !self.enabled {
            return Err(Errno::EPERM);
        }
        if unmap.argsz < DmaUnmap::ARGSZ || unmap.flags != 0 {
            return Err(Errno::EINVAL);
        }
        self.create_default_window(env)?;
        let slot = self.find_table(unmap.iova).ok_or(Errno::ENXIO)?;
        let window = self.tables[slot].as_ref().expect("found above");
        let page_size = window.page_size();
        if unmap.size & (page_size - 1) != 0 {
            return Err(Errno::EINVAL);
        }
        if let Some(value) = Self::check_iova(env, window, unmap.iova, unmap.size)? {
            return Ok(value);
        }
        let to = unmap.iova.saturating_add(unmap.size).min(window.end());
        let window = self.tables[slot].as_mut().expect("found above");
        let cleared = window.take_range(unmap.iova, to);
        self.unuse(env, &cleared, page_size);
        Ok(0)
    }
}

/// Index of the first of `pages` pages at `vaddr` that no registration
/// holds with large enough pages, walking registration by registration.
fn first_unregistered_page(mm: &mut Mm, vaddr: u64, pages: u64, page_shift: u32) -> Option<u64> {
    let page_size = 1u64 << page_shift;
    let mut i = 0;
    while i < pages {
        let Some(addr) = vaddr.checked_add(i << page_shift) else {
            return Some(i);
        };
        match mm.containing(addr, page_size) {
            // A large-enough registration is aligned to the page size, so
            // the distance to its end is a whole number of pages.
            Some(reg) if reg.page_shift >= page_shift => i += (reg.end() - addr) >> page_shift,
            _ => return Some(i),
        }
    }
    None
}

/// Index of the first of `pages` pages at `vaddr` whose address wraps.
fn first_wrapping_page(vaddr: u64, pages: u64, page_shift: u32) -> Option<u64> {
    let room = (u64::MAX - vaddr) >> page_shift;
    (pages > room + 1).then_some(room + 1)
}

/// Adds `delta` to the mapped count of the registration holding a page.
fn adjust_mapped(mm: &mut Mm, vaddr: u64, page_size: u64, delta: i64) {
    if let Some(reg) = mm.containing(vaddr, page_size) {
        reg.mapped = reg.mapped.wrapping_add_signed(delta);
    }
}
