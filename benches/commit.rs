//! One-region commits: a region is removed from its parent and added back
//! at the same address and priority, alternately, one commit each, with a
//! counting listener on the address space `memory`. Each group runs both
//! engines, so the incremental/reference ratio comes from one run.
//!
//! - `commit/regions/{engine}/{n}`: a BAR in the middle of
//!   [`ScaleMachine::new(n, 1)`](addrspace::bench::ScaleMachine), n = 1k,
//!   10k, 100k regions (reference at 100k: 10 flat samples, ~30 ms each).
//! - `commit/spaces/{engine}/{s}`: the same on `ScaleMachine::new(10_000,
//!   s)`, s = 1, 100, 1000 address spaces sharing one view.
//! - `commit/q35-e1000x200/{engine}`: the first `e1000-mmio` of the QEMU
//!   7.2 q35 dump with 200 e1000 NICs, built with hints from its flat dump.
//!
//! The workload is [`addrspace::bench::toggle`], the one `addrspace bench
//! toggle|scale` times, so numbers are comparable. Run with
//! `cargo bench --bench commit` (add `-- --quick` for a fast look, or a
//! filter such as `-- commit/regions`).

#![allow(
    missing_docs,
    reason = "criterion_group! generates an undocumented pub fn"
)]

mod common;

use std::time::Duration;

use addrspace::bench::{count_events, toggle, ScaleMachine};
use addrspace::mtree::{build, parse, Hints};
use addrspace::{Engine, Memory, RegionId};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode};

const ENGINES: [Engine; 2] = [Engine::Incremental, Engine::Reference];

const Q35_TREE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/conformance/qemu-7.2/x86_64-q35-e1000x200.tree"
);
const Q35_FLAT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/conformance/qemu-7.2/x86_64-q35-e1000x200.flat"
);

/// Times `iters` toggles of `region`, commits only: `toggle` times each
/// commit itself, and the re-add it does after an odd count is left out.
fn time_toggles(mem: &mut Memory, region: RegionId, iters: u64) -> Duration {
    let count = usize::try_from(iters).expect("iteration count fits usize");
    toggle(mem, region, count)
        .expect("toggle a region")
        .into_iter()
        .sum()
}

/// A scale machine on `engine` with a counting listener on `memory`, and
/// the BAR to toggle (one in the middle, as `addrspace bench scale` does).
fn scale_machine(regions: usize, spaces: usize, engine: Engine) -> (ScaleMachine, RegionId) {
    let mut m = ScaleMachine::new(regions, spaces).expect("build scale machine");
    m.mem.set_engine(engine);
    count_events(&mut m.mem, &[m.memory]).expect("register counter");
    let bar = m.bars[m.bars.len() / 2];
    (m, bar)
}

fn regions(c: &mut Criterion) {
    let mut group = c.benchmark_group("commit/regions");
    for engine in ENGINES {
        for n in [1_000, 10_000, 100_000] {
            if engine == Engine::Reference && n == 100_000 {
                // Tens of milliseconds per commit: linear sampling would
                // need 55 commits at the least, flat sampling needs 10.
                group.sample_size(10).sampling_mode(SamplingMode::Flat);
            }
            let (mut m, bar) = scale_machine(n, 1, engine);
            group.bench_function(BenchmarkId::new(engine.name(), n), |b| {
                b.iter_custom(|iters| time_toggles(&mut m.mem, bar, iters));
            });
        }
    }
    group.finish();
}

fn spaces(c: &mut Criterion) {
    let mut group = c.benchmark_group("commit/spaces");
    for engine in ENGINES {
        for s in [1, 100, 1_000] {
            let (mut m, bar) = scale_machine(10_000, s, engine);
            group.bench_function(BenchmarkId::new(engine.name(), s), |b| {
                b.iter_custom(|iters| time_toggles(&mut m.mem, bar, iters));
            });
        }
    }
    group.finish();
}

fn q35_e1000x200(c: &mut Criterion) {
    let tree = std::fs::read_to_string(Q35_TREE).expect("read q35 tree dump");
    let flat = std::fs::read_to_string(Q35_FLAT).expect("read q35 flat dump");
    let hints = Hints::from_flat(&flat)
        .expect("parse q35 flat dump")
        .with_readonly_alias("pam-rom");
    let dump = parse(&tree).expect("parse q35 tree dump");
    let mut group = c.benchmark_group("commit/q35-e1000x200");
    for engine in ENGINES {
        let mut built = build(&dump, &hints).expect("build q35 machine");
        let target = dump
            .nodes()
            .find(|n| n.name == "e1000-mmio")
            .and_then(|n| built.region_of(n))
            .expect("q35 dump has an e1000-mmio region");
        let memory = built.address_space("memory").expect("q35 has `memory`");
        let mem = built.memory_mut();
        mem.set_engine(engine);
        count_events(mem, &[memory]).expect("register counter");
        group.bench_function(engine.name(), |b| {
            b.iter_custom(|iters| time_toggles(mem, target, iters));
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = regions, spaces, q35_e1000x200
}
criterion_main!(benches);
