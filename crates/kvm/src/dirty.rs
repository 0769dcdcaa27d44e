//! Dirty pages reported by KVM, per region.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

use addrspace_core::RegionId;
use parking_lot::Mutex;

/// The pages the guest wrote while dirty logging was on, as collected by
/// [`Memory::log_sync`](addrspace_core::Memory::log_sync) (and by the
/// listener itself just before it deletes a logged slot or stops logging
/// on it, so nothing KVM recorded is lost).
///
/// Pages are named by their byte offset in the region (a multiple of the
/// host page size, since backings are page-aligned). A handle is cheap to
/// clone; the listener and the VMM share one.
#[derive(Clone, Default)]
pub struct DirtyPages(Arc<Mutex<HashMap<RegionId, BTreeSet<u64>>>>);

impl DirtyPages {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Offsets in `region` of the dirty pages, ascending.
    pub fn dirty_pages(&self, region: RegionId) -> Vec<u64> {
        self.0
            .lock()
            .get(&region)
            .map(|pages| pages.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Whether the page holding `offset` of `region` is dirty, given the
    /// page size.
    pub fn is_dirty(&self, region: RegionId, offset: u64, page_size: u64) -> bool {
        self.0
            .lock()
            .get(&region)
            .is_some_and(|pages| pages.contains(&(offset / page_size * page_size)))
    }

    /// Returns the dirty pages of `region` and forgets them.
    pub fn take(&self, region: RegionId) -> Vec<u64> {
        self.0
            .lock()
            .remove(&region)
            .map(|pages| pages.into_iter().collect())
            .unwrap_or_default()
    }

    /// Forgets the dirty pages of `region`.
    pub fn clear(&self, region: RegionId) {
        self.0.lock().remove(&region);
    }

    /// Forgets every dirty page.
    pub fn clear_all(&self) {
        self.0.lock().clear();
    }

    /// Marks the pages whose bits are set in a KVM dirty bitmap: bit `i`
    /// stands for the page at `base + i * page_size` of `region`.
    pub(crate) fn mark_bitmap(&self, region: RegionId, base: u64, page_size: u64, bitmap: &[u64]) {
        let mut set = None;
        for (word_index, &word) in bitmap.iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                let bit = bits.trailing_zeros() as u64;
                bits &= bits - 1;
                let page = word_index as u64 * 64 + bit;
                set.get_or_insert_with(Vec::new)
                    .push(base + page * page_size);
            }
        }
        if let Some(pages) = set {
            self.0.lock().entry(region).or_default().extend(pages);
        }
    }
}

impl fmt::Debug for DirtyPages {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let map = self.0.lock();
        f.debug_map()
            .entries(map.iter().map(|(r, p)| (r, p.len())))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use addrspace_core::Memory;

    use super::*;

    fn region() -> RegionId {
        Memory::new().create_container("r", 1).unwrap()
    }

    #[test]
    fn bitmap_bits_become_page_offsets_from_the_slot_base() {
        let r = region();
        let dirty = DirtyPages::new();
        // Bits 0 and 3 of word 0, bit 1 of word 1 (page 65).
        dirty.mark_bitmap(r, 0x10000, 0x1000, &[0b1001, 0b10]);
        assert_eq!(
            dirty.dirty_pages(r),
            vec![0x10000, 0x13000, 0x10000 + 65 * 0x1000]
        );
        assert!(dirty.is_dirty(r, 0x13fff, 0x1000));
        assert!(!dirty.is_dirty(r, 0x12000, 0x1000));
    }

    #[test]
    fn syncs_accumulate_until_taken() {
        let r = region();
        let dirty = DirtyPages::new();
        dirty.mark_bitmap(r, 0, 0x1000, &[0b1]);
        dirty.mark_bitmap(r, 0, 0x1000, &[0b11]);
        assert_eq!(dirty.take(r), vec![0, 0x1000]);
        assert!(dirty.dirty_pages(r).is_empty());
    }

    #[test]
    fn clear_forgets_one_region_only() {
        let (a, b) = (region(), region());
        let dirty = DirtyPages::new();
        dirty.mark_bitmap(a, 0, 0x1000, &[1]);
        dirty.mark_bitmap(b, 0, 0x1000, &[1]);
        dirty.clear(a);
        assert!(dirty.dirty_pages(a).is_empty());
        assert_eq!(dirty.dirty_pages(b), vec![0]);
    }
}
