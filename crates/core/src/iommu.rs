//! IOMMU regions: translation ops.
//!
//! An IOMMU region is a leaf in the tree whose accesses are translated into
//! another address space. Notifiers and usage counters build on this.

use std::fmt;

use crate::id::AddressSpaceId;

/// Access permissions of an IOMMU mapping (QEMU's `IOMMUAccessFlags`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct IommuPerm {
    /// Reads allowed.
    pub read: bool,
    /// Writes allowed.
    pub write: bool,
}

impl IommuPerm {
    /// No access: an unmapped entry.
    pub const NONE: IommuPerm = IommuPerm {
        read: false,
        write: false,
    };
    /// Read-only.
    pub const RO: IommuPerm = IommuPerm {
        read: true,
        write: false,
    };
    /// Write-only.
    pub const WO: IommuPerm = IommuPerm {
        read: false,
        write: true,
    };
    /// Read and write.
    pub const RW: IommuPerm = IommuPerm {
        read: true,
        write: true,
    };

    /// True if every permission in `needed` is granted.
    pub fn allows(self, needed: IommuPerm) -> bool {
        (self.read || !needed.read) && (self.write || !needed.write)
    }

    /// True if nothing is allowed.
    pub fn is_none(self) -> bool {
        !self.read && !self.write
    }
}

/// One translation (QEMU's `IOMMUTLBEntry`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IommuTlbEntry {
    /// First I/O virtual address covered, aligned to the page.
    pub iova: u64,
    /// The address `iova` translates to in `target`.
    pub translated_addr: u64,
    /// `page size - 1`.
    pub addr_mask: u64,
    /// What the mapping allows; [`IommuPerm::NONE`] means unmapped.
    pub perm: IommuPerm,
    /// The address space translated addresses live in.
    pub target: Option<AddressSpaceId>,
}

/// The behaviour of an IOMMU region (QEMU's `IOMMUMemoryRegionClass`).
pub trait IommuOps: Send + Sync {
    /// Translates the region-relative `addr` for an access needing `access`.
    fn translate(&self, addr: u64, access: IommuPerm) -> IommuTlbEntry;
    /// Smallest page the IOMMU maps, a power of two.
    fn min_page_size(&self) -> u64;
}

impl fmt::Debug for dyn IommuOps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<iommu ops, min page {:#x}>", self.min_page_size())
    }
}

/// IOMMU ops that map nothing; for regions imported from a QEMU dump.
#[derive(Debug, Clone, Copy)]
pub struct UnmappedIommu {
    /// The page size to report.
    pub page_size: u64,
}

impl IommuOps for UnmappedIommu {
    fn translate(&self, addr: u64, _access: IommuPerm) -> IommuTlbEntry {
        let mask = self.page_size - 1;
        IommuTlbEntry {
            iova: addr & !mask,
            translated_addr: 0,
            addr_mask: mask,
            perm: IommuPerm::NONE,
            target: None,
        }
    }
    fn min_page_size(&self) -> u64 {
        self.page_size
    }
}
