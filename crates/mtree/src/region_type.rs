//! The type column QEMU prints for a region (its `memory_region_type`).

use addrspace_core::{Error, Memory, Region, RegionId, RegionKind};

/// What QEMU prints in the type column of a region line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RegionType {
    /// `i/o`: containers, MMIO, reservations, IOMMU regions, and ROM
    /// devices outside ROMD mode.
    Io,
    /// `ram`.
    Ram,
    /// `ramd`: RAM-device memory (a mapped device BAR).
    Ramd,
    /// `rom`: RAM with the read-only flag.
    Rom,
    /// `romd`: a ROM device in ROMD mode.
    Romd,
}

impl RegionType {
    /// The text QEMU prints.
    pub fn as_str(self) -> &'static str {
        match self {
            RegionType::Io => "i/o",
            RegionType::Ram => "ram",
            RegionType::Ramd => "ramd",
            RegionType::Rom => "rom",
            RegionType::Romd => "romd",
        }
    }

    /// Reads the text QEMU prints (without the `nv-` prefix).
    pub fn from_text(text: &str) -> Option<RegionType> {
        Some(match text {
            "i/o" => RegionType::Io,
            "ram" => RegionType::Ram,
            "ramd" => RegionType::Ramd,
            "rom" => RegionType::Rom,
            "romd" => RegionType::Romd,
            _ => return None,
        })
    }

    /// The type of a non-alias region, by QEMU's precedence: RAM device,
    /// ROMD, ROM, RAM, else I/O. For an alias this is `Io`; use
    /// [`of_region`](Self::of_region) to look through it.
    pub fn of_kind(region: &Region) -> RegionType {
        match region.kind() {
            RegionKind::Ram { device: true, .. } => RegionType::Ramd,
            RegionKind::RomDevice {
                romd_mode: true, ..
            } => RegionType::Romd,
            RegionKind::Ram { .. } if region.readonly() => RegionType::Rom,
            RegionKind::Ram { .. } => RegionType::Ram,
            _ => RegionType::Io,
        }
    }

    /// The type QEMU prints for `id`: an alias prints the type of the
    /// region it finally shows (aliases of aliases are followed).
    pub fn of_region(mem: &Memory, id: RegionId) -> Result<RegionType, Error> {
        let mut region = mem.region(id)?;
        // Alias chains are acyclic (the core checks targets exist when an
        // alias is made), so this ends.
        while let Some((target, _)) = region.alias() {
            region = mem.region(target)?;
        }
        Ok(RegionType::of_kind(region))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use addrspace_core::NullOps;

    use super::*;

    #[test]
    fn text_round_trips_for_every_type() {
        for ty in [
            RegionType::Io,
            RegionType::Ram,
            RegionType::Ramd,
            RegionType::Rom,
            RegionType::Romd,
        ] {
            assert_eq!(RegionType::from_text(ty.as_str()), Some(ty));
        }
        assert_eq!(RegionType::from_text("nv-ram"), None);
    }

    #[test]
    fn alias_prints_its_final_targets_type() {
        let mut mem = Memory::new();
        let rom = mem.create_rom("bios", 0x1000).unwrap();
        let a = mem.create_alias("a", rom, 0, 0x1000).unwrap();
        let b = mem.create_alias("b", a, 0, 0x1000).unwrap();
        assert_eq!(RegionType::of_region(&mem, b).unwrap(), RegionType::Rom);
    }

    #[test]
    fn rom_device_outside_romd_mode_is_io() {
        let mut mem = Memory::new();
        let flash = mem
            .create_rom_device("flash", 0x1000, Arc::new(NullOps))
            .unwrap();
        assert_eq!(
            RegionType::of_region(&mem, flash).unwrap(),
            RegionType::Romd
        );
        mem.set_romd_mode(flash, false).unwrap();
        assert_eq!(RegionType::of_region(&mem, flash).unwrap(), RegionType::Io);
    }

    #[test]
    fn read_only_ram_device_is_still_ramd() {
        let mut mem = Memory::new();
        let backing = Arc::new(addrspace_core::HostMemory::anonymous(0x1000).unwrap());
        let bar = mem.create_ram_from("bar", 0x1000, backing, true).unwrap();
        mem.set_readonly(bar, true).unwrap();
        assert_eq!(RegionType::of_region(&mem, bar).unwrap(), RegionType::Ramd);
    }
}
