//! [`RangeList`]: the sorted ranges of a flat view, stored in shared chunks.
//!
//! A commit that changes a few ranges of a large view must not copy the
//! whole view to publish it (readers hold the old one). Ranges live in
//! chunks of at most [`CHUNK`] behind `Arc`s, grouped into nodes of at
//! most 16 chunks whose index sits inline in one allocation. A splice
//! copies one chunk's worth of ranges, rebuilds the nodes it touches and
//! the short node list, and shares everything else with the previous
//! version; a lookup is three binary searches over few cache lines.

use std::sync::Arc;

use crate::flatview::FlatRange;

/// Most ranges a chunk holds.
pub const CHUNK: usize = 64;

/// Most chunks a node holds. Small enough that building a node (which a
/// splice does once) stays cheap: 32 made a BAR toggle on the 200-device
/// q35 dump about 8% slower, while lookups and large lists did not gain.
const FANOUT: usize = 16;

/// Up to [`CHUNK`] ranges, and their last addresses as a compact key
/// index (see [`Keys`]).
#[derive(Clone)]
struct Chunk {
    lasts: Keys,
    ranges: Arc<[FlatRange]>,
}

impl Chunk {
    fn new(ranges: &[FlatRange]) -> Chunk {
        Chunk {
            lasts: Keys::new(ranges),
            ranges: Arc::from(ranges),
        }
    }

    /// A chunk of `a`, `b` and `c` in turn (at most [`CHUNK`] in all).
    ///
    /// The parts are copied slice by slice straight into the shared
    /// allocation: collecting ranges one by one from an iterator goes
    /// through a stack temporary per range and stalls on store forwarding
    /// (a fifth of a BAR toggle), and staging them first costs a second
    /// copy of the chunk (a twentieth).
    fn joined(a: &[FlatRange], b: &[FlatRange], c: &[FlatRange]) -> Chunk {
        let n = a.len() + b.len() + c.len();
        debug_assert!(n <= CHUNK);
        let mut ranges = Arc::<[FlatRange]>::new_uninit_slice(n);
        let dst = Arc::get_mut(&mut ranges).expect("a new allocation is not shared");
        let (da, rest) = dst.split_at_mut(a.len());
        let (db, dc) = rest.split_at_mut(b.len());
        da.write_copy_of_slice(a);
        db.write_copy_of_slice(b);
        dc.write_copy_of_slice(c);
        Chunk {
            lasts: Keys::from_parts(&[a, b, c]),
            // SAFETY: the three copies above wrote all `n` elements.
            ranges: unsafe { ranges.assume_init() },
        }
    }

    #[inline]
    fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Index of the first range whose last address is `>= addr`.
    #[inline]
    fn from(&self, addr: u64) -> usize {
        self.lasts.first_not_below(addr).min(self.len())
    }
}

/// How many leading `keys` satisfy `pred`, which holds for a prefix of
/// them: a search of fixed shape (log2 N halvings and a final check),
/// unrolled, whose steps are conditional moves. A general binary search
/// also pays for its loop and bounds; one with branches is quick only
/// while the predictor can learn the sequence of addresses asked.
#[inline]
fn count_prefix<const N: usize>(keys: &[u64; N], pred: impl Fn(u64) -> bool) -> usize {
    const { assert!(N.is_power_of_two()) };
    let mut i = 0;
    let mut step = N / 2;
    while step > 0 {
        i = std::hint::select_unpredictable(pred(keys[i + step - 1]), i + step, i);
        step /= 2;
    }
    std::hint::select_unpredictable(pred(keys[i]), i + 1, i)
}

/// The last addresses of a chunk's ranges, padded to [`CHUNK`] with
/// `u64::MAX` (which no address is above, so padding is never counted),
/// for a search of fixed shape.
#[derive(Clone)]
struct Keys(Arc<[u64; CHUNK]>);

impl Keys {
    fn new(ranges: &[FlatRange]) -> Keys {
        Keys::from_parts(&[ranges])
    }

    /// The keys of at most [`CHUNK`] ranges, written in the shared
    /// allocation (filling an array on the stack and moving it there cost
    /// a copy of it per rebuilt chunk).
    /// Takes the ranges as consecutive parts: a loop per part, where one
    /// over chained iterators tested which part it was in at every key.
    fn from_parts(parts: &[&[FlatRange]]) -> Keys {
        let mut keys = Arc::new([u64::MAX; CHUNK]);
        let mut dst = &mut Arc::get_mut(&mut keys).expect("a new allocation is not shared")[..];
        for part in parts {
            let (now, rest) = dst.split_at_mut(part.len());
            for (k, r) in now.iter_mut().zip(*part) {
                *k = r.last;
            }
            dst = rest;
        }
        Keys(keys)
    }

    /// Index of the first key `>= addr` (the number of keys below it).
    #[inline]
    fn first_not_below(&self, addr: u64) -> usize {
        count_prefix(&self.0, |k| k < addr)
    }

    fn heap_bytes(&self) -> usize {
        2 * std::mem::size_of::<usize>() + std::mem::size_of::<[u64; CHUNK]>()
    }
}

/// Splits `ranges` into chunks of at most [`CHUNK`] and appends them.
fn push_rechunked(fill: &mut Filler, out: &mut RangeList, ranges: &[FlatRange]) {
    if ranges.is_empty() {
        return;
    }
    let n = ranges.len().div_ceil(CHUNK);
    let per = ranges.len().div_ceil(n);
    for part in ranges.chunks(per) {
        fill.push(out, Chunk::new(part));
    }
}

/// Builds nodes chunk by chunk in place and appends each to a list when it
/// is full (or at [`finish`](Self::finish)). The node under construction
/// is not shared yet, so it is filled through `Arc::get_mut` without
/// copying it.
#[derive(Default)]
struct Filler {
    node: Option<Arc<Node>>,
}

impl Filler {
    fn push(&mut self, out: &mut RangeList, c: Chunk) {
        let arc = self.node.get_or_insert_with(|| Arc::new(Node::empty()));
        let node = Arc::get_mut(arc).expect("a node being filled is not shared");
        let k = node.count;
        node.firsts[k] = c.ranges[0].start;
        node.before[k] = node.len;
        node.len += c.len();
        node.chunks[k] = Some(c);
        node.count += 1;
        if node.count == FANOUT {
            self.finish(out);
        }
    }

    fn finish(&mut self, out: &mut RangeList) {
        if let Some(node) = self.node.take() {
            out.push_node(node);
        }
    }
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
    /// A node without chunks, to be filled by a [`Filler`].
    fn empty() -> Node {
        Node {
            count: 0,
            len: 0,
            firsts: [u64::MAX; FANOUT],
            before: [0usize; FANOUT],
            chunks: [const { None }; FANOUT],
        }
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

    /// How many chunks start at or below `addr`. Unused slots hold
    /// `u64::MAX`, so only at that very address can they count.
    #[inline]
    fn chunks_from(&self, addr: u64) -> usize {
        count_prefix(&self.firsts, |f| f <= addr).min(self.count)
    }

    #[inline]
    fn lookup(&self, addr: u64) -> Option<&FlatRange> {
        let k = self.chunks_from(addr);
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
                    c.len() * std::mem::size_of::<FlatRange>()
                        + 2 * std::mem::size_of::<usize>()
                        + c.lasts.heap_bytes()
                })
                .sum::<usize>()
    }
}

/// Sorted, disjoint flat ranges in shared chunks, two levels deep: a
/// splice copies one chunk's worth of ranges and a few dozen handles, so
/// publishing a changed view costs the same at 1,000 ranges as at 100,000.
#[derive(Clone, Default)]
pub struct RangeList {
    /// The nodes in order, each with its first address and the number of
    /// ranges before it: one allocation per version of the list.
    nodes: Vec<Entry>,
    len: usize,
}

/// A node of a [`RangeList`] with what a search needs to pick it.
#[derive(Clone)]
struct Entry {
    first: u64,
    before: usize,
    node: Arc<Node>,
}

impl RangeList {
    /// Builds a list from sorted, disjoint ranges.
    pub fn from_vec(ranges: Vec<FlatRange>) -> RangeList {
        let mut list = RangeList::default();
        let mut fill = Filler::default();
        push_rechunked(&mut fill, &mut list, &ranges);
        fill.finish(&mut list);
        list
    }

    fn push_node(&mut self, node: Arc<Node>) {
        let len = node.len;
        self.nodes.push(Entry {
            first: node.firsts[0],
            before: self.len,
            node,
        });
        self.len += len;
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
        self.nodes.iter().flat_map(|e| e.node.iter())
    }

    fn node_of(&self, i: usize) -> usize {
        self.nodes
            .partition_point(|e| e.before <= i)
            .saturating_sub(1)
    }

    /// The `i`-th range.
    pub fn get(&self, i: usize) -> Option<&FlatRange> {
        if i >= self.len {
            return None;
        }
        let e = &self.nodes[self.node_of(i)];
        e.node.get(i - e.before)
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
        let n = self.nodes.partition_point(|e| e.first <= addr);
        self.nodes.get(n.checked_sub(1)?)?.node.lookup(addr)
    }

    /// Index of the first range whose last address is `>= addr`.
    pub fn index_from(&self, addr: u64) -> usize {
        let n = self
            .nodes
            .partition_point(|e| e.first <= addr)
            .saturating_sub(1);
        self.nodes
            .get(n)
            .map_or(0, |e| e.before + e.node.index_from(addr))
    }

    /// Index of the first range starting at or after `end` (an exclusive
    /// bound that may be 2^64).
    pub fn index_to(&self, end: u128) -> usize {
        let n = self
            .nodes
            .partition_point(|e| (e.first as u128) < end)
            .saturating_sub(1);
        self.nodes
            .get(n)
            .map_or(0, |e| e.before + e.node.index_to(end))
    }

    /// The ranges `i..j`, copied.
    pub fn slice(&self, i: usize, j: usize) -> Vec<FlatRange> {
        let j = j.min(self.len);
        let mut out = Vec::with_capacity(j.saturating_sub(i));
        if i >= j {
            return out;
        }
        // Whole sub-slices of chunks, copied in bulk.
        let mut at = self.nodes[self.node_of(i)].before;
        for e in &self.nodes[self.node_of(i)..] {
            for c in e.node.chunk_list() {
                let (lo, hi) = (at, at + c.len());
                at = hi;
                if hi <= i {
                    continue;
                }
                if lo >= j {
                    return out;
                }
                out.extend_from_slice(&c.ranges[i.max(lo) - lo..j.min(hi) - lo]);
            }
        }
        out
    }

    /// A new list with ranges `i..j` replaced by `new`; untouched nodes and
    /// chunks are shared with `self`.
    pub fn splice(&self, i: usize, j: usize, new: &[FlatRange]) -> RangeList {
        if self.nodes.is_empty() {
            return RangeList::from_vec(new.to_vec());
        }
        let ni = self.node_of(i.min(self.len.saturating_sub(1)));
        let nj = if j > i { self.node_of(j - 1) } else { ni }.max(ni);
        let mut out = RangeList {
            nodes: Vec::with_capacity(self.nodes.len() + 1),
            len: 0,
        };
        out.nodes.extend_from_slice(&self.nodes[..ni]);
        out.len = self.nodes[ni].before;
        // Walk the chunks of the affected nodes once: those wholly before
        // `i` or wholly after `j` are shared, the rest are rebuilt from
        // their surviving ranges and `new`.
        let mut fill = Filler::default();
        let mut middle: Vec<FlatRange> = Vec::new();
        let mut placed = false;
        let mut at = self.nodes[ni].before;
        for e in &self.nodes[ni..=nj] {
            for c in e.node.chunk_list() {
                let (lo, hi) = (at, at + c.len());
                at = hi;
                if hi <= i || (lo >= j && placed) {
                    fill.push(&mut out, c.clone());
                    continue;
                }
                // This chunk holds a boundary: keep its ranges outside i..j.
                let from = i.saturating_sub(lo).min(c.len());
                let to = j.saturating_sub(lo).min(c.len());
                let places = !placed && lo + from >= i;
                let (head, tail) = (&c.ranges[..from], &c.ranges[to..]);
                let inserted: &[FlatRange] = if places { new } else { &[] };
                placed |= places;
                let total = middle.len() + head.len() + inserted.len() + tail.len();
                if placed && middle.is_empty() && (1..=CHUNK).contains(&total) {
                    // The usual case, one chunk rebuilt: no staging copy.
                    fill.push(&mut out, Chunk::joined(head, inserted, tail));
                    continue;
                }
                middle.extend_from_slice(head);
                middle.extend_from_slice(inserted);
                middle.extend_from_slice(tail);
                if placed {
                    push_rechunked(&mut fill, &mut out, &middle);
                    middle.clear();
                }
            }
        }
        if !placed {
            middle.extend_from_slice(new);
        }
        push_rechunked(&mut fill, &mut out, &middle);
        fill.finish(&mut out);
        for e in &self.nodes[nj + 1..] {
            out.push_node(Arc::clone(&e.node));
        }
        out
    }

    /// Bytes of heap this list uses (chunks and indexes).
    pub fn heap_bytes(&self) -> usize {
        let index = self.nodes.capacity() * std::mem::size_of::<Entry>();
        index
            + self
                .nodes
                .iter()
                .map(|e| e.node.heap_bytes())
                .sum::<usize>()
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
                .flat_map(|e| e.node.chunk_list().map(|c| c.ranges.clone()))
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

    #[test]
    fn lookups_at_the_top_of_the_address_space() {
        // A range ending at 2^64 - 1: its last equals the keys' padding
        // and the node's unused slots, and must still be found.
        let l = RangeList::from_vec(vec![fr(0, 0xff), fr(u64::MAX - 0xff, u64::MAX)]);
        assert_eq!(l.lookup(u64::MAX).map(|r| r.start), Some(u64::MAX - 0xff));
        assert_eq!(l.index_from(u64::MAX), 1);
        assert_eq!(l.lookup(u64::MAX - 0x100), None);
        assert_eq!(l.index_from(u64::MAX - 0x100), 1);
        let empty = RangeList::from_vec(vec![fr(0, 0xff)]);
        assert_eq!(empty.lookup(u64::MAX), None);
        assert_eq!(empty.index_from(u64::MAX), 1);
    }

    proptest! {
        #[test]
        fn fixed_shape_search_equals_partition_point(
            mut keys in proptest::collection::vec(any::<u64>(), 0..=CHUNK),
            probes in proptest::collection::vec(any::<u64>(), 1..16),
        ) {
            keys.sort_unstable();
            keys.dedup();
            let ranges: Vec<FlatRange> = keys.iter().map(|&k| fr(k, k)).collect();
            let chunk = Chunk::new(&ranges);
            let edges = [0, 1, u64::MAX - 1, u64::MAX];
            for addr in probes.into_iter().chain(keys.iter().flat_map(|&k| [k, k.wrapping_add(1)])).chain(edges) {
                prop_assert_eq!(chunk.from(addr), keys.partition_point(|&k| k < addr), "addr {:#x}", addr);
            }
        }
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
            let cut = i.min(want.len());
            prop_assert_eq!(got.slice(0, cut), want[..cut].to_vec());
            prop_assert_eq!(got.slice(cut, want.len() + 3), want[cut..].to_vec());
            prop_assert_eq!(got.slice(cut, cut + del.min(want.len() - cut)), want[cut..cut + del.min(want.len() - cut)].to_vec());
            for (k, r) in want.iter().enumerate() {
                prop_assert_eq!(got.get(k), Some(r));
                prop_assert_eq!(got.lookup(r.start), Some(r));
                prop_assert_eq!(got.index_from(r.start), k);
                prop_assert_eq!(got.index_to(r.start as u128), k);
            }
        }
    }
}
