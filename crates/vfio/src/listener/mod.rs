//! The VFIO listeners, and plugging a [`Container`] into a machine's
//! address spaces and out again.
//!
//! # What gets registered
//!
//! | IOMMU type | guest memory address space | DMA address space |
//! |---|---|---|
//! | sPAPR v2 | pre-registration listener (`vfio-prereg`): RAM sections are registered by host address | IOMMU listener (`vfio`, an IOMMU user): one host window per IOMMU section |
//! | sPAPR v1 | RAM listener (`vfio-ram`): RAM is followed, nothing registered | IOMMU listener: sections must lie in the fixed window |
//! | Type1v2 | Type1 listener (`vfio-type1`): RAM mapped at its guest physical address | none |
//!
//! The memory listener is registered first, so that the IOMMU listener's
//! replay of existing guest mappings finds the RAM registered and
//! followed; a failure of the second registration takes the first back.
//!
//! # Ordering
//!
//! - Within a commit the framework tells address spaces in creation order;
//!   the pre-registration listener registers memory in `region_add` but
//!   unregisters it only in `commit`, after every address space has been
//!   told. So a commit that removes windows and RAM together unmaps before
//!   it unregisters, whichever address space was created first, and a RAM
//!   section deleted and re-added in one commit keeps its registration.
//! - [`Container::unplug`] (replay mode) unregisters the IOMMU listener
//!   first — its `region_del`s unmap each section and remove each window —
//!   then the memory listener, whose `region_del`s unregister memory.
//! - [`Container::teardown`] in detach mode sends no callback: the
//!   notifiers are dropped, the listeners detached, and the container
//!   released, which makes the kernel free windows, TCEs and registrations
//!   at once (no `UNMAP_DMA`, no `REMOVE`, no `UNREGISTER`).

mod prereg;
mod spapr;
mod type1;

use addrspace_core::{
    AddressSpaceId, KindTag, Listener, ListenerConfig, Memory, Section, Unregister,
};

use crate::container::{Container, PlugIds};
use crate::error::VfioError;
use crate::kernel::VfioKernel;

/// Name of the IOMMU listener on the DMA address space.
pub const DMA_LISTENER_NAME: &str = "vfio";

/// Whether a guest-memory section is RAM a device may DMA to: RAM or ROM
/// with host memory, not a RAM-device BAR (peer-to-peer DMA to another
/// device's BAR is not supported).
pub(crate) fn is_guest_ram(section: &Section) -> bool {
    section.kind == KindTag::Ram && !section.ram_device && section.host_addr().is_some()
}

/// The part of `[addr, addr + size)` made of whole pages of `page` bytes,
/// as `(start, size)`; `None` if there is no whole page in it.
pub(crate) fn whole_pages(addr: u64, size: u64, page: u64) -> Option<(u64, u64)> {
    let page = u128::from(page);
    let start = u128::from(addr).div_ceil(page) * page;
    let end = (u128::from(addr) + u128::from(size)) / page * page;
    // `end - start` is at most `size`, so both fit in a u64.
    (end > start).then(|| (start as u64, (end - start) as u64))
}

impl<K: VfioKernel + 'static> Container<K> {
    /// Plugs the container into a machine: registers the memory listener
    /// on `guest_memory` and, for sPAPR, the IOMMU listener on `dma` (see
    /// the [module docs](self)). Registration replays what is there: RAM
    /// is registered (v2) or mapped (Type1), a host window is created for
    /// each IOMMU section and its existing guest mappings are mapped.
    ///
    /// A failure takes everything back and returns the error; a listener's
    /// refusal comes as [`VfioError::Memory`] holding
    /// [`addrspace_core::Error::ListenerRefused`], whose message is this
    /// crate's error.
    pub fn plug(
        &self,
        mem: &mut Memory,
        guest_memory: AddressSpaceId,
        dma: Option<AddressSpaceId>,
    ) -> Result<PlugIds, VfioError> {
        let sh = &self.shared;
        sh.check_live()?;
        let iommu_type = self.iommu_type();
        {
            let st = sh.state.lock();
            if st.plug.is_some() {
                return Err(VfioError::AlreadyPlugged);
            }
            if st.backend.is_none() {
                return Err(VfioError::NoBackend);
            }
            if iommu_type.is_spapr() != dma.is_some() {
                return Err(VfioError::DmaSpace {
                    iommu_type,
                    needed: iommu_type.is_spapr(),
                });
            }
        }
        let (name, memory_listener): (&str, Box<dyn Listener>) = match iommu_type {
            crate::IommuType::SpaprV2 => (
                "vfio-prereg",
                Box::new(prereg::PreregListener::new(sh.clone(), true)),
            ),
            crate::IommuType::SpaprV1 => (
                "vfio-ram",
                Box::new(prereg::PreregListener::new(sh.clone(), false)),
            ),
            crate::IommuType::Type1V2 => (
                "vfio-type1",
                Box::new(type1::Type1Listener::new(sh.clone())),
            ),
        };
        let memory_id =
            mem.register_listener(guest_memory, ListenerConfig::new(name), memory_listener)?;
        let mut ids = PlugIds {
            guest_memory,
            memory_listener: memory_id,
            dma,
            dma_listener: None,
        };
        if let Some(dma) = dma {
            let listener = spapr::SpaprListener::new(sh.clone(), guest_memory);
            let config = ListenerConfig::new(DMA_LISTENER_NAME).iommu_user();
            match mem.register_listener(dma, config, Box::new(listener)) {
                Ok(id) => ids.dma_listener = Some(id),
                Err(err) => {
                    if let Err(undo) = mem.unregister_listener(memory_id, Unregister::Replay) {
                        sh.log(undo.into());
                    }
                    return Err(err.into());
                }
            }
        }
        sh.state.lock().plug = Some(ids);
        Ok(ids)
    }

    /// The listeners of a plugged container.
    pub fn plugged(&self) -> Option<PlugIds> {
        self.shared.state.lock().plug
    }

    /// Unplugs the container in replay mode: the IOMMU listener's
    /// `region_del`s unmap every section and remove every window, then the
    /// memory listener's unregister memory (or unmap RAM, on Type1). The
    /// container keeps its groups and may be plugged again.
    ///
    /// Both listeners are always unregistered; the first error is
    /// returned, and kernel failures inside the callbacks are logged.
    pub fn unplug(&self, mem: &mut Memory) -> Result<(), VfioError> {
        let ids = self
            .shared
            .state
            .lock()
            .plug
            .take()
            .ok_or(VfioError::NotPlugged)?;
        let mut first = None;
        if let Some(dma) = ids.dma_listener {
            if let Err(err) = mem.unregister_listener(dma, Unregister::Replay) {
                first.get_or_insert(err);
            }
        }
        if let Err(err) = mem.unregister_listener(ids.memory_listener, Unregister::Replay) {
            first.get_or_insert(err);
        }
        first.map_or(Ok(()), |err| Err(err.into()))
    }

    /// Takes the container out of the machine and releases it.
    ///
    /// - [`Unregister::Replay`]: [`unplug`](Self::unplug) (every window
    ///   unmapped and removed, memory unregistered, one callback at a
    ///   time), then [`release`](Self::release).
    /// - [`Unregister::Detach`]: no callbacks and no unmapping: the IOMMU
    ///   notifiers are dropped, both listeners detached (the framework
    ///   still balances its usage counters), and the container released;
    ///   the kernel frees every window, TCE and registration with the last
    ///   group.
    ///
    /// An unplugged container is simply released.
    pub fn teardown(&self, mem: &mut Memory, mode: Unregister) -> Result<(), VfioError> {
        self.shared.check_live()?;
        let mut first: Option<VfioError> = None;
        match mode {
            Unregister::Replay => {
                if self.plugged().is_some() {
                    if let Err(err) = self.unplug(mem) {
                        first.get_or_insert(err);
                    }
                }
            }
            Unregister::Detach => {
                if let Err(err) = self.detach(mem) {
                    first.get_or_insert(err);
                }
            }
        }
        if let Err(err) = self.release() {
            first.get_or_insert(err);
        }
        first.map_or(Ok(()), Err)
    }

    /// The detach-mode half of [`teardown`](Self::teardown).
    fn detach(&self, mem: &mut Memory) -> Result<(), VfioError> {
        let sh = &self.shared;
        let ids = {
            let mut st = sh.state.lock();
            let Some(ids) = st.plug.take() else {
                return Ok(());
            };
            st.sections.clear();
            ids
        };
        let mut first: Option<addrspace_core::Error> = None;
        // Detaching a listener also drops the IOMMU notifiers its callbacks
        // registered, so none go on calling into the released container.
        let listeners = ids.dma_listener.into_iter().chain([ids.memory_listener]);
        for id in listeners {
            if let Err(err) = mem.unregister_listener(id, Unregister::Detach) {
                first.get_or_insert(err);
            }
        }
        first.map_or(Ok(()), |err| Err(err.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_pages_trims_both_ends() {
        assert_eq!(
            whole_pages(0x1_2000, 0x3_0000, 0x1_0000),
            Some((0x2_0000, 0x2_0000))
        );
        assert_eq!(
            whole_pages(0x1_0000, 0x1_0000, 0x1_0000),
            Some((0x1_0000, 0x1_0000))
        );
        assert_eq!(whole_pages(0x1_2000, 0x1_0000, 0x1_0000), None);
    }

    #[test]
    fn whole_pages_at_the_top_of_the_address_space() {
        let top = u64::MAX - 0xffff;
        assert_eq!(whole_pages(top, 0x1_0000, 0x1_0000), Some((top, 0x1_0000)));
        assert_eq!(whole_pages(top + 1, 0xffff, 0x1_0000), None);
    }
}
