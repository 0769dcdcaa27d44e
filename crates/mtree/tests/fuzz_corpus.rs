//! Replays the `mtree_parse` fuzz corpus (`fuzz/corpus/mtree_parse/`)
//! through the fuzz target's body, so that every input the fuzzer has
//! kept is checked on every test run, without nightly or cargo-fuzz.

use std::path::Path;

use addrspace_mtree::fuzz_one;

#[test]
fn every_corpus_input_passes_through_the_pipeline() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/mtree_parse");
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("readable directory entry").path())
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "empty corpus in {}", dir.display());
    for path in inputs {
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        fuzz_one(&data);
    }
}

#[test]
fn valid_seeds_print_back_exactly() {
    use addrspace_mtree::{build, parse, print_tree, Hints};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/mtree_parse");
    for name in ["q35-smram", "io-ports", "pseries-iommu"] {
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        let built = build(&parse(&text).unwrap(), &Hints::new()).unwrap();
        assert_eq!(
            print_tree(built.memory(), &built.space_ids()).unwrap(),
            text,
            "{name}"
        );
    }
}

/// Found by the fuzzer: duplicate-named `memory-region:` sections were
/// told apart by replaying QEMU's print queue over lines whose siblings
/// were not in QEMU's print order; the tree printed back (in order) then
/// read as ambiguous. Out-of-order text no longer resolves shared names.
#[test]
fn shared_section_names_need_lines_in_print_order() {
    use addrspace_mtree::{parse, ParseErrorKind};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/mtree_parse");
    let data = std::fs::read(dir.join("regression-siblings-out-of-order")).unwrap();
    let err = parse(&String::from_utf8_lossy(&data)).unwrap_err();
    assert!(
        matches!(
            &err.kind,
            ParseErrorKind::AmbiguousAliasTarget { candidates: 2, .. }
        ),
        "{err:?}"
    );
}

/// An input a run of 2026-11-23 22:59 saved as a crash. It parses,
/// builds, prints and reads back at every committed version tested
/// (f2ca3c3, 514321e, 5ee2881 and later), so the crash came from work not
/// committed at the time; kept so that it stays passing.
#[test]
fn earlier_crash_input_e944_passes_through_the_pipeline() {
    use addrspace_mtree::{build, parse, Hints};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/mtree_parse");
    let data = std::fs::read(dir.join("regression-e944e828")).unwrap();
    let dump = parse(&String::from_utf8_lossy(&data)).expect("it parses");
    build(&dump, &Hints::new()).expect("it builds");
    fuzz_one(&data);
}
