//! Slot numbers: who may use which KVM memory slot.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use parking_lot::Mutex;

/// The memory slot numbers of one VM, shared by every listener that puts
/// slots in it.
///
/// KVM names memory slots by number, and setting a number that is already
/// in use *modifies* that slot rather than failing. Two listeners on one
/// VM (say, one per address space) must therefore draw numbers from one
/// pool; [`KvmVm`](crate::KvmVm) hands the same pool to every listener it
/// makes. Numbers are handed out lowest-free first, so freed numbers are
/// reused, and never reach [`limit`](Self::limit) (KVM's
/// `KVM_CAP_NR_MEMSLOTS`, or a smaller limit chosen by the VMM).
#[derive(Clone)]
pub struct SlotPool(Arc<Mutex<Inner>>);

struct Inner {
    limit: u32,
    used: BTreeSet<u32>,
}

impl SlotPool {
    /// A pool of slot numbers `0..limit`.
    pub fn new(limit: u32) -> Self {
        SlotPool(Arc::new(Mutex::new(Inner {
            limit,
            used: BTreeSet::new(),
        })))
    }

    /// How many numbers the pool hands out.
    pub fn limit(&self) -> u32 {
        self.0.lock().limit
    }

    /// How many numbers are in use.
    pub fn in_use(&self) -> usize {
        self.0.lock().used.len()
    }

    /// Takes the lowest free number, if any.
    pub(crate) fn alloc(&self) -> Option<u32> {
        let mut inner = self.0.lock();
        // `used` is sorted: the first number that differs from its rank is
        // the lowest gap.
        let free = inner
            .used
            .iter()
            .zip(0u32..)
            .find(|(used, rank)| *used != rank)
            .map_or(inner.used.len() as u32, |(_, rank)| rank);
        if free >= inner.limit {
            return None;
        }
        inner.used.insert(free);
        Some(free)
    }

    /// Gives a number back.
    pub(crate) fn free(&self, slot: u32) {
        let released = self.0.lock().used.remove(&slot);
        debug_assert!(released, "slot {slot} freed twice");
    }
}

impl fmt::Debug for SlotPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.0.lock();
        f.debug_struct("SlotPool")
            .field("limit", &inner.limit)
            .field("in_use", &inner.used.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_come_lowest_first_and_are_reused() {
        let pool = SlotPool::new(8);
        assert_eq!(
            (0..4).map(|_| pool.alloc().unwrap()).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
        pool.free(1);
        pool.free(2);
        assert_eq!(pool.alloc(), Some(1));
        assert_eq!(pool.alloc(), Some(2));
        assert_eq!(pool.alloc(), Some(4));
        assert_eq!(pool.in_use(), 5);
    }

    #[test]
    fn no_number_at_or_past_the_limit() {
        let pool = SlotPool::new(2);
        assert_eq!(pool.alloc(), Some(0));
        assert_eq!(pool.alloc(), Some(1));
        assert_eq!(pool.alloc(), None);
        pool.free(0);
        assert_eq!(pool.alloc(), Some(0));
    }

    #[test]
    fn clones_share_their_numbers() {
        let a = SlotPool::new(4);
        let b = a.clone();
        assert_eq!(a.alloc(), Some(0));
        assert_eq!(b.alloc(), Some(1));
        assert_eq!(a.in_use(), 2);
    }
}
