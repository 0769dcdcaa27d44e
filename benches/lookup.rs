//! Reader-side costs on the `memory` view of
//! [`ScaleMachine::new(10_000, 1)`](addrspace::bench::ScaleMachine)
//! (10,001 ranges: RAM and 10k BARs with a BAR-sized gap after each).
//!
//! - `lookup/random`: [`FlatView::lookup`](addrspace::FlatView::lookup) of
//!   pseudo-random addresses inside BARs (4096 precomputed, all hits).
//! - `lookup/repeated`: [`ViewReader::lookup`] within one range, the
//!   cached path of a vCPU hammering one MMIO window.
//! - `lookup/miss`: `FlatView::lookup` of pseudo-random addresses in the
//!   gaps between BARs (all misses).
//! - `lookup/load_view`: [`ViewHandle::load`](addrspace::ViewHandle::load),
//!   what a vCPU pays to pick up the current snapshot (an `Arc` clone and
//!   drop included).
//! - `lookup/refresh`: [`ViewReader::refresh`] when nothing changed.
//! - `lookup/random_in/{100,1000,100000}`: `random` on views of that many
//!   BARs: one node of the range list with two chunks, one full node, and
//!   98 nodes (past the 16 the small top search covers).
//! - `lookup/contiguous`: the same random hits, answered by std's binary
//!   search (`partition_point`) over a contiguous array of the ranges'
//!   start addresses followed by loading the range from a contiguous copy
//!   of them: a reference point measured in the same run as `random` (a
//!   copy nothing else shares, so not something a commit could keep).
//!
//! Times are per call. The calls run in a plain loop inside `iter_custom`
//! rather than one per `Bencher::iter`: there the loop state lives behind
//! the closure's captures and is reloaded around every `black_box`, which
//! added ~5 ns per call, as much as a cached lookup costs. Note that
//! `addrspace bench scale`'s "random" draws from the whole BAR area, gaps
//! included, so it mixes `random`'s hits with `miss`'s misses.
//!
//! Run with `cargo bench --bench lookup` (add `-- --quick` for a fast look).

#![allow(
    missing_docs,
    reason = "criterion_group! generates an undocumented pub fn"
)]

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use addrspace::bench::{ScaleMachine, BAR_BASE, BAR_SIZE};
use addrspace::{FlatView, ViewReader};
use criterion::{criterion_group, criterion_main, Criterion};

const BARS: usize = 10_000;
/// Addresses per table; a power of two so the index wraps with a mask.
const TABLE: usize = 4096;

/// `TABLE` pseudo-random addresses, each `offset_in_slot` bytes past the
/// start of a random BAR's slot (a slot is a BAR and the gap after it),
/// plus a random offset below `BAR_SIZE`.
fn addresses(bars: usize, offset_in_slot: u64) -> Vec<u64> {
    // xorshift64: deterministic, so runs compare.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..TABLE)
        .map(|_| {
            let slot = next() % bars as u64;
            BAR_BASE + slot * 2 * BAR_SIZE + offset_in_slot + next() % BAR_SIZE
        })
        .collect()
}

/// Times `iters` lookups of `addrs` in turn.
fn lookups(view: &FlatView, addrs: &[u64], iters: u64) -> Duration {
    let mask = addrs.len() - 1;
    let t = Instant::now();
    for i in 0..iters as usize {
        black_box(view.lookup(black_box(addrs[i & mask])));
    }
    t.elapsed()
}

fn lookup(c: &mut Criterion) {
    let m = ScaleMachine::new(BARS, 1).expect("build scale machine");
    let view = m.mem.view(m.memory).expect("memory view");
    let handle = m.mem.view_handle(m.memory).expect("view handle");
    let hits = addresses(BARS, 0);
    let misses = addresses(BARS, BAR_SIZE);
    assert!(hits.iter().all(|a| view.lookup(*a).is_some()));
    assert!(misses.iter().all(|a| view.lookup(*a).is_none()));

    let mut group = c.benchmark_group("lookup");
    group.bench_function("random", |b| {
        b.iter_custom(|iters| lookups(&view, &hits, iters));
    });
    group.bench_function("repeated", |b| {
        b.iter_custom(|iters| {
            let mut reader = ViewReader::new(handle.clone());
            let hot = BAR_BASE + 0x40;
            let t = Instant::now();
            for i in 0..iters {
                black_box(reader.lookup(black_box(hot + (i & 0xff))));
            }
            t.elapsed()
        });
    });
    let starts: Vec<u64> = view.ranges.iter().map(|r| r.start).collect();
    let flat: Vec<addrspace::FlatRange> = view.ranges.iter().copied().collect();
    group.bench_function("contiguous", |b| {
        b.iter_custom(|iters| {
            let mask = hits.len() - 1;
            let t = Instant::now();
            for i in 0..iters as usize {
                let a = black_box(hits[i & mask]);
                let k = starts.partition_point(|&s| s <= a);
                black_box(k.checked_sub(1).map(|k| &flat[k]).filter(|r| a <= r.last));
            }
            t.elapsed()
        });
    });
    group.bench_function("miss", |b| {
        b.iter_custom(|iters| lookups(&view, &misses, iters));
    });
    group.bench_function("load_view", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                black_box(handle.load());
            }
            t.elapsed()
        });
    });
    group.bench_function("refresh", |b| {
        b.iter_custom(|iters| {
            let mut reader = ViewReader::new(handle.clone());
            let t = Instant::now();
            for _ in 0..iters {
                reader.refresh();
                black_box(&mut reader);
            }
            t.elapsed()
        });
    });
    group.finish();

    // The same random hits on smaller and larger views.
    let mut group = c.benchmark_group("lookup/random_in");
    for bars in [100, 1_000, 100_000] {
        let m = ScaleMachine::new(bars, 1).expect("build scale machine");
        let view = m.mem.view(m.memory).expect("memory view");
        let hits = addresses(bars, 0);
        assert!(hits.iter().all(|a| view.lookup(*a).is_some()));
        group.bench_function(format!("{bars}"), |b| {
            b.iter_custom(|iters| lookups(&view, &hits, iters));
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = lookup
}
criterion_main!(benches);
