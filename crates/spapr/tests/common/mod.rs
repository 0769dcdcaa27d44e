//! Shared fixtures: a guest with RAM, an sPAPR IOMMU with PHB 0, and a
//! VFIO-like IOMMU user that mirrors what it is told into a shadow map.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use addrspace_core::{
    AddressSpaceId, IommuEvent, IommuEventKind, IommuNotify, IommuPerm, KindTag, Listener,
    ListenerConfig, ListenerCx, ListenerId, ListenerResult, Memory, NotifierFlags, NotifierId,
    RegionId, Section, SIZE_2_64,
};
use addrspace_spapr::{Buid, GuestRam, Liobn, PhbConfig, SpaprIommu};
use parking_lot::Mutex;

/// Guest RAM size.
pub const RAM: u64 = 0x100_0000;
/// PHB 0.
pub const BUID: Buid = Buid(0x0800_0000_2000_0000);
/// The default window's LIOBN.
pub const DEFAULT: Liobn = Liobn(0x8000_0000);
/// The second slot's LIOBN.
pub const SECOND: Liobn = Liobn(0x8000_0001);

pub struct Machine {
    pub mem: Memory,
    pub iommu: SpaprIommu,
    pub guest: AddressSpaceId,
}

impl Machine {
    pub fn new(config: PhbConfig) -> Machine {
        let mut mem = Memory::new();
        let system = mem.create_container("system", SIZE_2_64).unwrap();
        let ram = mem.create_ram("ppc_spapr.ram", RAM as u128).unwrap();
        mem.add_subregion(system, 0, ram).unwrap();
        let guest = mem.create_address_space("memory", system).unwrap();
        let mut iommu = SpaprIommu::new(GuestRam {
            address_space: guest,
            size: RAM,
        });
        iommu.add_phb(&mut mem, config).unwrap();
        Machine { mem, iommu, guest }
    }

    pub fn dma_space(&self) -> AddressSpaceId {
        self.iommu.phbs()[0].address_space()
    }

    pub fn region_of(&self, liobn: Liobn) -> RegionId {
        self.iommu.phbs()[0].iommu_region(liobn).unwrap()
    }

    /// Registers a [`Mirror`] as an IOMMU user on the DMA address space.
    pub fn attach_mirror(&mut self) -> (ListenerId, Mirror) {
        let mirror = Mirror::default();
        let id = self
            .mem
            .register_listener(
                self.dma_space(),
                ListenerConfig::new("vfio-mirror").iommu_user(),
                Box::new(mirror.clone()),
            )
            .unwrap();
        (id, mirror)
    }

    /// What a mirror should hold: every valid entry of every enabled
    /// window, by (IOMMU region, I/O address).
    pub fn expected_mappings(&self) -> BTreeMap<(RegionId, u64), (u64, IommuPerm)> {
        let phb = &self.iommu.phbs()[0];
        let mut out = BTreeMap::new();
        for (liobn, g) in phb.active_windows() {
            let region = phb.iommu_region(liobn).unwrap();
            for (index, tce) in phb.table(liobn).unwrap().valid_entries() {
                out.insert(
                    (region, g.iova_of(index)),
                    (tce.page_addr(g.page_shift), tce.perm()),
                );
            }
        }
        out
    }
}

type Shadow = Arc<Mutex<BTreeMap<(RegionId, u64), (u64, IommuPerm)>>>;

/// Applies IOMMU events of one region to the shadow map.
struct ShadowNotify {
    region: RegionId,
    shadow: Shadow,
}

impl IommuNotify for ShadowNotify {
    fn notify(&self, e: &IommuEvent) {
        let mut shadow = self.shadow.lock();
        match e.kind {
            IommuEventKind::Map => {
                shadow.insert((self.region, e.iova), (e.translated_addr, e.perm));
            }
            IommuEventKind::Unmap => {
                let last = e.iova + (e.size - 1);
                shadow.retain(|(r, iova), _| *r != self.region || *iova < e.iova || *iova > last);
            }
        }
    }
}

/// A VFIO-like IOMMU user: a MAP|UNMAP notifier plus a replay per IOMMU
/// section on `region_add`, dropped on `region_del`. Cloning shares state.
#[derive(Clone, Default)]
pub struct Mirror {
    pub shadow: Shadow,
    pub events: Arc<Mutex<Vec<String>>>,
    notifiers: Arc<Mutex<HashMap<(RegionId, u64), NotifierId>>>,
}

impl Mirror {
    pub fn mappings(&self) -> BTreeMap<(RegionId, u64), (u64, IommuPerm)> {
        self.shadow.lock().clone()
    }

    pub fn take_events(&self) -> Vec<String> {
        std::mem::take(&mut *self.events.lock())
    }
}

impl Listener for Mirror {
    fn begin(&mut self, _cx: &mut ListenerCx<'_>) {
        self.events.lock().push("begin".into());
    }

    fn commit(&mut self, _cx: &mut ListenerCx<'_>) {
        self.events.lock().push("commit".into());
    }

    fn region_add(&mut self, cx: &mut ListenerCx<'_>, s: &Section) -> ListenerResult {
        if s.kind != KindTag::Iommu {
            return Ok(());
        }
        self.events
            .lock()
            .push(format!("region_add {:#x}", s.start()));
        let first = s.offset_in_region();
        let last = first + (s.size() - 1) as u64;
        let notify = Arc::new(ShadowNotify {
            region: s.region(),
            shadow: self.shadow.clone(),
        });
        let id = cx.register_iommu_notifier(s.region(), NotifierFlags::ALL, first, last, notify)?;
        cx.replay_iommu_notifier(id)?;
        self.notifiers.lock().insert((s.region(), first), id);
        Ok(())
    }

    fn region_del(&mut self, cx: &mut ListenerCx<'_>, s: &Section) {
        if s.kind != KindTag::Iommu {
            return;
        }
        self.events
            .lock()
            .push(format!("region_del {:#x}", s.start()));
        let first = s.offset_in_region();
        if let Some(id) = self.notifiers.lock().remove(&(s.region(), first)) {
            cx.unregister_iommu_notifier(id).unwrap();
        }
        let last = first + (s.size() - 1) as u64;
        let region = s.region();
        self.shadow
            .lock()
            .retain(|(r, iova), _| *r != region || *iova < first || *iova > last);
    }
}
