//! addrspace-spapr: the guest side of sPAPR DMA — TCE tables, PHB DMA
//! windows, dynamic DMA windows (RTAS) and the TCE hypercalls — built on
//! [`addrspace_core`]'s IOMMU regions.
//!
//! This crate has no `unsafe` code.
//!
//! # The model
//!
//! A POWER guest under a PAPR hypervisor does not see an IOMMU it can
//! program directly. Each PCI host bridge ([`Phb`]) offers DMA *windows*
//! on its bus; each window is translated by a table of translation control
//! entries ([`TceTable`]), named by a LIOBN ([`Liobn`]). A TCE ([`Tce`])
//! is a guest physical page address with READ (1) and WRITE (2) bits. The
//! guest fills tables with hypercalls (`H_PUT_TCE`, `H_PUT_TCE_INDIRECT`,
//! `H_STUFF_TCE`, read back with `H_GET_TCE`: [`hcall`]) and rearranges
//! windows with RTAS calls ([`ddw`]).
//!
//! In the memory map this is, as in QEMU's pseries machine:
//!
//! - one DMA address space per PHB ([`Phb::address_space`]), named
//!   `pci@<buid>`, rooted at the container `pci@<buid>.iommu-root`;
//! - in it, a full-size container per window slot (`tce-root-<liobn>`),
//!   into which the window's IOMMU region (`tce-iommu-<liobn>`) is added
//!   at the window's bus offset while the window is enabled;
//! - the MSI window, an MMIO page at `0x40000000000` ([`MsiWindow`]).
//!
//! A [`TceTable`] is the [`IommuOps`](addrspace_core::IommuOps) of its
//! IOMMU region: `translate` reads the entry of a page and points into the
//! guest memory address space ([`GuestRam`]); `replay` walks only valid
//! entries; the minimum page size is the table's page size.
//!
//! [`SpaprIommu`] holds every PHB of a machine and is where the machine
//! model forwards hypercalls (by LIOBN) and RTAS calls (by BUID or LIOBN).
//! Errors ([`HcallError`], [`RtasError`]) carry the offending values and
//! map to the codes the guest sees ([`HResult`], [`RtasStatus`]).
//!
//! # Placement, and why VFIO needs userspace
//!
//! On a real host, KVM handles TCE hypercalls in the kernel for speed: the
//! table lives in KVM ([`Placement::Kvm`]) and userspace never hears of a
//! put. That is fine for emulated devices, which translate on each access.
//! It is not for VFIO: a passed-through device's DMA goes through the
//! *host* IOMMU, which VFIO must program with every guest mapping, and it
//! learns of mappings only through IOMMU notifiers. So when VFIO starts
//! using a window — the core's usage counter for the IOMMU region goes
//! from 0 to 1 and runs `vfio_start` — the table moves to userspace
//! ([`Placement::Userspace`]), every entry preserved, and from then on each
//! successful put notifies MAP (a permission bit set) or UNMAP (none).
//! When the last VFIO user goes (`vfio_stop`) the table moves back, unless
//! the PHB says otherwise ([`PhbConfig::move_back_on_stop`]). Moves are
//! counted and recorded with digests of both sides ([`TableMove`]).
//!
//! Here "KVM" is simulated: the table is kept in the kernel's big-endian
//! format and puts on it skip notification; the guest-visible results of
//! every call are the same in both placements.
//!
//! # Resets
//!
//! A machine reset ([`SpaprIommu::reset`], [`Phb::reset`]) and
//! `ibm,reset-pe-dma-window` disable every window, then enable the default
//! window (4 KiB pages at 0, 1 GiB) with an empty table, all in one
//! transaction: the core judges usage per commit, so a VFIO container
//! holding the default window sees no stop/start churn and its table stays
//! in userspace. The entries the reset clears are announced as UNMAPs, so
//! the container's mappings follow even when the window itself is
//! unchanged.
//!
//! # What is left out
//!
//! - VIO devices (`spapr-vty`, `spapr-vscsi`, ...) and their LIOBNs; only
//!   PCI windows exist.
//! - Real KVM: no `KVM_CREATE_SPAPR_TCE_64`, no `H_TOO_HARD` handoff; the
//!   in-kernel table is simulated.
//! - Multi-level (indirect) TCE tables, the `ibm,ddw-extensions` and the
//!   `ibm,query-pe-dma-window` DMA migration mask.
//! - Migration of tables, PHB hotplug, and the device tree properties
//!   (`ibm,dma-window`) that tell the guest about the default window.
//! - The MSI window only queues writes ([`MsiWindow::take`]); routing them
//!   to an interrupt controller is the machine's job.

#![warn(missing_docs, missing_debug_implementations)]
#![forbid(unsafe_code)]

pub mod ddw;
mod error;
pub mod hcall;
mod iommu;
mod msi;
mod phb;
mod status;
mod table;
mod tce;

pub use ddw::{DdwQuery, DdwWindow};
pub use error::{HcallError, RtasError, SetupError};
pub use hcall::MAX_INDIRECT_TCES;
pub use iommu::SpaprIommu;
pub use msi::{MsiWindow, MsiWrite, MSI_WINDOW_ADDR, MSI_WINDOW_SIZE};
pub use phb::{GuestRam, Phb, PhbConfig};
pub use status::{HResult, RtasStatus};
pub use table::{Placement, TableMove, TceTable};
pub use tce::{Buid, Liobn, PageSizes, Tce, WindowGeometry, TCE_PAGE_SHIFT};
