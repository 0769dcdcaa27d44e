//! Property tests over random sequences of region operations, nested
//! transactions and listeners coming and going, on the core's shared
//! operation model (`addrspace_core::testing`, which the `core_ops` fuzz
//! target also runs):
//!
//! 1. add/del symmetry: what each listener was given by `region_add` minus
//!    what `region_del` took back equals the current view, range for range
//!    (with its dirty-log mask as `log_start`/`log_stop` left it); after a
//!    replay-mode unregister nothing is left;
//! 2. rendering equals a point-wise reference that walks the tree by the
//!    rules for sampled addresses;
//! 3. a failed operation changes nothing, but for a picky listener's
//!    refusal (`Error::ListenerRefused`): the change was applied, and the
//!    listener just does not hold what it refused;
//! 4. the incremental and the reference engine publish the same views and
//!    send the same events.

use addrspace_core::testing::{run_twins, FailureCheck, Op, World, POOL};
use addrspace_core::{Engine, Memory, RegionId, RegionKind, SIZE_2_64};
use common::fingerprint;
use proptest::prelude::*;

mod common;

fn addr() -> impl Strategy<Value = u64> {
    prop_oneof![
        8 => (0u64..0x40).prop_map(|a| a * 0x400),
        1 => Just(u64::MAX - 0xfff),
        1 => Just(0x8000_0000u64),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let r = 0..POOL;
    prop_oneof![
        6 => (prop_oneof![Just(POOL), 0..POOL], r.clone(), addr(), -2i32..3)
            .prop_map(|(parent, child, addr, prio)| Op::Add { parent, child, addr, prio }),
        3 => r.clone().prop_map(|child| Op::Del { child }),
        2 => (r.clone(), addr()).prop_map(|(r, addr)| Op::Move { r, addr }),
        1 => (r.clone(), -2i32..3).prop_map(|(r, prio)| Op::Prio { r, prio }),
        2 => (r.clone(), any::<bool>()).prop_map(|(r, on)| Op::Enable { r, on }),
        1 => (r.clone(), any::<bool>()).prop_map(|(r, on)| Op::Readonly { r, on }),
        1 => (r.clone(), 0u128..0x40).prop_map(|(r, s)| Op::Resize { r, size: s * 0x400 }),
        1 => (r.clone(), 0u64..0x20).prop_map(|(r, o)| Op::AliasOffset { r, offset: o * 0x400 }),
        1 => (r.clone(), any::<bool>()).prop_map(|(r, on)| Op::Romd { r, on }),
        1 => (r.clone(), any::<bool>()).prop_map(|(r, on)| Op::Log { r, on }),
        1 => any::<bool>().prop_map(|on| Op::GlobalLog { on }),
        1 => (r, any::<bool>()).prop_map(|(r, on)| Op::Unmergeable { r, on }),
        1 => Just(Op::Begin),
        1 => Just(Op::Commit),
        2 => (0..3usize, -1i32..2, any::<bool>()).prop_map(|(space, prio, picky)| Op::Listen { space, prio, picky }),
        1 => (0..4usize, any::<bool>()).prop_map(|(which, replay)| Op::Unlisten { which, replay }),
        1 => (0..POOL, 0u64..8, any::<bool>()).prop_map(|(r, a, on)| Op::Fd { r, addr: a * 0x100, on }),
        1 => (0..POOL, any::<bool>()).prop_map(|(r, on)| Op::Coalesce { r, on }),
    ]
}

/// Rendering follows the rules: in every address space, the view agrees
/// with [`walk`] at sampled addresses (range edges, just outside them, a
/// grid).
fn check_rendering(w: &World) {
    for &space in &w.spaces {
        let view = w.mem.view(space).unwrap();
        let root = w.mem.address_space_root(space).unwrap();
        let mut samples = vec![0, u64::MAX, 0x8000_0000];
        for r in &view.ranges {
            samples.extend([
                r.start,
                r.last,
                r.start.wrapping_sub(1),
                r.last.wrapping_add(1),
            ]);
        }
        samples.extend((0..0x12000u64).step_by(0x3ff));
        let oracle = Oracle::new(&w.mem, &w.added);
        for a in samples {
            let want = walk(&oracle, root, a);
            let got = view
                .lookup(a)
                .map(|r| (r.region, r.offset_in_region + (a - r.start), r.readonly));
            assert_eq!(got, want, "address {a:#x}");
        }
    }
}

/// The rules, point by point: which region, at which offset, read-only or
/// not, serves `addr` in the tree under `root`.
fn walk(o: &Oracle<'_>, root: RegionId, addr: u64) -> Option<(RegionId, u64, bool)> {
    let r = o.mem.region(root).unwrap();
    o.visit(
        root,
        -(r.addr() as i128),
        (0, SIZE_2_64 as i128),
        addr as i128,
        false,
    )
}

type Added = std::collections::HashMap<RegionId, u64>;

struct Oracle<'a> {
    mem: &'a Memory,
    /// Each region's subregions, highest priority first and, among equals,
    /// most recently added first — by this test's own record, not the
    /// core's list.
    order: std::collections::HashMap<RegionId, Vec<RegionId>>,
}

impl<'a> Oracle<'a> {
    fn new(mem: &'a Memory, added: &Added) -> Self {
        let mut order = std::collections::HashMap::new();
        for (id, r) in mem.regions() {
            let mut subs = r.subregions().to_vec();
            subs.sort_by_key(|s| {
                (
                    std::cmp::Reverse(mem.region(*s).unwrap().priority()),
                    std::cmp::Reverse(added[s]),
                )
            });
            order.insert(id, subs);
        }
        Oracle { mem, order }
    }

    fn visit(
        &self,
        id: RegionId,
        base: i128,
        clip: (i128, i128),
        a: i128,
        ro: bool,
    ) -> Option<(RegionId, u64, bool)> {
        let r = self.mem.region(id).unwrap();
        if !r.enabled() {
            return None;
        }
        let start = base + r.addr() as i128;
        let clip = (clip.0.max(start), clip.1.min(start + r.size() as i128));
        if a < clip.0 || a >= clip.1 {
            return None;
        }
        let ro = ro || r.readonly();
        if let RegionKind::Alias { target, offset } = r.kind() {
            let t = self.mem.region(*target).unwrap();
            return self.visit(
                *target,
                start - *offset as i128 - t.addr() as i128,
                clip,
                a,
                ro,
            );
        }
        for &sub in &self.order[&id] {
            if let Some(hit) = self.visit(sub, start, clip, a, ro) {
                return Some(hit);
            }
        }
        r.kind().terminates().then(|| (id, (a - start) as u64, ro))
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn listeners_hold_the_view_and_rendering_follows_the_rules(ops in prop::collection::vec(op(), 1..40)) {
        let mut w = World::new(Engine::Incremental);
        for op in &ops {
            // What the core answered is not checked here; that a failure
            // changed nothing is.
            let _ = w.apply_checked(op, fingerprint);
            if w.depth == 0 {
                w.check_symmetry(&|| format!("after {op:?}"));
                check_rendering(&w);
            }
        }
        while w.depth > 0 {
            let _ = w.apply_checked(&Op::Commit, fingerprint);
        }
        let context = || format!("after {ops:?} and closing commits");
        w.check_symmetry(&context);
        check_rendering(&w);
        w.unregister_all(&context);
    }

    #[test]
    fn incremental_and_reference_engines_agree(ops in prop::collection::vec(op(), 1..40)) {
        run_twins(&ops, fingerprint, FailureCheck::Both);
    }
}
