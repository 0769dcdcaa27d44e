//! addrspace: memory-region trees, flat views and listeners for virtual
//! machine monitors.
//!
//! This umbrella crate re-exports [`addrspace_core`] and, behind features,
//! the crates built on it.

pub use addrspace_core::*;
#[cfg(feature = "mtree")]
pub use addrspace_mtree as mtree;
