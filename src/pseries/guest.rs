//! The guest's side of the machine: TCE hypercalls and dynamic-DMA-window
//! RTAS calls, forwarded to the sPAPR model, guest-memory writes, and
//! machine reset.

use addrspace_spapr::{Buid, DdwQuery, DdwWindow, HcallError, Liobn, RtasError, Tce};

use super::{Machine, MachineError};

impl Machine {
    /// Writes guest memory (e.g. a TCE list for `H_PUT_TCE_INDIRECT`).
    pub fn write_guest(&self, addr: u64, bytes: &[u8]) -> Result<(), MachineError> {
        (self.mem.view(self.memory)?.write(addr, bytes)).map_err(|source| {
            MachineError::GuestMemory {
                addr,
                len: bytes.len(),
                source,
            }
        })
    }

    /// `H_PUT_TCE`.
    pub fn h_put_tce(&self, liobn: Liobn, ioba: u64, tce: Tce) -> Result<(), HcallError> {
        self.spapr.h_put_tce(&self.mem, liobn, ioba, tce)
    }

    /// `H_PUT_TCE_INDIRECT` with the list already in guest memory.
    pub fn h_put_tce_indirect(
        &self,
        liobn: Liobn,
        ioba: u64,
        list: u64,
        count: u64,
    ) -> Result<(), HcallError> {
        self.spapr
            .h_put_tce_indirect(&self.mem, liobn, ioba, list, count)
    }

    /// What a guest driver does for `H_PUT_TCE_INDIRECT`: writes `tces`
    /// (big-endian) at `list` in guest memory, then makes the call. The
    /// outer error is the machine's (the list could not be written), the
    /// inner one the guest's answer.
    pub fn put_tce_list(
        &self,
        liobn: Liobn,
        ioba: u64,
        list: u64,
        tces: &[Tce],
    ) -> Result<Result<(), HcallError>, MachineError> {
        let bytes: Vec<u8> = tces.iter().flat_map(|t| t.0.to_be_bytes()).collect();
        self.write_guest(list, &bytes)?;
        Ok(self.h_put_tce_indirect(liobn, ioba, list, tces.len() as u64))
    }

    /// `H_STUFF_TCE`.
    pub fn h_stuff_tce(
        &self,
        liobn: Liobn,
        ioba: u64,
        tce: Tce,
        count: u64,
    ) -> Result<(), HcallError> {
        self.spapr.h_stuff_tce(&self.mem, liobn, ioba, tce, count)
    }

    /// `H_GET_TCE`.
    pub fn h_get_tce(&self, liobn: Liobn, ioba: u64) -> Result<Tce, HcallError> {
        self.spapr.h_get_tce(liobn, ioba)
    }

    /// `ibm,query-pe-dma-window`.
    pub fn rtas_query_pe_dma_window(&self, buid: Buid) -> Result<DdwQuery, RtasError> {
        self.spapr.rtas_query_pe_dma_window(buid)
    }

    /// `ibm,create-pe-dma-window`.
    pub fn rtas_create_pe_dma_window(
        &mut self,
        buid: Buid,
        page_shift: u32,
        window_shift: u32,
    ) -> Result<DdwWindow, RtasError> {
        self.spapr
            .rtas_create_pe_dma_window(&mut self.mem, buid, page_shift, window_shift)
    }

    /// `ibm,remove-pe-dma-window`.
    pub fn rtas_remove_pe_dma_window(&mut self, liobn: Liobn) -> Result<(), RtasError> {
        self.spapr.rtas_remove_pe_dma_window(&mut self.mem, liobn)
    }

    /// `ibm,reset-pe-dma-window`.
    pub fn rtas_reset_pe_dma_window(&mut self, buid: Buid) -> Result<(), RtasError> {
        self.spapr.rtas_reset_pe_dma_window(&mut self.mem, buid)
    }

    /// Machine reset: every PHB back to its default window with an empty
    /// table, in one transaction (no `vfio_stop`/`vfio_start` churn for
    /// plugged containers). Plugged devices stay plugged.
    pub fn reset(&mut self) -> Result<(), MachineError> {
        Ok(self.spapr.reset(&mut self.mem)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pseries::MachineConfig;

    const DEFAULT: Liobn = Liobn(0x8000_0000);

    #[test]
    fn tce_lists_are_written_to_guest_memory_before_the_call() {
        let m = Machine::new(MachineConfig::new()).unwrap();
        let tces = [Tce(0x10_0000 | 3), Tce(0x20_0000 | 1)];
        m.put_tce_list(DEFAULT, 0x4000, 0x80_0000, &tces)
            .unwrap()
            .unwrap();
        assert_eq!(m.h_get_tce(DEFAULT, 0x5000), Ok(Tce(0x20_0001)));
        assert!(matches!(
            m.write_guest(m.ram_size(), &[0; 8]),
            Err(MachineError::GuestMemory { .. })
        ));
    }

    #[test]
    fn reset_brings_back_the_default_window_the_guest_removed() {
        let mut m = Machine::new(MachineConfig::new()).unwrap();
        let buid = m.buid(0).unwrap();
        m.rtas_remove_pe_dma_window(DEFAULT).unwrap();
        assert_eq!(
            m.rtas_query_pe_dma_window(buid).unwrap().windows_available,
            2
        );

        m.reset().unwrap();

        let phb = m.phb(0).unwrap();
        assert_eq!(phb.active_windows().len(), 1);
        assert!(phb.is_default_window(DEFAULT));
    }
}
