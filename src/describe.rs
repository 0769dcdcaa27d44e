//! Flat ranges described for people: the region's name and kind, and the
//! alias a range is seen through.
//!
//! A [`FlatRange`] names its terminating region by handle. The `addrspace`
//! command's event logs, diffs and maps need more: what the region is
//! called, what kind of memory it is, and whether the address space sees
//! it at its own place in the tree or through an alias (QEMU's
//! `ram-below-4g` showing `pc.ram`, `isa-bios` showing `pc.bios`).

use std::fmt;

use addrspace_core::{AddressSpaceId, Error, FlatRange, Memory, RegionId, RegionKind};

/// What kind of memory a terminating region is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RangeKind {
    /// Guest RAM.
    Ram,
    /// RAM that maps a device's memory (a BAR).
    RamDevice,
    /// RAM with the read-only flag.
    Rom,
    /// A ROM device: reads from memory in ROMD mode, writes to its
    /// callbacks.
    RomDevice,
    /// MMIO callbacks.
    Mmio,
    /// Claimed addresses that serve nothing.
    Reservation,
    /// An IOMMU region: accesses are translated.
    Iommu,
}

impl RangeKind {
    /// The kind of a terminating region; `None` for containers and
    /// aliases, which never terminate a flat range.
    pub fn of(kind: &RegionKind, readonly: bool) -> Option<RangeKind> {
        Some(match kind {
            RegionKind::Ram { device: true, .. } => RangeKind::RamDevice,
            RegionKind::Ram { .. } if readonly => RangeKind::Rom,
            RegionKind::Ram { .. } => RangeKind::Ram,
            RegionKind::RomDevice { .. } => RangeKind::RomDevice,
            RegionKind::Mmio { .. } => RangeKind::Mmio,
            RegionKind::Reservation => RangeKind::Reservation,
            RegionKind::Iommu { .. } => RangeKind::Iommu,
            RegionKind::Container | RegionKind::Alias { .. } => return None,
        })
    }

    /// A short lower-case name: `ram`, `ram-device`, `rom`, `rom-device`,
    /// `mmio`, `reservation`, `iommu`.
    pub fn as_str(self) -> &'static str {
        match self {
            RangeKind::Ram => "ram",
            RangeKind::RamDevice => "ram-device",
            RangeKind::Rom => "rom",
            RangeKind::RomDevice => "rom-device",
            RangeKind::Mmio => "mmio",
            RangeKind::Reservation => "reservation",
            RangeKind::Iommu => "iommu",
        }
    }
}

impl fmt::Display for RangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One flat range with the names a person needs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RangeInfo {
    /// First address.
    pub start: u64,
    /// Last address (inclusive).
    pub last: u64,
    /// The terminating region's name.
    pub region: String,
    /// Its kind.
    pub kind: RangeKind,
    /// Offset of `start` in the region.
    pub offset: u64,
    /// Read-only (inherited from anything above the region).
    pub readonly: bool,
    /// Non-volatile.
    pub nonvolatile: bool,
    /// A ROM device in ROMD mode (reads from memory).
    pub romd_mode: bool,
    /// The nearest alias the address space sees the region through, if
    /// it is not seen at its own place in the tree.
    pub via_alias: Option<String>,
}

impl RangeInfo {
    /// Describes `range` of address space `space`.
    pub fn of(mem: &Memory, space: AddressSpaceId, range: &FlatRange) -> Result<RangeInfo, Error> {
        let region = mem.region(range.region)?;
        let kind = RangeKind::of(region.kind(), region.readonly()).unwrap_or(RangeKind::Mmio);
        let root = mem.address_space_root(space)?;
        Ok(RangeInfo {
            start: range.start,
            last: range.last,
            region: region.name().to_owned(),
            kind,
            offset: range.offset_in_region,
            readonly: range.readonly,
            nonvolatile: range.nonvolatile,
            romd_mode: range.romd_mode,
            via_alias: via_alias(mem, root, range)?,
        })
    }

    /// Length in bytes (up to 2^64).
    pub fn size(&self) -> u128 {
        u128::from(self.last) - u128::from(self.start) + 1
    }

    /// True if `other` is the same mapping to a listener that cannot
    /// compare region handles (two separately built machines): same
    /// place, region name, kind, offset and attributes.
    pub fn same_mapping(&self, other: &RangeInfo) -> bool {
        self.start == other.start
            && self.last == other.last
            && self.region == other.region
            && self.kind == other.kind
            && self.offset == other.offset
            && self.readonly == other.readonly
            && self.nonvolatile == other.nonvolatile
            && self.romd_mode == other.romd_mode
    }
}

impl fmt::Display for RangeInfo {
    /// `first-last name (kind) @offset [ro] [via alias "x"]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:016x}-{:016x} {:?} ({}) @{:#x}",
            self.start, self.last, self.region, self.kind, self.offset
        )?;
        if self.readonly {
            f.write_str(" ro")?;
        }
        if self.nonvolatile {
            f.write_str(" nv")?;
        }
        if let Some(alias) = &self.via_alias {
            write!(f, " via alias {alias:?}")?;
        }
        Ok(())
    }
}

/// The nearest alias through which address space root `root` shows
/// `range`, or `None` if the region is seen at its own place.
///
/// Every place where offset 0 of the region appears in the address space
/// is found by walking up: through the parent (shifted by the region's
/// address) and through each alias that shows it (shifted back by the
/// alias offset). The place that puts `range.offset_in_region` at
/// `range.start` is the one the renderer used.
fn via_alias(mem: &Memory, root: RegionId, range: &FlatRange) -> Result<Option<String>, Error> {
    let at = range.start.wrapping_sub(range.offset_in_region);
    let mut found = None;
    for (base, alias) in placements(mem, root, range.region, None, 0)? {
        if base == at {
            match alias {
                None => return Ok(None),
                Some(a) if found.is_none() => found = Some(a),
                Some(_) => {}
            }
        }
    }
    Ok(match found {
        Some(a) => Some(mem.region(a)?.name().to_owned()),
        None => None,
    })
}

/// Deepest alias nesting followed (the core refuses deeper renders).
const MAX_DEPTH: usize = 64;

/// Where offset 0 of `region` appears in the address space rooted at
/// `root` (wrapping addresses), each with the nearest alias on the way
/// (`nearest` is the one found so far below `region`).
fn placements(
    mem: &Memory,
    root: RegionId,
    region: RegionId,
    nearest: Option<RegionId>,
    depth: usize,
) -> Result<Vec<(u64, Option<RegionId>)>, Error> {
    if region == root {
        return Ok(vec![(0, nearest)]);
    }
    if depth > MAX_DEPTH {
        return Ok(Vec::new());
    }
    let r = mem.region(region)?;
    let mut out = Vec::new();
    if let Some(parent) = r.parent() {
        if r.enabled() {
            for (base, alias) in placements(mem, root, parent, nearest, depth + 1)? {
                out.push((base.wrapping_add(r.addr()), alias));
            }
        }
    }
    for &alias in r.referrers() {
        let Some((_, offset)) = mem.region(alias)?.alias() else {
            continue;
        };
        let nearest = nearest.or(Some(alias));
        for (base, a) in placements(mem, root, alias, nearest, depth + 1)? {
            out.push((base.wrapping_sub(offset), a));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use addrspace_core::SIZE_2_64;

    #[test]
    fn ranges_seen_through_an_alias_name_it() {
        let mut mem = Memory::new();
        let system = mem.create_container("system", SIZE_2_64).unwrap();
        let ram = mem.create_ram("pc.ram", 0x20_0000).unwrap();
        let low = mem
            .create_alias("ram-below-4g", ram, 0x1000, 0x10_0000)
            .unwrap();
        let rom = mem.create_rom("bios", 0x1000).unwrap();
        mem.add_subregion(system, 0x8000, low).unwrap();
        mem.add_subregion(system, 0x100_0000, rom).unwrap();
        let space = mem.create_address_space("memory", system).unwrap();
        let view = mem.view(space).unwrap();
        let infos: Vec<RangeInfo> = view
            .ranges
            .iter()
            .map(|r| RangeInfo::of(&mem, space, r).unwrap())
            .collect();
        assert_eq!(infos.len(), 2);
        assert_eq!(infos[0].region, "pc.ram");
        assert_eq!(infos[0].kind, RangeKind::Ram);
        assert_eq!(infos[0].offset, 0x1000);
        assert_eq!(infos[0].via_alias.as_deref(), Some("ram-below-4g"));
        assert_eq!(infos[1].kind, RangeKind::Rom);
        assert_eq!(infos[1].via_alias, None);
        assert_eq!(
            infos[0].to_string(),
            "0000000000008000-0000000000107fff \"pc.ram\" (ram) @0x1000 via alias \"ram-below-4g\""
        );
        assert!(infos[1].to_string().ends_with("(rom) @0x0 ro"));
    }

    #[test]
    fn the_same_mapping_ignores_the_alias_but_not_the_offset() {
        let base = RangeInfo {
            start: 0,
            last: 0xfff,
            region: "r".into(),
            kind: RangeKind::Ram,
            offset: 0,
            readonly: false,
            nonvolatile: false,
            romd_mode: false,
            via_alias: None,
        };
        let aliased = RangeInfo {
            via_alias: Some("a".into()),
            ..base.clone()
        };
        assert!(base.same_mapping(&aliased));
        let moved = RangeInfo {
            offset: 0x1000,
            ..base.clone()
        };
        assert!(!base.same_mapping(&moved));
    }
}
