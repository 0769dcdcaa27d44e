//! [`RangeList`]: the sorted ranges of a flat view, stored in shared chunks.
//!
//! A commit that changes a few ranges of a large view must not copy the
//! whole view to publish it (readers hold the old one). Ranges live in
//! chunks of at most [`CHUNK`] behind `Arc`s; a splice copies only the
//! chunks it touches and the small chunk index, and shares the rest with
//! the previous version.

use std::sync::Arc;

use crate::flatview::FlatRange;

/// Most ranges a chunk holds.
pub const CHUNK: usize = 64;

/// Splits `ranges` into chunks of at most [`CHUNK`] and appends them.
fn push_rechunked(chunks: &mut Vec<Arc<[FlatRange]>>, ranges: &[FlatRange]) {
    if ranges.is_empty() {
        return;
    }
    let n = ranges.len().div_ceil(CHUNK);
    let per = ranges.len().div_ceil(n);
    chunks.extend(ranges.chunks(per).map(Arc::from));
}

/// Most chunks a node of the upper level holds.
const FANOUT: usize = 32;

/// Sorted, disjoint flat ranges in shared chunks, two levels deep: a
/// splice copies one chunk's worth of ranges and a few dozen handles, so
/// publishing a changed view costs the same at 1,000 ranges as at 100,000.
#[derive(Clone, Default)]
pub struct RangeList {
    nodes: Vec<Arc<Leaves>>,
    /// First address of each node.
    firsts: Vec<u64>,
    /// Number of ranges before each node.
    before: Vec<usize>,
    len: usize,
}

impl RangeList {
    /// Builds a list from sorted, disjoint ranges.
    pub fn from_vec(ranges: Vec<FlatRange>) -> RangeList {
        let mut list = RangeList::default();
        list.push_leaves(Leaves::from_vec(ranges));
        list
    }

    /// Appends the chunks of `leaves`, grouped into nodes.
    fn push_leaves(&mut self, leaves: Leaves) {
        for group in leaves.chunks.chunks(FANOUT) {
            self.push_node(Arc::new(Leaves::from_chunks(group)));
        }
    }

    fn push_node(&mut self, node: Arc<Leaves>) {
        if node.len == 0 {
            return;
        }
        self.firsts.push(node.firsts[0]);
        self.before.push(self.len);
        self.len += node.len;
        self.nodes.push(node);
    }

    /// Number of ranges.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if there are no ranges.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The ranges in address order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &FlatRange> + '_ {
        self.nodes.iter().flat_map(|n| n.iter())
    }

    fn node_of(&self, i: usize) -> usize {
        self.before.partition_point(|&b| b <= i).saturating_sub(1)
    }

    /// The `i`-th range.
    pub fn get(&self, i: usize) -> Option<&FlatRange> {
        if i >= self.len {
            return None;
        }
        let n = self.node_of(i);
        self.nodes[n].get(i - self.before[n])
    }

    /// The first range.
    pub fn first(&self) -> Option<&FlatRange> {
        self.nodes.first().and_then(|n| n.first())
    }

    /// The last range.
    pub fn last(&self) -> Option<&FlatRange> {
        self.nodes.last().and_then(|n| n.last())
    }

    /// The range containing `addr`, if any.
    #[inline]
    pub fn lookup(&self, addr: u64) -> Option<&FlatRange> {
        let n = self.firsts.partition_point(|&f| f <= addr);
        if n == 0 {
            return None;
        }
        self.nodes[n - 1].lookup(addr)
    }

    /// Index of the first range whose last address is `>= addr`.
    pub fn index_from(&self, addr: u64) -> usize {
        let n = self
            .firsts
            .partition_point(|&f| f <= addr)
            .saturating_sub(1);
        match self.nodes.get(n) {
            Some(node) => self.before[n] + node.index_from(addr),
            None => 0,
        }
    }

    /// Index of the first range starting at or after `end` (an exclusive
    /// bound that may be 2^64).
    pub fn index_to(&self, end: u128) -> usize {
        let n = self
            .firsts
            .partition_point(|&f| (f as u128) < end)
            .saturating_sub(1);
        match self.nodes.get(n) {
            Some(node) => self.before[n] + node.index_to(end),
            None => 0,
        }
    }

    /// The ranges `i..j`, copied.
    pub fn slice(&self, i: usize, j: usize) -> Vec<FlatRange> {
        (i..j).filter_map(|k| self.get(k).copied()).collect()
    }

    /// A new list with ranges `i..j` replaced by `new`; untouched nodes and
    /// chunks are shared with `self`.
    pub fn splice(&self, i: usize, j: usize, new: &[FlatRange]) -> RangeList {
        if self.nodes.is_empty() {
            return RangeList::from_vec(new.to_vec());
        }
        let ni = self.node_of(i.min(self.len.saturating_sub(1)));
        let nj = if j > i { self.node_of(j - 1) } else { ni }.max(ni);
        // Walk the chunks of the affected nodes once: those wholly before
        // `i` or wholly after `j` are shared, the rest are rebuilt from
        // their surviving ranges and `new`.
        let mut chunks: Vec<Arc<[FlatRange]>> = Vec::with_capacity((nj - ni + 1) * FANOUT + 2);
        let mut middle: Vec<FlatRange> = Vec::with_capacity(new.len() + 2 * CHUNK);
        let mut placed = false;
        let mut at = self.before[ni];
        for node in &self.nodes[ni..=nj] {
            for c in &node.chunks {
                let (lo, hi) = (at, at + c.len());
                at = hi;
                if hi <= i || (lo >= j && placed) {
                    chunks.push(Arc::clone(c));
                    continue;
                }
                // This chunk holds a boundary: keep its ranges outside i..j.
                let from = i.saturating_sub(lo).min(c.len());
                let to = j.saturating_sub(lo).min(c.len());
                middle.extend_from_slice(&c[..from]);
                if !placed && lo + from >= i {
                    middle.extend_from_slice(new);
                    placed = true;
                }
                middle.extend_from_slice(&c[to..]);
                if placed {
                    push_rechunked(&mut chunks, &middle);
                    middle.clear();
                }
            }
        }
        if !placed {
            middle.extend_from_slice(new);
        }
        push_rechunked(&mut chunks, &middle);
        let mut out = RangeList::default();
        for n in &self.nodes[..ni] {
            out.push_node(Arc::clone(n));
        }
        for group in chunks.chunks(FANOUT) {
            out.push_node(Arc::new(Leaves::from_chunks(group)));
        }
        for n in &self.nodes[nj + 1..] {
            out.push_node(Arc::clone(n));
        }
        out
    }

    /// Bytes of heap this list uses (chunks and indexes).
    pub fn heap_bytes(&self) -> usize {
        let index = self.nodes.capacity() * std::mem::size_of::<Arc<Leaves>>()
            + self.firsts.capacity() * 8
            + self.before.capacity() * std::mem::size_of::<usize>();
        index
            + self
                .nodes
                .iter()
                .map(|n| n.heap_bytes() + std::mem::size_of::<Leaves>())
                .sum::<usize>()
    }
}

/// One level of chunks: sorted, disjoint ranges in shared chunks.
#[derive(Clone, Default)]
struct Leaves {
    chunks: Vec<Arc<[FlatRange]>>,
    /// First address of each chunk.
    firsts: Vec<u64>,
    /// Number of ranges before each chunk.
    before: Vec<usize>,
    len: usize,
}

impl Leaves {
    /// Builds a list from sorted, disjoint ranges.
    fn from_vec(ranges: Vec<FlatRange>) -> Leaves {
        let mut list = Leaves::default();
        list.push_chunks(&ranges);
        list
    }

    fn push_chunks(&mut self, ranges: &[FlatRange]) {
        if ranges.is_empty() {
            return;
        }
        let n = ranges.len().div_ceil(CHUNK);
        let per = ranges.len().div_ceil(n);
        for part in ranges.chunks(per) {
            self.push_chunk(Arc::from(part));
        }
    }

    fn from_chunks(chunks: &[Arc<[FlatRange]>]) -> Leaves {
        let mut l = Leaves::default();
        for c in chunks {
            l.push_chunk(Arc::clone(c));
        }
        l
    }

    fn push_chunk(&mut self, chunk: Arc<[FlatRange]>) {
        self.firsts.push(chunk[0].start);
        self.before.push(self.len);
        self.len += chunk.len();
        self.chunks.push(chunk);
    }

    /// The ranges in address order.
    fn iter(&self) -> impl DoubleEndedIterator<Item = &FlatRange> + '_ {
        self.chunks.iter().flat_map(|c| c.iter())
    }

    /// The `i`-th range.
    fn get(&self, i: usize) -> Option<&FlatRange> {
        if i >= self.len {
            return None;
        }
        let c = self.before.partition_point(|&b| b <= i) - 1;
        self.chunks[c].get(i - self.before[c])
    }

    /// The first range.
    fn first(&self) -> Option<&FlatRange> {
        self.chunks.first().map(|c| &c[0])
    }

    /// The last range.
    fn last(&self) -> Option<&FlatRange> {
        self.chunks.last().and_then(|c| c.last())
    }

    /// The range containing `addr`, if any.
    #[inline]
    fn lookup(&self, addr: u64) -> Option<&FlatRange> {
        let c = self.firsts.partition_point(|&f| f <= addr);
        if c == 0 {
            return None;
        }
        let chunk = &self.chunks[c - 1];
        let i = chunk.partition_point(|r| r.last < addr);
        chunk.get(i).filter(|r| r.start <= addr)
    }

    /// Index of the first range whose last address is `>= addr`.
    fn index_from(&self, addr: u64) -> usize {
        let c = self
            .firsts
            .partition_point(|&f| f <= addr)
            .saturating_sub(1);
        match self.chunks.get(c) {
            Some(chunk) => self.before[c] + chunk.partition_point(|r| r.last < addr),
            None => 0,
        }
    }

    /// Index of the first range starting at or after `end` (an exclusive
    /// bound that may be 2^64).
    fn index_to(&self, end: u128) -> usize {
        let c = self
            .firsts
            .partition_point(|&f| (f as u128) < end)
            .saturating_sub(1);
        match self.chunks.get(c) {
            Some(chunk) => self.before[c] + chunk.partition_point(|r| (r.start as u128) < end),
            None => 0,
        }
    }

    /// Bytes of heap this list uses (chunks and index).
    fn heap_bytes(&self) -> usize {
        let index = self.chunks.capacity() * std::mem::size_of::<Arc<[FlatRange]>>()
            + self.firsts.capacity() * 8
            + self.before.capacity() * std::mem::size_of::<usize>();
        let chunks: usize = self
            .chunks
            .iter()
            .map(|c| c.len() * std::mem::size_of::<FlatRange>() + 2 * std::mem::size_of::<usize>())
            .sum();
        index + chunks
    }
}

impl PartialEq for RangeList {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}
impl Eq for RangeList {}

impl std::fmt::Debug for RangeList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl std::ops::Index<usize> for RangeList {
    type Output = FlatRange;
    fn index(&self, i: usize) -> &FlatRange {
        self.get(i).expect("range index out of bounds")
    }
}

impl<'a> IntoIterator for &'a RangeList {
    type Item = &'a FlatRange;
    type IntoIter = Box<dyn DoubleEndedIterator<Item = &'a FlatRange> + 'a>;
    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

impl FromIterator<FlatRange> for RangeList {
    fn from_iter<I: IntoIterator<Item = FlatRange>>(iter: I) -> Self {
        RangeList::from_vec(iter.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{RawId, RegionId};
    use crate::region::DirtyLogMask;
    use proptest::prelude::*;

    fn fr(start: u64, last: u64) -> FlatRange {
        FlatRange {
            start,
            last,
            region: RegionId(RawId {
                space: 0,
                index: 0,
                generation: 0,
            }),
            offset_in_region: 0,
            readonly: false,
            nonvolatile: false,
            unmergeable: false,
            romd_mode: false,
            dirty_log_mask: DirtyLogMask::EMPTY,
        }
    }

    #[test]
    fn large_list_splits_into_nodes_and_survives_many_splices() {
        let mut l = RangeList::from_vec(list(20_000));
        assert!(l.nodes.len() > 1);
        for k in (0..20_000u64).step_by(997) {
            let i = k as usize;
            l = l.splice(i, i + 1, &[fr(k * 0x10, k * 0x10 + 3)]);
        }
        assert_eq!(l.len(), 20_000);
        assert_eq!(
            l.lookup(997 * 0x10 + 3).map(|r| r.last),
            Some(997 * 0x10 + 3)
        );
        assert_eq!(l.lookup(997 * 0x10 + 4), None);
        assert!(l
            .iter()
            .zip(l.iter().skip(1))
            .all(|(a, b)| a.last < b.start));
    }

    fn list(n: u64) -> Vec<FlatRange> {
        (0..n).map(|i| fr(i * 0x10, i * 0x10 + 7)).collect()
    }

    #[test]
    fn lookup_across_chunks_finds_ranges_and_gaps() {
        let l = RangeList::from_vec(list(1000));
        assert_eq!(l.lookup(0x10 * 700 + 3).map(|r| r.start), Some(0x10 * 700));
        assert_eq!(l.lookup(0x10 * 700 + 8), None);
        assert_eq!(l.lookup(u64::MAX), None);
        assert_eq!(l.len(), 1000);
    }

    #[test]
    fn splice_shares_untouched_chunks() {
        let l = RangeList::from_vec(list(1000));
        let m = l.splice(500, 501, &[fr(500 * 0x10, 500 * 0x10 + 1)]);
        let chunks = |l: &RangeList| -> Vec<Arc<[FlatRange]>> {
            l.nodes
                .iter()
                .flat_map(|n| n.chunks.iter().cloned())
                .collect()
        };
        let (lc, mc) = (chunks(&l), chunks(&m));
        let shared = lc
            .iter()
            .filter(|c| mc.iter().any(|d| Arc::ptr_eq(c, d)))
            .count();
        assert!(shared >= lc.len() - 1);
        assert_eq!(m.get(500).unwrap().last, 500 * 0x10 + 1);
        assert_eq!(m.len(), 1000);
    }

    proptest! {
        #[test]
        fn splice_equals_vec_splice(n in 0u64..5000, i in 0usize..5000, del in 0usize..40, ins in 0usize..40) {
            let base = list(n);
            let i = i.min(base.len());
            let j = (i + del).min(base.len());
            // Replacement ranges that fit between base[i-1] and base[j].
            let lo = if i == 0 { 0 } else { base[i - 1].last + 1 };
            let new: Vec<FlatRange> = (0..ins as u64)
                .map(|k| lo + k * 2)
                .filter(|&s| j == base.len() || s + 1 < base[j].start)
                .map(|s| fr(s, s))
                .collect();
            let mut want = base.clone();
            want.splice(i..j, new.iter().copied());
            let got = RangeList::from_vec(base).splice(i, j, &new);
            prop_assert_eq!(got.iter().copied().collect::<Vec<_>>(), want.clone());
            for (k, r) in want.iter().enumerate() {
                prop_assert_eq!(got.get(k), Some(r));
                prop_assert_eq!(got.lookup(r.start), Some(r));
                prop_assert_eq!(got.index_from(r.start), k);
                prop_assert_eq!(got.index_to(r.start as u128), k);
            }
        }
    }
}
