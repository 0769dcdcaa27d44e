//! [`RangeList`]: the sorted ranges of a flat view, stored in shared chunks.
//!
//! A commit that changes a few ranges of a large view must not copy the
//! whole view to publish it (readers hold the old one). Ranges live in
//! chunks of at most [`CHUNK`] behind `Arc`s, grouped into nodes of at
//! most 32 chunks whose index sits inline in one allocation. A splice
//! copies one chunk's worth of ranges, rebuilds the nodes it touches and
//! the short node list, and shares everything else with the previous
//! version; a lookup is three binary searches over few cache lines.

use std::sync::Arc;

use crate::flatview::FlatRange;

/// Most ranges a chunk holds.
pub const CHUNK: usize = 64;

/// Most chunks a node holds.
const FANOUT: usize = 32;

/// Up to [`CHUNK`] ranges, and their last addresses as a compact key
/// array: a binary search over 8-byte keys touches far fewer cache lines
/// than one over whole ranges.
#[derive(Clone)]
struct Chunk {
    lasts: Arc<[u64]>,
    ranges: Arc<[FlatRange]>,
}

impl Chunk {
    fn new(ranges: &[FlatRange]) -> Chunk {
        Chunk {
            lasts: ranges.iter().map(|r| r.last).collect(),
            ranges: Arc::from(ranges),
        }
    }

    fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Index of the first range whose last address is `>= addr`.
    #[inline]
    fn from(&self, addr: u64) -> usize {
        self.lasts.partition_point(|&l| l < addr)
    }
}

/// Splits `ranges` into chunks of at most [`CHUNK`] and appends them.
fn push_rechunked(chunks: &mut impl Extend<Chunk>, ranges: &[FlatRange]) {
    if ranges.is_empty() {
        return;
    }
    let n = ranges.len().div_ceil(CHUNK);
    let per = ranges.len().div_ceil(n);
    chunks.extend(ranges.chunks(per).map(Chunk::new));
}

/// Up to [`FANOUT`] chunks with their first addresses and range counts,
/// all in one allocation.
struct Node {
    count: usize,
    len: usize,
    firsts: [u64; FANOUT],
    before: [usize; FANOUT],
    chunks: [Option<Chunk>; FANOUT],
}

impl Node {
    /// A node of 1 to `FANOUT` non-empty chunks, moved in (cloning a
    /// chunk costs two atomic increments, dropping it two decrements).
    fn new(chunks: impl ExactSizeIterator<Item = Chunk>) -> Node {
        debug_assert!(chunks.len() > 0 && chunks.len() <= FANOUT);
        let mut node = Node {
            count: chunks.len(),
            len: 0,
            firsts: [0u64; FANOUT],
            before: [0usize; FANOUT],
            chunks: [const { None }; FANOUT],
        };
        for (k, c) in chunks.enumerate() {
            node.firsts[k] = c.ranges[0].start;
            node.before[k] = node.len;
            node.len += c.len();
            node.chunks[k] = Some(c);
        }
        node
    }

    #[inline]
    fn chunk(&self, k: usize) -> &Chunk {
        self.chunks[k]
            .as_ref()
            .expect("chunks below count are present")
    }

    fn chunk_list(&self) -> impl Iterator<Item = &Chunk> + '_ {
        self.chunks[..self.count]
            .iter()
            .map(|c| c.as_ref().expect("present"))
    }

    fn iter(&self) -> impl DoubleEndedIterator<Item = &FlatRange> + '_ {
        (0..self.count).flat_map(move |k| self.chunk(k).ranges.iter())
    }

    fn get(&self, i: usize) -> Option<&FlatRange> {
        if i >= self.len {
            return None;
        }
        let k = self.before[..self.count].partition_point(|&b| b <= i) - 1;
        self.chunk(k).ranges.get(i - self.before[k])
    }

    #[inline]
    fn lookup(&self, addr: u64) -> Option<&FlatRange> {
        let k = self.firsts[..self.count].partition_point(|&f| f <= addr);
        if k == 0 {
            return None;
        }
        let chunk = self.chunk(k - 1);
        chunk
            .ranges
            .get(chunk.from(addr))
            .filter(|r| r.start <= addr)
    }

    fn index_from(&self, addr: u64) -> usize {
        let k = self.firsts[..self.count]
            .partition_point(|&f| f <= addr)
            .saturating_sub(1);
        self.before[k] + self.chunk(k).from(addr)
    }

    fn index_to(&self, end: u128) -> usize {
        let k = self.firsts[..self.count]
            .partition_point(|&f| (f as u128) < end)
            .saturating_sub(1);
        self.before[k]
            + self
                .chunk(k)
                .ranges
                .partition_point(|r| (r.start as u128) < end)
    }

    fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Node>()
            + self
                .chunk_list()
                .map(|c| {
                    c.len() * (std::mem::size_of::<FlatRange>() + 8)
                        + 4 * std::mem::size_of::<usize>()
                })
                .sum::<usize>()
    }
}

/// Sorted, disjoint flat ranges in shared chunks, two levels deep: a
/// splice copies one chunk's worth of ranges and a few dozen handles, so
/// publishing a changed view costs the same at 1,000 ranges as at 100,000.
#[derive(Clone, Default)]
pub struct RangeList {
    nodes: Vec<Arc<Node>>,
    /// First address of each node.
    firsts: Vec<u64>,
    /// Number of ranges before each node.
    before: Vec<usize>,
    len: usize,
}

impl RangeList {
    /// Builds a list from sorted, disjoint ranges.
    pub fn from_vec(ranges: Vec<FlatRange>) -> RangeList {
        let mut chunks = Vec::new();
        push_rechunked(&mut chunks, &ranges);
        let mut list = RangeList::default();
        list.push_chunks(chunks);
        list
    }

    /// Appends `chunks`, grouped into nodes.
    fn push_chunks(&mut self, chunks: impl IntoIterator<Item = Chunk>) {
        let mut chunks = chunks.into_iter().peekable();
        while chunks.peek().is_some() {
            let group: smallvec::SmallVec<[Chunk; FANOUT]> = chunks.by_ref().take(FANOUT).collect();
            self.push_node(Arc::new(Node::new(group.into_iter())));
        }
    }

    fn push_node(&mut self, node: Arc<Node>) {
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
        self.get(0)
    }

    /// The last range.
    pub fn last(&self) -> Option<&FlatRange> {
        self.len.checked_sub(1).and_then(|i| self.get(i))
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
        let mut chunks: smallvec::SmallVec<[Chunk; FANOUT + 4]> = smallvec::SmallVec::new();
        let mut middle: Vec<FlatRange> = Vec::with_capacity(new.len() + 2 * CHUNK);
        let mut placed = false;
        let mut at = self.before[ni];
        for node in &self.nodes[ni..=nj] {
            for c in node.chunk_list() {
                let (lo, hi) = (at, at + c.len());
                at = hi;
                if hi <= i || (lo >= j && placed) {
                    chunks.push(c.clone());
                    continue;
                }
                // This chunk holds a boundary: keep its ranges outside i..j.
                let from = i.saturating_sub(lo).min(c.len());
                let to = j.saturating_sub(lo).min(c.len());
                middle.extend_from_slice(&c.ranges[..from]);
                if !placed && lo + from >= i {
                    middle.extend_from_slice(new);
                    placed = true;
                }
                middle.extend_from_slice(&c.ranges[to..]);
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
        let mut out = RangeList {
            nodes: Vec::with_capacity(self.nodes.len() + 1),
            firsts: Vec::with_capacity(self.nodes.len() + 1),
            before: Vec::with_capacity(self.nodes.len() + 1),
            len: 0,
        };
        for n in &self.nodes[..ni] {
            out.push_node(Arc::clone(n));
        }
        out.push_chunks(chunks);
        for n in &self.nodes[nj + 1..] {
            out.push_node(Arc::clone(n));
        }
        out
    }

    /// Bytes of heap this list uses (chunks and indexes).
    pub fn heap_bytes(&self) -> usize {
        let index = self.nodes.capacity() * std::mem::size_of::<Arc<Node>>()
            + self.firsts.capacity() * 8
            + self.before.capacity() * std::mem::size_of::<usize>();
        index + self.nodes.iter().map(|n| n.heap_bytes()).sum::<usize>()
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
    use proptest::prelude::*;

    fn fr(start: u64, last: u64) -> FlatRange {
        crate::flatview::test_range(start, last)
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
                .flat_map(|n| n.chunk_list().map(|c| c.ranges.clone()))
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
