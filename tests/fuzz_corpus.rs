//! Replays the checked-in corpora of the `core_ops` and `pseries_reset`
//! fuzz targets (`fuzz/corpus/<target>/`) through their bodies, so that
//! every input the fuzzer kept is checked on every test run, on the stable
//! toolchain and without cargo-fuzz. (The `mtree_parse` corpus replays in
//! addrspace-mtree's own tests.)

use std::path::{Path, PathBuf};

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("readable directory entry").path())
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "empty corpus in {}", dir.display());
    inputs
}

fn replay(target: &str, run: fn(&[u8])) {
    for path in corpus(target) {
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let outcome = std::panic::catch_unwind(|| run(&data));
        if let Err(panic) = outcome {
            eprintln!("{target}: input {} fails", path.display());
            std::panic::resume_unwind(panic);
        }
    }
}

#[test]
fn core_ops_corpus_replays_clean() {
    replay("core_ops", addrspace::fuzzing::core_ops::run);
}

#[test]
fn pseries_reset_corpus_replays_clean() {
    replay("pseries_reset", addrspace::fuzzing::pseries_reset::run);
}
