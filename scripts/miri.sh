#!/usr/bin/env bash
# Run the core's tests that exercise its unsafe code under Miri.
#
# usage: scripts/miri.sh
#
# The core's unsafe code is HostMemory (crates/core/src/backing.rs): the
# anonymous mmap, the atomic word accesses to it, munmap; and the range
# list's chunks (crates/core/src/ranges.rs), written in place before they
# are declared initialised. This runs, on the nightly toolchain:
#   - backing.rs's unit tests, among them two threads writing and reading
#     the same bytes (a data race if the copies were not atomic);
#   - tests/access.rs: reads and writes through views into RAM, ROM, ROM
#     devices, aliases and IOMMU translations, and snapshots that outlive
#     the regions they map;
#   - ranges.rs's splice and lookup unit tests (the property tests need
#     a file system and take minutes under Miri);
#   - tests/concurrency.rs with a short writer (ADDRSPACE_STRESS_COMMITS,
#     default 8 here): readers on snapshots against a committing writer,
#     and snapshots outliving the Memory.
# Miri also reports memory leaks at the end of each test binary.
#
# Installs the nightly toolchain's miri and rust-src components if they
# are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo +nightly miri --version >/dev/null 2>&1; then
    rustup component add --toolchain nightly miri rust-src
fi

export ADDRSPACE_STRESS_COMMITS="${ADDRSPACE_STRESS_COMMITS:-8}"
export MIRIFLAGS="${MIRIFLAGS:-} -Zmiri-env-forward=ADDRSPACE_STRESS_COMMITS"

start=$(date +%s)
cargo +nightly miri test -p addrspace-core --lib backing::
cargo +nightly miri test -p addrspace-core --lib -- \
    ranges::tests::splice_shares_untouched_chunks \
    ranges::tests::lookup_across_chunks_finds_ranges_and_gaps \
    ranges::tests::lookups_at_the_top_of_the_address_space
cargo +nightly miri test -p addrspace-core --test access
cargo +nightly miri test -p addrspace-core --test concurrency
echo "miri: all passed in $(($(date +%s) - start)) s"
