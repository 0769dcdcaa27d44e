//! An index of a region's many subregions by address, so that rendering a
//! narrow window of a container with thousands of children looks at the
//! few that can intersect it instead of all of them.
//!
//! Children are grouped by size class (the power of two at or above their
//! size); within a class they are sorted by address. A child of class `c`
//! can intersect `[lo, hi)` only if its address lies in `(lo - 2^c, hi)`:
//! a class whose first child starts at or after `hi`, or whose last starts
//! at or before `lo - 2^c`, is passed over on two comparisons; the others
//! take a binary search and a short walk back. A window render of the PCI
//! container of the 200-device q35 dump probes a dozen classes, most of
//! them passed over.
//!
//! Each class is a double-ended queue: inserting or removing a child
//! shifts whichever side of it is shorter. Toggling the first BAR of a bus
//! with 200 same-sized BARs shifted the whole class twice per commit as a
//! plain vector (a fortieth of the commit); now it shifts nothing.

use std::collections::VecDeque;

use crate::id::RegionId;

/// Children counts at which an index is built and dropped.
pub(crate) const BUILD_AT: usize = 8;
pub(crate) const DROP_AT: usize = 4;

#[derive(Debug, Clone, Default)]
pub(crate) struct ChildIndex {
    /// Non-empty classes, sorted by class. A container has a dozen
    /// classes at most, and a window render probes every one: a vector
    /// walk costs a fraction of a map's.
    classes: Vec<Class>,
}

/// The children of one size class, sorted by address.
#[derive(Debug, Clone)]
struct Class {
    class: u32,
    /// How far before a window a child of this class can start and
    /// still reach into it: `2^class`.
    reach: i128,
    children: VecDeque<(u64, RegionId)>,
}

fn class(size: u128) -> u32 {
    if size <= 1 {
        0
    } else {
        128 - (size - 1).leading_zeros()
    }
}

impl ChildIndex {
    pub(crate) fn insert(&mut self, addr: u64, size: u128, id: RegionId) {
        let c = class(size);
        let k = match self.classes.binary_search_by_key(&c, |x| x.class) {
            Ok(k) => k,
            Err(k) => {
                let reach = if c >= 127 { i128::MAX / 2 } else { 1i128 << c };
                self.classes.insert(
                    k,
                    Class {
                        class: c,
                        reach,
                        children: VecDeque::new(),
                    },
                );
                k
            }
        };
        let v = &mut self.classes[k].children;
        let pos = v.partition_point(|e| *e < (addr, id));
        v.insert(pos, (addr, id));
    }

    pub(crate) fn remove(&mut self, addr: u64, size: u128, id: RegionId) {
        let c = class(size);
        if let Ok(k) = self.classes.binary_search_by_key(&c, |x| x.class) {
            let v = &mut self.classes[k].children;
            if let Ok(pos) = v.binary_search(&(addr, id)) {
                v.remove(pos);
            }
            if v.is_empty() {
                self.classes.remove(k);
            }
        }
    }

    /// Children that may intersect `[lo, hi)` (parent-relative), in no
    /// particular order.
    pub(crate) fn candidates(&self, lo: i128, hi: i128, out: &mut impl Extend<RegionId>) {
        for Class {
            reach, children: v, ..
        } in &self.classes
        {
            // Most classes hold nothing near a narrow window: rule out
            // those that start at or after it, or end before it, without
            // a search.
            let (Some(first), Some(last)) = (v.front(), v.back()) else {
                continue;
            };
            let from = lo - reach;
            if first.0 as i128 >= hi || (last.0 as i128) <= from {
                continue;
            }
            // One search for the end; the start is found walking back,
            // past the few children that can reach into the window.
            let b = v.partition_point(|(addr, _)| (*addr as i128) < hi);
            let a = v
                .range(..b)
                .rposition(|(addr, _)| (*addr as i128) <= from)
                .map_or(0, |k| k + 1);
            if a < b {
                out.extend(v.range(a..b).map(|(_, id)| *id));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::RawId;

    fn id(i: u32) -> RegionId {
        RegionId(RawId {
            space: 0,
            index: i,
            generation: 0,
        })
    }

    #[test]
    fn candidates_include_every_intersecting_child() {
        let mut idx = ChildIndex::default();
        let children = [
            (0u64, 1u128 << 30),
            (0x1000, 0x1000),
            (0x8000, 0x10),
            (0x9000, 0x2000),
        ];
        for (i, (a, s)) in children.iter().enumerate() {
            idx.insert(*a, *s, id(i as u32));
        }
        let mut out = Vec::new();
        idx.candidates(0x9800, 0x9900, &mut out);
        out.sort();
        assert_eq!(out, vec![id(0), id(3)]);
        out.clear();
        idx.remove(0x9000, 0x2000, id(3));
        idx.candidates(0x9800, 0x9900, &mut out);
        assert_eq!(out, vec![id(0)]);
    }

    proptest::proptest! {
        #[test]
        fn candidates_are_a_superset_of_intersecting_children(
            children in proptest::collection::vec((0u64..1 << 20, 1u128..1 << 16), 0..80),
            removed in proptest::collection::vec(0usize..80, 0..10),
            lo in -(1i128 << 17)..1 << 21,
            len in 1i128..1 << 18,
        ) {
            let mut idx = ChildIndex::default();
            for (i, (a, s)) in children.iter().enumerate() {
                idx.insert(*a, *s, id(i as u32));
            }
            for &r in &removed {
                if let Some((a, s)) = children.get(r) {
                    idx.remove(*a, *s, id(r as u32));
                }
            }
            let hi = lo + len;
            let mut out = Vec::new();
            idx.candidates(lo, hi, &mut out);
            for (i, (a, s)) in children.iter().enumerate() {
                let live = !removed.contains(&i);
                let meets = (*a as i128) < hi && *a as i128 + *s as i128 > lo;
                if live && meets {
                    proptest::prop_assert!(out.contains(&id(i as u32)), "child {} missed", i);
                }
                if !live {
                    proptest::prop_assert!(!out.contains(&id(i as u32)), "removed child {} offered", i);
                }
            }
        }
    }

    #[test]
    fn class_is_the_power_of_two_at_or_above() {
        assert_eq!(class(1), 0);
        assert_eq!(class(0x1000), 12);
        assert_eq!(class(0x1001), 13);
        assert_eq!(class(1 << 64), 64);
    }
}
