#!/usr/bin/env bash
# Capture a QEMU machine's memory-region tree and flat views as a
# conformance case.
#
# usage: scripts/capture-mtree.sh OUTPREFIX SECONDS -- qemu-system-ARCH [ARGS...]
#
# Starts QEMU with its human monitor on a pipe (stdin is /dev/null), then:
#   SECONDS = 0   the machine stays paused from reset (-S is added if absent);
#   SECONDS > 0   the machine runs for SECONDS (if ARGS has -S, `cont` is
#                 sent first) so firmware can program BARs, PAM, etc.;
# then sends `stop`, `info mtree -D`, `info mtree -f`, `quit`, and writes
#   OUTPREFIX.tree   exactly what `info mtree -D` printed
#   OUTPREFIX.flat   exactly what `info mtree -f` printed
# without the monitor banner, prompts, command echo or carriage returns.
#
# Environment:
#   CAPTURE_TIMEOUT  seconds to wait for the monitor / each command (default 60)
#   KEEP_LOG=1       keep the raw monitor log as OUTPREFIX.log
#
# Nothing but bash and coreutils is needed besides QEMU itself. The
# conformance corpus is QEMU 7.2 (Debian 12 packages); another version
# works but prints a warning, since its trees may differ.
set -euo pipefail

die() { printf 'capture-mtree: %s\n' "$*" >&2; exit 1; }
usage() { sed -n '4,5p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

[ $# -ge 4 ] || usage
out=$1 secs=$2
[ "$3" = "--" ] || usage
shift 3
[[ $secs =~ ^[0-9]+$ ]] || die "SECONDS must be a non-negative integer, got '$secs'"
timeout_s=${CAPTURE_TIMEOUT:-60}
[[ $timeout_s =~ ^[0-9]+$ ]] || die "CAPTURE_TIMEOUT must be an integer"

qemu=$1
shift
if ! command -v "$qemu" >/dev/null 2>&1; then
    case $qemu in
        *x86_64* | *i386*) pkg="qemu-system-x86" ;;
        *ppc*) pkg="qemu-system-ppc" ;;
        *aarch64* | *arm*) pkg="qemu-system-arm" ;;
        *riscv* | *mips* | *sparc* | *s390* | *misc*) pkg="qemu-system-misc" ;;
        *) pkg="qemu-system" ;;
    esac
    die "'$qemu' not found in PATH. Install it with:
    apt-get update && apt-get install -y $pkg
(Debian 12 ships QEMU 7.2, the version of the conformance corpus.)"
fi
ver=$(timeout 10 "$qemu" --version 2>/dev/null | head -n1 || true)
case $ver in
    *"version 7.2."*) ;;
    *) printf 'capture-mtree: warning: %s is not QEMU 7.2 (%s)\n' "$qemu" "${ver:-unknown}" >&2 ;;
esac

args=("$@")
has_S=0
for a in "${args[@]}"; do [ "$a" = "-S" ] && has_S=1; done
if [ "$secs" -eq 0 ] && [ $has_S -eq 0 ]; then
    args+=(-S)
fi

outdir=$(dirname -- "$out")
[ -d "$outdir" ] || die "output directory '$outdir' does not exist"

work=$(mktemp -d "${TMPDIR:-/tmp}/capture-mtree.XXXXXX")
qpid='' catpid=''
cleanup() {
    { exec 3>&-; } 2>/dev/null || true
    if [ -n "$qpid" ] && kill -0 "$qpid" 2>/dev/null; then
        kill "$qpid" 2>/dev/null || true
        sleep 1
        kill -9 "$qpid" 2>/dev/null || true
    fi
    if [ -n "$catpid" ] && kill -0 "$catpid" 2>/dev/null; then
        kill "$catpid" 2>/dev/null || true
    fi
    wait 2>/dev/null || true
    rm -rf -- "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkfifo "$work/mon.in" "$work/mon.out"
log=$work/mon.log
: >"$log"
# Reader first, so QEMU's output never blocks.
cat "$work/mon.out" >"$log" &
catpid=$!

"$qemu" "${args[@]}" -monitor "pipe:$work/mon" </dev/null >"$work/qemu.stdout" 2>"$work/qemu.stderr" &
qpid=$!
# Read-write open: never blocks, even if QEMU dies before opening its end.
exec 3<>"$work/mon.in"

prompts() { grep -a -o '(qemu) ' "$log" 2>/dev/null | wc -l; }

# wait_prompts N WHAT: wait until the log holds N prompts.
wait_prompts() {
    local n=$1 what=$2 deadline=$((SECONDS + timeout_s))
    while [ "$(prompts)" -lt "$n" ]; do
        if ! kill -0 "$qpid" 2>/dev/null; then
            sed 's/^/  qemu: /' "$work/qemu.stderr" >&2
            die "QEMU exited while waiting for $what"
        fi
        if [ $SECONDS -ge $deadline ]; then
            sed 's/^/  qemu: /' "$work/qemu.stderr" >&2
            die "timed out after ${timeout_s}s waiting for $what"
        fi
        sleep 0.1
    done
}

n=1
wait_prompts $n "the monitor prompt"
send() { # send CMD: send one command and wait for its prompt.
    printf '%s\n' "$1" >&3
    n=$((n + 1))
    wait_prompts $n "'$1'"
}

if [ "$secs" -gt 0 ]; then
    [ $has_S -eq 1 ] && send cont
    sleep "$secs"
    kill -0 "$qpid" 2>/dev/null || die "QEMU exited while the machine ran: $(cat "$work/qemu.stderr")"
fi
send stop
send "info mtree -D"
send "info mtree -f"
printf 'quit\n' >&3
exec 3>&-
for _ in $(seq 1 $((timeout_s * 10))); do
    kill -0 "$qpid" 2>/dev/null || break
    sleep 0.1
done
if kill -0 "$qpid" 2>/dev/null; then
    printf 'capture-mtree: warning: QEMU did not quit, killing it\n' >&2
    kill "$qpid" 2>/dev/null || true
fi
wait "$qpid" 2>/dev/null || true
qpid=''
wait "$catpid" 2>/dev/null || true
catpid=''
[ -n "${KEEP_LOG:-}" ] && cp "$log" "$out.log"

# extract K: the reply to the K-th command (1-based), i.e. the text between
# the K-th and (K+1)-th prompts, less the echoed command line, less CRs.
# The commands were stop, [cont,] info mtree -D, info mtree -f.
extract() {
    awk -v k="$1" 'BEGIN { RS = "\\(qemu\\) "; ORS = "" } NR == k + 1 { print; exit }' "$log" |
        tr -d '\r' | sed '1d'
}
base=1
[ "$secs" -gt 0 ] && [ $has_S -eq 1 ] && base=2
extract $((base + 1)) >"$work/tree"
extract $((base + 2)) >"$work/flat"

head -n1 "$work/tree" | grep -q '^address-space: ' ||
    die "'info mtree -D' output does not start with 'address-space:': $(head -n3 "$work/tree")"
head -n1 "$work/flat" | grep -q '^FlatView #0$' ||
    die "'info mtree -f' output does not start with 'FlatView #0': $(head -n3 "$work/flat")"
for f in tree flat; do
    [ "$(tail -c 2 "$work/$f" | od -An -c | tr -d ' ')" = '\n\n' ] ||
        die "$f output does not end with a blank line (truncated?)"
done

mv "$work/tree" "$out.tree"
mv "$work/flat" "$out.flat"
printf '%s.tree: %s lines\n%s.flat: %s lines\n' \
    "$out" "$(wc -l <"$out.tree")" "$out" "$(wc -l <"$out.flat")"
