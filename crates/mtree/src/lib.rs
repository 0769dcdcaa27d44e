//! addrspace-mtree: read and write QEMU's `info mtree` text.
//!
//! QEMU's monitor prints a machine's memory map two ways: `info mtree -D`
//! prints every address space's region tree (disabled regions included)
//! and then a `memory-region:` section for every region an alias shows;
//! `info mtree -f` prints the flat view of every address space. This crate
//! turns the first into a live [`addrspace_core::Memory`] and prints both
//! back, so that the core's rendering can be checked against QEMU and real
//! machine topologies can be used in tests and benchmarks.
//!
//! # Layers
//!
//! 1. [`parse`] reads the tree text into a [`Dump`]: [`AddressSpaceBlock`]s
//!    and [`RegionSection`]s of [`Node`]s (absolute addresses as printed,
//!    plus offsets in the parent). It also decides which printed lines are
//!    the same region (a region prints once per tree containing it) and
//!    which region each alias shows (QEMU prints only its name); the rules
//!    are in the `identity` and `targets` modules' docs. Errors are
//!    [`ParseError`]s with a line number; no input makes it panic.
//! 2. [`build`] makes the [`Memory`](addrspace_core::Memory) in one
//!    transaction and returns a [`Built`]: the memory map, its address
//!    spaces by name, and the region of every line. The text omits two
//!    facts that rendering needs; [`Hints`] supplies them (which `i/o`
//!    regions terminate, from a flat dump; which aliases are read-only).
//! 3. [`print_tree`] prints a memory map in `info mtree -D` format (a
//!    parsed and built dump prints back exactly) and [`print_flat`] its
//!    committed views in `info mtree -f` format.
//! 4. [`compare_flat`] compares two flat texts the way the conformance
//!    corpus defines equality, with a readable diff.
//!
//! ```
//! use addrspace_mtree::{build, compare_flat, parse, print_flat, print_tree, Hints};
//!
//! let tree = "\
//! address-space: memory
//!   0000000000000000-ffffffffffffffff (prio 0, i/o): system
//!     0000000000000000-0000000007ffffff (prio 0, ram): pc.ram
//!     00000000000c0000-00000000000dffff (prio 1, rom): pc.rom
//!
//! ";
//! let built = build(&parse(tree)?, &Hints::new())?;
//! let spaces = built.space_ids();
//! assert_eq!(print_tree(built.memory(), &spaces)?, tree);
//!
//! let flat = print_flat(built.memory(), &spaces)?;
//! assert!(flat.contains("  00000000000c0000-00000000000dffff (prio 1, rom): pc.rom\n"));
//! assert!(compare_flat(&flat, &flat).is_match());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # What this crate leaves out
//!
//! Regions come back with placeholder behaviour ([`NullOps`] MMIO, zeroed
//! RAM): a dump describes the map, not the devices. IOMMU regions print as
//! `i/o` and are rebuilt as MMIO or containers, which render alike. Owner
//! names (`info mtree -o`) and dispatch trees (`-d`) are not read.
//!
//! [`NullOps`]: addrspace_core::NullOps

#![warn(missing_docs, missing_debug_implementations)]
#![deny(unsafe_code)]

mod build;
mod compare;
mod dump;
mod error;
mod flat_text;
mod fuzz;
mod hints;
mod identity;
mod line;
mod parse;
mod plan;
mod print_flat;
mod print_tree;
mod region_type;
mod shape;
mod targets;
mod terminating;

pub use build::{build, Built};
pub use compare::{compare_flat, FlatComparison, ViewDiff};
pub use dump::{AddressSpaceBlock, AliasOf, Dump, Kind, Node, Preorder, RegionSection};
pub use error::{BuildError, HintsError, ParseError, ParseErrorKind};
pub use fuzz::fuzz_one;
pub use hints::Hints;
pub use parse::{parse, MAX_DEPTH};
pub use plan::MAX_RENDER_DEPTH;
pub use print_flat::print_flat;
pub use print_tree::print_tree;
pub use region_type::RegionType;
