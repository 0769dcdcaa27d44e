//! Reading and writing guest memory through a flat-view snapshot.
//!
//! An access is planned first — every byte resolved to RAM, a ROM
//! device, MMIO ops, or (through IOMMU translation) a place in another
//! address space — and performed only if the whole plan is valid, so a
//! refused access has no side effect. MMIO accesses are split into
//! naturally aligned pieces within the device's access sizes; pieces
//! narrower than its minimum are widened (read-modify-write for writes).

use std::sync::Arc;

use crate::backing::HostMemory;
use crate::flatview::FlatView;
use crate::id::RegionId;
use crate::iommu::{IommuOps, IommuPerm};
use crate::ops::MmioOps;
use crate::region::{RegionKind, SIZE_2_64};

/// How deep IOMMU translations may nest before the access is refused.
pub const MAX_TRANSLATION_DEPTH: u32 = 8;

/// Why an access was refused. Nothing was read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    /// The access runs past 2^64.
    #[error("access of {len} bytes at {addr:#x} runs past 2^64")]
    BeyondAddressSpace {
        /// First address.
        addr: u64,
        /// Length.
        len: usize,
    },
    /// An IOMMU mapping does not allow the access.
    #[error("IOMMU region {region} denies {access} at {addr:#x}")]
    IommuDenied {
        /// The address in the address space being accessed.
        addr: u64,
        /// The IOMMU region.
        region: RegionId,
        /// `read` or `write`.
        access: &'static str,
    },
    /// An IOMMU translation leads nowhere: no target, a target address
    /// space that does not exist, or past 2^64.
    #[error("IOMMU region {region} translates {addr:#x} outside any address space")]
    IommuTarget {
        /// The address being translated.
        addr: u64,
        /// The IOMMU region.
        region: RegionId,
    },
    /// Nothing is mapped at the address (or only a reservation).
    #[error("nothing is mapped at {addr:#x}")]
    Unassigned {
        /// The address.
        addr: u64,
    },
    /// A write to read-only memory.
    #[error("write to read-only memory at {addr:#x}")]
    ReadOnly {
        /// The address.
        addr: u64,
    },
    /// IOMMU translations nest deeper than [`MAX_TRANSLATION_DEPTH`].
    #[error("IOMMU translations nest too deep at {addr:#x}")]
    TooDeep {
        /// The address.
        addr: u64,
    },
}

/// One resolved piece of an access.
enum Piece {
    Memory {
        mem: Arc<HostMemory>,
        offset: u64,
        len: usize,
    },
    Mmio {
        ops: Arc<dyn MmioOps>,
        offset: u64,
        len: usize,
    },
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    Read,
    Write,
}

impl FlatView {
    /// Reads `buf.len()` bytes at `addr`.
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), AccessError> {
        let plan = self.plan(addr, buf.len(), Dir::Read, 0)?;
        let mut at = 0;
        for piece in plan {
            match piece {
                Piece::Memory { mem, offset, len } => {
                    mem.read(offset, &mut buf[at..at + len])
                        .expect("planned inside the backing");
                    at += len;
                }
                Piece::Mmio { ops, offset, len } => {
                    mmio_read(&*ops, offset, &mut buf[at..at + len]);
                    at += len;
                }
            }
        }
        Ok(())
    }

    /// Writes `buf` at `addr`.
    pub fn write(&self, addr: u64, buf: &[u8]) -> Result<(), AccessError> {
        let plan = self.plan(addr, buf.len(), Dir::Write, 0)?;
        let mut at = 0;
        for piece in plan {
            match piece {
                Piece::Memory { mem, offset, len } => {
                    mem.write(offset, &buf[at..at + len])
                        .expect("planned inside the backing");
                    at += len;
                }
                Piece::Mmio { ops, offset, len } => {
                    mmio_write(&*ops, offset, &buf[at..at + len]);
                    at += len;
                }
            }
        }
        Ok(())
    }

    /// The host address of guest address `addr` when host memory serves
    /// it (RAM, ROM, a ROM device in ROMD mode), with the number of bytes
    /// that stay contiguous from there within its range — what a VMM
    /// hands to VFIO or vhost. `None` for MMIO, IOMMU regions and holes.
    pub fn host_address(&self, addr: u64) -> Option<(u64, u64)> {
        let fr = self.lookup(addr)?;
        let backing = match self.targets.regions.get(&fr.region)? {
            RegionKind::Ram { backing, .. } => backing,
            RegionKind::RomDevice { backing, .. } if fr.romd_mode => backing,
            _ => return None,
        };
        let offset = fr.offset_in_region + (addr - fr.start);
        Some((backing.host_addr() + offset, fr.last - addr + 1))
    }

    fn plan(&self, addr: u64, len: usize, dir: Dir, depth: u32) -> Result<Vec<Piece>, AccessError> {
        if addr as u128 + len as u128 > SIZE_2_64 {
            return Err(AccessError::BeyondAddressSpace { addr, len });
        }
        if depth > MAX_TRANSLATION_DEPTH {
            return Err(AccessError::TooDeep { addr });
        }
        let mut pieces = Vec::new();
        let mut done = 0usize;
        while done < len {
            let a = addr + done as u64;
            let fr = self.lookup(a).ok_or(AccessError::Unassigned { addr: a })?;
            let offset = fr.offset_in_region + (a - fr.start);
            let in_range = (fr.last as u128 - a as u128 + 1).min((len - done) as u128) as usize;
            let kind = self
                .targets
                .regions
                .get(&fr.region)
                .expect("a view knows the regions it maps");
            match kind {
                RegionKind::Ram { backing, .. } => {
                    if dir == Dir::Write && fr.readonly {
                        return Err(AccessError::ReadOnly { addr: a });
                    }
                    pieces.push(Piece::Memory {
                        mem: Arc::clone(backing),
                        offset,
                        len: in_range,
                    });
                }
                RegionKind::RomDevice { backing, ops, .. } => {
                    if dir == Dir::Write && fr.readonly {
                        return Err(AccessError::ReadOnly { addr: a });
                    }
                    // Reads come from memory in ROMD mode; writes, and
                    // reads outside it, go to the device.
                    if dir == Dir::Read && fr.romd_mode {
                        pieces.push(Piece::Memory {
                            mem: Arc::clone(backing),
                            offset,
                            len: in_range,
                        });
                    } else {
                        pieces.push(Piece::Mmio {
                            ops: Arc::clone(ops),
                            offset,
                            len: in_range,
                        });
                    }
                }
                RegionKind::Mmio { ops } => {
                    if dir == Dir::Write && fr.readonly {
                        return Err(AccessError::ReadOnly { addr: a });
                    }
                    pieces.push(Piece::Mmio {
                        ops: Arc::clone(ops),
                        offset,
                        len: in_range,
                    });
                }
                RegionKind::Iommu { ops } => {
                    let (mut sub, used) =
                        self.translate(&**ops, fr.region, a, offset, in_range, dir, depth)?;
                    pieces.append(&mut sub);
                    done += used;
                    continue;
                }
                RegionKind::Reservation | RegionKind::Container | RegionKind::Alias { .. } => {
                    return Err(AccessError::Unassigned { addr: a });
                }
            }
            done += in_range;
        }
        Ok(pieces)
    }

    /// Plans the part of an access that lies in one IOMMU page; returns
    /// the pieces and the bytes they cover.
    #[allow(clippy::too_many_arguments)]
    fn translate(
        &self,
        ops: &dyn IommuOps,
        region: RegionId,
        addr: u64,
        offset: u64,
        len: usize,
        dir: Dir,
        depth: u32,
    ) -> Result<(Vec<Piece>, usize), AccessError> {
        let need = if dir == Dir::Read {
            IommuPerm::RO
        } else {
            IommuPerm::WO
        };
        let entry = ops.translate(offset, need);
        if !entry.perm.allows(need) {
            return Err(AccessError::IommuDenied {
                addr,
                region,
                access: if dir == Dir::Read { "read" } else { "write" },
            });
        }
        let in_page = entry.addr_mask - (offset & entry.addr_mask) + 1;
        let used = (len as u64).min(in_page) as usize;
        let target = (entry.translated_addr & !entry.addr_mask) | (offset & entry.addr_mask);
        let miss = AccessError::IommuTarget { addr, region };
        let handle = entry
            .target
            .and_then(|t| self.targets.spaces.load().get(&t).cloned())
            .ok_or(miss.clone())?;
        if target as u128 + used as u128 > SIZE_2_64 {
            return Err(miss);
        }
        let view = handle.load();
        Ok((view.plan(target, used, dir, depth + 1)?, used))
    }
}

/// Splits `[offset, offset + len)` into naturally aligned accesses no
/// larger than `max`, calling `f(offset, size)` for each.
fn split(offset: u64, len: usize, max: u8, mut f: impl FnMut(u64, u8)) {
    let mut at = 0u64;
    while (at as usize) < len {
        let o = offset + at;
        let left = len as u64 - at;
        let mut size = max.max(1) as u64;
        while size > 1 && (!o.is_multiple_of(size) || size > left) {
            size /= 2;
        }
        f(o, size as u8);
        at += size;
    }
}

fn mmio_read(ops: &dyn MmioOps, offset: u64, buf: &mut [u8]) {
    let sizes = ops.access_sizes();
    let mut at = 0usize;
    split(offset, buf.len(), sizes.max, |o, size| {
        let bytes = if size >= sizes.min {
            ops.read(o, size).to_le_bytes()
        } else {
            // Widen to the device's minimum, aligned, and pick the bytes.
            let min = sizes.min as u64;
            let base = o & !(min - 1);
            let wide = ops.read(base, sizes.min) >> ((o - base) * 8);
            wide.to_le_bytes()
        };
        buf[at..at + size as usize].copy_from_slice(&bytes[..size as usize]);
        at += size as usize;
    });
}

fn mmio_write(ops: &dyn MmioOps, offset: u64, buf: &[u8]) {
    let sizes = ops.access_sizes();
    let mut at = 0usize;
    split(offset, buf.len(), sizes.max, |o, size| {
        let mut bytes = [0u8; 8];
        bytes[..size as usize].copy_from_slice(&buf[at..at + size as usize]);
        let value = u64::from_le_bytes(bytes);
        if size >= sizes.min {
            ops.write(o, size, value);
        } else {
            // Read-modify-write at the device's minimum size.
            let min = sizes.min as u64;
            let base = o & !(min - 1);
            let shift = (o - base) * 8;
            let mask = (u64::MAX >> (64 - size as u64 * 8)) << shift;
            let old = ops.read(base, sizes.min);
            ops.write(base, sizes.min, (old & !mask) | ((value << shift) & mask));
        }
        at += size as usize;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_makes_aligned_pieces_within_max() {
        let mut got = Vec::new();
        split(0x3, 13, 4, |o, s| got.push((o, s)));
        assert_eq!(got, vec![(0x3, 1), (0x4, 4), (0x8, 4), (0xc, 4)]);
        got.clear();
        split(0x0, 3, 8, |o, s| got.push((o, s)));
        assert_eq!(got, vec![(0x0, 2), (0x2, 1)]);
    }
}
