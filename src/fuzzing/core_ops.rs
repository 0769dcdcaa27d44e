//! Random operation sequences on the core, on both engines at once.
//!
//! The input decodes into up to 64 operations of the core's shared
//! operation model ([`addrspace_core::testing`]), which
//! [`run_twins`] applies to two machines built alike, one rendering
//! incrementally and one with the reference engine. Outside transactions
//! it checks that:
//!
//! - both engines publish the same flat view for every address space;
//! - every listener heard the same events under both engines;
//! - what each listener was given by `region_add` minus what `region_del`
//!   took back, with the dirty-log masks `log_start`/`log_stop` left, is
//!   the current view range for range (add/del symmetry);
//! - an operation that failed changed nothing observable (a [`snapshot`]
//!   of the incremental machine), and failed under both engines alike;
//! - a replay-mode unregister takes back everything the listener held.
//!
//! The machine has three address spaces: `memory` over a root with forty
//! small MMIO fillers (so narrow re-renders go through the child index),
//! a bus-master space that shows the root through a full alias, and an
//! SMM-style space that shows it under a RAM window of its own.

use addrspace_core::testing::{run_twins, snapshot, FailureCheck, Op, POOL};

use super::Bytes;

/// Operations decoded from one input at most.
const MAX_OPS: usize = 64;

fn addr(b: &mut Bytes<'_>) -> u64 {
    match b.below(10) {
        0 => u64::MAX - 0xfff,
        1 => 0x8000_0000,
        2 => b.u64(),
        _ => b.below(0x40) as u64 * 0x400,
    }
}

fn prio(b: &mut Bytes<'_>) -> i32 {
    b.below(5) as i32 - 2
}

fn op(b: &mut Bytes<'_>) -> Op {
    let r = b.below(POOL);
    match b.below(18) {
        0..=2 => Op::Add {
            // POOL names the root.
            parent: if b.flag() { POOL } else { b.below(POOL) },
            child: r,
            addr: addr(b),
            prio: prio(b),
        },
        3 => Op::Del { child: r },
        4 => Op::Move { r, addr: addr(b) },
        5 => Op::Prio { r, prio: prio(b) },
        6 => Op::Enable { r, on: b.flag() },
        7 => Op::Readonly { r, on: b.flag() },
        8 => Op::Resize {
            r,
            size: b.below(0x40) as u128 * 0x400,
        },
        9 => Op::AliasOffset {
            r,
            offset: b.below(0x20) as u64 * 0x400,
        },
        10 => Op::Romd { r, on: b.flag() },
        11 => Op::Log { r, on: b.flag() },
        12 => match b.below(3) {
            0 => Op::GlobalLog { on: b.flag() },
            _ => Op::Unmergeable { r, on: b.flag() },
        },
        13 => Op::Begin,
        14 => Op::Commit,
        15 => Op::Listen {
            space: b.below(3),
            prio: b.below(3) as i32 - 1,
            picky: b.flag(),
        },
        16 => Op::Unlisten {
            which: b.below(8),
            replay: b.flag(),
        },
        _ => match b.below(2) {
            0 => Op::Fd {
                r,
                addr: b.below(8) as u64 * 0x100,
                on: b.flag(),
            },
            _ => Op::Coalesce { r, on: b.flag() },
        },
    }
}

/// Decodes `data` into operations.
fn decode(data: &[u8]) -> Vec<Op> {
    let mut b = Bytes::new(data);
    let mut ops = Vec::new();
    while !b.is_empty() && ops.len() < MAX_OPS {
        ops.push(op(&mut b));
    }
    ops
}

/// Decodes `data` into operations and runs them on both engines,
/// checking the invariants of the module documentation; panics with the
/// operations so far when one breaks. A failed operation is checked
/// against a [`snapshot`] on the incremental machine only: the machines'
/// views and events are compared after every commit anyway, and the
/// snapshot is most of an execution's cost.
pub fn run(data: &[u8]) {
    run_twins(&decode(data), snapshot, FailureCheck::Incremental);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_short_inputs_run() {
        run(&[]);
        run(&[0]);
        run(&[0xff; 3]);
    }

    #[test]
    fn a_mixed_sequence_runs_clean() {
        // Listen on every space (one picky), then adds, moves, a
        // transaction, logging and an unregister of each mode.
        let data: Vec<u8> = (0u8..=255).chain((0u8..=255).rev()).collect();
        run(&data);
    }
}
