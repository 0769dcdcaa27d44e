//! [`RangeList`]: the sorted ranges of a flat view, stored in shared chunks.
//!
//! A commit that changes a few ranges of a large view must not copy the
//! whole view to publish it (readers hold the old one). Ranges live in
//! chunks of at most [`CHUNK`] behind `Arc`s, grouped into nodes of at
//! most 16 chunks whose index sits inline in one allocation. A splice
//! copies one chunk's worth of ranges, rebuilds the nodes it touches and
//! the short node list, and shares everything else with the previous
//! version.
//!
//! A lookup picks a node, a chunk in it and a range in that, each by a
//! search of fixed shape over separators (see [`pick`]), and then checks
//! the one range it landed on: 14 conditional-move steps for 10,000
//! ranges, as many as a plain binary search over a contiguous array.

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

/// Which of `N` candidates a search of fixed shape picks: how many of
/// `keys[..N - 1]` satisfy `pred`, which holds for a prefix of them
/// (`keys[N - 1]` is never read). It takes log2 N steps, unrolled, each a
/// load and a conditional move. A general binary search also pays for its
/// loop and bounds; one with branches is quick only while the predictor
/// can learn the sequence of addresses asked.
///
/// Lookups search separators this way (N children need N - 1 of them,
/// one step fewer than counting N keys) and check the range they land on.
#[inline(always)]
fn pick<const N: usize>(keys: &[u64; N], pred: impl Fn(u64) -> bool) -> usize {
    const { assert!(N.is_power_of_two()) };
    let mut i = 0;
    let mut step = N / 2;
    while step > 0 {
        i = std::hint::select_unpredictable(pred(keys[i + step - 1]), i + step, i);
        step /= 2;
    }
    i
}

/// How many of `keys` satisfy `pred`, which holds for a prefix of them:
/// [`pick`] and a last step for the last key.
#[inline]
fn count_prefix<const N: usize>(keys: &[u64; N], pred: impl Fn(u64) -> bool) -> usize {
    let i = pick(keys, &pred);
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
        let first = c.ranges[0].start;
        if k == 0 {
            node.first = first;
        } else {
            node.bounds[k - 1] = bound_before(first);
        }
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

/// The separator a search compares with to tell a child that starts at
/// `first` from the one before it: the last address before it (`first`
/// is never 0 here, as some range comes before it).
fn bound_before(first: u64) -> u64 {
    debug_assert!(first > 0, "only the first child can start at 0");
    first - 1
}

/// Up to [`FANOUT`] chunks with their separators and range counts, all in
/// one allocation.
struct Node {
    count: usize,
    len: usize,
    /// The first address of the first chunk.
    first: u64,
    /// `bounds[k]` is the last address before chunk `k + 1`; `u64::MAX`
    /// from `count - 1` on, which no address is below, so a [`pick`] with
    /// `b < addr` never lands past the last chunk.
    bounds: [u64; FANOUT],
    before: [usize; FANOUT],
    chunks: [Option<Chunk>; FANOUT],
}

impl Node {
    /// A node without chunks, to be filled by a [`Filler`].
    fn empty() -> Node {
        Node {
            count: 0,
            len: 0,
            first: u64::MAX,
            bounds: [u64::MAX; FANOUT],
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

    /// The range containing `addr`, if this node has it: the only chunk
    /// that can hold `addr`, the only range there that can, and a check of
    /// that range (which also answers for addresses below the node, past
    /// the chunk's last range, or in a gap).
    #[inline(always)]
    fn lookup(&self, addr: u64) -> Option<&FlatRange> {
        let chunk = self.chunk(pick(&self.bounds, |b| b < addr));
        chunk
            .ranges
            .get(pick(&chunk.lasts.0, |l| l < addr))
            .filter(|r| r.start <= addr && addr <= r.last)
    }

    /// The chunk whose first address is the last at or below `addr` (the
    /// first chunk if none is).
    fn chunk_of(&self, addr: u64) -> usize {
        self.bounds[..self.count - 1].partition_point(|&b| b < addr)
    }

    fn index_from(&self, addr: u64) -> usize {
        let k = self.chunk_of(addr);
        self.before[k] + self.chunk(k).from(addr)
    }

    fn index_to(&self, end: u128) -> usize {
        let k = self.bounds[..self.count - 1].partition_point(|&b| (b as u128) + 1 < end);
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
    /// `bounds[j]` is the last address before node `j + 1`, padded with
    /// `u64::MAX` so that a lookup picks the node with a search of fixed
    /// shape (see [`node_of_addr`]).
    bounds: Vec<u64>,
    /// The nodes in order, each with the number of ranges before it.
    nodes: Vec<Entry>,
    len: usize,
}

/// A node of a [`RangeList`] with the number of ranges before it.
#[derive(Clone)]
struct Entry {
    before: usize,
    node: Arc<Node>,
}

/// The node that can hold `addr`, from [`RangeList::bounds`]. The sizes
/// it is padded to each get a search of fixed shape, told apart by tests
/// of the length that every lookup in a list takes the same way; a general
/// binary search (a loop) and a jump table over many sizes each cost a
/// tenth of a random lookup over 10,000 ranges.
#[inline(always)]
fn node_of_addr(bounds: &[u64], addr: u64) -> usize {
    if let Some(top) = bounds.first_chunk::<TOP_SMALL>() {
        if bounds.len() == TOP_SMALL {
            return pick(top, |b| b < addr);
        }
    }
    if bounds.is_empty() {
        return 0;
    }
    node_of_addr_large(bounds, addr)
}

/// [`node_of_addr`] for lists of more than [`TOP_SMALL`] nodes.
#[inline(never)]
fn node_of_addr_large(bounds: &[u64], addr: u64) -> usize {
    match bounds.first_chunk::<TOP_LARGE>() {
        Some(top) if bounds.len() == TOP_LARGE => pick(top, |b| b < addr),
        _ => bounds.partition_point(|&b| b < addr),
    }
}

/// What [`RangeList::bounds`] is padded to when a list has more than one
/// node and at most this many: up to 16,384 ranges.
const TOP_SMALL: usize = 16;
/// The same for lists of up to this many nodes: up to 262,144 ranges.
const TOP_LARGE: usize = 256;

impl RangeList {
    /// Builds a list from sorted, disjoint ranges.
    pub fn from_vec(ranges: Vec<FlatRange>) -> RangeList {
        let mut list = RangeList::default();
        let mut fill = Filler::default();
        push_rechunked(&mut fill, &mut list, &ranges);
        fill.finish(&mut list);
        list.seal();
        list
    }

    fn push_node(&mut self, node: Arc<Node>) {
        let len = node.len;
        if !self.nodes.is_empty() {
            self.bounds.push(bound_before(node.first));
        }
        self.nodes.push(Entry {
            before: self.len,
            node,
        });
        self.len += len;
    }

    /// Pads [`bounds`](Self::bounds) once every node is pushed: to
    /// [`TOP_SMALL`] or [`TOP_LARGE`] entries when there are any and they
    /// fit with a slot to spare (see [`node_of_addr`]).
    fn seal(&mut self) {
        let n = self.nodes.len().saturating_sub(1);
        let to = match n {
            0 => 0,
            _ if n < TOP_SMALL => TOP_SMALL,
            _ if n < TOP_LARGE => TOP_LARGE,
            _ => n,
        };
        self.bounds.resize(to, u64::MAX);
    }

    /// The real separators, without padding.
    fn node_bounds(&self) -> &[u64] {
        &self.bounds[..self.nodes.len().saturating_sub(1)]
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
    #[inline(always)]
    pub fn lookup(&self, addr: u64) -> Option<&FlatRange> {
        self.nodes
            .get(node_of_addr(&self.bounds, addr))?
            .node
            .lookup(addr)
    }

    /// Index of the first range whose last address is `>= addr`.
    pub fn index_from(&self, addr: u64) -> usize {
        let n = self.node_bounds().partition_point(|&b| b < addr);
        self.nodes
            .get(n)
            .map_or(0, |e| e.before + e.node.index_from(addr))
    }

    /// Index of the first range starting at or after `end` (an exclusive
    /// bound that may be 2^64).
    pub fn index_to(&self, end: u128) -> usize {
        let n = self
            .node_bounds()
            .partition_point(|&b| (b as u128) + 1 < end);
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
            // As many separators as before, padding included: none for a
            // list of one node (most views), so splicing one allocates
            // nothing here.
            bounds: Vec::with_capacity(self.bounds.len()),
            nodes: Vec::with_capacity(self.nodes.len() + 1),
            len: 0,
        };
        out.bounds
            .extend_from_slice(&self.bounds[..ni.saturating_sub(1)]);
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
        out.seal();
        out
    }

    /// Bytes of heap this list uses (chunks and indexes).
    pub fn heap_bytes(&self) -> usize {
        let index = self.nodes.capacity() * std::mem::size_of::<Entry>()
            + self.bounds.capacity() * std::mem::size_of::<u64>();
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

    /// The range holding `addr` in sorted, disjoint `ranges`, found by a
    /// plain binary search over their starts.
    fn scan(ranges: &[FlatRange], addr: u64) -> Option<&FlatRange> {
        let i = ranges.partition_point(|r| r.start <= addr);
        ranges[..i].last().filter(|r| addr <= r.last)
    }

    /// Checks `lookup` against [`scan`] at every range's edges, just
    /// outside them and at the ends of the address space.
    fn assert_lookups(l: &RangeList, ranges: &[FlatRange]) {
        let edges = [0, 1, u64::MAX - 1, u64::MAX];
        for r in ranges {
            for a in [
                r.start,
                r.last,
                r.start.wrapping_sub(1),
                r.last.wrapping_add(1),
            ] {
                assert_eq!(l.lookup(a), scan(ranges, a), "addr {a:#x}");
            }
        }
        for a in edges {
            assert_eq!(l.lookup(a), scan(ranges, a), "addr {a:#x}");
        }
    }

    #[test]
    fn lookups_in_lists_of_every_top_shape() {
        // One node, several (the small top), more than sixteen (the large
        // top) and more than 256 (the general search), each also after
        // splices that add and remove nodes.
        for n in [3u64, 1_000, 5_000, 40_000, 300_000] {
            let base = list(n);
            let l = RangeList::from_vec(base.clone());
            assert_lookups(&l, &base);
            let expected_nodes = (n as usize).div_ceil(CHUNK * FANOUT);
            assert!(
                l.nodes.len() >= expected_nodes,
                "{} nodes for {n}",
                l.nodes.len()
            );
            // Cut most of the list out, then put it back.
            let cut = l.splice(1, l.len() - 1, &[]);
            assert_lookups(&cut, &[base[0], base[base.len() - 1]]);
            let back = cut.splice(1, 1, &base[1..base.len() - 1]);
            assert_eq!(back.len(), base.len());
            for r in base.iter().step_by(101) {
                assert_eq!(back.lookup(r.last), Some(r));
                assert_eq!(back.lookup(r.last + 1), None);
            }
        }
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
        fn lookup_equals_scan(
            spans in proptest::collection::vec((0u64..64, 1u64..64), 0..2_500),
            top in any::<bool>(),
            probes in proptest::collection::vec(any::<u64>(), 0..32),
        ) {
            // Ranges of random sizes with random gaps (some none), the
            // last ending at 2^64 - 1 when `top` is set.
            let mut ranges = Vec::new();
            let mut at = 0u64;
            for (gap, size) in spans {
                let start = at + gap;
                ranges.push(fr(start, start + size - 1));
                at = start + size;
            }
            if top {
                ranges.push(fr(u64::MAX - 7, u64::MAX));
            }
            let l = RangeList::from_vec(ranges.clone());
            assert_lookups(&l, &ranges);
            for a in probes {
                prop_assert_eq!(l.lookup(a), scan(&ranges, a), "addr {:#x}", a);
            }
        }
    }

    proptest! {
        #[test]
        fn pick_equals_partition_point(
            mut keys in proptest::collection::vec(any::<u64>(), 0..16),
            probes in proptest::collection::vec(any::<u64>(), 1..16),
        ) {
            keys.sort_unstable();
            let mut padded = [u64::MAX; 16];
            padded[..keys.len()].copy_from_slice(&keys);
            for addr in probes.into_iter().chain(keys.iter().flat_map(|&k| [k, k.wrapping_add(1)])) {
                let want = keys.partition_point(|&k| k < addr).min(15);
                prop_assert_eq!(pick(&padded, |k| k < addr), want, "addr {:#x}", addr);
            }
        }
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
                for a in [r.last, r.last.wrapping_add(1), r.start.wrapping_sub(1)] {
                    prop_assert_eq!(got.lookup(a), scan(&want, a), "addr {:#x}", a);
                }
                prop_assert_eq!(got.index_from(r.start), k);
                prop_assert_eq!(got.index_to(r.start as u128), k);
            }
        }
    }
}
