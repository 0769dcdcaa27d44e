//! A pseries machine model: guest RAM, PCI host bridges with sPAPR DMA
//! windows, and VFIO devices passed through from a simulated POWER host —
//! the one machine the demo, the scenario tests and the property tests
//! share.
//!
//! ```text
//! address-space: memory
//!   system                       container, whole 64-bit space
//!     ppc_spapr.ram              alias of ppc_spapr.ram-block at 0
//! address-space: pci@800000020000000   (one per PHB, see addrspace_spapr)
//!   tce-root-* / tce-iommu-*     the PHB's DMA windows
//! ```
//!
//! # What is wired to what
//!
//! - [`Machine`] owns the [`Memory`](addrspace_core::Memory), an
//!   [`SpaprIommu`](addrspace_spapr::SpaprIommu) with the configured PHBs
//!   (their TCEs point into the `memory` address space), and one
//!   simulated VFIO host ([`SimKernel`](addrspace_vfio::SimKernel), strict
//!   by default) holding the host's IOMMU groups.
//! - [`Machine::plug`] passes a host group through: a VFIO
//!   [`Container`](addrspace_vfio::Container) is opened (or a compatible
//!   one on the same PHB is joined), the group attached, the device fd
//!   opened, and the container's listeners registered — memory
//!   pre-registration on `memory`, and the IOMMU listener (an IOMMU user)
//!   on the PHB's DMA address space. The listener's arrival makes the
//!   core run `vfio_start` on each window, which moves its TCE table out
//!   of (simulated) KVM so that hypercalls reach VFIO.
//! - [`Machine::unplug`] takes it out: a group sharing its container with
//!   others is detached alone; the last group tears its container down in
//!   replay mode (every window unmapped and removed, memory unregistered,
//!   callback by callback) or in detach mode (the listeners detached, the
//!   container released, the kernel dropping everything at once).
//! - Guest calls — `H_PUT_TCE`, `H_PUT_TCE_INDIRECT`, `H_STUFF_TCE`,
//!   `H_GET_TCE` and the four dynamic-DMA-window RTAS calls — are
//!   forwarded to the sPAPR model; [`Machine::reset`] resets every PHB's
//!   DMA in one transaction.
//! - [`Machine::check`] checks every invariant of the VFIO-on-sPAPR
//!   contract against the simulated kernel (see [`invariants`]); the
//!   [`scenario`] module turns random or scripted guest and operator
//!   actions into machine calls.
//!
//! # Choices
//!
//! - Guest RAM's host memory is aligned to 16 MiB (an alias into a
//!   slightly larger block), as a VMM allocates RAM aligned to its page
//!   size: the host registers and maps RAM in whole host pages, and an
//!   IOMMU page can only be as large as the alignment of the memory
//!   registered under it.
//! - The host is told that RAM is backed by pages of
//!   [`MachineConfig::ram_page_shift`], and each PHB offers the guest no
//!   IOMMU page larger than that: a larger guest page could not be mapped
//!   by the host (QEMU likewise caps the page sizes by the RAM backing).

mod config;
mod error;
mod guest;
pub mod invariants;
mod machine;
pub mod scenario;

use std::fmt;

pub use config::{ContainerChoice, DeviceSpec, HostGroup, MachineConfig};
pub use error::MachineError;
pub use invariants::InvariantReport;
pub use machine::{Machine, Retired};
pub use scenario::{Action, PAST_RAM};

/// A plugged VFIO device, named by the machine (never reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(pub u32);

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "device#{}", self.0)
    }
}

/// A VFIO container of the machine, named by the machine (never reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContainerId(pub u32);

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "container#{}", self.0)
    }
}
