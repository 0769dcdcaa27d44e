//! Address ranges that may reach 2^64.

use std::fmt;

use crate::region::SIZE_2_64;

/// A half-open range `[start, start + size)` of a 64-bit space. `size` is a
/// `u128` so that a range may end exactly at 2^64; constructors refuse
/// ranges that would go past it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AddrRange {
    /// First address.
    pub start: u64,
    /// Length in bytes.
    pub size: u128,
}

impl AddrRange {
    /// The range `[start, start + size)`, or `None` if it ends past 2^64.
    pub fn new(start: u64, size: u128) -> Option<AddrRange> {
        (start as u128 + size <= SIZE_2_64).then_some(AddrRange { start, size })
    }

    /// One past the last address (up to 2^64).
    pub fn end(&self) -> u128 {
        self.start as u128 + self.size
    }

    /// The last address, or `None` for an empty range.
    pub fn last(&self) -> Option<u64> {
        (self.size > 0).then(|| (self.end() - 1) as u64)
    }

    /// True if the range has no bytes.
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// True if `addr` lies inside.
    pub fn contains(&self, addr: u64) -> bool {
        addr >= self.start && (addr as u128) < self.end()
    }

    /// The common part of two ranges, if any.
    pub fn intersect(&self, other: &AddrRange) -> Option<AddrRange> {
        let start = self.start.max(other.start);
        let end = self.end().min(other.end());
        (end > start as u128).then(|| AddrRange {
            start,
            size: end - start as u128,
        })
    }
}

impl fmt::Debug for AddrRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:#x}, {:#x})", self.start, self.end())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_may_end_at_2_64_but_not_past() {
        assert!(AddrRange::new(0, SIZE_2_64).is_some());
        assert!(AddrRange::new(1, SIZE_2_64).is_none());
        assert_eq!(AddrRange::new(u64::MAX, 1).unwrap().last(), Some(u64::MAX));
    }

    #[test]
    fn intersection_of_disjoint_ranges_is_none() {
        let a = AddrRange::new(0, 0x10).unwrap();
        let b = AddrRange::new(0x10, 0x10).unwrap();
        assert_eq!(a.intersect(&b), None);
        let c = AddrRange::new(0x8, 0x10).unwrap();
        assert_eq!(a.intersect(&c), AddrRange::new(0x8, 0x8));
    }
}
