//! Listener dispatch throughput: registering a listener replays the whole
//! current view to it as `region_add` events, and unregistering it in
//! replay mode sends the matching `region_del`s.
//!
//! - `dispatch/register/{n}`: `Memory::register_listener` of a counting
//!   listener on the `memory` view of
//!   [`ScaleMachine::new(n, 1)`](addrspace::bench::ScaleMachine), n = 1k,
//!   10k BARs.
//! - `dispatch/unregister/{n}`: `Memory::unregister_listener` of it in
//!   [`Unregister::Replay`] mode.
//!
//! Throughput is in events: one per range of the view (the BARs plus RAM,
//! n + 1). Only the timed call counts: the unregistration (detach mode,
//! silent) after each registration and the registration before each
//! unregistration run outside the timer. Run with `cargo bench --bench
//! dispatch` (add `-- --quick` for a fast look).

#![allow(
    missing_docs,
    reason = "criterion_group! generates an undocumented pub fn"
)]

mod common;

use std::time::{Duration, Instant};

use addrspace::bench::{Counter, ScaleMachine};
use addrspace::{ListenerConfig, ListenerId, Memory, Unregister};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn register(m: &mut ScaleMachine, counter: &Counter) -> ListenerId {
    m.mem
        .register_listener(
            m.memory,
            ListenerConfig::new("count"),
            Box::new(counter.clone()),
        )
        .expect("register counter")
}

fn unregister(mem: &mut Memory, id: ListenerId, mode: Unregister) {
    mem.unregister_listener(id, mode)
        .expect("unregister counter");
}

fn dispatch(c: &mut Criterion) {
    let mut group = c.benchmark_group("dispatch");
    for n in [1_000, 10_000] {
        let mut m = ScaleMachine::new(n, 1).expect("build scale machine");
        let ranges = m.mem.view(m.memory).expect("memory view").ranges.len() as u64;
        let counter = Counter::default();
        group.throughput(Throughput::Elements(ranges));

        group.bench_function(BenchmarkId::new("register", n), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    let id = register(&mut m, &counter);
                    total += t.elapsed();
                    unregister(&mut m.mem, id, Unregister::Detach);
                }
                total
            });
        });
        group.bench_function(BenchmarkId::new("unregister", n), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let id = register(&mut m, &counter);
                    let t = Instant::now();
                    unregister(&mut m.mem, id, Unregister::Replay);
                    total += t.elapsed();
                }
                total
            });
        });
        // Every registration replayed every range, and every replayed
        // unregistration took them all back: nothing was refused.
        assert_eq!(counter.get() % ranges, 0);
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = dispatch
}
criterion_main!(benches);
