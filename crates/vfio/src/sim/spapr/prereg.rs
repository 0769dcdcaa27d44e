//! Memory pre-registration (v2): `SPAPR_REGISTER_MEMORY` and
//! `SPAPR_UNREGISTER_MEMORY`, the container's side of the process-wide
//! registrations kept in [`Mm`](crate::sim::memory::Mm).

use super::SpaprBackend;
use crate::args::SpaprRegisterMemory;
use crate::errno::Errno;
use crate::sim::env::Env;
use crate::sim::observe::MemoryRange;

impl SpaprBackend {
    /// Validates the common part of (un)registration: v2 only (`ENOTTY`),
    /// binds the process (`EPERM`), `EINVAL` for a short `argsz` or any
    /// flag, or a range not aligned to host pages.
    fn prereg_prologue(
        &mut self,
        env: &Env<'_>,
        region: &SpaprRegisterMemory,
    ) -> Result<crate::sim::memory::ProcessId, Errno> {
        self.check_mm(env)?;
        if !self.v2 {
            return Err(Errno::ENOTTY);
        }
        let mm = self.mm_set(env)?;
        if region.argsz < SpaprRegisterMemory::ARGSZ || region.flags != 0 {
            return Err(Errno::EINVAL);
        }
        let mask = (1u64 << env.limits.host_page_shift) - 1;
        if region.vaddr & mask != 0 || region.size & mask != 0 {
            return Err(Errno::EINVAL);
        }
        Ok(mm)
    }

    /// `IOMMU_SPAPR_REGISTER_MEMORY`: after the prologue, `EINVAL` for a
    /// range that wraps; the identical range already registered by this
    /// container is `EBUSY`, by another container of the process it is
    /// shared; otherwise it is pinned (`ENOMEM` over the limit, `EINVAL`
    /// when it overlaps another registration). Success enables MAP/UNMAP.
    pub(crate) fn register_memory(
        &mut self,
        env: &mut Env<'_>,
        region: &SpaprRegisterMemory,
    ) -> Result<(), Errno> {
        let mm = self.prereg_prologue(env, region)?;
        let range = MemoryRange {
            vaddr: region.vaddr,
            size: region.size,
        };
        if range.vaddr.checked_add(range.size).is_none() {
            return Err(Errno::EINVAL);
        }
        let limits = env.limits;
        let mm = env.mm(mm);
        if let Some(existing) = mm.exact(range.vaddr, range.size) {
            if self.prereg.contains(&range) {
                return Err(Errno::EBUSY);
            }
            existing.users += 1;
        } else {
            mm.register(range.vaddr, range.size, limits)?;
        }
        self.prereg.push(range);
        self.enabled = true;
        Ok(())
    }

    /// `IOMMU_SPAPR_UNREGISTER_MEMORY`: after the prologue, `ENOENT` unless
    /// this container registered exactly this range. The container drops
    /// its reference; the last reference unpins the range and returns its
    /// locked memory.
    ///
    /// QUIRK: if host TCEs still point into the range, mainline returns 0,
    /// forgets the range in the container and leaves it pinned and charged
    /// for the life of the process. Strict mode answers `EBUSY` instead and
    /// changes nothing. MAP/UNMAP stay enabled either way.
    pub(crate) fn unregister_memory(
        &mut self,
        env: &mut Env<'_>,
        region: &SpaprRegisterMemory,
    ) -> Result<(), Errno> {
        let mm = self.prereg_prologue(env, region)?;
        let range = MemoryRange {
            vaddr: region.vaddr,
            size: region.size,
        };
        let strict = env.strict();
        let limits = env.limits;
        let mm = env.mm(mm);
        let mapped = mm
            .exact(range.vaddr, range.size)
            .ok_or(Errno::ENOENT)?
            .mapped;
        let pos = self
            .prereg
            .iter()
            .position(|r| *r == range)
            .ok_or(Errno::ENOENT)?;
        if strict && mapped > 0 {
            return Err(Errno::EBUSY);
        }
        self.prereg.remove(pos);
        mm.put(range.vaddr, limits);
        Ok(())
    }
}
