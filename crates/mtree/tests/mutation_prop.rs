//! Property: no mutation of a real dump makes the pipeline panic. Each
//! case damages a QEMU dump (deleted, inserted or replaced bytes drawn
//! from the format's own alphabet; deleted, duplicated or re-indented
//! lines) and feeds it through [`fuzz_one`], which parses, builds, prints
//! and re-parses whatever parses.

use std::path::Path;

use addrspace_mtree::fuzz_one;
use proptest::prelude::*;

/// A small real machine: the seed every mutation starts from.
fn seed() -> String {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/mtree_parse/q35-smram");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[derive(Debug, Clone)]
enum Mutation {
    DeleteBytes { at: usize, len: usize },
    InsertText { at: usize, text: String },
    ReplaceByte { at: usize, byte: u8 },
    DeleteLine { line: usize },
    DuplicateLine { line: usize, to: usize },
    Indent { line: usize, spaces: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let alphabet = "[0-9a-f \\-()@:\\[\\]\n,]{1,8}|prio -|alias |address-space: |memory-region: |ffffffffffffffff";
    prop_oneof![
        (any::<usize>(), 1usize..40).prop_map(|(at, len)| Mutation::DeleteBytes { at, len }),
        (any::<usize>(), alphabet).prop_map(|(at, text)| Mutation::InsertText { at, text }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::ReplaceByte { at, byte }),
        any::<usize>().prop_map(|line| Mutation::DeleteLine { line }),
        (any::<usize>(), any::<usize>())
            .prop_map(|(line, to)| Mutation::DuplicateLine { line, to }),
        (any::<usize>(), 0usize..12).prop_map(|(line, spaces)| Mutation::Indent { line, spaces }),
    ]
}

fn apply(text: &mut Vec<u8>, m: &Mutation) {
    let len = text.len().max(1);
    let mut lines: Vec<Vec<u8>> = text.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
    let nlines = lines.len();
    match m {
        Mutation::DeleteBytes { at, len: n } => {
            let at = at % len;
            let end = (at + n).min(text.len());
            text.drain(at.min(end)..end);
        }
        Mutation::InsertText { at, text: t } => {
            let at = at % len;
            text.splice(at.min(text.len())..at.min(text.len()), t.bytes());
        }
        Mutation::ReplaceByte { at, byte } => {
            if let Some(b) = text.get_mut(at % len) {
                *b = *byte;
            }
        }
        Mutation::DeleteLine { line } => {
            lines.remove(line % nlines);
            *text = lines.join(&b'\n');
        }
        Mutation::DuplicateLine { line, to } => {
            let copy = lines[line % nlines].clone();
            lines.insert(to % (nlines + 1), copy);
            *text = lines.join(&b'\n');
        }
        Mutation::Indent { line, spaces } => {
            let l = &mut lines[line % nlines];
            let body: Vec<u8> = l.iter().copied().skip_while(|&b| b == b' ').collect();
            *l = std::iter::repeat_n(b' ', *spaces).chain(body).collect();
            *text = lines.join(&b'\n');
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn mutated_dumps_never_panic(mutations in proptest::collection::vec(mutation(), 1..4)) {
        let mut text = seed().into_bytes();
        for m in &mutations {
            apply(&mut text, m);
        }
        fuzz_one(&text);
    }
}
