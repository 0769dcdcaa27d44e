//! Device callbacks: MMIO ops and IOMMU ops.

use std::fmt;

/// Access-size limits of an MMIO region, in bytes (powers of two, 1..=8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessSizes {
    /// Smallest access the device accepts.
    pub min: u8,
    /// Largest access the device accepts.
    pub max: u8,
}

impl Default for AccessSizes {
    fn default() -> Self {
        AccessSizes { min: 1, max: 8 }
    }
}

/// The behaviour of an MMIO region (QEMU's `MemoryRegionOps`).
///
/// Offsets are relative to the region. Accesses wider than
/// [`access_sizes`](Self::access_sizes)`.max` are split by the dispatcher;
/// narrower than `min` are widened.
pub trait MmioOps: Send + Sync {
    /// Reads `size` bytes (1, 2, 4 or 8) at `offset`, little-endian.
    fn read(&self, offset: u64, size: u8) -> u64;
    /// Writes the low `size` bytes of `value` at `offset`.
    fn write(&self, offset: u64, size: u8, value: u64);
    /// The access sizes the device handles.
    fn access_sizes(&self) -> AccessSizes {
        AccessSizes::default()
    }
}

impl fmt::Debug for dyn MmioOps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<mmio ops>")
    }
}

/// MMIO ops that read as zero and ignore writes; handy for placeholders
/// such as regions imported from a QEMU dump.
#[derive(Debug, Clone, Copy, Default)]
pub struct NullOps;

impl MmioOps for NullOps {
    fn read(&self, _offset: u64, _size: u8) -> u64 {
        0
    }
    fn write(&self, _offset: u64, _size: u8, _value: u64) {}
}
