//! Host DMA windows: what the container records of each one, and how a
//! guest IOMMU section is turned into a window request (page size and
//! table levels).

use addrspace_core::NotifierId;

/// A host DMA window as the container records it: one per IOMMU section
/// it follows on sPAPR v2 (created with `TCE_CREATE`), or the one fixed
/// 32-bit window on sPAPR v1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HostWindow {
    /// Bus address of the window.
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
    /// IOMMU page shift.
    pub page_shift: u32,
    /// TCE table levels the window was created with (1 for v1's window).
    pub levels: u32,
}

impl HostWindow {
    /// End bus address (exclusive), as a `u128` so that a window may end
    /// at 2^64.
    pub fn end(&self) -> u128 {
        u128::from(self.start) + u128::from(self.size)
    }

    /// Whether `[start, start + size)` overlaps the window.
    pub fn overlaps(&self, start: u64, size: u128) -> bool {
        u128::from(start) < self.end() && u128::from(self.start) < u128::from(start) + size
    }

    /// Whether `[start, start + size)` lies inside the window.
    pub fn contains(&self, start: u64, size: u128) -> bool {
        start >= self.start && u128::from(start) + size <= self.end()
    }
}

/// What the container keeps about one IOMMU section it follows.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SectionRecord {
    /// The host window the section's mappings go to (on v1, the fixed
    /// window, shared by every section).
    pub(crate) window: HostWindow,
    /// Bus address and size of the section itself.
    pub(crate) start: u64,
    pub(crate) size: u64,
    /// The notifier that mirrors the section's guest mappings.
    pub(crate) notifier: NotifierId,
    /// The window was created for this section (v2) and goes with it.
    pub(crate) owns_window: bool,
}

/// Bits of bus address one TCE table level may index: 2^21 eight-byte
/// TCEs make a 16 MiB level, the largest block a host allocates
/// contiguously with confidence. Tables that need more start with more
/// levels.
pub(crate) const LEVEL_BITS: u32 = 21;

/// The largest page size in `host_page_sizes` (bit n = 2^n bytes) that is
/// not above `iommu_page_size`, as a shift: the guest maps pages of at
/// least that size, so each guest page is a whole number of host pages.
pub(crate) fn pick_page_shift(host_page_sizes: u64, iommu_page_size: u64) -> Option<u32> {
    if iommu_page_size == 0 {
        return None;
    }
    let limit = 63 - iommu_page_size.leading_zeros();
    let below = if limit == 63 {
        u64::MAX
    } else {
        (1u64 << (limit + 1)) - 1
    };
    let usable = host_page_sizes & below;
    (usable != 0).then(|| 63 - usable.leading_zeros())
}

/// The smallest number of TCE table levels for which no level indexes
/// more than [`LEVEL_BITS`] bits of a `window_size` window of
/// `1 << page_shift` pages, capped by `max_levels`. More levels are tried
/// when the kernel cannot allocate these.
pub(crate) fn initial_levels(window_size: u64, page_shift: u32, max_levels: u32) -> u32 {
    let entries_shift = window_size.trailing_zeros().saturating_sub(page_shift);
    entries_shift
        .div_ceil(LEVEL_BITS)
        .clamp(1, max_levels.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const POWER8: u64 = (1 << 12) | (1 << 16) | (1 << 24) | (1 << 28);

    #[test]
    fn page_size_is_the_largest_host_size_not_above_the_guest_page() {
        assert_eq!(pick_page_shift(POWER8, 1 << 16), Some(16));
        assert_eq!(pick_page_shift(POWER8, 1 << 21), Some(16));
        assert_eq!(pick_page_shift(POWER8, 1 << 24), Some(24));
        assert_eq!(pick_page_shift(POWER8, 1 << 12), Some(12));
        assert_eq!(pick_page_shift(POWER8, 1 << 63), Some(28));
    }

    #[test]
    fn no_page_size_fits_a_guest_page_below_every_host_size() {
        assert_eq!(pick_page_shift(1 << 16, 1 << 12), None);
        assert_eq!(pick_page_shift(POWER8, 0), None);
    }

    #[test]
    fn small_windows_take_one_level_and_huge_ones_more() {
        // 1 GiB of 64 KiB pages: 2^14 TCEs.
        assert_eq!(initial_levels(1 << 30, 16, 5), 1);
        // 2^40 bytes of 64 KiB pages: 2^24 TCEs, 128 MiB of table.
        assert_eq!(initial_levels(1 << 40, 16, 5), 2);
        // 2^59 bytes of 4 KiB pages: 47 bits of TCE index.
        assert_eq!(initial_levels(1 << 59, 12, 5), 3);
        assert_eq!(initial_levels(1 << 59, 12, 2), 2);
    }

    #[test]
    fn windows_overlap_and_contain_by_their_bounds() {
        let w = HostWindow {
            start: 0x1000_0000,
            size: 0x1000_0000,
            page_shift: 16,
            levels: 1,
        };
        assert!(w.overlaps(0x1fff_0000, 0x2_0000));
        assert!(!w.overlaps(0x2000_0000, 0x1000));
        assert!(!w.overlaps(0, 0x1000_0000));
        assert!(w.contains(0x1000_0000, 0x1000_0000));
        assert!(!w.contains(0x1000_0000, 0x1000_0001));
    }
}
