//! addrspace: memory-region trees, flat views and listeners for virtual
//! machine monitors.
//!
//! This umbrella crate re-exports [`addrspace_core`] (regions, address
//! spaces, flat views, transactions, listeners) and, behind features, the
//! crates built on it: [`mtree`] (QEMU `info mtree` import and printing).
//! It also holds the machine models that the demo, examples, tests and
//! benchmarks share ([`pc`]).

#![warn(missing_docs, missing_debug_implementations)]

pub use addrspace_core::*;
#[cfg(feature = "mtree")]
pub use addrspace_mtree as mtree;

pub mod bench;
pub mod demo;
pub mod describe;
pub mod fuzzing;
pub mod pc;
pub mod pseries;
pub mod replay;
#[cfg(feature = "vm-memory")]
pub mod vm_memory;

/// The README's examples, compiled and run as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// The book's examples, compiled and run as doctests.
#[cfg(doctest)]
#[path = "../book/doctests.rs"]
mod book_doctests;
