//! The operation model that the core's property tests and the `core_ops`
//! fuzz target share (cargo feature `testing`, off by default).
//!
//! A [`World`] is a small machine: a [`Memory`] with three
//! address spaces and a pool of [`POOL`] regions of every kind, plus the
//! listeners registered on it so far. An [`Op`] is one operation on it —
//! a tree change, a transaction boundary, a listener coming or going —
//! with its operands already reduced to the pool; [`World::apply`] runs it.
//! How operations are *generated* stays with each user: proptest
//! strategies in `crates/core/tests/properties.rs`, a byte decoder in the
//! umbrella crate's `fuzzing::core_ops`.
//!
//! What is checked, outside transactions (after every outermost commit):
//!
//! - add/del symmetry ([`World::check_symmetry`]): what each listener was
//!   given by `region_add` minus what `region_del` took back, with the
//!   dirty-log masks `log_start`/`log_stop` left, is its address space's
//!   view, range for range;
//! - a failed operation changes nothing ([`World::apply_checked`], with a
//!   state capture such as [`snapshot`]);
//! - a replay-mode unregister takes back everything the listener held
//!   ([`World::apply`] of [`Op::Unlisten`], [`World::unregister_all`]);
//! - the two engines agree ([`run_twins`]): the same views in every address
//!   space, the same events for every listener, failures alike.
//!
//! The machine's address spaces are `memory`, over a root with forty
//! small MMIO fillers (so narrow re-renders go through the child index);
//! `dma`, a bus-master space that shows the root through a full alias; and
//! `smm`, which shows the root under a RAM window of its own (so its view
//! is separate, and its window renders copy from `memory`'s fresh view).

mod check;
mod world;

use std::fmt::Debug;

pub use check::{refused_by_picky, snapshot, Held, Snapshot};
pub use world::{Watched, World};

use crate::{Engine, Memory};

/// How many regions the operations pick from; an operand `i` names
/// `pool[i % POOL]`.
pub const POOL: usize = 12;

/// One operation on a [`World`], with its operands reduced to the pool
/// (region operands are indices into [`World::pool`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `add_subregion_overlap(parent, addr, child, prio)`.
    Add {
        /// The parent: a pool index, or [`POOL`] for the root of `memory`.
        parent: usize,
        /// The region placed.
        child: usize,
        /// Its address in the parent.
        addr: u64,
        /// Its priority.
        prio: i32,
    },
    /// `del_subregion` from whatever parent the region has (nothing if it
    /// has none).
    Del {
        /// The region removed.
        child: usize,
    },
    /// `set_address`.
    Move {
        /// The region.
        r: usize,
        /// Its new address.
        addr: u64,
    },
    /// `set_priority`.
    Prio {
        /// The region.
        r: usize,
        /// Its new priority.
        prio: i32,
    },
    /// `set_enabled`.
    Enable {
        /// The region.
        r: usize,
        /// Enabled or not.
        on: bool,
    },
    /// `set_readonly`.
    Readonly {
        /// The region.
        r: usize,
        /// Read-only or not.
        on: bool,
    },
    /// `set_size`.
    Resize {
        /// The region.
        r: usize,
        /// Its new size.
        size: u128,
    },
    /// `set_alias_offset` (fails on anything but an alias).
    AliasOffset {
        /// The region.
        r: usize,
        /// The new offset into the alias's target.
        offset: u64,
    },
    /// `set_romd_mode`.
    Romd {
        /// The region.
        r: usize,
        /// ROMD mode or not.
        on: bool,
    },
    /// `set_log` for the VGA dirty-log client.
    Log {
        /// The region.
        r: usize,
        /// Logging or not.
        on: bool,
    },
    /// `set_global_dirty_log`.
    GlobalLog {
        /// Global logging or not.
        on: bool,
    },
    /// `set_unmergeable`.
    Unmergeable {
        /// The region.
        r: usize,
        /// Unmergeable or not.
        on: bool,
    },
    /// `begin` a (nested) transaction.
    Begin,
    /// `commit`; outside a transaction it fails.
    Commit,
    /// Registers a recording listener.
    Listen {
        /// Index into [`World::spaces`].
        space: usize,
        /// The listener's priority.
        prio: i32,
        /// Whether it refuses the `region_add`s [`refused_by_picky`] names.
        picky: bool,
    },
    /// Unregisters one of [`World::watched`] (nothing if there is none).
    Unlisten {
        /// Which, modulo how many there are.
        which: usize,
        /// [`Unregister::Replay`](crate::Unregister::Replay) rather than
        /// [`Detach`](crate::Unregister::Detach).
        replay: bool,
    },
    /// `add_ioeventfd` or `del_ioeventfd` of a 4-byte ioeventfd without
    /// data match.
    Fd {
        /// The region.
        r: usize,
        /// Its address in the region.
        addr: u64,
        /// Add rather than delete.
        on: bool,
    },
    /// `add_coalescing(0x100, 0x300)` or `clear_coalescing`.
    Coalesce {
        /// The region.
        r: usize,
        /// Add rather than clear.
        on: bool,
    },
}

/// Where [`run_twins`] checks that a failed operation changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureCheck {
    /// On the incremental world only: the views and events are compared
    /// with the reference world's after every commit anyway.
    Incremental,
    /// On both worlds.
    Both,
}

/// Runs `ops` on two worlds built alike, one per [`Engine`], and panics,
/// naming the operations so far, when an invariant breaks.
///
/// Every operation must succeed or fail under both engines alike; a failure
/// other than a listener's refusal must leave `state` of the memory as it
/// was (on the worlds `failures` names). Outside transactions both worlds
/// must publish the same views and their listeners must have heard the
/// same events ([`World::check_same_as`]), and every listener must hold its
/// view ([`World::check_symmetry`]). At the end open transactions are
/// committed, everything is checked once more, and every listener is
/// unregistered in replay mode, which must take back all it held.
pub fn run_twins<S: PartialEq + Debug>(
    ops: &[Op],
    state: impl Fn(&Memory) -> S,
    failures: FailureCheck,
) {
    let mut inc = World::new(Engine::Incremental);
    let mut reference = World::new(Engine::Reference);
    let step = |inc: &mut World, reference: &mut World, op: &Op, context: &dyn Fn() -> String| {
        let a = inc.apply_checked(op, &state);
        let r = match failures {
            FailureCheck::Both => reference.apply_checked(op, &state),
            FailureCheck::Incremental => reference.apply(op),
        };
        assert_eq!(
            a.is_ok(),
            r.is_ok(),
            "engines disagree on {op:?}: {a:?} vs {r:?}; {}",
            context()
        );
        assert_eq!(inc.depth, reference.depth, "{}", context());
    };
    for (n, op) in ops.iter().enumerate() {
        let context = || format!("after {:?}", &ops[..=n]);
        step(&mut inc, &mut reference, op, &context);
        if inc.depth == 0 {
            inc.check_same_as(&mut reference, &context);
            inc.check_symmetry(&context);
            reference.check_symmetry(&context);
        }
    }
    let context = || format!("after {ops:?} and closing commits");
    while inc.depth > 0 {
        step(&mut inc, &mut reference, &Op::Commit, &context);
    }
    inc.check_same_as(&mut reference, &context);
    inc.check_symmetry(&context);
    reference.check_symmetry(&context);
    inc.unregister_all(&context);
    reference.unregister_all(&context);
}
