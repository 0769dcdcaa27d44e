//! The book's Rust examples, compiled and run as doctests of the umbrella
//! crate. `src/lib.rs` includes this file under `#[cfg(doctest)]`:
//!
//! ```text
//! #[cfg(doctest)]
//! #[path = "../book/doctests.rs"]
//! mod book_doctests;
//! ```
//!
//! so `cargo test -p addrspace --doc` runs every ```` ```rust ```` block
//! of the chapters below. Chapters whose examples need crates the umbrella
//! does not depend on (KVM, VFIO) mark those blocks `ignore`.

#[doc = include_str!("src/introduction.md")]
pub struct Introduction;

#[doc = include_str!("src/concepts.md")]
pub struct Concepts;

#[doc = include_str!("src/quick-start.md")]
pub struct QuickStart;

#[doc = include_str!("src/rendering.md")]
pub struct Rendering;

#[doc = include_str!("src/listeners.md")]
pub struct Listeners;

#[doc = include_str!("src/engines.md")]
pub struct Engines;

#[doc = include_str!("src/embedding-kvm.md")]
pub struct EmbeddingKvm;

#[doc = include_str!("src/iommu-vfio-spapr.md")]
pub struct IommuVfioSpapr;

#[doc = include_str!("src/conformance.md")]
pub struct Conformance;

#[doc = include_str!("src/performance.md")]
pub struct Performance;

#[doc = include_str!("src/reliability.md")]
pub struct Reliability;

#[doc = include_str!("src/bad-input.md")]
pub struct BadInput;

#[doc = include_str!("src/cli.md")]
pub struct Cli;
