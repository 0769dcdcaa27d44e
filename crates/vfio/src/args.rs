//! Ioctl argument structures and constants, mirroring the VFIO uapi
//! (`include/uapi/linux/vfio.h`).
//!
//! Every structure keeps the uapi's `argsz` and `flags` fields, so a test
//! can pass a short `argsz` or a stray flag and see the kernel's answer.
//! The `new` constructors fill `argsz` with the full uapi size and leave
//! `flags` empty unless the ioctl needs them. Names follow the uapi, in
//! Rust case (`VFIO_TYPE1v2_IOMMU` is [`VFIO_TYPE1V2_IOMMU`]).

/// `VFIO_API_VERSION`: what `GET_API_VERSION` answers.
pub const VFIO_API_VERSION: i32 = 0;

/// `VFIO_TYPE1_IOMMU`: the original x86-style IOMMU backend.
pub const VFIO_TYPE1_IOMMU: u32 = 1;
/// `VFIO_SPAPR_TCE_IOMMU`: sPAPR TCE backend, v1 (one fixed window).
pub const VFIO_SPAPR_TCE_IOMMU: u32 = 2;
/// `VFIO_TYPE1v2_IOMMU`: Type1 with strict unmap semantics.
pub const VFIO_TYPE1V2_IOMMU: u32 = 3;
/// `VFIO_DMA_CC_IOMMU`: extension, DMA is cache coherent.
pub const VFIO_DMA_CC_IOMMU: u32 = 4;
/// `VFIO_EEH`: extension, PowerPC EEH is available.
pub const VFIO_EEH: u32 = 5;
/// `VFIO_SPAPR_TCE_v2_IOMMU`: sPAPR TCE backend, v2 (dynamic windows,
/// pre-registered memory).
pub const VFIO_SPAPR_TCE_V2_IOMMU: u32 = 7;
/// `VFIO_NOIOMMU_IOMMU`: the unsafe no-IOMMU backend.
pub const VFIO_NOIOMMU_IOMMU: u32 = 8;
/// `VFIO_UNMAP_ALL`: extension, Type1 accepts `VFIO_DMA_UNMAP_FLAG_ALL`.
pub const VFIO_UNMAP_ALL: u32 = 9;

/// `VFIO_GROUP_FLAGS_VIABLE`: every device of the group is usable.
pub const VFIO_GROUP_FLAGS_VIABLE: u32 = 1;
/// `VFIO_GROUP_FLAGS_CONTAINER_SET`: the group is in a container.
pub const VFIO_GROUP_FLAGS_CONTAINER_SET: u32 = 2;

/// `VFIO_DMA_MAP_FLAG_READ`: the device may read the memory.
pub const VFIO_DMA_MAP_FLAG_READ: u32 = 1;
/// `VFIO_DMA_MAP_FLAG_WRITE`: the device may write the memory.
pub const VFIO_DMA_MAP_FLAG_WRITE: u32 = 2;
/// `VFIO_DMA_MAP_FLAG_VADDR`: Type1 only, update a mapping's vaddr.
pub const VFIO_DMA_MAP_FLAG_VADDR: u32 = 4;

/// `VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP`: Type1 only.
pub const VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP: u32 = 1;
/// `VFIO_DMA_UNMAP_FLAG_ALL`: Type1 only, unmap everything (iova and size
/// must be 0).
pub const VFIO_DMA_UNMAP_FLAG_ALL: u32 = 2;
/// `VFIO_DMA_UNMAP_FLAG_VADDR`: Type1 only, invalidate vaddrs.
pub const VFIO_DMA_UNMAP_FLAG_VADDR: u32 = 4;

/// `VFIO_IOMMU_SPAPR_INFO_DDW`: `GET_INFO` filled in the DDW part.
pub const VFIO_IOMMU_SPAPR_INFO_DDW: u32 = 1;

/// `struct vfio_group_status` (in/out), for `GROUP_GET_STATUS`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupStatus {
    /// Size of the structure the caller passes; at least 8.
    pub argsz: u32,
    /// Out: `VFIO_GROUP_FLAGS_*`.
    pub flags: u32,
}

impl GroupStatus {
    /// The uapi size of the structure.
    pub const ARGSZ: u32 = 8;

    /// A status request with a full `argsz`.
    pub const fn new() -> Self {
        Self {
            argsz: Self::ARGSZ,
            flags: 0,
        }
    }
}

/// `struct vfio_iommu_spapr_tce_ddw_info`: the dynamic-window part of
/// [`SpaprTceInfo`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpaprTceDdwInfo {
    /// Bitmap of supported IOMMU page sizes (bit n = 2^n bytes).
    pub pgsizes: u64,
    /// How many windows a container may have.
    pub max_dynamic_windows_supported: u32,
    /// Maximum number of TCE table levels.
    pub levels: u32,
}

/// `struct vfio_iommu_spapr_tce_info` (in/out), for
/// `IOMMU_SPAPR_TCE_GET_INFO`.
///
/// The kernel needs `argsz` of at least [`Self::MIN_ARGSZ`]; it fills
/// `ddw` only when `argsz` reaches [`Self::ARGSZ`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpaprTceInfo {
    /// Size of the structure the caller passes.
    pub argsz: u32,
    /// Out: `VFIO_IOMMU_SPAPR_INFO_DDW` when dynamic windows are usable.
    pub flags: u32,
    /// Out: bus address of the default 32-bit window.
    pub dma32_window_start: u32,
    /// Out: size of the default 32-bit window.
    pub dma32_window_size: u32,
    /// Out: dynamic DMA window limits.
    pub ddw: SpaprTceDdwInfo,
}

impl SpaprTceInfo {
    /// The uapi size of the structure, DDW part included.
    pub const ARGSZ: u32 = 32;
    /// The smallest `argsz` the kernel accepts (up to the 32-bit window).
    pub const MIN_ARGSZ: u32 = 16;

    /// An info request with a full `argsz`.
    pub const fn new() -> Self {
        Self {
            argsz: Self::ARGSZ,
            flags: 0,
            dma32_window_start: 0,
            dma32_window_size: 0,
            ddw: SpaprTceDdwInfo {
                pgsizes: 0,
                max_dynamic_windows_supported: 0,
                levels: 0,
            },
        }
    }
}

/// `struct vfio_iommu_spapr_register_memory` (in), for
/// `IOMMU_SPAPR_REGISTER_MEMORY` and `IOMMU_SPAPR_UNREGISTER_MEMORY`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpaprRegisterMemory {
    /// Size of the structure the caller passes; at least 24.
    pub argsz: u32,
    /// No flags are defined: must be 0.
    pub flags: u32,
    /// Process virtual address of the range.
    pub vaddr: u64,
    /// Size of the range in bytes.
    pub size: u64,
}

impl SpaprRegisterMemory {
    /// The uapi size of the structure.
    pub const ARGSZ: u32 = 24;

    /// A (un)registration of `[vaddr, vaddr + size)`.
    pub const fn new(vaddr: u64, size: u64) -> Self {
        Self {
            argsz: Self::ARGSZ,
            flags: 0,
            vaddr,
            size,
        }
    }
}

/// `struct vfio_iommu_spapr_tce_create` (in/out), for
/// `IOMMU_SPAPR_TCE_CREATE`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpaprTceCreate {
    /// Size of the structure the caller passes; at least 40.
    pub argsz: u32,
    /// No flags are defined: must be 0.
    pub flags: u32,
    /// IOMMU page shift of the new window.
    pub page_shift: u32,
    /// Window size in bytes, a power of two.
    pub window_size: u64,
    /// Number of TCE table levels, 1 to 5.
    pub levels: u32,
    /// Out: bus address the platform chose for the window.
    pub start_addr: u64,
}

impl SpaprTceCreate {
    /// The uapi size of the structure.
    pub const ARGSZ: u32 = 40;

    /// A window request; `start_addr` is filled by the kernel.
    pub const fn new(page_shift: u32, window_size: u64, levels: u32) -> Self {
        Self {
            argsz: Self::ARGSZ,
            flags: 0,
            page_shift,
            window_size,
            levels,
            start_addr: 0,
        }
    }
}

/// `struct vfio_iommu_spapr_tce_remove` (in), for
/// `IOMMU_SPAPR_TCE_REMOVE`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpaprTceRemove {
    /// Size of the structure the caller passes; at least 16.
    pub argsz: u32,
    /// No flags are defined: must be 0.
    pub flags: u32,
    /// Any bus address inside the window to remove.
    pub start_addr: u64,
}

impl SpaprTceRemove {
    /// The uapi size of the structure.
    pub const ARGSZ: u32 = 16;

    /// A removal of the window that contains `start_addr`.
    pub const fn new(start_addr: u64) -> Self {
        Self {
            argsz: Self::ARGSZ,
            flags: 0,
            start_addr,
        }
    }
}

/// `struct vfio_iommu_type1_dma_map` (in), for `IOMMU_MAP_DMA` on both
/// Type1 and sPAPR containers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DmaMap {
    /// Size of the structure the caller passes; at least 32.
    pub argsz: u32,
    /// `VFIO_DMA_MAP_FLAG_*`: at least one of READ and WRITE.
    pub flags: u32,
    /// Process virtual address of the memory to map.
    pub vaddr: u64,
    /// I/O (bus) address to map it at.
    pub iova: u64,
    /// Size in bytes.
    pub size: u64,
}

impl DmaMap {
    /// The uapi size of the structure.
    pub const ARGSZ: u32 = 32;

    /// A mapping of `size` bytes at `iova` to `vaddr` with `flags`.
    pub const fn new(iova: u64, size: u64, vaddr: u64, flags: u32) -> Self {
        Self {
            argsz: Self::ARGSZ,
            flags,
            vaddr,
            iova,
            size,
        }
    }
}

/// `struct vfio_iommu_type1_dma_unmap` (in/out), for `IOMMU_UNMAP_DMA`.
///
/// Type1 writes back in `size` how many bytes it unmapped; sPAPR leaves
/// the structure as it was.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DmaUnmap {
    /// Size of the structure the caller passes; at least 24.
    pub argsz: u32,
    /// `VFIO_DMA_UNMAP_FLAG_*` (Type1 only; sPAPR accepts none).
    pub flags: u32,
    /// First I/O address to unmap.
    pub iova: u64,
    /// In: bytes to unmap. Out (Type1): bytes unmapped.
    pub size: u64,
}

impl DmaUnmap {
    /// The uapi size of the structure (without the dirty bitmap).
    pub const ARGSZ: u32 = 24;

    /// An unmapping of `size` bytes at `iova`.
    pub const fn new(iova: u64, size: u64) -> Self {
        Self {
            argsz: Self::ARGSZ,
            flags: 0,
            iova,
            size,
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::mem::size_of;

    use vfio_bindings::bindings::vfio as uapi;

    use super::*;

    #[test]
    fn argsz_constants_match_the_uapi_sizes() {
        let pairs = [
            (GroupStatus::ARGSZ, size_of::<uapi::vfio_group_status>()),
            (
                SpaprTceInfo::ARGSZ,
                size_of::<uapi::vfio_iommu_spapr_tce_info>(),
            ),
            (
                SpaprRegisterMemory::ARGSZ,
                size_of::<uapi::vfio_iommu_spapr_register_memory>(),
            ),
            (
                SpaprTceCreate::ARGSZ,
                size_of::<uapi::vfio_iommu_spapr_tce_create>(),
            ),
            (
                SpaprTceRemove::ARGSZ,
                size_of::<uapi::vfio_iommu_spapr_tce_remove>(),
            ),
            (DmaMap::ARGSZ, size_of::<uapi::vfio_iommu_type1_dma_map>()),
            (
                DmaUnmap::ARGSZ,
                size_of::<uapi::vfio_iommu_type1_dma_unmap>(),
            ),
        ];
        for (ours, theirs) in pairs {
            assert_eq!(ours as usize, theirs);
        }
    }

    #[test]
    fn iommu_type_constants_match_the_uapi() {
        assert_eq!(VFIO_TYPE1_IOMMU, uapi::VFIO_TYPE1_IOMMU);
        assert_eq!(VFIO_SPAPR_TCE_IOMMU, uapi::VFIO_SPAPR_TCE_IOMMU);
        assert_eq!(VFIO_TYPE1V2_IOMMU, uapi::VFIO_TYPE1v2_IOMMU);
        assert_eq!(VFIO_SPAPR_TCE_V2_IOMMU, uapi::VFIO_SPAPR_TCE_v2_IOMMU);
        assert_eq!(VFIO_NOIOMMU_IOMMU, uapi::VFIO_NOIOMMU_IOMMU);
        assert_eq!(VFIO_UNMAP_ALL, uapi::VFIO_UNMAP_ALL);
        assert_eq!(VFIO_API_VERSION as u32, uapi::VFIO_API_VERSION);
        assert_eq!(VFIO_IOMMU_SPAPR_INFO_DDW, uapi::VFIO_IOMMU_SPAPR_INFO_DDW);
        assert_eq!(VFIO_DMA_UNMAP_FLAG_ALL, uapi::VFIO_DMA_UNMAP_FLAG_ALL);
    }

    #[test]
    fn constructors_fill_the_full_argsz() {
        assert_eq!(DmaMap::new(0, 0, 0, 0).argsz, 32);
        assert_eq!(SpaprTceCreate::new(16, 1 << 30, 1).argsz, 40);
        assert_eq!(SpaprTceInfo::new().argsz, 32);
    }
}
