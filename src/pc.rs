//! A small PC-like machine, the shared model for the demo, examples and
//! benchmarks until the sPAPR machine lands.
//!
//! Layout (a trimmed i440fx):
//!
//! ```text
//! system (container, 2^64)
//!   ram-below-4g   alias of pc.ram            0x0 .. RAM size
//!   pci            container, prio -1         whole space
//!     pc.bios      ROM                        0xfffc0000, 256 KiB
//!     BARs         added by `plug_bar`
//!   vga-lowmem     alias of vga.vram, prio 1  0xa0000 (VGA can log it)
//!   isa-bios       alias of pc.bios (last 128 KiB), prio 1, at 0xe0000
//!   pam-ram        alias of pc.ram, prio 2, at 0xf0000 (disabled until
//!                  `open_pam`)
//! ```

use std::sync::Arc;

use addrspace_core::{
    AddressSpaceId, DirtyClient, Error, Memory, MmioOps, NullOps, RegionId, SIZE_2_64,
};

/// The machine's handles.
#[derive(Debug)]
pub struct PcMachine {
    /// The memory map.
    pub mem: Memory,
    /// The `memory` address space (what CPUs see).
    pub memory: AddressSpaceId,
    /// Root of `memory`.
    pub system: RegionId,
    /// The PCI address space container.
    pub pci: RegionId,
    /// Guest RAM.
    pub ram: RegionId,
    /// The BIOS ROM.
    pub bios: RegionId,
    /// The VGA window alias.
    pub vga: RegionId,
    /// The shadow-RAM alias over the BIOS area (PAM).
    pub pam_ram: RegionId,
}

impl PcMachine {
    /// Builds the machine with `ram_size` bytes of RAM.
    pub fn new(ram_size: u64) -> Result<PcMachine, Error> {
        let mut mem = Memory::new();
        mem.begin();
        let system = mem.create_container("system", SIZE_2_64)?;
        let ram = mem.create_ram("pc.ram", ram_size as u128)?;
        let below = mem.create_alias("ram-below-4g", ram, 0, ram_size as u128)?;
        mem.add_subregion(system, 0, below)?;
        let pci = mem.create_container("pci", SIZE_2_64)?;
        mem.add_subregion_overlap(system, 0, pci, -1)?;
        let bios = mem.create_rom("pc.bios", 0x40000)?;
        mem.add_subregion(pci, 0xfffc_0000, bios)?;
        let isa_bios = mem.create_alias("isa-bios", bios, 0x20000, 0x20000)?;
        mem.add_subregion_overlap(system, 0xe0000, isa_bios, 1)?;
        let vram = mem.create_ram("vga.vram", 0x20000)?;
        let vga = mem.create_alias("vga-lowmem", vram, 0, 0x20000)?;
        mem.add_subregion_overlap(system, 0xa0000, vga, 1)?;
        let pam_ram = mem.create_alias("pam-ram", ram, 0xf0000, 0x10000)?;
        mem.set_enabled(pam_ram, false)?;
        mem.add_subregion_overlap(system, 0xf0000, pam_ram, 2)?;
        let memory = mem.create_address_space("memory", system)?;
        mem.commit()?;
        Ok(PcMachine {
            mem,
            memory,
            system,
            pci,
            ram,
            bios,
            vga,
            pam_ram,
        })
    }

    /// Maps a device BAR of `size` bytes at `addr` in PCI space.
    pub fn plug_bar(
        &mut self,
        name: &str,
        addr: u64,
        size: u64,
        ops: Arc<dyn MmioOps>,
    ) -> Result<RegionId, Error> {
        let bar = self.mem.create_mmio(name, size as u128, ops)?;
        if let Err(e) = self.mem.add_subregion_overlap(self.pci, addr, bar, 1) {
            self.mem.destroy_region(bar)?;
            return Err(e);
        }
        Ok(bar)
    }

    /// Unmaps and destroys a BAR.
    pub fn unplug_bar(&mut self, bar: RegionId) -> Result<(), Error> {
        self.mem.del_subregion(self.pci, bar)?;
        self.mem.destroy_region(bar)
    }

    /// Makes the BIOS area read shadow RAM (as firmware does through PAM).
    pub fn open_pam(&mut self, open: bool) -> Result<(), Error> {
        self.mem.set_enabled(self.pam_ram, open)
    }

    /// Starts or stops VGA dirty tracking on the VGA window.
    pub fn vga_logging(&mut self, on: bool) -> Result<(), Error> {
        let (vram, _) = self.mem.region(self.vga)?.alias().expect("vga is an alias");
        self.mem.set_log(vram, DirtyClient::Vga, on)
    }

    /// A placeholder device for BARs.
    pub fn null_device() -> Arc<dyn MmioOps> {
        Arc::new(NullOps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (region, offset in region, read-only) at `addr`.
    fn at(pc: &PcMachine, addr: u64) -> (RegionId, u64, bool) {
        let view = pc.mem.view(pc.memory).unwrap();
        let r = view.lookup(addr).unwrap();
        (r.region, r.offset_in_region + (addr - r.start), r.readonly)
    }

    #[test]
    fn bios_shows_below_1m_and_at_4g() {
        let pc = PcMachine::new(0x800_0000).unwrap();
        assert_eq!(at(&pc, 0xe0000), (pc.bios, 0x20000, true));
        assert_eq!(at(&pc, 0xffff_fff0), (pc.bios, 0x3fff0, true));
    }

    #[test]
    fn opening_pam_shadows_bios_with_ram() {
        let mut pc = PcMachine::new(0x800_0000).unwrap();
        pc.open_pam(true).unwrap();
        assert_eq!(at(&pc, 0xf0000), (pc.ram, 0xf0000, false));
        assert_eq!(at(&pc, 0xe0000).0, pc.bios);
    }

    #[test]
    fn bar_over_ram_is_hidden_by_ram() {
        let mut pc = PcMachine::new(0x800_0000).unwrap();
        let bar = pc
            .plug_bar("bar", 0x100_0000, 0x1000, PcMachine::null_device())
            .unwrap();
        let view = pc.mem.view(pc.memory).unwrap();
        assert_ne!(view.lookup(0x100_0000).unwrap().region, bar);
        pc.unplug_bar(bar).unwrap();
        assert!(pc.mem.region(bar).is_err());
    }
}
