//! addrspace-core: memory-region trees, flat views, transactions and
//! listeners for virtual machine monitors.
//!
//! # Layers
//!
//! - **Regions** ([`Region`], [`RegionKind`]) live in an arena inside a
//!   [`Memory`] and are named by generation-checked [`RegionId`] handles: a
//!   handle to a destroyed region is an error, never another region.
//!   Containers, RAM, ROM, ROM devices, MMIO, reservations, aliases and
//!   IOMMU regions nest by address and priority, as in QEMU's memory API.
//! - **Address spaces** have a root region. Each commit flattens every
//!   root into a [`FlatView`] — disjoint ranges, each served by one
//!   terminating region — by QEMU's rendering rules (see [`render`'s
//!   docs](crate#rendering)). Address spaces whose roots resolve to the same
//!   region share a view.
//! - **Listeners** ([`Listener`]) are told, after each outermost
//!   [`commit`](Memory::commit), exactly what changed in their address
//!   space, in a documented order (see the [`listener`] module).
//! - **Readers** (vCPU threads) hold [`ViewHandle`]s and load immutable
//!   views without locks.
//!
//! # Rendering
//!
//! A disabled region contributes nothing; subregions render by descending
//! priority (most recently added first among equals) and what renders first
//! wins; regions are clipped to their parent's window; aliases show their
//! target shifted; read-only, non-volatile and unmergeable flags are
//! inherited downwards; terminating regions fill the gaps their subregions
//! leave; neighbouring ranges of one region merge.
//!
//! # What this crate leaves out
//!
//! Guest-memory access for device crates is vm-memory's job (a bridge lives
//! in the umbrella crate); KVM, VFIO and the sPAPR model are separate crates
//! built on this one.

#![warn(missing_docs, missing_debug_implementations)]

mod access;
mod address_space;
mod backing;
mod child_index;
mod dispatch;
mod engine;
mod error;
mod flatview;
mod id;
mod ioevent;
pub mod iommu;
pub mod listener;
mod memory;
mod notifier;
mod ops;
mod range;
mod ranges;
pub mod recorder;
mod region;
mod registration;
mod render;
#[cfg(feature = "testing")]
pub mod testing;
mod tree;

pub use access::{AccessError, MAX_TRANSLATION_DEPTH};
pub use address_space::{ViewHandle, ViewReader};
pub use backing::HostMemory;
pub use engine::Engine;
pub use error::{Error, ListenerFailure, ListenerPanic};
pub use flatview::{FlatRange, FlatView};
pub use id::{AddressSpaceId, ListenerId, NotifierId, RegionId};
pub use ioevent::{EventNotifier, FlatCoalesced, FlatIoeventfd, Ioeventfd};
pub use iommu::{
    HookError, IommuEvent, IommuEventKind, IommuNotify, IommuOps, IommuPerm, IommuTlbEntry,
    NotifierFlags, UnmappedIommu,
};
pub use listener::{
    Listener, ListenerConfig, ListenerCx, ListenerError, ListenerResult, Section, Unregister,
};
pub use memory::Memory;
pub use ops::{AccessSizes, MmioOps, NullOps};
pub use range::AddrRange;
pub use ranges::{RangeList, CHUNK};
pub use region::{DirtyClient, DirtyLogMask, KindTag, Region, RegionKind, Subregions, SIZE_2_64};
