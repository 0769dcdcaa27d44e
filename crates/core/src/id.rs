//! Generation-checked handles and the arena that issues them.
//!
//! Every object the framework owns (regions, address spaces, listeners)
//! lives in an [`Arena`] and is named by a small copyable handle. A handle
//! carries the arena's *space* (which [`Memory`](crate::Memory) made it) and
//! the slot's *generation*, so a handle to a destroyed object, or one from
//! another `Memory`, is reported as such instead of silently naming a
//! different object that reused the slot.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};

use slab::Slab;

static NEXT_SPACE: AtomicU32 = AtomicU32::new(1);

/// Allocates a fresh space number for a new [`Memory`](crate::Memory).
pub(crate) fn next_space() -> u32 {
    NEXT_SPACE.fetch_add(1, Ordering::Relaxed)
}

/// The raw parts of a handle; public handle types wrap this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct RawId {
    pub(crate) space: u32,
    pub(crate) index: u32,
    pub(crate) generation: u32,
}

macro_rules! handle_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub(crate) RawId);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "#{}.{}"), self.0.index, self.0.generation)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }
    };
}

handle_type!(
    /// Names a memory region. Copyable; never dangles: using it after the
    /// region is destroyed yields [`Error::StaleRegion`](crate::Error::StaleRegion).
    RegionId,
    "region"
);
handle_type!(
    /// Names an address space.
    AddressSpaceId,
    "as"
);
handle_type!(
    /// Names a registered listener.
    ListenerId,
    "listener"
);
handle_type!(
    /// Names a registered IOMMU notifier.
    NotifierId,
    "notifier"
);

/// Why a handle did not resolve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Miss {
    /// The slot was freed (and maybe reused) since the handle was made.
    Stale,
    /// The handle was made by another arena.
    Foreign,
}

/// A slab whose slots carry generations.
#[derive(Debug)]
pub(crate) struct Arena<T> {
    space: u32,
    slots: Slab<(u32, T)>,
    generations: Vec<u32>,
}

impl<T> Arena<T> {
    pub(crate) fn new(space: u32) -> Self {
        Arena {
            space,
            slots: Slab::new(),
            generations: Vec::new(),
        }
    }

    pub(crate) fn insert(&mut self, value: T) -> RawId {
        let entry = self.slots.vacant_entry();
        let index = entry.key();
        if index >= self.generations.len() {
            self.generations.resize(index + 1, 0);
        }
        let generation = self.generations[index];
        entry.insert((generation, value));
        RawId {
            space: self.space,
            index: u32::try_from(index).expect("arena index fits in u32"),
            generation,
        }
    }

    /// The id the next `insert` will return.
    pub(crate) fn peek_next(&self) -> RawId {
        let index = self.slots.vacant_key();
        RawId {
            space: self.space,
            index: u32::try_from(index).expect("arena index fits in u32"),
            generation: self.generations.get(index).copied().unwrap_or(0),
        }
    }

    pub(crate) fn check(&self, id: RawId) -> Result<(), Miss> {
        if id.space != self.space {
            return Err(Miss::Foreign);
        }
        match self.slots.get(id.index as usize) {
            Some((generation, _)) if *generation == id.generation => Ok(()),
            _ => Err(Miss::Stale),
        }
    }

    pub(crate) fn get(&self, id: RawId) -> Option<&T> {
        self.check(id).ok()?;
        self.slots.get(id.index as usize).map(|(_, v)| v)
    }

    pub(crate) fn get_mut(&mut self, id: RawId) -> Option<&mut T> {
        self.check(id).ok()?;
        self.slots.get_mut(id.index as usize).map(|(_, v)| v)
    }

    pub(crate) fn remove(&mut self, id: RawId) -> Option<T> {
        self.check(id).ok()?;
        let (_, value) = self.slots.remove(id.index as usize);
        self.generations[id.index as usize] = self.generations[id.index as usize].wrapping_add(1);
        Some(value)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (RawId, &T)> {
        let space = self.space;
        self.slots.iter().map(move |(index, (generation, v))| {
            (
                RawId {
                    space,
                    index: index as u32,
                    generation: *generation,
                },
                v,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reused_slot_does_not_resolve_old_handle() {
        let mut arena = Arena::new(7);
        let a = arena.insert("a");
        arena.remove(a);
        let b = arena.insert("b");
        assert_eq!(a.index, b.index);
        assert_eq!(arena.check(a), Err(Miss::Stale));
        assert_eq!(arena.get(b), Some(&"b"));
    }

    #[test]
    fn handle_from_other_space_is_foreign() {
        let mut one = Arena::new(1);
        let other: Arena<&str> = Arena::new(2);
        let a = one.insert("a");
        assert_eq!(other.check(a), Err(Miss::Foreign));
    }

    #[test]
    fn peek_next_predicts_insert() {
        let mut arena = Arena::new(3);
        let a = arena.insert(1);
        arena.remove(a);
        let predicted = arena.peek_next();
        assert_eq!(arena.insert(2), predicted);
    }
}

/// A hasher for maps keyed by handles: handles are small, distinct
/// integers, so a multiply is enough and much cheaper than SipHash (no
/// untrusted keys ever reach these maps).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ b as u64).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = (self.0.rotate_left(5) ^ n as u64).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

/// Builds [`IdHasher`]s.
pub(crate) type IdBuild = std::hash::BuildHasherDefault<IdHasher>;
/// A map keyed by handles.
pub(crate) type IdMap<K, V> = std::collections::HashMap<K, V, IdBuild>;
/// A set of handles.
pub(crate) type IdSet<K> = std::collections::HashSet<K, IdBuild>;
