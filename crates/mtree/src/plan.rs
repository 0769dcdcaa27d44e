//! The regions a dump describes: one *slot* per distinct region, with its
//! subregions and alias target, checked to be buildable.
//!
//! Made at parse time from the syntax tree by [identity](crate::identity)
//! (which lines are one region) and [targets](crate::targets) (what each
//! alias shows), then checked: no region may contain or show itself, and
//! the depth of nesting plus alias hops is bounded (rendering and printing
//! recurse along it).

use std::collections::HashMap;

use crate::dump::{AddressSpaceBlock, RegionSection};
use crate::error::{ParseError, ParseErrorKind};
use crate::shape::{Occ, Occurrences};
use crate::{identity, targets};

/// The deepest chain of subregions and alias hops accepted.
pub const MAX_RENDER_DEPTH: usize = 256;

/// One distinct region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Slot {
    /// The line (index in line order) that describes it; the first such
    /// line of a tree that is not a reprint.
    pub(crate) line_index: usize,
    /// Subregions, as slots, in printed order.
    pub(crate) children: Vec<usize>,
    /// For an alias, the slot it shows.
    pub(crate) alias_target: Option<usize>,
    /// True if the region is a subregion of another (printed) region.
    pub(crate) has_parent: bool,
}

/// Every distinct region of a dump and how to make it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    /// The slot of every region line, indexed in line order.
    pub(crate) slot_of: Vec<usize>,
    pub(crate) slots: Vec<Slot>,
    /// The root slot of every address-space block.
    pub(crate) block_roots: Vec<usize>,
    /// Alias slots in an order that makes every alias after the alias it
    /// shows, if it shows one.
    pub(crate) alias_order: Vec<usize>,
}

impl Plan {
    pub(crate) fn new(
        blocks: &[AddressSpaceBlock],
        sections: &[RegionSection],
    ) -> Result<Plan, ParseError> {
        let all = Occurrences::new(blocks, sections);
        let canon = identity::resolve(&all);
        let target_of = targets::resolve(&all, &canon)?;

        let mut slot_of_canonical: HashMap<Occ, usize> = HashMap::new();
        let mut slots = Vec::new();
        for o in (0..all.occ.len()).filter(|&o| canon[o] == o) {
            slot_of_canonical.insert(o, slots.len());
            slots.push(Slot {
                line_index: o,
                children: Vec::new(),
                alias_target: None,
                has_parent: all.occ[o].parent.is_some(),
            });
        }
        let slot_of: Vec<usize> = canon.iter().map(|c| slot_of_canonical[c]).collect();
        for slot in &mut slots {
            let o = slot.line_index;
            slot.children = all.occ[o].children.iter().map(|&c| slot_of[c]).collect();
            slot.alias_target = target_of.get(&o).map(|t| slot_of[*t]);
        }
        let block_roots = (0..all.blocks).map(|t| slot_of[all.roots[t]]).collect();
        let mut plan = Plan {
            slot_of,
            slots,
            block_roots,
            alias_order: Vec::new(),
        };
        plan.alias_order = plan.check(&all)?;
        Ok(plan)
    }

    /// Depth-first walk over subregion and alias edges (iterative: the
    /// input may be anything). Refuses loops and excessive depth, and
    /// returns the aliases in post-order, i.e. every alias after the
    /// alias it shows.
    fn check(&self, all: &Occurrences<'_>) -> Result<Vec<usize>, ParseError> {
        #[derive(Clone, Copy, PartialEq)]
        enum State {
            New,
            Open,
            Done(usize),
        }
        let mut state = vec![State::New; self.slots.len()];
        let mut order = Vec::new();
        let error = |slot: usize, kind: ParseErrorKind| {
            ParseError::at(all.nodes[self.slots[slot].line_index].line, kind)
        };
        for start in 0..self.slots.len() {
            if state[start] != State::New {
                continue;
            }
            // (slot, index of the next edge to follow)
            let mut stack = vec![(start, 0usize)];
            state[start] = State::Open;
            while let Some(&mut (slot, ref mut edge)) = stack.last_mut() {
                let s = &self.slots[slot];
                let next = s
                    .children
                    .get(*edge)
                    .copied()
                    .or(if *edge == s.children.len() {
                        s.alias_target
                    } else {
                        None
                    });
                *edge += 1;
                match next.map(|n| (n, state[n])) {
                    Some((n, State::New)) => {
                        state[n] = State::Open;
                        stack.push((n, 0));
                    }
                    Some((n, State::Open)) => {
                        let region = all.nodes[self.slots[n].line_index].name.clone();
                        return Err(error(slot, ParseErrorKind::Cycle { region }));
                    }
                    Some((_, State::Done(_))) => {}
                    None => {
                        stack.pop();
                        let below =
                            s.children
                                .iter()
                                .chain(&s.alias_target)
                                .map(|&n| match state[n] {
                                    State::Done(d) => d,
                                    _ => 0,
                                });
                        let depth = 1 + below.max().unwrap_or(0);
                        if depth > MAX_RENDER_DEPTH {
                            let region = all.nodes[s.line_index].name.clone();
                            return Err(error(
                                slot,
                                ParseErrorKind::RenderTooDeep {
                                    region,
                                    max: MAX_RENDER_DEPTH,
                                },
                            ));
                        }
                        state[slot] = State::Done(depth);
                        if s.alias_target.is_some() {
                            order.push(slot);
                        }
                    }
                }
            }
        }
        Ok(order)
    }
}

#[cfg(test)]
mod tests {
    use crate::error::ParseErrorKind;
    use crate::parse::parse;

    #[test]
    fn reprinted_regions_share_one_slot() {
        let text = "\
address-space: memory
  0000000000000000-ffffffffffffffff (prio 0, i/o): system
    0000000000000000-ffffffffffffffff (prio -1, i/o): pci
    0000000000000000-0000000000000fff (prio 1, i/o): alias a @pci 0000000000000000-0000000000000fff

memory-region: pci
  0000000000000000-ffffffffffffffff (prio -1, i/o): pci

";
        let plan = parse(text).unwrap().plan;
        assert_eq!(plan.slots.len(), 3);
        assert_eq!(plan.slot_of, [0, 1, 2, 1]);
        assert_eq!(plan.slots[2].alias_target, Some(1));
        assert_eq!(plan.slots[0].children, [1, 2]);
        assert_eq!(plan.alias_order, [2]);
    }

    #[test]
    fn alias_chains_are_ordered_target_first() {
        let text = "\
address-space: m
  0000000000000000-ffffffffffffffff (prio 0, i/o): root
    0000000000000000-0000000000000fff (prio 0, ram): alias outer @inner 0000000000000000-0000000000000fff
    0000000000001000-0000000000001fff (prio 0, ram): alias inner @ram 0000000000000000-0000000000000fff
    0000000000002000-0000000000002fff (prio 0, ram): ram

";
        let plan = parse(text).unwrap().plan;
        assert_eq!(plan.alias_order, [2, 1]);
    }

    #[test]
    fn region_showing_itself_through_an_alias_is_a_cycle() {
        let text = "\
address-space: m
  0000000000000000-ffffffffffffffff (prio 0, i/o): root
    0000000000000000-0000000000000fff (prio 0, i/o): alias loop @root 0000000000000000-0000000000000fff

";
        let err = parse(text).unwrap_err();
        assert_eq!(err.line, 3);
        assert_eq!(
            err.kind,
            ParseErrorKind::Cycle {
                region: "root".into()
            }
        );
    }

    #[test]
    fn aliases_showing_each_other_are_a_cycle() {
        let text = "\
address-space: m
  0000000000000000-ffffffffffffffff (prio 0, i/o): root
    0000000000000000-0000000000000fff (prio 0, i/o): alias a @b 0000000000000000-0000000000000fff
    0000000000001000-0000000000001fff (prio 0, i/o): alias b @a 0000000000000000-0000000000000fff

";
        assert!(matches!(
            parse(text).unwrap_err().kind,
            ParseErrorKind::Cycle { .. }
        ));
    }

    #[test]
    fn long_alias_chains_are_refused_before_they_can_overflow_a_stack() {
        let mut text = String::from(
            "address-space: m\n  0000000000000000-ffffffffffffffff (prio 0, i/o): root\n",
        );
        let n = super::MAX_RENDER_DEPTH + 1;
        for i in 0..n {
            text.push_str(&format!(
                "    0000000000000000-0000000000000fff (prio 0, i/o): alias a{i} @a{} 0000000000000000-0000000000000fff\n",
                i + 1
            ));
        }
        text.push_str(&format!(
            "    0000000000000000-0000000000000fff (prio 0, i/o): a{n}\n"
        ));
        assert!(matches!(
            parse(&text).unwrap_err().kind,
            ParseErrorKind::RenderTooDeep { .. }
        ));
    }
}
