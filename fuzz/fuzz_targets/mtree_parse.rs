//! Parses arbitrary bytes as `info mtree -D` text and, when that works,
//! builds and prints the result. Run with `cargo fuzz run mtree_parse`;
//! the corpus in `corpus/mtree_parse/` also replays as a test of
//! addrspace-mtree (`tests/fuzz_corpus.rs`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| addrspace_mtree::fuzz_one(data));
