//! IOMMU regions: translation ops, notifiers, and usage counters.
//!
//! An IOMMU region is a leaf whose accesses are translated into another
//! address space. Two mechanisms sit on it:
//!
//! - **Notifiers** subscribe to MAP and/or UNMAP events over a range of
//!   the region. The IOMMU model (e.g. a guest TCE table) calls
//!   [`Memory::iommu_notify`](crate::Memory::iommu_notify) when the guest
//!   changes a mapping; each notifier receives the event cropped to its
//!   range, if its flags ask for that kind. Replay sends the current
//!   mappings to one notifier.
//! - **The usage counter** counts the (listener, section) pairs held by
//!   listeners registered as IOMMU users (VFIO containers). It is judged
//!   when a commit (or a registration or unregistration) ends: when it
//!   went from 0 to more, the region's `vfio_start` hook runs; from more
//!   to 0, `vfio_stop`. A section deleted and re-added within one
//!   transaction (a machine reset) therefore runs neither. The hooks
//!   strictly alternate per region: `vfio_stop` only follows a
//!   `vfio_start` that succeeded.
//!
//! A failed `vfio_start` must not leave IOMMU users holding a region
//! whose model is not ready for them (a VFIO container would miss guest
//! mappings). So the region's sections are withdrawn from every IOMMU-user
//! listener — each gets `region_del` within the same commit and then
//! treats the range as refused until it changes — the counter falls back
//! to 0, and the commit returns [`Error::IommuHook`](crate::Error::IommuHook).
//! A registration whose replay triggers a failed start is undone whole.
//! A failed `vfio_stop` is reported the same way, but the region counts as
//! stopped: nothing uses it any more.

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

/// Which events a notifier wants (QEMU's `IOMMUNotifierFlag`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct NotifierFlags {
    /// New mappings.
    pub map: bool,
    /// Removed mappings.
    pub unmap: bool,
}

impl NotifierFlags {
    /// Nothing.
    pub const NONE: NotifierFlags = NotifierFlags {
        map: false,
        unmap: false,
    };
    /// MAP only.
    pub const MAP: NotifierFlags = NotifierFlags {
        map: true,
        unmap: false,
    };
    /// UNMAP only.
    pub const UNMAP: NotifierFlags = NotifierFlags {
        map: false,
        unmap: true,
    };
    /// MAP and UNMAP.
    pub const ALL: NotifierFlags = NotifierFlags {
        map: true,
        unmap: true,
    };

    /// The union of two sets.
    pub fn union(self, other: NotifierFlags) -> NotifierFlags {
        NotifierFlags {
            map: self.map || other.map,
            unmap: self.unmap || other.unmap,
        }
    }

    /// True if no flag is set.
    pub fn is_empty(self) -> bool {
        !self.map && !self.unmap
    }
}

/// The kind of an IOMMU event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IommuEventKind {
    /// A mapping appeared.
    Map,
    /// A mapping went away.
    Unmap,
}

/// A change of IOMMU mappings: `[iova, iova + size)` now translates to
/// `translated_addr` with `perm` (MAP), or no longer does (UNMAP).
/// Delivered to each notifier cropped to its range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IommuEvent {
    /// MAP or UNMAP.
    pub kind: IommuEventKind,
    /// First I/O virtual address (region-relative).
    pub iova: u64,
    /// Bytes covered.
    pub size: u64,
    /// Where `iova` translates to (MAP).
    pub translated_addr: u64,
    /// Permissions (MAP).
    pub perm: IommuPerm,
    /// The address space of `translated_addr`.
    pub target: Option<AddressSpaceId>,
}

impl IommuEvent {
    /// The MAP event of a translation entry.
    pub fn map(entry: &IommuTlbEntry) -> IommuEvent {
        IommuEvent {
            kind: IommuEventKind::Map,
            iova: entry.iova,
            size: entry.addr_mask.wrapping_add(1),
            translated_addr: entry.translated_addr,
            perm: entry.perm,
            target: entry.target,
        }
    }

    /// An UNMAP of `[iova, iova + size)`.
    pub fn unmap(iova: u64, size: u64) -> IommuEvent {
        IommuEvent {
            kind: IommuEventKind::Unmap,
            iova,
            size,
            translated_addr: 0,
            perm: IommuPerm::NONE,
            target: None,
        }
    }

    /// The part of the event inside `[start, last]`, if any.
    pub fn crop(&self, start: u64, last: u64) -> Option<IommuEvent> {
        let ev_last = self.iova.checked_add(self.size.checked_sub(1)?)?;
        if ev_last < start || self.iova > last {
            return None;
        }
        let lo = self.iova.max(start);
        let hi = ev_last.min(last);
        Some(IommuEvent {
            iova: lo,
            size: hi - lo + 1,
            translated_addr: self.translated_addr.wrapping_add(lo - self.iova),
            ..*self
        })
    }
}

/// What a failing IOMMU hook returns.
pub type HookError = Box<dyn std::error::Error + Send + Sync>;

/// The behaviour of an IOMMU region (QEMU's `IOMMUMemoryRegionClass`).
///
/// Methods take `&self`: models keep their state behind their own locks.
/// Hooks run while the framework holds the tree, so they must not call
/// back into the [`Memory`](crate::Memory).
pub trait IommuOps: Send + Sync {
    /// Translates the region-relative `addr` for an access needing `access`.
    fn translate(&self, addr: u64, access: IommuPerm) -> IommuTlbEntry;

    /// Smallest page the IOMMU maps, a power of two.
    fn min_page_size(&self) -> u64;

    /// Sends every current mapping inside `[start, last]` to `f` and
    /// returns true; or returns false to let the framework walk
    /// [`translate`](Self::translate) page by page instead.
    fn replay(&self, start: u64, last: u64, f: &mut dyn FnMut(&IommuTlbEntry)) -> bool {
        let _ = (start, last, f);
        false
    }

    /// The region gained its first IOMMU user (a VFIO container).
    fn vfio_start(&self) -> Result<(), HookError> {
        Ok(())
    }

    /// The region lost its last IOMMU user.
    fn vfio_stop(&self) -> Result<(), HookError> {
        Ok(())
    }

    /// The union of the flags of the region's notifiers changed (QEMU's
    /// `notify_flag_changed`). Refusing makes the notifier registration
    /// (or unregistration) that caused it fail.
    fn notify_flags_changed(
        &self,
        old: NotifierFlags,
        new: NotifierFlags,
    ) -> Result<(), HookError> {
        let _ = (old, new);
        Ok(())
    }
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

/// Receives IOMMU events (QEMU's `IOMMUNotifier` callback).
pub trait IommuNotify: Send + Sync {
    /// A mapping changed inside the notifier's range.
    fn notify(&self, event: &IommuEvent);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_keeps_translation_in_step() {
        let ev = IommuEvent {
            kind: IommuEventKind::Map,
            iova: 0x1000,
            size: 0x3000,
            translated_addr: 0x8000_0000,
            perm: IommuPerm::RW,
            target: None,
        };
        let c = ev.crop(0x2000, 0x2fff).unwrap();
        assert_eq!(
            (c.iova, c.size, c.translated_addr),
            (0x2000, 0x1000, 0x8000_1000)
        );
        assert!(ev.crop(0x4000, 0x4fff).is_none());
        assert_eq!(ev.crop(0, u64::MAX), Some(ev));
    }

    #[test]
    fn unmap_event_reaching_the_top_crops() {
        let ev = IommuEvent::unmap(u64::MAX - 0xfff, 0x1000);
        assert_eq!(
            ev.crop(u64::MAX - 0x7ff, u64::MAX).map(|e| e.size),
            Some(0x800)
        );
    }
}
