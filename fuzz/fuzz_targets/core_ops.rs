//! Random operation sequences on the core, on both engines side by side,
//! with every invariant checked after every commit. The body is
//! `addrspace::fuzzing::core_ops::run`; `scripts/fuzz.sh core_ops MINUTES`
//! runs it, and `tests/fuzz_corpus.rs` replays `corpus/core_ops/`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| addrspace::fuzzing::core_ops::run(data));
