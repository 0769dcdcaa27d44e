//! The two facts `info mtree -D` leaves out, supplied from outside.
//!
//! 1. **Which `i/o` regions terminate** (map their own MMIO where nothing
//!    else does, like `io` or `vga.mmio`) and which are pure containers
//!    (like `system`): both print as `i/o`. The only source allowed is a
//!    flat dump of the same machine (`info mtree -f`), and only this bit
//!    is taken from it, per address space: a region terminates if its
//!    name owns ranges in the flat view of an address space that can reach
//!    it. Names are not unique (powernv's `xscom-0` is an MMIO region in
//!    `memory` and the container root of the `xscom-0` address space), so
//!    a name only counts in the address spaces where it appears. A region
//!    the flat dump cannot see (disabled, hidden, clipped) keeps the
//!    default: a container if it has subregions, MMIO if not. A region
//!    that *would* render as MMIO where its name owns no range is a
//!    container (sPAPR's `pci@….mmio` windows before any BAR is mapped);
//!    [`build`](crate::build) finds those by rendering.
//! 2. **Read-only aliases**: an alias's own read-only flag is not printed
//!    (QEMU's PAM `pam-rom` aliases show RAM read-only; the tree prints
//!    them as `ram`, the flat view as `rom`). They are named explicitly.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::HintsError;
use crate::flat_text::{flat_blocks, range_region_name};

/// Facts for [`build`](crate::build) that the tree text does not carry.
///
/// The default knows nothing: every `i/o` region with subregions is a
/// container, every other one MMIO, and no alias is read-only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hints {
    /// For each address space in the flat dump, the names that own ranges
    /// in its view (for repeated address-space names, in any of their
    /// views), if a flat dump was given.
    flat_names: Option<BTreeMap<String, BTreeSet<String>>>,
    readonly_aliases: BTreeSet<String>,
}

impl Hints {
    /// Hints that know nothing (the same as `Hints::default()`).
    pub fn new() -> Hints {
        Hints::default()
    }

    /// Takes the terminating bit from an `info mtree -f` dump of the same
    /// machine.
    pub fn from_flat(flat: &str) -> Result<Hints, HintsError> {
        let (blocks, headers) = flat_blocks(flat);
        if !headers {
            return Err(HintsError::NoFlatViews);
        }
        let mut names: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for block in &blocks {
            let owners: Vec<&str> = block
                .ranges
                .iter()
                .filter_map(|r| range_region_name(r))
                .collect();
            for space in &block.spaces {
                let set = names.entry((*space).to_owned()).or_default();
                set.extend(owners.iter().map(|n| (*n).to_owned()));
            }
        }
        Ok(Hints {
            flat_names: Some(names),
            readonly_aliases: BTreeSet::new(),
        })
    }

    /// Adds an alias name whose aliases are read-only (builder style).
    pub fn with_readonly_alias(mut self, name: impl Into<String>) -> Hints {
        self.add_readonly_alias(name);
        self
    }

    /// Adds an alias name whose aliases are read-only.
    pub fn add_readonly_alias(&mut self, name: impl Into<String>) {
        self.readonly_aliases.insert(name.into());
    }

    /// True if aliases called `name` are read-only.
    pub fn is_readonly_alias(&self, name: &str) -> bool {
        self.readonly_aliases.contains(name)
    }

    /// True if a flat dump was given.
    pub fn has_flat(&self) -> bool {
        self.flat_names.is_some()
    }

    /// Whether the flat dump shows ranges of a region called `region` in
    /// the view of address space `space`: `None` without a flat dump or if
    /// it has no address space of that name.
    pub fn owns_flat_ranges(&self, space: &str, region: &str) -> Option<bool> {
        let names = self.flat_names.as_ref()?.get(space)?;
        Some(names.contains(region))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLAT: &str = "\
FlatView #0
 AS \"I/O\", root: io
 Root memory region: io
  0000000000000000-0000000000000007 (prio 0, i/o): dma-chan
  0000000000000010-000000000000001f (prio 0, i/o): io @0000000000000010
";

    #[test]
    fn names_owning_flat_ranges_are_known_per_address_space() {
        let hints = Hints::from_flat(FLAT).unwrap();
        assert_eq!(hints.owns_flat_ranges("I/O", "io"), Some(true));
        assert_eq!(hints.owns_flat_ranges("I/O", "dma-chan"), Some(true));
        assert_eq!(hints.owns_flat_ranges("I/O", "system"), Some(false));
        assert_eq!(hints.owns_flat_ranges("memory", "io"), None);
    }

    #[test]
    fn shared_views_count_for_every_address_space_listed() {
        let flat = "FlatView #0\n AS \"memory\", root: system\n AS \"cpu-memory-0\", root: system\n \
                    Root memory region: system\n  0000000000000000-0000000000000fff (prio 0, ram): ram\n";
        let hints = Hints::from_flat(flat).unwrap();
        assert_eq!(hints.owns_flat_ranges("cpu-memory-0", "ram"), Some(true));
        assert_eq!(hints.owns_flat_ranges("memory", "ram"), Some(true));
    }

    #[test]
    fn default_hints_know_nothing() {
        let hints = Hints::new();
        assert!(!hints.has_flat());
        assert_eq!(hints.owns_flat_ranges("I/O", "io"), None);
        assert!(!hints.is_readonly_alias("pam-rom"));
    }

    #[test]
    fn readonly_aliases_are_named_explicitly() {
        let hints = Hints::new().with_readonly_alias("pam-rom");
        assert!(hints.is_readonly_alias("pam-rom"));
        assert!(!hints.is_readonly_alias("pam-ram"));
    }

    #[test]
    fn tree_text_is_not_a_flat_dump() {
        let err = Hints::from_flat(
            "address-space: memory\n  0000000000000000-ffffffffffffffff (prio 0, i/o): system\n",
        );
        assert_eq!(err, Err(HintsError::NoFlatViews));
    }
}
