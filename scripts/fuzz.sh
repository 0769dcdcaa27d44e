#!/usr/bin/env bash
# Run one cargo-fuzz target for a number of minutes, on the stable toolchain.
#
# usage: scripts/fuzz.sh TARGET MINUTES [extra libFuzzer flags...]
#        scripts/fuzz.sh --list
#
# TARGET is one of fuzz/fuzz_targets/*.rs (core_ops, pseries_reset,
# mtree_parse). The run starts from the checked-in corpus
# fuzz/corpus/TARGET plus what earlier runs grew in fuzz/target/corpus/TARGET,
# writes new inputs to the latter (not checked in), and stops after
# MINUTES; a crash stops it earlier and leaves the input in
# fuzz/artifacts/TARGET/. At the end the script prints the number of
# inputs executed (libFuzzer's stat::number_of_executed_units) and the
# wall time.
#
# To refresh the checked-in corpus from a grown one, minimise it into a
# fresh directory and keep the smallest few dozen files:
#   RUSTC_BOOTSTRAP=1 cargo fuzz cmin -s none TARGET fuzz/target/corpus/TARGET
#
# Installs cargo-fuzz first if there is none on PATH: version
# CARGO_FUZZ_VERSION into target/tools, so a user's own is left alone.
#
# Why stable works: cargo-fuzz builds with `-Z` flags (sanitizer,
# coverage instrumentation) that only a nightly compiler accepts.
# RUSTC_BOOTSTRAP=1 makes the stable compiler accept them. This is set for
# the fuzz build only (its own target dir, fuzz/target), never for the
# workspace's builds, tests or releases, so no unstable feature leaks into
# what the project ships; and the fuzzed code is the same source the
# stable build compiles. The address sanitizer is off by default
# (SANITIZER=none): the workspace's unsafe code is confined to the
# host-memory and ioctl wrappers, and without it a run executes several
# times more inputs; SANITIZER=address turns it back on.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=${CARGO_FUZZ_VERSION:-0.13.2}
SANITIZER=${SANITIZER:-none}
tools=$PWD/target/tools

if [ "${1:-}" = "--list" ]; then
    ls fuzz/fuzz_targets | sed 's/\.rs$//'
    exit 0
fi
if [ $# -lt 2 ]; then
    sed -n '4,5p' "$0" | sed 's/^# //' >&2
    exit 2
fi
target=$1
minutes=$2
shift 2
if [ ! -f "fuzz/fuzz_targets/$target.rs" ]; then
    printf 'fuzz.sh: no fuzz target %s (have: %s)\n' "$target" \
        "$(ls fuzz/fuzz_targets | sed 's/\.rs$//' | tr '\n' ' ')" >&2
    exit 2
fi
case $minutes in
'' | *[!0-9]*)
    printf 'fuzz.sh: MINUTES must be a whole number, not %s\n' "$minutes" >&2
    exit 2
    ;;
esac

if ! command -v cargo-fuzz >/dev/null 2>&1 && [ ! -x "$tools/bin/cargo-fuzz" ]; then
    printf 'fuzz.sh: installing cargo-fuzz %s into %s\n' "$CARGO_FUZZ_VERSION" "$tools" >&2
    cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION" --root "$tools"
fi
export PATH=$PATH:$tools/bin

work=fuzz/target/corpus/$target
mkdir -p "$work"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
start=$(date +%s)
status=0
RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer "$SANITIZER" "$target" "$work" "fuzz/corpus/$target" -- \
    -max_total_time=$((minutes * 60)) -print_final_stats=1 "$@" 2>&1 | tee "$log" ||
    status=$?
elapsed=$(($(date +%s) - start))

execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
printf '\nfuzz.sh: %s: %s executions in %d s (exit %d); grown corpus %s: %d inputs\n' \
    "$target" "${execs:-unknown}" "$elapsed" "$status" "$work" "$(ls "$work" | wc -l)"
exit "$status"
