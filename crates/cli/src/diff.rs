//! `addrspace mtree diff`: what a listener would hear going from the
//! machine of one dump to the machine of another.
//!
//! Two dumps are two separately built machines, so region handles cannot
//! be compared; regions are matched by name and kind instead. Per address
//! space (paired by name; the k-th of a repeated name with the k-th), the
//! flat views are compared with the dispatcher's rule: a range identical
//! in both (place, region, kind, offset, attributes) is a `region_nop`;
//! every other old range is a `region_del` and every other new range a
//! `region_add`; deletions come first, each list in address order.

use std::io::Write;

use addrspace::describe::RangeInfo;
use addrspace::mtree::Built;
use addrspace::AddressSpaceId;
use serde::Serialize;

use crate::error::CliError;
use crate::json;

/// Whether an address space is in both dumps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    /// In both.
    Both,
    /// Only in the first dump (a listener on it would be unregistered).
    OnlyA,
    /// Only in the second (a listener would have to register anew).
    OnlyB,
}

/// The change of one address space.
#[derive(Debug)]
pub struct SpaceDiff {
    /// Its name.
    pub name: String,
    /// In which dumps it is.
    pub presence: Presence,
    /// Ranges in A's view.
    pub ranges_a: usize,
    /// Ranges in B's view.
    pub ranges_b: usize,
    /// `region_del` calls, in address order.
    pub dels: Vec<RangeInfo>,
    /// `region_add` calls, in address order.
    pub adds: Vec<RangeInfo>,
    /// `region_nop` calls (ranges the same in both).
    pub unchanged: usize,
}

/// Describes every range of one address space.
fn ranges(built: &Built, id: AddressSpaceId) -> Result<Vec<RangeInfo>, CliError> {
    let mem = built.memory();
    let view = mem.view(id)?;
    let out: Result<Vec<_>, _> = view
        .ranges
        .iter()
        .map(|r| RangeInfo::of(mem, id, r))
        .collect();
    Ok(out?)
}

/// The address spaces of `built` as (name, occurrence of that name).
fn keyed(built: &Built) -> Vec<((String, usize), AddressSpaceId)> {
    let mut seen = std::collections::HashMap::<&str, usize>::new();
    built
        .address_spaces()
        .iter()
        .map(|(name, id)| {
            let k = seen.entry(name.as_str()).or_default();
            *k += 1;
            ((name.clone(), *k), *id)
        })
        .collect()
}

/// Old and new ranges compared by QEMU's walk over two sorted views.
fn compare(old: &[RangeInfo], new: &[RangeInfo]) -> (Vec<RangeInfo>, Vec<RangeInfo>, usize) {
    let (mut dels, mut adds, mut same) = (Vec::new(), Vec::new(), 0);
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < new.len() {
        match (old.get(i), new.get(j)) {
            (Some(o), Some(n)) if o.same_mapping(n) => {
                same += 1;
                i += 1;
                j += 1;
            }
            // The old range starts first (or at the same place, but
            // differs): it goes.
            (Some(o), Some(n)) if o.start <= n.start => {
                dels.push(o.clone());
                i += 1;
            }
            (Some(_), Some(n)) => {
                adds.push(n.clone());
                j += 1;
            }
            (Some(o), None) => {
                dels.push(o.clone());
                i += 1;
            }
            (None, Some(n)) => {
                adds.push(n.clone());
                j += 1;
            }
            (None, None) => unreachable!("loop condition"),
        }
    }
    (dels, adds, same)
}

/// Compares two built dumps, address space by address space (only `only`
/// if given: an unknown name is an error).
pub fn diff(a: &Built, b: &Built, only: Option<&str>) -> Result<Vec<SpaceDiff>, CliError> {
    if let Some(name) = only {
        if a.address_space(name).is_none() && b.address_space(name).is_none() {
            let mut known: Vec<&str> = a.address_spaces().iter().map(|(n, _)| n.as_str()).collect();
            known.dedup();
            return Err(CliError::Usage(format!(
                "no address space named {name:?} in either dump (they have: {})",
                known.join(", ")
            )));
        }
    }
    let wanted = |n: &str| only.is_none_or(|o| o == n);
    let ka = keyed(a);
    let kb = keyed(b);
    let mut out = Vec::new();
    let bar = crate::progress::bar((ka.len() + kb.len()) as u64, "diff");
    for (key, ida) in &ka {
        bar.inc(1);
        if !wanted(&key.0) {
            continue;
        }
        let old = ranges(a, *ida)?;
        let Some((_, idb)) = kb.iter().find(|(k, _)| k == key) else {
            out.push(SpaceDiff {
                name: key.0.clone(),
                presence: Presence::OnlyA,
                ranges_a: old.len(),
                ranges_b: 0,
                dels: Vec::new(),
                adds: Vec::new(),
                unchanged: 0,
            });
            continue;
        };
        let new = ranges(b, *idb)?;
        let (dels, adds, unchanged) = compare(&old, &new);
        out.push(SpaceDiff {
            name: key.0.clone(),
            presence: Presence::Both,
            ranges_a: old.len(),
            ranges_b: new.len(),
            dels,
            adds,
            unchanged,
        });
    }
    for (key, idb) in &kb {
        bar.inc(1);
        if wanted(&key.0) && !ka.iter().any(|(k, _)| k == key) {
            out.push(SpaceDiff {
                name: key.0.clone(),
                presence: Presence::OnlyB,
                ranges_a: 0,
                ranges_b: ranges(b, *idb)?.len(),
                dels: Vec::new(),
                adds: Vec::new(),
                unchanged: 0,
            });
        }
    }
    bar.finish_and_clear();
    Ok(out)
}

/// Prints the diff for people.
pub fn print(out: &mut dyn Write, diffs: &[SpaceDiff]) -> Result<(), CliError> {
    let w = |out: &mut dyn Write, s: String| writeln!(out, "{s}").map_err(CliError::Write);
    let changed = diffs
        .iter()
        .filter(|d| d.presence != Presence::Both || !d.dels.is_empty() || !d.adds.is_empty())
        .count();
    w(
        out,
        format!(
            "{} address space(s) compared, {changed} changed",
            diffs.len()
        ),
    )?;
    for d in diffs {
        match d.presence {
            Presence::OnlyA => w(
                out,
                format!(
                    "AS {:?}: only in A ({} ranges): it goes, and its listeners with it",
                    d.name, d.ranges_a
                ),
            )?,
            Presence::OnlyB => w(
                out,
                format!(
                    "AS {:?}: only in B ({} ranges): a listener must register on it anew",
                    d.name, d.ranges_b
                ),
            )?,
            Presence::Both if d.dels.is_empty() && d.adds.is_empty() => w(
                out,
                format!("AS {:?}: no change ({} ranges)", d.name, d.unchanged),
            )?,
            Presence::Both => {
                w(
                    out,
                    format!(
                        "AS {:?}: {} region_del, {} region_add, {} unchanged",
                        d.name,
                        d.dels.len(),
                        d.adds.len(),
                        d.unchanged
                    ),
                )?;
                for r in &d.dels {
                    w(out, format!("  region_del {r}"))?;
                }
                for r in &d.adds {
                    w(out, format!("  region_add {r}"))?;
                }
            }
        }
    }
    Ok(())
}

#[derive(Serialize)]
struct JsonSpace {
    name: String,
    presence: Presence,
    ranges_a: usize,
    ranges_b: usize,
    unchanged: usize,
    region_del: Vec<json::Range>,
    region_add: Vec<json::Range>,
}

/// Prints the diff as one JSON document: `{"address_spaces": [...]}`.
pub fn print_json(out: &mut dyn Write, diffs: &[SpaceDiff]) -> Result<(), CliError> {
    let spaces: Vec<JsonSpace> = diffs
        .iter()
        .map(|d| JsonSpace {
            name: d.name.clone(),
            presence: d.presence,
            ranges_a: d.ranges_a,
            ranges_b: d.ranges_b,
            unchanged: d.unchanged,
            region_del: d.dels.iter().map(json::Range::from).collect(),
            region_add: d.adds.iter().map(json::Range::from).collect(),
        })
        .collect();
    json::emit(out, &serde_json::json!({ "address_spaces": spaces }))
}

#[cfg(test)]
mod tests {
    use addrspace::describe::RangeKind;
    use addrspace::mtree::{build, parse, print_tree, Hints};
    use addrspace::replay::{Replay, Script};

    use super::*;

    fn r(start: u64, last: u64, region: &str, offset: u64) -> RangeInfo {
        RangeInfo {
            start,
            last,
            region: region.into(),
            kind: RangeKind::Ram,
            offset,
            readonly: false,
            nonvolatile: false,
            romd_mode: false,
            via_alias: None,
        }
    }

    #[test]
    fn identical_ranges_are_nops_and_changes_are_del_then_add() {
        let old = [
            r(0, 0xfff, "a", 0),
            r(0x1000, 0x1fff, "b", 0),
            r(0x3000, 0x3fff, "c", 0),
        ];
        let new = [
            r(0, 0xfff, "a", 0),
            r(0x1000, 0x17ff, "b", 0),
            r(0x2000, 0x2fff, "d", 0),
            r(0x3000, 0x3fff, "c", 0x10),
        ];
        let (dels, adds, same) = compare(&old, &new);
        assert_eq!(same, 1);
        assert_eq!(dels, [old[1].clone(), old[2].clone()]);
        assert_eq!(adds, [new[1].clone(), new[2].clone(), new[3].clone()]);
    }

    #[test]
    fn a_view_against_itself_is_all_nops() {
        let v = [r(0, 0xfff, "a", 0), r(0x2000, 0x2fff, "b", 0)];
        assert_eq!(compare(&v, &v), (Vec::new(), Vec::new(), 2));
    }

    /// The diff of two dumps is what a listener really hears: a machine is
    /// changed in one transaction under a recording listener, its tree is
    /// printed as a second dump, and the diff of the two dumps must list
    /// exactly the calls the listener heard.
    #[test]
    fn the_diff_of_two_dumps_is_what_the_dispatcher_sends() {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/data/conformance/qemu-7.2"
        );
        let text = std::fs::read_to_string(format!("{dir}/x86_64-q35-booted.tree")).unwrap();
        let flat = std::fs::read_to_string(format!("{dir}/x86_64-q35-booted.flat")).unwrap();
        let hints = Hints::from_flat(&flat).unwrap();
        let dump = parse(&text).unwrap();
        let a = build(&dump, &hints).unwrap();
        let script = Script::parse(
            "change",
            "begin\n\
             move ahci 0xfebf0000\n\
             disable pc.rom\n\
             resize lpc-rcrb-mmio 0x2000\n\
             add ram dimm0 1G in=system at=0x100000000\n\
             add alias hole 64K target=dimm0 offset=0x10000 in=system at=0xd0000000\n\
             commit\n",
        )
        .unwrap();
        let mut replay =
            Replay::new(&script, Some(build(&dump, &hints).unwrap().into_memory())).unwrap();
        let mut heard = Vec::new();
        for step in &script.steps {
            heard.extend(replay.step(step).unwrap().events);
        }
        let spaces: Vec<_> = replay.mem().address_spaces().collect();
        let after = print_tree(replay.mem(), &spaces).unwrap();
        let b = build(&parse(&after).unwrap(), &hints).unwrap();

        let diffs = diff(&a, &b, Some("memory")).unwrap();
        assert_eq!(diffs.len(), 1);
        let strip = |r: &RangeInfo| RangeInfo {
            via_alias: None,
            ..r.clone()
        };
        let of = |event: &str| -> Vec<RangeInfo> {
            heard
                .iter()
                .filter(|e| e.address_space == "memory" && e.event == event)
                .map(|e| e.range.clone().unwrap())
                .collect()
        };
        let dels: Vec<RangeInfo> = diffs[0].dels.iter().map(strip).collect();
        let adds: Vec<RangeInfo> = diffs[0].adds.iter().map(strip).collect();
        assert_eq!(dels, of("region_del"));
        assert_eq!(adds, of("region_add"));
        // The BAR and the register block move or grow (del + add each),
        // the DIMM and its alias appear; pc.rom lies under the PAM RAM of
        // a booted q35, so disabling it changes nothing visible.
        assert_eq!((dels.len(), adds.len()), (2, 4), "{dels:?} {adds:?}");
    }
}
