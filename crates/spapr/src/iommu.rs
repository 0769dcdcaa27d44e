//! [`SpaprIommu`]: the machine's sPAPR IOMMU, every PHB and its TCE
//! tables, found by BUID or LIOBN.
//!
//! The hypercalls ([`hcall`](crate::hcall)) and RTAS calls
//! ([`ddw`](crate::ddw)) are methods on it, so the pseries machine model
//! forwards a guest call with one lookup-free line.

use std::sync::Arc;

use addrspace_core::{Error, Memory};

use crate::error::SetupError;
use crate::phb::{GuestRam, Phb, PhbConfig};
use crate::table::TceTable;
use crate::tce::{Buid, Liobn};

/// The guest side of sPAPR DMA for one machine: its PHBs and the guest RAM
/// their TCE tables point into.
#[derive(Debug)]
pub struct SpaprIommu {
    guest: GuestRam,
    phbs: Vec<Phb>,
}

impl SpaprIommu {
    /// No PHB yet; TCEs will point into `guest`.
    pub fn new(guest: GuestRam) -> SpaprIommu {
        SpaprIommu {
            guest,
            phbs: Vec::new(),
        }
    }

    /// The guest RAM.
    pub fn guest(&self) -> GuestRam {
        self.guest
    }

    /// Builds a PHB in `mem` (see [`Phb::new`]) and adds it.
    pub fn add_phb(&mut self, mem: &mut Memory, config: PhbConfig) -> Result<&Phb, SetupError> {
        if self.phbs.iter().any(|p| p.index() == config.index) {
            return Err(SetupError::DuplicatePhb {
                index: config.index,
            });
        }
        let phb = Phb::new(mem, config, self.guest)?;
        self.phbs.push(phb);
        Ok(self.phbs.last().expect("just pushed"))
    }

    /// The PHBs, in the order they were added.
    pub fn phbs(&self) -> &[Phb] {
        &self.phbs
    }

    /// The PHB with BUID `buid`.
    pub fn phb(&self, buid: Buid) -> Option<&Phb> {
        self.phbs.iter().find(|p| p.buid() == buid)
    }

    pub(crate) fn phb_mut(&mut self, buid: Buid) -> Option<&mut Phb> {
        self.phbs.iter_mut().find(|p| p.buid() == buid)
    }

    /// The PHB owning window `liobn`.
    pub fn phb_of(&self, liobn: Liobn) -> Option<&Phb> {
        self.phbs.iter().find(|p| p.slot_of(liobn).is_some())
    }

    /// The TCE table named `liobn`.
    pub fn table(&self, liobn: Liobn) -> Option<&Arc<TceTable>> {
        self.phbs.iter().find_map(|p| p.table(liobn))
    }

    /// Machine reset: every PHB's DMA is reset (see [`Phb::reset`]), all in
    /// one transaction.
    pub fn reset(&mut self, mem: &mut Memory) -> Result<(), Error> {
        mem.begin();
        let mut result = Ok(());
        for phb in &mut self.phbs {
            result = result.and(phb.reset_in_transaction(mem));
        }
        let committed = mem.commit();
        result.and(committed)
    }
}
