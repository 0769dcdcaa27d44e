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

use std::collections::BTreeSet;
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
    /// The BARs `plug_bar` mapped and `unplug_bar` has not destroyed.
    bars: BTreeSet<RegionId>,
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
            bars: BTreeSet::new(),
        })
    }

    /// Maps a device BAR of `size` bytes at `addr` in PCI space.
    ///
    /// All or nothing: when the mapping fails, including when it was
    /// applied but a listener refused or panicked on it, the BAR is taken
    /// out again and destroyed, and the mapping's own error is returned.
    pub fn plug_bar(
        &mut self,
        name: &str,
        addr: u64,
        size: u64,
        ops: Arc<dyn MmioOps>,
    ) -> Result<RegionId, Error> {
        let bar = self.mem.create_mmio(name, size as u128, ops)?;
        if let Err(e) = self.mem.add_subregion_overlap(self.pci, addr, bar, 1) {
            // A listener's refusal or panic comes after the change was
            // applied: the BAR is mapped for everyone else.
            if self.bar_is_mapped(bar) {
                if let Err(undo) = self.mem.del_subregion(self.pci, bar) {
                    tracing::warn!(%bar, %undo, "taking back a refused BAR");
                }
            }
            if let Err(undo) = self.mem.destroy_region(bar) {
                tracing::warn!(%bar, %undo, "destroying a refused BAR");
            }
            return Err(e);
        }
        self.bars.insert(bar);
        Ok(bar)
    }

    /// Unmaps and destroys a BAR.
    ///
    /// When the unmapping was applied but a listener panicked on it, the
    /// BAR is still destroyed and that error is returned; when it was not
    /// applied (not a BAR of this machine), nothing changes.
    pub fn unplug_bar(&mut self, bar: RegionId) -> Result<(), Error> {
        if !self.bars.contains(&bar) {
            return Err(Error::KindMismatch {
                region: bar,
                kind: "not a plugged BAR",
                operation: "unplug_bar",
            });
        }
        let unmapped = self.mem.del_subregion(self.pci, bar);
        if self.bar_is_mapped(bar) {
            return unmapped;
        }
        let destroyed = self.mem.destroy_region(bar);
        if destroyed.is_ok() {
            self.bars.remove(&bar);
        }
        unmapped.and(destroyed)
    }

    fn bar_is_mapped(&self, bar: RegionId) -> bool {
        self.mem
            .region(bar)
            .is_ok_and(|r| r.parent() == Some(self.pci))
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
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;

    use addrspace_core::{Listener, ListenerConfig, ListenerCx, ListenerResult, Section};

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

    /// A listener on `memory` that records what it holds and can be told
    /// to refuse additions or to panic on deletions.
    #[derive(Default, Clone)]
    struct Picky {
        refuse_add: Arc<AtomicBool>,
        panic_del: Arc<AtomicBool>,
        held: Arc<Mutex<BTreeSet<u64>>>,
    }

    impl Listener for Picky {
        fn region_add(&mut self, _: &mut ListenerCx<'_>, s: &Section) -> ListenerResult {
            if self.refuse_add.load(Ordering::Relaxed) {
                return Err("no room".into());
            }
            self.held.lock().unwrap().insert(s.range.start);
            Ok(())
        }
        fn region_del(&mut self, _: &mut ListenerCx<'_>, s: &Section) {
            assert!(!self.panic_del.load(Ordering::Relaxed), "told to panic");
            assert!(self.held.lock().unwrap().remove(&s.range.start));
        }
    }

    fn machine_with(listeners: &[&Picky]) -> PcMachine {
        let mut pc = PcMachine::new(0x800_0000).unwrap();
        for (i, l) in listeners.iter().enumerate() {
            let config = ListenerConfig::new(format!("picky{i}"));
            pc.mem
                .register_listener(pc.memory, config, Box::new((*l).clone()))
                .unwrap();
        }
        pc
    }

    const HOLE: u64 = 0xc000_0000;

    #[test]
    fn a_refused_plug_leaves_no_bar_behind() {
        let (refuser, other) = (Picky::default(), Picky::default());
        let mut pc = machine_with(&[&refuser, &other]);
        let before = pc.mem.view(pc.memory).unwrap();
        refuser.refuse_add.store(true, Ordering::Relaxed);
        let err = pc
            .plug_bar("bar", HOLE, 0x1000, PcMachine::null_device())
            .unwrap_err();
        assert!(matches!(err, Error::ListenerRefused { .. }), "{err}");
        assert_eq!(pc.mem.regions_named("bar").count(), 0);
        assert_eq!(pc.mem.view(pc.memory).unwrap(), before);
        // The listener that took the BAR was told it went away again.
        assert!(!other.held.lock().unwrap().contains(&HOLE));
        // A later plug at the same place works.
        refuser.refuse_add.store(false, Ordering::Relaxed);
        let bar = pc
            .plug_bar("bar", HOLE, 0x1000, PcMachine::null_device())
            .unwrap();
        assert_eq!(
            pc.mem.view(pc.memory).unwrap().lookup(HOLE).unwrap().region,
            bar
        );
        assert!(refuser.held.lock().unwrap().contains(&HOLE));
    }

    #[test]
    fn an_unplug_a_listener_panics_on_still_destroys_the_bar() {
        let (panicker, other) = (Picky::default(), Picky::default());
        let mut pc = machine_with(&[&panicker, &other]);
        let bar = pc
            .plug_bar("bar", HOLE, 0x1000, PcMachine::null_device())
            .unwrap();
        panicker.panic_del.store(true, Ordering::Relaxed);
        let err = pc.unplug_bar(bar).unwrap_err();
        assert!(matches!(err, Error::ListenerPanicked { .. }), "{err}");
        assert!(pc.mem.region(bar).is_err(), "the BAR was leaked");
        assert!(!other.held.lock().unwrap().contains(&HOLE));
        assert!(pc.mem.view(pc.memory).unwrap().lookup(HOLE).is_none());
    }

    #[test]
    fn unplugging_what_is_not_a_plugged_bar_changes_nothing() {
        let mut pc = machine_with(&[]);
        let before = pc.mem.view(pc.memory).unwrap();
        for region in [pc.bios, pc.ram, pc.pci] {
            let err = pc.unplug_bar(region).unwrap_err();
            assert!(
                matches!(err, Error::KindMismatch { region: r, .. } if r == region),
                "{err}"
            );
            assert!(pc.mem.region(region).is_ok());
        }
        let bar = pc
            .plug_bar("bar", HOLE, 0x1000, PcMachine::null_device())
            .unwrap();
        pc.unplug_bar(bar).unwrap();
        let again = pc.unplug_bar(bar).unwrap_err();
        assert!(matches!(again, Error::KindMismatch { .. }), "{again}");
        assert_eq!(pc.mem.view(pc.memory).unwrap(), before);
    }
}
