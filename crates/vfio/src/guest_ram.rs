//! [`GuestRam`]: the guest RAM a container follows, by guest physical
//! address, with the host virtual address behind each range.
//!
//! The memory listener keeps it (one entry per RAM section it holds) and
//! the IOMMU notifiers read it to turn the guest physical address of a
//! TCE into the host address `MAP_DMA` wants. Only sections the listener
//! holds are in it, so a TCE pointing at MMIO, at a RAM-device BAR, at a
//! hole, or at RAM that has just been unplugged finds nothing and is never
//! mapped.

use std::collections::BTreeMap;

/// One range of guest RAM the container follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RamRange {
    /// Guest physical address of the first byte.
    pub gpa: u64,
    /// Size in bytes.
    pub size: u64,
    /// Host virtual address of the first byte.
    pub host: u64,
    /// Writes must not reach it (ROM, or a read-only alias).
    pub readonly: bool,
}

impl RamRange {
    /// End guest physical address (exclusive), as a `u128`.
    pub fn end(&self) -> u128 {
        u128::from(self.gpa) + u128::from(self.size)
    }
}

/// Guest RAM ranges keyed by guest physical address; they never overlap
/// (they are sections of one flat view).
#[derive(Clone, Debug, Default)]
pub(crate) struct GuestRam {
    ranges: BTreeMap<u64, RamRange>,
}

impl GuestRam {
    /// Adds a range (a new section).
    pub(crate) fn insert(&mut self, range: RamRange) {
        self.ranges.insert(range.gpa, range);
    }

    /// Removes the range starting at `gpa` (a deleted section).
    pub(crate) fn remove(&mut self, gpa: u64) -> Option<RamRange> {
        self.ranges.remove(&gpa)
    }

    /// Every range, ascending.
    pub(crate) fn ranges(&self) -> Vec<RamRange> {
        self.ranges.values().copied().collect()
    }

    /// The host address of `[gpa, gpa + size)` and whether it is read-only,
    /// if the whole of it lies in one range.
    pub(crate) fn translate(&self, gpa: u64, size: u64) -> Option<(u64, bool)> {
        let (_, range) = self.ranges.range(..=gpa).next_back()?;
        let end = u128::from(gpa) + u128::from(size);
        (size > 0 && end <= range.end()).then(|| (range.host + (gpa - range.gpa), range.readonly))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ram() -> GuestRam {
        let mut ram = GuestRam::default();
        ram.insert(RamRange {
            gpa: 0,
            size: 0x1000_0000,
            host: 0x7f00_0000_0000,
            readonly: false,
        });
        ram.insert(RamRange {
            gpa: 0x2000_0000,
            size: 0x1_0000,
            host: 0x7e00_0000_0000,
            readonly: true,
        });
        ram
    }

    #[test]
    fn translation_offsets_into_the_containing_range() {
        let ram = ram();
        assert_eq!(
            ram.translate(0x123_0000, 0x1_0000),
            Some((0x7f00_0123_0000, false))
        );
        assert_eq!(
            ram.translate(0x2000_0000, 0x1_0000),
            Some((0x7e00_0000_0000, true))
        );
    }

    #[test]
    fn pages_in_holes_or_across_range_ends_do_not_translate() {
        let ram = ram();
        assert_eq!(ram.translate(0x1000_0000, 0x1000), None);
        assert_eq!(ram.translate(0x0fff_f000, 0x2000), None);
        assert_eq!(ram.translate(0x2000_8000, 0x1_0000), None);
        assert_eq!(ram.translate(0, 0), None);
    }

    #[test]
    fn removed_ranges_stop_translating() {
        let mut ram = ram();
        assert!(ram.remove(0).is_some());
        assert_eq!(ram.translate(0x1000, 0x1000), None);
        assert_eq!(ram.ranges().len(), 1);
    }
}
