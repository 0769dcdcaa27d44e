//! The body of the `mtree_parse` fuzz target, here so that the corpus
//! replays as an ordinary test (`tests/fuzz_corpus.rs`).

use crate::build::build;
use crate::hints::Hints;
use crate::parse::parse;
use crate::print_flat::print_flat;
use crate::print_tree::print_tree;

/// Feeds arbitrary bytes through the whole pipeline: parse (as lossy
/// UTF-8); if that succeeds, build (plainly and with a read-only alias
/// hint); if that succeeds, print the tree and the flat views, and parse
/// the printed tree again.
///
/// Panics only if a step that must not fail does: the printers on a
/// freshly built memory map, and re-reading what the tree printer wrote.
/// Parse and build errors are normal outcomes.
pub fn fuzz_one(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(dump) = parse(&text) else { return };
    for hints in [Hints::new(), Hints::new().with_readonly_alias("pam-rom")] {
        let Ok(built) = build(&dump, &hints) else {
            continue;
        };
        let spaces = built.space_ids();
        let tree = print_tree(built.memory(), &spaces).expect("printing a built dump");
        print_flat(built.memory(), &spaces).expect("printing a built dump's views");
        if let Err(err) = parse(&tree) {
            panic!("the printed tree does not parse: {err}\n{tree}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_and_valid_input_pass_through_without_panicking() {
        fuzz_one(b"\xff\xfe address-space: \n");
        fuzz_one(b"address-space: m\n  0000000000000000-0000000000000fff (prio 0, ram): r\n");
    }
}
