//! Plug, unplug, reset, dynamic-window and hypercall sequences on the
//! pseries model with its invariant checker after every step. The body is
//! `addrspace::fuzzing::pseries_reset::run`; `scripts/fuzz.sh
//! pseries_reset MINUTES` runs it, and `tests/fuzz_corpus.rs` replays
//! `corpus/pseries_reset/`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| addrspace::fuzzing::pseries_reset::run(data));
