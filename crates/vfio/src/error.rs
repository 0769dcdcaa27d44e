//! [`VfioError`]: why a kernel backend could not be set up, or why the
//! consumer side (containers, groups, the VFIO listeners) could not do
//! what it was asked.
//!
//! Kernel calls themselves fail with an [`Errno`](crate::Errno); the
//! consumer side wraps each such failure in [`VfioError::Kernel`], which
//! names the call and the values it carried ([`KernelCall`]).

use std::path::PathBuf;

use addrspace_core::AddressSpaceId;

use crate::call::KernelCall;
use crate::container::IommuType;
use crate::errno::Errno;
use crate::handle::IommuGroupId;

/// Something VFIO could not do. Sorted by name.
#[derive(Debug, thiserror::Error)]
pub enum VfioError {
    /// The container is already plugged into a machine's address spaces.
    #[error("the container is already plugged")]
    AlreadyPlugged,
    /// `GET_API_VERSION` answered a version this crate does not speak.
    #[error("VFIO API version {version} is not supported (expected {expected})")]
    ApiVersion {
        /// What the kernel answered.
        version: i32,
        /// What this crate speaks.
        expected: i32,
    },
    /// The VFIO container device node does not exist: the `vfio` module is
    /// not loaded, or this is not a Linux host with an IOMMU.
    #[error("VFIO is not available: {} does not exist", path.display())]
    DeviceMissing {
        /// The missing device node.
        path: PathBuf,
    },
    /// The container's IOMMU type needs a DMA address space to plug into
    /// (sPAPR), or takes none (Type1).
    #[error("an {iommu_type:?} container {}", if *needed { "needs a DMA address space" } else { "takes no DMA address space" })]
    DmaSpace {
        /// The container's IOMMU type.
        iommu_type: IommuType,
        /// Whether one was needed (and missing) or given (and unwanted).
        needed: bool,
    },
    /// A DMA mapping was asked for a guest address whose translation lives
    /// in another address space than the guest memory the container
    /// follows.
    #[error(
        "IOMMU entry at bus address {iova:#x} translates into {found}, not guest memory {expected}"
    )]
    ForeignTarget {
        /// Bus address of the entry.
        iova: u64,
        /// The guest memory address space.
        expected: AddressSpaceId,
        /// The entry's target.
        found: AddressSpaceId,
    },
    /// The group is already attached to this container.
    #[error("group {group} is already attached to this container")]
    GroupAttached {
        /// The group.
        group: IommuGroupId,
    },
    /// The group is not attached to this container.
    #[error("group {group} is not attached to this container")]
    GroupNotAttached {
        /// The group.
        group: IommuGroupId,
    },
    /// The group cannot be used: a host driver owns one of its devices.
    #[error("group {group} is not viable (status flags {flags:#x})")]
    GroupNotViable {
        /// The group.
        group: IommuGroupId,
        /// What `GROUP_GET_STATUS` reported.
        flags: u32,
    },
    /// The kernel does not offer the IOMMU type.
    #[error("the kernel does not offer the {iommu_type:?} IOMMU")]
    IommuTypeUnsupported {
        /// The type asked for.
        iommu_type: IommuType,
    },
    /// A kernel call failed.
    #[error("{call} failed: {errno}")]
    Kernel {
        /// The call and its values.
        call: KernelCall,
        /// What the kernel answered.
        errno: Errno,
    },
    /// The memory framework refused an operation (listener registration,
    /// notifier registration, a refused commit).
    #[error(transparent)]
    Memory(#[from] addrspace_core::Error),
    /// The container has no IOMMU backend yet: attach a group first.
    #[error("the container has no IOMMU backend yet (attach a group first)")]
    NoBackend,
    /// A v2 sPAPR container whose `GET_INFO` offers no dynamic windows.
    #[error("the sPAPR v2 container offers no dynamic DMA windows")]
    NoDynamicWindows,
    /// No host IOMMU page size fits the guest IOMMU's pages.
    #[error("no host IOMMU page size (offered {host_page_sizes:#x}) is at most the guest IOMMU page size {iommu_page_size:#x}")]
    NoPageSize {
        /// The guest IOMMU region's minimum page size.
        iommu_page_size: u64,
        /// The host's page-size bitmap (bit n = 2^n bytes).
        host_page_sizes: u64,
    },
    /// A guest IOMMU entry points at an address that is no guest RAM the
    /// container follows; nothing was mapped.
    #[error(
        "IOMMU entry at bus address {iova:#x} points at {gpa:#x}+{size:#x}, which is not guest RAM"
    )]
    NotGuestRam {
        /// Bus address of the entry.
        iova: u64,
        /// The guest physical address it points at.
        gpa: u64,
        /// Size of the entry.
        size: u64,
    },
    /// The container is not plugged.
    #[error("the container is not plugged")]
    NotPlugged,
    /// The VFIO container device node exists but cannot be opened.
    #[error("cannot open {}: {source}", path.display())]
    Open {
        /// The device node.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// An IOMMU section of a v1 container lies outside the one fixed
    /// 32-bit window.
    #[error("IOMMU section [{start:#x}, +{size:#x}) lies outside the fixed window [{window_start:#x}, +{window_size:#x})")]
    OutsideFixedWindow {
        /// Section start (bus address).
        start: u64,
        /// Section size.
        size: u128,
        /// The fixed window's start.
        window_start: u64,
        /// The fixed window's size.
        window_size: u64,
    },
    /// The operation needs the container unplugged first.
    #[error("the container is plugged: unplug it first")]
    Plugged,
    /// The container has been released.
    #[error("the container has been released")]
    Released,
    /// Replaying a new window's existing guest mappings failed in the
    /// kernel; the window was taken down again.
    #[error(
        "replaying the mappings of window {start:#x} failed {failures} time(s); first: {first}"
    )]
    ReplayFailed {
        /// The window's bus address.
        start: u64,
        /// How many mappings the kernel refused.
        failures: u64,
        /// The first refusal, rendered.
        first: String,
    },
    /// An IOMMU section is not aligned to host pages.
    #[error("IOMMU section [{start:#x}, +{size:#x}) is not aligned to the host page size {page_size:#x}")]
    SectionMisaligned {
        /// Section start (bus address).
        start: u64,
        /// Section size.
        size: u128,
        /// The host page size.
        page_size: u64,
    },
    /// A MAP or UNMAP returned a positive value instead of 0 (the kernel's
    /// misaligned-iova QUIRK): nothing happened.
    #[error("{call} returned {value} instead of 0")]
    UnexpectedReturn {
        /// The call and its values.
        call: KernelCall,
        /// What it returned.
        value: i32,
    },
    /// The kernel put a new window elsewhere than the guest's window.
    #[error("the host window for bus address {expected:#x} was created at {actual:#x}")]
    WindowMisplaced {
        /// The guest window's bus address.
        expected: u64,
        /// Where the kernel put the host window.
        actual: u64,
    },
    /// A new IOMMU section overlaps a host window already recorded.
    #[error("IOMMU section [{start:#x}, +{size:#x}) overlaps host window [{other_start:#x}, +{other_size:#x})")]
    WindowOverlap {
        /// Section start.
        start: u64,
        /// Section size.
        size: u128,
        /// The recorded window's start.
        other_start: u64,
        /// The recorded window's size.
        other_size: u64,
    },
    /// A host window must be a power of two below 2^64.
    #[error("IOMMU section [{start:#x}, +{size:#x}) cannot be a host window: its size is not a power of two below 2^64")]
    WindowSize {
        /// Section start.
        start: u64,
        /// Section size.
        size: u128,
    },
}

impl VfioError {
    /// The errno of a failed kernel call, if that is what this is.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            VfioError::Kernel { errno, .. } => Some(*errno),
            _ => None,
        }
    }

    /// The kernel call that failed, if that is what this is.
    pub fn kernel_call(&self) -> Option<&KernelCall> {
        match self {
            VfioError::Kernel { call, .. } | VfioError::UnexpectedReturn { call, .. } => Some(call),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_missing_names_the_path() {
        let err = VfioError::DeviceMissing {
            path: PathBuf::from("/dev/vfio/vfio"),
        };
        assert_eq!(
            err.to_string(),
            "VFIO is not available: /dev/vfio/vfio does not exist"
        );
    }

    #[test]
    fn kernel_error_names_call_values_and_errno() {
        let err = VfioError::Kernel {
            call: KernelCall::SpaprTceCreate {
                page_shift: 16,
                window_size: 1 << 30,
                levels: 2,
            },
            errno: Errno::ENOMEM,
        };
        assert_eq!(
            err.to_string(),
            "VFIO_IOMMU_SPAPR_TCE_CREATE (page shift 16, window size 0x40000000, levels 2) \
             failed: ENOMEM (12): cannot allocate memory"
        );
        assert_eq!(err.errno(), Some(Errno::ENOMEM));
    }
}
