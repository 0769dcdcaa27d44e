//! The vocabulary of sPAPR DMA: LIOBNs, BUIDs, TCEs, window geometry and
//! page-size sets.

use std::fmt;

use addrspace_core::IommuPerm;

/// Page shift of the default DMA window and of the indirect-put list
/// (PAPR's 4 KiB TCE page; QEMU's `SPAPR_TCE_PAGE_SHIFT`).
pub const TCE_PAGE_SHIFT: u32 = 12;

/// A logical I/O bus number: the guest's name for one TCE table (PAPR's
/// LIOBN). PCI LIOBNs are `0x8000_0000 | phb_index << 8 | window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Liobn(pub u32);

impl Liobn {
    /// The first PCI LIOBN (QEMU's `SPAPR_PCI_BASE_LIOBN`).
    pub const PCI_BASE: u32 = 0x8000_0000;

    /// The LIOBN of DMA window `window` of PHB `phb_index` (QEMU's
    /// `SPAPR_PCI_LIOBN`).
    pub fn pci(phb_index: u32, window: u32) -> Liobn {
        Liobn(Self::PCI_BASE | (phb_index << 8) | window)
    }
}

impl TryFrom<u64> for Liobn {
    type Error = std::num::TryFromIntError;

    /// A hypercall argument as a LIOBN; one that does not fit 32 bits names
    /// no table (the caller answers `H_PARAMETER`).
    fn try_from(raw: u64) -> Result<Liobn, Self::Error> {
        u32::try_from(raw).map(Liobn)
    }
}

impl fmt::Display for Liobn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// The bus unit identifier of a PHB, which RTAS calls name it by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Buid(pub u64);

impl Buid {
    /// The BUID of PHB 0 (QEMU's `SPAPR_PCI_BASE_BUID`).
    pub const BASE: u64 = 0x0800_0000_2000_0000;

    /// The BUID of PHB `index`.
    pub fn for_index(index: u32) -> Buid {
        Buid(Self::BASE + index as u64)
    }
}

impl fmt::Display for Buid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// One translation control entry: a guest physical page address with the
/// permission bits in its low bits, exactly as the guest writes it.
///
/// Bits between the permissions and the page shift are kept as written
/// (as QEMU does) and ignored by translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Tce(pub u64);

impl Tce {
    /// The device may read the page (`TCE_PCI_READ`).
    pub const READ: u64 = 1;
    /// The device may write the page (`TCE_PCI_WRITE`).
    pub const WRITE: u64 = 2;
    /// Both permission bits.
    pub const PERM_MASK: u64 = Self::READ | Self::WRITE;
    /// The cleared entry.
    pub const EMPTY: Tce = Tce(0);

    /// The entry mapping the page at `page_addr` with `perm`.
    pub fn new(page_addr: u64, perm: IommuPerm) -> Tce {
        let mut raw = page_addr & !Self::PERM_MASK;
        if perm.read {
            raw |= Self::READ;
        }
        if perm.write {
            raw |= Self::WRITE;
        }
        Tce(raw)
    }

    /// What the entry allows.
    pub fn perm(self) -> IommuPerm {
        IommuPerm {
            read: self.0 & Self::READ != 0,
            write: self.0 & Self::WRITE != 0,
        }
    }

    /// True if the entry maps its page (a permission bit is set).
    pub fn is_valid(self) -> bool {
        self.0 & Self::PERM_MASK != 0
    }

    /// The guest address of the page, for pages of `1 << page_shift` bytes.
    pub fn page_addr(self, page_shift: u32) -> u64 {
        self.0 & !page_mask(page_shift)
    }
}

impl fmt::Display for Tce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// `page size - 1` for pages of `1 << page_shift` bytes.
pub(crate) fn page_mask(page_shift: u32) -> u64 {
    (1u64 << page_shift) - 1
}

/// Where a DMA window lies on the PCI bus and how its table is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WindowGeometry {
    /// First bus address of the window.
    pub bus_offset: u64,
    /// log2 of the TCE page size.
    pub page_shift: u32,
    /// Number of TCEs (pages) in the window.
    pub entries: u64,
}

impl WindowGeometry {
    /// The default 32-bit window: 4 KiB pages from `bus_offset`, `size`
    /// bytes.
    pub fn default_window(bus_offset: u64, size: u64) -> WindowGeometry {
        WindowGeometry {
            bus_offset,
            page_shift: TCE_PAGE_SHIFT,
            entries: size >> TCE_PAGE_SHIFT,
        }
    }

    /// Bytes per page.
    pub fn page_size(&self) -> u64 {
        1 << self.page_shift
    }

    /// Bytes covered, up to 2^64.
    pub fn size(&self) -> u128 {
        (self.entries as u128) << self.page_shift
    }

    /// One past the last bus address, up to 2^64.
    pub fn end(&self) -> u128 {
        self.bus_offset as u128 + self.size()
    }

    /// The index of the TCE serving bus address `ioba`, if the window
    /// covers it.
    pub fn index_of(&self, ioba: u64) -> Option<u64> {
        let index = ioba.checked_sub(self.bus_offset)? >> self.page_shift;
        (index < self.entries).then_some(index)
    }

    /// The region-relative I/O address of TCE `index`.
    pub fn iova_of(&self, index: u64) -> u64 {
        index << self.page_shift
    }

    /// True if the two windows share a bus address.
    pub fn overlaps(&self, other: &WindowGeometry) -> bool {
        (self.bus_offset as u128) < other.end() && (other.bus_offset as u128) < self.end()
    }
}

/// A set of page sizes, one bit per size in bytes (bit `n` = `1 << n`
/// bytes), as QEMU's PHB `pgsz` property holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PageSizes(pub u64);

impl PageSizes {
    /// 4 KiB.
    pub const SIZE_4K: u64 = 1 << 12;
    /// 64 KiB.
    pub const SIZE_64K: u64 = 1 << 16;
    /// 2 MiB.
    pub const SIZE_2M: u64 = 1 << 21;
    /// 16 MiB.
    pub const SIZE_16M: u64 = 1 << 24;
    /// A PHB's default: 4K, 64K, 2M and 16M.
    pub const PHB_DEFAULT: PageSizes =
        PageSizes(Self::SIZE_4K | Self::SIZE_64K | Self::SIZE_2M | Self::SIZE_16M);

    /// True if pages of `1 << shift` bytes are in the set.
    pub fn has_shift(self, shift: u32) -> bool {
        shift < 64 && self.0 & (1 << shift) != 0
    }

    /// The set in the encoding `ibm,query-pe-dma-window` returns (LoPAPR:
    /// 4K = 0x1, 64K = 0x2, 16M = 0x4, 32M = 0x8, 64M = 0x10, 128M = 0x20,
    /// 256M = 0x40, 16G = 0x80, 2M = 0x100). Sizes LoPAPR cannot name are
    /// left out.
    pub fn lopapr_mask(self) -> u32 {
        const CODES: [(u32, u32); 9] = [
            (12, 0x1),
            (16, 0x2),
            (21, 0x100),
            (24, 0x4),
            (25, 0x8),
            (26, 0x10),
            (27, 0x20),
            (28, 0x40),
            (34, 0x80),
        ];
        CODES
            .iter()
            .filter(|(shift, _)| self.has_shift(*shift))
            .fold(0, |mask, (_, code)| mask | code)
    }
}

impl Default for PageSizes {
    fn default() -> Self {
        Self::PHB_DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pci_liobns_follow_qemus_numbering() {
        assert_eq!(Liobn::pci(0, 0), Liobn(0x8000_0000));
        assert_eq!(Liobn::pci(0, 1), Liobn(0x8000_0001));
        assert_eq!(Liobn::pci(3, 1), Liobn(0x8000_0301));
    }

    #[test]
    fn buid_of_phb_zero_matches_the_device_tree_name() {
        assert_eq!(
            format!("pci@{:x}", Buid::for_index(0).0),
            "pci@800000020000000"
        );
    }

    #[test]
    fn liobn_from_a_wide_argument_is_refused() {
        assert!(Liobn::try_from(0x1_0000_0000u64).is_err());
        assert_eq!(Liobn::try_from(0x8000_0000u64), Ok(Liobn(0x8000_0000)));
    }

    #[test]
    fn tce_keeps_address_and_permissions_apart() {
        let tce = Tce::new(0x1234_5000, IommuPerm::RO);

        assert_eq!(tce.0, 0x1234_5001);
        assert_eq!(tce.perm(), IommuPerm::RO);
        assert!(tce.is_valid());
        assert_eq!(tce.page_addr(12), 0x1234_5000);
        assert_eq!(tce.page_addr(16), 0x1234_0000);
        assert!(!Tce(0x1234_5000).is_valid());
    }

    #[test]
    fn geometry_indexes_only_inside_the_window() {
        let g = WindowGeometry {
            bus_offset: 0x1000_0000,
            page_shift: 16,
            entries: 4,
        };

        assert_eq!(g.index_of(0x1000_0000), Some(0));
        assert_eq!(g.index_of(0x1003_ffff), Some(3));
        assert_eq!(g.index_of(0x1004_0000), None);
        assert_eq!(g.index_of(0x0fff_ffff), None);
        assert_eq!(g.size(), 0x4_0000);
    }

    #[test]
    fn geometry_reaching_two_to_the_64_does_not_wrap() {
        let g = WindowGeometry {
            bus_offset: 0,
            page_shift: 32,
            entries: 1 << 32,
        };

        assert_eq!(g.end(), 1 << 64);
        assert_eq!(g.index_of(u64::MAX), Some((1 << 32) - 1));
    }

    #[test]
    fn windows_touching_end_to_start_do_not_overlap() {
        let low = WindowGeometry::default_window(0, 0x4000_0000);
        let high = WindowGeometry::default_window(0x4000_0000, 0x1000);

        assert!(!low.overlaps(&high));
        assert!(low.overlaps(&WindowGeometry::default_window(0x3fff_f000, 0x2000)));
    }

    #[test]
    fn default_page_sizes_encode_for_lopapr() {
        assert_eq!(
            PageSizes::PHB_DEFAULT.lopapr_mask(),
            0x1 | 0x2 | 0x100 | 0x4
        );
        assert!(PageSizes::PHB_DEFAULT.has_shift(21));
        assert!(!PageSizes::PHB_DEFAULT.has_shift(13));
        assert!(!PageSizes::PHB_DEFAULT.has_shift(200));
    }
}
