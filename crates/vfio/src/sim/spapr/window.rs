//! A DMA window of a host PE and its TCE table: where it sits, how big its
//! table is (what it costs in locked memory), and the host TCEs in it.
//!
//! Sizing follows PowerNV IODA2: a table of 8-byte TCEs split into
//! `levels` levels of equal width, each level at least a host page; the
//! charge is twice the table (the hardware table and its userspace-address
//! mirror).

use std::collections::BTreeMap;

use crate::sim::observe::{HostTce, WindowInfo, WindowState};

/// Bus address of each of a PE's two window slots (`tce32_start`,
/// `tce64_start` on IODA2).
pub(crate) const SLOT_START: [u64; 2] = [0, 1 << 59];
/// Window slots per PE (`IOMMU_TABLE_GROUP_MAX_TABLES`).
pub(crate) const MAX_WINDOWS: u32 = 2;
/// Maximum TCE table levels (`POWERNV_IOMMU_MAX_LEVELS`).
pub(crate) const MAX_LEVELS: u32 = 5;
/// Page shift of the default 32-bit window.
pub(crate) const DEFAULT_WINDOW_PAGE_SHIFT: u32 = 12;
/// `(levels × level bits) + page shift` must stay below this.
const MAX_TCE_ADDRESS_BITS: u32 = 55;

/// Bytes the kernel charges for a window's TCE table (twice the table), or
/// `None` when the geometry is invalid (`EINVAL`): no levels or more than
/// [`MAX_LEVELS`], a size that is not a power of two, or (a simulator
/// choice; the kernel's arithmetic would wrap) a window smaller than one
/// IOMMU page.
pub(crate) fn table_charge_bytes(
    page_shift: u32,
    window_size: u64,
    levels: u32,
    host_page_shift: u32,
) -> Option<u64> {
    if levels == 0 || levels > MAX_LEVELS || !window_size.is_power_of_two() {
        return None;
    }
    let window_shift = window_size.trailing_zeros();
    let entries_shift = window_shift.checked_sub(page_shift)?;
    let mut level_bytes = (1u64 << (entries_shift + 3)).max(0x1000);
    let direct_shift = (entries_shift.div_ceil(levels) + 3).max(host_page_shift);
    let direct = 1u64 << direct_shift;
    let mut bytes = 0u64;
    for _ in 0..levels {
        bytes += level_bytes.next_multiple_of(direct);
        level_bytes = ((level_bytes / direct) << 3).max(direct);
    }
    Some(bytes * 2)
}

/// Whether a table of `levels` levels can address the window: the bits it
/// indexes plus the page shift must stay below 55 (else `EINVAL`).
pub(crate) fn levels_fit(
    page_shift: u32,
    window_size: u64,
    levels: u32,
    host_page_shift: u32,
) -> bool {
    let entries_shift = window_size.trailing_zeros() - page_shift;
    let level_shift = (entries_shift.div_ceil(levels) + 3).max(host_page_shift);
    (level_shift - 3) * levels + page_shift < MAX_TCE_ADDRESS_BITS
}

impl WindowState {
    /// A new, empty window in `slot`.
    pub(crate) fn new(
        slot: usize,
        page_shift: u32,
        size: u64,
        levels: u32,
        locked_bytes: u64,
    ) -> Self {
        Self {
            info: WindowInfo {
                start: SLOT_START[slot],
                size,
                page_shift,
                levels,
                locked_bytes,
            },
            entries: BTreeMap::new(),
        }
    }

    /// IOMMU page size.
    pub(crate) fn page_size(&self) -> u64 {
        1 << self.info.page_shift
    }

    /// Whether bus address `addr` falls inside the window.
    pub(crate) fn contains(&self, addr: u64) -> bool {
        addr >= self.info.start && addr - self.info.start < self.info.size
    }

    /// Whether `[addr, addr + len)` lies inside the window.
    pub(crate) fn contains_range(&self, addr: u64, len: u64) -> bool {
        self.contains(addr) && len <= self.info.size - (addr - self.info.start)
    }

    /// End bus address (exclusive).
    pub(crate) fn end(&self) -> u64 {
        self.info.start + self.info.size
    }

    /// Removes the entries of `[from, to)` and returns them.
    pub(crate) fn take_range(&mut self, from: u64, to: u64) -> Vec<HostTce> {
        let keys: Vec<u64> = self.entries.range(from..to).map(|(&k, _)| k).collect();
        keys.into_iter()
            .filter_map(|k| self.entries.remove(&k))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_window_table_costs_twice_its_four_megabytes() {
        // 2 GiB of 4 KiB pages: 512 Ki TCEs, 4 MiB of table.
        let bytes = table_charge_bytes(12, 1 << 31, 1, 16);
        assert_eq!(bytes, Some(8 << 20));
    }

    #[test]
    fn small_tables_are_rounded_up_to_a_host_page_per_level() {
        // 1 MiB of 64 KiB pages: 16 TCEs, 128 bytes, but a level is at least
        // one 64 KiB host page.
        assert_eq!(table_charge_bytes(16, 1 << 20, 1, 16), Some(2 << 16));
        assert_eq!(table_charge_bytes(16, 1 << 20, 2, 16), Some(4 << 16));
    }

    #[test]
    fn multi_level_table_splits_entries_evenly() {
        // 2^24 TCEs of 8 bytes make 128 MiB of leaves; the indirect level
        // above them needs 32 KiB, rounded up to one 64 KiB host page.
        let bytes = table_charge_bytes(16, 1 << 40, 2, 16).unwrap();
        assert_eq!(bytes, 2 * ((1 << 16) + (1u64 << 27)));
    }

    #[test]
    fn geometry_errors_yield_none() {
        assert_eq!(table_charge_bytes(16, 1 << 30, 0, 16), None);
        assert_eq!(table_charge_bytes(16, 1 << 30, 6, 16), None);
        assert_eq!(table_charge_bytes(16, 3 << 30, 1, 16), None);
        assert_eq!(table_charge_bytes(16, 0, 1, 16), None);
        assert_eq!(table_charge_bytes(16, 1 << 12, 1, 16), None);
    }

    #[test]
    fn too_many_levels_overflow_the_tce_address_bits() {
        // With 64 KiB host pages a level indexes at least 13 bits.
        assert!(levels_fit(12, 1 << 31, 1, 16));
        assert!(levels_fit(12, 1 << 31, 3, 16));
        assert!(!levels_fit(12, 1 << 31, 4, 16));
        assert!(!levels_fit(24, 1 << 40, 3, 16));
    }

    #[test]
    fn window_range_checks_respect_both_ends() {
        let w = WindowState::new(1, 16, 1 << 20, 1, 0);
        assert!(w.contains(1 << 59));
        assert!(!w.contains((1 << 59) - 1));
        assert!(w.contains_range((1 << 59) + 0xf_0000, 0x1_0000));
        assert!(!w.contains_range((1 << 59) + 0xf_0000, 0x2_0000));
        assert_eq!(w.end(), (1 << 59) + (1 << 20));
    }
}
