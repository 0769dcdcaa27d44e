//! The Type1 listener, on the guest memory address space: every RAM
//! section is mapped with `MAP_DMA` at its guest physical address (whole
//! host pages only) and unmapped on `region_del`.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use addrspace_core::{ListenerCx, ListenerResult, Section};

use super::{is_guest_ram, whole_pages};
use crate::args::{VFIO_DMA_MAP_FLAG_READ, VFIO_DMA_MAP_FLAG_WRITE};
use crate::call::KernelExt;
use crate::container::Shared;
use crate::guest_ram::RamRange;
use crate::kernel::VfioKernel;

/// See the [module docs](self).
pub(crate) struct Type1Listener<K: VfioKernel> {
    shared: Arc<Shared<K>>,
    /// RAM sections held, by guest address, with the `(iova, size)`
    /// mapped for each.
    sections: BTreeMap<u64, Option<(u64, u64)>>,
}

impl<K: VfioKernel> Type1Listener<K> {
    pub(crate) fn new(shared: Arc<Shared<K>>) -> Self {
        Self {
            shared,
            sections: BTreeMap::new(),
        }
    }
}

impl<K: VfioKernel> addrspace_core::Listener for Type1Listener<K> {
    fn region_add(&mut self, _cx: &mut ListenerCx<'_>, section: &Section) -> ListenerResult {
        if !is_guest_ram(section) {
            return Ok(());
        }
        let sh = &*self.shared;
        let gpa = section.start();
        let host = section.host_addr().expect("RAM has host memory");
        let size = u64::try_from(section.size()).expect("RAM fits host memory");
        let mapped = whole_pages(gpa, size, sh.config.host_page_size);
        if let Some((iova, len)) = mapped {
            let mut flags = VFIO_DMA_MAP_FLAG_READ;
            if !section.readonly() {
                flags |= VFIO_DMA_MAP_FLAG_WRITE;
            }
            sh.kernel
                .map_typed(sh.fd, iova, len, host + (iova - gpa), flags)?;
            sh.counters.maps.fetch_add(1, Ordering::Relaxed);
        }
        sh.ram.write().insert(RamRange {
            gpa,
            size,
            host,
            readonly: section.readonly(),
        });
        self.sections.insert(gpa, mapped);
        Ok(())
    }

    fn region_del(&mut self, _cx: &mut ListenerCx<'_>, section: &Section) {
        let Some(mapped) = self.sections.remove(&section.start()) else {
            return;
        };
        let sh = &*self.shared;
        sh.ram.write().remove(section.start());
        if let Some((iova, len)) = mapped {
            match sh.kernel.unmap_typed(sh.fd, iova, len) {
                Ok(()) => {
                    sh.counters.unmaps.fetch_add(1, Ordering::Relaxed);
                }
                Err(err) => sh.log(err),
            }
        }
    }
}
