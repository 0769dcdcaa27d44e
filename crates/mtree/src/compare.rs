//! Comparing two `info mtree -f` texts the way the conformance corpus
//! defines equality (the reference is `tools/compare-flat.py`).
//!
//! Each text is reduced to a multiset of (address-space name, range
//! lines): `FlatView` numbering and order, the order of `AS` lines,
//! trailing white space and ` KVM` markers carry no meaning, several
//! address spaces may share a name, and a view with no ranges is an empty
//! list.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::flat_text::flat_blocks;

/// The view of one address space: its name and range lines.
type Seen = (String, Vec<String>);

/// An address space's view found on one side only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewDiff {
    /// The address space's name.
    pub name: String,
    /// How many address spaces of that name have this view on one side
    /// but not the other.
    pub count: usize,
    /// Number of range lines in the view.
    pub ranges: usize,
    /// Range lines of this view missing from the other side's first view
    /// of the same name (at most ten).
    pub only_here: Vec<String>,
    /// Range lines of the other side's first view of the same name that
    /// this view lacks (at most ten).
    pub only_there: Vec<String>,
}

/// The outcome of [`compare_flat`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlatComparison {
    /// Address spaces in the expected text.
    pub expected: usize,
    /// Expected address spaces whose view the actual text has.
    pub matched: usize,
    /// Expected views the actual text lacks.
    pub missing: Vec<ViewDiff>,
    /// Actual views the expected text lacks.
    pub unexpected: Vec<ViewDiff>,
}

impl FlatComparison {
    /// True if both texts have the same views and the expected text has
    /// at least one.
    pub fn is_match(&self) -> bool {
        self.expected > 0 && self.missing.is_empty() && self.unexpected.is_empty()
    }
}

impl fmt::Display for FlatComparison {
    /// The reference script's report: what is missing (with `-` lines the
    /// actual view lacks and `+` lines it has instead), what is
    /// unexpected, and a count.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.expected == 0 {
            return writeln!(f, "no flat views in the expected text");
        }
        for d in &self.missing {
            writeln!(
                f,
                "missing {}x AS {:?} with {} ranges",
                d.count, d.name, d.ranges
            )?;
            for line in &d.only_here {
                writeln!(f, "   - {line}")?;
            }
            for line in &d.only_there {
                writeln!(f, "   + {line}")?;
            }
        }
        for d in &self.unexpected {
            writeln!(
                f,
                "unexpected {}x AS {:?} with {} ranges",
                d.count, d.name, d.ranges
            )?;
        }
        writeln!(f, "{}/{} address spaces match", self.matched, self.expected)
    }
}

fn views(text: &str) -> BTreeMap<Seen, usize> {
    let mut found = BTreeMap::new();
    for block in flat_blocks(text).0 {
        let ranges: Vec<String> = block.ranges.iter().map(|r| (*r).to_owned()).collect();
        for name in block.spaces {
            *found.entry((name.to_owned(), ranges.clone())).or_insert(0) += 1;
        }
    }
    found
}

/// `a - b` as multisets.
fn minus(a: &BTreeMap<Seen, usize>, b: &BTreeMap<Seen, usize>) -> Vec<(Seen, usize)> {
    a.iter()
        .filter_map(|(k, &n)| {
            let left = n.saturating_sub(b.get(k).copied().unwrap_or(0));
            (left > 0).then(|| (k.clone(), left))
        })
        .collect()
}

/// Lines of `mine` not in `theirs`, sorted, at most ten.
fn lines_not_in(mine: &[String], theirs: &[String]) -> Vec<String> {
    let theirs: BTreeSet<&String> = theirs.iter().collect();
    let mine: BTreeSet<&String> = mine.iter().collect();
    mine.into_iter()
        .filter(|l| !theirs.contains(l))
        .take(10)
        .cloned()
        .collect()
}

/// Compares an expected and an actual `info mtree -f` text.
pub fn compare_flat(expected: &str, actual: &str) -> FlatComparison {
    let want = views(expected);
    let got = views(actual);
    let missing = minus(&want, &got)
        .into_iter()
        .map(|((name, ranges), count)| {
            let other = got
                .keys()
                .find(|(n, _)| *n == name)
                .map(|(_, r)| r.as_slice());
            ViewDiff {
                only_here: other.map(|o| lines_not_in(&ranges, o)).unwrap_or_default(),
                only_there: other.map(|o| lines_not_in(o, &ranges)).unwrap_or_default(),
                ranges: ranges.len(),
                name,
                count,
            }
        })
        .collect::<Vec<_>>();
    let unexpected = minus(&got, &want)
        .into_iter()
        .map(|((name, ranges), count)| ViewDiff {
            name,
            count,
            ranges: ranges.len(),
            only_here: Vec::new(),
            only_there: Vec::new(),
        })
        .collect();
    let expected_total: usize = want.values().sum();
    let missed: usize = missing.iter().map(|d| d.count).sum();
    FlatComparison {
        expected: expected_total,
        matched: expected_total - missed,
        missing,
        unexpected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "\
FlatView #0
 AS \"memory\", root: system
 AS \"cpu-memory-0\", root: system
 Root memory region: system
  0000000000000000-0000000000000fff (prio 0, ram): ram

FlatView #1
 AS \"mch\", root: bus master container
 Root memory region: (none)
  No rendered FlatView

";

    #[test]
    fn reordered_and_renumbered_views_match() {
        let b = "\
FlatView #7
 AS \"mch\", root: bus master container
 Root memory region: (none)
  No rendered FlatView

FlatView #3
 AS \"cpu-memory-0\", root: system
 Root memory region: system
  0000000000000000-0000000000000fff (prio 0, ram): ram KVM

FlatView #4
 AS \"memory\", root: system
 Root memory region: system
  0000000000000000-0000000000000fff (prio 0, ram): ram
";
        let cmp = compare_flat(A, b);
        assert!(cmp.is_match(), "{cmp}");
        assert_eq!((cmp.matched, cmp.expected), (3, 3));
    }

    #[test]
    fn a_changed_range_is_missing_with_a_line_diff() {
        let b = A.replace("(prio 0, ram): ram", "(prio 0, rom): ram");
        let cmp = compare_flat(A, &b);
        assert!(!cmp.is_match());
        assert_eq!(cmp.matched, 1);
        assert_eq!(cmp.missing.len(), 2);
        let d = &cmp.missing[0];
        assert_eq!(
            d.only_here,
            ["0000000000000000-0000000000000fff (prio 0, ram): ram"]
        );
        assert_eq!(
            d.only_there,
            ["0000000000000000-0000000000000fff (prio 0, rom): ram"]
        );
        let report = cmp.to_string();
        assert!(report.contains("missing 1x AS \"cpu-memory-0\" with 1 ranges"));
        assert!(report.ends_with("1/3 address spaces match\n"));
    }

    #[test]
    fn an_extra_address_space_is_unexpected() {
        let b = A.replace(" AS \"mch\"", " AS \"mch\", root: x\n AS \"extra\"");
        let cmp = compare_flat(A, &b);
        assert!(!cmp.is_match());
        assert_eq!(cmp.unexpected.len(), 1);
        assert_eq!(cmp.unexpected[0].name, "extra");
        assert_eq!(cmp.matched, 3);
    }

    #[test]
    fn duplicate_names_count_as_a_multiset() {
        let once = "FlatView #0\n AS \"vtd-root\", root: a\n Root memory region: a\n  No rendered FlatView\n";
        let twice = "FlatView #0\n AS \"vtd-root\", root: a\n AS \"vtd-root\", root: b\n Root memory region: a\n  \
                     No rendered FlatView\n";
        let cmp = compare_flat(twice, once);
        assert_eq!(cmp.missing[0].count, 1);
        assert!(!cmp.is_match());
    }

    #[test]
    fn empty_expected_text_never_matches() {
        let cmp = compare_flat("", "");
        assert!(!cmp.is_match());
        assert_eq!(cmp.to_string(), "no flat views in the expected text\n");
    }
}
