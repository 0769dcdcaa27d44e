//! Which region an alias shows. QEMU prints only the target's name
//! (`@name`); the rules below pick the region deterministically.
//!
//! QEMU's printer queues each alias target the first time it prints an
//! alias of it, and prints the queue as `memory-region:` sections after
//! the address spaces (sections print aliases too, which may extend the
//! queue). So in a QEMU dump every alias target has exactly one section,
//! and sections appear in the order their aliases are first met, reading
//! the text from top to bottom.
//!
//! 1. If exactly one section has the name, the alias shows that section's
//!    region (which [identity](crate::identity) may have found elsewhere
//!    too, e.g. as an address space's root).
//! 2. If several sections share the name (q35 with an IOMMU has two
//!    `vtd-00.0`), the queue is replayed: reading aliases in line order,
//!    an alias whose region was met before keeps its target; otherwise,
//!    if the next section not yet queued has the name, the alias queues
//!    it; else it shows an already queued section of that name. Where the
//!    text allows both (queue the next one or show an earlier one of the
//!    same name), the next one is taken when no later alias of that name
//!    could queue it before its header, or when the candidates print
//!    identically (then the choice changes nothing); otherwise the alias
//!    is [ambiguous](crate::ParseErrorKind::AmbiguousAliasTarget). The
//!    replay needs the text in QEMU's order: if any line's subregions are
//!    not (ascending address, descending priority at one address), or an
//!    alias queues a section out of turn, every alias of a shared name is
//!    ambiguous.
//! 3. If no section has the name (hand-written or trimmed dumps), any
//!    region line with that name qualifies; all candidates must print
//!    identically (then the first in line order is taken), else the alias
//!    is ambiguous; none is
//!    [unknown](crate::ParseErrorKind::UnknownAliasTarget).

use std::collections::HashMap;

use crate::error::{ParseError, ParseErrorKind};
use crate::shape::{Occ, Occurrences};

/// For every alias line (by canonical line), the canonical line of the
/// region it shows.
pub(crate) fn resolve(
    all: &Occurrences<'_>,
    canon: &[Occ],
) -> Result<HashMap<Occ, Occ>, ParseError> {
    let sections: Vec<usize> = (all.blocks..all.trees()).collect();
    let mut by_name: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, &t) in sections.iter().enumerate() {
        by_name
            .entry(all.nodes[all.roots[t]].name.as_str())
            .or_default()
            .push(i);
    }
    let mut queue = Queue {
        queued: vec![false; sections.len()],
        next: 0,
        in_order: printed_in_order(all),
    };
    let mut lines_by_name: HashMap<&str, Vec<Occ>> = HashMap::new();
    for o in (0..all.occ.len()).filter(|&o| canon[o] == o) {
        lines_by_name
            .entry(all.nodes[o].name.as_str())
            .or_default()
            .push(o);
    }
    let mut target_of: HashMap<Occ, Occ> = HashMap::new();
    for a in 0..all.occ.len() {
        let Some(alias) = &all.nodes[a].alias else {
            continue;
        };
        if target_of.contains_key(&canon[a]) {
            continue;
        }
        let line = all.nodes[a].line;
        let fail = |kind| ParseError::at(line, kind);
        let name = alias.target.as_str();
        let candidates = by_name.get(name).map(Vec::as_slice).unwrap_or_default();
        let section = match candidates {
            [] => {
                let named = lines_by_name
                    .get(name)
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                let target = by_line_name(all, named, canon[a], name).map_err(fail)?;
                target_of.insert(canon[a], target);
                continue;
            }
            [only] => *only,
            several => {
                let section_root = |s: usize| all.roots[sections[s]];
                let shape = |s: usize| all.occ[section_root(s)].shape;
                let pick = queue.choose(
                    several,
                    |x, y| shape(x) == shape(y),
                    |next| !later_alias_before(all, canon, &target_of, a, name, section_root(next)),
                );
                pick.ok_or_else(|| {
                    fail(ParseErrorKind::AmbiguousAliasTarget {
                        target: name.to_owned(),
                        candidates: several.len(),
                    })
                })?
            }
        };
        queue.mark(section);
        target_of.insert(canon[a], canon[all.roots[sections[section]]]);
    }
    Ok(target_of)
}

/// True if every line's subregion lines come in the order QEMU prints
/// them: ascending address, and descending priority at one address. The
/// queue replay reads aliases in line order, so it only stands for
/// QEMU's queue when the lines are where QEMU would have put them; text
/// with siblings out of order (hand-edited) reads its aliases in another
/// order than the same tree printed back, and the two could resolve a
/// shared name differently.
fn printed_in_order(all: &Occurrences<'_>) -> bool {
    all.nodes.iter().all(|n| {
        n.children.windows(2).all(|w| {
            w[0].start < w[1].start || (w[0].start == w[1].start && w[0].priority >= w[1].priority)
        })
    })
}

/// QEMU's alias print queue, replayed over the sections.
struct Queue {
    queued: Vec<bool>,
    /// The first section not queued yet.
    next: usize,
    /// False once an alias queued a section out of QEMU's order (not a
    /// QEMU dump): replaying the queue then proves nothing.
    in_order: bool,
}

impl Queue {
    fn mark(&mut self, section: usize) {
        if self.queued[section] {
            return;
        }
        if section != self.next {
            self.in_order = false;
        }
        self.queued[section] = true;
        while self.queued.get(self.next) == Some(&true) {
            self.next += 1;
        }
    }

    /// Picks among sections of one name. `same_shape` says whether two
    /// sections print identically; `must_queue(next)` whether no later
    /// alias could queue `next` before its header.
    fn choose(
        &self,
        same_name: &[usize],
        same_shape: impl Fn(usize, usize) -> bool,
        must_queue: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        if !self.in_order {
            return None;
        }
        let old: Vec<usize> = same_name
            .iter()
            .copied()
            .filter(|&s| self.queued[s])
            .collect();
        let next = same_name.contains(&self.next).then_some(self.next);
        match (next, old.as_slice()) {
            (Some(n), []) => Some(n),
            (Some(n), old) if must_queue(n) || old.iter().all(|&o| same_shape(o, n)) => Some(n),
            (None, [first, rest @ ..]) if rest.iter().all(|&o| same_shape(*first, o)) => {
                Some(*first)
            }
            _ => None,
        }
    }
}

/// True if some alias line after `a` and before `header` (the root line of
/// the next section) is a first meeting with an alias of `name`, so it
/// could be the one that queued that section.
fn later_alias_before(
    all: &Occurrences<'_>,
    canon: &[Occ],
    resolved: &HashMap<Occ, Occ>,
    a: Occ,
    name: &str,
    header: Occ,
) -> bool {
    (a + 1..header).any(|o| {
        all.nodes[o]
            .alias
            .as_ref()
            .is_some_and(|x| x.target == name)
            && canon[o] != canon[a]
            && !resolved.contains_key(&canon[o])
    })
}

/// Rule 3: a target named by no section, among the canonical lines
/// `named` so (the alias itself excluded: nothing shows itself).
fn by_line_name(
    all: &Occurrences<'_>,
    named: &[Occ],
    alias: Occ,
    name: &str,
) -> Result<Occ, ParseErrorKind> {
    let found: Vec<Occ> = named.iter().copied().filter(|&o| o != alias).collect();
    match found.as_slice() {
        [] => Err(ParseErrorKind::UnknownAliasTarget {
            target: name.to_owned(),
        }),
        [first, rest @ ..]
            if rest
                .iter()
                .all(|&o| all.occ[o].shape == all.occ[*first].shape) =>
        {
            Ok(*first)
        }
        several => Err(ParseErrorKind::AmbiguousAliasTarget {
            target: name.to_owned(),
            candidates: several.len(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity;
    use crate::parse::parse;

    /// (alias line, target line) pairs, by line number.
    fn targets(text: &str) -> Result<Vec<(usize, usize)>, ParseError> {
        let dump = parse(text)?;
        let all = Occurrences::new(&dump.blocks, &dump.sections);
        let canon = identity::resolve(&all);
        let map = resolve(&all, &canon).expect("parse resolved it already");
        let mut pairs: Vec<(usize, usize)> = map
            .into_iter()
            .map(|(a, t)| (all.nodes[a].line, all.nodes[t].line))
            .collect();
        pairs.sort_unstable();
        Ok(pairs)
    }

    #[test]
    fn single_section_names_the_target() {
        let text = "\
address-space: memory
  0000000000000000-ffffffffffffffff (prio 0, i/o): system
    0000000000000000-0000000000000fff (prio 0, ram): alias low @pc.ram 0000000000000000-0000000000000fff

memory-region: pc.ram
  0000000000000000-0000000000001fff (prio 0, ram): pc.ram

";
        assert_eq!(targets(text).unwrap(), [(3, 6)]);
    }

    #[test]
    fn alias_of_a_region_named_like_itself_shows_the_other_region() {
        let text = "\
address-space: m
  0000000000000000-ffffffffffffffff (prio 0, i/o): root
    00000000fee00000-00000000feefffff (prio 1, i/o): vtd-ir
    0000000000000000-00000000000fffff (prio 0, i/o): alias vtd-ir @vtd-ir 0000000000000000-00000000000fffff

";
        assert_eq!(targets(text).unwrap(), [(4, 3)]);
    }

    #[test]
    fn unknown_target_is_reported_at_the_alias_line() {
        let text = "\
address-space: m
  0000000000000000-ffffffffffffffff (prio 0, i/o): root
    0000000000000000-00000000000fffff (prio 0, i/o): alias a @nowhere 0000000000000000-00000000000fffff

";
        let err = targets(text).unwrap_err();
        assert_eq!(err.line, 3);
        assert_eq!(
            err.kind,
            ParseErrorKind::UnknownAliasTarget {
                target: "nowhere".into()
            }
        );
    }

    #[test]
    fn differently_printed_regions_of_one_name_without_section_are_ambiguous() {
        let text = "\
address-space: m
  0000000000000000-ffffffffffffffff (prio 0, i/o): root
    0000000000000000-0000000000000fff (prio 0, i/o): dev
    0000000000001000-0000000000002fff (prio 0, i/o): dev
    0000000000010000-0000000000010fff (prio 0, i/o): alias a @dev 0000000000000000-0000000000000fff

";
        let err = targets(text).unwrap_err();
        assert!(matches!(
            err.kind,
            ParseErrorKind::AmbiguousAliasTarget { candidates: 2, .. }
        ));
    }

    #[test]
    fn identical_regions_of_one_name_without_section_take_the_first() {
        let text = "\
address-space: m
  0000000000000000-ffffffffffffffff (prio 0, i/o): root
    0000000000000000-0000000000000fff (prio 0, i/o): dev
    0000000000001000-0000000000001fff (prio 0, i/o): dev
    0000000000010000-0000000000010fff (prio 0, i/o): alias a @dev 0000000000000000-0000000000000fff

";
        assert_eq!(targets(text).unwrap(), [(5, 3)]);
    }

    const TWO_DIFFERENT: &str = "\
address-space: m
  0000000000000000-ffffffffffffffff (prio 0, i/o): root
    0000000000000000-0000000000000fff (prio 0, i/o): alias a @dev 0000000000000000-0000000000000fff
    0000000000001000-0000000000001fff (prio 0, i/o): alias b @dev 0000000000000000-0000000000000fff
    0000000000002000-0000000000002fff (prio 0, i/o): alias c @dev 0000000000000000-0000000000000fff

memory-region: dev
  0000000000000000-0000000000000fff (prio 0, i/o): dev

memory-region: dev
  0000000000000000-0000000000001fff (prio 0, i/o): dev

";

    #[test]
    fn first_alias_of_a_name_queues_the_first_section() {
        // b could show the first `dev` or queue the second one, and c could
        // queue it as well: the text does not say.
        let err = targets(TWO_DIFFERENT).unwrap_err();
        assert_eq!(err.line, 4);
        assert!(matches!(
            err.kind,
            ParseErrorKind::AmbiguousAliasTarget { .. }
        ));
    }

    #[test]
    fn last_alias_before_a_section_must_queue_it() {
        let text = TWO_DIFFERENT.replace(
            "    0000000000002000-0000000000002fff (prio 0, i/o): alias c @dev 0000000000000000-0000000000000fff\n",
            "",
        );
        assert_eq!(targets(&text).unwrap(), [(3, 7), (4, 10)]);
    }
}
