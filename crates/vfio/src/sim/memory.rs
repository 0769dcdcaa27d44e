//! A simulated process's memory as VFIO sees it: locked-memory
//! accounting (`locked_vm` against `RLIMIT_MEMLOCK`), the process-wide
//! list of pre-registered memory (`mm_iommu_*`), and which ranges are
//! backed by huge pages.
//!
//! Registrations belong to the process, not to a container: two
//! containers of one process that register the identical range share one
//! registration (and one charge), and ranges of one process never
//! overlap. A container only holds references to them (the sPAPR
//! backend's list of registered ranges).

use std::collections::BTreeMap;

use crate::errno::Errno;

/// A simulated process: the `mm` a container binds to on its first
/// memory-related ioctl, and whose locked memory it charges.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcessId(pub u32);

/// One pre-registered memory range of a process (`mm_iommu_table_group_mem_t`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    /// Start (process virtual address).
    pub vaddr: u64,
    /// Size in bytes.
    pub size: u64,
    /// Largest IOMMU page shift the range can back: the natural alignment
    /// of `vaddr` and `size`, capped by the smallest backing page.
    pub page_shift: u32,
    /// References: one per container that registered it, plus one held
    /// forever when it was unregistered while still mapped (the QUIRK).
    pub users: u32,
    /// Host TCEs currently pointing into the range.
    pub mapped: u64,
}

impl Registration {
    /// End address (exclusive).
    pub fn end(&self) -> u64 {
        self.vaddr + self.size
    }

    /// Whether `[ua, ua + len)` lies inside the range.
    pub fn contains(&self, ua: u64, len: u64) -> bool {
        ua >= self.vaddr && ua.checked_add(len).is_some_and(|end| end <= self.end())
    }
}

/// The VFIO-relevant memory state of one process.
#[derive(Clone, Debug, Default)]
pub(crate) struct Mm {
    /// Locked memory charged so far, in host pages.
    pub(crate) locked_pages: u64,
    /// Registrations, keyed by start address (they never overlap).
    pub(crate) registrations: BTreeMap<u64, Registration>,
    /// Ranges backed by huge pages: start -> (end, page shift).
    backing: BTreeMap<u64, (u64, u32)>,
}

/// Locked-memory limit and page size, shared by every process.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) host_page_shift: u32,
    pub(crate) locked_bytes: u64,
}

impl Limits {
    fn limit_pages(self) -> u64 {
        self.locked_bytes >> self.host_page_shift
    }
}

impl Mm {
    /// Fails with `ENOMEM` when charging `pages` would pass the limit.
    pub(crate) fn check_charge(&self, pages: u64, limits: Limits) -> Result<(), Errno> {
        match self.locked_pages.checked_add(pages) {
            Some(total) if pages == 0 || total <= limits.limit_pages() => Ok(()),
            _ => Err(Errno::ENOMEM),
        }
    }

    /// Charges `pages` to locked memory, or fails with `ENOMEM` and
    /// charges nothing.
    pub(crate) fn charge(&mut self, pages: u64, limits: Limits) -> Result<(), Errno> {
        self.check_charge(pages, limits)?;
        self.locked_pages += pages;
        Ok(())
    }

    /// Returns `pages` of locked memory.
    pub(crate) fn refund(&mut self, pages: u64) {
        debug_assert!(pages <= self.locked_pages, "refund of uncharged memory");
        self.locked_pages = self.locked_pages.saturating_sub(pages);
    }

    /// The registration of exactly `[vaddr, vaddr + size)`.
    pub(crate) fn exact(&mut self, vaddr: u64, size: u64) -> Option<&mut Registration> {
        self.registrations
            .get_mut(&vaddr)
            .filter(|reg| reg.size == size)
    }

    /// The registration that contains `[ua, ua + len)`.
    pub(crate) fn containing(&mut self, ua: u64, len: u64) -> Option<&mut Registration> {
        self.registrations
            .range_mut(..=ua)
            .next_back()
            .map(|(_, reg)| reg)
            .filter(|reg| reg.contains(ua, len))
    }

    /// Pins a new range (`mm_iommu_new`), checks in mainline's order:
    /// `ENOMEM` over the limit, `ENOMEM` for an empty range (the kernel's
    /// zero-sized allocation fails), `EINVAL` when it overlaps another
    /// registration. The caller has checked alignment.
    pub(crate) fn register(&mut self, vaddr: u64, size: u64, limits: Limits) -> Result<(), Errno> {
        let pages = size >> limits.host_page_shift;
        self.check_charge(pages, limits)?;
        if size == 0 {
            return Err(Errno::ENOMEM);
        }
        let end = vaddr + size;
        if self
            .registrations
            .values()
            .any(|reg| reg.vaddr < end && vaddr < reg.end())
        {
            return Err(Errno::EINVAL);
        }
        let natural = (vaddr | size).trailing_zeros();
        let page_shift = natural.min(self.backing_shift(vaddr, size, limits.host_page_shift));
        self.charge(pages, limits)?;
        self.registrations.insert(
            vaddr,
            Registration {
                vaddr,
                size,
                page_shift,
                users: 1,
                mapped: 0,
            },
        );
        Ok(())
    }

    /// Unpins a registration nobody uses any more and returns its charge.
    pub(crate) fn release(&mut self, vaddr: u64, limits: Limits) {
        if let Some(reg) = self.registrations.remove(&vaddr) {
            debug_assert_eq!(reg.mapped, 0, "released a mapped registration");
            self.refund(reg.size >> limits.host_page_shift);
        }
    }

    /// Drops one user of a registration (`mm_iommu_put`). The last user
    /// releases it, unless host TCEs still point into it: then it stays
    /// pinned with one user that nothing will ever drop (mainline's QUIRK).
    pub(crate) fn put(&mut self, vaddr: u64, limits: Limits) {
        let Some(reg) = self.registrations.get_mut(&vaddr) else {
            return;
        };
        reg.users -= 1;
        if reg.users == 0 {
            if reg.mapped > 0 {
                reg.users = 1;
            } else {
                self.release(vaddr, limits);
            }
        }
    }

    /// Declares `[start, start + size)` backed by pages of `page_shift`,
    /// replacing declarations it overlaps.
    pub(crate) fn set_backing(&mut self, start: u64, size: u64, page_shift: u32) {
        let end = start.saturating_add(size);
        self.backing
            .retain(|&s, &mut (e, _)| e <= start || s >= end);
        self.backing.insert(start, (end, page_shift));
    }

    /// The smallest page backing any part of `[start, start + size)`.
    fn backing_shift(&self, start: u64, size: u64, host_page_shift: u32) -> u32 {
        let end = start + size;
        let mut covered_to = start;
        let mut shift = u32::MAX;
        for (&s, &(e, page_shift)) in self.backing.range(..end) {
            if e <= start {
                continue;
            }
            if s > covered_to {
                shift = shift.min(host_page_shift);
            }
            shift = shift.min(page_shift);
            covered_to = covered_to.max(e);
        }
        if covered_to < end {
            shift = shift.min(host_page_shift);
        }
        shift
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        host_page_shift: 16,
        locked_bytes: 1 << 20,
    };

    #[test]
    fn charge_over_the_limit_fails_and_charges_nothing() {
        let mut mm = Mm::default();
        mm.charge(10, LIMITS).unwrap();
        assert_eq!(mm.charge(7, LIMITS), Err(Errno::ENOMEM));
        assert_eq!(mm.locked_pages, 10);
        mm.charge(6, LIMITS).unwrap();
        assert_eq!(mm.locked_pages, 16);
    }

    #[test]
    fn charging_nothing_succeeds_even_at_the_limit() {
        let mut mm = Mm {
            locked_pages: 1000,
            ..Mm::default()
        };
        assert_eq!(mm.charge(0, LIMITS), Ok(()));
    }

    #[test]
    fn registration_page_shift_follows_natural_alignment() {
        let mut mm = Mm::default();
        mm.register(0x100_0000, 0x1_0000, LIMITS).unwrap();
        assert_eq!(mm.registrations[&0x100_0000].page_shift, 16);
    }

    #[test]
    fn huge_page_backing_raises_the_registration_page_shift() {
        let mut mm = Mm::default();
        let limits = Limits {
            locked_bytes: u64::MAX,
            ..LIMITS
        };
        mm.set_backing(0x1000_0000, 0x400_0000, 24);
        mm.register(0x1000_0000, 0x200_0000, limits).unwrap();
        assert_eq!(mm.registrations[&0x1000_0000].page_shift, 24);
    }

    #[test]
    fn partly_huge_backing_keeps_the_small_page_shift() {
        let mut mm = Mm::default();
        let limits = Limits {
            locked_bytes: u64::MAX,
            ..LIMITS
        };
        mm.set_backing(0x1000_0000, 0x100_0000, 24);
        mm.register(0x1000_0000, 0x200_0000, limits).unwrap();
        assert_eq!(mm.registrations[&0x1000_0000].page_shift, 16);
    }

    #[test]
    fn overlapping_registration_is_rejected_with_einval() {
        let mut mm = Mm::default();
        mm.register(0x10_0000, 0x2_0000, LIMITS).unwrap();
        assert_eq!(mm.register(0x11_0000, 0x2_0000, LIMITS), Err(Errno::EINVAL));
        assert_eq!(mm.locked_pages, 2);
    }

    #[test]
    fn empty_registration_fails_with_enomem() {
        let mut mm = Mm::default();
        assert_eq!(mm.register(0x10_0000, 0, LIMITS), Err(Errno::ENOMEM));
        assert!(mm.registrations.is_empty());
    }

    #[test]
    fn last_put_of_a_mapped_registration_leaves_it_pinned() {
        let mut mm = Mm::default();
        mm.register(0x10_0000, 0x1_0000, LIMITS).unwrap();
        mm.registrations.get_mut(&0x10_0000).unwrap().mapped = 1;
        mm.put(0x10_0000, LIMITS);
        assert_eq!(mm.registrations[&0x10_0000].users, 1);
        assert_eq!(mm.locked_pages, 1);
    }

    #[test]
    fn last_put_of_an_unmapped_registration_unpins_it() {
        let mut mm = Mm::default();
        mm.register(0x10_0000, 0x1_0000, LIMITS).unwrap();
        mm.put(0x10_0000, LIMITS);
        assert!(mm.registrations.is_empty());
        assert_eq!(mm.locked_pages, 0);
    }

    #[test]
    fn containing_finds_only_ranges_that_hold_the_whole_page() {
        let mut mm = Mm::default();
        mm.register(0x10_0000, 0x2_0000, LIMITS).unwrap();
        assert!(mm.containing(0x11_0000, 0x1_0000).is_some());
        assert!(mm.containing(0x11_8000, 0x1_0000).is_none());
        assert!(mm.containing(0x0f_0000, 0x1_0000).is_none());
    }
}
