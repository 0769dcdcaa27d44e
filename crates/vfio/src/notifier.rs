//! [`DmaNotifier`]: mirrors one IOMMU section's guest mappings into the
//! container's host window, one guest TCE page per event.
//!
//! A MAP event carries a guest physical address; the notifier finds it in
//! the guest RAM the container follows ([`GuestRam`](crate::guest_ram))
//! and maps the page at its host address: READ always, WRITE when the
//! guest allows writes and the RAM is writable. An UNMAP event (or a MAP
//! without permissions) unmaps the page.
//!
//! `notify` cannot return an error, so failures go to the container's
//! error log and counters. A refused MAP also unmaps the page: the guest
//! replaced whatever was there, and no host mapping may outlive the guest
//! entry that made it.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use addrspace_core::{AddressSpaceId, IommuEvent, IommuEventKind, IommuNotify};

use crate::args::{VFIO_DMA_MAP_FLAG_READ, VFIO_DMA_MAP_FLAG_WRITE};
use crate::call::KernelExt;
use crate::container::Shared;
use crate::error::VfioError;
use crate::kernel::VfioKernel;

/// Where a notifier's section sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SectionPlace {
    /// Bus address of the section's first byte.
    pub(crate) bus_start: u64,
    /// Offset of that byte in the IOMMU region (events carry
    /// region-relative addresses).
    pub(crate) region_offset: u64,
    /// The guest memory address space translations must lead into.
    pub(crate) guest_memory: AddressSpaceId,
}

impl SectionPlace {
    /// The bus address of region-relative address `iova`.
    fn bus(&self, iova: u64) -> u64 {
        self.bus_start
            .wrapping_add(iova.wrapping_sub(self.region_offset))
    }
}

/// The IOMMU notifier of one section of one container.
pub(crate) struct DmaNotifier<K: VfioKernel> {
    shared: Arc<Shared<K>>,
    place: SectionPlace,
}

impl<K: VfioKernel> DmaNotifier<K> {
    pub(crate) fn new(shared: Arc<Shared<K>>, place: SectionPlace) -> Self {
        Self { shared, place }
    }

    fn map(&self, event: &IommuEvent, iova: u64) -> Result<(), VfioError> {
        if let Some(found) = event.target {
            if found != self.place.guest_memory {
                return Err(VfioError::ForeignTarget {
                    iova,
                    expected: self.place.guest_memory,
                    found,
                });
            }
        }
        let (host, readonly) = self
            .shared
            .ram
            .read()
            .translate(event.translated_addr, event.size)
            .ok_or(VfioError::NotGuestRam {
                iova,
                gpa: event.translated_addr,
                size: event.size,
            })?;
        let mut flags = VFIO_DMA_MAP_FLAG_READ;
        if event.perm.write && !readonly {
            flags |= VFIO_DMA_MAP_FLAG_WRITE;
        }
        let sh = &*self.shared;
        sh.kernel.map_typed(sh.fd, iova, event.size, host, flags)?;
        sh.counters.maps.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn unmap(&self, iova: u64, size: u64) -> Result<(), VfioError> {
        let sh = &*self.shared;
        sh.kernel.unmap_typed(sh.fd, iova, size)?;
        sh.counters.unmaps.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

impl<K: VfioKernel> IommuNotify for DmaNotifier<K> {
    fn notify(&self, event: &IommuEvent) {
        if self.shared.is_released() {
            return;
        }
        let iova = self.place.bus(event.iova);
        let mapping = event.kind == IommuEventKind::Map && !event.perm.is_none();
        if !mapping {
            self.shared.log_err(self.unmap(iova, event.size));
            return;
        }
        if let Err(err) = self.map(event, iova) {
            self.shared.log(err);
            // Whatever the page mapped before is no longer the guest's.
            self.shared.log_err(self.unmap(iova, event.size));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bus_address_follows_the_section_offset() {
        // A section that starts 0x2000 into its region, at bus 1<<59.
        let place = SectionPlace {
            bus_start: 1 << 59,
            region_offset: 0x2000,
            guest_memory: dummy_space(),
        };
        assert_eq!(place.bus(0x2000), 1 << 59);
        assert_eq!(place.bus(0x5000), (1 << 59) + 0x3000);
    }

    fn dummy_space() -> AddressSpaceId {
        let mut mem = addrspace_core::Memory::new();
        let root = mem.create_container("root", 0x1000).unwrap();
        mem.create_address_space("as", root).unwrap()
    }
}
